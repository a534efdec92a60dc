//! Object storage in a build without the `remote` feature: a URL is recognised, so that
//! it is refused with a message that says why, rather than read as a local path.

use std::io::Read;
use std::path::{Path, PathBuf};

use weave_core::StepError;

const OFF: &str = "this build of Weave reads and writes no object storage (weave-io's `remote` feature is off)";

/// Whether `raw` (a `path` key as written) names a remote object rather than a file.
pub(crate) fn is_url(raw: &str) -> bool {
    ["s3://", "http://", "https://"].iter().any(|s| raw.len() > s.len() && raw[..s.len()].eq_ignore_ascii_case(s))
}

/// Whether `path` is a remote object's URL.
pub(crate) fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(is_url)
}

/// A remote object as the store described it (never, in this build).
pub(crate) struct Object {
    /// Its URL.
    pub(crate) url: String,
}

/// Refuses a remote `path` key.
pub(crate) fn resolve(raw: &str) -> Result<Vec<Object>, String> {
    Err(format!("cannot read {raw}: {OFF}"))
}

/// Nothing to note.
pub(crate) fn remember(_: &[Object]) {}

/// No remote identities, since no remote path is accepted.
pub(crate) fn identities(_: &[PathBuf]) -> Vec<serde_json::Value> {
    Vec::new()
}

/// Refused.
pub(crate) fn size(path: &Path) -> Result<u64, StepError> {
    Err(StepError::fatal(format!("cannot read {}: {OFF}", path.display())))
}

/// Refused.
pub(crate) fn open(path: &Path, _start: u64) -> Result<Box<dyn Read + Send>, StepError> {
    Err(StepError::fatal(format!("cannot read {}: {OFF}", path.display())))
}

/// Refused.
pub(crate) fn check_target(url: &str) -> Result<(), String> {
    Err(format!("cannot write {url}: {OFF}"))
}

/// Refused.
pub(crate) fn upload(_from: &Path, url: &Path) -> Result<(), StepError> {
    Err(StepError::fatal(format!("cannot write {}: {OFF}", url.display())))
}

/// Refused: nothing was uploaded.
pub(crate) fn remove(url: &Path) -> Result<(), String> {
    Err(format!("cannot remove {}: {OFF}", url.display()))
}

/// Refused.
pub(crate) fn read_whole(url: &Path) -> std::io::Result<Vec<u8>> {
    Err(std::io::Error::other(format!("cannot read {}: {OFF}", url.display())))
}

/// Nothing to configure: no URL is accepted.
pub(crate) fn configure(_url: &str, _storage: &weave_core::StorageSettings) {}
