//! Input files' content hashes, computed once and then trusted while the file's
//! (path, size, mtime, inode) stay the same, the way git's index does.
//!
//! Processes sharing a cache folder hash a large file once between them: the shards of
//! a job start together, and each would otherwise read the whole input to key its share
//! of it. The first to need a file's hash takes a lock named for the file in `files.d/`,
//! hashes it and leaves the hash there; the others wait for the lock and take the hash
//! (`weave_fs::shared_fact`, which the loaders use for facts of their own).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use weave_fs::Stamp;

use crate::error::Error;
use crate::key::Key;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Known {
    stamp: Stamp,
    hash: Key,
}

/// Content hashes of input files, kept in `files.json` in the cache folder.
#[derive(Debug)]
pub struct FileIndex {
    path: PathBuf,
    known: Mutex<HashMap<PathBuf, Known>>,
    /// Where a large file's hash is left for the other processes that share the cache
    /// (`files.d/` beside `files.json`); `None` for an index kept nowhere.
    shared: Option<PathBuf>,
}

/// Files smaller than this are hashed by each process that needs them: hashing a
/// mebibyte takes well under a millisecond, less than taking a lock and writing a record.
const SHARED_FROM: u64 = 1 << 20;

impl FileIndex {
    /// Loads the index kept in `dir` (an unreadable or damaged index starts empty: it is
    /// only a shortcut).
    pub fn load(dir: &Path) -> FileIndex {
        let path = dir.join("files.json");
        let known = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        FileIndex { path, known: Mutex::new(known), shared: Some(dir.join("files.d")) }
    }

    /// An empty index kept nowhere, for a run without a cache (its lineage still hashes
    /// the files it reads and writes). [`FileIndex::save`] must not be called on it.
    pub fn unsaved() -> FileIndex {
        FileIndex { path: PathBuf::new(), known: Mutex::new(HashMap::new()), shared: None }
    }

    /// The blake3 of `file`'s content: from the index when the file's stamp is unchanged,
    /// read and hashed otherwise (a large file once between the processes sharing the
    /// cache).
    pub fn hash(&self, file: &Path) -> Result<Key, Error> {
        let abs = fs::canonicalize(file).map_err(Error::io(file))?;
        let meta = fs::metadata(&abs).map_err(Error::io(&abs))?;
        let stamp = Stamp::of(&meta);
        if let Some(k) = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&abs)
            && k.stamp == stamp
        {
            return Ok(k.hash);
        }
        let read = || -> std::io::Result<[u8; 32]> {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(std::io::BufReader::with_capacity(1 << 20, File::open(&abs)?))?;
            Ok(*hasher.finalize().as_bytes())
        };
        let shared = self.shared.as_deref().filter(|_| stamp.size() >= SHARED_FROM);
        let fact = weave_fs::shared_fact(shared, &abs, "blake3", read).map_err(Error::io(&abs))?;
        let hash = Key::from(blake3::Hash::from_bytes(fact.value));
        // A file changed while it was read, or too recently to trust its stamp, is not
        // remembered.
        if fact.trusted {
            let known = Known { stamp: fact.stamp, hash };
            self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(abs, known);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

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

    // Issue 17: the shards of a job start together, and each hashed the whole input to key
    // its share of it (4 shards, 4 reads of every byte).
    #[test]
    fn processes_sharing_a_cache_hash_a_large_file_once_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("big.jsonl");
        let content = vec![b'x'; (SHARED_FROM + 10) as usize];
        fs::write(&data, &content).unwrap();
        age(&data, 60);
        // Two processes' indexes, neither saved: only the record in files.d/ links them.
        let (first, second) = (FileIndex::load(dir.path()), FileIndex::load(dir.path()));
        let h = first.hash(&data).unwrap();
        assert_eq!(h, Key::of_content(&content));
        // Change the content behind an identical stamp: the second index's answer can then
        // only come from the first's record.
        let meta = fs::metadata(&data).unwrap();
        let mut other = content.clone();
        other[0] = b'y';
        fs::write(&data, &other).unwrap();
        File::options().write(true).open(&data).unwrap().set_modified(meta.modified().unwrap()).unwrap();
        assert_eq!(second.hash(&data).unwrap(), h, "taken from the first process's record");

        // A real change moves the stamp: the record no longer applies, and is replaced.
        fs::write(&data, &other).unwrap();
        age(&data, 30);
        let third = FileIndex::load(dir.path());
        assert_eq!(third.hash(&data).unwrap(), Key::of_content(&other));
        assert_eq!(FileIndex::load(dir.path()).hash(&data).unwrap(), Key::of_content(&other));

        // Threads of their own, started together, all get the right hash.
        let hashes: Vec<Key> = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..4).map(|_| s.spawn(|| FileIndex::load(dir.path()).hash(&data).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(hashes.iter().all(|k| *k == Key::of_content(&other)));

        // A damaged record is only a shortcut missed.
        for entry in fs::read_dir(dir.path().join("files.d")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "json") {
                fs::write(&p, b"{not json").unwrap();
            }
        }
        assert_eq!(FileIndex::load(dir.path()).hash(&data).unwrap(), Key::of_content(&other));
        // Small files are hashed by each process, with no record left.
        let small = dir.path().join("small.csv");
        fs::write(&small, b"a\n").unwrap();
        age(&small, 60);
        let before = fs::read_dir(dir.path().join("files.d")).unwrap().count();
        FileIndex::load(dir.path()).hash(&small).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("files.d")).unwrap().count(), before);
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
