//! Timing and deterministic randomness for the scenarios.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// How long `f` takes. Its result goes through [`black_box`], so the work cannot be
/// optimised away, and is dropped after the clock stops, so freeing it is not counted.
pub(crate) fn time<R>(f: impl FnOnce() -> R) -> Duration {
    let start = Instant::now();
    let r = black_box(f());
    let elapsed = start.elapsed();
    drop(r);
    elapsed
}

/// The median of some timings: robust against the odd run that a page fault or another
/// process slowed down. Panics if `times` is empty.
pub(crate) fn median(mut times: Vec<Duration>) -> Duration {
    assert!(!times.is_empty(), "median of no timings");
    times.sort_unstable();
    let n = times.len();
    if n % 2 == 1 { times[n / 2] } else { (times[n / 2 - 1] + times[n / 2]) / 2 }
}

/// A xorshift64* generator: deterministic for a seed, so every run measures the same data.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; zero is remapped, as xorshift cannot leave zero).
    pub(crate) fn new(seed: u64) -> Self {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`. Panics if `n` is zero.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        // Multiply-shift maps 64 random bits onto 0..n without the bias of `%` (to 2^-64).
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A number in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }

    /// One of `items`, uniformly. Panics if `items` is empty.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// This process's peak resident set in bytes (`VmHWM`), where Linux reports it.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// CPU time this process has used, all threads together (those that have ended too),
/// from `/proc/self/stat`, where Linux reports it. Ticks are taken as 1/100 s, the value
/// of `USER_HZ` on every Linux architecture this runs on.
pub(crate) fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after it are space-separated numbers.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = |v: &[u64]| v.iter().map(|&x| Duration::from_millis(x)).collect::<Vec<_>>();
        assert_eq!(median(ms(&[5, 1, 3])), Duration::from_millis(3));
        assert_eq!(median(ms(&[4, 1, 2, 3])), Duration::from_micros(2500));
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..=9).contains(&x));
        }
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[a.below(5)] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn the_peak_rss_is_read_where_linux_reports_it() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn the_cpu_time_grows_with_work() {
        if cfg!(target_os = "linux") {
            let before = cpu_time().unwrap_or_default();
            let mut x = 0u64;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(100) {
                x = black_box(x.wrapping_add(1));
            }
            let after = cpu_time().unwrap_or_default();
            assert!(after > before, "{before:?} -> {after:?}");
        }
    }
}
