//! The CPU time of the calling thread, for each step's `cpu` figure: what its calls cost,
//! whatever else runs on the machine, so that a run's summary shows which stages keep a
//! core busy and which wait.

use std::time::Duration;

/// The CPU time the calling thread has used so far, from Linux's
/// `/proc/thread-self/schedstat` (its first field: nanoseconds on a CPU); `None` where it
/// cannot be read (another system), and the figures stay zero. Read with safe code (the
/// workspace denies `unsafe`) at the cost of a small read, once before and once after a
/// call: microseconds against calls of milliseconds.
pub(crate) fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Measures the CPU time the calling thread spends in `f`.
pub(crate) fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let before = thread_cpu();
    let out = f();
    let spent = match (before, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => Duration::ZERO,
    };
    (out, spent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_counts_its_cpu_time_and_a_sleeping_one_does_not() {
        if thread_cpu().is_none() {
            return; // Not Linux: nothing to measure with.
        }
        let ((), busy) = timed(|| {
            let mut x = 1u64;
            for i in 0..20_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
        });
        let ((), asleep) = timed(|| std::thread::sleep(Duration::from_millis(50)));
        assert!(busy > Duration::ZERO, "{busy:?}");
        assert!(asleep < busy, "{asleep:?} asleep against {busy:?} busy");
    }
}
