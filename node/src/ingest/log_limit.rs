//! A rate limit for rejection warnings: a flood of bad payloads must not flood the log.
//! Every rejection is still counted in metrics; only the log lines are capped.

use std::time::{Duration, Instant};

use tracing::warn;

/// At most this many rejection warnings are logged per second; the rest are counted.
pub const LOG_REJECTIONS_PER_SEC: u32 = 10;

/// Lets through [`LOG_REJECTIONS_PER_SEC`] warnings a second and counts the rest.
#[derive(Default)]
pub(crate) struct LogLimiter {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn allow(&mut self) -> bool {
        let now = Instant::now();
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if expired {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "telemetry rejections not logged (rate limit)"
                );
            }
            self.window_start = Some(now);
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < LOG_REJECTIONS_PER_SEC {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_caps_per_second() {
        let mut limiter = LogLimiter::default();
        let allowed = (0..100).filter(|_| limiter.allow()).count();
        assert_eq!(allowed, LOG_REJECTIONS_PER_SEC as usize);
        assert_eq!(limiter.suppressed, 100 - u64::from(LOG_REJECTIONS_PER_SEC));
    }
}
