//! `weave plan --shards N`: how a pipeline runs as N shards — what each step does with its
//! shard's share, and the stages that the whole-dataset steps cut it into.

use weave::{Pipeline, Shape};

/// Each step's stage (from 1), by node: a stage ends where a whole-dataset step must take
/// in the earlier shards' keys before it can go on, and that step starts the next one.
pub(crate) fn stage_of(p: &Pipeline) -> Vec<usize> {
    let dag = p.dag();
    let mut stage = vec![1usize; dag.len()];
    for &i in dag.topological_order() {
        let node = dag.node(i);
        let before = node.inputs.iter().map(|&j| stage[j]).max().unwrap_or(1);
        stage[i] = before + usize::from(node.payload.step.info().shards_by_exchange());
    }
    stage
}

/// The number of stages of a pipeline run sharded.
pub(crate) fn count(p: &Pipeline) -> usize {
    stage_of(p).into_iter().max().unwrap_or(1)
}

/// What a run of stage `k` of `stages` (`weave run --shard I/N --stage K`) builds, over
/// the job's `whole` pipeline. Stage `k` before the last runs the steps the whole-dataset
/// steps of stage `k + 1` need, and those steps only publish their input's keys; the last
/// stage runs every step, every earlier shard's keys being there by then. In every stage,
/// the input of each whole-dataset step is kept in the cache (its `cache = "auto"`
/// notwithstanding), so that the stage after the one that published its keys reads it
/// back rather than computing it again.
pub(crate) fn stage_options(whole: &Pipeline, k: usize, bo: &mut weave::BuildOptions) {
    let dag = whole.dag();
    let stage = stage_of(whole);
    let exchanges: Vec<usize> =
        (0..dag.len()).filter(|&i| dag.node(i).payload.step.info().shards_by_exchange()).collect();
    bo.store = exchanges.iter().flat_map(|&i| dag.node(i).inputs.iter().map(|&j| dag.node(j).id.clone())).collect();
    if k >= stage.iter().copied().max().unwrap_or(1) {
        return;
    }
    let targets: Vec<usize> = exchanges.into_iter().filter(|&i| stage[i] == k + 1).collect();
    // The targets and every step before them.
    let mut keep = vec![false; dag.len()];
    let mut todo = targets.clone();
    while let Some(i) = todo.pop() {
        if !keep[i] {
            keep[i] = true;
            todo.extend(dag.node(i).inputs.iter().copied());
        }
    }
    bo.only_steps = Some((0..dag.len()).filter(|&i| keep[i]).map(|i| dag.node(i).id.clone()).collect());
    bo.publish_only = targets.into_iter().map(|i| dag.node(i).id.clone()).collect();
}

/// What step `i` does in a job of `n` shards, and its stage (from 1).
fn roles(p: &Pipeline) -> Vec<(String, usize, &'static str, bool)> {
    let dag = p.dag();
    let stage = stage_of(p);
    let mut out = vec![(String::new(), 0, "", true); dag.len()];
    for &i in dag.topological_order() {
        let node = dag.node(i);
        let info = node.payload.step.info();
        let shape = node.payload.step.shape();
        let exchange = info.shards_by_exchange();
        let role = info.shard_role();
        let (what, ok) = match shape {
            Shape::Source => ("reads its share of the input", true),
            Shape::Sink => ("writes its part of the output (-part-IIIII-of-NNNNN)", true),
            Shape::Transform => ("runs on the shard's records", true),
            _ if exchange && role.is_some() => (role.unwrap_or_default(), true),
            _ if exchange && info.waits_for_every_shard() => {
                ("exchanges its keys: takes in every shard's before deciding", true)
            }
            _ if exchange => ("exchanges its keys: takes in the earlier shards' before deciding", true),
            _ if info.runs_per_shard() => ("runs on the shard's records", true),
            _ => ("needs the whole dataset: refused in a sharded run", false),
        };
        out[i] = (node.id.clone(), stage[i], what, ok);
    }
    dag.topological_order().iter().map(|&i| out[i].clone()).collect()
}

/// The table `weave plan --shards N` adds under the plan.
pub(crate) fn table(p: &Pipeline, n: u32) -> String {
    let rows = roles(p);
    let stages = rows.iter().map(|r| r.1).max().unwrap_or(1);
    let refused: Vec<&str> = rows.iter().filter(|r| !r.3).map(|r| r.0.as_str()).collect();
    let mut s = format!(
        "\nas {n} shards (`weave run FILE --shard I/{n}`, or `weave slurm submit FILE --tasks {n}`): {stages} {}\n",
        if stages == 1 { "stage" } else { "stages" }
    );
    let table: Vec<[String; 3]> =
        rows.iter().map(|(id, stage, what, _)| [id.clone(), stage.to_string(), (*what).to_owned()]).collect();
    s.push_str(&crate::table::render(&["step", "stage", "in a shard"], &table));
    if !refused.is_empty() {
        s.push_str(&format!("cannot run sharded: {} (run it whole)\n", refused.join(", ")));
    }
    s
}

/// The same as JSON: `{"shards": n, "stages": k, "steps": [{"step", "stage", "role", "ok"}]}`.
pub(crate) fn json(p: &Pipeline, n: u32) -> serde_json::Value {
    let rows = roles(p);
    serde_json::json!({
        "shards": n,
        "stages": rows.iter().map(|r| r.1).max().unwrap_or(1),
        "steps": rows.iter().map(|(id, stage, what, ok)| serde_json::json!({
            "step": id, "stage": stage, "role": what, "shardable": ok,
        })).collect::<Vec<_>>(),
    })
}
