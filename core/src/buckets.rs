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

    /// Adds what `other` (the same bounds) recorded.
    pub fn add(&mut self, other: &Self) {
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.count += other.count;
    }

    /// What was recorded since `earlier`, a copy of these buckets taken
    /// before (the same bounds): the histogram of one interval.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = self.clone();
        for (count, before) in out.counts.iter_mut().zip(&earlier.counts) {
            *count = count.saturating_sub(*before);
        }
        out.sum = self.sum.saturating_sub(earlier.sum);
        out.count = self.count.saturating_sub(earlier.count);
        out
    }

    /// The value below which a fraction `q` (0 to 1) of the recorded
    /// values fall, estimated as Prometheus's `histogram_quantile` does:
    /// linearly within the bucket it lands in. The last bucket has no
    /// upper bound, so a quantile landing there is its lower bound.
    /// `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (i, &count) in self.counts.iter().enumerate() {
            let lower = if i == 0 { 0 } else { self.bounds[i - 1] };
            let Some(&upper) = self.bounds.get(i) else {
                return Some(lower);
            };
            if count > 0 && (below + count) as f64 >= rank {
                let within = (rank - below as f64) / count as f64;
                let value = lower as f64 + within * (upper - lower) as f64;
                return Some(value.round() as u64);
            }
            below += count;
        }
        self.bounds.last().copied()
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

    #[test]
    fn quantiles_interpolate_within_the_bucket_they_land_in() {
        let mut b = Buckets::new(&[100, 200, 1_000]);
        assert_eq!(b.quantile(0.5), None, "nothing recorded");
        for value in [10, 20, 150, 150] {
            b.record(value);
        }
        // Two values in 0..=100 and two in 101..=200: the median is the
        // top of the first bucket, p75 halfway through the second.
        assert_eq!(b.quantile(0.5), Some(100));
        assert_eq!(b.quantile(0.75), Some(150));
        assert_eq!(b.quantile(1.0), Some(200));
        b.record(5_000);
        assert_eq!(
            b.quantile(1.0),
            Some(1_000),
            "past every bound: the last bound"
        );
    }

    #[test]
    fn an_interval_is_the_difference_of_two_copies() {
        let mut b = Buckets::new(&[100, 200]);
        b.record(50);
        let earlier = b.clone();
        b.record(150);
        b.record(150);
        let interval = b.since(&earlier);
        assert_eq!(interval.counts, [0, 2, 0]);
        assert_eq!((interval.count, interval.sum), (2, 300));
        assert_eq!(interval.quantile(0.5), Some(150));
    }
}
