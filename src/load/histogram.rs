//! A log-linear latency histogram, as HDR histograms count: what every
//! latency figure of the load tool's reports is read from.

use std::time::Duration;

/// Bits of the linear part: each power of two is split into 2^SUB_BITS
/// buckets, so a bucket is at most 1/256 of its values wide.
const SUB_BITS: u32 = 8;
const SUB: u64 = 1 << SUB_BITS;
/// Values are clamped below 2^MAX_BITS ns (about 18 minutes).
const MAX_BITS: u32 = 40;
const BUCKETS: usize = (SUB as usize) * (MAX_BITS - SUB_BITS + 1) as usize;

/// Latencies in nanoseconds, counted in log-linear buckets as an HDR
/// histogram does: values below 512 ns exactly, larger ones in buckets at
/// most 0.4% wide (256 per power of two). Percentiles read from it are the
/// middle of their bucket, so within 0.2% of the exact value; the minimum,
/// maximum and mean are exact. Its 68 KiB of counts are allocated on the
/// first value, so an unused histogram costs nothing; histograms merge by
/// adding counts.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Vec::new(),
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < 2 * SUB {
        return value as usize;
    }
    let top = 63 - value.leading_zeros();
    let shift = top - SUB_BITS;
    let mantissa = value >> shift;
    (SUB * u64::from(shift + 1) + (mantissa - SUB)) as usize
}

/// The lowest value of bucket `index` and the bucket's width.
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < 2 * SUB {
        return (index, 1);
    }
    let shift = index / SUB - 1;
    let mantissa = SUB + index % SUB;
    (mantissa << shift, 1 << shift)
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let ns = (latency.as_nanos().min(u128::from(u64::MAX)) as u64).min((1 << MAX_BITS) - 1);
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        self.counts[bucket_of(ns)] += 1;
        self.total += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum += u128::from(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
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

    /// The nearest-rank percentile `q` (0.5 for the median), or `None` when
    /// nothing was recorded.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_range(index);
                let value = (low + width / 2).clamp(self.min, self.max);
                return Some(Duration::from_nanos(value));
            }
        }
        Some(Duration::from_nanos(self.max))
    }

    pub fn max(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_nanos(self.max))
    }

    pub fn min(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_nanos(self.min))
    }

    pub fn mean(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_nanos((self.sum / u128::from(self.total)) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_their_bucket_of_the_exact_value() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, exact_us) in [(0.5, 5_000.0), (0.99, 9_900.0), (0.999, 9_990.0)] {
            let got = h.percentile(q).unwrap().as_nanos() as f64 / 1000.0;
            assert!(
                (got - exact_us).abs() / exact_us < 0.002,
                "p{q}: {got} µs, exact {exact_us} µs"
            );
        }
        assert_eq!(h.min(), Some(Duration::from_micros(1)));
        assert_eq!(h.max(), Some(Duration::from_micros(10_000)));
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn merged_histograms_count_both() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.mean(), Some(Duration::from_millis(2)));
        assert_eq!(Histogram::default().percentile(0.5), None);
    }
}
