//! `plan`: checking and ordering a large DAG, which `weave plan`, `weave validate` and every
//! run do before any data moves.
//!
//! The DAG is random but valid and deterministic: sources, one-input transforms, merges of
//! two to four inputs, and a sink on every output that nothing else takes, with edges only
//! from earlier to later steps. The baseline is the same job written by hand (resolve ids,
//! Kahn's algorithm, levels, critical path) without any of the checks and messages.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hint::black_box;

use weave_core::{
    Batch, CanonicalConfig, Dag, Dep, Merge, NodeSpec, Params, Pipeline, Registry, Shape, Sink, Source, Step,
    StepContext, StepError, StepInfo, StepKind, Transform,
};

use super::{Figure, Report, Rng, Target, median, thousands, time};

/// Steps in the generated DAG.
const STEPS: usize = 10_000;
/// Timed runs of each figure; the median is reported.
const REPS: usize = 20;
const SEED: u64 = 0x5eed_0da6;

pub(super) fn run(report: &mut Report) {
    let specs = generate(STEPS, SEED);
    let dag = Dag::build(specs.clone())
        .unwrap_or_else(|d| panic!("the generated DAG is not valid (a bug in the generator):\n{d}"));
    assert!(dag.warnings().is_empty(), "the generated DAG has warnings (a bug in the generator):\n{}", dag.warnings());
    let edges = dag.edges().count();
    let critical = dag.critical_path();
    let expected = hand_written_plan(&specs);
    assert_eq!(
        (dag.levels().len(), critical.nodes.len()),
        (expected.levels, expected.critical_steps),
        "the hand-written baseline disagrees with Dag::build"
    );
    report.progress(format!(
        "{} steps, {edges} edges, {} levels, critical path of {} steps",
        thousands(dag.len() as u64),
        dag.levels().len(),
        critical.nodes.len()
    ));
    drop(dag);

    // Dag::build takes its nodes by value: each run gets a fresh copy, made off the clock.
    let mut plan = Vec::with_capacity(REPS);
    let mut baseline = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let input = specs.clone();
        plan.push(time(|| {
            let dag = Dag::build(input).unwrap_or_else(|d| panic!("{d}"));
            black_box(dag.levels());
            black_box(dag.critical_path());
            dag
        }));
        baseline.push(time(|| hand_written_plan(black_box(&specs))));
    }
    let (plan, baseline) = (ms(median(plan)), ms(median(baseline)));
    report.add(
        Figure::new(
            format!("plan {} steps (Dag::build + levels + critical_path)", thousands(STEPS as u64)),
            plan,
            "ms",
        )
        .ratio(baseline / plan)
        .target(Target::Below(20.0)),
    );
    report.add(
        Figure::new(format!("plan {} steps, hand-written (baseline)", thousands(STEPS as u64)), baseline, "ms")
            .ratio(1.0),
    );

    let text = pipeline_file(&specs);
    let registry = registry();
    let check = Pipeline::from_file_text("bench.toml", &text, &registry)
        .unwrap_or_else(|d| panic!("the generated pipeline file does not build:\n{d}"));
    assert_eq!(check.dag().len(), STEPS);
    assert!(check.warnings().is_empty(), "the generated pipeline file has warnings:\n{}", check.warnings());
    drop(check);
    let file = median(
        (0..REPS)
            .map(|_| {
                time(|| {
                    Pipeline::from_file_text("bench.toml", black_box(&text), &registry)
                        .unwrap_or_else(|d| panic!("{d}"))
                })
            })
            .collect(),
    );
    report.add(Figure::new(
        format!("pipeline file {} steps ({} KB): parse + build", thousands(STEPS as u64), text.len() / 1000),
        ms(file),
        "ms",
    ));
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A random valid DAG of exactly `n` steps (`n` at least 2).
fn generate(n: usize, seed: u64) -> Vec<NodeSpec<()>> {
    assert!(n >= 2, "a DAG with a source and a sink has at least two steps");
    let mut rng = Rng::new(seed);
    let mut specs: Vec<NodeSpec<()>> = Vec::with_capacity(n);
    // Steps with an output, and which of them nothing takes yet (each will need a sink).
    let mut producers: Vec<usize> = Vec::new();
    let mut unconsumed: Vec<usize> = Vec::new();
    let mut consumed = vec![false; n];
    let id = |i: usize| format!("step_{i:05}");

    // Grow the body until the sinks still owed would fill the DAG up to `n`.
    while specs.len() + unconsumed.len() < n {
        let i = specs.len();
        let room = n - (specs.len() + unconsumed.len());
        let shape = if producers.is_empty() || (room > 1 && rng.chance(0.03)) {
            // A new source adds itself and its owed sink: only when there is room for both.
            Shape::Source
        } else if room == 1 {
            // A transform on an unconsumed output keeps the count of owed sinks.
            Shape::Transform
        } else {
            match rng.below(100) {
                0..=14 => Shape::Merge,
                15..=24 => Shape::Sink,
                _ => Shape::Transform,
            }
        };
        let wanted = match shape {
            Shape::Source => 0,
            Shape::Merge => rng.range(2, 4).min(producers.len()),
            _ => 1,
        };
        let shape = if shape == Shape::Merge && wanted < 2 { Shape::Transform } else { shape };
        let mut inputs: Vec<usize> = Vec::with_capacity(wanted);
        while inputs.len() < wanted {
            // Half the time take an output that nothing uses yet (so that few sinks are owed
            // at the end); otherwise a recent one, as real pipelines branch locally.
            let j = if !unconsumed.is_empty() && (room == 1 || rng.chance(0.5)) {
                unconsumed[rng.below(unconsumed.len())]
            } else {
                let recent = &producers[producers.len().saturating_sub(64)..];
                rng.pick(recent)
            };
            if !inputs.contains(&j) {
                inputs.push(j);
            }
        }
        for &j in &inputs {
            if !consumed[j] {
                consumed[j] = true;
                unconsumed.retain(|&u| u != j);
            }
        }
        if shape != Shape::Sink {
            producers.push(i);
            unconsumed.push(i);
        }
        let cost = 0.1 + rng.below(1000) as f64 / 100.0;
        specs.push(NodeSpec::new(id(i), shape, ()).after(inputs.iter().map(|&j| id(j))).cost(cost));
    }
    for j in std::mem::take(&mut unconsumed) {
        let i = specs.len();
        specs.push(NodeSpec::new(id(i), Shape::Sink, ()).after([id(j)]));
    }
    assert_eq!(specs.len(), n);
    specs
}

/// What the baseline computes, to check it does the same job.
struct Plan {
    levels: usize,
    critical_steps: usize,
}

/// The plan written by hand: ids to indices, Kahn's algorithm, levels, critical path.
fn hand_written_plan(specs: &[NodeSpec<()>]) -> Plan {
    let n = specs.len();
    let index: HashMap<&str, usize> = specs.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    let inputs: Vec<Vec<usize>> =
        specs.iter().map(|s| s.after.iter().flatten().map(|d: &Dep| index[d.id.as_str()]).collect()).collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ins) in inputs.iter().enumerate() {
        for &j in ins {
            consumers[j].push(i);
        }
    }
    let mut indegree: Vec<usize> = inputs.iter().map(Vec::len).collect();
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = queue.pop_front() {
        order.push(i);
        for &c in &consumers[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                queue.push_back(c);
            }
        }
    }
    assert_eq!(order.len(), n, "cycle in the generated DAG");
    let mut level = vec![0usize; n];
    let mut best = vec![0f64; n];
    let mut prev = vec![usize::MAX; n];
    for &i in &order {
        for &j in &inputs[i] {
            level[i] = level[i].max(level[j] + 1);
            if prev[i] == usize::MAX || best[j] > best[prev[i]] {
                prev[i] = j;
            }
        }
        best[i] = specs[i].cost + if prev[i] == usize::MAX { 0.0 } else { best[prev[i]] };
    }
    let levels = level.iter().max().map_or(0, |m| m + 1);
    let mut levelled: Vec<Vec<usize>> = vec![Vec::new(); levels];
    for &i in &order {
        levelled[level[i]].push(i);
    }
    black_box(&levelled);
    let mut end = (0..n).max_by(|&a, &b| best[a].total_cmp(&best[b]).then(b.cmp(&a))).unwrap_or(0);
    let mut critical_steps = 1;
    while prev[end] != usize::MAX {
        end = prev[end];
        critical_steps += 1;
    }
    Plan { levels, critical_steps }
}

/// The DAG as a pipeline file: one `[[step]]` table per step, every `after` written out.
fn pipeline_file(specs: &[NodeSpec<()>]) -> String {
    let mut out = String::from("[pipeline]\nname = \"bench-plan\"\nseed = 1\n");
    for s in specs {
        let kind = match s.shape {
            Shape::Source => "noop_source",
            Shape::Merge => "noop_merge",
            Shape::Sink => "noop_sink",
            _ => "noop_transform",
        };
        let _ = write!(out, "\n[[step]]\nid = \"{}\"\nkind = \"{kind}\"\nafter = [", s.id);
        for (k, d) in s.after.iter().flatten().enumerate() {
            let sep = if k == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}\"{}\"", d.id);
        }
        out.push_str("]\n");
    }
    out
}

/// A step that does nothing, of any shape: the pipeline-file figure measures parsing and
/// checking, not steps.
struct Noop {
    kind: &'static str,
    config: CanonicalConfig,
}

impl StepInfo for Noop {
    fn kind(&self) -> &str {
        self.kind
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }
}

impl Source for Noop {
    fn next_batch(&mut self, _ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        Ok(None)
    }
}

impl Transform for Noop {
    fn apply(&self, batch: &Batch, _ctx: &mut StepContext) -> Result<Batch, StepError> {
        Ok(batch.clone())
    }
}

impl Merge for Noop {
    fn process(
        &mut self,
        _input: usize,
        batch: &Batch,
        _ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        out.push(batch.clone());
        Ok(())
    }
}

impl Sink for Noop {
    fn write(&mut self, _batch: &Batch, _ctx: &mut StepContext) -> Result<(), StepError> {
        Ok(())
    }

    fn commit(&mut self, _ctx: &mut StepContext) -> Result<(), StepError> {
        Ok(())
    }
}

fn noop(kind: &'static str, p: &Params) -> Noop {
    Noop { kind, config: p.canonical() }
}

/// A registry with one no-op kind per shape.
fn registry() -> Registry {
    let kind = |name: &'static str, shape, build: fn(&Params) -> Option<Step>| {
        StepKind::new(name, shape, "does nothing (benchmarks)", [] as [&str; 0], build)
    };
    let mut r = Registry::new();
    r.register(kind("noop_source", Shape::Source, |p| Some(Step::Source(Box::new(noop("noop_source", p))))))
        .register(kind("noop_transform", Shape::Transform, |p| {
            Some(Step::Transform(std::sync::Arc::new(noop("noop_transform", p))))
        }))
        .register(kind("noop_merge", Shape::Merge, |p| Some(Step::Merge(Box::new(noop("noop_merge", p))))))
        .register(kind("noop_sink", Shape::Sink, |p| Some(Step::Sink(Box::new(noop("noop_sink", p))))));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_dags_are_valid_and_exactly_sized() {
        for (n, seed) in [(2, 1), (3, 2), (50, 3), (1000, 4)] {
            let specs = generate(n, seed);
            assert_eq!(specs.len(), n);
            let dag = Dag::build(specs.clone()).unwrap_or_else(|d| panic!("n={n}: {d}"));
            assert!(dag.warnings().is_empty(), "n={n}: {}", dag.warnings());
            assert!(dag.nodes().iter().any(|s| s.shape == Shape::Source));
            let plan = hand_written_plan(&specs);
            assert_eq!(plan.levels, dag.levels().len());
            assert_eq!(plan.critical_steps, dag.critical_path().nodes.len());
        }
    }

    #[test]
    fn the_pipeline_file_builds_the_same_dag() {
        let specs = generate(200, 9);
        let p =
            Pipeline::from_file_text("t.toml", &pipeline_file(&specs), &registry()).unwrap_or_else(|d| panic!("{d}"));
        let dag = Dag::build(specs).unwrap_or_else(|d| panic!("{d}"));
        let edges = |it: &mut dyn Iterator<Item = (usize, usize)>| it.collect::<Vec<_>>();
        assert_eq!(edges(&mut p.dag().edges()), edges(&mut dag.edges()));
    }
}
