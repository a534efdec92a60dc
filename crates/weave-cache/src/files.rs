//! Input files' content hashes, computed once and then trusted while the file's
//! (path, size, mtime, inode) stay the same, the way git's index does.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::key::Key;

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: u128,
    inode: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Known {
    stamp: Stamp,
    hash: Key,
}

/// A file whose stamp is this recent may still change within the clock's granularity
/// without its stamp changing ("racily clean" in git's words): it is hashed every time.
/// Filesystems that keep whole seconds (FAT, some network mounts) get two seconds; those
/// that keep nanoseconds update mtimes on the kernel's tick (a few milliseconds), so a
/// tenth of a second is a wide margin, and a file written by the previous run is trusted
/// by the next.
fn racy_window(stamp: &Stamp) -> Duration {
    if stamp.mtime_ns.is_multiple_of(1_000_000_000) { Duration::from_secs(2) } else { Duration::from_millis(100) }
}

/// Content hashes of input files, kept in `files.json` in the cache folder.
#[derive(Debug)]
pub struct FileIndex {
    path: PathBuf,
    known: Mutex<HashMap<PathBuf, Known>>,
}

impl FileIndex {
    /// Loads the index kept in `dir` (an unreadable or damaged index starts empty: it is
    /// only a shortcut).
    pub fn load(dir: &Path) -> FileIndex {
        let path = dir.join("files.json");
        let known = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        FileIndex { path, known: Mutex::new(known) }
    }

    /// An empty index kept nowhere, for a run without a cache (its lineage still hashes
    /// the files it reads and writes). [`FileIndex::save`] must not be called on it.
    pub fn unsaved() -> FileIndex {
        FileIndex { path: PathBuf::new(), known: Mutex::new(HashMap::new()) }
    }

    /// The blake3 of `file`'s content: from the index when the file's stamp is unchanged,
    /// read and hashed otherwise.
    pub fn hash(&self, file: &Path) -> Result<Key, Error> {
        let abs = fs::canonicalize(file).map_err(Error::io(file))?;
        let meta = fs::metadata(&abs).map_err(Error::io(&abs))?;
        let stamp = stamp_of(&meta);
        if let Some(k) = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&abs)
            && k.stamp == stamp
        {
            return Ok(k.hash);
        }
        let mut hasher = blake3::Hasher::new();
        let f = File::open(&abs).map_err(Error::io(&abs))?;
        hasher.update_reader(std::io::BufReader::with_capacity(1 << 20, f)).map_err(Error::io(&abs))?;
        let hash = Key::from(hasher.finalize());
        let fresh = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < racy_window(&stamp));
        // A file changed while it was read, or too recently to trust its stamp, is not
        // remembered.
        let after = fs::metadata(&abs).map(|m| stamp_of(&m)).ok();
        if !fresh && after == Some(stamp) {
            self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(abs, Known { stamp, hash });
        }
        Ok(hash)
    }

    /// Writes the index back, atomically, merged with what other processes saved since it
    /// was loaded (runs sharing the cache: a shard of a job, another pipeline), so that
    /// the last to save does not drop what the others hashed. Where both know a file, this
    /// process's entry wins: it is the latest look at it.
    pub fn save(&self) -> Result<(), Error> {
        let on_disk: HashMap<PathBuf, Known> =
            fs::read(&self.path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (path, k) in on_disk {
            known.entry(path).or_insert(k);
        }
        let bytes = serde_json::to_vec(&*known).map_err(|e| Error::Encode(e.to_string()))?;
        drop(known);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        weave_fs::write_atomically(&self.path, &bytes).map_err(Error::io(&self.path))
    }
}

#[cfg(unix)]
fn stamp_of(meta: &fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let mtime_ns =
        meta.modified().ok().and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Stamp { size: meta.len(), mtime_ns, inode: meta.ino() }
}

#[cfg(not(unix))]
fn stamp_of(meta: &fs::Metadata) -> Stamp {
    let mtime_ns =
        meta.modified().ok().and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Stamp { size: meta.len(), mtime_ns, inode: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn unchanged_files_are_not_reread_and_changed_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.csv");
        fs::write(&data, "a,b\n1,2\n").unwrap();
        age(&data, 60);
        let idx = FileIndex::load(dir.path());
        let h1 = idx.hash(&data).unwrap();
        assert_eq!(h1, Key::of_content(b"a,b\n1,2\n"));
        idx.save().unwrap();

        // A new index from disk trusts the stamp: prove it by changing the content behind
        // an identical stamp (same size, mtime and inode), which only a reread would see.
        let meta = fs::metadata(&data).unwrap();
        fs::write(&data, "a,b\n9,9\n").unwrap();
        File::options().write(true).open(&data).unwrap().set_modified(meta.modified().unwrap()).unwrap();
        let idx = FileIndex::load(dir.path());
        assert_eq!(idx.hash(&data).unwrap(), h1, "trusted from the index");

        // A real change moves the stamp and is hashed again.
        fs::write(&data, "a,b\n9,9,9\n").unwrap();
        age(&data, 30);
        assert_eq!(idx.hash(&data).unwrap(), Key::of_content(b"a,b\n9,9,9\n"));
    }

    // Issue 17, item 1: runs sharing a cache (the shards of a job) each save the index;
    // the last one used to drop what the others had hashed.
    #[test]
    fn indexes_saved_by_two_runs_keep_what_both_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        for p in [&a, &b] {
            fs::write(p, p.to_string_lossy().as_bytes()).unwrap();
            age(p, 60);
        }
        let (first, second) = (FileIndex::load(dir.path()), FileIndex::load(dir.path()));
        first.hash(&a).unwrap();
        second.hash(&b).unwrap();
        first.save().unwrap();
        second.save().unwrap();
        let known = FileIndex::load(dir.path()).known.into_inner().unwrap();
        for p in [&a, &b] {
            assert!(known.contains_key(&fs::canonicalize(p).unwrap()), "{} kept", p.display());
        }
    }

    #[test]
    fn a_fresh_file_is_hashed_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.csv");
        fs::write(&data, "x").unwrap();
        let idx = FileIndex::load(dir.path());
        idx.hash(&data).unwrap();
        assert!(idx.known.lock().unwrap().is_empty(), "too recent to trust its stamp");
        assert!(idx.hash(&dir.path().join("missing")).is_err());
    }
}
