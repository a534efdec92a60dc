//! Temporary files that name the process that owns them, so that a later run can tell
//! a dead run's leftovers (a SIGKILL, a power cut) from a live run's work in progress.
//!
//! Every file a run writes before moving it into place (an export, a part of a set, an
//! exclusion file, the metrics file, a cache entry, the cache's file index and keys, a
//! pin, a run record's report) is a [`TempFile`] beside its target (or, for the cache's
//! entries, in the cache's `tmp/`), named `.weave-<pid space>-<pid>-<start>-<n>.tmp`: its
//! [`Owner`]'s pid space (16 hex digits: see [`crate::pid_space`]), process id and start
//! time (0 where unknown), and a number unique in the process. Before it makes its first
//! temporary file in a folder, a process removes the temporary files there whose owner is
//! gone ([`sweep_dead_temporaries`]); the files of a live process, files named otherwise,
//! and files whose owner cannot be told (a system without `/proc`) are left alone. A file
//! of an owner on another machine of a cluster goes once its lease has run out (its
//! modification time, renewed while its owner lives: [`crate::hold_lease`]).
//!
//! Each live temporary file is also listed in the process, so that a forced stop (a
//! second Ctrl-C) can remove them before it exits ([`remove_live_temporaries`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::owner::Owner;

/// How every temporary file's name starts.
const PREFIX: &str = ".weave-";
/// How every temporary file's name ends.
const SUFFIX: &str = ".tmp";

/// A folder swept less than this long ago is not swept again by this process: a set of
/// many parts makes a temporary file per part, and a folder read per part would cost a
/// run with 10,000 parts 10,000 listings of 10,000 files.
const SWEEP_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// The name of `owner`'s temporary file number `n`: `.weave-<tag>.tmp` ([`owner_tag`]).
fn name_of(owner: Owner, n: u64) -> String {
    format!("{PREFIX}{}{SUFFIX}", owner_tag(owner, n))
}

/// The owner a temporary file's name records, if it records one.
fn owner_of_name(name: &str) -> Option<Owner> {
    owner_of_tag(name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?)
}

/// The part of a file's name that says which process owns it (its number `n` of such
/// files): `<pid space>-<pid>-<start>-<n>`, the pid space in 16 hex digits, the start time
/// 0 where unknown; `<pid>-<start>-<n>` where the pid space is unknown, as versions of
/// weave from before it was kept named them all. Temporary files and the cache's packs
/// are named with it.
pub fn owner_tag(owner: Owner, n: u64) -> String {
    let (pid, start) = (owner.pid(), owner.start().unwrap_or(0));
    match owner.space() {
        Some(space) => format!("{space:016x}-{pid}-{start}-{n}"),
        None => format!("{pid}-{start}-{n}"),
    }
}

/// The owner an [`owner_tag`] names; `None` for text that is not one (a tag without a pid
/// space is taken for this machine's).
pub fn owner_of_tag(tag: &str) -> Option<Owner> {
    let fields: Vec<&str> = tag.split('-').collect();
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let (space, rest) = match fields.as_slice() {
        [space, rest @ ..] if rest.len() == 3 && space.len() == 16 && space.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (Some(u64::from_str_radix(space, 16).ok()?), rest)
        }
        rest if rest.len() == 3 => (None, rest),
        _ => return None,
    };
    let [pid, start, n] = rest else { return None };
    if !digits(pid) || !digits(start) || !digits(n) {
        return None;
    }
    let start: u64 = start.parse().ok()?;
    let start = (start != 0).then_some(start);
    let pid = pid.parse().ok()?;
    Some(match space {
        Some(space) => Owner::in_space(pid, start, Some(space)),
        None => Owner::new(pid, start),
    })
}

/// The paths of this process's temporary files that exist now (their leases are renewed
/// with the others: [`crate::hold_lease`]).
pub(crate) fn live_paths() -> Vec<PathBuf> {
    live().lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
}

/// The temporary files of this process that exist now.
fn live() -> &'static Mutex<HashSet<PathBuf>> {
    static LIVE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// A file written under a temporary name beside its target (see the module's
/// documentation), removed when dropped unless [`TempFile::persist`]ed.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl TempFile {
    /// Creates a new temporary file in `dir` (which must exist), after removing the
    /// temporary files there whose owner is gone. It gets the permissions `File::create`
    /// gives (0666 less the umask): it becomes the user's file.
    pub fn new_in(dir: &Path) -> std::io::Result<(File, TempFile)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        sweep_once(dir);
        crate::owner::start_keeper();
        let owner = Owner::current();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(name_of(owner, n));
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    live().lock().unwrap_or_else(PoisonError::into_inner).insert(path.clone());
                    return Ok((file, TempFile { path, kept: false }));
                }
                // Left by an earlier process that had this id and start time: impossible
                // unless the clock ticks wrapped, but a new number costs nothing.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the file to `target` (a rename: `target` must be in the same file system,
    /// which beside it is), replacing what was there. On failure the file stays
    /// temporary, and is removed when dropped.
    pub fn persist(mut self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.kept = true;
        Ok(())
    }
}

/// Writes `bytes` to `path` through a [`TempFile`] beside it and a rename, so that a
/// reader sees the old file or the new one, never half of one, two writers never write
/// into one temporary file, and a writer killed half-way leaves a file that the next
/// writer in the folder removes. Not synced: for files that are cheap to lose in a power
/// cut (indexes, records, metrics), not for data.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (mut file, tmp) = TempFile::new_in(dir)?;
    file.write_all(bytes)?;
    drop(file);
    tmp.persist(path)
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
        live().lock().unwrap_or_else(PoisonError::into_inner).remove(&self.path);
    }
}

/// Removes every temporary file of this process that exists now, and returns how many
/// were removed. For a forced stop, just before the process exits: the threads writing
/// them are not waited for (a file still open is removed from its folder all the same).
pub fn remove_live_temporaries() -> usize {
    remove_live(|_| true)
}

/// Removes the temporary files of this process that exist now and that `which` picks.
fn remove_live(which: impl Fn(&Path) -> bool) -> usize {
    let paths: Vec<PathBuf> =
        live().lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|p| which(p)).cloned().collect();
    paths.iter().filter(|p| std::fs::remove_file(p).is_ok()).count()
}

/// Removes the temporary files in `dir` whose owner is gone (see the module's
/// documentation), and returns how many were removed. A folder that cannot be read has
/// none.
pub fn sweep_dead_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(owner_of_name) else { continue };
        let path = entry.path();
        if !crate::holder_is_gone(&owner, &path) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                removed += 1;
                log::info!("removed {}, left by process {} which is gone", path.display(), owner.pid());
            }
            Err(e) => log::debug!("cannot remove {}, left by a process that is gone ({e})", path.display()),
        }
    }
    removed
}

/// [`sweep_dead_temporaries`], unless this process swept `dir` within the last minute.
fn sweep_once(dir: &Path) {
    static SWEPT: OnceLock<Mutex<HashMap<PathBuf, Instant>>> = OnceLock::new();
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    {
        let mut swept = SWEPT.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
        if swept.get(&key).is_some_and(|at| at.elapsed() < SWEEP_AGAIN_AFTER) {
            return;
        }
        swept.insert(key, Instant::now());
    }
    sweep_dead_temporaries(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_record_their_owner_and_nothing_else_parses() {
        let o = Owner::new(4242, Some(987_654));
        assert_eq!(owner_of_name(&name_of(o, 3)), Some(o));
        // A start time that could not be read is written as 0, and read as unknown.
        assert_eq!(owner_of_name(&name_of(Owner::new(5, None), 1)), Some(Owner::new(5, None)));
        // With its pid space, and as versions from before it was kept named them.
        let elsewhere = Owner::in_space(9, Some(8), Some(0x0123_4567_89ab_cdef));
        assert_eq!(name_of(elsewhere, 7), ".weave-0123456789abcdef-9-8-7.tmp");
        assert_eq!(owner_of_name(".weave-0123456789abcdef-9-8-7.tmp"), Some(elsewhere));
        assert_eq!(owner_of_name(".weave-9-8-7.tmp"), Some(Owner::new(9, Some(8))));
        for other in [
            ".weave-abc123.tmp",
            ".weave-1-2.tmp",
            ".weave-1-2-3-4.tmp",
            "weave-1-2-3.tmp",
            ".weave-1-x-3.tmp",
            ".weave-0123456789abcdeg-9-8-7.tmp",
            ".weave-0123456789abcdef-9-8-7-6.tmp",
        ] {
            assert_eq!(owner_of_name(other), None, "{other}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_temporary_file_of_another_machine_goes_only_once_its_lease_has_run_out() {
        let dir = tempfile::tempdir().unwrap();
        let me = Owner::current();
        // A node of the cluster writing into the shared folder, with this very pid.
        let other = Owner::in_space(me.pid(), me.start(), me.space().map(|s| !s));
        let path = dir.path().join(name_of(other, 1));
        std::fs::write(&path, "part of a live node's output").unwrap();
        assert_eq!(sweep_dead_temporaries(dir.path()), 0);
        assert!(path.exists(), "its lease is fresh");
        let old = std::time::SystemTime::now() - crate::LEASE_EXPIRY - Duration::from_secs(1);
        File::options().append(true).open(&path).unwrap().set_modified(old).unwrap();
        assert_eq!(sweep_dead_temporaries(dir.path()), 1);
        assert!(!path.exists(), "its node stopped renewing it");
    }

    #[test]
    fn the_sweep_removes_dead_owners_files_only() {
        let dir = tempfile::tempdir().unwrap();
        // A live process other than this one, holding a temporary file.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let live = Owner::of_process(child.id()).unwrap();
        // A process that has exited, and one whose id now belongs to another process
        // (this one's id with another start time).
        let mut done = std::process::Command::new("true").spawn().unwrap();
        let done_pid = done.id();
        done.wait().unwrap();
        let gone = Owner::new(done_pid, live.start());
        let me = Owner::current();
        let reused = Owner::new(me.pid(), me.start().map(|s| s + 1));
        let files = [
            name_of(live, 0),
            name_of(gone, 0),
            name_of(reused, 7),
            name_of(me, 999),
            ".weave-abc123.tmp".to_owned(),
            "data.jsonl".to_owned(),
        ];
        for f in &files {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        assert_eq!(sweep_dead_temporaries(dir.path()), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut want = vec![files[0].clone(), files[3].clone(), files[4].clone(), files[5].clone()];
        want.sort();
        assert_eq!(left, want, "the live process's, this process's, an unowned name and data stay");
        child.kill().unwrap();
        child.wait().unwrap();
        // Once its owner is gone, the live process's file goes too.
        assert_eq!(sweep_dead_temporaries(dir.path()), 1);
    }

    #[test]
    fn a_temporary_file_is_listed_while_it_lives_and_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = TempFile::new_in(dir.path()).unwrap();
        let (_, b) = TempFile::new_in(dir.path()).unwrap();
        let (_, c) = TempFile::new_in(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(owner_of_name(&a.path().file_name().unwrap().to_string_lossy()), Some(Owner::current()));
        let listed = |p: &Path| live().lock().unwrap().contains(p);
        assert!(listed(a.path()) && listed(b.path()));
        let (a_path, b_path, c_path) = (a.path().to_path_buf(), b.path().to_path_buf(), c.path().to_path_buf());
        a.persist(&dir.path().join("out")).unwrap();
        drop(b);
        assert!(!listed(&a_path) && !listed(&b_path) && listed(&c_path));
        assert!(!b_path.exists() && dir.path().join("out").exists());
        // A forced stop removes what is left (here: of this test's folder, as other tests
        // running at the same time have files of their own).
        assert_eq!(remove_live(|p| p.starts_with(dir.path())), 1);
        assert!(!c_path.exists());
        drop(c);
    }

    #[test]
    fn a_file_written_atomically_leaves_no_temporary_file_and_takes_no_one_elses() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report.json");
        // Another writer's temporary file under the name a fixed-name writer would use.
        std::fs::write(dir.path().join("report.json.tmp"), "another writer's").unwrap();
        write_atomically(&target, b"{}").unwrap();
        write_atomically(&target, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{\"a\":1}");
        assert_eq!(std::fs::read_to_string(dir.path().join("report.json.tmp")).unwrap(), "another writer's");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
