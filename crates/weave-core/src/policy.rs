//! Policies: how a step is retried, timed out, and what happens to its bad records; and
//! the resources it needs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay every time.
    Fixed,
    /// `retry_delay × attempt`.
    Linear,
    /// `retry_delay × 2^(attempt-1)`.
    Exponential,
}

/// When and how often a failed step call is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `3` means up to 4 calls).
    pub max_retries: u32,
    /// The delay before the first retry.
    pub retry_delay: Duration,
    /// How the delay grows.
    pub backoff: Backoff,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// Whether to randomise each delay (in [delay/2, delay]) so that many failing calls do
    /// not retry in lock-step.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// Three retries, from one second, doubling, at most a minute apart, with jitter.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            retry_delay: Duration::from_secs(1),
            backoff: Backoff::Exponential,
            max_delay: Duration::from_secs(60),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (from 1), before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let attempt = attempt.max(1);
        let d = match self.backoff {
            Backoff::Fixed => self.retry_delay,
            Backoff::Linear => self.retry_delay.saturating_mul(attempt),
            Backoff::Exponential => self.retry_delay.saturating_mul(2u32.saturating_pow(attempt - 1)),
        };
        d.min(self.max_delay)
    }
}

/// What happens to a record that a step cannot process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Stop the run, naming the record and the reason.
    #[default]
    Fail,
    /// Set the record aside in the run's quarantine file with the reason, and go on.
    Skip,
}

/// A step's retry, timeout and bad-record policy. Fields left `None` take the pipeline's
/// defaults (the `[retry]` table and the built-in defaults).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StepPolicy {
    /// How failed calls are retried.
    pub retry: Option<RetryPolicy>,
    /// How long one call may take before it is abandoned and counted as a transient failure.
    pub timeout: Option<Duration>,
    /// What happens to bad records.
    pub on_bad_record: Option<BadRecordPolicy>,
}

impl StepPolicy {
    /// This policy with every unset field taken from `defaults`.
    pub fn or(self, defaults: StepPolicy) -> StepPolicy {
        StepPolicy {
            retry: self.retry.or(defaults.retry),
            timeout: self.timeout.or(defaults.timeout),
            on_bad_record: self.on_bad_record.or(defaults.on_bad_record),
        }
    }
}

/// What a step needs to run: checked against the pipeline's `[resources]` before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// Bytes of memory the step itself holds beyond the batches in flight (an index, a
    /// model).
    pub memory: u64,
    /// CPU threads one call keeps busy.
    pub threads: u32,
    /// GPUs it needs.
    pub gpus: u32,
    /// For I/O-bound steps: calls in flight at once, independent of the CPU pool (an LLM
    /// step may keep 64 requests open on 2 cores). `None` for CPU-bound steps.
    pub io_concurrency: Option<u32>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { memory: 0, threads: 1, gpus: 0, io_concurrency: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { max_delay: Duration::from_secs(5), ..RetryPolicy::default() };
        let d: Vec<u64> = (1..=5).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 5, 5]);
        let lin = RetryPolicy { backoff: Backoff::Linear, ..p };
        assert_eq!(lin.delay(3), Duration::from_secs(3));
        // regression guard: huge attempt numbers saturate instead of overflowing.
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(5));
    }
}
