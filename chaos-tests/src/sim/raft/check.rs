//! The invariants of a simulated run, one function each, pure over [`Observations`]; each
//! returns the first violation it finds.
//!
//! Sources: election safety, log matching and state-machine safety are Raft's (Ongaro's
//! thesis, figure 3.2); epochs and single active alarms are Starling's (DESIGN.md §3, §7).

use std::collections::BTreeMap;

use starling_node::raft::{ControlCommand, ControlResponse, Rejection};

use super::obs::Observations;

/// Runs every check in order.
pub fn all(obs: &Observations, nodes: u64) -> Result<(), String> {
    election_safety(obs)?;
    state_machine_safety(obs)?;
    converged(obs, nodes)?;
    acked_applied_everywhere(obs, nodes)?;
    epochs_never_go_back(obs)?;
    stale_epochs_refused(obs)?;
    one_active_alarm(obs)
}

/// Raft's election safety, in openraft's form. Openraft 0.9 (without its
/// `single-term-leader` feature, as Starling builds it) identifies a leader by (term, node),
/// ordered, so two nodes may both lead one term, the larger superseding the smaller; what
/// keeps one leader per leader id is that every node's vote only grows. Checked: no node ever
/// saved a vote smaller than its previous one (across restarts), and no leader id (term,
/// node) was reported by metrics without a committed vote naming it.
pub fn election_safety(obs: &Observations) -> Result<(), String> {
    if let Some(e) = obs.vote_regressions.first() {
        return Err(e.clone());
    }
    for (term, leaders) in &obs.leaders {
        let voted = obs.voted_leaders.get(term);
        if let Some(n) = leaders
            .iter()
            .find(|n| !voted.is_some_and(|v| v.contains(n)))
        {
            return Err(format!(
                "node {n} led term {term} without a committed vote for it"
            ));
        }
    }
    Ok(())
}

/// Raft: every node applied the same entry at the same index, and a node re-applying its
/// log after a restart applied the same entries with the same answers.
pub fn state_machine_safety(obs: &Observations) -> Result<(), String> {
    if let Some(e) = obs.reapplied_differently.first() {
        return Err(e.clone());
    }
    let mut first: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for (node, applied) in &obs.applied {
        for (index, e) in applied {
            let (n0, term, hash) = *first.entry(*index).or_insert((*node, e.term, e.hash));
            if (term, hash) != (e.term, e.hash) {
                return Err(format!(
                    "index {index}: node {n0} applied term {term} hash {hash:x}, node {node} \
                     applied term {} hash {:x}",
                    e.term, e.hash
                ));
            }
        }
    }
    Ok(())
}

/// After healing, the client's barrier write was acknowledged and every node applied it.
pub fn converged(obs: &Observations, nodes: u64) -> Result<(), String> {
    let Some(barrier) = obs.barrier else {
        return Err("the final write was never acknowledged".into());
    };
    for n in 1..=nodes {
        let last = obs.last_applied(n);
        if last < barrier {
            return Err(format!(
                "node {n} applied up to {last}, not the final write at {barrier}"
            ));
        }
    }
    Ok(())
}

/// Every write the client saw acknowledged is applied, as acknowledged, on every node.
pub fn acked_applied_everywhere(obs: &Observations, nodes: u64) -> Result<(), String> {
    for a in &obs.acked {
        for n in 1..=nodes {
            match obs.applied.get(&n).and_then(|m| m.get(&a.index)) {
                Some(e) if (e.term, e.hash) == (a.term, a.hash) => {}
                Some(e) => {
                    return Err(format!(
                        "acknowledged write at index {} term {} is term {} hash {:x} on node {n}",
                        a.index, a.term, e.term, e.hash
                    ));
                }
                None => {
                    return Err(format!(
                        "acknowledged write at index {} is not applied on node {n}",
                        a.index
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Starling: in every node's applied state, a shard's epoch never decreases along the log.
pub fn epochs_never_go_back(obs: &Observations) -> Result<(), String> {
    for (node, applied) in &obs.applied {
        let mut seen: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for (index, e) in applied {
            for (shard, epoch) in &e.epochs {
                if let Some((at, before)) = seen.insert(*shard, (*index, *epoch))
                    && before > *epoch
                {
                    return Err(format!(
                        "node {node}: shard {shard} epoch {before} at index {at}, then {epoch} \
                         at index {index}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Starling: an alarm write (raise or clear) is accepted only with the shard's current epoch,
/// which is the index of the last `AssignShards` of that shard before it in the log.
pub fn stale_epochs_refused(obs: &Observations) -> Result<(), String> {
    for (node, applied) in &obs.applied {
        let mut current: BTreeMap<u32, u64> = BTreeMap::new();
        for (index, e) in applied {
            let Some(command) = &e.command else { continue };
            for (command, response) in commands(command, &e.response) {
                let (shard, epoch) = match command {
                    ControlCommand::AssignShards { shards, .. } => {
                        if let ControlResponse::ShardsAssigned { epoch } = response {
                            for s in shards {
                                current.insert(*s, *epoch);
                            }
                        }
                        continue;
                    }
                    ControlCommand::RaiseAlarm { shard, epoch, .. }
                    | ControlCommand::ClearAlarm { shard, epoch, .. } => (*shard, *epoch),
                    _ => continue,
                };
                // A command refused for its place in a batch was never looked at.
                if *response == ControlResponse::Rejected(Rejection::NotBatchable) {
                    continue;
                }
                // An unassigned shard has no owner: nothing may write for it.
                let now = current.get(&shard).copied();
                let refused = matches!(
                    response,
                    ControlResponse::Rejected(Rejection::StaleEpoch { .. })
                );
                if refused == (Some(epoch) == now) {
                    let verdict = if refused { "refused" } else { "accepted" };
                    return Err(format!(
                        "node {node} index {index}: alarm write for shard {shard} epoch {epoch} \
                         {verdict} while the shard's epoch is {now:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The commands of an entry with their answers: the entry's own, or each of a batch's.
fn commands<'a>(
    command: &'a ControlCommand,
    response: &'a ControlResponse,
) -> Vec<(&'a ControlCommand, &'a ControlResponse)> {
    match (command, response) {
        (ControlCommand::Batch(cmds), ControlResponse::Batch(responses)) => {
            cmds.iter().zip(responses).collect()
        }
        _ => vec![(command, response)],
    }
}

/// Starling: at most one active alarm per (device, rule) on every node, after every entry.
pub fn one_active_alarm(obs: &Observations) -> Result<(), String> {
    for (node, applied) in &obs.applied {
        if let Some((index, e)) = applied.iter().find(|(_, e)| e.max_active > 1) {
            return Err(format!(
                "node {node} index {index}: {} active alarms for one (device, rule)",
                e.max_active
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::obs::{Acked, AppliedEntry};
    use super::*;

    fn entry(
        term: u64,
        hash: u64,
        command: Option<ControlCommand>,
        r: ControlResponse,
    ) -> AppliedEntry {
        AppliedEntry {
            term,
            hash,
            command,
            response: r,
            epochs: BTreeMap::new(),
            max_active: 0,
        }
    }

    fn raise(epoch: u64) -> ControlCommand {
        ControlCommand::ClearAlarm {
            shard: 0,
            epoch,
            device: starling_node::model::DeviceKey::default_tenant("d"),
            rule_id: "r".into(),
            at_ms: 0,
            reason: None,
        }
    }

    #[test]
    fn a_vote_regression_or_an_unvoted_leader_is_caught() {
        let mut o = Observations::default();
        o.voted_leaders.insert(4, BTreeSet::from([1, 2]));
        o.leaders.insert(4, BTreeSet::from([1, 2]));
        assert!(
            election_safety(&o).is_ok(),
            "two leader ids in one term are allowed"
        );
        o.leaders.insert(5, BTreeSet::from([3]));
        assert!(election_safety(&o).unwrap_err().contains("term 5"));
        o.vote_regressions
            .push("node 1: vote T5-N1 then T4-N2".into());
        assert!(election_safety(&o).unwrap_err().contains("node 1"));
    }

    #[test]
    fn diverging_entries_and_lost_acks_are_caught() {
        let mut o = Observations::default();
        o.applied(1, 1, entry(1, 10, None, ControlResponse::Unchanged));
        o.applied(2, 1, entry(1, 10, None, ControlResponse::Unchanged));
        o.acked.push(Acked {
            index: 1,
            term: 1,
            hash: 10,
        });
        assert!(state_machine_safety(&o).is_ok());
        assert!(acked_applied_everywhere(&o, 2).is_ok());
        assert!(
            acked_applied_everywhere(&o, 3)
                .unwrap_err()
                .contains("node 3")
        );
        o.applied(3, 1, entry(2, 11, None, ControlResponse::Unchanged));
        assert!(state_machine_safety(&o).unwrap_err().contains("index 1"));
    }

    /// Shard 0 assigned to node 1 at epoch 1, applied at index 1 on node 1.
    fn assign_shard_zero() -> ControlCommand {
        ControlCommand::AssignShards {
            node: 1,
            shards: vec![0],
            at_ms: 0,
            activate_after_ms: 0,
        }
    }

    fn shard_zero_assigned() -> Observations {
        let mut o = Observations::default();
        let assigned = ControlResponse::ShardsAssigned { epoch: 1 };
        o.applied(1, 1, entry(1, 1, Some(assign_shard_zero()), assigned));
        o
    }

    #[test]
    fn an_accepted_stale_alarm_write_is_caught() {
        let mut o = shard_zero_assigned();
        o.applied(
            1,
            2,
            entry(1, 2, Some(raise(1)), ControlResponse::Unchanged),
        );
        assert!(stale_epochs_refused(&o).is_ok());
        o.applied(
            1,
            3,
            entry(1, 3, Some(raise(0)), ControlResponse::Unchanged),
        );
        assert!(stale_epochs_refused(&o).unwrap_err().contains("index 3"));
    }

    #[test]
    fn an_accepted_stale_alarm_write_inside_a_batch_is_caught() {
        let mut o = shard_zero_assigned();
        // A placement refused for sharing an entry changes no epoch; the stale write after it
        // was refused as it should be.
        let batch = ControlCommand::Batch(vec![assign_shard_zero(), raise(0), raise(1)]);
        let answers = ControlResponse::Batch(vec![
            ControlResponse::Rejected(Rejection::NotBatchable),
            ControlResponse::Rejected(Rejection::StaleEpoch {
                shard: 0,
                entry: 0,
                current: 1,
            }),
            ControlResponse::Unchanged,
        ]);
        o.applied(1, 2, entry(1, 2, Some(batch), answers));
        assert!(stale_epochs_refused(&o).is_ok());
        let batch = ControlCommand::Batch(vec![raise(1), raise(0)]);
        let answers = ControlResponse::Batch(vec![ControlResponse::Unchanged; 2]);
        o.applied(1, 3, entry(1, 3, Some(batch), answers));
        assert!(stale_epochs_refused(&o).unwrap_err().contains("index 3"));
    }

    #[test]
    fn a_decreasing_epoch_and_two_active_alarms_are_caught() {
        let mut o = Observations::default();
        let mut e = entry(1, 1, None, ControlResponse::Unchanged);
        e.epochs.insert(0, 5);
        o.applied(1, 1, e.clone());
        e.epochs.insert(0, 4);
        e.max_active = 2;
        o.applied(1, 2, e);
        assert!(epochs_never_go_back(&o).unwrap_err().contains("shard 0"));
        assert!(one_active_alarm(&o).unwrap_err().contains("index 2"));
    }
}
