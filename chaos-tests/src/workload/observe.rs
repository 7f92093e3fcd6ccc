//! Reads what the healed cluster shows: points stored per device (by `ts` → seq), rules as
//! each node sees them, every alarm, and the nodes' lease logs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use starling_sdk::Client;
use starling_sdk::proto::{AlarmStatus, ListAlarmsRequest, QueryRequest};

use super::rules::marker_of;
use crate::history::{AlarmRecord, RuleState};

/// Sequence numbers stored for `device` (points whose `ts` is `base + seq`), and whether the
/// cluster marked any page partial (a holder of the device's history did not answer).
pub async fn stored_seqs(
    client: &Client,
    device: &str,
    base_ts_ms: i64,
) -> anyhow::Result<(BTreeSet<u64>, bool)> {
    let (mut seqs, mut partial, mut token) = (BTreeSet::new(), false, String::new());
    loop {
        let page = client
            .query(QueryRequest {
                device: device.to_owned(),
                metric: "temp".to_owned(),
                from_ms: 0,
                to_ms: i64::MAX,
                page_size: 5000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?;
        partial |= page.partial;
        seqs.extend(
            page.points
                .iter()
                .filter_map(|p| u64::try_from(p.ts_ms - base_ts_ms).ok()),
        );
        if page.next_page_token.is_empty() || page.next_page_token == token {
            return Ok((seqs, partial));
        }
        token = page.next_page_token;
    }
}

/// The `chaos-rule-*` rules as one node sees them.
pub async fn rules_of(client: &Client) -> anyhow::Result<BTreeMap<String, RuleState>> {
    Ok(client
        .list_rules()
        .await?
        .into_iter()
        .filter(|r| r.id.starts_with("chaos-rule-"))
        .map(|r| {
            let state = RuleState {
                version: r.version,
                marker: marker_of(&r.document),
            };
            (r.id, state)
        })
        .collect())
}

/// Every alarm of the default tenant.
pub async fn alarms(client: &Client) -> anyhow::Result<Vec<AlarmRecord>> {
    Ok(client
        .list_alarms(ListAlarmsRequest::default())
        .await?
        .into_iter()
        .map(|a| AlarmRecord {
            // A cleared alarm without a clear time is treated as cleared when raised.
            cleared_at_ms: (a.status != AlarmStatus::Active as i32)
                .then_some(a.cleared_at_ms.max(a.raised_at_ms)),
            id: a.id,
            device: a.device,
            rule_id: a.rule_id,
            raised_at_ms: a.raised_at_ms,
        })
        .collect())
}

/// A node's lease log text (`leases.log.1` then `leases.log`; missing files are empty).
pub fn lease_log(data_dir: &Path) -> String {
    ["leases.log.1", "leases.log"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(data_dir.join(f)).ok())
        .collect::<Vec<_>>()
        .join("\n")
}
