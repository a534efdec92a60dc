//! Pipelines: a checked DAG of built steps with their resolved policies, made from a
//! pipeline file through a [`Registry`] of step kinds, or from steps built in Rust.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::context::BuildContext;
use crate::dag::{Dag, Dep, NodeSpec};
use crate::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use crate::params::Params;
use crate::policy::{BadRecordLimit, BadRecordPolicy, Resources, RetryPolicy};
use crate::spec::{AlertSpec, LlmProvider, MAX_CONCURRENT, MAX_GPUS, PipelineSpec, ResourceLimits, STEP_COMMON_KEYS};
use crate::step::{CacheMode, CanonicalConfig, Shape, Step};
use crate::units::format_bytes;

/// Builds a step of one kind from its keys in the pipeline file.
///
/// The function reads its keys through the [`Params`] getters, which record a diagnostic
/// for each bad value, and returns the step, or `None` if it could not be built (with at
/// least one error recorded). Keys it does not read are reported as unknown. It is a
/// shared closure, so that a kind made at run time (by a user's crate, or a binding to
/// another language) can carry what it needs.
pub type BuildFn = Arc<dyn Fn(&Params) -> Option<Step> + Send + Sync>;

/// A kind of step that pipeline files can name.
///
/// Built-in kinds and kinds registered at run time are the same type and go through the
/// same code: their keys are checked alike ("did you mean"), their steps' cache keys hold
/// the kind's name and its steps' [`version`](crate::StepInfo::version), and
/// [`Registry::listing`] lists them.
#[derive(Clone)]
pub struct StepKind {
    /// The name the pipeline file uses (`"load_csv"`).
    pub name: Cow<'static, str>,
    /// The shape of its steps.
    pub shape: Shape,
    /// One line on what it does, for `weave kinds` and messages.
    pub summary: Cow<'static, str>,
    /// Its own keys (beyond the common `id`, `kind`, `after`, ...), for "did you mean".
    pub keys: Vec<Cow<'static, str>>,
    /// The constructor.
    pub build: BuildFn,
}

impl StepKind {
    /// A kind called `name` whose steps have `shape`, described by `summary`, taking
    /// `keys` and built by `build`. Names and keys may be `&'static str` (the built-in
    /// kinds) or `String` (kinds made at run time).
    pub fn new<K: Into<Cow<'static, str>>>(
        name: impl Into<Cow<'static, str>>,
        shape: Shape,
        summary: impl Into<Cow<'static, str>>,
        keys: impl IntoIterator<Item = K>,
        build: impl Fn(&Params) -> Option<Step> + Send + Sync + 'static,
    ) -> Self {
        StepKind {
            name: name.into(),
            shape,
            summary: summary.into(),
            keys: keys.into_iter().map(Into::into).collect(),
            build: Arc::new(build),
        }
    }

    /// Its own keys followed by the keys every step takes: all the keys a step of this
    /// kind may have.
    pub fn all_keys(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.as_ref()).chain(STEP_COMMON_KEYS.iter().copied()).collect()
    }
}

impl fmt::Debug for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepKind")
            .field("name", &self.name)
            .field("shape", &self.shape)
            .field("summary", &self.summary)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// The step kinds a pipeline file can name: kind name → constructor. `weave-steps` fills
/// one with the built-in kinds; users add their own with [`Registry::register`], at run
/// time, on top of it.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<Cow<'static, str>, StepKind>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a kind, replacing any kind of the same name.
    pub fn register(&mut self, kind: StepKind) -> &mut Self {
        self.kinds.insert(kind.name.clone(), kind);
        self
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&StepKind> {
        self.kinds.get(name)
    }

    /// All kinds, by name.
    pub fn kinds(&self) -> impl Iterator<Item = &StepKind> {
        self.kinds.values()
    }

    /// The kinds as `weave kinds` prints them: per kind, by name, its name, shape and
    /// summary, then its own keys; then the keys every step takes. A front end with kinds
    /// of its own lists them by calling this on its registry.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for k in self.kinds() {
            out.push_str(&format!("{:<14} {:<19} {}\n", k.name, k.shape.to_string(), k.summary));
            if !k.keys.is_empty() {
                out.push_str(&format!("{:<14} {:<19} keys: {}\n", "", "", k.keys.join(", ")));
            }
        }
        out.push_str(&format!("\nEvery step also takes: {}\n", STEP_COMMON_KEYS.join(", ")));
        out
    }

    /// Builds one step of kind `kind` from its keys, written as in a pipeline file's
    /// `[[step]]` table (`r#"path = "raw_data.csv""#`): the Rust form of a step, for
    /// [`PipelineBuilder`]. Relative paths stay relative to the working directory. Every
    /// problem is returned, as for a pipeline file.
    pub fn build(&self, kind: &str, keys: &str) -> Result<Step, Diagnostics> {
        let file = crate::diagnostic::SourceFile::new(format!("<{kind} keys>"), keys);
        let Some(k) = self.get(kind) else {
            let mut d = Diagnostic::error(format!("unknown step kind `{kind}`")).with_code("unknown-kind");
            if let Some(m) = did_you_mean(kind, self.kinds().map(|k| k.name.as_ref())) {
                d = d.with_help(format!("did you mean `{m}`?"));
            }
            return Err(Diagnostics(vec![d]));
        };
        let table = crate::conf::ConfTable::parse(keys).map_err(|(msg, span)| {
            let d = Diagnostic::error(format!("{kind}: {msg}")).with_code("syntax");
            Diagnostics(vec![match span {
                Some(span) => d.at(Some(file.locate(span))),
                None => d,
            }])
        })?;
        let params = Params::new(table, file, "step", Some(kind.to_owned())).of_kind(k.name.as_ref()).reading_schema();
        let built = (k.build)(&params).map(|step| crate::checked::with_declared_schema(step, &params));
        let diags = params.finish(&k.keys);
        match built {
            Some(step) if !diags.has_errors() => Ok(step),
            _ if diags.has_errors() => Err(diags),
            _ => Err(Diagnostics(vec![Diagnostic::error(format!("step kind `{kind}` could not be built"))])),
        }
    }
}

/// A built step with everything the executor needs to run it.
#[derive(Debug)]
pub struct PipelineStep {
    /// The step.
    pub step: Step,
    /// Its kind name.
    pub kind: String,
    /// Its logic version.
    pub version: u32,
    /// Its canonical configuration.
    pub config: CanonicalConfig,
    /// Its resource needs, the file's overrides applied.
    pub resources: Resources,
    /// How failed calls are retried.
    pub retry: RetryPolicy,
    /// How long one call may take.
    pub timeout: Option<Duration>,
    /// What happens to its bad records.
    pub on_bad_record: BadRecordPolicy,
    /// How many bad records it may set aside before the run fails.
    pub max_bad_records: BadRecordLimit,
    /// Whether its output is kept in the cache.
    pub cache: CacheMode,
    /// Where the records it drops on purpose go, with their reasons.
    pub exclusions: Option<std::path::PathBuf>,
}

/// What the caller of a build says over the pipeline file: the run's options that change
/// how its steps are built or checked. They are not part of the parsed file
/// ([`PipelineSpec`]), which holds only what the file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// The run's cache folder, over the file's `[cache] dir` (the caller resolves its own
    /// sources, `--cache-dir` and `$WEAVE_CACHE_DIR`). Steps with a cache of their own
    /// (LLM answers) keep it there.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The run uses no cache (`--no-cache`): steps with a cache of their own neither read
    /// nor write it.
    pub no_cache: bool,
    /// The memory budget, over the file's `[resources] max_memory`.
    pub max_memory: Option<u64>,
    /// The worker threads, over the file's `[resources] max_concurrent`.
    pub max_concurrent: Option<usize>,
    /// The run is this shard of a job (`weave run --shard I/N`): sources read their share
    /// of the input and outputs are named for the shard (see [`Shard`]).
    pub shard: Option<crate::Shard>,
    /// Where the shards of a job exchange the keys of each whole-dataset step that runs
    /// sharded that way ([`StepInfo::shards_by_exchange`](crate::StepInfo::shards_by_exchange)),
    /// by step id: a folder the front end names after the step's key over the whole job's
    /// input (the same in every shard), in the shared cache.
    pub exchange: BTreeMap<String, std::path::PathBuf>,
    /// A dry run (`weave plan --cost`): steps that pay for their work (LLM requests)
    /// count what they would send, with what their caches answer, and send nothing.
    pub dry_run: bool,
    /// Build only these steps, by id, leaving the others out (a stage of a job run stage
    /// by stage, `weave run --stage K`: the steps that stage must run). `None`: every step.
    pub only_steps: Option<BTreeSet<String>>,
    /// Whole-dataset steps that exchange keys and, in this run, only publish the keys of
    /// their input for the later stage: they wait for no other shard and pass nothing on.
    pub publish_only: BTreeSet<String>,
    /// Steps whose output is kept in the cache although their `cache` is `auto` (a staged
    /// job keeps the input of each whole-dataset step, which the stage after it reads
    /// back rather than computing again).
    pub store: BTreeSet<String>,
}

/// A checked pipeline, ready to run: the DAG of built steps and the run-wide settings.
#[derive(Debug)]
pub struct Pipeline {
    /// The pipeline's name.
    pub name: String,
    /// The seed that all randomness derives from.
    pub seed: u64,
    /// How many bad records the run's steps together may set aside before it fails.
    pub max_bad_records: BadRecordLimit,
    /// The limits the run must stay within.
    pub resources: ResourceLimits,
    /// Alert rules.
    pub alerts: Vec<AlertSpec>,
    /// LLM providers, by name.
    pub llm: BTreeMap<String, LlmProvider>,
    /// Where the pipeline file puts the cache (`[cache] dir`), if it says.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The folder relative paths resolve against: the pipeline file's (empty for the
    /// working directory). Cache keys name files relative to it, so that a pipeline has
    /// the same keys from whatever folder it is run.
    pub base_dir: std::path::PathBuf,
    /// The pipeline-level settings in every step's cache key (see
    /// [`OUTPUT_NEUTRAL`](crate::OUTPUT_NEUTRAL)).
    pub key_config: CanonicalConfig,
    /// The shard of a job this run is, if it is one ([`BuildOptions::shard`]); in every
    /// step's cache key.
    pub shard: Option<crate::Shard>,
    /// Where the shards of the job exchange the keys of its whole-dataset steps, by step
    /// id ([`BuildOptions::exchange`]): a shard that fails says so there, so that the
    /// shards waiting for its keys stop rather than wait.
    pub exchange: BTreeMap<String, std::path::PathBuf>,
    dag: Dag<PipelineStep>,
    warnings: Diagnostics,
}

impl Pipeline {
    /// Parses a pipeline file and builds its steps through `registry`. `path` names the file
    /// in messages and is where relative paths resolve from. Every problem is listed on
    /// failure.
    pub fn from_file_text(path: impl AsRef<Path>, text: &str, registry: &Registry) -> Result<Pipeline, Diagnostics> {
        let (spec, mut warnings) = PipelineSpec::parse(path, text)?;
        let mut p = Pipeline::from_spec(spec, registry)?;
        warnings.extend(p.take_warnings());
        p.warnings = warnings;
        Ok(p)
    }

    /// [`Pipeline::from_file_text`], with the caller's run options over the file's
    /// (`weave run --cache-dir`, `--no-cache`, `--max-memory`, `--max-concurrent`).
    pub fn from_file_text_with(
        path: impl AsRef<Path>,
        text: &str,
        registry: &Registry,
        options: &BuildOptions,
    ) -> Result<Pipeline, Diagnostics> {
        let (spec, mut warnings) = PipelineSpec::parse(path, text)?;
        let mut p = Pipeline::from_spec_with(spec, registry, options)?;
        warnings.extend(p.take_warnings());
        p.warnings = warnings;
        Ok(p)
    }

    /// Builds a parsed spec's steps through `registry` and checks the DAG.
    pub fn from_spec(spec: PipelineSpec, registry: &Registry) -> Result<Pipeline, Diagnostics> {
        Pipeline::from_spec_with(spec, registry, &BuildOptions::default())
    }

    /// [`Pipeline::from_spec`], with the caller's run options over the file's.
    pub fn from_spec_with(
        mut spec: PipelineSpec,
        registry: &Registry,
        options: &BuildOptions,
    ) -> Result<Pipeline, Diagnostics> {
        // The limits are checked below against the steps, so the caller's come first.
        if let Some(m) = options.max_memory {
            spec.resources.max_memory = m;
        }
        if let Some(n) = options.max_concurrent {
            spec.resources.max_concurrent = Some(n);
        }
        let mut diags = Diagnostics::default();
        let mut nodes = Vec::with_capacity(spec.steps.len());
        let mut unknown_kind = Vec::new();
        // One context for the whole pipeline, so that its steps share what they share
        // (an LLM provider's rate budget).
        let cache_dir = (!options.no_cache).then(|| {
            options
                .cache_dir
                .clone()
                .or_else(|| spec.cache_dir.clone())
                .unwrap_or_else(|| crate::spec::default_cache_dir(spec.source.path()))
        });
        let context = std::sync::Arc::new(
            BuildContext::new(spec.llm.values().cloned(), cache_dir)
                .with_storage(spec.storage.clone())
                .with_shard(options.shard)
                .with_exchange(options.exchange.clone())
                .publishing_only(options.publish_only.clone())
                .dry_run(options.dry_run),
        );
        if let Some(only) = &options.only_steps {
            spec.steps.retain(|s| only.contains(&s.id));
        }
        for s in &spec.steps {
            let Some(kind) = registry.get(&s.kind) else {
                if !s.kind.is_empty() {
                    let mut d = Diagnostic::error(format!("unknown step kind `{}`", s.kind))
                        .with_code("unknown-kind")
                        .with_step(&s.id)
                        .at(s.kind_location.clone().or_else(|| s.location.clone()));
                    d = match did_you_mean(&s.kind, registry.kinds().map(|k| k.name.as_ref())) {
                        Some(m) => d.with_help(format!("did you mean `{m}`?")),
                        None => d.with_help("`weave kinds` lists the step kinds"),
                    };
                    diags.push(d);
                }
                unknown_kind.push(s.id.clone());
                // Keep the step in the DAG so that references to it still resolve.
                nodes.push(NodeSpec {
                    id: s.id.clone(),
                    shape: Shape::Merge,
                    after: s.after.clone(),
                    cost: 1.0,
                    location: s.location.clone(),
                    payload: None,
                });
                continue;
            };
            let params = Params::new(s.params.clone(), spec.source.clone(), "step", Some(s.id.clone()))
                .of_kind(kind.name.as_ref())
                .spanning(s.span.clone())
                .with_context(std::sync::Arc::clone(&context))
                .with_retry(s.retry.apply(spec.retry))
                .with_schema(s.schema.clone());
            let built = (kind.build)(&params).map(|step| crate::checked::with_declared_schema(step, &params));
            let failed_quietly = built.is_none() && !params.has_errors();
            let mut step_diags = params.finish(&kind.all_keys());
            if failed_quietly {
                step_diags.push(
                    Diagnostic::error(format!("step kind `{}` could not be built", s.kind))
                        .with_step(&s.id)
                        .at(s.location.clone()),
                );
            }
            let ok = !step_diags.has_errors();
            for d in step_diags.0 {
                diags.push(Diagnostic { location: d.location.or_else(|| s.location.clone()), ..d });
            }
            let payload = built.filter(|_| ok).map(|step| {
                let info = step.info();
                let declared = info.resources();
                let own = info.policy();
                let resources = Resources {
                    memory: s.resources.memory.unwrap_or(declared.memory),
                    threads: s.resources.threads.unwrap_or(declared.threads),
                    gpus: s.resources.gpus.unwrap_or(declared.gpus),
                    io_concurrency: declared.io_concurrency,
                };
                PipelineStep {
                    kind: s.kind.clone(),
                    version: info.version(),
                    // Every key written for the step is in its cache key but the neutral ones.
                    config: crate::keys::step_config(&s.common, &info.config()),
                    retry: s.retry.apply(own.retry.unwrap_or(spec.retry)),
                    timeout: s.timeout.or(own.timeout),
                    on_bad_record: s.on_bad_record.or(own.on_bad_record).unwrap_or_default(),
                    max_bad_records: s.max_bad_records.unwrap_or_default(),
                    cache: if s.cache == CacheMode::Auto && options.store.contains(&s.id) {
                        CacheMode::On
                    } else {
                        s.cache
                    },
                    // A step that only publishes its keys drops nothing: its exclusion file
                    // is the later stage's to write.
                    exclusions: s
                        .exclusions
                        .as_ref()
                        .filter(|_| !options.publish_only.contains(&s.id))
                        .map(|p| crate::Shard::apply_path(options.shard, p)),
                    resources,
                    step,
                }
            });
            let cost = payload.as_ref().map_or(1.0, |p| p.step.info().estimated_cost());
            // A kind may build a step of another shape than it declares (a stateful variant).
            let shape = payload.as_ref().map_or(kind.shape, |p| p.step.shape());
            nodes.push(NodeSpec {
                id: s.id.clone(),
                shape,
                after: s.after.clone(),
                cost,
                location: s.location.clone(),
                payload,
            });
        }

        let dag = match Dag::build(nodes) {
            Ok(dag) => {
                // The steps learn their place in the DAG only now (a Parquet export finds
                // the loaders upstream of it, whose files' metadata it keeps).
                context.set_inputs(
                    dag.nodes()
                        .iter()
                        .map(|n| (n.id.clone(), n.inputs.iter().map(|&i| dag.node(i).id.clone()).collect()))
                        .collect(),
                );
                Some(dag)
            }
            Err(dag_diags) => {
                // A step of unknown kind has no known shape: what the DAG says of its shape
                // would be noise next to the unknown-kind error.
                diags.extend(Diagnostics(
                    dag_diags
                        .0
                        .into_iter()
                        .filter(|d| !(d.code == "shape" && d.step.as_ref().is_some_and(|s| unknown_kind.contains(s))))
                        .collect(),
                ));
                None
            }
        };
        if let (Some(dag), Some(shard)) = (&dag, options.shard)
            && shard.count() > 1
        {
            check_shardable(dag, shard, &mut diags);
        }
        if let Some(dag) = &dag {
            check_resources(dag, |p| p.as_ref(), &spec.resources, &mut diags);
            check_files(dag, |p| p.as_ref(), &mut diags);
        }
        if diags.has_errors() {
            return Err(diags);
        }
        let Some(dag) = dag else { return Err(diags) };
        let mut warnings = diags;
        warnings.extend(dag.warnings().clone());
        // Every payload is there: a missing one was an error above.
        let dag =
            dag.map(|_, p| p.unwrap_or_else(|| unreachable!("a step that failed to build was reported as an error")));
        let base_dir = spec.source.path().parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Pipeline {
            name: spec.name,
            seed: spec.seed,
            max_bad_records: spec.max_bad_records,
            resources: spec.resources,
            alerts: spec.alerts,
            llm: spec.llm,
            cache_dir: spec.cache_dir,
            base_dir,
            key_config: spec.key_config,
            shard: options.shard,
            exchange: options.exchange.clone(),
            dag,
            warnings,
        })
    }

    /// The DAG of steps.
    pub fn dag(&self) -> &Dag<PipelineStep> {
        &self.dag
    }

    /// Takes the DAG out, to run it.
    pub fn into_dag(self) -> Dag<PipelineStep> {
        self.dag
    }

    /// Problems that do not stop the run.
    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    /// Takes the warnings out.
    pub fn take_warnings(&mut self) -> Diagnostics {
        std::mem::take(&mut self.warnings)
    }

    /// Replaces the warnings.
    pub fn set_warnings(&mut self, warnings: Diagnostics) {
        self.warnings = warnings;
    }
}

/// Refuses two steps writing one file (the last rename would silently win), and a step
/// writing a file that another step of the run reads (what it reads would depend on
/// timing).
fn check_files<P>(dag: &Dag<P>, step: impl Fn(&P) -> Option<&PipelineStep>, diags: &mut Diagnostics) {
    let mut writers: Vec<(std::path::PathBuf, usize)> = Vec::new();
    for (i, n) in dag.nodes().iter().enumerate() {
        let Some(p) = step(&n.payload) else { continue };
        for path in p.step.info().files_written().into_iter().chain(p.exclusions.clone()) {
            if let Some((_, j)) = writers.iter().find(|(w, _)| *w == path) {
                diags.push(
                    Diagnostic::error(format!(
                        "steps \"{}\" and \"{}\" both write {}",
                        dag.node(*j).id,
                        n.id,
                        path.display()
                    ))
                    .with_code("files")
                    .with_step(&n.id)
                    .at(n.location.clone())
                    .with_help("give each export its own path"),
                );
            } else {
                writers.push((path, i));
            }
        }
    }
    for n in dag.nodes() {
        let Some(p) = step(&n.payload) else { continue };
        for path in p.step.info().files_read() {
            if let Some((_, j)) = writers.iter().find(|(w, _)| *w == path)
                && dag.node(*j).id != n.id
            {
                diags.push(
                    Diagnostic::error(format!(
                        "step \"{}\" reads {}, which step \"{}\" of the same run writes",
                        n.id,
                        path.display(),
                        dag.node(*j).id
                    ))
                    .with_code("files")
                    .with_step(&n.id)
                    .at(n.location.clone())
                    .with_help("read the data from the step that makes it (`after`), or write elsewhere"),
                );
            }
        }
    }
}

/// Refuses steps that need more than the limits allow, before anything runs.
fn check_resources<P>(
    dag: &Dag<P>,
    step: impl Fn(&P) -> Option<&PipelineStep>,
    limits: &ResourceLimits,
    diags: &mut Diagnostics,
) {
    // The file's values are checked where they are written; these come from the command
    // line (`--max-concurrent`) or from Rust, and each is a number of threads to start.
    match limits.max_concurrent {
        Some(n) if !(1..=MAX_CONCURRENT).contains(&n) => diags.push(
            Diagnostic::error(format!("`max_concurrent` must be from 1 to {MAX_CONCURRENT}, not {n}"))
                .with_code("resources")
                .with_help("it is the number of worker threads the run starts"),
        ),
        _ => {}
    }
    if limits.gpus > MAX_GPUS {
        diags.push(
            Diagnostic::error(format!("`gpus` must be from 0 to {MAX_GPUS}, not {}", limits.gpus))
                .with_code("resources"),
        );
    }
    for n in dag.nodes() {
        let Some(p) = step(&n.payload) else { continue };
        let too_many = |what: &str, k: u64| {
            Diagnostic::error(format!("step \"{}\" asks for {k} {what}; at most {MAX_CONCURRENT} are allowed", n.id))
                .with_code("resources")
                .at(n.location.clone())
        };
        if p.resources.threads as usize > MAX_CONCURRENT {
            diags.push(too_many("threads", u64::from(p.resources.threads)));
        }
        if let Some(io) = p.resources.io_concurrency
            && io as usize > MAX_CONCURRENT
        {
            diags.push(too_many("I/O threads (`io_concurrency`)", u64::from(io)));
        }
        if p.resources.memory > limits.max_memory {
            diags.push(
                Diagnostic::error(format!(
                    "insufficient resources: step \"{}\" needs {}, limit is {}",
                    n.id,
                    format_bytes(p.resources.memory),
                    format_bytes(limits.max_memory)
                ))
                .with_code("resources")
                .at(n.location.clone())
                .with_help("raise `[resources] max_memory`, or lower the step's `resources.memory`"),
            );
        }
        if p.resources.gpus > 0 && !limits.gpu_enabled {
            diags.push(
                Diagnostic::error(format!(
                    "insufficient resources: step \"{}\" needs a GPU, and `gpu_enabled` is false",
                    n.id
                ))
                .with_code("resources")
                .at(n.location.clone())
                .with_help("set `[resources] gpu_enabled = true` on a machine with a GPU"),
            );
        } else if limits.gpu_enabled && p.resources.gpus > limits.gpus {
            diags.push(
                Diagnostic::error(format!(
                    "insufficient resources: step \"{}\" needs {} GPUs, there are {}",
                    n.id, p.resources.gpus, limits.gpus
                ))
                .with_code("resources")
                .at(n.location.clone()),
            );
        }
    }
}

/// Builds a pipeline from steps made in Rust, as the original write-up's
/// `build_pipeline([...])` does: steps added without dependencies form a chain.
#[derive(Debug, Default)]
pub struct PipelineBuilder {
    name: String,
    seed: u64,
    max_bad_records: BadRecordLimit,
    resources: ResourceLimits,
    retry: RetryPolicy,
    steps: Vec<(String, Option<Vec<String>>, Step)>,
}

impl PipelineBuilder {
    /// A builder for a pipeline called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        PipelineBuilder { name: name.into(), ..Default::default() }
    }

    /// Adds a step after the one added before it (a source starts a new root).
    pub fn step(mut self, id: impl Into<String>, step: Step) -> Self {
        self.steps.push((id.into(), None, step));
        self
    }

    /// Adds a step that takes the output of `after`, in that input order.
    pub fn step_after<S: Into<String>>(
        mut self,
        id: impl Into<String>,
        after: impl IntoIterator<Item = S>,
        step: Step,
    ) -> Self {
        self.steps.push((id.into(), Some(after.into_iter().map(Into::into).collect()), step));
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets how many bad records the run's steps together may set aside before it fails
    /// (`[pipeline] max_bad_records`; by default half of what the sources read).
    pub fn max_bad_records(mut self, limit: BadRecordLimit) -> Self {
        self.max_bad_records = limit;
        self
    }

    /// Sets the resource limits.
    pub fn resources(mut self, resources: ResourceLimits) -> Self {
        self.resources = resources;
        self
    }

    /// Sets the default retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Checks the DAG and builds the pipeline.
    pub fn build(self) -> Result<Pipeline, Diagnostics> {
        let retry = self.retry;
        let nodes = self
            .steps
            .into_iter()
            .map(|(id, after, step)| {
                let info = step.info();
                let own = info.policy();
                let payload = PipelineStep {
                    kind: info.kind().to_owned(),
                    version: info.version(),
                    config: info.config(),
                    resources: info.resources(),
                    retry: own.retry.unwrap_or(retry),
                    timeout: own.timeout,
                    on_bad_record: own.on_bad_record.unwrap_or_default(),
                    max_bad_records: BadRecordLimit::default(),
                    cache: CacheMode::Auto,
                    exclusions: None,
                    step,
                };
                let cost = payload.step.info().estimated_cost();
                let shape = payload.step.shape();
                NodeSpec {
                    id,
                    shape,
                    after: after.map(|a| a.into_iter().map(Dep::new).collect()),
                    cost,
                    location: None,
                    payload,
                }
            })
            .collect();
        let dag = Dag::build(nodes)?;
        let mut diags = Diagnostics::default();
        check_resources(&dag, |p| Some(p), &self.resources, &mut diags);
        check_files(&dag, |p| Some(p), &mut diags);
        if diags.has_errors() {
            return Err(diags);
        }
        let warnings = dag.warnings().clone();
        Ok(Pipeline {
            name: self.name,
            seed: self.seed,
            max_bad_records: self.max_bad_records,
            resources: self.resources,
            alerts: Vec::new(),
            llm: BTreeMap::new(),
            cache_dir: None,
            base_dir: std::path::PathBuf::new(),
            key_config: CanonicalConfig::default(),
            shard: None,
            exchange: BTreeMap::new(),
            dag,
            warnings,
        })
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pipeline \"{}\": {} steps, {} edges", self.name, self.dag.len(), self.dag.edges().count())
    }
}

/// Refuses, in a run that is one shard of several, the steps that need the whole dataset
/// (see [`StepInfo::runs_per_shard`]): each shard would see only its share of it.
fn check_shardable(dag: &Dag<Option<PipelineStep>>, shard: crate::Shard, diags: &mut Diagnostics) {
    for n in dag.nodes() {
        let Some(p) = &n.payload else { continue };
        let info = p.step.info();
        let whole = matches!(p.step.shape(), Shape::StatefulTransform | Shape::Merge)
            && !info.runs_per_shard()
            && !info.shards_by_exchange();
        if whole {
            diags.push(
                Diagnostic::error(format!(
                    "step `{}` ({}) needs the whole dataset, and shard {shard} of the job sees only its share of it",
                    n.id, p.kind
                ))
                .with_code("needs-whole-dataset")
                .with_step(&n.id)
                .at(n.location.clone())
                .with_help("run it without `--shard` (or with a single shard): sharded runs take sources, record-wise steps, `concat`, `dedup`, `near_dedup`, `validate`, `sample`, `split`, `mix`, `compare` and exports"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::error::StepError;
    use crate::policy::Resources;
    use crate::step::{Source, StepContext, StepInfo};

    /// A source that asks for what it is given.
    #[derive(Debug)]
    struct Asks(Resources);

    impl StepInfo for Asks {
        fn kind(&self) -> &str {
            "asks"
        }
        fn config(&self) -> CanonicalConfig {
            CanonicalConfig::default()
        }
        fn resources(&self) -> Resources {
            self.0
        }
    }

    impl Source for Asks {
        fn next_batch(&mut self, _: &mut StepContext) -> Result<Option<Batch>, StepError> {
            Ok(None)
        }
    }

    /// A stateful step of a user's own kind that says nothing of shards.
    #[derive(Debug)]
    struct Whole;

    impl StepInfo for Whole {
        fn kind(&self) -> &str {
            "whole"
        }
        fn config(&self) -> CanonicalConfig {
            CanonicalConfig::default()
        }
    }

    impl crate::step::StatefulTransform for Whole {
        fn process(&mut self, _: &Batch, _: &mut StepContext, _: &mut Vec<Batch>) -> Result<(), StepError> {
            Ok(())
        }
    }

    // Every built-in whole-dataset step runs sharded now (by exchange); a step of a kind of
    // the user's own that needs the whole dataset is still refused in a shard, by name and line.
    #[test]
    fn a_shard_refuses_a_stateful_step_that_cannot_run_sharded_naming_it() {
        let mut registry = Registry::new();
        registry.register(StepKind::new("empty", Shape::Source, "nothing", [""; 0], |_| {
            Some(Step::Source(Box::new(Asks(Resources::default()))))
        }));
        registry.register(StepKind::new("whole", Shape::StatefulTransform, "needs all", [""; 0], |_| {
            Some(Step::StatefulTransform(Box::new(Whole)))
        }));
        let text = "[[step]]\nid = \"src\"\nkind = \"empty\"\n\n[[step]]\nid = \"all\"\nkind = \"whole\"\n";
        let shard = |i, n| BuildOptions { shard: Some(crate::Shard::new(i, n).unwrap()), ..BuildOptions::default() };
        let Err(diags) = Pipeline::from_file_text_with("p.toml", text, &registry, &shard(1, 2)) else {
            panic!("a shard of two took a step that needs the whole dataset");
        };
        let d = diags.0.iter().find(|d| d.code == "needs-whole-dataset").expect("the refusal");
        assert!(d.message.contains("step `all` (whole) needs the whole dataset"), "{}", d.message);
        assert_eq!(d.step.as_deref(), Some("all"));
        assert_eq!(d.location.as_ref().map(|l| l.line), Some(5));
        // One shard of one sees everything, and a run that is no shard too.
        assert!(Pipeline::from_file_text_with("p.toml", text, &registry, &shard(0, 1)).is_ok());
        assert!(Pipeline::from_file_text("p.toml", text, &registry).is_ok());
    }

    fn errors(limits: ResourceLimits, id: &str, asks: Resources) -> Vec<String> {
        let built = PipelineBuilder::new("p").resources(limits).step(id, Step::Source(Box::new(Asks(asks)))).build();
        built.err().map(|d| d.0.iter().map(|d| d.message.clone()).collect()).unwrap_or_default()
    }

    // regression: a pipeline built in Rust took any `max_concurrent`, and the run started
    // that many threads.
    #[test]
    fn pipelines_built_in_rust_are_held_to_the_same_limits() {
        let ok = Resources::default();
        assert!(errors(ResourceLimits::default(), "a", ok).is_empty());
        let wide = ResourceLimits { max_concurrent: Some(1_000_000_000), gpus: 5000, ..ResourceLimits::default() };
        assert_eq!(
            errors(wide, "a", ok),
            ["`max_concurrent` must be from 1 to 1024, not 1000000000", "`gpus` must be from 0 to 1024, not 5000"]
        );
        let greedy = Resources { threads: 5000, io_concurrency: Some(100_000), ..ok };
        assert_eq!(
            errors(ResourceLimits::default(), "a", greedy),
            [
                "step \"a\" asks for 5000 threads; at most 1024 are allowed",
                "step \"a\" asks for 100000 I/O threads (`io_concurrency`); at most 1024 are allowed"
            ]
        );
        let long = "a".repeat(200);
        assert_eq!(
            errors(ResourceLimits::default(), &long, ok),
            [format!("step id `{}…` is 200 characters long: ids are at most 128", "a".repeat(40))]
        );
    }
}
