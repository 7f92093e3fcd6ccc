//! # Starling node
//!
//! One binary, `starling`, that is both a server (`dev`, `serve`) and the CLI for it.
//!
//! ## Layout (data flows top to bottom)
//! - [`ingest`]: MQTT in. Subscribes to the broker (rumqttc), parses payloads (pure), hands
//!   samples to the device router and releases PUBACKs in arrival order once points are durable.
//!   Also the embedded broker for `dev` (feature `embedded-broker`).
//! - [`device`]: one ractor actor per active device. The state logic is a pure function
//!   (`device::state`); the actor executes its effects (persist, commit alarm transitions).
//! - [`rules`]: the rule language, its validation and its evaluation, pure.
//! - [`storage`]: the telemetry store trait and its backends.
//! - [`cluster`]: membership, leases and routing: which node serves which device now,
//!   forwarding points to their owner, the leader's failure detection and placement.
//! - [`raft`]: the control plane: one openraft group holding members, the shard map and its
//!   history, rules and alarms; its peer transport.
//! - [`shard`]: which shard a device belongs to, and placement of shards on nodes, pure.
//! - [`api`]: tonic services of the public API, proto conversions, error → status mapping.
//! - [`http`]: admin HTTP port: `/metrics`, `/healthz`, `/readyz`.
//! - [`certs`] and [`tls`]: dev certificate authority (rcgen) and rustls configuration.
//! - [`telemetry`]: tracing and OpenTelemetry setup; [`metrics_names`]: metric names.
//! - [`node`]: wires the above into a running node:
//!   `node::run(listeners, config, cluster, shutdown)`.
//! - [`cli`]: the `starling` command line (server commands and client commands over the SDK).
//! - [`simulate`]: `starling simulate`, a device fleet publishing over MQTT (pure fleet model,
//!   thin rumqttc shell).
//! - [`notify`]: delivery of committed alarm transitions to rule targets (MQTT `alerts/…`,
//!   webhook, email, SMS), from the node owning the device.
//! - [`faults`]: fault-injection points for tests, off unless an environment variable sets them.
//! - [`model`]: domain types shared by all layers; [`config`]: node configuration.

pub mod api;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod device;
pub mod faults;
pub mod http;
pub mod ingest;
pub mod metrics_names;
pub mod model;
pub mod node;
pub mod notify;
pub mod raft;
pub mod rules;
pub mod shard;
pub mod simulate;
pub mod storage;
pub mod telemetry;
pub mod tls;
