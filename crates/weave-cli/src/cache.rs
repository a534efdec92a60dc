//! The `weave cache` commands.

use std::path::Path;
use weave::cache::Store;
use weave::format_bytes;

use crate::Failure;

/// Opens the store in `dir`.
fn open(dir: &Path) -> Result<Store, Failure> {
    Store::open(dir).map_err(|e| Failure::Other(format!("cannot open the cache in {}: {e}", dir.display())))
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
