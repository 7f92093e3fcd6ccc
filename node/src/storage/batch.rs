//! What one group commit learns, point by point, for the latest values and the device index.
//! Pure; shared by the embedded engines' writers (redb, fjall).

use std::collections::BTreeMap;

use crate::model::{Point, TimestampMs, Value};

/// The newest point per (tenant, device, metric) and the time span per (tenant, device) of
/// the points of one batch.
#[derive(Debug, Default)]
pub(crate) struct Summary<'a> {
    /// (tenant, device, metric) → (ts, value) of the newest point; on equal timestamps the
    /// later one wins, as it does for raw points.
    pub newest: BTreeMap<(&'a str, &'a str, &'a str), (TimestampMs, &'a Value)>,
    /// (tenant, device) → (min ts, max ts).
    pub seen: BTreeMap<(&'a str, &'a str), (TimestampMs, TimestampMs)>,
}

impl<'a> Summary<'a> {
    /// Folds one accepted point in.
    pub fn note(&mut self, point: &'a Point) {
        let (tenant, device) = (point.device.tenant.as_str(), point.device.device.as_str());
        let ts = point.ts_ms;
        self.newest
            .entry((tenant, device, point.metric.as_str()))
            .and_modify(|newest| {
                if ts >= newest.0 {
                    *newest = (ts, &point.value);
                }
            })
            .or_insert((ts, &point.value));
        self.seen
            .entry((tenant, device))
            .and_modify(|(first, last)| {
                *first = (*first).min(ts);
                *last = (*last).max(ts);
            })
            .or_insert((ts, ts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeviceKey;

    fn p(device: &str, metric: &str, ts: i64, v: f64) -> Point {
        Point {
            device: DeviceKey::default_tenant(device),
            metric: metric.into(),
            ts_ms: ts,
            value: Value::Number(v),
        }
    }

    #[test]
    fn newest_and_span_per_key() {
        let points = [
            p("a", "temp", 20, 1.0),
            p("a", "temp", 10, 2.0), // older: not the newest
            p("a", "temp", 20, 3.0), // same ts, later in the batch: wins
            p("a", "speed", 5, 4.0), // another metric of the same device
            p("b", "temp", 30, 5.0),
        ];
        let mut s = Summary::default();
        for point in &points {
            s.note(point);
        }
        let t = "default";
        assert_eq!(s.newest[&(t, "a", "temp")], (20, &Value::Number(3.0)));
        assert_eq!(s.newest[&(t, "a", "speed")], (5, &Value::Number(4.0)));
        assert_eq!(s.newest[&(t, "b", "temp")], (30, &Value::Number(5.0)));
        assert_eq!(s.seen[&(t, "a")], (5, 20));
        assert_eq!(s.seen[&(t, "b")], (30, 30));
        assert_eq!(s.newest.len(), 3);
    }
}
