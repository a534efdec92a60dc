//! The plan of a run as data: what `weave plan --format json` prints and what the Python
//! bindings' `plan()` returns, built in one place.

use weave_cache::{CachePlan, Status};
use weave_core::Pipeline;
use weave_exec::CacheUse;

use crate::session::planned_roles;

/// The word for a step's cache status in a plan: what the cache holds, and whether the
/// step will run (`role`).
pub fn cache_status_text(status: &Status, role: CacheUse) -> String {
    match (role, status) {
        (CacheUse::Skipped, Status::Cached) => "cached".to_owned(),
        (CacheUse::Skipped, _) => "skip (not needed)".to_owned(),
        (CacheUse::Replayed, _) => "cached".to_owned(),
        (CacheUse::Ran, Status::Cached) => "cached".to_owned(),
        (CacheUse::Ran, Status::Partial(n)) => format!("partial ({n} batches stored)"),
        (CacheUse::Ran, s) => s.label().to_owned(),
    }
}

/// How `pipeline` would run against the cache plan `cache`, as JSON: its steps in
/// topological order (kind, shape, level, config, resources, retry, cache status and
/// key), its parallel levels, its critical path and its warnings.
pub fn plan_json(p: &Pipeline, cache: &CachePlan) -> serde_json::Value {
    let dag = p.dag();
    let roles = planned_roles(p, cache);
    let steps: Vec<serde_json::Value> = dag
        .topological_order()
        .iter()
        .map(|&i| {
            let n = dag.node(i);
            let s = &n.payload;
            serde_json::json!({
                "id": n.id,
                "kind": s.kind,
                "version": s.version,
                "shape": n.shape,
                "level": dag.level_of(i),
                "after": n.inputs.iter().map(|&j| dag.node(j).id.clone()).collect::<Vec<_>>(),
                "config": serde_json::from_slice::<serde_json::Value>(s.config.as_bytes()).unwrap_or_else(|_| s.config.to_string().into()),
                "resources": s.resources,
                "retry": s.retry,
                "timeout_ms": s.timeout.map(|t| t.as_millis() as u64),
                "on_bad_record": s.on_bad_record,
                "estimated_cost": n.cost,
                "cache": cache.step(&n.id).map(|c| serde_json::json!({
                    "status": cache_status_text(&c.status, roles[i]),
                    "key": c.key.map(|k| k.to_hex()),
                    "stored": c.stores,
                    "reasons": c.reasons,
                })),
            })
        })
        .collect();
    let levels: Vec<Vec<&str>> =
        dag.levels().iter().map(|l| l.iter().map(|&i| dag.node(i).id.as_str()).collect()).collect();
    let cp = dag.critical_path();
    serde_json::json!({
        "pipeline": p.name,
        "seed": p.seed,
        "resources": {
            "max_memory": p.resources.max_memory,
            "max_concurrent": p.resources.max_concurrent,
            "gpu_enabled": p.resources.gpu_enabled,
        },
        "steps": steps,
        "levels": levels,
        "critical_path": {
            "steps": cp.nodes.iter().map(|&i| dag.node(i).id.as_str()).collect::<Vec<_>>(),
            "estimated_cost": cp.cost,
        },
        "warnings": p.warnings().0.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
    })
}
