//! The run's topology: which steps the cache leaves to run, how they group into stages
//! (chains of stateless transforms fused into one), and the bounded channels between them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, bounded};
use weave_core::{
    BadRecordLimit, BadRecordPolicy, Merge, PipelineStep, RetryPolicy, Shape, Sink, Source, StatefulTransform, Step,
    StepCache, Transform,
};

use crate::fields::ReadFields;
use crate::quarantine::Exclusions;
use crate::shared::Msg;
use crate::summary::CacheUse;

/// One step's settings inside a stage.
#[derive(Clone)]
pub(crate) struct StageStep {
    pub(crate) node: usize,
    pub(crate) id: Arc<str>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_bad_record: BadRecordPolicy,
    pub(crate) gpus: u32,
    pub(crate) exclusions: Option<Arc<Exclusions>>,
    /// Its calls run on the worker pool ([`weave_core::StepInfo::parallel`]).
    pub(crate) parallel: bool,
    /// Its calls compute (no timeout, no GPU, not I/O-bound): a source's, stateful step's,
    /// merge's or sink's calls then run on the worker pool too, so that `max_concurrent`
    /// bounds every core the run keeps busy, stage threads included.
    pub(crate) on_pool: bool,
    /// How many bad records it may set aside before the run fails.
    pub(crate) max_bad_records: BadRecordLimit,
    /// It is a source (for `max_bad_records` shares: what it read).
    pub(crate) source: bool,
    /// The fields it reads, made present in each batch it is handed.
    pub(crate) read: Arc<ReadFields>,
}

impl StageStep {
    /// Whether the step's calls set records aside, into its exclusion file or the
    /// quarantine: their output alone does not stand for them, so the stored output of an
    /// interrupted run cannot replace calling them.
    pub(crate) fn sets_aside(&self) -> bool {
        self.exclusions.is_some() || self.on_bad_record != BadRecordPolicy::Fail
    }
}

/// What a stage runs.
pub(crate) enum Work {
    Source(Box<dyn Source>),
    /// A step whose whole output is in the cache.
    Replay(Arc<dyn StepCache>),
    /// One or more stateless transforms fused into one pass.
    Map(Vec<Arc<dyn Transform>>, Option<u32>),
    Stateful(Box<dyn StatefulTransform>),
    Merge(Box<dyn Merge>),
    Sink(Box<dyn Sink>),
}

/// What a stage thread tells the coordinator: whether it is in a call (for timeouts), and
/// whether it has work under way that will move batches without any input (for the stall
/// watch).
#[derive(Default)]
pub(crate) struct Watch {
    /// Nanoseconds since the run started when the current call started; 0 when idle.
    pub(crate) call_started: AtomicU64,
    /// Calls waiting out a retry delay.
    pub(crate) pending: AtomicUsize,
    /// Calls running on a pool (a map stage's jobs).
    pub(crate) jobs: Arc<AtomicUsize>,
}

/// A stage: one step, or a chain of fused stateless transforms, run by one thread.
pub(crate) struct Stage {
    pub(crate) steps: Vec<StageStep>,
    pub(crate) work: Work,
    pub(crate) inputs: Vec<Receiver<Msg>>,
    pub(crate) outputs: Vec<Sender<Msg>>,
    pub(crate) watch: Arc<Watch>,
    /// The cache entry its (last) step's output is stored in.
    pub(crate) cache: Option<Arc<dyn StepCache>>,
}

/// Decides, from the sinks back, what a run does with each step, given which steps have a
/// complete cache entry: a sink whose entry is complete is skipped; a step runs only if a
/// step that runs needs its output, and is replayed instead when its entry is complete.
/// (A step with no consumers that is not a sink runs: its output is unused, which the
/// pipeline check warns about.) `weave plan` shows the same decision.
pub fn cache_roles(dag: &weave_core::Dag<PipelineStep>, complete: &dyn Fn(&str) -> bool) -> Vec<CacheUse> {
    let mut roles = vec![CacheUse::Ran; dag.len()];
    for &i in dag.topological_order().iter().rev() {
        let consumers = dag.consumers(i);
        let node = dag.node(i);
        roles[i] = if node.shape == Shape::Sink {
            if complete(&node.id) { CacheUse::Skipped } else { CacheUse::Ran }
        } else if consumers.is_empty() {
            CacheUse::Ran
        } else if !consumers.iter().any(|&c| roles[c] == CacheUse::Ran) {
            CacheUse::Skipped
        } else if complete(&node.id) {
            CacheUse::Replayed
        } else {
            CacheUse::Ran
        };
    }
    roles
}

/// Groups the DAG's steps that run into stages (fusing chains of stateless transforms) and
/// wires them with bounded channels.
pub(crate) fn build_stages(
    dag: weave_core::Dag<PipelineStep>,
    roles: &[CacheUse],
    caches: &HashMap<String, Arc<dyn StepCache>>,
    exclusions: &[Arc<Exclusions>],
    capacity: usize,
    sharded: bool,
) -> Vec<Stage> {
    let n = dag.len();
    // Whether the records of each step's input may lack fields that others have.
    let mut vary_in = vec![false; n];
    let mut vary_out = vec![false; n];
    for &i in dag.topological_order() {
        let node = dag.node(i);
        vary_in[i] = node.inputs.iter().any(|&j| vary_out[j]);
        vary_out[i] = node.payload.step.info().fields_vary(vary_in[i]);
    }
    let cache_of = |i: usize| caches.get(&dag.node(i).id).cloned();
    // A stateless transform joins its input's stage when it is that input's only consumer,
    // has no timeout (a call that may be abandoned runs alone) and runs on the same pool.
    // A step whose output is cached ends its stage, so that its output is seen whole.
    let fusable = |i: usize| {
        let node = dag.node(i);
        roles[i] == CacheUse::Ran
            && node.shape == Shape::Transform
            && node.payload.timeout.is_none()
            && node.payload.resources.io_concurrency.is_none()
    };
    let live_consumers = |j: usize| dag.consumers(j).iter().filter(|&&c| roles[c] == CacheUse::Ran).count();
    // A step whose output is stored starts a stage of its own after steps that set records
    // aside: its stored parts then stand for its own calls only, which the stage can check.
    let sets_aside = |m: usize| {
        let p = &dag.node(m).payload;
        p.exclusions.is_some() || p.on_bad_record != BadRecordPolicy::Fail
    };
    let mut stage_of = vec![usize::MAX; n];
    let mut members: Vec<Vec<usize>> = Vec::new();
    for &i in dag.topological_order() {
        if roles[i] == CacheUse::Skipped {
            continue;
        }
        let node = dag.node(i);
        if fusable(i)
            && let [j] = node.inputs[..]
            && fusable(j)
            && !caches.contains_key(&dag.node(j).id)
            && live_consumers(j) == 1
            && dag.node(j).payload.resources.gpus == node.payload.resources.gpus
            && !(caches.contains_key(&node.id) && members[stage_of[j]].iter().any(|&m| sets_aside(m)))
        {
            stage_of[i] = stage_of[j];
            members[stage_of[j]].push(i);
            continue;
        }
        stage_of[i] = members.len();
        members.push(vec![i]);
    }

    // Channels: one per edge between stages, in the consumer's input order.
    let mut inputs: Vec<Vec<Receiver<Msg>>> = (0..members.len()).map(|_| Vec::new()).collect();
    let mut outputs: Vec<Vec<Sender<Msg>>> = (0..members.len()).map(|_| Vec::new()).collect();
    for (s, m) in members.iter().enumerate() {
        let first = m[0];
        if roles[first] == CacheUse::Replayed {
            continue;
        }
        for &j in &dag.node(first).inputs {
            let (tx, rx) = bounded(capacity);
            outputs[stage_of[j]].push(tx);
            inputs[s].push(rx);
        }
    }

    let mut steps: Vec<Option<Step>> = Vec::with_capacity(n);
    let mut infos = Vec::with_capacity(n);
    for (i, node) in dag.nodes().iter().enumerate() {
        infos.push(StageStep {
            node: i,
            id: node.id.as_str().into(),
            retry: node.payload.retry,
            timeout: node.payload.timeout,
            on_bad_record: node.payload.on_bad_record,
            gpus: node.payload.resources.gpus,
            exclusions: exclusions.iter().find(|e| e.step() == node.id).cloned(),
            parallel: node.payload.step.info().parallel(),
            on_pool: node.payload.timeout.is_none()
                && node.payload.resources.gpus == 0
                && node.payload.resources.io_concurrency.is_none(),
            max_bad_records: node.payload.max_bad_records,
            source: node.shape == Shape::Source,
            read: Arc::new(ReadFields::new(node.payload.step.info().fields_read(), vary_in[i], sharded)),
        });
    }
    let stage_caches: Vec<Option<Arc<dyn StepCache>>> = members.iter().map(|m| cache_of(m[m.len() - 1])).collect();
    let io: Vec<Option<u32>> = dag.nodes().iter().map(|n| n.payload.resources.io_concurrency).collect();
    for node in dag.into_nodes() {
        steps.push(Some(node.payload.step));
    }

    let mut stages = Vec::with_capacity(members.len());
    for (s, m) in members.into_iter().enumerate() {
        let replay = roles[m[0]] == CacheUse::Replayed;
        let work = match steps[m[0]].take() {
            _ if replay => match &stage_caches[s] {
                Some(c) => Work::Replay(Arc::clone(c)),
                None => unreachable!("a replayed step has a cache entry"),
            },
            Some(Step::Source(x)) => Work::Source(x),
            Some(Step::Transform(t)) => {
                let mut chain = vec![t];
                for &i in &m[1..] {
                    if let Some(Step::Transform(t)) = steps[i].take() {
                        chain.push(t);
                    }
                }
                Work::Map(chain, io[m[0]])
            }
            Some(Step::StatefulTransform(x)) => Work::Stateful(x),
            Some(Step::Merge(x)) => Work::Merge(x),
            Some(Step::Sink(x)) => Work::Sink(x),
            None => unreachable!("every node is in exactly one stage"),
        };
        stages.push(Stage {
            steps: m.iter().map(|&i| infos[i].clone()).collect(),
            work,
            inputs: std::mem::take(&mut inputs[s]),
            outputs: std::mem::take(&mut outputs[s]),
            watch: Arc::default(),
            cache: stage_caches[s].clone(),
        });
    }
    stages
}
