//! A fixed-bucket, log-linear latency histogram.
//!
//! Values (nanoseconds) below 128 get a bucket each; above, every power of
//! two is split into 64 equal buckets, so a reported percentile is within
//! 1/64 (1.6 %) of the true value, whatever the magnitude. The whole `u64`
//! range fits in 3,776 counters (30 KiB); recording is a few instructions
//! and never allocates. Histograms of several processes merge by adding
//! counters, which is how the benchmark combines its services.
//!
//! Written here rather than taken from `hdrhistogram`: the benchmark needs
//! record, merge, percentile and a compact serialized form, about 100 lines.

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two (above the linear range).
const SUB: u64 = 64;
/// Values below this get one bucket each.
const LINEAR: u64 = 2 * SUB;
/// Bucket count for the whole `u64` range.
const BUCKETS: usize = 59 * SUB as usize;

/// Counts of values, by log-linear bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    // The highest set bit is at 7 or above; keep the top 7 bits (64..128).
    let shift = u64::from(63 - value.leading_zeros()) - 6;
    (shift * SUB + (value >> shift)) as usize
}

/// The largest value that falls in bucket `i`.
fn highest(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let shift = i / SUB - 1;
    let mantissa = i % SUB + SUB;
    ((mantissa + 1) << shift).wrapping_sub(1)
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.counts[index(value)] += 1;
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact); 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The smallest value recorded (exact); 0 when empty.
    pub fn min(&self) -> u64 {
        if self.total == 0 { 0 } else { self.min }
    }

    /// The mean (exact); 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0.0 to 1.0): the highest value of the
    /// bucket holding it, never above the maximum recorded; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return highest(i).min(self.max);
            }
        }
        self.max
    }

    /// A compact form for sending between processes: non-empty buckets only.
    pub fn to_sparse(&self) -> Sparse {
        Sparse {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i as u32, *n))
                .collect(),
            min: self.min(),
            max: self.max,
            sum: u64::try_from(self.sum).unwrap_or(u64::MAX),
        }
    }

    /// Rebuilds a histogram from [`Histogram::to_sparse`]; buckets out of
    /// range are ignored.
    pub fn from_sparse(sparse: &Sparse) -> Self {
        let mut h = Self::new();
        for &(i, n) in &sparse.buckets {
            if let Some(c) = h.counts.get_mut(i as usize) {
                *c += n;
                h.total += n;
            }
        }
        if h.total > 0 {
            h.min = sparse.min;
            h.max = sparse.max;
            h.sum = u128::from(sparse.sum);
        }
        h
    }
}

/// A histogram's non-empty buckets, `(index, count)`, with its exact
/// minimum, maximum and sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sparse {
    pub buckets: Vec<(u32, u64)>,
    pub min: u64,
    pub max: u64,
    pub sum: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut previous = None;
        for i in 0..BUCKETS {
            let low = previous.map_or(0, |p: u64| p + 1);
            let high = highest(i);
            assert!(high >= low, "bucket {i}");
            assert_eq!(index(low), i, "low end of bucket {i}");
            assert_eq!(index(high), i, "high end of bucket {i}");
            // Width at most 1/64 of the low end above the linear range.
            if low >= LINEAR {
                assert!((high - low + 1) * SUB <= low, "bucket {i} too wide");
            }
            previous = Some(high);
        }
        assert_eq!(previous, Some(u64::MAX));
    }

    #[test]
    fn quantiles_are_within_the_bucket_precision() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1_000);
        }
        for (q, exact) in [
            (0.5, 50_000_000.0),
            (0.9, 90_000_000.0),
            (0.99, 99_000_000.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 1.0 / 64.0, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!((h.min(), h.max(), h.count()), (1_000, 100_000_000, 100_000));
    }

    #[test]
    fn merge_and_sparse_round_trip() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in [5, 700, 1_000_000] {
            a.record(v);
        }
        b.record(3);
        a.merge(&b);
        assert_eq!((a.count(), a.min(), a.max()), (4, 3, 1_000_000));
        let back = Histogram::from_sparse(&a.to_sparse());
        assert_eq!(back, a);
        assert_eq!(Histogram::new().quantile(0.5), 0);
        assert_eq!(Histogram::from_sparse(&Sparse::default()).count(), 0);
    }
}
