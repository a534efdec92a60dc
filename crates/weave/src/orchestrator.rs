//! The one-line way to build and run a pipeline, as in the original write-up:
//! `Orchestrator().build_pipeline([...])`, then `run(...)`. A run goes through the same
//! [`Session`] as `weave run`, so it keeps the same run record, metrics and alerts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weave_core::{Diagnostics, Pipeline, PipelineBuilder, Registry, ResourceLimits, RetryPolicy, Step, Subscriber};
use weave_exec::{ExecOptions, RunSummary};
use weave_session::{PipelineFile, RunFailure, RunOptions, Session, SessionError};

/// Builds pipelines from steps and runs them with monitoring and resource limits.
///
/// ```
/// use weave::{Orchestrator, ResourceLimits, Step};
///
/// # fn steps() -> Vec<(&'static str, Step)> { Vec::new() }
/// let orchestrator = Orchestrator::new()
///     .resource_limits(ResourceLimits { max_memory: 4 << 30, ..ResourceLimits::default() });
/// // `build_pipeline` chains the steps in the order given, like the write-up's
/// // `build_pipeline([LoadDataStep(...), CleaningStep(...), ...])`.
/// match orchestrator.build_pipeline("example", steps()) {
///     Ok(pipeline) => { let _summary = orchestrator.run(pipeline); }
///     Err(problems) => eprintln!("{problems}"),
/// }
/// ```
#[derive(Clone, Default)]
pub struct Orchestrator {
    resources: ResourceLimits,
    retry: RetryPolicy,
    seed: u64,
    options: ExecOptions,
    log: bool,
    cache: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
    runs_dir: Option<PathBuf>,
    registry: Option<Registry>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").field("resources", &self.resources).field("retry", &self.retry).finish()
    }
}

impl Orchestrator {
    /// An orchestrator with the default limits (a 2 GiB memory budget, one worker per
    /// core), the default retry policy, and run events logged.
    pub fn new() -> Self {
        Orchestrator { log: true, ..Orchestrator::default() }
    }

    /// Sets the resource limits (`max_memory`, `max_concurrent`, `gpu_enabled`).
    pub fn resource_limits(mut self, resources: ResourceLimits) -> Self {
        self.resources = resources;
        self
    }

    /// Sets the default retry policy of every step.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Adds a subscriber to run events (metrics, alerts, progress).
    pub fn subscribe(mut self, subscriber: Arc<dyn Subscriber>) -> Self {
        self.options.subscribers.push(subscriber);
        self
    }

    /// Whether run events go to the log (on by default).
    pub fn monitoring(mut self, log: bool) -> Self {
        self.log = log;
        self
    }

    /// Keeps step outputs in the cache in `dir` (as `weave run` does in `.weave/cache`):
    /// what is unchanged since an earlier run is taken from it, and an interrupted run
    /// resumes. Off by default for a pipeline built in Rust; a pipeline file's run uses
    /// the cache `weave run` would.
    pub fn cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        self
    }

    /// Writes the run's metrics (Prometheus text) to `path` while it goes and at its end.
    pub fn metrics_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.metrics_file = Some(path.into());
        self
    }

    /// Keeps run records in `dir` (a pipeline file's go to `.weave/runs` beside it).
    pub fn runs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runs_dir = Some(dir.into());
        self
    }

    /// Builds pipeline files with the kinds of `registry` (by default the built-in ones,
    /// [`weave_steps::registry`]): add kinds of your own to that one and give it here.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Sets the executor's options (cancel flag, quarantine file, channel capacity).
    pub fn options(mut self, options: ExecOptions) -> Self {
        self.options = options;
        self
    }

    /// Chains `steps` in the order given and checks the result.
    pub fn build_pipeline<S: Into<String>>(
        &self,
        name: &str,
        steps: impl IntoIterator<Item = (S, Step)>,
    ) -> Result<Pipeline, Diagnostics> {
        let mut b = PipelineBuilder::new(name).resources(self.resources).retry(self.retry).seed(self.seed);
        for (id, step) in steps {
            b = b.step(id, step);
        }
        b.build()
    }

    /// The run options this orchestrator gives a session.
    fn run_options(&self) -> RunOptions {
        RunOptions {
            cache_dir: self.cache.clone(),
            quarantine: self.options.quarantine.clone(),
            metrics_file: self.metrics_file.clone(),
            runs_dir: self.runs_dir.clone(),
            subscribers: self.options.subscribers.clone(),
            log_events: self.log,
            cancel: Arc::clone(&self.options.cancel),
            on_failure: Some(Arc::new(settle_llm_requests)),
            channel_capacity: self.options.channel_capacity,
            stall_timeout: self.options.stall_timeout,
            ..RunOptions::default()
        }
    }

    /// Runs a pipeline to the end.
    pub fn run(&self, pipeline: Pipeline) -> Result<RunSummary, RunFailure> {
        Session::new(pipeline, None, self.run_options()).map_err(RunFailure::Start)?.run()
    }

    /// Reads, builds and runs the pipeline file at `path`, as `weave run` does: its cache,
    /// quarantine file and run record beside it (unless this orchestrator says where),
    /// its `[[alert]]` rules, and the file's own limits and seed.
    pub fn run_file(&self, path: impl AsRef<Path>) -> Result<RunSummary, RunFailure> {
        let file = PipelineFile::read(path).map_err(RunFailure::Start)?;
        let options = self.run_options();
        let built_in;
        let registry = match &self.registry {
            Some(r) => r,
            None => {
                built_in = weave_steps::registry();
                &built_in
            }
        };
        let pipeline =
            file.build(registry, &options.build_options()).map_err(|d| RunFailure::Start(SessionError::Invalid(d)))?;
        Session::new(pipeline, Some(file), options).map_err(RunFailure::Start)?.run()
    }
}

/// Gives the LLM requests a failed or stopped run has in flight (already paid for) up to
/// [`LLM_GRACE`] to be answered and kept in the cache, so that the next run does not pay
/// for them again.
pub fn settle_llm_requests() {
    if weave_steps::requests_in_flight() == 0 {
        return;
    }
    let left = weave_steps::settle_requests(LLM_GRACE);
    if left > 0 {
        log::warn!(
            "{left} LLM requests still had no answer after {}; they were abandoned",
            weave_core::format_duration(LLM_GRACE)
        );
    }
}

/// How long a stopped run waits for its LLM requests in flight to be answered.
pub const LLM_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
