//! A log-bucketed latency histogram: constant memory, quantiles within a few percent.

use std::time::Duration;

/// Buckets per doubling: each bucket spans a factor of 2^(1/8), about 9%.
const PER_DOUBLING: f64 = 8.0;
/// Buckets: from 1 µs up to 2^40 µs (12 days), plus one for 0.
const BUCKETS: usize = 40 * 8 + 2;

/// The bucket bounds published to Prometheus, in seconds: from half a millisecond (a
/// cheap batch) to five minutes (an LLM call through retries), about three per factor of
/// ten, as Prometheus's own defaults are spaced.
pub const PROMETHEUS_BOUNDS: [f64; 18] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Durations counted in logarithmic buckets, so that p50/p95/p99 come from a fixed-size
/// table rather than a sorted list of every sample. A quantile is reported as its
/// bucket's upper bound: at most about 9% above the true value. The durations are also
/// counted exactly against [`PROMETHEUS_BOUNDS`], for a Prometheus histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    /// Durations by the first of `PROMETHEUS_BOUNDS` they do not exceed (none: past all).
    bounded: [u64; PROMETHEUS_BOUNDS.len()],
    count: u64,
    sum: Duration,
    max: Duration,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            bounded: [0; PROMETHEUS_BOUNDS.len()],
            count: 0,
            sum: Duration::ZERO,
            max: Duration::ZERO,
        }
    }
}

fn bucket(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us < 1.0 {
        return 0;
    }
    ((us.log2() * PER_DOUBLING).floor() as usize + 1).min(BUCKETS - 1)
}

fn upper_bound(b: usize) -> Duration {
    if b == 0 {
        return Duration::from_micros(1);
    }
    Duration::from_secs_f64(2f64.powf(b as f64 / PER_DOUBLING) / 1e6)
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        self.counts[bucket(d)] += 1;
        let secs = d.as_secs_f64();
        if let Some(b) = self.bounded.get_mut(PROMETHEUS_BOUNDS.partition_point(|&le| le < secs)) {
            *b += 1;
        }
        self.count += 1;
        self.sum += d;
        self.max = self.max.max(d);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their sum.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Their mean (zero when empty).
    pub fn mean(&self) -> Duration {
        if self.count == 0 { Duration::ZERO } else { self.sum / self.count as u32 }
    }

    /// The largest.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Prometheus's cumulative buckets: for each of [`PROMETHEUS_BOUNDS`], then infinity,
    /// the durations at most that many seconds.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut seen = 0;
        PROMETHEUS_BOUNDS
            .iter()
            .zip(&self.bounded)
            .map(move |(&le, &n)| {
                seen += n;
                (le, seen)
            })
            .chain(std::iter::once((f64::INFINITY, self.count)))
    }

    /// The `q` quantile (0 ≤ q ≤ 1), as the upper bound of its bucket, never above the
    /// largest duration seen.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound(b).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        for (q, truth) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = h.quantile(q).as_secs_f64() * 1e3;
            assert!(got >= truth && got <= truth * 1.1, "p{q}: {got} ms against {truth} ms");
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max(), Duration::from_secs(1));
        assert_eq!(h.mean(), Duration::from_micros(500_500));
        assert_eq!(Histogram::default().quantile(0.5), Duration::ZERO);
        let mut tiny = Histogram::default();
        tiny.record(Duration::from_nanos(10));
        assert_eq!(tiny.quantile(0.99), Duration::from_nanos(10));
    }

    #[test]
    fn prometheus_buckets_count_exactly_and_cumulatively() {
        let mut h = Histogram::default();
        // On a bound counts in its bucket (`le` is "less or equal"); past every bound
        // counts only in +Inf.
        for ms in [1, 1, 2, 10, 11, 1000, 400_000] {
            h.record(Duration::from_millis(ms));
        }
        let got: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(got.len(), PROMETHEUS_BOUNDS.len() + 1);
        let at = |le: f64| got.iter().find(|(b, _)| *b == le).map(|(_, n)| *n);
        assert_eq!(
            (at(0.0005), at(0.001), at(0.0025), at(0.01), at(0.025)),
            (Some(0), Some(2), Some(3), Some(4), Some(5))
        );
        assert_eq!((at(1.0), at(300.0), at(f64::INFINITY)), (Some(6), Some(6), Some(7)));
        assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative");
    }
}
