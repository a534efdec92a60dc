//! Run events: what the executor reports as it goes, for the monitor, the progress bars
//! and the logs. Plain data, so that both sides depend only on `weave-core`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorClass;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step finished and the outputs were committed.
    Succeeded,
    /// A step failed; nothing was committed.
    Failed,
    /// The run was cancelled (Ctrl-C); nothing was committed.
    Cancelled,
}

/// One thing that happened during a run. Step ids are shared strings, so events are
/// cheap to make on the per-batch path.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The run started.
    RunStarted {
        /// The pipeline's name.
        pipeline: String,
        /// The number of steps.
        steps: usize,
        /// CPU worker threads.
        threads: usize,
        /// The memory budget in bytes.
        max_memory: u64,
    },
    /// The run ended.
    RunFinished {
        /// How.
        status: RunStatus,
        /// Wall time.
        elapsed: Duration,
        /// The most bytes in flight at once.
        peak_memory: u64,
    },
    /// A step started.
    StepStarted {
        /// The step.
        step: Arc<str>,
    },
    /// A step finished all its work.
    StepFinished {
        /// The step.
        step: Arc<str>,
        /// Wall time from its start.
        elapsed: Duration,
    },
    /// A step failed and the run is stopping.
    StepFailed {
        /// The step.
        step: Arc<str>,
        /// Why.
        error: String,
        /// The failure's class.
        class: ErrorClass,
    },
    /// One call of a step on one batch succeeded.
    BatchFinished {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// Records in (0 for a source).
        records_in: u64,
        /// Records out (0 for a sink).
        records_out: u64,
        /// How long the call took.
        elapsed: Duration,
    },
    /// A call failed transiently and will be tried again.
    BatchRetried {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// The retry about to be made (1 for the first retry).
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// Why the call failed.
        error: String,
    },
    /// A call failed for good.
    BatchFailed {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// Why.
        error: String,
        /// The failure's class.
        class: ErrorClass,
    },
    /// A step dropped records on purpose (a filter).
    RecordsDropped {
        /// The step.
        step: Arc<str>,
        /// Why (the rule's name).
        reason: String,
        /// How many.
        count: u64,
    },
    /// A step set bad records aside into the quarantine file.
    RecordsQuarantined {
        /// The step.
        step: Arc<str>,
        /// How many.
        count: u64,
    },
    /// A step's output came from the cache instead of the step: the whole output replayed
    /// (`seq` is `None`), or the output of one input batch stored by an earlier run.
    CacheHit {
        /// The step.
        step: Arc<str>,
        /// The input batch's sequence number, for a per-batch hit.
        seq: Option<u64>,
        /// Batches taken from the cache.
        batches: u64,
        /// Records taken from the cache.
        records: u64,
    },
    /// A step whose output the cache keeps had to compute an input batch (or, with `seq`
    /// `None`, had no stored output at all).
    CacheMiss {
        /// The step.
        step: Arc<str>,
        /// The input batch's sequence number, for a per-batch miss.
        seq: Option<u64>,
    },
    /// A step was not run: its output is not needed, because every step after it has its
    /// output in the cache (or its files are up to date, for a sink).
    StepSkipped {
        /// The step.
        step: Arc<str>,
    },
    /// A step's numeric figures changed (`StepContext::set_stat`, `add_stat`): their
    /// values so far (tokens, requests and cost of an LLM step, a validator's pass rate).
    StepFigures {
        /// The step.
        step: Arc<str>,
        /// Every numeric figure of the step, by name, as it stands now.
        figures: Vec<(String, f64)>,
    },
    /// A step waited for the memory budget before it could pass a batch on.
    WaitedForMemory {
        /// The step.
        step: Arc<str>,
        /// The bytes it asked for.
        bytes: u64,
        /// How long it waited.
        waited: Duration,
    },
}

impl Event {
    /// The step this event is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::RunStarted { .. } | Event::RunFinished { .. } => None,
            Event::StepStarted { step }
            | Event::StepFinished { step, .. }
            | Event::StepFailed { step, .. }
            | Event::BatchFinished { step, .. }
            | Event::BatchRetried { step, .. }
            | Event::BatchFailed { step, .. }
            | Event::RecordsDropped { step, .. }
            | Event::RecordsQuarantined { step, .. }
            | Event::CacheHit { step, .. }
            | Event::CacheMiss { step, .. }
            | Event::StepSkipped { step }
            | Event::StepFigures { step, .. }
            | Event::WaitedForMemory { step, .. } => Some(step),
        }
    }
}

/// Receives run events. Called from the executor's threads as things happen, so it must
/// be quick and must not block; a subscriber that needs to do slow work hands events to a
/// thread of its own.
pub trait Subscriber: Send + Sync {
    /// One event.
    fn on_event(&self, event: &Event);
}
