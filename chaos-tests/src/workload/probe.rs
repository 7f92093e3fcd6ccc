//! The recovery probe: after a heal, publish one point over gRPC (acknowledged only once
//! durably stored, DESIGN.md §5) again and again until it is acknowledged, and report how long
//! that took.

use std::time::Duration;

use starling_sdk::Client;
use starling_sdk::proto::{Sample, Value, value};

use super::now_ms;

/// How long the probe keeps trying before it reports no recovery.
pub const PROBE_LIMIT: Duration = Duration::from_secs(60);

/// Milliseconds from `healed_ms` to the first acknowledged write, or `None` within the limit.
pub async fn recovery_after(client: &Client, healed_ms: i64) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + PROBE_LIMIT;
    while tokio::time::Instant::now() < deadline {
        let ts = now_ms();
        let sample = Sample {
            ts_ms: ts,
            seq: None,
            values: [(
                "probe".to_owned(),
                Value {
                    kind: Some(value::Kind::Number(1.0)),
                },
            )]
            .into(),
        };
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            client.publish("", "chaos-probe", vec![sample]),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return Some(now_ms() - healed_ms);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
