//! Facts about a file's content (its hash, where its first quote is), worked out once and
//! then trusted while the file's stamp (size, modification time, inode) stays the same,
//! the way git's index trusts a file it has hashed.
//!
//! Processes that share a folder (the shards of a job, over one cache) work a fact out
//! once between them: the first to need it takes a lock named for the file and the fact
//! in that folder, works it out and leaves it there; the others wait for the lock and take
//! it. A file changed while it was read, or too recently to trust its stamp, is worked
//! out by each and left nowhere.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    size: u64,
    mtime_ns: u128,
    inode: u64,
}

impl Stamp {
    /// The stamp of a file with this metadata.
    pub fn of(meta: &fs::Metadata) -> Stamp {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp { size: meta.len(), mtime_ns, inode }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the file was modified too recently for its stamp to be trusted: it may
    /// still change within the clock's granularity without its stamp changing ("racily
    /// clean" in git's words). File systems that keep whole seconds (FAT, some network
    /// mounts) get two seconds; those that keep nanoseconds update modification times on
    /// the kernel's tick (a few milliseconds), so a tenth of a second is a wide margin,
    /// and a file written by the previous run is trusted by the next. A time in the
    /// future is fresh.
    pub fn is_fresh(&self) -> bool {
        let window = if self.mtime_ns.is_multiple_of(1_000_000_000) {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(100)
        };
        let modified = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(self.mtime_ns).unwrap_or(u64::MAX));
        SystemTime::now().duration_since(modified).is_ok_and(|age| age < window) || SystemTime::now() < modified
    }
}

/// A fact worked out or taken from the folder, and whether it may be remembered: the
/// file did not change while it was read and its stamp is old enough to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact<T> {
    /// The fact.
    pub value: T,
    /// The file's stamp when it was worked out.
    pub stamp: Stamp,
    /// Whether it holds for the file as long as its stamp stays the same.
    pub trusted: bool,
}

/// What is left in the folder: the file, its stamp and the fact.
#[derive(Serialize, Deserialize)]
struct Record<T> {
    path: PathBuf,
    stamp: Stamp,
    value: T,
}

/// Fact `what` (`"blake3"`, `"first-quote"`) about `file` (a canonical path), shared
/// through the folder `dir`: taken from there when a process that shares it worked it out
/// for the file as it is, or worked out now by `work_out` (under a lock, so that the
/// others wait and take it rather than work it out too) and left there. A record that
/// cannot be read or written only costs the others the work. Without a folder, worked
/// out now, and trusted on the same terms.
pub fn shared_fact<T: Serialize + DeserializeOwned>(
    dir: Option<&Path>,
    file: &Path,
    what: &str,
    work_out: impl FnOnce() -> io::Result<T>,
) -> io::Result<Fact<T>> {
    let stamp = Stamp::of(&fs::metadata(file)?);
    // A file changed while it was read is not remembered.
    let unchanged = || fs::metadata(file).map(|m| Stamp::of(&m)).ok() == Some(stamp);
    let Some(dir) = dir.filter(|_| !stamp.is_fresh()) else {
        let value = work_out()?;
        return Ok(Fact { value, stamp, trusted: !stamp.is_fresh() && unchanged() });
    };
    let name = format!("{:016x}-{what}", crate::fnv1a(file.as_os_str().as_encoded_bytes().iter().copied()));
    let (lock, record) = (dir.join(format!("{name}.lock")), dir.join(format!("{name}.json")));
    let _lock = lock_file(&lock);
    if let Some(left) = fs::read(&record).ok().and_then(|b| serde_json::from_slice::<Record<T>>(&b).ok())
        && left.path == file
        && left.stamp == stamp
    {
        return Ok(Fact { value: left.value, stamp, trusted: true });
    }
    let value = work_out()?;
    let trusted = unchanged();
    if trusted {
        let left = Record { path: file.to_path_buf(), stamp, value };
        match serde_json::to_vec(&left) {
            Ok(bytes) => {
                if let Err(e) = crate::write_atomically(&record, &bytes) {
                    log::debug!("cannot leave the {what} of {} in {}: {e}", file.display(), record.display());
                }
            }
            Err(e) => log::debug!("cannot write the {what} of {}: {e}", file.display()),
        }
        return Ok(Fact { value: left.value, stamp, trusted });
    }
    Ok(Fact { value, stamp, trusted })
}

/// Takes the lock `path` names (made, and its folder, when missing), waiting for the
/// process that holds it; `None` when it cannot be taken (a file system without locks):
/// the work is then done without waiting for anyone.
fn lock_file(path: &Path) -> Option<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).ok()?;
    }
    let file = File::options().create(true).truncate(false).write(true).open(path).ok()?;
    match file.lock() {
        Ok(()) => Some(file),
        Err(e) => {
            log::debug!("cannot lock {}: {e}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn a_fact_is_worked_out_once_between_processes_and_again_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.csv");
        fs::write(&file, "a,b\n1,2\n").unwrap();
        age(&file, 60);
        let file = fs::canonicalize(&file).unwrap();
        let folder = dir.path().join("files.d");
        let worked = Cell::new(0);
        let fact = |v: u64| {
            let f = shared_fact(Some(&folder), &file, "n", || {
                worked.set(worked.get() + 1);
                Ok(v)
            })
            .unwrap();
            (f.value, f.trusted)
        };
        assert_eq!(fact(7), (7, true));
        // Another process finds it there.
        assert_eq!(fact(8), (7, true));
        assert_eq!(worked.get(), 1);
        // Another fact about the same file is its own.
        assert_eq!(shared_fact(Some(&folder), &file, "m", || Ok(3u64)).unwrap().value, 3);
        // The file changes: worked out again.
        fs::write(&file, "a,b\n1,2\n3,4\n").unwrap();
        age(&file, 60);
        assert_eq!(fact(9), (9, true));
        assert_eq!(worked.get(), 2);
        // A damaged record is worked out again.
        for e in fs::read_dir(&folder).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "json") {
                fs::write(e.path(), b"{").unwrap();
            }
        }
        assert_eq!(fact(10).0, 10);
    }

    #[test]
    fn a_fresh_file_is_worked_out_every_time_and_left_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.csv");
        fs::write(&file, "x\n").unwrap();
        let folder = dir.path().join("files.d");
        for (v, folder) in [(1u8, Some(folder.as_path())), (2, Some(folder.as_path())), (3, None)] {
            let f = shared_fact(folder, &file, "n", || Ok(v)).unwrap();
            assert_eq!((f.value, f.trusted), (v, false));
        }
        assert!(!folder.exists() || fs::read_dir(&folder).unwrap().next().is_none());
        assert!(shared_fact(Some(&folder), &dir.path().join("missing"), "n", || Ok(0u8)).is_err());
    }
}
