//! Run events: what the executor reports as it goes, for the monitor, the progress bars
//! and the logs. Plain data, so that both sides depend only on `weave-core`.

use std::collections::BTreeMap;
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
    /// A call rejected bad records and the step's policy is `on_bad_record = "fail"`: the
    /// call failed, and the run stops.
    RecordsFailed {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// How many records the call rejected.
        count: u64,
    },
    /// Requests a call made of its own and retried itself (an LLM step's HTTP requests,
    /// each attempt counted, retries after a 429 or a 5xx included), reported through
    /// `StepContext::count_requests`. Sent once per call that made any, before the call's
    /// `BatchFinished` (or `BatchRetried`, `BatchFailed`).
    RequestsMade {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// Attempts sent, retries included.
        requests: u64,
        /// Attempts that failed: those retried, and those given up on.
        failed: u64,
        /// Attempts sent again after a transient failure.
        retries: u64,
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
            | Event::RecordsFailed { step, .. }
            | Event::RequestsMade { step, .. }
            | Event::CacheHit { step, .. }
            | Event::CacheMiss { step, .. }
            | Event::StepSkipped { step }
            | Event::StepFigures { step, .. }
            | Event::WaitedForMemory { step, .. } => Some(step),
        }
    }
}

/// What a step did, counted from its events: the one place where events become the
/// counts that the run summary, the metrics, the run record and the reports show. The
/// executor counts a step's events with it as it sends them, and the monitor counts the
/// events it receives with it, so that no two of them can disagree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepCounts {
    /// Calls that finished (one per batch for most steps).
    pub calls: u64,
    /// Records taken in by the calls that finished.
    pub records_in: u64,
    /// Records passed on, the ones taken from the cache included.
    pub records_out: u64,
    /// Calls tried again after a transient failure, plus the requests that calls retried
    /// themselves.
    pub retries: u64,
    /// Failed call attempts by class (`transient` counts the retried ones; `bad_record`
    /// a call that stopped the run on a bad record).
    pub failures: BTreeMap<String, u64>,
    /// Requests the calls made of their own, retries included.
    pub requests: u64,
    /// Those requests that failed (retried, or given up on).
    pub failed_requests: u64,
    /// Records dropped on purpose, by reason, in the order the reasons first came.
    pub dropped: Vec<(String, u64)>,
    /// Bad records set aside into the quarantine file.
    pub quarantined: u64,
    /// Bad records that failed the run (`on_bad_record = "fail"`, or a call that failed on
    /// a bad record).
    pub failed_records: u64,
    /// Batches whose output came from the cache (a replayed step counts every batch).
    pub cache_hit_batches: u64,
    /// Records taken from the cache.
    pub cache_hit_records: u64,
    /// Input batches of a cached step that had to be computed.
    pub cache_misses: u64,
}

impl StepCounts {
    /// Counts one event (events about other steps are the caller's to filter).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::BatchFinished { records_in, records_out, .. } => {
                self.calls += 1;
                self.records_in += records_in;
                self.records_out += records_out;
            }
            Event::BatchRetried { .. } => {
                self.retries += 1;
                self.fail(ErrorClass::Transient);
            }
            Event::BatchFailed { class, .. } => {
                self.fail(*class);
                if *class == ErrorClass::BadRecord {
                    self.failed_records += 1;
                }
            }
            Event::RecordsFailed { count, .. } => {
                self.fail(ErrorClass::BadRecord);
                self.failed_records += count;
            }
            Event::RequestsMade { requests, failed, retries, .. } => {
                self.requests += requests;
                self.failed_requests += failed;
                self.retries += retries;
            }
            Event::RecordsDropped { reason, count, .. } => match self.dropped.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += count,
                None => self.dropped.push((reason.clone(), *count)),
            },
            Event::RecordsQuarantined { count, .. } => self.quarantined += count,
            Event::CacheHit { batches, records, .. } => {
                self.cache_hit_batches += batches;
                self.cache_hit_records += records;
                self.records_out += records;
            }
            Event::CacheMiss { .. } => self.cache_misses += 1,
            _ => {}
        }
    }

    fn fail(&mut self, class: ErrorClass) {
        *self.failures.entry(class.name().to_owned()).or_default() += 1;
    }

    /// Bad records: set aside, or failing the run.
    pub fn bad_records(&self) -> u64 {
        self.quarantined + self.failed_records
    }

    /// Records dropped on purpose, over every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// Attempts: calls that finished, failed call attempts, and requests made inside calls.
    pub fn attempts(&self) -> u64 {
        self.calls + self.failures.values().sum::<u64>() + self.requests
    }

    /// Failed attempts: failed call attempts (retried ones included) and failed requests.
    pub fn failed_attempts(&self) -> u64 {
        self.failures.values().sum::<u64>() + self.failed_requests
    }

    /// Failed attempts over all attempts (0 with none).
    pub fn error_rate(&self) -> f64 {
        match self.attempts() {
            0 => 0.0,
            n => self.failed_attempts() as f64 / n as f64,
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
