//! A latency histogram in the spirit of HdrHistogram: microsecond values, exact below
//! 128 µs, then 64 sub-buckets per power of two (relative error under 1.6 %).
//!
//! Fixed size (a few KiB), `record` is a couple of instructions, and two histograms
//! merge by adding counts, so the generator keeps one per timeline slot and the
//! report merges the slots of whatever window it looks at.

const LINEAR: u64 = 128;
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two from 2^7 up to 2^40 µs (about 12 days): more than any run.
const POWERS: usize = 34;
const BUCKETS: usize = LINEAR as usize + POWERS * SUB as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= 7
    let sub = (v >> (e - SUB_BITS)) & (SUB - 1);
    let i = LINEAR as usize + (e as usize - 7) * SUB as usize + sub as usize;
    i.min(BUCKETS - 1)
}

/// The largest value that lands in bucket `i` (what a percentile reports).
fn upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let j = i - LINEAR as usize;
    let e = (j / SUB as usize) as u32 + 7;
    let sub = (j % SUB as usize) as u64;
    let low = (1u64 << e) | (sub << (e - SUB_BITS));
    low + (1u64 << (e - SUB_BITS)) - 1
}

impl Histogram {
    /// Records one value in microseconds.
    #[inline]
    pub fn record(&mut self, us: u64) {
        self.counts[index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0..=1.0) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_their_precision() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            4095,
            65_536,
            1_234_567,
            10_000_000_000,
        ] {
            let i = index(v);
            assert!(upper(i) >= v, "{v}");
            assert!(upper(i) - v <= v / 64 + 1, "{v} -> {}", upper(i));
            if i > 0 {
                assert!(upper(i - 1) < v, "{v}");
            }
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile_us(0.5);
        assert!((4_900..=5_100).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((9_800..=10_000).contains(&p99), "{p99}");
        assert_eq!(h.quantile_us(1.0), 10_000);
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(1_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.max_us(), 1_000_000);
        assert_eq!(a.quantile_us(0.5), 10);
        assert_eq!(Histogram::default().quantile_us(0.99), 0);
    }
}
