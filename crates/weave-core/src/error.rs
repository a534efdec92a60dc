//! Errors: what steps return at run time, and this crate's own error.

use std::fmt;
use std::time::Duration;

use crate::batch::Batch;
use crate::diagnostic::Diagnostics;
use crate::record::Record;

/// A boxed error from a step's own code, kept as the source of a [`StepError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How the executor treats a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// May succeed if tried again: retried with backoff.
    Transient,
    /// Will not succeed if tried again: the run stops.
    Fatal,
    /// One record is bad: handled by the step's bad-record policy (quarantine or fail).
    BadRecord,
}

impl ErrorClass {
    /// Its name in metrics and records: `transient`, `fatal` or `bad_record`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Fatal => "fatal",
            ErrorClass::BadRecord => "bad_record",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Fatal => "fatal",
            ErrorClass::BadRecord => "bad record",
        })
    }
}

/// Whose side a failure is on, so that error metrics mean something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorOrigin {
    /// The user's input: the pipeline file, the data.
    User,
    /// The environment: the disk, the network, a remote service.
    Environment,
    /// A bug in Weave or in a step.
    Internal,
}

impl fmt::Display for ErrorOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorOrigin::User => "user input",
            ErrorOrigin::Environment => "environment",
            ErrorOrigin::Internal => "internal",
        })
    }
}

/// A step's failure, classified for the executor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// The call may succeed if repeated (a timeout, an HTTP 503, a dropped connection).
    #[error("{message}")]
    Transient {
        /// What went wrong.
        message: String,
        /// How long the other side asked us to wait before trying again (`Retry-After`).
        retry_after: Option<Duration>,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The call will not succeed if repeated; the run stops.
    #[error("{message}")]
    Fatal {
        /// What went wrong.
        message: String,
        /// Whose side the failure is on.
        origin: ErrorOrigin,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// One record cannot be processed, and the call cannot go on without it: the run stops
    /// naming the record, whatever the step's `on_bad_record` says (the call's output for
    /// the rest of its batch is lost). A step that can go on without the record sets it
    /// aside with [`StepContext::reject`](crate::StepContext::reject) instead, and then
    /// `on_bad_record` decides.
    #[error("bad record: {reason}")]
    BadRecord {
        /// Why the record is bad.
        reason: String,
        /// The record, when the step has it, for the quarantine file.
        record: Option<Box<Record>>,
    },
}

/// An error and its causes as one line: each cause whose text the error's message does
/// not already hold, after a colon (libraries' errors, such as an HTTP client's, often name
/// only the operation and keep the reason in their source).
pub fn error_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The error for a field the step was told to use but the data does not have.
pub fn missing_field(batch: &Batch, name: &str) -> StepError {
    let known: Vec<&str> = batch.schema().names().collect();
    StepError::fatal(format!("field `{name}` is not in the data (fields: {})", known.join(", ")))
}

impl StepError {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        StepError::Transient { message: message.into(), retry_after: None, source: None }
    }

    /// A fatal failure caused by the user's input.
    pub fn fatal(message: impl Into<String>) -> Self {
        StepError::Fatal { message: message.into(), origin: ErrorOrigin::User, source: None }
    }

    /// A fatal failure of the environment (disk, network), keeping its source.
    pub fn environment(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StepError::Fatal { message: message.into(), origin: ErrorOrigin::Environment, source: Some(source.into()) }
    }

    /// A fatal failure that is a bug.
    pub fn internal(message: impl Into<String>) -> Self {
        StepError::Fatal { message: message.into(), origin: ErrorOrigin::Internal, source: None }
    }

    /// A bad record.
    pub fn bad_record(reason: impl Into<String>, record: Option<Record>) -> Self {
        StepError::BadRecord { reason: reason.into(), record: record.map(Box::new) }
    }

    /// How the executor treats this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            StepError::Transient { .. } => ErrorClass::Transient,
            StepError::Fatal { .. } => ErrorClass::Fatal,
            StepError::BadRecord { .. } => ErrorClass::BadRecord,
        }
    }

    /// Whose side the failure is on.
    pub fn origin(&self) -> ErrorOrigin {
        match self {
            StepError::Transient { .. } => ErrorOrigin::Environment,
            StepError::Fatal { origin, .. } => *origin,
            StepError::BadRecord { .. } => ErrorOrigin::User,
        }
    }
}

/// The error type of `weave-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pipeline file or DAG has problems; every one is listed.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// A batch was assembled from columns that do not fit together.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
}

impl Error {
    /// How the executor treats this error: an invalid pipeline or batch is never retried.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }

    /// Whose side the error is on.
    pub fn origin(&self) -> ErrorOrigin {
        match self {
            Error::Invalid(_) => ErrorOrigin::User,
            Error::InvalidBatch(_) => ErrorOrigin::Internal,
        }
    }
}
