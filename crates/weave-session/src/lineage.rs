//! The run record's lineage: each file a step reads or writes, with its size and blake3.

use std::path::{Path, PathBuf};

/// Each file as `{step, path, absolute, bytes, blake3}` (or `{step, path, absolute,
/// error}` when it cannot be read): `path` relative to the pipeline file's folder `base`,
/// as cache keys name it, and `absolute` its real path, so that neither depends on the
/// folder the run was started from.
pub(crate) fn lineage(
    index: &weave_cache::FileIndex,
    base: &Path,
    files: &[(String, PathBuf)],
) -> Vec<serde_json::Value> {
    files
        .iter()
        .map(|(step, path)| {
            let mut entry = serde_json::json!({
                "step": step,
                "path": weave_cache::pipeline_relative(base, path),
                "absolute": absolute(path),
            });
            let bytes = std::fs::metadata(path).map(|m| m.len());
            let more = match (index.hash(path), bytes) {
                (Ok(h), Ok(n)) => serde_json::json!({"bytes": n, "blake3": h.to_hex()}),
                (Err(e), _) => serde_json::json!({"error": e.to_string()}),
                (_, Err(e)) => serde_json::json!({"error": e.to_string()}),
            };
            if let (Some(entry), serde_json::Value::Object(more)) = (entry.as_object_mut(), more) {
                entry.extend(more);
            }
            entry
        })
        .collect()
}

/// `path` from the root, links followed where it exists.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}
