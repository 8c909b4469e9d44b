//! Exponential backoff, the one computation behind three waits: a worker
//! slot's restarts ([`crate::node::supervisor`]), the recoverer of a
//! service's steps ([`crate::services::steps`]) and a retry policy's delays
//! ([`crate::retry`]).
//!
//! The `n`th wait (1-based) is `min(initial × multiplierⁿ⁻¹, max)`, then
//! shortened by up to `jitter` of itself: multiplied by `1 − jitter ×
//! spread`, with `spread` in `[0, 1)` drawn by the caller from a [`Jitter`].
//! Jitter only ever shortens a wait, so `max` is a true bound. The
//! computation draws nothing itself: the Subject's state machine keeps its
//! one [`Jitter`], and tests pass the spread they want.

use std::time::Duration;

/// Waits that grow by a factor up to a cap, shortened at random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// Each further wait is this many times the previous one (at least 1).
    pub multiplier: f64,
    /// No wait is longer.
    pub max: Duration,
    /// Each wait is shortened by a random part of it, up to this fraction
    /// (0: exactly the computed wait; 0.2: between 80% and 100% of it).
    pub jitter: f64,
}

impl Backoff {
    /// `initial`, doubled at each wait up to `max`, without jitter.
    pub const fn doubling(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            multiplier: 2.0,
            max,
            jitter: 0.0,
        }
    }

    /// The same waits, each shortened by up to `jitter` of itself.
    pub const fn with_jitter(self, jitter: f64) -> Self {
        Self { jitter, ..self }
    }

    /// The `n`th wait before jitter (1-based; 0 counts as 1):
    /// `min(initial × multiplierⁿ⁻¹, max)`. Never overflows: a huge `n`
    /// gives `max`.
    pub fn base(&self, n: u32) -> Duration {
        self.delay(n, 0.0)
    }

    /// The `n`th wait (1-based; 0 counts as 1), shortened by `jitter ×
    /// spread` of itself; `spread` is clamped to `[0, 1]`.
    pub fn delay(&self, n: u32, spread: f64) -> Duration {
        if self.initial.is_zero() {
            // 0 × multiplierⁿ⁻¹ is 0, even where the power overflows to ∞.
            return Duration::ZERO;
        }
        let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let max = self.max.as_secs_f64();
        let grown = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        // `min` also turns a NaN (from a bad multiplier) into `max`.
        let base = grown.min(max);
        let factor = 1.0 - self.jitter.clamp(0.0, 1.0) * spread.clamp(0.0, 1.0);
        Duration::from_secs_f64((base * factor).clamp(0.0, max))
    }
}

/// The random spreads of jitter: a [`fastrand::Rng`], seeded at random per
/// process (from the clock and the thread, as `fastrand` seeds), or with a
/// fixed seed for tests. Jitter needs numbers spread evenly, not secret
/// ones; a secret comes from `getrandom` (`crate::security::operator`).
#[derive(Debug, Clone, Default)]
pub struct Jitter(fastrand::Rng);

impl Jitter {
    /// A fixed sequence, for tests: the same seed gives the same numbers.
    pub fn seeded(seed: u64) -> Self {
        Self(fastrand::Rng::with_seed(seed))
    }

    /// A number in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        self.0.f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn waits(b: &Backoff, n: std::ops::RangeInclusive<u32>) -> Vec<u64> {
        n.map(|n| u64::try_from(b.base(n).as_millis()).unwrap_or(u64::MAX))
            .collect()
    }

    #[test]
    fn waits_double_up_to_the_cap_and_never_overflow() {
        let b = Backoff::doubling(ms(100), ms(1000));
        assert_eq!(waits(&b, 1..=7), [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.base(0), ms(100), "0 counts as the first wait");
        assert_eq!(b.base(u32::MAX), ms(1000));
        // Not a power of two: still exact to the millisecond.
        let b = Backoff::doubling(ms(300), ms(10_000));
        assert_eq!(waits(&b, 1..=4), [300, 600, 1200, 2400]);
    }

    #[test]
    fn any_multiplier_grows_the_same_way() {
        let b = Backoff {
            multiplier: 3.0,
            ..Backoff::doubling(ms(10), ms(500))
        };
        assert_eq!(waits(&b, 1..=5), [10, 30, 90, 270, 500]);
        let flat = Backoff {
            multiplier: 1.0,
            ..b
        };
        assert_eq!(waits(&flat, 1..=3), [10, 10, 10]);
        assert_eq!(flat.base(u32::MAX), ms(10));
    }

    #[test]
    fn a_zero_initial_wait_stays_zero() {
        let b = Backoff {
            multiplier: 100.0,
            ..Backoff::doubling(Duration::ZERO, ms(500))
        };
        // 100^999 overflows to ∞; 0 × ∞ must not become the cap.
        assert_eq!(b.base(1000), Duration::ZERO);
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::ZERO);
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let b = Backoff::doubling(ms(100), ms(500)).with_jitter(0.2);
        let mut jitter = Jitter::seeded(7);
        let mut seen: Vec<Duration> = (0..1000).map(|_| b.delay(2, jitter.next_unit())).collect();
        assert!(seen.iter().all(|d| (ms(160)..=ms(200)).contains(d)));
        seen.sort();
        assert!(
            seen[0] < ms(165) && seen[999] > ms(195),
            "spread over the range"
        );
        // Out-of-range spreads and jitters are clamped: never past max,
        // never below zero.
        assert_eq!(b.delay(9, 7.0), ms(400));
        assert_eq!(b.delay(9, -1.0), ms(500));
        let all = Backoff::doubling(ms(100), ms(500)).with_jitter(5.0);
        assert_eq!(all.delay(1, 0.999_999_999_999), Duration::ZERO);
    }

    #[test]
    fn a_seeded_jitter_repeats_and_a_default_one_is_in_range() {
        let draw = |mut j: Jitter| -> Vec<f64> { (0..5).map(|_| j.next_unit()).collect() };
        assert_eq!(draw(Jitter::seeded(42)), draw(Jitter::seeded(42)));
        assert_ne!(draw(Jitter::seeded(42)), draw(Jitter::seeded(43)));
        let mut j = Jitter::default();
        assert!((0..1000).all(|_| (0.0..1.0).contains(&j.next_unit())));
    }
}
