//! Tests of the redb state machine without openraft running: batches, reopen, snapshots.

use openraft::{CommittedLeaderId, Membership};
use tempfile::TempDir;

use super::*;
use crate::model::{CmpOp, Condition, DeviceKey, RuleDoc, Selector, Threshold, Value};
use crate::raft::command::Entry;

fn entry(index: u64, cmd: ControlCommand) -> RaftEntry {
    openraft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Entry::new(cmd)),
    }
}

fn membership(index: u64) -> RaftEntry {
    let nodes = BTreeMap::from([(1, openraft::BasicNode::new("a:1"))]);
    let m = Membership::new(vec![[1].into()], nodes);
    openraft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Membership(m),
    }
}

fn put(id: &str) -> ControlCommand {
    ControlCommand::PutRule {
        doc: RuleDoc {
            id: id.into(),
            tenant: None,
            selector: Selector::default(),
            condition: Condition::Threshold(Threshold {
                metric: "temp".into(),
                op: CmpOp::Gt,
                value: 30.0,
                hold: None,
                clear: None,
            }),
            severity: "major".into(),
            notify: Vec::new(),
        },
        at_ms: 1,
    }
}

fn raise(epoch: u64) -> ControlCommand {
    ControlCommand::RaiseAlarm {
        shard: 0,
        epoch,
        device: DeviceKey::default_tenant("d1"),
        raise: crate::model::AlarmRaise {
            rule_id: "hot".into(),
            rule_version: 3,
            severity: "major".into(),
            metric: "temp".into(),
            value: Value::Number(40.0),
            at_ms: 2,
            message: "hot".into(),
        },
    }
}

/// The history used below: membership, shards, two rules, an alarm.
fn history() -> Vec<RaftEntry> {
    vec![
        membership(1),
        entry(
            2,
            ControlCommand::AssignShards {
                node: 1,
                shards: vec![0, 1],
                at_ms: 10,
                activate_after_ms: 0,
            },
        ),
        entry(3, put("hot")),
        entry(4, put("cold")),
        entry(5, raise(2)),
    ]
}

fn open(dir: &TempDir) -> (StateMachineStore, broadcast::Receiver<Applied>) {
    let (events, rx) = broadcast::channel(64);
    let (alive, _) = mpsc::channel(1);
    let db = Database::create(dir.path().join("sm.redb")).expect("create");
    (
        StateMachineStore::open(db, events, alive).expect("open"),
        rx,
    )
}

/// Builds (and keeps) a snapshot of `sm`.
async fn snapshot_of(sm: &mut StateMachineStore) -> Snapshot {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build")
}

fn drain(rx: &mut broadcast::Receiver<Applied>) -> Vec<Applied> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn a_batch_applies_records_last_applied_and_publishes_after_commit() {
    let dir = TempDir::new().expect("dir");
    let (mut sm, mut rx) = open(&dir);
    let responses = sm.apply(history()).await.expect("apply");
    assert_eq!(responses.len(), 5);
    assert_eq!(responses[0], ControlResponse::Unchanged);
    assert_eq!(responses[1], ControlResponse::ShardsAssigned { epoch: 2 });
    assert!(matches!(responses[4], ControlResponse::Alarm(_)));

    let (applied, membership) = sm.applied_state().await.expect("state");
    assert_eq!(applied.map(|l| l.index), Some(5));
    assert_eq!(membership.log_id().map(|l| l.index), Some(1));
    assert_eq!(sm.caches().shard_owner(1), Some((1, 2)));
    assert_eq!(sm.caches().rules().len(), 2);
    assert_eq!(drain(&mut rx).len(), 4); // shards, two rules, one alarm

    // Reopening reads everything back from disk, caches included.
    drop(sm);
    let (mut sm, _rx) = open(&dir);
    let (applied, _) = sm.applied_state().await.expect("state");
    assert_eq!(applied.map(|l| l.index), Some(5));
    assert_eq!(
        sm.caches().rule("default", "cold").map(|r| r.version),
        Some(4)
    );
    let db = sm.reader().upgrade().expect("open");
    let active = read_active_alarm(&db, &DeviceKey::default_tenant("d1"), "hot").expect("read");
    assert_eq!(active.map(|a| a.id), Some("a-5".to_owned()));
}

#[tokio::test]
async fn a_snapshot_installs_into_a_fresh_store() {
    let (dir_a, dir_b) = (TempDir::new().expect("dir"), TempDir::new().expect("dir"));
    let (mut a, _) = open(&dir_a);
    a.apply(history()).await.expect("apply");
    let snapshot = snapshot_of(&mut a).await;
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(5));
    let kept = a.get_current_snapshot().await.expect("read").expect("kept");
    assert_eq!(kept.meta, snapshot.meta);

    // B has something the snapshot does not: it must disappear.
    let (mut b, mut rx) = open(&dir_b);
    b.apply(vec![entry(1, put("stale"))]).await.expect("apply");
    drain(&mut rx);
    b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");

    let (applied, membership) = b.applied_state().await.expect("state");
    assert_eq!(applied, snapshot.meta.last_log_id);
    assert_eq!(&membership, &snapshot.meta.last_membership);
    assert!(b.caches().rule("default", "stale").is_none());
    assert_eq!(b.caches().rules(), a.caches().rules());
    assert_eq!(b.caches().shard_owner(0), Some((1, 2)));
    let (da, db) = (
        a.reader().upgrade().expect("a"),
        b.reader().upgrade().expect("b"),
    );
    assert_eq!(read_alarms(&db).expect("b"), read_alarms(&da).expect("a"));
    // Rule versions travel as their stored bytes (`SnapshotOut`): they read back the same.
    let versions = read_rule_history(&db, "default", "cold").expect("b");
    assert_eq!(versions.iter().map(|r| r.version).collect::<Vec<_>>(), [4]);
    assert_eq!(
        versions,
        read_rule_history(&da, "default", "cold").expect("a")
    );
    let history = read_history(&db, 1).expect("b");
    assert_eq!(history, read_history(&da, 1).expect("a"));
    assert_eq!(
        history,
        vec![Ownership {
            node: 1,
            epoch: 2,
            from_ms: 10,
            to_ms: None
        }]
    );
    let current = b.get_current_snapshot().await.expect("read").expect("kept");
    assert_eq!(current.meta, snapshot.meta);

    // Subscribers learn what changed: stale rule gone, two rules new, then the reset.
    let events = drain(&mut rx);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(
        events.last(),
        Some(&Applied::SnapshotInstalled {
            last_applied: Some(5)
        })
    );

    // Applying continues after the snapshot: epochs and the active index came along.
    let responses = b.apply(vec![entry(6, raise(2))]).await.expect("apply");
    assert_eq!(responses, vec![ControlResponse::Unchanged]);
}

fn register_device(id: &str, device_type: &str, site: &str) -> ControlCommand {
    ControlCommand::Device(crate::raft::registry::DeviceCommand::Register {
        device: DeviceKey::default_tenant(id),
        device_type: Some(device_type.into()),
        labels: [("site".to_owned(), site.to_owned())].into(),
        at_ms: 1,
    })
}

#[tokio::test]
async fn the_device_registry_is_paged_filtered_and_carried_by_snapshots() {
    use crate::raft::registry::{DeviceCommand, DeviceFilter};
    let (dir_a, dir_b) = (TempDir::new().expect("dir"), TempDir::new().expect("dir"));
    let (mut a, _) = open(&dir_a);
    a.apply(vec![
        entry(1, register_device("d1", "truck", "n")),
        entry(2, register_device("d2", "van", "n")),
        entry(3, register_device("d3", "truck", "s")),
        entry(4, register_device("d4", "truck", "n")),
        entry(
            5,
            ControlCommand::Device(DeviceCommand::Delete {
                device: DeviceKey::default_tenant("d2"),
            }),
        ),
    ])
    .await
    .expect("apply");
    let da = a.reader().upgrade().expect("a");
    let ids = |records: Vec<crate::raft::registry::DeviceRecord>| -> Vec<String> {
        records.into_iter().map(|r| r.key.device).collect()
    };
    let all = DeviceFilter::default();
    assert_eq!(
        ids(read_devices(&da, "default", None, 10, &all).expect("read")),
        ["d1", "d3", "d4"]
    );
    assert_eq!(
        ids(read_devices(&da, "default", Some("d1"), 1, &all).expect("read")),
        ["d3"]
    );
    assert!(
        read_devices(&da, "acme", None, 10, &all)
            .expect("read")
            .is_empty()
    );
    let north_trucks = DeviceFilter {
        device_type: Some("truck".into()),
        labels: [("site".to_owned(), "n".to_owned())].into(),
    };
    assert_eq!(
        ids(read_devices(&da, "default", None, 10, &north_trucks).expect("read")),
        ["d1", "d4"]
    );

    let snapshot = snapshot_of(&mut a).await;
    // B has a device the snapshot does not: it must disappear.
    let (mut b, _) = open(&dir_b);
    b.apply(vec![entry(1, register_device("stale", "x", "n"))])
        .await
        .expect("apply");
    b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    let db = b.reader().upgrade().expect("b");
    assert_eq!(
        read_devices(&db, "default", None, 10, &all).expect("b"),
        read_devices(&da, "default", None, 10, &all).expect("a")
    );
    assert!(
        read_device(&db, &DeviceKey::default_tenant("stale"))
            .expect("b")
            .is_none()
    );
}

/// Rule `hot` with a webhook target, so its transitions wait in the outbox.
fn put_notifying() -> ControlCommand {
    let ControlCommand::PutRule { mut doc, at_ms } = put("hot") else {
        unreachable!("put builds a PutRule");
    };
    doc.notify = vec![crate::model::Target::Webhook {
        url: "http://hooks.example/a".into(),
    }];
    ControlCommand::PutRule { doc, at_ms }
}

fn pending_keys(sm: &StateMachineStore) -> Vec<String> {
    let db = sm.reader().upgrade().expect("open");
    let txn = db.begin_read().expect("read");
    let rows = crate::raft::outbox::read_all(&txn).expect("outbox");
    rows.iter().map(|p| p.key().to_string()).collect()
}

#[tokio::test]
async fn the_outbox_is_kept_on_disk_and_carried_by_snapshots() {
    let (dir_a, dir_b) = (TempDir::new().expect("dir"), TempDir::new().expect("dir"));
    let (mut a, _) = open(&dir_a);
    let assign = ControlCommand::AssignShards {
        node: 1,
        shards: vec![0],
        at_ms: 10,
        activate_after_ms: 0,
    };
    a.apply(vec![
        membership(1),
        entry(2, assign.clone()),
        entry(3, put_notifying()),
        entry(4, raise(2)),
    ])
    .await
    .expect("apply");
    assert_eq!(pending_keys(&a), vec!["a-4:raised"]);
    // Reopened: the row is on disk.
    drop(a);
    let (mut a, _) = open(&dir_a);
    assert_eq!(pending_keys(&a), vec!["a-4:raised"]);

    let snapshot = snapshot_of(&mut a).await;
    // B has a pending row the snapshot does not: it must disappear.
    let (mut b, _) = open(&dir_b);
    b.apply(vec![
        entry(1, assign),
        entry(2, put_notifying()),
        entry(3, raise(1)),
    ])
    .await
    .expect("apply");
    assert_eq!(pending_keys(&b), vec!["a-3:raised"]);
    b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(pending_keys(&b), vec!["a-4:raised"]);

    // Delivering continues after the snapshot.
    let done = ControlCommand::NotificationsDelivered {
        keys: vec![crate::raft::outbox::DeliveryKey {
            alarm_id: "a-4".into(),
            transition: crate::model::Transition::Raised,
        }],
    };
    let responses = b.apply(vec![entry(5, done)]).await.expect("apply");
    assert_eq!(responses, vec![ControlResponse::Delivered { removed: 1 }]);
    assert!(pending_keys(&b).is_empty());
}

#[tokio::test]
async fn the_shared_rule_list_follows_every_change() {
    let dir = TempDir::new().expect("dir");
    let (mut sm, _rx) = open(&dir);
    let ids = |sm: &StateMachineStore| -> Vec<String> {
        sm.caches()
            .rules()
            .iter()
            .map(|r| r.doc.id.clone())
            .collect()
    };
    assert!(ids(&sm).is_empty());
    // Read between changes: each read sees the change before it.
    sm.apply([entry(1, put("a"))]).await.expect("apply");
    assert_eq!(ids(&sm), ["a"]);
    let first = sm.caches().rules();
    assert!(
        Arc::ptr_eq(&first, &sm.caches().rules()),
        "no rebuild without a change"
    );
    sm.apply([entry(2, put("b"))]).await.expect("apply");
    assert_eq!(ids(&sm), ["a", "b"]);
    // Many changes with no read between them, in one batch and across entries.
    let batch = ControlCommand::Batch(vec![put("c"), put("d")]);
    sm.apply([entry(3, batch), entry(4, put("e"))])
        .await
        .expect("apply");
    assert_eq!(ids(&sm), ["a", "b", "c", "d", "e"]);
    let delete = ControlCommand::DeleteRule {
        tenant: crate::model::DEFAULT_TENANT.into(),
        id: "b".into(),
        at_ms: 2,
    };
    sm.apply([entry(5, delete)]).await.expect("apply");
    assert_eq!(ids(&sm), ["a", "c", "d", "e"]);
}
