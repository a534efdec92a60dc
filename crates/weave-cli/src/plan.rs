//! `weave plan`: how a pipeline would run.

use weave::cache::CachePlan;
use weave::{Backoff, BadRecordPolicy, Pipeline, format_bytes, format_duration};

use crate::{duration_or_dash, size_or_dash};

/// The plan as a table.
pub(crate) fn table(p: &Pipeline, cache: &CachePlan, explain: bool) -> String {
    let dag = p.dag();
    let roles = weave::planned_roles(p, cache);
    let mut out = String::new();
    out.push_str(&format!("{p}, {} parallel levels\n", dag.levels().len()));
    let threads = p.resources.max_concurrent.map_or_else(|| "one per core".to_owned(), |n| n.to_string());
    let gpu = if p.resources.gpu_enabled { format!("{} GPUs", p.resources.gpus) } else { "no GPU".to_owned() };
    out.push_str(&format!(
        "resources: max_memory {}, worker threads: {threads}, {gpu}\n",
        format_bytes(p.resources.max_memory)
    ));
    out.push_str(&format!("seed: {}\n\n", p.seed));

    let header = [
        "level",
        "step",
        "kind",
        "shape",
        "after",
        "cache",
        "memory",
        "threads",
        "gpus",
        "retry",
        "timeout",
        "bad records",
    ];
    let mut rows: Vec<[String; 12]> = Vec::new();
    for (level, nodes) in dag.levels().iter().enumerate() {
        for &i in nodes {
            let n = dag.node(i);
            let s = &n.payload;
            let after: Vec<&str> = n.inputs.iter().map(|&j| dag.node(j).id.as_str()).collect();
            rows.push([
                level.to_string(),
                n.id.clone(),
                s.kind.clone(),
                n.shape.to_string(),
                if after.is_empty() { "-".to_owned() } else { after.join(", ") },
                cache.step(&n.id).map_or_else(|| "-".to_owned(), |c| weave::cache_status_text(&c.status, roles[i])),
                size_or_dash(s.resources.memory),
                s.resources
                    .io_concurrency
                    .map_or_else(|| s.resources.threads.to_string(), |c| format!("{} (io {c})", s.resources.threads)),
                s.resources.gpus.to_string(),
                retry_text(s.retry),
                duration_or_dash(s.timeout),
                match s.on_bad_record {
                    BadRecordPolicy::Fail => "fail".to_owned(),
                    BadRecordPolicy::Skip => "skip".to_owned(),
                },
            ]);
        }
    }
    out.push_str(&crate::table::render(&header, &rows));

    let cp = dag.critical_path();
    let ids: Vec<&str> = cp.nodes.iter().map(|&i| dag.node(i).id.as_str()).collect();
    out.push_str(&format!("\ncritical path (estimated cost {}): {}\n", trim_float(cp.cost), ids.join(" -> ")));
    if !p.alerts.is_empty() {
        out.push_str(&format!("alerts: {}\n", p.alerts.iter().map(|a| a.when.as_str()).collect::<Vec<_>>().join("; ")));
    }
    if explain {
        out.push_str("\nwhy:\n");
        for &i in dag.topological_order() {
            let n = dag.node(i);
            let Some(c) = cache.step(&n.id) else { continue };
            let status = weave::cache_status_text(&c.status, roles[i]);
            let why = if c.reasons.is_empty() {
                match status.as_str() {
                    "cached" => "unchanged; its output is in the cache".to_owned(),
                    _ => "unchanged".to_owned(),
                }
            } else {
                c.reasons.join("; ")
            };
            out.push_str(&format!("  {} ({status}): {why}\n", n.id));
        }
    }
    out
}

fn retry_text(r: weave::RetryPolicy) -> String {
    if r.max_retries == 0 {
        return "none".to_owned();
    }
    let how = match r.backoff {
        Backoff::Fixed => "fixed",
        Backoff::Linear => "linear",
        Backoff::Exponential => "exp",
    };
    format!("{}x from {} {how}", r.max_retries, format_duration(r.retry_delay))
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The plan as JSON (the session's, which the Python bindings return too).
pub(crate) fn json(p: &Pipeline, cache: &CachePlan) -> String {
    format!("{:#}\n", weave::plan_json(p, cache))
}
