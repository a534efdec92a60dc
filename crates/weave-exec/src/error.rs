//! The executor's errors.

use std::path::PathBuf;
use std::time::Duration;

use weave_core::{BadRecordLimit, ErrorClass, ErrorOrigin, StepError, format_percent};

/// Why a run failed. Every variant that concerns a step names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A step call failed fatally, or transiently more often than its retries allow.
    #[error("step \"{step}\" failed: {source}")]
    Step {
        /// The step.
        step: String,
        /// Retries made before giving up.
        retries: u32,
        /// The step's error.
        #[source]
        source: StepError,
    },
    /// A step call did not return within the step's timeout, as many times as its retries
    /// allow (or once, for a step whose state the hung call holds).
    #[error("step \"{step}\" timed out: a call took longer than {}{}", weave_core::format_duration(*timeout), if *retryable { format!(" on {} attempts", retries + 1) } else { "; the hung call holds the step's state, so it cannot be retried".to_owned() })]
    Timeout {
        /// The step.
        step: String,
        /// The timeout.
        timeout: Duration,
        /// Retries made.
        retries: u32,
        /// Whether the step could be retried at all (only stateless transforms can).
        retryable: bool,
    },
    /// More calls of a step hung past its timeout, abandoned (a thread cannot be stopped)
    /// but still running, than a step may leave behind ([`max_abandoned_calls`]).
    ///
    /// [`max_abandoned_calls`]: crate::max_abandoned_calls
    #[error("step \"{step}\": {hung} calls hung past the step's timeout of {} and still run, more than the {limit} a step may leave behind (their threads cannot be stopped); find out why its calls hang, or raise its `timeout`", weave_core::format_duration(*timeout))]
    Hung {
        /// The step.
        step: String,
        /// Its calls abandoned and still running.
        hung: usize,
        /// How many it may leave behind.
        limit: usize,
        /// The timeout.
        timeout: Duration,
    },
    /// A step rejected a record and its policy is `on_bad_record = "fail"`.
    #[error("step \"{step}\": bad record{}: {reason}", origin.as_ref().map(|o| format!(" at {o}")).unwrap_or_default())]
    BadRecord {
        /// The step.
        step: String,
        /// Why.
        reason: String,
        /// Where the record came from, when known.
        origin: Option<String>,
    },
    /// More records were bad than `max_bad_records` allows: in a step, or (`step` `None`)
    /// over the run's steps together.
    #[error("{}", too_many_bad(step.as_deref(), *bad, *handled, limit, quarantine.as_deref()))]
    TooManyBadRecords {
        /// The step, or `None` for the run's own limit.
        step: Option<String>,
        /// Its bad records.
        bad: u64,
        /// The records they are a share of, for a limit that is a share: the step's (for a
        /// source, those it read), or those the run's sources read.
        handled: Option<u64>,
        /// The limit.
        limit: BadRecordLimit,
        /// Where the records set aside are.
        quarantine: Option<PathBuf>,
    },
    /// A step panicked: a bug in the step.
    #[error("step \"{step}\" panicked: {message}")]
    Panic {
        /// The step.
        step: String,
        /// The panic message.
        message: String,
    },
    /// The quarantine file could not be written.
    #[error("cannot write the quarantine file {}", path.display())]
    Quarantine {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A step's exclusion file could not be written.
    #[error("step \"{step}\": cannot write the exclusion file {}", path.display())]
    Exclusions {
        /// The step.
        step: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A step's stored output, checked before the run, could not be read back.
    #[error(
        "step \"{step}\": cannot replay its output from the cache: {message}; run again (the damaged entry was removed) or use --no-cache"
    )]
    Cache {
        /// The step.
        step: String,
        /// Why.
        message: String,
    },
    /// No batch moved and no step worked for a while: the DAG deadlocked. It happens when a
    /// DAG splits and rejoins and one branch holds batches back (a stateful step that
    /// emits at the end, before a merge), so the merge waits on it while queueing the
    /// other branch's batches, until they fill the memory budget.
    #[error("the run stalled: for {} no batch moved and no step was working (steps still waiting: {}); if a branch that rejoins another holds batches back (a stateful step before a merge), the merge keeps the other branches' batches meanwhile, within `max_memory`: raise it, or move that step after the merge", weave_core::format_duration(*waited), waiting.join(", "))]
    Stalled {
        /// How long nothing moved.
        waited: Duration,
        /// The steps that had not finished.
        waiting: Vec<String>,
    },
    /// What the run would write clashes with what it reads or with another of its
    /// outputs, or is not a file it can replace: found before anything was touched.
    #[error("{}", problems.join("\n"))]
    Files {
        /// One line per problem, naming the steps or flags and the paths as written.
        problems: Vec<String>,
    },
    /// The run was cancelled (Ctrl-C).
    #[error("the run was cancelled")]
    Cancelled,
    /// A thread could not be started.
    #[error("cannot start a thread")]
    Thread(#[source] std::io::Error),
}

/// `step "load": 3 bad records of 3 (100%), more than max_bad_records = "50%" allows (...)`.
fn too_many_bad(
    step: Option<&str>,
    bad: u64,
    handled: Option<u64>,
    limit: &BadRecordLimit,
    quarantine: Option<&std::path::Path>,
) -> String {
    let (who, key, read) = match step {
        Some(s) => (format!("step \"{s}\""), "max_bad_records", ""),
        None => ("the run".to_owned(), "[pipeline] max_bad_records", " read"),
    };
    let noun = if bad == 1 { "bad record" } else { "bad records" };
    let of = handled.map_or_else(String::new, |n| {
        format!(" of {n}{read} ({})", format_percent(if n == 0 { 0.0 } else { bad as f64 / n as f64 }))
    });
    let kept = quarantine.map_or_else(String::new, |q| format!("they are in {}; ", q.display()));
    format!(
        "{who}: {bad} {noun}{of}, more than {key} = {limit} allows ({kept}raise `max_bad_records` to let the run go on)"
    )
}

impl Error {
    /// The step the error is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Error::Step { step, .. }
            | Error::Timeout { step, .. }
            | Error::Hung { step, .. }
            | Error::BadRecord { step, .. }
            | Error::Panic { step, .. }
            | Error::Exclusions { step, .. }
            | Error::Cache { step, .. } => Some(step),
            Error::TooManyBadRecords { step, .. } => step.as_deref(),
            Error::Quarantine { .. }
            | Error::Cancelled
            | Error::Thread(_)
            | Error::Stalled { .. }
            | Error::Files { .. } => None,
        }
    }

    /// How the failure is classed.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Step { source, .. } => source.class(),
            Error::Timeout { .. } => ErrorClass::Transient,
            Error::BadRecord { .. } | Error::TooManyBadRecords { .. } => ErrorClass::BadRecord,
            _ => ErrorClass::Fatal,
        }
    }

    /// Whose side the failure is on.
    pub fn origin(&self) -> ErrorOrigin {
        match self {
            Error::Step { source, .. } => source.origin(),
            Error::Timeout { .. }
            | Error::Hung { .. }
            | Error::Quarantine { .. }
            | Error::Exclusions { .. }
            | Error::Cache { .. }
            | Error::Thread(_) => ErrorOrigin::Environment,
            Error::BadRecord { .. } | Error::TooManyBadRecords { .. } | Error::Cancelled => ErrorOrigin::User,
            Error::Panic { .. } => ErrorOrigin::Internal,
            Error::Stalled { .. } | Error::Files { .. } => ErrorOrigin::User,
        }
    }
}
