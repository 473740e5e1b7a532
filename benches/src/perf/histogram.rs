//! A fixed-size log-linear latency histogram (in the manner of HdrHistogram): recording is an
//! index computation and an increment, with no allocation after creation.
//!
//! Values are nanoseconds. Values below 2^[`SUB_BITS`] get a bucket each; above, every power of
//! two is split into 2^[`SUB_BITS`] equal buckets, so a bucket is at most 1/64 (1.6%) of its
//! value wide.

/// Bits of sub-bucket resolution per power of two.
pub const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Number of buckets: the linear group below 2^SUB_BITS, then one group per power of two up to
/// 2^63.
pub const BUCKETS: usize = (65 - SUB_BITS as usize) * SUB;

/// Counts of values per bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

/// The bucket of `v`.
#[inline]
pub fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        // v < 64: fits.
        return usize::try_from(v).unwrap_or(0);
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS
    let group = msb - SUB_BITS + 1; // >= 1
    let sub = (v >> (msb - SUB_BITS)) & (SUB as u64 - 1);
    // group <= 58 and sub < 64: the index is below BUCKETS.
    usize::try_from(u64::from(group) * SUB as u64 + sub).unwrap_or(BUCKETS - 1)
}

/// The smallest and largest value of bucket `idx`.
pub fn bucket_range(idx: usize) -> (u64, u64) {
    if idx < SUB {
        let v = u64::try_from(idx).unwrap_or(0);
        return (v, v);
    }
    let group = u32::try_from(idx / SUB).unwrap_or(u32::MAX);
    let sub = u64::try_from(idx % SUB).unwrap_or(0);
    let shift = group - 1;
    let low = (SUB as u64 + sub) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    /// Counts one value.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let idx = bucket_of(ns);
        if let Some(c) = self.counts.get_mut(idx) {
            *c += 1;
            self.total += 1;
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += *b;
        }
        self.total += other.total;
    }

    /// The value at quantile `q` (0.0 to 1.0): the upper end of the bucket holding the
    /// ceil(q * count)-th smallest value, clamped to `[min, max]` when given. 0 when empty.
    pub fn quantile(&self, q: f64, min: u64, max: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = quantile_rank(q, self.total);
        let mut seen = 0u64;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_range(idx).1.clamp(min, max.max(min));
            }
        }
        max
    }
}

/// The 1-based rank of quantile `q` among `n` values: ceil(q * n), at least 1, at most n.
fn quantile_rank(q: f64, n: u64) -> u64 {
    // Counts and ranks stay far below 2^53 in any run, where f64 is exact for integers.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let r = (q.clamp(0.0, 1.0) * n as f64).ceil() as u64;
    r.clamp(1, n)
}

#[cfg(test)]
#[allow(clippy::cast_precision_loss)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut prev_high = None;
        for idx in 0..BUCKETS {
            let (low, high) = bucket_range(idx);
            assert!(low <= high, "{idx}");
            if let Some(p) = prev_high {
                assert_eq!(
                    low,
                    p + 1,
                    "bucket {idx} starts right after the previous one"
                );
            }
            assert_eq!(bucket_of(low), idx);
            assert_eq!(bucket_of(high), idx);
            prev_high = Some(high);
        }
        assert_eq!(prev_high, Some(u64::MAX));
    }

    #[test]
    fn buckets_are_narrow() {
        for v in [100u64, 1_000, 12_345, 1_000_000, 987_654_321, u64::MAX / 3] {
            let (low, high) = bucket_range(bucket_of(v));
            assert!(low <= v && v <= high);
            assert!(
                (high - low) as f64 <= v as f64 / 64.0 + 1.0,
                "{v}: {low}..{high}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000); // 1 us .. 10 ms
        }
        let q = |p| h.quantile(p, 1000, 10_000_000);
        let near = |got: u64, want: u64| {
            let err = got.abs_diff(want) as f64 / want as f64;
            assert!(err < 0.02, "{got} vs {want}");
        };
        near(q(0.5), 5_000_000);
        near(q(0.99), 9_900_000);
        near(q(0.999), 9_990_000);
        assert_eq!(q(1.0), 10_000_000, "clamped to the max");
        near(q(0.0), 1000);
        let mut both = h.clone();
        both.merge(&h);
        assert_eq!(both.count(), 20_000);
        near(both.quantile(0.5, 0, u64::MAX), 5_000_000);
        assert_eq!(Histogram::default().quantile(0.5, 0, 0), 0);
    }
}
