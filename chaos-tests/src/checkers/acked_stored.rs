//! Invariant: every PUBACKed (device, seq) is stored after healing.
//!
//! Source: DESIGN.md §5 "Ingest path and acknowledgement (fixed)": Starling acknowledges only
//! after the point is durably stored, and its promise covers the broker → Starling hop; the
//! README's "nothing is acknowledged before it is durable". The device's PUBACK comes from the
//! broker, so a point the broker acknowledged and then lost in its own crash is the broker's
//! loss (DESIGN.md §5: "chaos tests report broker-crash losses separately"). A lost point is
//! counted under [`Losses::broker`], not as a violation, when it was acknowledged inside a
//! broker crash window: from [`BROKER_QUEUE_MS`] before the crash (what the in-memory broker
//! still held queued for a subscriber) until every node had subscribed again after the restart
//! (what the restarted broker acknowledged with no subscriber is dropped by it).

use std::collections::{BTreeMap, BTreeSet};

use super::Violation;
use crate::history::{FaultWindow, PublishOp};

/// How long before its crash a broker may still have held an acknowledged point queued.
pub const BROKER_QUEUE_MS: i64 = 10_000;

/// Lost acknowledged points, split by whose promise they broke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Losses {
    /// (device, seq) acknowledged, not stored, outside every broker crash window: Starling's.
    pub starling: Vec<(String, u64)>,
    /// (device, seq) acknowledged inside a broker crash window and not stored: the broker's.
    pub broker: Vec<(String, u64)>,
}

/// Splits the acknowledged-but-missing points; `faults` gives the broker crash times.
pub fn losses(
    publishes: &BTreeMap<String, Vec<PublishOp>>,
    stored: &BTreeMap<String, BTreeSet<u64>>,
    faults: &[FaultWindow],
) -> Losses {
    let crashes: Vec<(i64, i64)> = faults
        .iter()
        .filter(|f| f.broker_crash)
        .map(|f| (f.started_ms - BROKER_QUEUE_MS, f.healed_ms))
        .collect();
    let empty = BTreeSet::new();
    let mut out = Losses::default();
    for (device, ops) in publishes {
        let have = stored.get(device).unwrap_or(&empty);
        for op in ops {
            let Some(acked) = op.acked_ms else { continue };
            if have.contains(&op.seq) {
                continue;
            }
            let entry = (device.clone(), op.seq);
            if crashes
                .iter()
                .any(|(from, to)| (*from..=*to).contains(&acked))
            {
                out.broker.push(entry);
            } else {
                out.starling.push(entry);
            }
        }
    }
    out
}

/// One violation per device with Starling-side losses (listing the first few seqs).
pub fn check(losses: &Losses) -> Vec<Violation> {
    let mut by_device: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (device, seq) in &losses.starling {
        by_device.entry(device).or_default().push(*seq);
    }
    by_device
        .into_iter()
        .map(|(device, seqs)| Violation {
            checker: "acked_stored",
            detail: format!(
                "{device}: {} PUBACKed point(s) not stored after healing, seq {:?}{}",
                seqs.len(),
                &seqs[..seqs.len().min(8)],
                if seqs.len() > 8 { " …" } else { "" }
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(seq: u64, acked_ms: Option<i64>) -> PublishOp {
        PublishOp {
            seq,
            sent_ms: 0,
            acked_ms,
        }
    }

    fn crash(at: i64) -> FaultWindow {
        FaultWindow {
            description: "broker restart".into(),
            started_ms: at,
            healed_ms: at + 10,
            broker_crash: true,
        }
    }

    #[test]
    fn table() {
        // (name, ops of device d, stored seqs, faults, starling losses, broker losses)
        type Case = (
            &'static str,
            Vec<PublishOp>,
            Vec<u64>,
            Vec<FaultWindow>,
            usize,
            usize,
        );
        let cases: Vec<Case> = vec![
            (
                "all stored",
                vec![op(1, Some(5)), op(2, Some(6))],
                vec![1, 2],
                vec![],
                0,
                0,
            ),
            (
                "unacked may be missing",
                vec![op(1, Some(5)), op(2, None)],
                vec![1],
                vec![],
                0,
                0,
            ),
            (
                "acked and missing",
                vec![op(1, Some(5)), op(2, Some(6))],
                vec![1],
                vec![],
                1,
                0,
            ),
            (
                "lost just before a broker crash",
                vec![op(1, Some(20_005))],
                vec![],
                vec![crash(20_009)],
                0,
                1,
            ),
            (
                "lost while the broker restarted",
                vec![op(1, Some(20_015))],
                vec![],
                vec![crash(20_009)],
                0,
                1,
            ),
            (
                "lost after the broker's window",
                vec![op(1, Some(20_050))],
                vec![],
                vec![crash(20_009)],
                1,
                0,
            ),
            (
                "lost long before the crash",
                vec![op(1, Some(5))],
                vec![],
                vec![crash(20_009)],
                1,
                0,
            ),
            (
                "nothing stored at all",
                vec![op(1, Some(1)), op(2, Some(2))],
                vec![],
                vec![],
                2,
                0,
            ),
        ];
        for (name, ops, stored, faults, starling, broker) in cases {
            let publishes = BTreeMap::from([("d".to_owned(), ops)]);
            let stored = BTreeMap::from([("d".to_owned(), stored.into_iter().collect())]);
            let l = losses(&publishes, &stored, &faults);
            assert_eq!(l.starling.len(), starling, "{name}");
            assert_eq!(l.broker.len(), broker, "{name}");
            assert_eq!(check(&l).is_empty(), starling == 0, "{name}");
        }
    }
}
