//! Retention per tenant and per tier (raw, 1-minute, 1-hour). Pure: what is old enough to
//! delete at a given time. Stores apply it in [`super::TelemetryStore::sweep`]; a periodic
//! worker calls that.
//!
//! Tiers age independently, so a typical policy keeps raw points for days, minute buckets
//! for months and hour buckets for years. Reads do not hide data a sweep has not removed yet.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rollup::Resolution;
use crate::model::TimestampMs;

/// How long each tier is kept; `None` keeps it forever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub raw: Option<Duration>,
    pub minute: Option<Duration>,
    pub hour: Option<Duration>,
}

impl Retention {
    /// The retention of one tier: `None` for raw points, `Some(resolution)` for rollups.
    pub fn of(&self, tier: Option<Resolution>) -> Option<Duration> {
        match tier {
            None => self.raw,
            Some(Resolution::Minute) => self.minute,
            Some(Resolution::Hour) => self.hour,
        }
    }
}

/// A default retention and per-tenant overrides (a tenant's entry replaces the default
/// whole, tier by tier).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub default: Retention,
    pub tenants: BTreeMap<String, Retention>,
}

impl RetentionPolicy {
    /// The retention that applies to `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> Retention {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }

    /// Entries of `tenant`'s `tier` with a time (point ts, bucket start) before the returned
    /// cutoff are deleted by a sweep at `now_ms`; `None` keeps everything. A bucket is kept
    /// while any of it is young enough, so its start is compared with the cutoff minus
    /// its width.
    pub fn cutoff(
        &self,
        tenant: &str,
        tier: Option<Resolution>,
        now_ms: TimestampMs,
    ) -> Option<TimestampMs> {
        let keep = self.for_tenant(tenant).of(tier)?;
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(keep_ms);
        Some(match tier {
            None => cutoff,
            Some(res) => cutoff.saturating_sub(res.width_ms() - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn cutoffs_per_tenant_and_tier() {
        let policy = RetentionPolicy {
            default: Retention {
                raw: Some(DAY),
                minute: Some(DAY * 30),
                hour: None,
            },
            tenants: BTreeMap::from([(
                "gold".to_owned(),
                Retention {
                    raw: Some(DAY * 7),
                    minute: None,
                    hour: None,
                },
            )]),
        };
        let now = 100 * 86_400_000;
        let day = 86_400_000;
        let cases = [
            ("acme", None, Some(now - day)),
            (
                "acme",
                Some(Resolution::Minute),
                Some(now - 30 * day - 59_999),
            ),
            ("acme", Some(Resolution::Hour), None),
            ("gold", None, Some(now - 7 * day)),
            ("gold", Some(Resolution::Minute), None),
        ];
        for (tenant, tier, want) in cases {
            assert_eq!(policy.cutoff(tenant, tier, now), want, "{tenant} {tier:?}");
        }
        assert_eq!(RetentionPolicy::default().cutoff("x", None, now), None);
    }
}
