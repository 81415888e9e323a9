//! Retry delays: exponential with a cap, randomised by the policy's jitter.
//! Hand-written on purpose: the delay must be computed (and persisted) per
//! attempt rather than driven by a retry loop, which is what backoff crates offer.

use std::time::Duration;

use crate::runtime::RetryPolicy;

/// The delay after failed attempt `attempt` (1-based): `initial × multiplier^(attempt−1)`,
/// at most `max`, scaled by a factor in `[1 − jitter, 1 + jitter]` chosen by `unit`
/// (a random number in `[0, 1)`), and never above `max`.
pub fn delay_for_attempt(policy: &RetryPolicy, attempt: u32, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(64) as i32;
    let base = policy.initial_backoff.as_secs_f64() * policy.multiplier.powi(exp);
    let max = policy.max_backoff.as_secs_f64();
    let factor = 1.0 + policy.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64((base.min(max) * factor).clamp(0.0, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = policy(0.0);
        let ms: Vec<u128> = (1..=6)
            .map(|a| delay_for_attempt(&p, a, 0.5).as_millis())
            .collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy(0.2);
        assert_eq!(delay_for_attempt(&p, 2, 0.0).as_millis(), 160);
        assert_eq!(delay_for_attempt(&p, 2, 1.0).as_millis(), 240);
        // Never above the cap, even jittered upwards.
        assert_eq!(delay_for_attempt(&p, 9, 1.0), Duration::from_secs(1));
    }
}
