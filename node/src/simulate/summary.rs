//! The end-of-run summary of `starling simulate`: counts and ack latency percentiles, as one
//! line of text or one JSON object. Pure.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::scenario::Scenario;

/// What a run did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub devices: u64,
    /// Messages handed to the MQTT clients.
    pub sent: u64,
    /// Messages the broker acknowledged (PUBACK).
    pub acked: u64,
    /// Messages not acknowledged within the ack timeout, plus publishes that failed.
    pub failed: u64,
    /// Publish→PUBACK latency percentiles, milliseconds (None without acks).
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    /// Messages sent during the scenario's faults (valid telemetry).
    pub faults: u64,
    /// Invalid messages sent on purpose.
    pub malformed: u64,
    /// Dropouts (silent periods) started.
    pub dropouts: u64,
    /// From the first publish to the end of the acknowledgement wait.
    pub seconds: f64,
    /// Stopped early by Ctrl-C or SIGTERM.
    pub interrupted: bool,
}

impl Summary {
    /// The human-readable line.
    pub fn line(&self) -> String {
        let ms = |p: Option<f64>| p.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms"));
        format!(
            "simulated {} {}s for {:.2} s{}: sent {}, acked {}, failed {}, ack latency p50 {} p99 {}, faults {}, malformed {}, dropouts {}",
            self.devices,
            self.scenario.device_type(),
            self.seconds,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.sent,
            self.acked,
            self.failed,
            ms(self.ack_p50_ms),
            ms(self.ack_p99_ms),
            self.faults,
            self.malformed,
            self.dropouts,
        )
    }

    /// Sets the latency percentiles from a histogram of microseconds.
    pub fn set_latencies(&mut self, latency_us: &Histogram<u64>) {
        let at = |q: f64| {
            (!latency_us.is_empty()).then(|| latency_us.value_at_quantile(q) as f64 / 1000.0)
        };
        self.ack_p50_ms = at(0.5);
        self.ack_p99_ms = at(0.99);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::connection::latency_histogram;

    fn summary() -> Summary {
        Summary {
            scenario: Scenario::Factory,
            devices: 5,
            sent: 100,
            acked: 99,
            failed: 1,
            ack_p50_ms: None,
            ack_p99_ms: None,
            faults: 3,
            malformed: 1,
            dropouts: 0,
            seconds: 1.234,
            interrupted: false,
        }
    }

    #[test]
    fn shapes() {
        let mut s = summary();
        assert_eq!(
            s.line(),
            "simulated 5 machines for 1.23 s: sent 100, acked 99, failed 1, ack latency p50 - p99 -, faults 3, malformed 1, dropouts 0"
        );
        s.ack_p50_ms = Some(1.5);
        s.ack_p99_ms = Some(12.0);
        assert!(
            s.line().contains("p50 1.50 ms p99 12.00 ms"),
            "{}",
            s.line()
        );
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&s).expect("serialize")).expect("json");
        assert_eq!(json["scenario"], "factory");
        assert_eq!(
            (json["sent"].as_u64(), json["acked"].as_u64()),
            (Some(100), Some(99))
        );
        assert_eq!(json["failed"], 1);
        assert_eq!(
            (json["ack_p50_ms"].as_f64(), json["ack_p99_ms"].as_f64()),
            (Some(1.5), Some(12.0))
        );
        assert_eq!(json["seconds"], 1.234);
    }

    #[test]
    fn percentiles_from_microseconds() {
        // (latencies in µs, p50 ms, p99 ms), within the histogram's 3 significant digits.
        let cases: &[(&[u64], Option<f64>, Option<f64>)] = &[
            (&[], None, None),
            (&[1_000], Some(1.0), Some(1.0)),
            (&[1_000, 2_000, 3_000], Some(2.0), Some(3.0)),
        ];
        for (latencies, p50, p99) in cases {
            let mut h = latency_histogram();
            for us in *latencies {
                h.record(*us).expect("in range");
            }
            let mut s = summary();
            s.set_latencies(&h);
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= b * 0.001,
                (a, b) => a == b,
            };
            assert!(
                close(s.ack_p50_ms, *p50),
                "{latencies:?}: {:?}",
                s.ack_p50_ms
            );
            assert!(
                close(s.ack_p99_ms, *p99),
                "{latencies:?}: {:?}",
                s.ack_p99_ms
            );
        }
        // 1 % slow messages: p50 stays low, p99 sees them.
        let mut h = latency_histogram();
        for i in 0..1000u64 {
            h.record(if i % 100 == 0 { 50_000 } else { 500 })
                .expect("in range");
        }
        let mut s = summary();
        s.set_latencies(&h);
        let (p50, p99) = (s.ack_p50_ms.unwrap_or(0.0), s.ack_p99_ms.unwrap_or(0.0));
        assert!(p50 < 1.0 && p50 <= p99, "{p50} {p99}");
    }
}
