//! Steps made of closures, for the scenarios that run the executor: each scenario writes
//! only what its steps do, and these wrappers supply the `StepInfo` that the executor
//! needs around it.

use std::time::{Duration, Instant};

use weave_core::{
    Batch, CanonicalConfig, Pipeline, PipelineBuilder, ResourceLimits, Sink, Source, StatefulTransform, Step,
    StepContext, StepError, StepInfo, Transform,
};
use weave_exec::{ExecOptions, RunError, RunSummary};

/// A step whose work is the closure `f`; `kind` names it in the run's summary.
struct FnStep<F> {
    kind: &'static str,
    f: F,
}

impl<F: Send> StepInfo for FnStep<F> {
    fn kind(&self) -> &str {
        self.kind
    }

    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
}

impl<F> Source for FnStep<F>
where
    F: FnMut(&mut StepContext) -> Result<Option<Batch>, StepError> + Send,
{
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        (self.f)(ctx)
    }
}

impl<F> Transform for FnStep<F>
where
    F: Fn(&Batch, &mut StepContext) -> Result<Batch, StepError> + Send + Sync,
{
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        (self.f)(batch, ctx)
    }
}

/// A stateful transform: the closure's state, and a closure called at the end.
struct FnStateful<F, G> {
    kind: &'static str,
    process: F,
    finish: G,
}

impl<F: Send, G: Send> StepInfo for FnStateful<F, G> {
    fn kind(&self) -> &str {
        self.kind
    }

    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
}

impl<F, G> StatefulTransform for FnStateful<F, G>
where
    F: FnMut(&Batch, &mut StepContext, &mut Vec<Batch>) -> Result<(), StepError> + Send,
    G: FnMut(&mut StepContext, &mut Vec<Batch>) -> Result<(), StepError> + Send,
{
    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        (self.process)(batch, ctx, out)
    }

    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        (self.finish)(ctx, out)
    }
}

/// A sink that writes with the closure and has nothing to commit.
struct FnSink<F> {
    kind: &'static str,
    f: F,
}

impl<F: Send> StepInfo for FnSink<F> {
    fn kind(&self) -> &str {
        self.kind
    }

    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
}

impl<F> Sink for FnSink<F>
where
    F: FnMut(&Batch, &mut StepContext) -> Result<(), StepError> + Send,
{
    fn write(&mut self, batch: &Batch, ctx: &mut StepContext) -> Result<(), StepError> {
        (self.f)(batch, ctx)
    }

    fn commit(&mut self, _ctx: &mut StepContext) -> Result<(), StepError> {
        Ok(())
    }
}

/// A source: `f` returns the next batch, or `None` at the end.
pub(super) fn source(
    kind: &'static str,
    f: impl FnMut(&mut StepContext) -> Result<Option<Batch>, StepError> + Send + 'static,
) -> Step {
    Step::Source(Box::new(FnStep { kind, f }))
}

/// A stateless transform, which the executor fuses with its neighbours and runs on the
/// pool.
pub(super) fn transform(
    kind: &'static str,
    f: impl Fn(&Batch, &mut StepContext) -> Result<Batch, StepError> + Send + Sync + 'static,
) -> Step {
    Step::Transform(std::sync::Arc::new(FnStep { kind, f }))
}

/// A stateful transform, which runs as a stage of its own; `finish` is called once at the
/// end of the input.
pub(super) fn stateful(
    kind: &'static str,
    process: impl FnMut(&Batch, &mut StepContext, &mut Vec<Batch>) -> Result<(), StepError> + Send + 'static,
    finish: impl FnMut(&mut StepContext, &mut Vec<Batch>) -> Result<(), StepError> + Send + 'static,
) -> Step {
    Step::StatefulTransform(Box::new(FnStateful { kind, process, finish }))
}

/// A sink.
pub(super) fn sink(
    kind: &'static str,
    f: impl FnMut(&Batch, &mut StepContext) -> Result<(), StepError> + Send + 'static,
) -> Step {
    Step::Sink(Box::new(FnSink { kind, f }))
}

/// A pipeline builder with `threads` CPU workers and the default memory budget.
pub(super) fn builder(name: &str, threads: usize) -> PipelineBuilder {
    PipelineBuilder::new(name).resources(ResourceLimits { max_concurrent: Some(threads), ..ResourceLimits::default() })
}

/// Runs `pipeline` with the default options and times it, from the call to its return
/// (building the pipeline is not counted; joining its threads is).
pub(super) fn timed_run(pipeline: Pipeline) -> (Duration, Result<RunSummary, Box<RunError>>) {
    timed_run_with(pipeline, ExecOptions::default())
}

/// Runs `pipeline` with `options` (subscribers, say) and times it as [`timed_run`] does.
pub(super) fn timed_run_with(
    pipeline: Pipeline,
    options: ExecOptions,
) -> (Duration, Result<RunSummary, Box<RunError>>) {
    let start = Instant::now();
    let result = weave_exec::run(pipeline, options);
    (start.elapsed(), result)
}
