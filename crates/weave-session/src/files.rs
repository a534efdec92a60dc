//! The pipeline file a run was read from, and the places a run keeps its files when the
//! caller does not say: all beside the pipeline file.

use std::path::{Path, PathBuf};

use weave_core::{BuildOptions, Diagnostics, Pipeline, Registry};

use crate::session::SessionError;

/// The environment variable that moves the cache.
pub const CACHE_DIR_ENV: &str = "WEAVE_CACHE_DIR";

/// A pipeline file as read: its path (where relative paths resolve from) and its text.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    /// The file, as the caller named it.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl PipelineFile {
    /// Reads the file. Text that is not UTF-8 is an error naming the line and column where
    /// it stops being UTF-8.
    pub fn read(path: impl AsRef<Path>) -> Result<PipelineFile, SessionError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| SessionError::Read { path: path.to_path_buf(), source: e })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
            SessionError::NotUtf8 { path: path.to_path_buf(), line, column }
        })?;
        Ok(PipelineFile { path: path.to_path_buf(), text })
    }

    /// Parses the file and builds its steps through `registry`, with the caller's options
    /// over the file's (see [`RunOptions::build_options`](crate::RunOptions::build_options)).
    pub fn build(&self, registry: &Registry, options: &BuildOptions) -> Result<Pipeline, Diagnostics> {
        Pipeline::from_file_text_with(&self.path, &self.text, registry, options)
    }

    /// The hash of the file's text that the run record keeps, to tell runs of different
    /// versions of a pipeline apart.
    pub fn config_hash(&self) -> String {
        weave_cache::Key::of_content(self.text.as_bytes()).to_hex()
    }
}

/// Where the cache of the pipeline file `file` lives: `flag` (the caller's own choice,
/// `--cache-dir`), else `$WEAVE_CACHE_DIR`, else the file's `[cache] dir` (`configured`),
/// else `.weave/cache` beside the pipeline file.
pub fn cache_dir_for(file: &Path, configured: Option<&Path>, flag: Option<&Path>) -> PathBuf {
    caller_cache_dir(flag)
        .or_else(|| configured.map(Path::to_path_buf))
        .unwrap_or_else(|| weave_core::default_cache_dir(file))
}

/// The cache folder the caller chose over the file's: `flag`, else `$WEAVE_CACHE_DIR`.
pub(crate) fn caller_cache_dir(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = flag {
        return Some(d.to_path_buf());
    }
    std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()).map(PathBuf::from)
}

/// `.weave/runs` beside the pipeline file: where run records go.
pub fn runs_dir(file: &Path) -> PathBuf {
    weave_core::resolve(file, ".weave/runs")
}

/// `.weave/quarantine.jsonl` beside the pipeline file.
pub fn default_quarantine(file: &Path) -> PathBuf {
    weave_core::resolve(file, ".weave/quarantine.jsonl")
}
