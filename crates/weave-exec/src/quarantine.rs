//! The quarantine file: bad records set aside with their reason, one JSON object a line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use weave_core::Rejected;

use crate::error::Error;

/// Appends rejected records to a JSONL file, created on the first record of the run.
#[derive(Debug)]
pub(crate) struct Quarantine {
    path: Option<PathBuf>,
    out: Mutex<Option<BufWriter<File>>>,
}

impl Quarantine {
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        Quarantine { path, out: Mutex::new(None) }
    }

    /// Writes `rejected` for `step`. Without a path, rejected records cannot be kept, so
    /// skipping them is refused rather than losing them silently.
    pub(crate) fn write(&self, step: &str, rejected: &[Rejected]) -> Result<(), Error> {
        let Some(path) = &self.path else {
            let first = &rejected[0];
            return Err(Error::BadRecord {
                step: step.to_owned(),
                reason: format!("{} (no quarantine file is set, so the record cannot be skipped)", first.reason),
                origin: first.origin.clone(),
            });
        };
        let io = |source| Error::Quarantine { path: path.clone(), source };
        let mut guard = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            *guard = Some(BufWriter::new(File::create(path).map_err(io)?));
        }
        let Some(out) = guard.as_mut() else { return Ok(()) };
        for r in rejected {
            let line = serde_json::json!({
                "step": step,
                "reason": r.reason,
                "origin": r.origin,
                "record": r.record,
            });
            writeln!(out, "{line}").map_err(io)?;
        }
        Ok(())
    }

    /// Flushes what was written.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        let mut guard = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(out), Some(path)) = (guard.as_mut(), &self.path) {
            out.flush().map_err(|source| Error::Quarantine { path: path.clone(), source })?;
        }
        Ok(())
    }
}
