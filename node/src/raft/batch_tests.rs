//! Table tests of batch entries: which commands may share an entry ([`BatchSlots`]), and
//! applying a batch (each command sees the entry's index; a command that may not share it is
//! refused, the others apply in order).

use super::*;
use crate::raft::command::BatchSlots;

fn raise_on(device: &str, epoch: u64) -> ControlCommand {
    let mut cmd = raise(epoch);
    if let ControlCommand::RaiseAlarm { device: d, .. } = &mut cmd {
        *d = DeviceKey::default_tenant(device);
    }
    cmd
}

#[test]
fn batch_slots_table() {
    // (case, commands offered in order, which of them join the batch)
    let cases: Vec<(&str, Vec<ControlCommand>, Vec<bool>)> = vec![
        (
            "rules of different ids share",
            vec![put("a"), put("b"), delete("c")],
            vec![true, true, true],
        ),
        (
            "a rule's second write waits",
            vec![put("a"), put("a"), delete("a")],
            vec![true, false, false],
        ),
        (
            "one alarm id per entry",
            vec![raise(1), raise_on("t2", 1), clear(1)],
            vec![true, false, true],
        ),
        (
            "free commands share",
            vec![clear(1), clear(1), ack("a-1"), set_timers(1, true)],
            vec![true, true, true, true],
        ),
        (
            "placement goes alone",
            vec![put("a"), assign()],
            vec![true, false],
        ),
        (
            "placement first goes alone too",
            vec![assign(), put("a")],
            vec![false, true],
        ),
        (
            "no nesting",
            vec![ControlCommand::Batch(vec![put("a")])],
            vec![false],
        ),
    ];
    for (case, cmds, want) in cases {
        let mut slots = BatchSlots::default();
        let got: Vec<bool> = cmds.iter().map(|c| slots.take(c)).collect();
        assert_eq!(got, want, "{case}");
        assert_eq!(slots.len(), want.iter().filter(|j| **j).count(), "{case}");
    }
}

#[test]
fn take_all_table() {
    // (case, commands taken one by one first, a forwarded batch offered whole, joins?,
    //  commands taken in the end)
    type Case = (
        &'static str,
        Vec<ControlCommand>,
        Vec<ControlCommand>,
        bool,
        usize,
    );
    let cases: Vec<Case> = vec![
        (
            "into an empty entry",
            vec![],
            vec![put("a"), put("b")],
            true,
            2,
        ),
        (
            "beside other rules",
            vec![put("c")],
            vec![put("a"), clear(1)],
            true,
            3,
        ),
        (
            "a rule already in the entry",
            vec![put("a")],
            vec![put("b"), put("a")],
            false,
            1,
        ),
        (
            "the same rule twice inside it",
            vec![],
            vec![put("a"), delete("a")],
            false,
            0,
        ),
        (
            "a second alarm id",
            vec![raise(1)],
            vec![raise_on("t2", 1)],
            false,
            1,
        ),
        (
            "two alarm ids inside it",
            vec![],
            vec![raise(1), raise_on("t2", 1)],
            false,
            0,
        ),
        (
            "one alarm id, entry has none",
            vec![put("a")],
            vec![raise(1), clear(1)],
            true,
            3,
        ),
        (
            "placement inside it",
            vec![],
            vec![put("a"), assign()],
            false,
            0,
        ),
        (
            "a batch inside it",
            vec![],
            vec![ControlCommand::Batch(vec![put("a")])],
            false,
            0,
        ),
        ("an empty batch", vec![put("a")], vec![], true, 1),
    ];
    for (case, before, forwarded, joins, len) in cases {
        let mut slots = BatchSlots::default();
        for cmd in &before {
            assert!(slots.take(cmd), "{case}: setup");
        }
        assert_eq!(slots.take_all(&forwarded), joins, "{case}");
        assert_eq!(slots.len(), len, "{case}");
    }
}

#[test]
fn a_refused_forwarded_batch_takes_no_slot() {
    let mut slots = BatchSlots::default();
    assert!(!slots.take_all(&[put("a"), raise(1), raise_on("t2", 1)]));
    assert!(slots.take(&put("a")), "the rule's slot is still free");
    assert!(slots.take(&raise(1)), "the alarm id is still free");
    assert_eq!(slots.len(), 2);
}

fn batch(cmds: Vec<ControlCommand>) -> Entry {
    Entry::new(ControlCommand::Batch(cmds))
}

const REFUSED: &str = "rejected: command may not share a Raft entry with the commands before it";

#[test]
fn batch_apply_table() {
    // (case, history applied at indexes 1.., batch applied at the next index, expected)
    let a = assign(); // index 1: epoch 1
    let cases: Vec<(&str, Vec<ControlCommand>, Vec<ControlCommand>, String)> = vec![
        (
            "two rules: both versions are the entry's index",
            vec![a.clone()],
            vec![put("x"), put("y")],
            "batch[version 2 []; version 2 []]".into(),
        ),
        (
            "the same rule twice: the second is refused",
            vec![a.clone()],
            vec![put("x"), put("x")],
            format!("batch[version 2 []; {REFUSED}]"),
        ),
        (
            "raise then clear in one entry, in order",
            vec![a.clone(), put("hot")],
            vec![raise(1), clear(1)],
            "batch[alarm [Raised(a-3)]; alarm [Cleared(a-3)]]".into(),
        ),
        (
            "a second raise is refused, not given the same id",
            vec![a.clone(), put("hot")],
            vec![raise(1), raise_on("t2", 1)],
            format!("batch[alarm [Raised(a-3)]; {REFUSED}]"),
        ),
        (
            "a stale epoch is refused, the rest applies",
            vec![a.clone(), put("hot")],
            vec![raise(9), put("z")],
            "batch[rejected: stale epoch for shard 0: entry has 9, current is 1; version 3 []]"
                .into(),
        ),
        (
            "placement inside a batch is refused and changes nothing",
            vec![a.clone()],
            vec![put("x"), assign()],
            format!("batch[version 2 []; {REFUSED}]"),
        ),
        (
            "nested batch refused",
            vec![a.clone()],
            vec![ControlCommand::Batch(vec![put("x")])],
            format!("batch[{REFUSED}]"),
        ),
    ];
    for (case, history, cmds, want) in cases {
        let (_, outcome) = run(&history, batch(cmds));
        assert_eq!(kind(&outcome.response), want, "{case}");
    }
}

#[test]
fn a_batch_writes_the_state_of_each_command_in_order() {
    // Index 1 assigns the shards, 2 puts "hot", 3 is the batch.
    let cmds = vec![put("cold"), raise(1), ack("a-3"), assign()];
    let (state, outcome) = run(&[assign(), put("hot")], batch(cmds));
    let ControlResponse::Batch(responses) = &outcome.response else {
        panic!("batch answer: {:?}", outcome.response);
    };
    assert_eq!(responses.len(), 4);
    let Ok(Some(alarm)) = state.alarm("a-3") else {
        panic!("alarm a-3 raised by the batch");
    };
    assert!(
        alarm.acknowledged,
        "the ack in the same entry applied after the raise"
    );
    let Ok(Some(cold)) = state.rule("default", "cold") else {
        panic!("rule cold put by the batch");
    };
    assert_eq!(cold.version, 3);
    // The refused placement left the shard map as index 1 set it.
    let Ok(owner) = state.shard_owner(0);
    assert_eq!(owner, Some((1, 1)));
    // Events: the rule change, then the raise and the ack, in order.
    let names: Vec<&str> = outcome
        .events
        .iter()
        .map(|e| match e {
            Applied::RuleChanged { .. } => "rule",
            Applied::Alarm(a) => a.transition.as_str(),
            _ => "other",
        })
        .collect();
    assert_eq!(names, ["rule", "raised", "acknowledged"]);
}
