//! Table tests of the outbox side of the pure apply, over the in-memory state of
//! `apply_tests.rs`.

use super::*;
use crate::model::Target;
use crate::raft::apply::tests::{MemState, ack, apply_at, assign, clear, delete, dev, doc, raise};
use crate::raft::command::{ControlCommand, Rejection};

fn webhook() -> Target {
    Target::Webhook {
        url: "http://hooks.example/alarm".into(),
    }
}

/// Rule `hot` with one webhook target (or none).
fn put_hot(targets: Vec<Target>) -> ControlCommand {
    let mut doc = doc("hot");
    doc.notify = targets;
    ControlCommand::PutRule { doc, at_ms: 1000 }
}

fn key(alarm: &str, transition: Transition) -> DeliveryKey {
    DeliveryKey {
        alarm_id: alarm.into(),
        transition,
    }
}

fn delivered(keys: &[DeliveryKey]) -> ControlCommand {
    ControlCommand::NotificationsDelivered {
        keys: keys.to_vec(),
    }
}

/// The outbox as `alarm:transition` keys, by alarm then transition order.
fn pending(state: &MemState) -> Vec<String> {
    state.outbox.keys().map(ToString::to_string).collect()
}

#[test]
fn outbox_table() {
    use Transition::{Acknowledged, Cleared, Raised};
    let with = || put_hot(vec![webhook()]);
    // (case, commands applied at indexes 1.., expected outbox, last response)
    let cases: Vec<(&str, Vec<ControlCommand>, Vec<&str>, ControlResponse)> = vec![
        (
            "a raise is pending",
            vec![assign(), with(), raise(1)],
            vec!["a-3:raised"],
            ControlResponse::Alarm(Vec::new()),
        ),
        (
            "raise, clear, ack: one row per transition",
            vec![assign(), with(), raise(1), clear(1), ack("a-3")],
            vec!["a-3:raised", "a-3:cleared", "a-3:acknowledged"],
            ControlResponse::Alarm(Vec::new()),
        ),
        (
            "a rule without targets leaves nothing to deliver",
            vec![assign(), put_hot(Vec::new()), raise(1)],
            vec![],
            ControlResponse::Alarm(Vec::new()),
        ),
        (
            "a duplicate raise adds nothing",
            vec![assign(), with(), raise(1), raise(1)],
            vec!["a-3:raised"],
            ControlResponse::Unchanged,
        ),
        (
            "a rejected raise adds nothing",
            vec![assign(), with(), assign(), raise(1)],
            vec![],
            ControlResponse::Rejected(Rejection::StaleEpoch {
                shard: 0,
                entry: 1,
                current: 3,
            }),
        ),
        (
            "deleting the rule clears with its last version's targets",
            vec![assign(), with(), raise(1), delete("hot")],
            vec!["a-3:raised", "a-3:cleared"],
            ControlResponse::RuleVersion {
                version: 4,
                events: Vec::new(),
            },
        ),
        (
            "delivered removes the row",
            vec![assign(), with(), raise(1), delivered(&[key("a-3", Raised)])],
            vec![],
            ControlResponse::Delivered { removed: 1 },
        ),
        (
            "delivered is idempotent",
            vec![
                assign(),
                with(),
                raise(1),
                delivered(&[key("a-3", Raised)]),
                delivered(&[key("a-3", Raised)]),
            ],
            vec![],
            ControlResponse::Unchanged,
        ),
        (
            "delivered removes only its keys",
            vec![
                assign(),
                with(),
                raise(1),
                clear(1),
                delivered(&[key("a-3", Cleared), key("a-9", Raised), key("x", Raised)]),
            ],
            vec!["a-3:raised"],
            ControlResponse::Delivered { removed: 1 },
        ),
        (
            "a transition after its delivery is pending again",
            vec![
                assign(),
                with(),
                raise(1),
                delivered(&[key("a-3", Raised)]),
                ack("a-3"),
            ],
            vec!["a-3:acknowledged"],
            ControlResponse::Alarm(Vec::new()),
        ),
        (
            "an acknowledgement of an already acknowledged alarm adds nothing",
            vec![
                assign(),
                with(),
                raise(1),
                ack("a-3"),
                delivered(&[key("a-3", Raised), key("a-3", Acknowledged)]),
                ack("a-3"),
            ],
            vec![],
            ControlResponse::Unchanged,
        ),
    ];
    for (case, commands, want, last) in cases {
        let mut state = MemState::default();
        let mut response = ControlResponse::Unchanged;
        for (i, cmd) in commands.iter().enumerate() {
            response = apply_at(&mut state, i as u64 + 1, cmd).response;
        }
        assert_eq!(pending(&state), want, "{case}");
        // Alarm responses are compared by kind only (their events are checked elsewhere).
        let same = match (&response, &last) {
            (ControlResponse::Alarm(_), ControlResponse::Alarm(_)) => true,
            (
                ControlResponse::RuleVersion { version: a, .. },
                ControlResponse::RuleVersion { version: b, .. },
            ) => a == b,
            (a, b) => a == b,
        };
        assert!(same, "{case}: {response:?}, expected {last:?}");
    }
}

#[test]
fn a_pending_row_keeps_the_event_as_committed_and_the_targets() {
    let mut state = MemState::default();
    for (i, cmd) in [assign(), put_hot(vec![webhook()]), raise(1), ack("a-3")]
        .iter()
        .enumerate()
    {
        apply_at(&mut state, i as u64 + 1, cmd);
    }
    let raised = &state.outbox[&key("a-3", Transition::Raised)];
    assert_eq!(raised.targets, vec![webhook()]);
    assert_eq!(raised.event.alarm.device, dev());
    // The acknowledgement changed the alarm afterwards; the raise is sent as it was.
    assert!(!raised.event.alarm.acknowledged);
    let acked = &state.outbox[&key("a-3", Transition::Acknowledged)];
    assert!(acked.event.alarm.acknowledged);
    assert_eq!(raised.key().to_string(), "a-3:raised");
}

#[test]
fn replaying_the_same_log_gives_the_same_outbox() {
    let log = [
        assign(),
        put_hot(vec![webhook()]),
        raise(1),
        clear(1),
        delivered(&[key("a-3", Transition::Raised)]),
    ];
    let run = || {
        let mut state = MemState::default();
        for (i, cmd) in log.iter().enumerate() {
            apply_at(&mut state, i as u64 + 1, cmd);
        }
        state.outbox
    };
    let first = run();
    assert_eq!(first, run());
    assert_eq!(
        first.keys().cloned().collect::<Vec<_>>(),
        vec![key("a-3", Transition::Cleared)]
    );
}
