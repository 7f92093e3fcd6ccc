//! Table tests of the pure apply over an in-memory [`ControlState`].

use super::*;
use crate::model::{Condition, RuleDoc, Selector, Threshold, Value};

pub(in crate::raft) use crate::raft::mem_state::MemState;

pub(in crate::raft) fn doc(id: &str) -> RuleDoc {
    RuleDoc {
        id: id.into(),
        tenant: None,
        selector: Selector::default(),
        condition: Condition::Threshold(Threshold {
            metric: "temp".into(),
            op: crate::model::CmpOp::Gt,
            value: 30.0,
            hold: None,
            clear: None,
        }),
        severity: "major".into(),
        notify: Vec::new(),
    }
}

pub(in crate::raft) fn dev() -> DeviceKey {
    DeviceKey::default_tenant("truck-1")
}

pub(in crate::raft) fn assign() -> ControlCommand {
    ControlCommand::AssignShards {
        node: 1,
        shards: vec![0, 1],
        at_ms: 500,
        activate_after_ms: 0,
    }
}

fn put(id: &str) -> ControlCommand {
    ControlCommand::PutRule {
        doc: doc(id),
        at_ms: 1000,
    }
}

pub(in crate::raft) fn raise(epoch: u64) -> ControlCommand {
    ControlCommand::RaiseAlarm {
        shard: 0,
        epoch,
        device: dev(),
        raise: crate::model::AlarmRaise {
            rule_id: "hot".into(),
            rule_version: 2,
            severity: "major".into(),
            metric: "temp".into(),
            value: Value::Number(31.0),
            at_ms: 2000,
            message: "temp > 30".into(),
        },
    }
}

pub(in crate::raft) fn clear(epoch: u64) -> ControlCommand {
    ControlCommand::ClearAlarm {
        shard: 0,
        epoch,
        device: dev(),
        rule_id: "hot".into(),
        at_ms: 3000,
        reason: None,
    }
}

pub(in crate::raft) fn ack(id: &str) -> ControlCommand {
    ControlCommand::AckAlarm { id: id.into() }
}

pub(in crate::raft) fn delete(id: &str) -> ControlCommand {
    ControlCommand::DeleteRule {
        tenant: "default".into(),
        id: id.into(),
        at_ms: 4000,
    }
}

/// Applies `history` at indexes 1.. and then `last`; returns the state and the last outcome.
fn run(history: &[ControlCommand], last: Entry) -> (MemState, Outcome) {
    let mut state = MemState::default();
    for (i, cmd) in history.iter().enumerate() {
        let Ok(_) = apply(&mut state, i as u64 + 1, &Entry::new(cmd.clone()));
    }
    let index = history.len() as u64 + 1;
    let Ok(outcome) = apply(&mut state, index, &last);
    (state, outcome)
}

/// Applies one command at `index` to `state`.
pub(in crate::raft) fn apply_at(state: &mut MemState, index: u64, cmd: &ControlCommand) -> Outcome {
    let Ok(outcome) = apply(state, index, &Entry::new(cmd.clone()));
    outcome
}

/// A short name for the response, so a table row fits on one line.
fn kind(r: &ControlResponse) -> String {
    match r {
        ControlResponse::Unchanged => "unchanged".into(),
        ControlResponse::ShardsAssigned { epoch } => format!("assigned@{epoch}"),
        ControlResponse::NodeChanged { index } => format!("node@{index}"),
        ControlResponse::RuleVersion { version, events } => {
            format!("version {version} {}", transitions_of(events))
        }
        ControlResponse::Alarm(events) => format!("alarm {}", transitions_of(events)),
        ControlResponse::TimersSet => "timers set".into(),
        ControlResponse::Rejected(r) => format!("rejected: {r}"),
        ControlResponse::Device(d) => format!("device {:?}", d.as_ref().map(|d| &d.key.device)),
        ControlResponse::Delivered { removed } => format!("delivered {removed}"),
        ControlResponse::Batch(rs) => {
            let parts: Vec<String> = rs.iter().map(kind).collect();
            format!("batch[{}]", parts.join("; "))
        }
    }
}

fn transitions_of(events: &[AlarmEvent]) -> String {
    let names: Vec<String> = events
        .iter()
        .map(|e| format!("{:?}({})", e.transition, e.alarm.id))
        .collect();
    format!("[{}]", names.join(","))
}

#[path = "batch_tests.rs"]
mod batch;

#[test]
fn apply_table() {
    // (case, history applied at indexes 1.., command applied at the next index, expected)
    let a = assign(); // index 1: epoch 1
    let cases: Vec<(&str, Vec<ControlCommand>, ControlCommand, &str)> = vec![
        (
            "assign: epoch is the log index",
            vec![put("x")],
            assign(),
            "assigned@2",
        ),
        (
            "put: version is the log index",
            vec![a.clone()],
            put("hot"),
            "version 2 []",
        ),
        (
            "put again: version grows",
            vec![a.clone(), put("hot")],
            put("hot"),
            "version 3 []",
        ),
        (
            "raise",
            vec![a.clone(), put("hot")],
            raise(1),
            "alarm [Raised(a-3)]",
        ),
        (
            "raise duplicate",
            vec![a.clone(), put("hot"), raise(1)],
            raise(1),
            "unchanged",
        ),
        (
            "raise with stale epoch",
            vec![a.clone(), put("hot"), a.clone()],
            raise(1),
            "rejected: stale epoch for shard 0: entry has 1, current is 3",
        ),
        (
            "raise on unassigned shard",
            vec![put("hot")],
            raise(0),
            "rejected: stale epoch for shard 0: entry has 0, current is 0",
        ),
        (
            "raise for unknown rule",
            vec![a.clone()],
            raise(1),
            "rejected: no such rule: default/hot",
        ),
        (
            "clear active",
            vec![a.clone(), put("hot"), raise(1)],
            clear(1),
            "alarm [Cleared(a-3)]",
        ),
        (
            "clear with nothing active",
            vec![a.clone(), put("hot")],
            clear(1),
            "unchanged",
        ),
        (
            "clear with stale epoch",
            vec![a.clone(), put("hot"), raise(1), a.clone()],
            clear(1),
            "rejected: stale epoch for shard 0: entry has 1, current is 4",
        ),
        (
            "raise after clear opens a new alarm",
            vec![a.clone(), put("hot"), raise(1), clear(1)],
            raise(1),
            "alarm [Raised(a-5)]",
        ),
        (
            "ack",
            vec![a.clone(), put("hot"), raise(1)],
            ack("a-3"),
            "alarm [Acknowledged(a-3)]",
        ),
        (
            "ack twice",
            vec![a.clone(), put("hot"), raise(1), ack("a-3")],
            ack("a-3"),
            "unchanged",
        ),
        (
            "ack a cleared alarm",
            vec![a.clone(), put("hot"), raise(1), clear(1)],
            ack("a-3"),
            "alarm [Acknowledged(a-3)]",
        ),
        (
            "ack unknown",
            vec![a.clone()],
            ack("a-9"),
            "rejected: no such alarm: a-9",
        ),
        (
            "delete clears active alarms",
            vec![a.clone(), put("hot"), raise(1)],
            delete("hot"),
            "version 4 [Cleared(a-3)]",
        ),
        (
            "delete without alarms",
            vec![a.clone(), put("hot")],
            delete("hot"),
            "version 3 []",
        ),
        (
            "delete unknown",
            vec![a.clone()],
            delete("hot"),
            "rejected: no such rule: default/hot",
        ),
    ];
    for (case, history, cmd, expected) in cases {
        let (_, outcome) = run(&history, Entry::new(cmd));
        assert_eq!(kind(&outcome.response), expected, "case: {case}");
    }
}

#[test]
fn unknown_format_is_rejected_and_changes_nothing() {
    for format in [0, ENTRY_FORMAT + 1] {
        let entry = Entry {
            format,
            command: assign(),
        };
        let (state, outcome) = run(&[], entry);
        assert_eq!(
            outcome.response,
            ControlResponse::Rejected(Rejection::UnknownFormat(format))
        );
        assert!(outcome.events.is_empty());
        assert!(state.shards.is_empty());
    }
}

#[test]
fn raised_alarm_records_the_command() {
    let (state, outcome) = run(&[assign(), put("hot")], Entry::new(raise(1)));
    let alarm = &state.alarms["a-3"];
    assert_eq!(alarm.status, AlarmStatus::Active);
    assert!(!alarm.acknowledged);
    assert_eq!((alarm.rule_version, alarm.raised_at_ms), (2, 2000));
    assert_eq!(alarm.value, Value::Number(31.0));
    assert_eq!(
        outcome.events,
        vec![Applied::Alarm(AlarmEvent {
            alarm: alarm.clone(),
            transition: Transition::Raised
        })]
    );
}

#[test]
fn delete_rule_clears_with_reason_and_removes_rule() {
    let history = [assign(), put("hot"), raise(1)];
    let (state, outcome) = run(&history, Entry::new(delete("hot")));
    assert!(state.rules.is_empty());
    assert!(state.active.is_empty());
    let alarm = &state.alarms["a-3"];
    assert_eq!(alarm.status, AlarmStatus::Cleared);
    assert_eq!(alarm.cleared_at_ms, Some(4000));
    assert_eq!(alarm.message, RULE_DELETED);
    assert_eq!(
        outcome.events[0],
        Applied::RuleChanged {
            tenant: "default".into(),
            id: "hot".into(),
            rule: None
        }
    );
}

#[test]
fn put_rule_stores_version_and_time() {
    let (state, outcome) = run(&[assign()], Entry::new(put("hot")));
    let rule = &state.rules[&("default".to_owned(), "hot".to_owned())];
    assert_eq!((rule.version, rule.updated_at_ms), (2, 1000));
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(state.rule_history, vec![rule.clone()]);
}

#[test]
fn every_rule_version_stays_in_the_history_after_delete() {
    let (state, _) = run(
        &[put("hot"), put("hot"), delete("hot")],
        Entry::new(put("hot")),
    );
    let versions: Vec<u64> = state.rule_history.iter().map(|r| r.version).collect();
    assert_eq!(versions, vec![1, 2, 4]);
}

#[test]
fn alarm_ids_round_trip() {
    assert_eq!(alarm_index(&alarm_id(42)), Some(42));
    assert_eq!(alarm_index("b-1"), None);
    assert_eq!(alarm_index("a-x"), None);
}

fn register(node: u64, peer: &str) -> ControlCommand {
    ControlCommand::RegisterNode {
        node,
        peer_addr: peer.into(),
        client_addr: format!("client-{node}"),
        mqtt_client_id: format!("starling-node-{node}"),
        at_ms: 100,
    }
}

fn set_state(node: u64, state: NodeState, rescuer: Option<u64>, at_ms: i64) -> ControlCommand {
    ControlCommand::SetNodeState {
        node,
        state,
        rescuer,
        at_ms,
    }
}

#[test]
fn assignments_are_kept_in_the_ownership_history() {
    let mut s = MemState::default();
    apply_at(&mut s, 3, &assign());
    let moved = ControlCommand::AssignShards {
        node: 2,
        shards: vec![1],
        at_ms: 900,
        activate_after_ms: 1750,
    };
    let out = apply_at(&mut s, 8, &moved);
    assert_eq!(out.response, ControlResponse::ShardsAssigned { epoch: 8 });
    assert_eq!(
        out.events,
        vec![Applied::ShardsAssigned {
            node: 2,
            shards: vec![1],
            epoch: 8,
            activate_after_ms: 1750
        }]
    );
    assert_eq!(s.shards[&0], (1, 3));
    assert_eq!(s.shards[&1], (2, 8));
    let history: Vec<_> = s.history.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        history,
        vec![((0, 3), (1, 500)), ((1, 3), (1, 500)), ((1, 8), (2, 900))]
    );
}

#[test]
fn node_registration_and_state_changes() {
    let mut s = MemState::default();
    // Table: (index, command, expected response kind, expected state afterwards).
    type Expected = Option<(NodeState, Option<u64>, i64)>;
    let cases: Vec<(u64, ControlCommand, ControlResponse, Expected)> = vec![
        (
            1,
            set_state(2, NodeState::Down, None, 50),
            ControlResponse::Rejected(Rejection::NoSuchNode(2)),
            None,
        ),
        (
            2,
            register(2, "p2"),
            ControlResponse::NodeChanged { index: 2 },
            Some((NodeState::Active, None, 100)),
        ),
        // The same registration again changes nothing.
        (
            3,
            register(2, "p2"),
            ControlResponse::Unchanged,
            Some((NodeState::Active, None, 100)),
        ),
        (
            4,
            set_state(2, NodeState::Down, Some(1), 700),
            ControlResponse::NodeChanged { index: 4 },
            Some((NodeState::Down, Some(1), 700)),
        ),
        (
            5,
            set_state(2, NodeState::Down, Some(1), 800),
            ControlResponse::Unchanged,
            Some((NodeState::Down, Some(1), 700)),
        ),
        // Re-registering a down node makes it active again (a restart).
        (
            6,
            register(2, "p2"),
            ControlResponse::NodeChanged { index: 6 },
            Some((NodeState::Active, None, 100)),
        ),
        (
            7,
            register(2, "p2-new"),
            ControlResponse::NodeChanged { index: 7 },
            Some((NodeState::Active, None, 100)),
        ),
        (
            8,
            set_state(2, NodeState::Removed, None, 900),
            ControlResponse::NodeChanged { index: 8 },
            Some((NodeState::Removed, None, 900)),
        ),
        // A liveness decision about a removed node was taken on a stale view: refused.
        (
            9,
            set_state(2, NodeState::Down, Some(1), 950),
            ControlResponse::Rejected(Rejection::NodeRemoved(2)),
            Some((NodeState::Removed, None, 900)),
        ),
        (
            10,
            set_state(2, NodeState::Active, None, 960),
            ControlResponse::Rejected(Rejection::NodeRemoved(2)),
            Some((NodeState::Removed, None, 900)),
        ),
        // So is a placement onto it; shards stay where they were.
        (
            11,
            ControlCommand::AssignShards {
                node: 2,
                shards: vec![7],
                at_ms: 970,
                activate_after_ms: 0,
            },
            ControlResponse::Rejected(Rejection::NodeRemoved(2)),
            Some((NodeState::Removed, None, 900)),
        ),
        // Node ids are never reused: a removed node started again cannot register.
        (
            12,
            register(2, "p2-other"),
            ControlResponse::Rejected(Rejection::NodeRemoved(2)),
            Some((NodeState::Removed, None, 900)),
        ),
    ];
    for (index, cmd, response, expected) in cases {
        let out = apply_at(&mut s, index, &cmd);
        assert_eq!(out.response, response, "entry {index}");
        let got = s.nodes.get(&2).map(|n| (n.state, n.rescuer, n.since_ms));
        assert_eq!(got, expected, "entry {index}");
        match out.response {
            ControlResponse::NodeChanged { .. } => {
                assert_eq!(out.events, vec![Applied::NodeChanged(s.nodes[&2].clone())]);
            }
            _ => assert!(out.events.is_empty(), "entry {index}"),
        }
    }
    assert_eq!(s.nodes[&2].peer_addr, "p2-new");
}

fn set_timers(epoch: u64, on: bool) -> ControlCommand {
    use crate::rules::pending::{LeafTimer, PendingTimers};
    ControlCommand::SetPendingTimers {
        shard: 0,
        epoch,
        device: dev(),
        rule_id: "hot".into(),
        timers: on.then(|| PendingTimers {
            rule_version: 2,
            leaves: vec![LeafTimer::NoData {
                leaf: 0,
                last_received_ms: 1_000,
            }],
        }),
    }
}

#[test]
fn pending_timer_records_table() {
    let a = assign();
    // (name, entries before (index 1..), the entry, response, records held afterwards)
    type Case = (
        &'static str,
        Vec<ControlCommand>,
        ControlCommand,
        &'static str,
        usize,
    );
    let cases: Vec<Case> = vec![
        (
            "set under the current epoch",
            vec![a.clone()],
            set_timers(1, true),
            "timers set",
            1,
        ),
        (
            "removed",
            vec![a.clone(), set_timers(1, true)],
            set_timers(1, false),
            "timers set",
            0,
        ),
        (
            "stale epoch refused, record kept",
            vec![a.clone(), set_timers(1, true), a.clone()],
            set_timers(1, false),
            "rejected: stale epoch for shard 0: entry has 1, current is 3",
            1,
        ),
        (
            "the new owner's epoch may remove it",
            vec![a.clone(), set_timers(1, true), a.clone()],
            set_timers(3, false),
            "timers set",
            0,
        ),
        (
            "unassigned shard refused",
            vec![],
            set_timers(0, true),
            "rejected: stale epoch for shard 0: entry has 0, current is 0",
            0,
        ),
    ];
    for (name, before, cmd, want, held) in cases {
        let mut st = MemState::default();
        let mut index = 0;
        for c in &before {
            index += 1;
            apply_at(&mut st, index, c);
        }
        let out = apply_at(&mut st, index + 1, &cmd);
        assert_eq!(kind(&out.response), want, "{name}");
        assert_eq!(st.timers.len(), held, "{name}: records");
        assert!(
            out.events.is_empty(),
            "{name}: timer records publish no events"
        );
    }
}

#[test]
fn the_latest_transition_time_is_kept_per_device_and_rule() {
    let key = (dev(), "hot".to_owned());
    // (case, history, expected latest transition)
    let cases: &[(&str, Vec<ControlCommand>, Option<i64>)] = &[
        ("nothing raised", vec![assign(), put("hot")], None),
        (
            "raised at 2000",
            vec![assign(), put("hot"), raise(1)],
            Some(2000),
        ),
        (
            "raised, then cleared at 3000",
            vec![assign(), put("hot"), raise(1), clear(1)],
            Some(3000),
        ),
        (
            "a stale-epoch clear changes nothing",
            vec![assign(), put("hot"), raise(1), clear(0)],
            Some(2000),
        ),
    ];
    for (case, history, want) in cases {
        let mut state = MemState::default();
        for (i, cmd) in history.iter().enumerate() {
            apply_at(&mut state, i as u64 + 1, cmd);
        }
        assert_eq!(state.transitions.get(&key).copied(), *want, "{case}");
    }
}
