//! The CPU time of the calling thread, for each step's `cpu` figure: what its calls cost,
//! whatever else runs on the machine, so that a run's summary shows which stages keep a
//! core busy and which wait.

use std::time::Duration;

/// The CPU time the calling thread has used so far (`clock_gettime` of
/// `CLOCK_THREAD_CPUTIME_ID`, through rustix's safe call: exact to the nanosecond, where
/// `/proc/thread-self/schedstat` lags a running thread by up to a scheduler tick and
/// undercounted calls of a millisecond or less by half).
pub(crate) fn thread_cpu() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(u64::try_from(t.tv_sec).ok()?, u32::try_from(t.tv_nsec).ok()?))
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
