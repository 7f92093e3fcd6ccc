//! Names of every metric Starling exports, in one place so dashboards and code agree.
//!
//! Metrics are recorded through the `metrics` facade and exposed as Prometheus text on the
//! admin port's `/metrics`. Labels are named in each constant's doc.

/// Counter. MQTT messages received by ingest. Label `result`: `accepted` | `rejected`.
pub const INGEST_MESSAGES: &str = "starling_ingest_messages_total";
/// Counter. Samples or messages refused. Label `reason` (see `ingest::payload::Reason`).
pub const INGEST_REJECTED: &str = "starling_ingest_rejected_total";
/// Counter. Devices registered by their first telemetry (auto-provisioning).
pub const DEVICES_PROVISIONED: &str = "starling_devices_provisioned_total";
/// Counter. PUBACKs sent to the broker after the message's points were durable.
pub const INGEST_ACKS: &str = "starling_ingest_acks_total";
/// Gauge. Messages received and not yet acknowledged (in the ordered ack window).
pub const INGEST_IN_FLIGHT: &str = "starling_ingest_in_flight";
/// Counter. Points durably stored (MQTT and gRPC publish).
pub const POINTS_STORED: &str = "starling_points_stored_total";
/// Histogram, seconds. Duration of one durable store write (group commit included).
pub const STORE_WRITE_SECONDS: &str = "starling_store_write_seconds";
/// Gauge. Live device actors on this node.
pub const DEVICE_ACTORS: &str = "starling_device_actors";
/// Counter. Device actors passivated after their idle timeout.
pub const DEVICE_PASSIVATIONS: &str = "starling_device_passivations_total";
/// Counter. Alarm transitions committed. Label `transition`: `raised` | `cleared` | `acknowledged`.
pub const ALARM_TRANSITIONS: &str = "starling_alarm_transitions_total";
/// Counter. Alarm transitions the state machine refused. Label `reason`.
pub const ALARM_REJECTED: &str = "starling_alarm_rejected_total";
/// Gauge. Current Raft term of this node.
pub const RAFT_TERM: &str = "starling_raft_term";
/// Gauge. Last applied Raft log index on this node.
pub const RAFT_APPLIED: &str = "starling_raft_last_applied";
/// Gauge. 1 when this node is the Raft leader.
pub const RAFT_IS_LEADER: &str = "starling_raft_is_leader";
/// Gauge. Live subscriptions (`Telemetry.Subscribe`) this node serves to clients.
pub const LIVE_SUBSCRIPTIONS: &str = "starling_live_subscriptions";
/// Counter. Live subscriptions ended because the subscriber fell behind (DATA_LOSS).
pub const LIVE_LAGGED: &str = "starling_live_lagged_total";
/// Counter. Times a live subscription re-subscribed to its device's owner (a shard move, or
/// the owner stopped answering); points stored by a new owner before it are not delivered.
pub const LIVE_RESUBSCRIBED: &str = "starling_live_resubscriptions_total";
/// Counter. gRPC requests refused, by `code`.
pub const API_ERRORS: &str = "starling_api_errors_total";
/// Counter. Messages stored by another node (forwarded because it owns their shard).
pub const FORWARDED: &str = "starling_forwarded_messages_total";
/// Histogram. Items per `Data.Forward` batch.
pub const FORWARD_BATCH: &str = "starling_forward_batch_items";
/// Counter. Shards that moved to this node or away from it. Label `direction`: `gained` | `lost`.
pub const SHARD_MOVES: &str = "starling_shard_moves_total";
/// Counter. Alarm notifications delivered (2xx, SMTP accepted, PUBACK). Label `kind`:
/// `webhook` | `email` | `sms` | `mqtt`.
pub const NOTIFY_SENT: &str = "starling_notify_sent_total";
/// Counter. Alarm notifications given up (permanent error or attempts exhausted). Label `kind`.
pub const NOTIFY_FAILED: &str = "starling_notify_failed_total";
/// Counter. Delivery attempts that failed and were retried. Label `kind`.
pub const NOTIFY_RETRIED: &str = "starling_notify_retries_total";
/// Counter. Notifications dropped because their target was over its rate limit. Label `kind`.
pub const NOTIFY_RATE_LIMITED: &str = "starling_notify_rate_limited_total";
/// Counter. Applied alarm events the notifier missed by falling behind (not delivered).
pub const NOTIFY_LAGGED: &str = "starling_notify_lagged_events_total";
/// Counter. Deliveries started from the Raft outbox by a scan (after a restart, a shard
/// gain, a snapshot, or the periodic rescan) rather than by the live event.
pub const NOTIFY_OUTBOX_REPLAYED: &str = "starling_notify_outbox_replayed_total";
/// Counter. Deliveries recorded as finished in Raft (`NotificationsDelivered`).
pub const NOTIFY_OUTBOX_RECORDED: &str = "starling_notify_outbox_recorded_total";
/// Counter. Retention sweeps of this node's store. Label `result`: `ok` | `failed`.
pub const RETENTION_SWEEPS: &str = "starling_retention_sweeps_total";
/// Counter. Raw points and rollup buckets deleted by retention sweeps.
pub const RETENTION_DELETED: &str = "starling_retention_deleted_total";
