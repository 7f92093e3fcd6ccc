//! Table tests of how the proposer lays out an entry (writes of its own callers and spliced
//! follower batches) and hands each part its answer.

use super::*;
use crate::raft::apply::tests::{clear, delete, raise};
use crate::raft::command::ControlResponse::{Batch, RuleVersion, Unchanged};

fn version(v: u64) -> ControlResponse {
    RuleVersion {
        version: v,
        events: Vec::new(),
    }
}

#[test]
fn entry_layout_table() {
    let fwd = |cmds: Vec<ControlCommand>| ControlCommand::Batch(cmds);
    // (case, parts, the entry's command)
    type Case = (&'static str, Vec<(ControlCommand, Shape)>, ControlCommand);
    let cases: Vec<Case> = vec![
        (
            "a lone write is its own command",
            vec![(delete("a"), Shape::One)],
            delete("a"),
        ),
        (
            "writes of this node share one batch",
            vec![(delete("a"), Shape::One), (clear(1), Shape::One)],
            fwd(vec![delete("a"), clear(1)]),
        ),
        (
            "a lone forwarded batch stays one batch",
            vec![(fwd(vec![delete("a"), clear(1)]), Shape::Spliced(2))],
            fwd(vec![delete("a"), clear(1)]),
        ),
        (
            "forwarded batches are spliced among own writes, in order",
            vec![
                (delete("a"), Shape::One),
                (fwd(vec![delete("b"), raise(1)]), Shape::Spliced(2)),
                (clear(1), Shape::One),
                (fwd(vec![delete("c")]), Shape::Spliced(1)),
            ],
            fwd(vec![
                delete("a"),
                delete("b"),
                raise(1),
                clear(1),
                delete("c"),
            ]),
        ),
        (
            "a batch that did not join goes as it is",
            vec![(fwd(vec![fwd(vec![])]), Shape::One)],
            fwd(vec![fwd(vec![])]),
        ),
    ];
    for (case, parts, want) in cases {
        let shapes: Vec<Shape> = parts.iter().map(|(_, s)| *s).collect();
        let cmds: Vec<ControlCommand> = parts.iter().map(|(c, _)| c.clone()).collect();
        let got = entry_command(parts);
        assert_eq!(got, want, "{case}");
        assert_eq!(split_command(got, &shapes), cmds, "{case}: split back");
    }
}

/// Answers `shapes` from `result` and returns what each part received.
fn answers(shapes: &[Shape], result: Answer) -> Vec<Result<(u64, ControlResponse), String>> {
    let mut parts = Vec::new();
    let mut receivers = Vec::new();
    for shape in shapes {
        let (tx, rx) = oneshot::channel();
        parts.push((tx, *shape));
        receivers.push(rx);
    }
    answer(parts, result);
    receivers
        .into_iter()
        .map(|mut rx| {
            rx.try_recv()
                .expect("every part answered")
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[test]
fn answer_table() {
    use Shape::{One, Spliced};
    // (case, shapes, the entry's answer, what each part gets)
    type Want = Vec<Result<(u64, ControlResponse), String>>;
    let cases: Vec<(&str, Vec<Shape>, Answer, Want)> = vec![
        (
            "a lone write",
            vec![One],
            Ok((7, version(7))),
            vec![Ok((7, version(7)))],
        ),
        (
            "own writes and a spliced batch",
            vec![One, Spliced(2), One],
            Ok((9, Batch(vec![version(9), Unchanged, version(9), Unchanged]))),
            vec![
                Ok((9, version(9))),
                Ok((9, Batch(vec![Unchanged, version(9)]))),
                Ok((9, Unchanged)),
            ],
        ),
        (
            "a lone spliced batch gets its batch answer",
            vec![Spliced(2)],
            Ok((4, Batch(vec![Unchanged, Unchanged]))),
            vec![Ok((4, Batch(vec![Unchanged, Unchanged])))],
        ),
        (
            "an answer of the wrong length fails every part",
            vec![One, One],
            Ok((5, Batch(vec![Unchanged]))),
            vec![
                Err("control plane failed: batch entry 5 answered Batch([Unchanged])".into()),
                Err("control plane failed: batch entry 5 answered Batch([Unchanged])".into()),
            ],
        ),
        (
            "an error reaches every part",
            vec![One, Spliced(3)],
            Err(ControlError::Stopped),
            vec![Err(ControlError::Stopped.to_string()); 2],
        ),
    ];
    for (case, shapes, result, want) in cases {
        assert_eq!(answers(&shapes, result), want, "{case}");
    }
}
