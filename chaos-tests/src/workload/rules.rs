//! Rule writes through the SDK: a writer applies `chaos-rule-{k}` documents in turn, each with
//! a fresh `marker` (its threshold value), and records which writes the cluster acknowledged
//! and with which version. The rules select a device that never publishes, so they are pure
//! control-plane writes. [`ALARM_RULE`] is the rule the devices' temperature pattern trips.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use starling_sdk::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::history::RuleWriteOp;

/// The alarm rule of every run: `temp > 30`, clearing below 25.
pub const ALARM_RULE: &str = r#"{"id":"chaos-hot","condition":{"threshold":{"metric":"temp","op":">","value":30,"clear":25}},"severity":"major"}"#;
/// Rule ids the writer cycles through.
pub const WRITER_RULES: u64 = 3;
/// Pause between two rule writes.
pub const PACE: Duration = Duration::from_millis(300);

/// The document of write number `marker`.
pub fn document(marker: i64) -> (String, String) {
    let id = format!("chaos-rule-{}", marker.unsigned_abs() % WRITER_RULES);
    let doc = format!(
        r#"{{"id":"{id}","selector":{{"devices":["chaos-nobody"]}},"condition":{{"threshold":{{"metric":"unused","op":">","value":{marker}}}}},"severity":"minor"}}"#
    );
    (id, doc)
}

/// The marker of a stored rule document (its threshold value), if it is one of ours.
pub fn marker_of(document: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(document).ok()?;
    v["condition"]["threshold"]["value"]
        .as_f64()
        .map(|x| x as i64)
}

/// The running writer; [`RuleWriter::finish`] returns its history.
pub struct RuleWriter {
    ops: Arc<Mutex<Vec<RuleWriteOp>>>,
    task: JoinHandle<()>,
}

impl RuleWriter {
    pub fn start(client: Client, mut stop: watch::Receiver<bool>) -> RuleWriter {
        let ops = Arc::new(Mutex::new(Vec::new()));
        let record = ops.clone();
        let task = tokio::spawn(async move {
            let mut marker = 0i64;
            while !*stop.borrow() {
                marker += 1;
                let (rule_id, doc) = document(marker);
                let acked_version = client
                    .apply_rule(&doc, "json")
                    .await
                    .ok()
                    .map(|r| r.version);
                record.lock().expect("ops lock").push(RuleWriteOp {
                    rule_id,
                    marker,
                    acked_version,
                });
                tokio::select! {
                    // Stop requested: the loop condition ends the writer.
                    _ = stop.changed() => {}
                    // Pace the writer.
                    _ = tokio::time::sleep(PACE) => {}
                }
            }
        });
        RuleWriter { ops, task }
    }

    pub async fn finish(self) -> Vec<RuleWriteOp> {
        let _ = self.task.await;
        std::mem::take(&mut *self.ops.lock().expect("ops lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_their_marker() {
        for marker in [1, 2, 3, 77] {
            let (id, doc) = document(marker);
            assert_eq!(id, format!("chaos-rule-{}", marker % 3));
            assert_eq!(marker_of(&doc), Some(marker));
        }
        assert_eq!(marker_of("not json"), None);
    }
}
