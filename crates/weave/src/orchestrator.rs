//! The one-line way to build and run a pipeline, as in the original write-up:
//! `Orchestrator().build_pipeline([...])`, then `run(...)`.

use std::sync::Arc;

use weave_core::{Diagnostics, Pipeline, PipelineBuilder, ResourceLimits, RetryPolicy, Step, Subscriber};
use weave_exec::{ExecOptions, LogSubscriber, RunError, RunSummary};

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
    cache: Option<std::path::PathBuf>,
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
    /// resumes. Off by default.
    pub fn cache(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cache = Some(dir.into());
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

    /// Runs a pipeline to the end.
    pub fn run(&self, pipeline: Pipeline) -> Result<RunSummary, Box<RunError>> {
        let mut options = self.options.clone();
        if self.log {
            options.subscribers.push(Arc::new(LogSubscriber));
        }
        let Some(dir) = &self.cache else { return weave_exec::run(pipeline, options) };
        // A cache that cannot be opened costs only the saving: the run goes on without.
        let plan = match weave_cache::CachePlan::open(&pipeline, dir, &weave_cache::CacheOptions::default()) {
            Ok(plan) => Some(plan),
            Err(e) => {
                log::warn!("cannot open the cache in {} ({e}); running without it", dir.display());
                None
            }
        };
        let _pin = plan.as_ref().and_then(|p| weave_cache::Pin::new(p).ok());
        if let Some(p) = &plan {
            options.caches = p.entries();
        }
        let quarantine = options.quarantine.clone();
        let summary = weave_exec::run(pipeline, options)?;
        if let (Some(p), Some(q)) = (&plan, &quarantine) {
            let ran = |id: &str| summary.step(id).is_some_and(|s| s.cache == weave_exec::CacheUse::Ran);
            if let Err(e) = p.settle_set_aside(q, &ran) {
                log::warn!("cannot keep the set-aside records of the cached steps ({e})");
            }
        }
        if let Some(Err(e)) = plan.as_ref().map(weave_cache::CachePlan::remember) {
            log::warn!("cannot record the steps' keys in the cache ({e})");
        }
        Ok(summary)
    }
}
