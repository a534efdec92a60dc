//! A run's data in memory: tables given from Python in place of source steps
//! (`run(inputs={"load": table})`), and steps' outputs handed back as tables
//! (`run(outputs=["clean"])`).
//!
//! The pipeline file is read as written, then changed before its steps are built: a
//! source step given an input becomes a `memory_source` of the input's batches (its own
//! keys dropped, the keys every step takes kept), and each output gets a `memory_sink`
//! step of its own after the step named, `<step>.to_python`. Both are weave-session's
//! in-memory ends, registered as kinds for this one build, so the pipeline is checked,
//! keyed and run as any other: an input held in memory has the blake3 of its batches as
//! its cache key, so a run with other data is never served an earlier run's output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use weave::{
    BuildOptions, CacheMode, ConfTable, Dep, Diagnostics, MemorySink, MemorySinkHandle, MemorySource, Params, Pipeline,
    PipelineFile, PipelineSpec, Registry, SessionError, Shape, StepKind,
};

/// The kind of a source step replaced by data given from Python.
const MEMORY_SOURCE: &str = "memory_source";
/// The kind of the step that hands a step's output back to Python.
const MEMORY_SINK: &str = "memory_sink";
/// What the id of the step that hands `<step>`'s output back ends with.
pub(crate) const OUTPUT_SUFFIX: &str = ".to_python";

/// Why a pipeline with memory ends could not be built.
#[derive(Debug)]
pub(crate) enum EndsError {
    /// The pipeline, as changed, has errors (each a diagnostic).
    Invalid(Diagnostics),
    /// An input or output names no step, or a step of the wrong shape: the message says
    /// which, beginning with the argument (`inputs`, `outputs`).
    Step(String),
}

/// `file`'s pipeline, built with `options` through `registry`, with `inputs` (a step id
/// and its source each) in place of the source steps they name and a memory sink after
/// each step of `outputs`, whose handles come back with the step ids.
pub(crate) fn build(
    file: &PipelineFile,
    mut registry: Registry,
    options: &BuildOptions,
    inputs: Vec<(String, MemorySource)>,
    outputs: &[String],
) -> Result<(Pipeline, Vec<(String, MemorySinkHandle)>), EndsError> {
    if inputs.is_empty() && outputs.is_empty() {
        return file.build(&registry, options).map(|p| (p, Vec::new())).map_err(EndsError::Invalid);
    }
    let (mut spec, mut warnings) = PipelineSpec::parse(&file.path, &file.text).map_err(EndsError::Invalid)?;
    let shape_of = |kind: &str| registry.get(kind).map(|k| k.shape);
    let mut sources = HashMap::new();
    for (id, source) in inputs {
        let step = find(&mut spec, "inputs", &id)?;
        let shape = shape_of(&step.kind);
        if shape != Some(Shape::Source) {
            return Err(EndsError::Step(format!(
                "inputs: step \"{id}\" ({}) is not a source step: an input takes the place of a source (a loader)",
                describe(&step.kind, shape)
            )));
        }
        step.kind = MEMORY_SOURCE.to_owned();
        // The loader's own keys (its path, format, batch size) say nothing of the data
        // given instead.
        step.params = ConfTable::default();
        sources.insert(id, source);
    }
    let mut handles = Vec::with_capacity(outputs.len());
    let mut sinks = HashMap::new();
    for id in outputs {
        let step = find(&mut spec, "outputs", id)?;
        let shape = if step.kind == MEMORY_SOURCE { Some(Shape::Source) } else { shape_of(&step.kind) };
        if shape == Some(Shape::Sink) {
            return Err(EndsError::Step(format!(
                "outputs: step \"{id}\" ({}) has no output: name the step whose records it writes",
                describe(&step.kind, shape)
            )));
        }
        let mut sink = step.clone();
        sink.id = format!("{id}{OUTPUT_SUFFIX}");
        sink.kind = MEMORY_SINK.to_owned();
        sink.kind_location = None;
        sink.after = Some(vec![Dep::new(id.clone())]);
        sink.params = ConfTable::default();
        sink.common = ConfTable::default();
        sink.retry = Default::default();
        sink.timeout = None;
        sink.on_bad_record = None;
        sink.max_bad_records = None;
        sink.resources = Default::default();
        sink.cache = CacheMode::Off;
        sink.exclusions = None;
        let (memory_sink, handle) = MemorySink::new();
        sinks.insert(sink.id.clone(), memory_sink);
        handles.push((id.clone(), handle));
        spec.steps.push(sink);
    }
    register(&mut registry, MEMORY_SOURCE, Shape::Source, "data given from Python (`run(inputs=...)`)", sources, |s| {
        s.into_step()
    });
    register(
        &mut registry,
        MEMORY_SINK,
        Shape::Sink,
        "a step's output handed to Python (`run(outputs=...)`)",
        sinks,
        |s| s.into_step(),
    );
    let mut pipeline = Pipeline::from_spec_with(spec, &registry, options).map_err(EndsError::Invalid)?;
    warnings.extend(pipeline.take_warnings());
    pipeline.set_warnings(warnings);
    Ok((pipeline, handles))
}

/// The step `id` of `spec`, or the error that names the steps there are.
fn find<'a>(spec: &'a mut PipelineSpec, argument: &str, id: &str) -> Result<&'a mut weave::StepSpec, EndsError> {
    let ids: Vec<String> = spec.steps.iter().map(|s| s.id.clone()).collect();
    spec.steps.iter_mut().find(|s| s.id == id).ok_or_else(|| {
        let no_such = SessionError::NoSuchStep {
            step: id.to_owned(),
            hint: weave::did_you_mean(id, ids.iter().map(String::as_str)).map(str::to_owned),
            steps: ids.clone(),
        };
        EndsError::Step(format!("{argument}: {no_such}"))
    })
}

/// A step's kind and shape for a message: "kind `clean`, a transform".
fn describe(kind: &str, shape: Option<Shape>) -> String {
    let shape = match shape {
        Some(Shape::Source) => "a source",
        Some(Shape::Transform) => "a transform",
        Some(Shape::StatefulTransform) => "a stateful transform",
        Some(Shape::Merge) => "a merge",
        Some(Shape::Sink) => "a sink",
        None => "of an unknown kind",
    };
    format!("kind `{kind}`, {shape}")
}

/// Registers `name`, whose steps are taken, by step id, from `steps` (each built once).
fn register<T: Send + 'static>(
    registry: &mut Registry,
    name: &'static str,
    shape: Shape,
    summary: &'static str,
    steps: HashMap<String, T>,
    into_step: fn(T) -> weave::Step,
) {
    let steps = Arc::new(Mutex::new(steps));
    registry.register(StepKind::new(name, shape, summary, Vec::<&str>::new(), move |p: &Params| {
        let id = p.step_id()?;
        steps.lock().unwrap_or_else(PoisonError::into_inner).remove(id).map(into_step)
    }));
}
