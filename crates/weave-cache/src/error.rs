//! The cache's errors.

use std::path::PathBuf;

/// What went wrong with the cache. A damaged entry is not an error: it is reported as a
/// warning, removed, and read as a miss.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cache folder or an entry could not be read or written.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be encoded for the cache.
    #[error("cannot encode a cache entry: {0}")]
    Encode(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
