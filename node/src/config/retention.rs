//! `[retention]`: how long each tier of telemetry is kept, and how often the node sweeps.
//!
//! Read by `starling serve` (a section of its TOML file; `STARLING_RETENTION__RAW` and the other
//! flat keys have env overrides; per-tenant tables are file-only) and converted to the store's
//! [`RetentionPolicy`]. `starling dev` keeps everything.
//!
//! ```toml
//! [retention]
//! raw = "30d"        # raw points
//! minute = "365d"    # 1-minute rollup buckets
//! hour = "3650d"     # 1-hour rollup buckets
//! interval = "1h"    # how often the node sweeps its store
//! [retention.tenants.acme]
//! raw = "7d"         # replaces the default for tenant "acme", tier by tier (unset: kept)
//! ```
//!
//! What it does not do: delete anything (the worker in `storage::sweeper` does).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, duration};
use crate::storage::{Retention, RetentionPolicy};

/// Shortest accepted sweep interval: a sweep scans the store.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// One tenant's (or the default) keep time per tier; absent: kept forever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// Raw points older than this are deleted.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub raw: Option<Duration>,
    /// 1-minute rollup buckets older than this are deleted.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub minute: Option<Duration>,
    /// 1-hour rollup buckets older than this are deleted.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub hour: Option<Duration>,
}

impl TierConfig {
    fn retention(&self) -> Retention {
        Retention {
            raw: self.raw,
            minute: self.minute,
            hour: self.hour,
        }
    }

    fn is_empty(&self) -> bool {
        self.raw.is_none() && self.minute.is_none() && self.hour.is_none()
    }
}

/// `[retention]`. Default: keep everything, sweep hourly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw points older than this are deleted (every tenant without its own entry).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub raw: Option<Duration>,
    /// 1-minute rollup buckets older than this are deleted.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub minute: Option<Duration>,
    /// 1-hour rollup buckets older than this are deleted.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub hour: Option<Duration>,
    /// How often the node deletes what is past its keep time. Default 1h.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Per-tenant keep times, each replacing the default whole.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TierConfig>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            raw: None,
            minute: None,
            hour: None,
            interval: Duration::from_secs(3600),
            tenants: BTreeMap::new(),
        }
    }
}

impl RetentionConfig {
    /// The keep times of every tenant without its own entry.
    fn default_tiers(&self) -> TierConfig {
        TierConfig {
            raw: self.raw,
            minute: self.minute,
            hour: self.hour,
        }
    }

    /// The store's policy.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            default: self.default_tiers().retention(),
            tenants: self
                .tenants
                .iter()
                .map(|(t, c)| (t.clone(), c.retention()))
                .collect(),
        }
    }

    /// Whether anything is ever deleted (no sweeps otherwise).
    pub fn deletes_anything(&self) -> bool {
        !self.default_tiers().is_empty() || self.tenants.values().any(|t| !t.is_empty())
    }

    /// Checks values: keep times and the interval are not zero, tenant names are not empty.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem: String| Err(ConfigError { field, problem });
        if self.interval < MIN_INTERVAL {
            return bad(
                "retention.interval",
                format!("must be at least {MIN_INTERVAL:?}"),
            );
        }
        let default = self.default_tiers();
        let tiers = std::iter::once(("", &default)).chain(
            self.tenants
                .iter()
                .map(|(name, tiers)| (name.as_str(), tiers)),
        );
        for (tenant, tiers) in tiers {
            for (field, keep) in [
                ("retention.raw", tiers.raw),
                ("retention.minute", tiers.minute),
                ("retention.hour", tiers.hour),
            ] {
                if keep.is_some_and(|d| d.is_zero()) {
                    let whose = if tenant.is_empty() {
                        String::new()
                    } else {
                        format!(" (tenant {tenant:?})")
                    };
                    return bad(field, format!("must be greater than zero{whose}"));
                }
            }
        }
        if self.tenants.keys().any(String::is_empty) {
            return bad("retention.tenants", "a tenant name is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn parse(text: &str) -> RetentionConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn parses_defaults_tiers_and_tenants() {
        let empty = parse("");
        assert_eq!(empty, RetentionConfig::default());
        assert!(!empty.deletes_anything());
        let c = parse(
            r#"
            raw = "30d"
            hour = "3650d"
            interval = "10m"
            [tenants.acme]
            raw = "7d"
            "#,
        );
        assert!(c.deletes_anything());
        assert_eq!(c.interval, Duration::from_secs(600));
        let policy = c.policy();
        assert_eq!(policy.default.raw, Some(DAY * 30));
        assert_eq!(policy.default.minute, None);
        assert_eq!(policy.default.hour, Some(DAY * 3650));
        // A tenant's entry replaces the default whole: its hour tier is kept forever.
        assert_eq!(
            policy.for_tenant("acme"),
            Retention {
                raw: Some(DAY * 7),
                minute: None,
                hour: None
            }
        );
        assert_eq!(policy.for_tenant("other"), policy.default);
        let again: RetentionConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c, "serializes to what it parses");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (r#"interval = "0s""#, "retention.interval"),
            (r#"raw = "0s""#, "retention.raw"),
            ("[tenants.acme]\nminute = \"0s\"", "retention.minute"),
            ("[tenants.\"\"]\nraw = \"1d\"", "retention.tenants"),
        ];
        for (text, field) in cases {
            let err = parse(text).validate().expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
        }
        assert!(parse(r#"raw = "1d""#).validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_bare_numbers_are_refused() {
        assert!(toml::from_str::<RetentionConfig>("raww = \"1d\"").is_err());
        assert!(toml::from_str::<RetentionConfig>("raw = 86400").is_err());
    }
}
