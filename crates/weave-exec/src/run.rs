//! The run's coordinator: it sets a run up, starts one thread per stage, watches call
//! deadlines, stalls and cancellation while they work, then commits or aborts the outputs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, unbounded};
use weave_core::{BadRecordLimit, Event, Pipeline, RunStatus, Shape, Sink, StepContext};

use crate::budget::MemoryBudget;
use crate::caller::panic_message;
use crate::error::Error;
use crate::files::RunFiles;
use crate::options::{ExecOptions, MAX_CHANNEL_CAPACITY, TICK, within};
use crate::quarantine::{Exclusions, Quarantine};
use crate::shared::{Semaphore, Shared};
use crate::stage::{StageResult, run_stage};
use crate::stages::{Watch, Work, build_stages, cache_roles};
use crate::summary::{CacheUse, RunError, RunSummary, StepStats};

/// Runs a pipeline to the end. Outputs are committed only if every step succeeded;
/// otherwise every sink is aborted and the first error is returned with what the run did.
pub fn run(pipeline: Pipeline, options: ExecOptions) -> Result<RunSummary, Box<RunError>> {
    let start = Instant::now();
    let threads = pipeline
        .resources
        .max_concurrent
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    // A checked pipeline is within the bound; its `resources` are public, so a caller may
    // have changed them since.
    let threads = within("max_concurrent", threads, weave_core::MAX_CONCURRENT);
    let channel_capacity = within("channel_capacity", options.channel_capacity, MAX_CHANNEL_CAPACITY);
    let name = pipeline.name.clone();
    let shared = Arc::new(Shared {
        cancel: Arc::clone(&options.cancel),
        budget: MemoryBudget::new(pipeline.resources.max_memory),
        subscribers: options.subscribers.clone(),
        seed: pipeline.seed,
        quarantine: Quarantine::new(options.quarantine.clone()),
        quarantine_path: options.quarantine.clone(),
        max_bad_records: pipeline.max_bad_records,
        bad_records: AtomicU64::new(0),
        failure: Mutex::new(None),
        gpus: Semaphore::new(if pipeline.resources.gpu_enabled { pipeline.resources.gpus } else { 0 }),
        progress: AtomicU64::new(0),
    });
    // What the run writes against what it reads, before anything is touched (a front end
    // that writes files of its own, as the CLI does, checks them with these first).
    let mut files = RunFiles::of_pipeline(&pipeline);
    if let Some(q) = &options.quarantine {
        files = files.replaced("the quarantine file", q.clone());
    }
    let files_checked = files.check();
    let max_memory = pipeline.resources.max_memory;
    let sharded = pipeline.shard.is_some_and(|s| s.count() > 1);
    let dag = pipeline.into_dag();
    let mut stats: Vec<StepStats> = dag
        .nodes()
        .iter()
        .map(|n| StepStats { id: n.id.clone(), kind: n.payload.kind.clone(), ..StepStats::default() })
        .collect();
    let step_count = dag.len();
    shared.emit(|| Event::RunStarted { pipeline: name.clone(), steps: step_count, threads, max_memory });
    let roles = cache_roles(&dag, &|id| options.caches.get(id).is_some_and(|c| c.complete()));
    for (i, role) in roles.iter().enumerate() {
        stats[i].cache = *role;
        if *role == CacheUse::Skipped {
            let id: Arc<str> = dag.node(i).id.as_str().into();
            shared.emit(|| Event::StepSkipped { step: id });
        }
    }
    let exclusions: Vec<Arc<Exclusions>> = dag
        .nodes()
        .iter()
        .zip(&roles)
        .filter(|(_, r)| **r == CacheUse::Ran)
        .filter_map(|(n, _)| Some(Arc::new(Exclusions::new(&n.id, n.payload.exclusions.clone()?))))
        .collect();

    let sources: Vec<bool> = dag.nodes().iter().map(|n| n.shape == Shape::Source).collect();
    let summary = |mut stats: Vec<StepStats>, status, shared: &Shared| RunSummary {
        pipeline: name.clone(),
        status,
        steps: {
            stats.iter_mut().for_each(StepStats::close);
            stats
        },
        elapsed: start.elapsed(),
        peak_memory: shared.budget.peak(),
        threads,
    };

    if let Err(error) = files_checked {
        let sum = summary(stats, RunStatus::Failed, &shared);
        shared.emit(|| Event::RunFinished { status: RunStatus::Failed, elapsed: sum.elapsed, peak_memory: 0 });
        return Err(Box::new(RunError { error, summary: sum }));
    }
    crate::arenas::bound_arenas();
    let pool =
        match rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("weave-worker-{i}")).build()
        {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let error = Error::Thread(std::io::Error::other(e.to_string()));
                return Err(Box::new(RunError { error, summary: summary(stats, RunStatus::Failed, &shared) }));
            }
        };

    let stages = build_stages(dag, &roles, &options.caches, &exclusions, channel_capacity, sharded);
    let (handles, watches, done_rx) = spawn_stages(stages, &shared, &pool, start);
    let left_behind = coordinate(&shared, &watches, &handles, &done_rx, start, options.stall_timeout);
    let mut sinks: Vec<(usize, Box<dyn Sink>)> = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let Some(h) = h else { continue };
        if left_behind[i] {
            continue;
        }
        match h.join() {
            Ok(r) => {
                for (node, s) in r.stats {
                    let (id, kind) = (std::mem::take(&mut stats[node].id), std::mem::take(&mut stats[node].kind));
                    stats[node] = StepStats { id, kind, cache: stats[node].cache, ..s };
                }
                sinks.extend(r.sink);
            }
            Err(p) => shared.fail(Error::Panic { step: watches[i].2.to_string(), message: panic_message(&p) }),
        }
    }
    sinks.sort_by_key(|(node, _)| *node);
    // `[pipeline] max_bad_records` as a share: of the records the sources read.
    if !shared.cancelled() && matches!(shared.max_bad_records, BadRecordLimit::Share(_)) {
        let read: u64 = stats.iter().zip(&sources).filter(|(_, s)| **s).map(|(st, _)| st.handled(true)).sum();
        let bad: u64 = stats.iter().map(|s| s.counts.bad_records()).sum();
        if shared.max_bad_records.exceeded(bad, read) {
            shared.fail(shared.too_many_bad(None, bad, Some(read), shared.max_bad_records));
        }
    }

    if let Err(e) = shared.quarantine.flush() {
        shared.fail(e);
    }
    let failed = shared.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let mut error = failed.or_else(|| options.cancel.load(Ordering::Relaxed).then_some(Error::Cancelled));
    if error.is_none() {
        for ex in &exclusions {
            if let Err(e) = ex.commit() {
                error = Some(e);
                break;
            }
        }
    }
    if let Some(error) = error {
        for ex in &exclusions {
            ex.abort();
        }
        for (_, mut s) in sinks {
            s.abort();
        }
        let status = if matches!(error, Error::Cancelled) { RunStatus::Cancelled } else { RunStatus::Failed };
        let sum = summary(stats, status, &shared);
        shared.emit(|| Event::RunFinished { status, elapsed: sum.elapsed, peak_memory: sum.peak_memory });
        return Err(Box::new(RunError { error, summary: sum }));
    }
    // Every step succeeded: make the outputs visible, sink by sink.
    let mut commit_error = None;
    for (node, mut s) in sinks {
        if commit_error.is_some() {
            s.abort();
            continue;
        }
        let id: Arc<str> = stats[node].id.as_str().into();
        let mut ctx = StepContext::new(Arc::clone(&id), shared.seed, 0, Arc::clone(&shared.cancel));
        if let Err(e) = s.commit(&mut ctx) {
            commit_error = Some(Error::Step { step: id.to_string(), retries: 0, source: e });
        } else if let Some(cache) = options.caches.get(&*id)
            && let Err(e) = cache.finish(stats[node].batches_in)
        {
            log::warn!("step \"{id}\": cannot record its output in the cache: {e}");
        }
    }
    if let Some(error) = commit_error {
        let sum = summary(stats, RunStatus::Failed, &shared);
        shared.emit(|| Event::RunFinished {
            status: RunStatus::Failed,
            elapsed: sum.elapsed,
            peak_memory: sum.peak_memory,
        });
        return Err(Box::new(RunError { error, summary: sum }));
    }
    let sum = summary(stats, RunStatus::Succeeded, &shared);
    shared.emit(|| Event::RunFinished {
        status: RunStatus::Succeeded,
        elapsed: sum.elapsed,
        peak_memory: sum.peak_memory,
    });
    Ok(sum)
}

/// What the coordinator watches of a stage: its watch, its calls' timeout (none for a map
/// stage, which watches its own), its first step's id, and its number.
type Watched = (Arc<Watch>, Option<Duration>, Arc<str>, usize);

/// A stage thread's handle; `None` when the thread could not be started (the run has
/// failed).
type Handle = Option<JoinHandle<StageResult>>;

/// Starts one thread per stage; each says its number on the returned channel when done.
fn spawn_stages(
    stages: Vec<crate::stages::Stage>,
    shared: &Arc<Shared>,
    pool: &Arc<rayon::ThreadPool>,
    start: Instant,
) -> (Vec<Handle>, Vec<Watched>, crossbeam_channel::Receiver<usize>) {
    let (done_tx, done_rx) = unbounded::<usize>();
    let mut handles = Vec::with_capacity(stages.len());
    let mut watches = Vec::with_capacity(stages.len());
    for (i, stage) in stages.into_iter().enumerate() {
        let timeout = if matches!(stage.work, Work::Map(..)) { None } else { stage.steps[0].timeout };
        watches.push((Arc::clone(&stage.watch), timeout, stage.steps[0].id.clone(), i));
        let shared2 = Arc::clone(shared);
        let pool2 = Arc::clone(pool);
        let done = done_tx.clone();
        let thread_name = format!("weave-{}", stage.steps[0].id);
        let spawned = std::thread::Builder::new().name(thread_name).spawn(move || {
            let result = run_stage(stage, &shared2, &pool2, start);
            let _ = done.send(i);
            result
        });
        match spawned {
            Ok(h) => handles.push(Some(h)),
            Err(e) => {
                shared.fail(Error::Thread(e));
                handles.push(None);
            }
        }
    }
    drop(done_tx);

    (handles, watches, done_rx)
}

/// Waits for the stages while watching call deadlines, stalls and cancellation; returns
/// which stages were left behind unfinished (a thread stuck in a call never comes back).
fn coordinate(
    shared: &Shared,
    watches: &[Watched],
    handles: &[Handle],
    done_rx: &crossbeam_channel::Receiver<usize>,
    start: Instant,
    stall_timeout: Duration,
) -> Vec<bool> {
    let mut finished = vec![false; handles.len()];
    for (i, h) in handles.iter().enumerate() {
        finished[i] = h.is_none();
    }
    let mut abandoned = vec![false; handles.len()];
    let mut last_progress = (shared.progress.load(Ordering::Relaxed), Instant::now());
    while finished.iter().zip(&abandoned).any(|(f, a)| !f && !a) {
        match done_rx.recv_timeout(TICK) {
            Ok(i) => finished[i] = true,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = start.elapsed().as_nanos() as u64;
        for (watch, timeout, id, i) in watches {
            let (Some(timeout), false, false) = (timeout, finished[*i], abandoned[*i]) else { continue };
            let started = watch.call_started.load(Ordering::Relaxed);
            if started != 0 && now.saturating_sub(started) > timeout.as_nanos() as u64 {
                // The call holds the step's state, so it cannot be retried: stop the run
                // and leave the thread behind.
                shared.fail(Error::Timeout { step: id.to_string(), timeout: *timeout, retries: 0, retryable: false });
                abandoned[*i] = true;
            }
        }
        // Stall watch: batches stopped moving, and no step is working to move them.
        let progress = shared.progress.load(Ordering::Relaxed);
        let working = watches.iter().any(|(w, _, _, i)| {
            !finished[*i]
                && (w.call_started.load(Ordering::Relaxed) != 0
                    || w.pending.load(Ordering::Relaxed) > 0
                    || w.jobs.load(Ordering::Relaxed) > 0)
        });
        if progress != last_progress.0 || working {
            last_progress = (progress, Instant::now());
        } else if !shared.cancelled() && last_progress.1.elapsed() >= stall_timeout {
            let waiting: Vec<String> =
                watches.iter().filter(|(_, _, _, i)| !finished[*i]).map(|(_, _, id, _)| id.to_string()).collect();
            shared.fail(Error::Stalled { waited: stall_timeout, waiting });
        }
        if shared.cancelled() {
            // Threads stuck in a call never come back; everything else stops within a tick.
            for (watch, _, _, i) in watches {
                if !finished[*i] && watch.call_started.load(Ordering::Relaxed) != 0 {
                    let started = watch.call_started.load(Ordering::Relaxed);
                    if now.saturating_sub(started) > Duration::from_secs(1).as_nanos() as u64 {
                        abandoned[*i] = true;
                    }
                }
            }
        }
    }

    abandoned.iter().zip(&finished).map(|(a, f)| *a && !f).collect()
}
