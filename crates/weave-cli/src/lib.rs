//! The `weave` command: check, plan and draw pipelines.
//!
//! Exit codes: 0 success; 1 the pipeline has errors, or the command failed (the reasons
//! are on stderr); 2 the command line itself is wrong; 130 a run stopped by Ctrl-C
//! (SIGINT), 143 by SIGTERM.
// The CLI is where output goes to the terminal: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use weave::{Diagnostics, Pipeline, format_bytes, format_duration};

mod cache;
mod plan;
mod plan_cost;
mod progress;
mod report;
mod run;
mod slurm;
mod stages;
mod table;

/// Weave: build, run and watch data-generation pipelines.
#[derive(Debug, Parser)]
#[command(name = "weave", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output (-v: debug, -vv: trace). RUST_LOG, when set, wins.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 the pipeline has errors or the command failed, 2 bad command line.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a pipeline file: syntax, keys, step kinds, the DAG. Lists every problem.
    #[command(after_help = EXIT_CODES)]
    Validate {
        /// The pipeline file (TOML).
        file: PathBuf,
    },
    /// Show how a pipeline would run: order, parallel levels, resources, critical path.
    #[command(after_help = EXIT_CODES)]
    Plan {
        /// The pipeline file (TOML).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
        format: PlanFormat,
        /// Say why each step that is not cached must be computed: which part of its key
        /// changed since the last run (an input file, a config field, the step version,
        /// an upstream step), or why it is not kept.
        #[arg(long)]
        explain: bool,
        /// Estimate the LLM requests the run would send and what they would cost, step by
        /// step (a dry run: every step before the LLM steps runs, nothing is sent or
        /// written).
        #[arg(long)]
        cost: bool,
        /// The cache to plan against [default: $WEAVE_CACHE_DIR, the file's `[cache] dir`,
        /// or .weave/cache beside the pipeline file].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Also show how the pipeline runs as N shards: each step's part, and its stages.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(weave::MAX_SHARDS)))]
        shards: Option<u32>,
    },
    /// Draw a pipeline's DAG as Graphviz DOT or Mermaid.
    #[command(after_help = EXIT_CODES)]
    Graph {
        /// The pipeline file (TOML).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run a pipeline: every step, in parallel where the DAG allows; outputs appear only if
    /// the whole run succeeds.
    #[command(after_help = RUN_EXIT_CODES)]
    Run {
        /// The pipeline file (TOML).
        file: PathBuf,
        /// Memory budget for data in flight, over the file's `[resources] max_memory`
        /// ("4GB", "512MiB").
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_memory: Option<u64>,
        /// CPU worker threads, over the file's `[resources] max_concurrent` (1 to 1024).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=weave::MAX_CONCURRENT as u64))]
        max_concurrent: Option<u64>,
        /// Where records set aside by `on_bad_record = "skip"` go
        /// [default: .weave/quarantine.jsonl beside the pipeline file].
        #[arg(long, value_name = "PATH")]
        quarantine: Option<PathBuf>,
        /// Write the run's metrics (Prometheus text) to this file every few seconds while
        /// the run goes, and once more at its end.
        #[arg(long, value_name = "PATH")]
        metrics_file: Option<PathBuf>,
        /// Neither read nor write the cache: compute every step.
        #[arg(long)]
        no_cache: bool,
        /// Compute this step again, and every step after it, even if cached (repeatable).
        #[arg(long, value_name = "STEP")]
        refresh: Vec<String>,
        /// The cache [default: $WEAVE_CACHE_DIR, the file's `[cache] dir`, or .weave/cache
        /// beside the pipeline file].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Run shard I of N (from 0): the sources read their share of the input, and every
        /// file written is named for the shard (`-part-IIIII-of-NNNNN`, or `{shard}` in a
        /// path) [default: $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT, or
        /// $JOB_COMPLETION_INDEX of $WEAVE_SHARD_COUNT].
        #[arg(long, value_name = "I/N")]
        shard: Option<weave::Shard>,
        /// The folder of the job this shard belongs to (`weave slurm submit` makes it): the
        /// run leaves its completion marker there when it succeeds.
        #[arg(long, value_name = "DIR")]
        job_dir: Option<PathBuf>,
        /// Run only stage K (from 1) of the shard, as `weave slurm submit` does with one
        /// array job per stage: a stage before the last runs what the next stage's
        /// whole-dataset steps need and publishes their keys; the last runs the rest
        /// (`weave plan FILE --shards N` shows the stages). Without it, a shard runs every
        /// stage, waiting where it needs the earlier shards' keys.
        #[arg(long, value_name = "K")]
        stage: Option<usize>,
    },
    /// Run a pipeline's shards as a Slurm array job, and follow it.
    Slurm {
        #[command(subcommand)]
        action: SlurmAction,
    },
    /// Look after the cache: its size, its entries, eviction.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// The cache [default: $WEAVE_CACHE_DIR, or .weave/cache].
        #[arg(long, global = true, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// List the step kinds a pipeline file can use, with their keys.
    Kinds,
    /// List the runs recorded in a folder (oldest first).
    Runs {
        /// The folder of run records (`.weave/runs` beside the pipeline file).
        #[arg(long, default_value = ".weave/runs")]
        dir: PathBuf,
    },
    /// Print a run's report: status, per-step metrics, stats, alerts.
    Report {
        /// The run's id, or a unique start of it [default: the latest run]; or a Slurm job's
        /// folder, whose shards' records are merged into one report.
        run: Option<String>,
        /// The folder of run records (`.weave/runs` beside the pipeline file).
        #[arg(long, default_value = ".weave/runs")]
        dir: PathBuf,
        /// Output format (html: one self-contained page with the DAG and a chart per step).
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
    },
}

#[derive(Debug, Subcommand)]
enum SlurmAction {
    /// Submit an array job of N tasks, task I running `weave run FILE --shard I/N`; the job's
    /// folder (.weave/jobs/<id> beside the file) keeps its sbatch scripts, logs and the
    /// shards' completion markers.
    Submit {
        /// The pipeline file (TOML).
        file: PathBuf,
        /// How many shards (array tasks).
        #[arg(long, value_name = "N")]
        tasks: u32,
        /// The partition (`sbatch --partition`).
        #[arg(long)]
        partition: Option<String>,
        /// Each task's time limit (`sbatch --time`, such as 2:00:00).
        #[arg(long)]
        time: Option<String>,
        /// Each task's memory (`sbatch --mem`, such as 8G).
        #[arg(long)]
        mem: Option<String>,
        /// Each task's CPUs (`sbatch --cpus-per-task`; also the run's `--max-concurrent`).
        #[arg(long, value_name = "C")]
        cpus: Option<u32>,
        /// The cache every task uses: a folder every node sees [default: the pipeline's].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Each shard's state: done (with its run), queued or running, or not done.
    Status {
        /// The job's folder (or its id under .weave/jobs).
        job: String,
        /// Wait until no shard is queued or running; fail if any did not finish.
        #[arg(long)]
        wait: bool,
    },
    /// Submit again the shards that neither finished nor are queued (failed, cancelled).
    Resume {
        /// The job's folder (or its id under .weave/jobs).
        job: String,
    },
}

#[derive(Debug, Subcommand)]
enum CacheAction {
    /// How many entries and bytes the cache holds.
    Stats,
    /// Every entry: key, size, last use (most recent first).
    Ls,
    /// Evict least recently used entries down to a size; entries that a running run
    /// holds are never evicted.
    Gc {
        /// The size to get down to ("10GB", "500MiB").
        #[arg(long, value_name = "SIZE", value_parser = weave::parse_bytes)]
        max_size: u64,
    },
    /// Remove every entry (except those a running run holds).
    Clear,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    /// A table for people.
    Table,
    /// JSON for tools.
    Json,
    /// A self-contained HTML page.
    Html,
}

const RUN_EXIT_CODES: &str = "Exit codes: 0 success, 1 the pipeline has errors or the run failed, 2 bad command line, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).";

fn parse_size(s: &str) -> Result<u64, String> {
    match weave::parse_bytes(s)? {
        0 => Err("the memory budget must be more than zero".to_owned()),
        n => Ok(n),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlanFormat {
    /// A table for people.
    Table,
    /// JSON for tools.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
}

/// Why a command failed; the message has been printed or is in the error.
#[derive(Debug)]
enum Failure {
    /// The pipeline has errors, or the run failed (already printed).
    Invalid,
    /// The run was stopped by a signal (already printed); the exit code says which:
    /// 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
    Interrupted(u8),
    /// Something else, to print.
    Other(String),
}

/// Runs the `weave` command with `args` (the first one is the program's name), as the
/// binary does and the Python package's `weave` command does, and returns its exit code.
pub fn run_command<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // Help and version are "errors" that print to stdout and exit 0.
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    init_logging(cli.verbose, cli.quiet);
    match run(&cli) {
        Ok(()) => 0,
        Err(Failure::Invalid) => 1,
        Err(Failure::Interrupted(code)) => code,
        Err(Failure::Other(msg)) => {
            eprintln!("error: {msg}");
            1
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // A process that has a logger already (one that ran the command before) keeps it.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .try_init();
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Run {
            file,
            max_memory,
            max_concurrent,
            quarantine,
            metrics_file,
            no_cache,
            refresh,
            cache_dir,
            shard,
            job_dir,
            stage,
        } => {
            let shard = match shard {
                Some(s) => Some(*s),
                None => weave::Shard::from_env(|k| std::env::var(k).ok()).map_err(|e| Failure::Other(e.to_string()))?,
            };
            let options = weave::RunOptions {
                shard,
                max_memory: *max_memory,
                max_concurrent: max_concurrent.map(|n| n as usize),
                cache_dir: cache_dir.clone(),
                no_cache: *no_cache,
                refresh: refresh.clone(),
                quarantine: quarantine.clone(),
                metrics_file: metrics_file.clone(),
                labels: weave::Labels {
                    quarantine: "--quarantine".to_owned(),
                    metrics_file: "--metrics-file".to_owned(),
                },
                ..weave::RunOptions::default()
            };
            let pf = read_file(file)?;
            if let Some(dir) = job_dir {
                slurm::check_job(dir, shard, &pf.config_hash())?;
            }
            let (bo, stages) = sharded_build_options(&pf, &options, *stage)?;
            let p = build(&pf, &bo, cli.quiet)?;
            let hash = pf.config_hash();
            let record = run::run(pf, p, options, cli.quiet)?;
            match job_dir {
                Some(dir) => slurm::mark_done(dir, shard, stage.zip(stages), &hash, record.as_deref()),
                None => Ok(()),
            }
        }
        Command::Slurm { action } => match action {
            SlurmAction::Submit { file, tasks, partition, time, mem, cpus, cache_dir } => {
                let r = slurm::Resources {
                    partition: partition.clone(),
                    time: time.clone(),
                    mem: mem.clone(),
                    cpus: *cpus,
                    cache_dir: cache_dir.clone(),
                };
                slurm::submit(file, *tasks, r, cli.quiet)
            }
            SlurmAction::Status { job, wait } => slurm::status(job, *wait),
            SlurmAction::Resume { job } => slurm::resume(job),
        },
        Command::Validate { file } => {
            let pf = read_file(file)?;
            let p = build(&pf, &weave::BuildOptions::default(), cli.quiet)?;
            let session = weave::Session::new(p, Some(pf), weave::RunOptions::default())
                .map_err(|e| Failure::Other(e.to_string()))?;
            refuse(session.run_files(), "give each output a path of its own")?;
            let p = session.pipeline();
            let warnings = p.warnings().0.len();
            let noun = if warnings == 1 { "warning" } else { "warnings" };
            emit(&format!("ok: {}: {p}, {warnings} {noun}\n", file.display()))
        }
        Command::Plan { file, format, explain, cost, cache_dir, shards } => {
            let p = load(file, cli.quiet)?;
            let dir = weave::cache_dir_for(file, p.cache_dir.as_deref(), cache_dir.as_deref());
            let cplan = weave::cache_plan(&p, &dir, &weave::cache::CacheOptions::default())
                .map_err(|e| Failure::Other(e.to_string()))?;
            let costs = match cost {
                true => Some(plan_cost::estimate(file, &dir)?),
                false => None,
            };
            let text = match format {
                PlanFormat::Table => {
                    let mut t = plan::table(&p, &cplan, *explain);
                    if let Some(n) = shards {
                        t.push_str(&stages::table(&p, *n));
                    }
                    if let Some(c) = &costs {
                        t.push_str(&plan_cost::table(c));
                    }
                    t
                }
                PlanFormat::Json if shards.is_none() && costs.is_none() => plan::json(&p, &cplan),
                PlanFormat::Json => {
                    let mut v = weave::plan_json(&p, &cplan);
                    if let Some(n) = shards {
                        v["sharded"] = stages::json(&p, *n);
                    }
                    if let Some(c) = &costs {
                        v["cost"] = c.to_json();
                    }
                    format!("{v:#}\n")
                }
            };
            emit(&text)
        }
        Command::Graph { file, format, output } => {
            let p = load(file, cli.quiet)?;
            let dag = p.dag();
            let label = |_: usize, n: &weave::Node<weave::PipelineStep>| format!("{}\n{}", n.id, n.payload.kind);
            let text = match format {
                GraphFormat::Dot => dag.to_dot(&p.name, label),
                GraphFormat::Mermaid => dag.to_mermaid(label),
            };
            match output {
                Some(path) => {
                    let files = weave::RunFiles::default().read("the pipeline file", file).written_in_place("-o", path);
                    refuse(files, "nothing was written")?;
                    std::fs::write(path, text)
                        .map_err(|e| Failure::Other(format!("cannot write {}: {e}", path.display())))
                }
                None => emit(&text),
            }
        }
        Command::Runs { dir } => {
            let runs =
                weave::list_runs(dir).map_err(|e| Failure::Other(format!("cannot read {}: {e}", dir.display())))?;
            emit(&report::runs_table(&runs))
        }
        Command::Report { run, dir, format } => {
            // A job's folder (`weave slurm submit` made it): its shards' records, merged.
            let job = run.as_deref().map(Path::new).filter(|p| p.join("job.json").is_file());
            let merged = job.map(slurm::job_report).transpose()?;
            let runs = match merged {
                Some(_) => Vec::new(),
                None => {
                    weave::list_runs(dir).map_err(|e| Failure::Other(format!("cannot read {}: {e}", dir.display())))?
                }
            };
            let entry = match &merged {
                Some(m) => m,
                None => report::pick(&runs, run.as_deref()).map_err(Failure::Other)?,
            };
            match format {
                ReportFormat::Table => emit(&report::report_table(entry)),
                ReportFormat::Json => emit(&format!("{:#}\n", entry.report)),
                ReportFormat::Html => emit(&weave::report_html(entry)),
            }
        }
        Command::Cache { action, dir } => {
            let dir = dir.clone().unwrap_or_else(|| {
                std::env::var_os(weave::CACHE_DIR_ENV)
                    .filter(|d| !d.is_empty())
                    .map_or_else(|| PathBuf::from(".weave/cache"), PathBuf::from)
            });
            if !dir.is_dir() {
                return Err(Failure::Other(format!(
                    "no cache in {} (give the folder with --dir, or set {})",
                    dir.display(),
                    weave::CACHE_DIR_ENV
                )));
            }
            emit(&match action {
                CacheAction::Stats => cache::stats(&dir)?,
                CacheAction::Ls => cache::ls(&dir)?,
                CacheAction::Gc { max_size } => cache::gc(&dir, *max_size)?,
                CacheAction::Clear => cache::gc(&dir, 0)?,
            })
        }
        Command::Kinds => emit(&weave::registry().listing()),
    }
}

/// Prints each problem `files` has (a file written that is read or written twice, or
/// not a regular file), then `note`, and fails: before anything is touched.
pub(crate) fn refuse(files: weave::RunFiles, note: &str) -> Result<(), Failure> {
    match files.check() {
        Ok(()) => Ok(()),
        Err(weave::ExecError::Files { problems }) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!("{note}");
            Err(Failure::Invalid)
        }
        Err(e) => Err(Failure::Other(e.to_string())),
    }
}

/// Reads, parses and checks a pipeline file, printing its warnings (unless quiet) and, on
/// failure, every error.
fn load(file: &Path, quiet: bool) -> Result<Pipeline, Failure> {
    build(&read_file(file)?, &weave::BuildOptions::default(), quiet)
}

/// The pipeline file, or an error naming the file (and where it stops being UTF-8).
/// The build options of a run: in a shard of a job of several, with the folders where the
/// shards exchange the keys of the pipeline's whole-dataset steps, named from the pipeline
/// built whole (see `weave::exchange_dirs`).
/// With `stage` (`--stage K`), the run is that stage of the shard (see
/// [`stages::stage_options`]); the pipeline's number of stages comes back with the options.
pub(crate) fn sharded_build_options(
    pf: &weave::PipelineFile,
    options: &weave::RunOptions,
    stage: Option<usize>,
) -> Result<(weave::BuildOptions, Option<usize>), Failure> {
    let mut bo = options.build_options();
    let Some(shard) = bo.shard.filter(|s| s.count() > 1) else {
        if stage.is_some() {
            return Err(Failure::Other(
                "--stage is for a shard of a job of several: give --shard I/N (N > 1) as well".into(),
            ));
        }
        return Ok((bo, None));
    };
    // A pipeline with errors fails here, with them: built as a shard, its whole-dataset
    // steps would add that they were given no folder to exchange keys in, which is only a
    // consequence. (Its warnings are printed by the build of the shard's pipeline.)
    let whole = build(pf, &weave::BuildOptions { shard: None, ..bo.clone() }, true)?;
    let stages = stages::count(&whole);
    if let Some(k) = stage {
        if k == 0 || k > stages {
            return Err(Failure::Other(format!(
                "--stage {k}: {} runs in {stages} {} as shards, from 1 (`weave plan {} --shards {}` shows them)",
                pf.path.display(),
                if stages == 1 { "stage" } else { "stages" },
                pf.path.display(),
                shard.count()
            )));
        }
        stages::stage_options(&whole, k, &mut bo);
    }
    let dir = weave::cache_dir_for(&pf.path, whole.cache_dir.as_deref(), options.cache_dir.as_deref());
    bo.exchange = weave::exchange_dirs(&whole, &dir, shard.count()).map_err(|e| Failure::Other(e.to_string()))?;
    Ok((bo, Some(stages)))
}

pub(crate) fn read_file(file: &Path) -> Result<weave::PipelineFile, Failure> {
    weave::PipelineFile::read(file).map_err(|e| Failure::Other(e.to_string()))
}

/// Parses and checks a pipeline file's text, with the run's options over the file's.
pub(crate) fn build(
    file: &weave::PipelineFile,
    options: &weave::BuildOptions,
    quiet: bool,
) -> Result<Pipeline, Failure> {
    match file.build(&weave::registry(), options) {
        Ok(p) => {
            if !quiet {
                print_diagnostics(p.warnings());
            }
            Ok(p)
        }
        Err(diags) => {
            print_diagnostics(&diags);
            let n = diags.error_count();
            eprintln!("\nerror: {} has {n} {}", file.path.display(), if n == 1 { "error" } else { "errors" });
            Err(Failure::Invalid)
        }
    }
}

/// The most diagnostics printed: past a screenful, more of them hide the first (often the
/// cause of the rest) and cost a terminal thousands of lines.
const MAX_DIAGNOSTICS_SHOWN: usize = 50;

fn print_diagnostics(diags: &Diagnostics) {
    let (shown, omitted) = diags.first(MAX_DIAGNOSTICS_SHOWN);
    for d in shown {
        eprintln!("{d}\n");
    }
    if !omitted.is_empty() {
        eprintln!("... {omitted}\n");
    }
}

/// An error and its causes as `weave` prints them after `error: ` (and the Python
/// package's `RunError` says them): the error, then `  caused by: ...` on a line of its own
/// for each cause whose text the lines before do not already hold. Errors often repeat
/// their cause in their own message (`step "x" failed: <the step's error>`) and also give
/// it as their source; printed both ways, one error reads as two.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(&format!("\n  caused by: {text}"));
        }
        source = s.source();
    }
    out
}

/// Writes to stdout; a closed pipe (`weave plan x | head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Other(format!("cannot write to stdout: {e}"))),
    }
}

/// Formats a size for the plan (`-` for none).
fn size_or_dash(n: u64) -> String {
    if n == 0 { "-".to_owned() } else { format_bytes(n) }
}

/// Formats an optional duration for the plan.
fn duration_or_dash(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), format_duration)
}
