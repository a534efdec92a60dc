//! Output files that appear whole or not at all.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use weave_core::StepError;

/// The buffered temporary file an [`AtomicOutput`] writes into.
pub(crate) type TempWriter = BufWriter<tempfile::NamedTempFile>;

/// A file written into a temporary file beside its target and renamed into place on
/// [`AtomicOutput::commit`]: a reader never sees a half-written file, and a failed run
/// leaves nothing (dropping the temporary file deletes it).
#[derive(Debug)]
pub(crate) struct AtomicOutput {
    path: PathBuf,
    out: Option<TempWriter>,
}

impl AtomicOutput {
    pub(crate) fn new(path: PathBuf) -> Self {
        AtomicOutput { path, out: None }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The writer, creating the temporary file on first use.
    pub(crate) fn writer(&mut self) -> Result<&mut TempWriter, StepError> {
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

    /// Hands the writer itself over, for a format library that must own what it writes to
    /// (the Parquet writer). Give it back with [`AtomicOutput::restore`] before
    /// [`AtomicOutput::commit`]; dropping it instead deletes the temporary file.
    pub(crate) fn take_writer(&mut self) -> Result<TempWriter, StepError> {
        self.writer()?;
        self.out.take().ok_or_else(|| StepError::internal("writer vanished"))
    }

    /// Takes back the writer [`AtomicOutput::take_writer`] handed over.
    pub(crate) fn restore(&mut self, writer: TempWriter) {
        self.out = Some(writer);
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
