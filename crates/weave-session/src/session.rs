//! The session: one run, composed from the checks, the cache, the monitoring and the
//! executor, in the order every front end needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weave_cache::{CacheOptions, CachePlan, FileIndex, Pin, Status};
use weave_core::{BuildOptions, Diagnostics, Pipeline, Subscriber};
use weave_exec::{CacheUse, ExecOptions, LogSubscriber, RunError, RunFiles, RunSummary};
use weave_monitor::{AlertManager, MetricsCollector, RunInfo, RunRecorder};

use crate::files::{PipelineFile, cache_dir_for, caller_cache_dir, default_quarantine, runs_dir};
use crate::lineage::{absolute, lineage};

/// The stack of the thread a session runs on: a Linux main thread's (8 MiB).
const MAIN_THREAD_STACK: usize = 8 << 20;

/// How often the metrics file is rewritten while the run goes.
const METRICS_EVERY: Duration = Duration::from_secs(2);

/// Why a session could not start. Nothing was written or removed, except where a
/// variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The pipeline file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pipeline file is not UTF-8 from this line and column on.
    #[error("{}:{line}:{column}: the file is not valid UTF-8 (save it as UTF-8)", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The column, in characters from 1.
        column: usize,
    },
    /// The pipeline file has errors (each a diagnostic, with its file, line and step).
    #[error("the pipeline has {} errors", .0.error_count())]
    Invalid(Diagnostics),
    /// A step to compute again (`refresh`) is not in the pipeline.
    #[error("the pipeline has no step \"{step}\"{}; its steps: {}", hint.as_ref().map_or_else(String::new, |s| format!(" (did you mean \"{s}\"?)")), steps.join(", "))]
    NoSuchStep {
        /// The step named.
        step: String,
        /// The nearest step id.
        hint: Option<String>,
        /// The pipeline's steps.
        steps: Vec<String>,
    },
    /// The run's files would clash: an output over an input, two outputs on one file, a
    /// file that is not a regular one, or one the cache keeps (each problem a line).
    #[error("{}", problems.join("\n"))]
    Files {
        /// Each problem, one sentence.
        problems: Vec<String>,
    },
    /// A sharded run cannot name the folder where the shards exchange a whole-dataset
    /// step's keys: the step's key over the whole input cannot be computed.
    #[error(
        "step \"{step}\" needs the keys of every shard, exchanged in a folder named by its key, which cannot be computed: {why}"
    )]
    Exchange {
        /// The step.
        step: String,
        /// Why its key cannot be computed.
        why: String,
    },
    /// The quarantine file of an earlier run cannot be removed.
    #[error("cannot remove the old quarantine file {}: {source}", path.display())]
    OldQuarantine {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics file's folder cannot be made (the old quarantine file was removed).
    #[error("{label} {}: cannot make its folder {}: {source}", path.display(), dir.display())]
    MetricsFolder {
        /// How the caller names the option.
        label: String,
        /// The metrics file.
        path: PathBuf,
        /// Its folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cache cannot be opened (the old quarantine file was removed).
    #[error("cannot open the cache in {}: {source}", dir.display())]
    Cache {
        /// The cache folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: weave_cache::Error,
    },
    /// Another error of the executor's checks.
    #[error(transparent)]
    Exec(weave_exec::Error),
}

/// Why a run did not succeed: it could not start, or it failed or was stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunFailure {
    /// The run could not start (nothing ran).
    #[error(transparent)]
    Start(SessionError),
    /// The run failed or was stopped; the error comes with what the run did.
    #[error(transparent)]
    Run(Box<RunError>),
}

/// How the caller names the run's own files in messages (a command line names its flags).
#[derive(Debug, Clone)]
pub struct Labels {
    /// The quarantine file ("the quarantine file", or "--quarantine").
    pub quarantine: String,
    /// The metrics file ("the metrics file", or "--metrics-file").
    pub metrics_file: String,
}

impl Default for Labels {
    fn default() -> Self {
        Labels { quarantine: "the quarantine file".to_owned(), metrics_file: "the metrics file".to_owned() }
    }
}

/// What the caller says of a run, over what the pipeline file says.
///
/// The places a run keeps its files default to folders beside the pipeline file; a
/// pipeline built in Rust has no file, so it gets each of them (cache, quarantine file,
/// run record) only when asked.
#[derive(Clone)]
pub struct RunOptions {
    /// The memory budget, over `[resources] max_memory`.
    pub max_memory: Option<u64>,
    /// The worker threads, over `[resources] max_concurrent`.
    pub max_concurrent: Option<usize>,
    /// The cache folder, over `$WEAVE_CACHE_DIR`, `[cache] dir` and `.weave/cache` beside
    /// the pipeline file.
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write the cache: compute every step.
    pub no_cache: bool,
    /// Compute these steps again, and every step after them, even if cached.
    pub refresh: Vec<String>,
    /// Where records set aside by `on_bad_record = "skip"` go (default:
    /// `.weave/quarantine.jsonl` beside the pipeline file).
    pub quarantine: Option<PathBuf>,
    /// Where the run's metrics (Prometheus text) are written every few seconds and at the
    /// end, atomically.
    pub metrics_file: Option<PathBuf>,
    /// The folder of run records (default: `.weave/runs` beside the pipeline file).
    pub runs_dir: Option<PathBuf>,
    /// The caller's own subscribers to the run's events (progress bars, a channel).
    pub subscribers: Vec<Arc<dyn Subscriber>>,
    /// Whether run events go to the log.
    pub log_events: bool,
    /// The flag that stops the run; [`RunHandle::cancel`] sets it, and a caller may set it
    /// from elsewhere (a signal handler), even before the run starts.
    pub cancel: Arc<AtomicBool>,
    /// Called when the run failed or was stopped, before its end is recorded: the caller's
    /// chance to let work in flight settle (LLM requests already paid for, answered and
    /// kept in the cache, as `weave run` does).
    pub on_failure: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Batches an edge between steps holds (see [`ExecOptions::channel_capacity`]).
    pub channel_capacity: usize,
    /// How long a run may go with nothing moving before it is stopped as stalled.
    pub stall_timeout: Duration,
    /// How messages name the run's own files.
    pub labels: Labels,
    /// The run is this shard of a job (`--shard I/N`, or the task's environment): its
    /// sources read their share of the input, and its outputs, exclusion, quarantine and
    /// metrics files are named for the shard (see [`weave_core::Shard`]).
    pub shard: Option<weave_core::Shard>,
}

impl Default for RunOptions {
    fn default() -> Self {
        let exec = ExecOptions::default();
        RunOptions {
            max_memory: None,
            max_concurrent: None,
            cache_dir: None,
            no_cache: false,
            refresh: Vec::new(),
            quarantine: None,
            metrics_file: None,
            runs_dir: None,
            subscribers: Vec::new(),
            log_events: true,
            cancel: exec.cancel,
            on_failure: None,
            channel_capacity: exec.channel_capacity,
            stall_timeout: exec.stall_timeout,
            labels: Labels::default(),
            shard: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("max_memory", &self.max_memory)
            .field("max_concurrent", &self.max_concurrent)
            .field("cache_dir", &self.cache_dir)
            .field("no_cache", &self.no_cache)
            .field("refresh", &self.refresh)
            .field("quarantine", &self.quarantine)
            .field("metrics_file", &self.metrics_file)
            .field("runs_dir", &self.runs_dir)
            .field("shard", &self.shard)
            .field("subscribers", &self.subscribers.len())
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    /// The options that bear on building the pipeline: the limits its steps are checked
    /// against, and the cache folder steps with a cache of their own use (the caller's
    /// choice or `$WEAVE_CACHE_DIR`, over the file's `[cache] dir`).
    pub fn build_options(&self) -> BuildOptions {
        BuildOptions {
            cache_dir: caller_cache_dir(self.cache_dir.as_deref()),
            no_cache: self.no_cache,
            max_memory: self.max_memory,
            max_concurrent: self.max_concurrent,
            shard: self.shard,
            dry_run: false,
            ..BuildOptions::default()
        }
    }
}

/// A checked pipeline with its run options, ready to start.
pub struct Session {
    pipeline: Pipeline,
    file: Option<PipelineFile>,
    options: RunOptions,
    cache_dir: Option<PathBuf>,
    quarantine: Option<PathBuf>,
    runs_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("pipeline", &self.pipeline.name).field("options", &self.options).finish()
    }
}

impl Session {
    /// A session for `pipeline`, read from `file` when it was (built with
    /// [`RunOptions::build_options`] of these `options`). Checks that every step to
    /// refresh is in the pipeline. The limits given in `options` are the pipeline's.
    pub fn new(
        mut pipeline: Pipeline,
        file: Option<PipelineFile>,
        options: RunOptions,
    ) -> Result<Session, SessionError> {
        let ids: Vec<&str> = pipeline.dag().nodes().iter().map(|n| n.id.as_str()).collect();
        for r in &options.refresh {
            if !ids.contains(&r.as_str()) {
                return Err(SessionError::NoSuchStep {
                    step: r.clone(),
                    hint: weave_core::did_you_mean(r, ids.iter().copied()).map(str::to_owned),
                    steps: ids.iter().map(|s| (*s).to_owned()).collect(),
                });
            }
        }
        // A pipeline built in Rust takes the limits here; one from a file took them when
        // it was built, and checked its steps against them.
        if let Some(m) = options.max_memory {
            pipeline.resources.max_memory = m;
        }
        if let Some(n) = options.max_concurrent {
            pipeline.resources.max_concurrent = Some(n);
        }
        let path = file.as_ref().map(|f| f.path.clone());
        let cache_dir = match (&path, &options.cache_dir) {
            (Some(p), flag) => Some(cache_dir_for(p, pipeline.cache_dir.as_deref(), flag.as_deref())),
            (None, Some(dir)) => Some(dir.clone()),
            (None, None) => None,
        };
        // A shard's own files sit beside the other shards' (`-part-IIIII-of-NNNNN`).
        let shard = pipeline.shard;
        let quarantine = options
            .quarantine
            .clone()
            .or_else(|| path.as_deref().map(default_quarantine))
            .map(|q| weave_core::Shard::apply_path(shard, &q));
        let mut options = options;
        options.metrics_file = options.metrics_file.map(|m| weave_core::Shard::apply_path(shard, &m));
        let runs = options.runs_dir.clone().or_else(|| path.as_deref().map(runs_dir));
        Ok(Session { pipeline, file, options, cache_dir, quarantine, runs_dir: runs })
    }

    /// Starts the run and waits for it: [`Session::start`], then [`RunHandle::wait`].
    pub fn run(self) -> Result<RunSummary, RunFailure> {
        self.start().map_err(RunFailure::Start)?.wait().result.map_err(RunFailure::Run)
    }

    /// The run's options.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// The pipeline to run.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The cache the run uses (`None`: none; a run with `no_cache` still names the folder,
    /// whose files it must not write over).
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// Where records set aside go, if anywhere.
    pub fn quarantine(&self) -> Option<&Path> {
        self.quarantine.as_deref()
    }

    /// The files the run reads and writes, as the run checks them before it touches
    /// anything (and `weave validate` does): the pipeline's own, the pipeline file, the
    /// quarantine and metrics files, and the cache's files, which no output may replace.
    pub fn run_files(&self) -> RunFiles {
        let mut files = RunFiles::of_pipeline(&self.pipeline);
        if let Some(f) = &self.file {
            files = files.read("the pipeline file", &f.path);
        }
        if let Some(q) = &self.quarantine {
            let label =
                if self.options.quarantine.is_some() { &self.options.labels.quarantine } else { "the quarantine file" };
            files = files.replaced(label, q);
        }
        if let Some(dir) = &self.cache_dir {
            for own in weave_cache::own_paths(dir) {
                files = files.kept_by_weave("the cache", own);
            }
        }
        if let Some(m) = &self.options.metrics_file {
            files = files.replaced(&self.options.labels.metrics_file, m);
        }
        files
    }

    /// Checks the run's files, clears the old quarantine file, plans the run against the
    /// cache, starts the run record and starts the run on a thread of its own.
    pub fn start(self) -> Result<RunHandle, SessionError> {
        // Before anything is written or removed: no output may be an input, the pipeline
        // file or another output, nor anything but a regular file, nor one of the cache's.
        match self.run_files().check() {
            Ok(()) => {}
            Err(weave_exec::Error::Files { problems }) => return Err(SessionError::Files { problems }),
            Err(e) => return Err(SessionError::Exec(e)),
        }
        let Session { pipeline, file, options, cache_dir, quarantine, runs_dir } = self;
        // A quarantine file from an earlier run would read as this run's.
        if let Some(q) = &quarantine {
            match std::fs::remove_file(q) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SessionError::OldQuarantine { path: q.clone(), source: e }),
            }
        }
        // Readied before the run, so that a run never commits its outputs and then fails on
        // its metrics: its own folder is made (a folder in its place was refused above).
        if let Some(path) = &options.metrics_file
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| SessionError::MetricsFolder {
                label: options.labels.metrics_file.clone(),
                path: path.clone(),
                dir: dir.to_path_buf(),
                source: e,
            })?;
        }
        let shard_notes = ShardNotes::start(&pipeline);
        let metrics = Arc::new(MetricsCollector::new());
        let alerts = Arc::new(AlertManager::new(pipeline.alerts.clone()));
        let mut subscribers: Vec<Arc<dyn Subscriber>> = Vec::new();
        if options.log_events {
            subscribers.push(Arc::new(LogSubscriber));
        }
        subscribers.push(metrics.clone());
        subscribers.push(alerts.clone());
        // Lineage: the files each step reads (hashed now, as the run will read them) and
        // writes (hashed once committed).
        let named = |f: &dyn Fn(&weave_core::PipelineStep) -> Vec<PathBuf>| -> Vec<(String, PathBuf)> {
            pipeline
                .dag()
                .nodes()
                .iter()
                .flat_map(|n| f(&n.payload).into_iter().map(move |p| (n.id.clone(), p)))
                .collect()
        };
        let reads = named(&|s| s.step.info().files_read());
        let writes = named(&|s| s.step.info().files_written());
        let cache_options = CacheOptions { disabled: options.no_cache, refresh: options.refresh.clone() };
        let plan = match &cache_dir {
            Some(dir) => Some(cache_plan(&pipeline, dir, &cache_options)?),
            None => None,
        };
        // The run's entries are pinned against `weave cache gc` until it ends.
        let pin = plan.as_ref().and_then(|p| match Pin::new(p) {
            Ok(pin) => Some(pin),
            Err(e) => {
                log::warn!("cannot pin the run's cache entries ({e}); a concurrent `weave cache gc` may evict them");
                None
            }
        });
        // Without a cache, the lineage's hashes are not kept for the next run.
        let index = plan.as_ref().map_or_else(|| Arc::new(FileIndex::unsaved()), |p| Arc::clone(p.files()));
        let base_dir = pipeline.base_dir.clone();
        let inputs = lineage(&index, &base_dir, &reads);
        subscribers.extend(options.subscribers.iter().cloned());
        // The record is kept beside the pipeline file; a run goes on without one if it
        // cannot be written.
        let record = runs_dir.as_ref().and_then(|dir| {
            let info = run_info(&pipeline, file.as_ref());
            match RunRecorder::start(dir, info, Arc::clone(&metrics), Some(Arc::clone(&alerts))) {
                Ok(r) => {
                    let r = Arc::new(r);
                    subscribers.push(r.clone());
                    Some(r)
                }
                Err(e) => {
                    log::warn!("cannot start the run record in {} ({e}); running without one", dir.display());
                    None
                }
            }
        });
        let exec = ExecOptions {
            subscribers,
            cancel: Arc::clone(&options.cancel),
            quarantine: quarantine.clone(),
            caches: plan.as_ref().map(CachePlan::entries).unwrap_or_default(),
            channel_capacity: options.channel_capacity,
            stall_timeout: options.stall_timeout,
        };
        let writer = options.metrics_file.clone().map(|path| MetricsWriter::start(path, Arc::clone(&metrics)));
        let run = Finish {
            plan,
            pin,
            index,
            base_dir,
            inputs,
            writes,
            quarantine,
            cache_dir,
            options: options.clone(),
            alerts,
            record: record.clone(),
            metrics: Arc::clone(&metrics),
            writer,
            shard_notes,
        };
        let thread = std::thread::Builder::new()
            .name("weave-session".to_owned())
            // What the run does on the calling thread (a sink's commit, making and removing
            // an output's folders, which the standard library does recursively) had a main
            // thread's stack when the CLI ran it there: 3,000 nested folders overflow the
            // 2 MiB of a spawned thread.
            .stack_size(MAIN_THREAD_STACK)
            .spawn(move || {
                let outcome = weave_exec::run(pipeline, exec);
                run.finish(outcome)
            })
            .map_err(|e| SessionError::Exec(weave_exec::Error::Thread(e)))?;
        Ok(RunHandle { thread, cancel: options.cancel, metrics, record_dir: record.map(|r| r.dir().to_path_buf()) })
    }
}

/// What the record says of the run besides its events: the DAG, the pipeline file by its
/// real path, and the hash of its text (of the steps' kinds and keys, for a pipeline built
/// in Rust).
fn run_info(pipeline: &Pipeline, file: Option<&PipelineFile>) -> RunInfo {
    let dag = pipeline.dag();
    let steps: Vec<String> = dag.topological_order().iter().map(|&i| dag.node(i).id.clone()).collect();
    let dag_json = serde_json::json!({
        "nodes": dag.nodes().iter().enumerate().map(|(i, n)| serde_json::json!({
            "id": n.id, "kind": n.payload.kind, "shape": n.shape, "level": dag.level_of(i),
        })).collect::<Vec<_>>(),
        "edges": dag.edges().map(|(a, b)| [dag.node(a).id.clone(), dag.node(b).id.clone()]).collect::<Vec<_>>(),
    });
    let (path, config_hash) = match file {
        Some(f) => (absolute(&f.path), f.config_hash()),
        None => {
            let mut k = weave_cache::KeyBuilder::new("weave-session/pipeline");
            for n in dag.nodes() {
                k = k
                    .part("id", n.id.as_bytes())
                    .part("kind", n.payload.kind.as_bytes())
                    .part("config", n.payload.config.as_bytes());
            }
            (PathBuf::new(), k.finish().to_hex())
        }
    };
    RunInfo {
        steps,
        dag: dag_json,
        pipeline: pipeline.name.clone(),
        file: path,
        config_hash,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        shard: pipeline.shard,
    }
}

/// The plan of `pipeline` against the cache in `dir` (what `weave plan` shows, and what a
/// run uses).
pub fn cache_plan(pipeline: &Pipeline, dir: &Path, options: &CacheOptions) -> Result<CachePlan, SessionError> {
    CachePlan::open(pipeline, dir, options).map_err(|e| SessionError::Cache { dir: dir.to_path_buf(), source: e })
}

/// Where the shards of a job of `count` shards exchange the keys of the pipeline's
/// whole-dataset steps (those that shard by exchange, `StepInfo::shards_by_exchange`), by
/// step id: `exchange/<key>-of-<count>` in the cache `dir`, `<key>` being the step's key in
/// `whole`, the pipeline built without a shard. That key covers the job's whole input and
/// every setting up to the step, so every shard names the same folder, and a folder holds
/// keys of this data and these settings only. (Every shard hashes the whole input for it;
/// the cache's file index keeps the hashes, so a shared cache hashes each file once.)
pub fn exchange_dirs(
    whole: &Pipeline,
    dir: &Path,
    count: u32,
) -> Result<std::collections::BTreeMap<String, PathBuf>, SessionError> {
    let mut out = std::collections::BTreeMap::new();
    let wanted: Vec<&str> = whole
        .dag()
        .nodes()
        .iter()
        .filter(|n| n.payload.step.info().shards_by_exchange())
        .map(|n| n.id.as_str())
        .collect();
    if wanted.is_empty() {
        return Ok(out);
    }
    let plan = cache_plan(whole, dir, &CacheOptions::default())?;
    // The run's own plan, made next, finds the input's hashes here rather than reading
    // the input again.
    if let Err(e) = plan.files().save() {
        log::warn!("cannot keep the input's hashes in {}: {e}", dir.display());
    }
    for id in wanted {
        let step = plan.step(id);
        match step.and_then(|s| s.key) {
            Some(key) => {
                out.insert(id.to_owned(), dir.join("exchange").join(format!("{}-of-{count}", key.to_hex())));
            }
            None => {
                let why = step.map(|s| s.reasons.join("; ")).unwrap_or_default();
                return Err(SessionError::Exchange { step: id.to_owned(), why });
            }
        }
    }
    Ok(out)
}

/// What a run will do with each step given `plan`, in the DAG's node order.
pub fn planned_roles(pipeline: &Pipeline, plan: &CachePlan) -> Vec<CacheUse> {
    weave_exec::cache_roles(pipeline.dag(), &|id| plan.step(id).is_some_and(|s| s.stores && s.status == Status::Cached))
}

/// Rewrites the metrics file while the run goes, until it is stopped.
struct MetricsWriter {
    path: PathBuf,
    metrics: Arc<MetricsCollector>,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl MetricsWriter {
    fn start(path: PathBuf, metrics: Arc<MetricsCollector>) -> MetricsWriter {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (p, m) = (path.clone(), Arc::clone(&metrics));
        let thread = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(METRICS_EVERY) {
                if let Err(e) = weave_fs::write_atomically(&p, m.prometheus().as_bytes()) {
                    log::warn!("cannot write the metrics file {}: {e}", p.display());
                }
            }
        });
        MetricsWriter { path, metrics, stop, thread }
    }

    /// Stops the thread and writes the file once more, with the run's final figures.
    fn finish(self) -> Option<String> {
        drop(self.stop);
        let _ = self.thread.join();
        weave_fs::write_atomically(&self.path, self.metrics.prometheus().as_bytes())
            .err()
            .map(|e| format!("cannot write the metrics file {}: {e}", self.path.display()))
    }
}

/// What is done after the executor returns, on the session's thread.
struct Finish {
    plan: Option<CachePlan>,
    pin: Option<Pin>,
    index: Arc<FileIndex>,
    base_dir: PathBuf,
    inputs: Vec<serde_json::Value>,
    writes: Vec<(String, PathBuf)>,
    quarantine: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    options: RunOptions,
    alerts: Arc<AlertManager>,
    record: Option<Arc<RunRecorder>>,
    metrics: Arc<MetricsCollector>,
    writer: Option<MetricsWriter>,
    /// In a shard of a job: what it tells the shards waiting for its keys.
    shard_notes: ShardNotes,
}

/// What a shard of a job tells the other shards, in each folder where they exchange keys:
/// that it runs (`Shard::running_note`: its process, with a lease it renews), and, if its
/// run fails, that it failed and why (`Shard::failure_note`). A shard waiting for this
/// one's keys stops at a failure note, or at a running note whose process is gone (a shard
/// killed outright), rather than wait for keys that will not come.
struct ShardNotes {
    /// Per exchange folder: the running note and the failure note.
    notes: Vec<(PathBuf, PathBuf)>,
    _leases: Vec<weave_fs::LeaseGuard>,
}

impl ShardNotes {
    /// Takes back what an earlier run of this shard said, and says that it runs.
    fn start(pipeline: &Pipeline) -> ShardNotes {
        let notes: Vec<(PathBuf, PathBuf)> = match pipeline.shard {
            // The folders of the steps this run has (a staged run has some of them).
            Some(shard) if shard.count() > 1 => pipeline
                .exchange
                .iter()
                .filter(|(step, _)| pipeline.dag().nodes().iter().any(|n| &n.id == *step))
                .map(|(_, dir)| (shard.running_note(dir), shard.failure_note(dir)))
                .collect(),
            _ => Vec::new(),
        };
        let mut leases = Vec::new();
        for (running, failed) in &notes {
            if let Err(e) = std::fs::remove_file(failed)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!(
                    "cannot remove {} ({e}): the other shards may stop, reading that this one failed",
                    failed.display()
                );
            }
            let written =
                serde_json::to_vec(&weave_fs::Owner::current()).map_err(std::io::Error::other).and_then(|owner| {
                    running.parent().map_or(Ok(()), std::fs::create_dir_all)?;
                    weave_fs::write_atomically(running, &owner)
                });
            match written {
                Ok(()) => leases.push(weave_fs::hold_lease(running)),
                Err(e) => log::warn!(
                    "cannot leave a note in {} that this shard runs ({e}): if it is killed, the shards waiting for its keys will wait until it runs again",
                    running.display()
                ),
            }
        }
        ShardNotes { notes, _leases: leases }
    }

    /// The run has ended: the running notes go, and a failure is said.
    fn finish(self, failure: Option<&str>) {
        for (running, failed) in &self.notes {
            if let Some(why) = failure {
                let written = failed
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| weave_fs::write_atomically(failed, why.replace('\n', " ").as_bytes()));
                if let Err(e) = written {
                    log::warn!(
                        "cannot leave a note in {} that this shard failed ({e}): the shards waiting for its keys will wait until it runs again",
                        failed.display()
                    );
                }
            }
            let _ = std::fs::remove_file(running);
        }
    }
}

impl Finish {
    fn finish(self, result: Result<RunSummary, Box<RunError>>) -> RunOutcome {
        // The shards waiting for this one's keys would wait until it runs again: they read
        // its failure and stop, naming its error.
        let failure = result.as_ref().err().map(|f| f.error.to_string());
        self.shard_notes.finish(failure.as_deref());
        let cached = !self.options.no_cache;
        // Bad records that steps taken from the cache set aside when they last ran.
        let mut restored = 0;
        if let (Ok(summary), Some(plan), Some(q), true) = (&result, &self.plan, &self.quarantine, cached) {
            let ran = |id: &str| summary.steps.iter().any(|s| s.id == id && s.cache == CacheUse::Ran);
            match plan.settle_set_aside(q, &ran) {
                Ok(n) => restored = n,
                Err(e) => log::warn!("cannot keep the set-aside records of the cached steps ({e})"),
            }
        }
        if result.is_err()
            && let Some(settle) = &self.options.on_failure
        {
            settle();
        }
        if result.is_ok()
            && cached
            && let Some(plan) = &self.plan
            && let Err(e) = plan.remember()
        {
            let dir = self.cache_dir.as_deref().unwrap_or(Path::new(""));
            log::warn!(
                "cannot record the steps' keys in {} ({e}); `weave plan --explain` will know less",
                dir.display()
            );
        }
        // Alerts are delivered on a thread of their own; each command has its timeout.
        self.alerts.finish();
        if let Some(r) = &self.record {
            let summary = match &result {
                Ok(s) => s,
                Err(f) => {
                    r.set_error(&f.error.to_string());
                    &f.summary
                }
            };
            for st in summary.steps.iter().filter(|s| !s.figures.is_empty()) {
                r.set_figures(&st.id, figures_json(&st.figures));
            }
            let outputs = if result.is_ok() { lineage(&self.index, &self.base_dir, &self.writes) } else { Vec::new() };
            r.set_lineage(self.inputs, outputs);
            if self.plan.is_some()
                && let Err(e) = self.index.save()
            {
                log::debug!("cannot save the file index ({e}); inputs will be hashed again next time");
            }
            if let Err(e) = r.write_report() {
                log::warn!("cannot write the run report in {} ({e})", r.dir().display());
            }
        }
        let fired = self.alerts.fired().len();
        // Told after the run's own outcome, which must never be lost behind it.
        let metrics_error = self.writer.and_then(MetricsWriter::finish);
        drop(self.pin);
        RunOutcome {
            result,
            restored,
            quarantine: self.quarantine,
            record_dir: self.record.map(|r| r.dir().to_path_buf()),
            alerts_fired: fired,
            metrics_error,
            metrics: self.metrics,
        }
    }
}

/// A step's figures as one JSON object, in the order it set them.
fn figures_json(figures: &[(String, weave_core::Value)]) -> serde_json::Value {
    serde_json::Value::Object(
        figures.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default())).collect(),
    )
}

/// A run under way.
#[derive(Debug)]
pub struct RunHandle {
    thread: std::thread::JoinHandle<RunOutcome>,
    cancel: Arc<AtomicBool>,
    metrics: Arc<MetricsCollector>,
    record_dir: Option<PathBuf>,
}

impl RunHandle {
    /// Stops the run cleanly: it commits nothing, and [`wait`](RunHandle::wait) returns
    /// its outcome, `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// The run's metrics, live while it goes.
    pub fn metrics(&self) -> &Arc<MetricsCollector> {
        &self.metrics
    }

    /// The run record's folder, if one was started.
    pub fn record_dir(&self) -> Option<&Path> {
        self.record_dir.as_deref()
    }

    /// Waits for the run to end, and everything after it (the cache's keys, the run
    /// record, the alerts' delivery, the metrics file) to be done.
    pub fn wait(self) -> RunOutcome {
        match self.thread.join() {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// How a run ended, and where its files are.
#[derive(Debug)]
pub struct RunOutcome {
    /// The executor's summary, or the error that stopped the run with the summary so far.
    pub result: Result<RunSummary, Box<RunError>>,
    /// The records set aside by steps taken from the cache, put back in the quarantine file.
    pub restored: u64,
    /// The quarantine file.
    pub quarantine: Option<PathBuf>,
    /// The run record's folder, if one was written.
    pub record_dir: Option<PathBuf>,
    /// How many alerts fired.
    pub alerts_fired: usize,
    /// Why the metrics file could not be written at the end, if it could not.
    pub metrics_error: Option<String>,
    /// The run's metrics.
    pub metrics: Arc<MetricsCollector>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemorySink, MemorySource};
    use weave_core::{Batch, PipelineBuilder, Record};

    fn pipeline(texts: &[&str]) -> (Pipeline, crate::MemorySinkHandle) {
        let records: Vec<Record> = texts.iter().map(|t| Record::new().with("text", *t)).collect();
        let (sink, handle) = MemorySink::new();
        let p = PipelineBuilder::new("mem")
            .step("in", MemorySource::new(vec![Batch::from_records(&records)]).into_step())
            .step("out", sink.into_step())
            .build()
            .expect("a valid pipeline");
        (p, handle)
    }

    #[test]
    fn a_session_keeps_the_record_and_the_metrics_file_it_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let (p, handle) = pipeline(&["a", "b"]);
        let options = RunOptions {
            runs_dir: Some(dir.path().join("runs")),
            metrics_file: Some(dir.path().join("m/metrics.prom")),
            log_events: false,
            ..RunOptions::default()
        };
        let run = Session::new(p, None, options).unwrap().start().unwrap();
        let record = run.record_dir().expect("a record").to_path_buf();
        let outcome = run.wait();
        assert_eq!(outcome.result.expect("the run succeeds").step("out").map(|s| s.records_in), Some(2));
        assert_eq!(handle.take().iter().map(Batch::len).sum::<usize>(), 2);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(record.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["status"], "succeeded");
        assert_eq!(report["pipeline"], "mem");
        let metrics = std::fs::read_to_string(dir.path().join("m/metrics.prom")).unwrap();
        assert!(metrics.contains("weave_step_records_in_total{pipeline=\"mem\",step=\"out\"} 2"), "{metrics}");
        // Without a file, nothing is written beside one: no cache, no quarantine file.
        assert_eq!(outcome.quarantine, None);
        assert!(!dir.path().join(".weave").exists());
    }

    #[test]
    fn clashing_files_are_refused_before_the_old_quarantine_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q.jsonl");
        std::fs::write(&q, "an earlier run's\n").unwrap();
        let (p, _) = pipeline(&["a"]);
        let options = RunOptions {
            quarantine: Some(q.clone()),
            metrics_file: Some(q.clone()),
            log_events: false,
            ..RunOptions::default()
        };
        match Session::new(p, None, options).unwrap().start() {
            Err(SessionError::Files { problems }) => {
                assert!(problems[0].contains("would both write one file"), "{problems:?}")
            }
            other => panic!("refused, not {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&q).unwrap(), "an earlier run's\n");
    }

    #[test]
    fn a_refresh_of_a_step_the_pipeline_lacks_is_refused() {
        let (p, _) = pipeline(&["a"]);
        let options = RunOptions { refresh: vec!["outs".to_owned()], ..RunOptions::default() };
        let err = Session::new(p, None, options).unwrap_err();
        assert_eq!(err.to_string(), "the pipeline has no step \"outs\" (did you mean \"out\"?); its steps: in, out");
    }

    #[test]
    fn a_cancelled_session_commits_nothing() {
        let (p, handle) = pipeline(&["a"]);
        let options = RunOptions { log_events: false, ..RunOptions::default() };
        options.cancel.store(true, Ordering::SeqCst);
        let outcome = Session::new(p, None, options).unwrap().start().unwrap().wait();
        assert!(matches!(outcome.result.map_err(|e| e.error), Err(weave_exec::Error::Cancelled)));
        assert!(handle.take().is_empty());
    }
}
