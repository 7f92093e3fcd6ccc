//! Delivery policy, without I/O: the retry schedule (backon's exponential backoff with
//! jitter) and the per-target rate limit (governor's GCRA token bucket, keyed by target).
//! Both take their clock or randomness from outside, so the tests below are tables.

use std::num::NonZeroU32;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::notify::NotifyConfig;

/// The retry schedule of one delivery: `retry_attempts - 1` delays, the first
/// `retry_min_delay`, doubling up to `retry_max_delay`, each plus a random jitter in
/// `[0, delay)` so retries of many deliveries do not arrive together.
pub fn backoff(config: &NotifyConfig) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(config.retry_min_delay)
        .with_max_delay(config.retry_max_delay)
        .with_factor(2.0)
        .with_max_times(config.retry_attempts.saturating_sub(1) as usize)
        .with_jitter()
}

/// The delays of [`backoff`] before jitter (seeded: jitter adds `[0, delay)`).
pub fn schedule_without_jitter(config: &NotifyConfig) -> Vec<Duration> {
    ExponentialBuilder::default()
        .with_min_delay(config.retry_min_delay)
        .with_max_delay(config.retry_max_delay)
        .with_factor(2.0)
        .with_max_times(config.retry_attempts.saturating_sub(1) as usize)
        .build()
        .collect()
}

/// Per-target token buckets: `rate_per_minute` sustained, `rate_burst` at once. A target is
/// a string naming it (`webhook https://…`, `email ops@…`, `sms +1…`, `mqtt alerts/boiler`).
pub struct RateLimits<C: Clock = governor::clock::DefaultClock> {
    limiter: RateLimiter<String, HashMapStateStore<String>, C, NoOpMiddleware<C::Instant>>,
}

impl RateLimits {
    /// Limits on the real clock.
    pub fn new(config: &NotifyConfig) -> Self {
        Self::with_clock(config, governor::clock::DefaultClock::default())
    }
}

impl<C: Clock> RateLimits<C> {
    /// Limits on `clock` (tests pass a `FakeRelativeClock`).
    pub fn with_clock(config: &NotifyConfig, clock: C) -> Self {
        let per_minute = NonZeroU32::new(config.rate_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            limiter: RateLimiter::hashmap_with_clock(quota, clock),
        }
    }

    /// Whether one more delivery to `target` fits now (and takes its token if so).
    pub fn allow(&self, target: &str) -> bool {
        self.limiter.check_key(&target.to_owned()).is_ok()
    }

    /// Forgets targets whose buckets are full again (bounded memory over many targets).
    pub fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn config(attempts: u32, min_ms: u64, max_ms: u64) -> NotifyConfig {
        NotifyConfig {
            retry_attempts: attempts,
            retry_min_delay: Duration::from_millis(min_ms),
            retry_max_delay: Duration::from_millis(max_ms),
            ..NotifyConfig::default()
        }
    }

    #[test]
    fn backoff_schedule_table() {
        let ms = Duration::from_millis;
        let cases: [(NotifyConfig, Vec<Duration>); 4] = [
            (config(1, 100, 1000), vec![]),
            (config(2, 100, 1000), vec![ms(100)]),
            (
                config(6, 100, 1000),
                vec![ms(100), ms(200), ms(400), ms(800), ms(1000)],
            ),
            (config(4, 500, 500), vec![ms(500), ms(500), ms(500)]),
        ];
        for (c, expected) in cases {
            let got = schedule_without_jitter(&c);
            // f32 arithmetic inside backon: compare at millisecond precision.
            let got: Vec<Duration> = got
                .iter()
                .map(|d| Duration::from_millis(d.as_secs_f64().mul_add(1000.0, 0.5) as u64))
                .collect();
            assert_eq!(got, expected, "attempts {}", c.retry_attempts);
        }
    }

    #[test]
    fn jitter_stays_within_one_delay() {
        let c = config(6, 100, 1000);
        let base = schedule_without_jitter(&c);
        for _ in 0..50 {
            let jittered: Vec<Duration> = backoff(&c).build().collect();
            assert_eq!(jittered.len(), base.len());
            for (j, b) in jittered.iter().zip(&base) {
                assert!(
                    *j >= *b && *j < *b * 2 + Duration::from_millis(1),
                    "{j:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn rate_limit_decisions_table() {
        // (deliveries, advance before each (ms), expected decisions)
        let cfg = NotifyConfig {
            rate_per_minute: 60,
            rate_burst: 3,
            ..NotifyConfig::default()
        };
        let clock = FakeRelativeClock::default();
        let limits = RateLimits::with_clock(&cfg, clock.clone());
        let steps: [(&str, u64, bool); 9] = [
            ("webhook a", 0, true),
            ("webhook a", 0, true),
            ("webhook a", 0, true),
            // Burst of 3 used up.
            ("webhook a", 0, false),
            // Another target has its own bucket.
            ("webhook b", 0, true),
            // 60/min: one token back per second.
            ("webhook a", 999, false),
            ("webhook a", 1, true),
            ("webhook a", 0, false),
            ("webhook a", 3000, true),
        ];
        for (i, (target, advance_ms, allowed)) in steps.into_iter().enumerate() {
            clock.advance(Duration::from_millis(advance_ms));
            assert_eq!(limits.allow(target), allowed, "step {i}: {target}");
        }
        limits.shrink();
    }
}
