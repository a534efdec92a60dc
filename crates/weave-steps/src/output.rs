//! Output files that appear whole or not at all.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use weave_core::StepError;

/// A file written into a temporary file beside its target and renamed into place on
/// [`AtomicOutput::commit`]: a reader never sees a half-written file, and a failed run
/// leaves nothing (dropping the temporary file deletes it).
#[derive(Debug)]
pub(crate) struct AtomicOutput {
    path: PathBuf,
    out: Option<BufWriter<tempfile::NamedTempFile>>,
}

impl AtomicOutput {
    pub(crate) fn new(path: PathBuf) -> Self {
        AtomicOutput { path, out: None }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The writer, creating the temporary file on first use.
    pub(crate) fn writer(&mut self) -> Result<&mut BufWriter<tempfile::NamedTempFile>, StepError> {
        if self.out.is_none() {
            let dir = match self.path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            std::fs::create_dir_all(dir)
                .map_err(|e| StepError::environment(format!("cannot create {}", dir.display()), e))?;
            let tmp = tempfile::Builder::new().prefix(".weave-").suffix(".tmp").tempfile_in(dir).map_err(|e| {
                StepError::environment(format!("cannot create a temporary file in {}", dir.display()), e)
            })?;
            self.out = Some(BufWriter::with_capacity(1 << 20, tmp));
        }
        self.out.as_mut().ok_or_else(|| StepError::internal("writer vanished"))
    }

    /// Appends bytes.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        let path = self.path.clone();
        self.writer()?
            .write_all(bytes)
            .map_err(|e| StepError::environment(format!("cannot write {}", path.display()), e))
    }

    /// Syncs and renames into place; a run with no rows still produces its (empty) file.
    pub(crate) fn commit(&mut self) -> Result<(), StepError> {
        self.writer()?;
        let Some(w) = self.out.take() else { return Ok(()) };
        let path = &self.path;
        let tmp = w
            .into_inner()
            .map_err(|e| StepError::environment(format!("cannot write {}", path.display()), e.into_error()))?;
        tmp.as_file().sync_all().map_err(|e| StepError::environment(format!("cannot sync {}", path.display()), e))?;
        tmp.persist(path).map_err(|e| {
            StepError::environment(format!("cannot move the output into place at {}", path.display()), e.error)
        })?;
        Ok(())
    }

    /// Throws the temporary file away.
    pub(crate) fn abort(&mut self) {
        self.out = None;
    }
}
