//! The cache as the CLI uses it: where it lives, the plan of a run against it, and the
//! `weave cache` commands.

use std::path::{Path, PathBuf};
use weave::cache::{CacheOptions, CachePlan, Status, Store};
use weave::{CacheUse, Pipeline, format_bytes};

use crate::Failure;

/// The environment variable that moves the cache.
pub(crate) const CACHE_DIR_ENV: &str = "WEAVE_CACHE_DIR";

/// Where the cache of a pipeline lives: `--cache-dir`, else `$WEAVE_CACHE_DIR`, else the
/// file's `[cache] dir` (`configured`), else `.weave/cache` beside the pipeline file.
pub(crate) fn dir_for(file: &Path, configured: Option<&Path>, flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    configured.map_or_else(|| weave::default_cache_dir(file), Path::to_path_buf)
}

/// Opens the store in `dir`.
pub(crate) fn open(dir: &Path) -> Result<Store, Failure> {
    Store::open(dir).map_err(|e| Failure::Other(format!("cannot open the cache in {}: {e}", dir.display())))
}

/// Checks that every `--refresh` names a step.
pub(crate) fn check_refresh(pipeline: &Pipeline, refresh: &[String]) -> Result<(), Failure> {
    let ids: Vec<&str> = pipeline.dag().nodes().iter().map(|n| n.id.as_str()).collect();
    for r in refresh {
        if !ids.contains(&r.as_str()) {
            let hint = weave::did_you_mean(r, ids.iter().copied())
                .map_or_else(String::new, |s| format!(" (did you mean \"{s}\"?)"));
            return Err(Failure::Other(format!(
                "--refresh {r}: the pipeline has no step \"{r}\"{hint}; its steps: {}",
                ids.join(", ")
            )));
        }
    }
    Ok(())
}

/// The plan of `pipeline` against the cache in `dir`.
pub(crate) fn plan(pipeline: &Pipeline, dir: &Path, options: &CacheOptions) -> Result<CachePlan, Failure> {
    CachePlan::open(pipeline, dir, options)
        .map_err(|e| Failure::Other(format!("cannot open the cache in {}: {e}", dir.display())))
}

/// What the run will do with each step given the plan, in the DAG's node order.
pub(crate) fn roles(pipeline: &Pipeline, plan: &CachePlan) -> Vec<CacheUse> {
    weave::cache_roles(pipeline.dag(), &|id| plan.step(id).is_some_and(|s| s.stores && s.status == Status::Cached))
}

/// The word for a step in `weave plan`: what the cache holds, and whether it will run.
pub(crate) fn status_text(status: &Status, role: CacheUse) -> String {
    match (role, status) {
        (CacheUse::Skipped, Status::Cached) => "cached".to_owned(),
        (CacheUse::Skipped, _) => "skip (not needed)".to_owned(),
        (CacheUse::Replayed, _) => "cached".to_owned(),
        (CacheUse::Ran, Status::Cached) => "cached".to_owned(),
        (CacheUse::Ran, Status::Partial(n)) => format!("partial ({n} batches stored)"),
        (CacheUse::Ran, s) => s.label().to_owned(),
    }
}

/// `weave cache stats`.
pub(crate) fn stats(dir: &Path) -> Result<String, Failure> {
    let store = open(dir)?;
    let s = store.stats().map_err(|e| Failure::Other(e.to_string()))?;
    Ok(format!("cache: {}\nentries: {}\nsize: {}\n", dir.display(), s.entries, format_bytes(s.bytes)))
}

/// `weave cache ls`: every entry, most recently used first.
pub(crate) fn ls(dir: &Path) -> Result<String, Failure> {
    let store = open(dir)?;
    let mut list = store.list().map_err(|e| Failure::Other(e.to_string()))?;
    list.sort_by_key(|e| std::cmp::Reverse(e.2));
    let mut out = format!("{:<64}  {:>10}  last used\n", "key", "size");
    for (key, bytes, used) in list {
        let age = used.elapsed().map_or_else(
            |_| "now".to_owned(),
            |d| format!("{} ago", weave::format_duration(std::time::Duration::from_secs(d.as_secs()))),
        );
        out.push_str(&format!("{key}  {:>10}  {age}\n", format_bytes(bytes)));
    }
    Ok(out)
}

/// `weave cache gc --max-size SIZE`.
pub(crate) fn gc(dir: &Path, max_bytes: u64) -> Result<String, Failure> {
    let store = open(dir)?;
    let removed = weave::cache::gc(&store, max_bytes).map_err(|e| Failure::Other(e.to_string()))?;
    let left = store.stats().map_err(|e| Failure::Other(e.to_string()))?;
    Ok(format!(
        "removed {} entries ({}); {} entries ({}) left\n",
        removed.entries,
        format_bytes(removed.bytes),
        left.entries,
        format_bytes(left.bytes)
    ))
}
