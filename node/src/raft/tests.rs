//! Integration tests of the control plane: real openraft, real redb files in temp dirs.
//! Waits are on conditions (Raft metrics, awaited writes), never on sleeps.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::model::{
    AlarmStatus, CmpOp, Condition, RuleDoc, Selector, Threshold, Transition, Value,
};
use crate::shard::shard_of;

const SHARDS: u32 = 8;
const WAIT: Duration = Duration::from_secs(20);

fn doc(id: &str, limit: f64) -> RuleDoc {
    RuleDoc {
        id: id.into(),
        tenant: None,
        selector: Selector::default(),
        condition: Condition::Threshold(Threshold {
            metric: "temp".into(),
            op: CmpOp::Gt,
            value: limit,
            hold: None,
            clear: None,
        }),
        severity: "major".into(),
        notify: Vec::new(),
    }
}

fn dev() -> DeviceKey {
    DeviceKey::default_tenant("truck-1")
}

fn put(id: &str, limit: f64) -> ControlCommand {
    ControlCommand::PutRule {
        doc: doc(id, limit),
        at_ms: 1_000,
    }
}

fn raise(epoch: u64, version: u64) -> ControlCommand {
    ControlCommand::RaiseAlarm {
        shard: shard_of(&dev(), SHARDS),
        epoch,
        device: dev(),
        raise: crate::model::AlarmRaise {
            rule_id: "hot".into(),
            rule_version: version,
            severity: "major".into(),
            metric: "temp".into(),
            value: Value::Number(31.5),
            at_ms: 2_000,
            message: "temp > 30".into(),
        },
    }
}

fn clear(epoch: u64) -> ControlCommand {
    ControlCommand::ClearAlarm {
        shard: shard_of(&dev(), SHARDS),
        epoch,
        device: dev(),
        rule_id: "hot".into(),
        at_ms: 3_000,
        reason: None,
    }
}

async fn open(dir: &TempDir) -> ControlPlane {
    match ControlPlane::open_single(dir.path(), 1, "127.0.0.1:7001", SHARDS).await {
        Ok(cp) => cp,
        Err(e) => panic!("open_single: {e}"),
    }
}

async fn write(cp: &ControlPlane, cmd: ControlCommand) -> ControlResponse {
    match cp.write(cmd).await {
        Ok(r) => r,
        Err(e) => panic!("write: {e}"),
    }
}

fn version_of(r: &ControlResponse) -> u64 {
    match r {
        ControlResponse::RuleVersion { version, .. } => *version,
        other => panic!("expected RuleVersion, got {other:?}"),
    }
}

fn single_event(r: ControlResponse) -> AlarmEvent {
    match r {
        ControlResponse::Alarm(mut events) if events.len() == 1 => events.remove(0),
        other => panic!("expected one alarm event, got {other:?}"),
    }
}

use crate::model::AlarmEvent;

fn epoch(cp: &ControlPlane) -> u64 {
    match cp.shard_owner(shard_of(&dev(), SHARDS)) {
        Some((1, epoch)) => epoch,
        other => panic!("shard not owned by node 1: {other:?}"),
    }
}

#[tokio::test]
async fn single_member_rules_and_alarms_lifecycle() {
    let dir = TempDir::new().expect("temp dir");
    let cp = open(&dir).await;
    let status = cp.status();
    assert_eq!(status.leader, Some(1));
    assert_eq!(status.members, vec![(1, "127.0.0.1:7001".to_owned(), true)]);
    assert!(status.commit_index >= status.last_applied && status.last_applied > 0);
    for shard in 0..SHARDS {
        assert!(cp.shard_owner(shard).is_some(), "shard {shard} unassigned");
    }
    let epoch = epoch(&cp);
    let mut events = cp.subscribe();

    // Rule versions come from the log and strictly increase.
    let v1 = version_of(&write(&cp, put("hot", 30.0)).await);
    let v2 = version_of(&write(&cp, put("hot", 31.0)).await);
    assert!(v2 > v1, "versions {v1} then {v2}");
    let rule = cp.rule("default", "hot").expect("rule cached");
    assert_eq!((rule.version, cp.rules().len()), (v2, 1));

    // A raise and its duplicate leave exactly one active alarm.
    let raised = single_event(write(&cp, raise(epoch, v2)).await);
    assert_eq!(raised.transition, Transition::Raised);
    assert_eq!(
        write(&cp, raise(epoch, v2)).await,
        ControlResponse::Unchanged
    );
    let active = cp
        .active_alarm(&dev(), "hot")
        .expect("read")
        .expect("active");
    assert_eq!(active.id, raised.alarm.id);
    assert_eq!(cp.alarms().expect("read").len(), 1);

    // A control record with an old epoch is refused.
    match write(&cp, clear(epoch - 1)).await {
        ControlResponse::Rejected(Rejection::StaleEpoch { entry, current, .. }) => {
            assert_eq!((entry, current), (epoch - 1, epoch));
        }
        other => panic!("expected StaleEpoch, got {other:?}"),
    }

    // Ack, ack again, clear.
    let ack = ControlCommand::AckAlarm {
        id: raised.alarm.id.clone(),
    };
    assert_eq!(
        single_event(write(&cp, ack.clone()).await).transition,
        Transition::Acknowledged
    );
    assert_eq!(write(&cp, ack).await, ControlResponse::Unchanged);
    let cleared = single_event(write(&cp, clear(epoch)).await);
    assert_eq!(cleared.transition, Transition::Cleared);
    assert_eq!(cleared.alarm.cleared_at_ms, Some(3_000));
    assert!(cp.active_alarm(&dev(), "hot").expect("read").is_none());

    // A new alarm, then deleting the rule clears it with the reason.
    let second = single_event(write(&cp, raise(epoch, v2)).await);
    assert_ne!(second.alarm.id, raised.alarm.id);
    let deleted = write(
        &cp,
        ControlCommand::DeleteRule {
            tenant: "default".into(),
            id: "hot".into(),
            at_ms: 4_000,
        },
    )
    .await;
    match &deleted {
        ControlResponse::RuleVersion { version, events } => {
            assert!(*version > v2);
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].alarm.message, apply::RULE_DELETED);
            assert_eq!(events[0].alarm.status, AlarmStatus::Cleared);
        }
        other => panic!("expected RuleVersion, got {other:?}"),
    }
    assert!(cp.rules().is_empty());
    assert!(cp.active_alarm(&dev(), "hot").expect("read").is_none());
    let stored = cp.alarm(&second.alarm.id).expect("read").expect("kept");
    assert_eq!(stored.status, AlarmStatus::Cleared);
    assert_eq!(cp.alarms().expect("read").len(), 2);

    // Subscribers saw every change, in commit order, after the writes returned.
    let mut seen = Vec::new();
    loop {
        match events.try_recv() {
            Ok(Applied::RuleChanged { rule, .. }) => seen.push(format!("rule {}", rule.is_some())),
            Ok(Applied::Alarm(e)) => seen.push(format!("{:?}", e.transition)),
            Ok(other) => seen.push(format!("{other:?}")),
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("events: {e}"),
        }
    }
    let expected = [
        "rule true",
        "rule true",
        "Raised",
        "Acknowledged",
        "Cleared",
        "Raised",
        "rule false",
        "Cleared",
    ];
    assert_eq!(seen, expected);
    cp.shutdown().await;
}

#[tokio::test]
async fn restart_keeps_state_and_does_not_bootstrap_again() {
    let dir = TempDir::new().expect("temp dir");
    let cp = open(&dir).await;
    let epoch_before = epoch(&cp);
    let v = version_of(&write(&cp, put("hot", 30.0)).await);
    let raised = single_event(write(&cp, raise(epoch_before, v)).await);
    let term_before = cp.status().term;
    cp.shutdown().await;
    drop(cp);

    let cp = open(&dir).await;
    assert_eq!(epoch(&cp), epoch_before, "shards were assigned again");
    assert_eq!(cp.rule("default", "hot").map(|r| r.version), Some(v));
    let active = cp
        .active_alarm(&dev(), "hot")
        .expect("read")
        .expect("active");
    assert_eq!(active.id, raised.alarm.id);
    let status = cp.status();
    assert_eq!(status.members.len(), 1, "membership initialized again");
    assert!(status.term >= term_before);
    // Still one active alarm per (device, rule) after the restart.
    assert_eq!(
        write(&cp, raise(epoch_before, v)).await,
        ControlResponse::Unchanged
    );
    let v2 = version_of(&write(&cp, put("hot", 35.0)).await);
    assert!(v2 > v);
    cp.shutdown().await;
}

#[tokio::test]
async fn snapshot_and_purge_survive_restart() {
    let dir = TempDir::new().expect("temp dir");
    let cp = open(&dir).await;
    for i in 0..20 {
        write(&cp, put(&format!("r{i}"), f64::from(i))).await;
    }
    let v = version_of(&write(&cp, put("hot", 30.0)).await);
    let epoch = epoch(&cp);
    let raised = single_event(write(&cp, raise(epoch, v)).await);
    let raft = cp.inner.raft.clone();
    let applied = cp.status().last_applied;

    raft.trigger().snapshot().await.expect("trigger snapshot");
    raft.wait(Some(WAIT))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= applied),
            "snapshot covers the log",
        )
        .await
        .expect("snapshot built");
    raft.trigger()
        .purge_log(applied)
        .await
        .expect("trigger purge");
    raft.wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index >= applied),
            "log purged",
        )
        .await
        .expect("log purged");
    cp.shutdown().await;
    drop(cp);

    // The purged entries are gone from the file.
    {
        let (alive, _released) = tokio::sync::mpsc::channel(1);
        let log = LogStore::open(dir.path(), alive).expect("log store");
        let first = log.first_index();
        assert!(first.is_none_or(|f| f > applied), "first entry {first:?}");
    }

    let cp = open(&dir).await;
    assert_eq!(cp.rules().len(), 21);
    assert_eq!(cp.shard_owner(shard_of(&dev(), SHARDS)), Some((1, epoch)));
    let alarm = cp
        .alarm(&raised.alarm.id)
        .expect("read")
        .expect("alarm kept");
    assert_eq!(alarm.status, AlarmStatus::Active);
    let v = version_of(&write(&cp, put("after", 1.0)).await);
    assert!(v > applied);
    cp.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_calls_fail_with_stopped() {
    let dir = TempDir::new().expect("temp dir");
    let cp = open(&dir).await;
    let clone = cp.clone();
    cp.shutdown().await;
    cp.shutdown().await; // idempotent
    let err = clone.write(put("x", 1.0)).await.expect_err("stopped");
    assert!(matches!(err, ControlError::Stopped), "{err:?}");
    assert!(err.is_retryable());
    assert!(matches!(clone.alarms(), Err(ControlError::Stopped)));
}

#[tokio::test]
async fn shard_count_is_checked() {
    let dir = TempDir::new().expect("temp dir");
    let err = ControlPlane::open_single(dir.path(), 1, "a:1", 6)
        .await
        .err();
    assert!(matches!(err, Some(ControlError::Config { .. })), "{err:?}");

    let cp = open(&dir).await;
    cp.shutdown().await;
    drop(cp);
    let err = ControlPlane::open_single(dir.path(), 1, "a:1", 16)
        .await
        .err();
    match err {
        Some(ControlError::ShardCountMismatch { stored, configured }) => {
            assert_eq!((stored, configured), (SHARDS as usize, 16));
        }
        other => panic!("expected ShardCountMismatch, got {other:?}"),
    }
    // The failed open released the files: the right count opens again.
    open(&dir).await.shutdown().await;
}

/// Builds fresh stores in a temp dir for openraft's storage conformance suite.
struct Builder;

impl StoreBuilder<types::TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> types::StorageResult<(TempDir, LogStore, StateMachineStore)> {
        let build = || -> Result<_, types::StoreError> {
            let dir = TempDir::new().map_err(|e| types::StoreError::Db(e.into()))?;
            let (alive, _) = tokio::sync::mpsc::channel(1);
            let (events, _) = broadcast::channel(16);
            let log = LogStore::open(dir.path(), alive.clone())
                .map_err(|e| types::StoreError::Db(redb::StorageError::from(e).into()))?;
            let sm = StateMachineStore::open(
                Database::create(dir.path().join("sm.redb"))?,
                events,
                alive,
            )?;
            Ok((dir, log, sm))
        };
        build().map_err(|e| types::storage_err(types::Op::WriteLogs, e))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("storage suite: {e}");
    }
}

#[tokio::test]
async fn concurrent_writes_share_entries_and_each_gets_its_own_answer() {
    let dir = TempDir::new().expect("temp dir");
    let cp = open(&dir).await;
    let before = cp.applied_index();
    // 64 rule writes at once, plus alarm raises for 8 devices on one rule.
    let v0 = version_of(&write(&cp, put("hot", 30.0)).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let cp = cp.clone();
        tasks.spawn(async move { (i, cp.write(put(&format!("r{i}"), f64::from(i))).await) });
    }
    let mut raises = tokio::task::JoinSet::new();
    for i in 0..8 {
        let cp = cp.clone();
        let device = DeviceKey::default_tenant(format!("truck-{i}"));
        let shard = shard_of(&device, SHARDS);
        let Some((1, epoch)) = cp.shard_owner(shard) else {
            panic!("shard {shard} not owned by node 1");
        };
        let ControlCommand::RaiseAlarm { raise, .. } = self::raise(epoch, v0) else {
            unreachable!()
        };
        raises.spawn(async move {
            cp.write(ControlCommand::RaiseAlarm {
                shard,
                epoch,
                device,
                raise,
            })
            .await
        });
    }
    let mut versions = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, answer) = joined.expect("task");
        let version = version_of(&answer.expect("rule write"));
        let rule = cp.rule("default", &format!("r{i}")).expect("rule cached");
        assert_eq!(rule.version, version, "r{i}");
        assert_eq!(rule.doc, doc(&format!("r{i}"), f64::from(i)));
        versions.insert(version);
    }
    let mut alarm_ids = BTreeSet::new();
    while let Some(joined) = raises.join_next().await {
        let event = single_event(joined.expect("task").expect("raise"));
        assert_eq!(event.transition, Transition::Raised);
        alarm_ids.insert(event.alarm.id);
    }
    assert_eq!(
        alarm_ids.len(),
        8,
        "every raise has its own alarm id: {alarm_ids:?}"
    );
    let entries = cp.applied_index() - before;
    // The writes were queued together: they shared entries (on this single-threaded runtime
    // the proposer runs only after every task queued its write).
    assert!(
        versions.len() < 64 && entries < 1 + 64 + 8,
        "{} versions, {entries} entries for 73 writes",
        versions.len()
    );
    cp.shutdown().await;
}
