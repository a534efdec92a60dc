//! `weave plan --shards N`: how a pipeline runs as N shards — what each step does with its
//! shard's share, and the stages that the whole-dataset steps cut it into.

use weave::{Pipeline, Shape};

/// What step `i` does in a job of `n` shards, and its stage (from 1): a stage ends where a
/// whole-dataset step must take in the earlier shards' keys before it can go on.
fn roles(p: &Pipeline) -> Vec<(String, usize, &'static str, bool)> {
    let dag = p.dag();
    let mut stage = vec![1usize; dag.len()];
    let mut out = vec![(String::new(), 0, "", true); dag.len()];
    for &i in dag.topological_order() {
        let node = dag.node(i);
        let info = node.payload.step.info();
        let shape = node.payload.step.shape();
        let exchange = info.shards_by_exchange();
        let before = node.inputs.iter().map(|&j| stage[j]).max().unwrap_or(1);
        stage[i] = before + usize::from(exchange);
        let (what, ok) = match shape {
            Shape::Source => ("reads its share of the input", true),
            Shape::Sink => ("writes its part of the output (-part-IIIII-of-NNNNN)", true),
            Shape::Transform => ("runs on the shard's records", true),
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
