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

/// How many bad records a step, or a run, may have before it fails: `max_bad_records`.
/// A count is checked as records are set aside, so that the run stops at once; a share
/// is checked when the step (or the run) has handled all its records.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordLimit {
    /// At most this many (`max_bad_records = 100`).
    Count(u64),
    /// At most this share, from 0 to 1, of the records handled (`max_bad_records = "1%"`).
    Share(f64),
}

impl Default for BadRecordLimit {
    /// Half: a step (or run) that sets aside more than half of its records fails. Past
    /// half, more was lost than kept, which is a misread input (a wrong delimiter, file or
    /// field) or a broken model far more often than data worth keeping; a stricter
    /// default would fail the runs whose authors chose `on_bad_record = "skip"` because
    /// some records are bad.
    fn default() -> Self {
        BadRecordLimit::Share(0.5)
    }
}

impl BadRecordLimit {
    /// Whether `bad` records out of `handled` are more than the limit allows. A share is
    /// judged only once something was handled.
    pub fn exceeded(self, bad: u64, handled: u64) -> bool {
        match self {
            BadRecordLimit::Count(n) => bad > n,
            BadRecordLimit::Share(s) => handled > 0 && bad as f64 > s * handled as f64,
        }
    }

    /// Reads a limit as written in a pipeline file: a count (`100`) or a share of at most
    /// 100% (`"1%"`, `"0.5%"`).
    pub fn parse(text: &str) -> Result<BadRecordLimit, String> {
        let bad = || format!("`{text}` is not a count of records (such as 100) or a share (such as \"1%\")");
        match text.trim().strip_suffix('%') {
            Some(pct) => match pct.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(BadRecordLimit::Share(p / 100.0)),
                Ok(_) => Err(format!("{}: a share is from 0% to 100%", bad())),
                Err(_) => Err(bad()),
            },
            None => text.trim().parse::<u64>().map(BadRecordLimit::Count).map_err(|_| bad()),
        }
    }
}

impl std::fmt::Display for BadRecordLimit {
    /// As a pipeline file writes it: `100`, `"1%"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecordLimit::Count(n) => write!(f, "{n}"),
            BadRecordLimit::Share(s) => write!(f, "\"{}\"", crate::units::format_percent(*s)),
        }
    }
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

    #[test]
    fn bad_record_limits_read_counts_and_shares() {
        assert_eq!(BadRecordLimit::parse("100"), Ok(BadRecordLimit::Count(100)));
        assert_eq!(BadRecordLimit::parse("1%"), Ok(BadRecordLimit::Share(0.01)));
        assert_eq!(BadRecordLimit::parse("100%"), Ok(BadRecordLimit::Share(1.0)));
        for bad in ["-1", "lots", "150%", "1.5", "%", ""] {
            assert!(BadRecordLimit::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(BadRecordLimit::Share(0.025).to_string(), "\"2.5%\"");
        assert_eq!(BadRecordLimit::Count(7).to_string(), "7");
        // Past the limit, never at it; a share of nothing is never past.
        assert!(!BadRecordLimit::Count(2).exceeded(2, 2) && BadRecordLimit::Count(2).exceeded(3, 100));
        assert!(!BadRecordLimit::Share(0.2).exceeded(2, 10) && BadRecordLimit::Share(0.2).exceeded(3, 10));
        assert!(!BadRecordLimit::Share(0.0).exceeded(0, 0));
        assert!(BadRecordLimit::default().exceeded(3, 3), "a step that sets aside everything fails by default");
    }
}
