//! Counts of values in fixed buckets: what a Prometheus histogram exports
//! (`/metrics`). Recording is a search in a short array and three adds.

/// A histogram over fixed upper `bounds` (ascending; a last bucket holds
/// what passes them all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    pub bounds: &'static [u64],
    /// Per bucket, not cumulative: `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
    pub sum: u64,
    pub count: u64,
}

impl Buckets {
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    /// Counts `value` in the first bucket whose bound it does not pass.
    pub fn record(&mut self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket] += 1;
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_the_first_bucket_whose_bound_they_do_not_pass() {
        let mut b = Buckets::new(&[100, 250, 60_000_000]);
        for value in [0, 100, 101, 60_000_000, 60_000_001] {
            b.record(value);
        }
        assert_eq!(b.counts, [2, 1, 1, 1], "0 and 100; 101; a minute; past it");
        assert_eq!((b.count, b.sum), (5, 120_000_202));
    }
}
