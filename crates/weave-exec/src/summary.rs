//! What a run reports: each step's stats, the run's summary, and the error of a failed run.

use std::time::Duration;

use weave_core::{RunStatus, StepCounts, Value};

use crate::error::Error;

/// What one step did in a run. Its counts are the fold of the step's events
/// ([`StepCounts::apply`]), the same that the monitor makes of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    /// The step's id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Batches it took in.
    pub batches_in: u64,
    /// Batches it passed on.
    pub batches_out: u64,
    /// Records it took in.
    pub records_in: u64,
    /// Records it passed on.
    pub records_out: u64,
    /// Calls retried after a transient failure (timeouts included), and requests that
    /// calls retried themselves (an LLM step's).
    pub retries: u64,
    /// Records dropped on purpose, by reason.
    pub dropped: Vec<(String, u64)>,
    /// Records set aside into the quarantine file.
    pub quarantined: u64,
    /// Bad records: set aside, or failing the run.
    pub bad_records: u64,
    /// Time spent inside the step's calls, summed over threads.
    pub busy: Duration,
    /// CPU time the step's calls used, summed over the threads that made them (its
    /// stage's thread, the worker pool): against `busy`, it tells a step that computes
    /// from one that waits. A call that spreads its own work over the pool
    /// (`StepInfo::parallel`) counts its calling thread's share only. Zero where the
    /// system does not say (Linux does: `/proc/thread-self/schedstat`).
    pub cpu: Duration,
    /// Batches whose output came from the cache instead of the step.
    pub cached_batches: u64,
    /// Whether the step ran, was replayed from the cache, or was skipped.
    pub cache: CacheUse,
    /// Records written to the step's exclusion file.
    pub excluded: u64,
    /// The step's dataset-level figures, set with `StepContext::set_stat` (or summed over
    /// its calls, from `StepContext::add_stat`).
    pub figures: Vec<(String, Value)>,
    /// The counts, as the events made them; the fields above are filled from them when the
    /// run ends.
    pub(crate) counts: StepCounts,
}

/// How the cache served a step in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheUse {
    /// The step ran (possibly taking some batches from an interrupted run's entries).
    #[default]
    Ran,
    /// Its whole output was read back from the cache.
    Replayed,
    /// It did not run: nothing after it needed its output, or (a sink) its files were up
    /// to date.
    Skipped,
}

impl CacheUse {
    /// The name used in reports: `ran`, `replayed` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Ran => "ran",
            CacheUse::Replayed => "replayed",
            CacheUse::Skipped => "skipped",
        }
    }
}

impl StepStats {
    pub(crate) fn set_figure(&mut self, name: String, value: Value) {
        match self.figures.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.figures.push((name, value)),
        }
    }

    pub(crate) fn add_figure(&mut self, name: String, amount: Value) {
        match self.figures.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = weave_core::sum_figures(v, &amount),
            None => self.figures.push((name, amount)),
        }
    }

    /// Fills the public counts from the events counted.
    pub(crate) fn close(&mut self) {
        let c = &self.counts;
        self.records_in = c.records_in;
        self.records_out = c.records_out;
        self.retries = c.retries;
        self.dropped.clone_from(&c.dropped);
        self.quarantined = c.quarantined;
        self.bad_records = c.bad_records();
        self.cached_batches = c.cache_hit_batches;
    }

    /// The records the step handled, bad ones included, for `max_bad_records` shares: a
    /// source's are those it read (its bad records are not passed on), another step's
    /// those it took in.
    pub(crate) fn handled(&self, source: bool) -> u64 {
        if source { self.counts.records_out + self.counts.bad_records() } else { self.counts.records_in }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The pipeline's name.
    pub pipeline: String,
    /// How it ended.
    pub status: RunStatus,
    /// Per step, in declaration order.
    pub steps: Vec<StepStats>,
    /// Wall time.
    pub elapsed: Duration,
    /// The most bytes of batches in flight at once.
    pub peak_memory: u64,
    /// CPU worker threads used.
    pub threads: usize,
}

impl RunSummary {
    /// The stats of step `id`.
    pub fn step(&self, id: &str) -> Option<&StepStats> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// A failed run: the first error, and what the run did until then.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunError {
    /// The first error.
    #[source]
    pub error: Error,
    /// What the run did.
    pub summary: RunSummary,
}
