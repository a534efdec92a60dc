//! Who owns what a run leaves on disk, and whether that owner still lives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The process that owns something on disk: a temporary file (its name), a cache pin, a
/// run record that says `running`, a pack of cache entries.
///
/// An owner is a process id in a pid space ([`pid_space`]: this boot of this machine, in
/// this pid namespace), with its start time (clock ticks after boot, field 22 of
/// `/proc/<pid>/stat`), so that an id the kernel has given again to another process does
/// not pass for the owner. An owner in another pid space (another node of a cluster that
/// shares the folder, another container, an earlier boot) cannot be looked up from here:
/// it is [`Liveness::Elsewhere`], and only its lease can tell ([`holder_is_gone`]).
///
/// Serialised as `{"pid": ..., "process_start": ..., "pid_space": "…"}`, to be flattened
/// into the file that carries it; `process_start` and `pid_space` are left out where they
/// are unknown, and an owner written without a pid space (by a version of weave from
/// before it was kept) is taken for one of this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pid: u32,
    /// Clock ticks after boot at which the process started; `None` where it was not
    /// recorded (a pin or record written before it was, a system without `/proc`), and
    /// the owner is then judged by its id alone.
    #[serde(default, rename = "process_start", skip_serializing_if = "Option::is_none")]
    start: Option<u64>,
    /// The pid space the id belongs to (see [`pid_space`]); `None` where it was not
    /// recorded.
    #[serde(default, rename = "pid_space", with = "hex_space", skip_serializing_if = "Option::is_none")]
    space: Option<u64>,
}

/// The pid space of this process, as 64 bits: FNV-1a over the kernel's boot id
/// (`/proc/sys/kernel/random/boot_id`, new at every boot of every machine) and the inode
/// of its pid namespace (`/proc/self/ns/pid`: containers on one machine share the boot id
/// but not their process ids). Two processes with the same pid space can look each other
/// up by process id; others cannot. `None` where neither can be read (not Linux).
///
/// The environment variable `WEAVE_PID_SPACE` (16 hex digits) overrides it: for tests
/// that stand in for processes on other machines.
pub fn pid_space() -> Option<u64> {
    static SPACE: OnceLock<Option<u64>> = OnceLock::new();
    *SPACE.get_or_init(|| {
        if let Some(v) = std::env::var_os("WEAVE_PID_SPACE") {
            match v.to_str().and_then(|s| u64::from_str_radix(s, 16).ok()) {
                Some(space) => return Some(space),
                None => log::warn!("WEAVE_PID_SPACE is not 16 hex digits; it is ignored"),
            }
        }
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let ns = std::fs::metadata("/proc/self/ns/pid").map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap_or(0);
        Some(crate::fnv1a(boot.trim().bytes().chain(ns.to_le_bytes())))
    })
}

/// This machine's host name (the kernel's node name), for people reading a pin or a run
/// record; `None` where it cannot be read. Liveness goes by [`pid_space`], never by it.
pub fn host_name() -> Option<String> {
    static HOST: OnceLock<Option<String>> = OnceLock::new();
    HOST.get_or_init(|| {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
        Some(name.trim().to_owned()).filter(|n| !n.is_empty())
    })
    .clone()
}

/// The `pid_space` field as 16 hex digits.
mod hex_space {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format!("{v:016x}")),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        Ok(text.and_then(|t| u64::from_str_radix(&t, 16).ok()))
    }
}

/// What can be told of an [`Owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The process runs (or, judged by its id alone, a process with its id runs).
    Alive,
    /// The process is certainly gone: no process has its id, or the one that has it
    /// started at another time.
    Gone,
    /// It cannot be told (no `/proc`, or a process that cannot be looked at): whoever
    /// asks must keep what the owner holds.
    Unknown,
    /// The process is in another pid space (another machine, container or boot): it
    /// cannot be looked up from here, and only a lease can tell ([`holder_is_gone`]).
    Elsewhere,
}

impl Owner {
    /// An owner of this pid space as recorded: a process id and, where known, its start
    /// time.
    pub fn new(pid: u32, start: Option<u64>) -> Owner {
        Owner { pid, start, space: pid_space() }
    }

    /// An owner as recorded, in pid space `space` (`None`: unknown, taken for this one).
    pub fn in_space(pid: u32, start: Option<u64>, space: Option<u64>) -> Owner {
        Owner { pid, start, space }
    }

    /// This process.
    pub fn current() -> Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner { pid, start: start_time(pid).ok().flatten(), space: pid_space() }
        })
    }

    /// The process that has id `pid` now, with its start time; `None` when there is none
    /// or it cannot be looked up.
    pub fn of_process(pid: u32) -> Option<Owner> {
        let start = start_time(pid).ok()??;
        Some(Owner { pid, start: Some(start), space: pid_space() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The start time (clock ticks after boot), where known.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// The pid space ([`pid_space`]), where known.
    pub fn space(&self) -> Option<u64> {
        self.space
    }

    /// Whether the owner still runs. Gone only when that is certain: a missing `/proc`
    /// entry, one that holds another process with the same id, or one of a process that
    /// has ended and waits for its parent to collect it (a zombie writes nothing more).
    /// (A `/proc` mounted with
    /// `hidepid=2` hides other users' processes, which then read as gone: a folder shared
    /// by users on such a machine is out of reach of this check.)
    pub fn liveness(&self) -> Liveness {
        let me = Owner::current();
        if self.space.is_some() && self.space != me.space {
            return Liveness::Elsewhere;
        }
        if self.pid == me.pid {
            return match (self.start, me.start) {
                (Some(a), Some(b)) if a != b => Liveness::Gone,
                _ => Liveness::Alive,
            };
        }
        if me.start.is_none() {
            // This process cannot read its own start time: `/proc` is missing or not what
            // it looks like, and a missing entry proves nothing.
            return Liveness::Unknown;
        }
        match stat(self.pid) {
            Ok(Some(Stat { ended: true, .. })) => Liveness::Gone,
            Ok(Some(Stat { start: now, .. })) => match self.start {
                Some(then) if then != now => Liveness::Gone,
                _ => Liveness::Alive,
            },
            Ok(None) => Liveness::Unknown,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Liveness::Gone,
            Err(_) => Liveness::Unknown,
        }
    }

    /// Whether the owner is certainly gone ([`Liveness::Gone`]): what it holds may be
    /// removed. An owner elsewhere is never certainly gone by this test: see
    /// [`holder_is_gone`], which also reads its lease.
    pub fn is_gone(&self) -> bool {
        self.liveness() == Liveness::Gone
    }
}

/// Whether the owner of what the file at `carrier` holds (a pin, a run record, a
/// temporary file, a pack) is certainly gone: for an owner in this pid space, by its
/// process ([`Owner::liveness`]); for one elsewhere, by its lease, the carrier's
/// modification time, which a live owner renews every [`LEASE_RENEWAL`] ([`hold_lease`]):
/// gone once it is older than [`LEASE_EXPIRY`]. A carrier that cannot be read is taken for
/// a gone owner's only when the owner is gone by its process.
pub fn holder_is_gone(owner: &Owner, carrier: &Path) -> bool {
    match owner.liveness() {
        Liveness::Gone => true,
        Liveness::Alive | Liveness::Unknown => false,
        Liveness::Elsewhere => lease_expired(carrier),
    }
}

/// Whether the lease of the file at `path` has run out: its modification time is older
/// than [`LEASE_EXPIRY`] (a file that cannot be read has no lease to keep).
pub fn lease_expired(path: &Path) -> bool {
    match std::fs::metadata(path).and_then(|m| m.modified()) {
        Ok(t) => SystemTime::now().duration_since(t).is_ok_and(|age| age > LEASE_EXPIRY),
        Err(_) => false,
    }
}

/// How often a live owner renews the leases it holds.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(20);

/// How old a lease may be before its owner is taken for gone: six renewals, so that a
/// node whose clock runs up to a few minutes apart, or whose file system is slow to show
/// a modification time, is not taken for dead.
pub const LEASE_EXPIRY: Duration = Duration::from_secs(300);

/// Renews the lease of the file at `path` (its modification time) every [`LEASE_RENEWAL`]
/// while the returned guard lives, from one thread for the whole process. This process's
/// temporary files ([`crate::TempFile`]) are renewed by the same thread without asking.
pub fn hold_lease(path: &Path) -> LeaseGuard {
    let mut held = leases().lock().unwrap_or_else(PoisonError::into_inner);
    *held.entry(path.to_path_buf()).or_insert(0) += 1;
    start_keeper();
    LeaseGuard { path: path.to_path_buf() }
}

/// Keeps a lease renewed ([`hold_lease`]); dropping it stops the renewal.
#[derive(Debug)]
pub struct LeaseGuard {
    path: PathBuf,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let mut held = leases().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.path) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.path);
            }
        }
    }
}

/// The files whose leases this process holds, with how many guards hold each.
fn leases() -> &'static Mutex<HashMap<PathBuf, usize>> {
    static LEASES: OnceLock<Mutex<HashMap<PathBuf, usize>>> = OnceLock::new();
    LEASES.get_or_init(Mutex::default)
}

/// Starts the thread that renews leases, once per process.
pub(crate) fn start_keeper() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("weave-leases".into()).spawn(|| {
            loop {
                std::thread::sleep(LEASE_RENEWAL);
                renew_leases();
            }
        });
        if let Err(e) = spawned {
            log::warn!("cannot start the thread that renews leases ({e}): runs on other machines may take this one for dead after {} s", LEASE_EXPIRY.as_secs());
        }
    });
}

/// Renews every lease this process holds now: the files held and its temporary files.
pub(crate) fn renew_leases() {
    let mut paths: Vec<PathBuf> = leases().lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
    paths.extend(crate::temp::live_paths());
    let now = SystemTime::now();
    for p in paths {
        // A file replaced by a rename (a run record rewritten) is renewed by the rename;
        // one removed has nothing to renew.
        let renewed = std::fs::File::options().append(true).open(&p).and_then(|f| f.set_modified(now));
        if let Err(e) = renewed {
            log::debug!("cannot renew the lease of {} ({e})", p.display());
        }
    }
}

/// What `/proc/<pid>/stat` says of a process.
struct Stat {
    /// Clock ticks after boot at which it started (field 22).
    start: u64,
    /// Whether it has ended, waiting to be collected by its parent (state `Z` or `X`,
    /// field 3).
    ended: bool,
}

/// What `/proc/<pid>/stat` says of process `pid`: `None` where it cannot be read (not
/// Linux, or a line that does not parse), an error when the process does not exist
/// (`NotFound`) or cannot be looked at.
fn stat(pid: u32) -> std::io::Result<Option<Stat>> {
    if !cfg!(target_os = "linux") {
        return Ok(None);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses of
    // its own: the fields are counted after the last `)`. It is followed by field 3.
    let mut fields = stat.rfind(')').map_or("", |i| &stat[i + 1..]).split_whitespace();
    let ended = fields.next().is_some_and(|state| state == "Z" || state == "X");
    Ok(fields.nth(22 - 4).and_then(|f| f.parse().ok()).map(|start| Stat { start, ended }))
}

/// The start time of process `pid` (see [`stat`]).
fn start_time(pid: u32) -> std::io::Result<Option<u64>> {
    Ok(stat(pid)?.map(|s| s.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_reads_back_with_or_without_its_start_time() {
        let o = Owner::in_space(4242, Some(987_654), Some(0xab));
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(text, r#"{"pid":4242,"process_start":987654,"pid_space":"00000000000000ab"}"#);
        assert_eq!(serde_json::from_str::<Owner>(&text).unwrap(), o);
        // Written before start times and pid spaces were kept: taken for this machine's.
        let old = serde_json::from_str::<Owner>(r#"{"pid":7,"other":1}"#).unwrap();
        assert_eq!((old.pid(), old.start(), old.space()), (7, None, None));
        assert_eq!(serde_json::to_string(&Owner::in_space(7, None, None)).unwrap(), r#"{"pid":7}"#);
    }

    #[test]
    fn an_owner_in_another_pid_space_is_judged_by_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let carrier = dir.path().join("pin.json");
        std::fs::write(&carrier, "{}").unwrap();
        let me = Owner::current();
        assert!(me.space().is_some(), "Linux has a boot id");
        // This very process, as another machine would record it.
        let elsewhere = Owner::in_space(me.pid(), me.start(), me.space().map(|s| s ^ 1));
        assert_eq!(elsewhere.liveness(), Liveness::Elsewhere);
        assert!(!elsewhere.is_gone(), "no process lookup can tell");
        assert!(!holder_is_gone(&elsewhere, &carrier), "a fresh lease");
        let old = SystemTime::now() - LEASE_EXPIRY - Duration::from_secs(1);
        std::fs::File::options().append(true).open(&carrier).unwrap().set_modified(old).unwrap();
        assert!(holder_is_gone(&elsewhere, &carrier), "a lease run out");
        // An owner of this machine is judged by its process, whatever its file's age.
        assert!(!holder_is_gone(&me, &carrier));
        // Renewing brings it back.
        let guard = hold_lease(&carrier);
        renew_leases();
        assert!(!holder_is_gone(&elsewhere, &carrier));
        drop(guard);
        assert!(leases().lock().unwrap().is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn liveness_tells_a_live_process_from_a_gone_one_and_from_one_that_took_its_id() {
        let me = Owner::current();
        assert!(me.start.is_some());
        assert_eq!(me.liveness(), Liveness::Alive);
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let live = Owner::of_process(child.id()).unwrap();
        assert_eq!(live.liveness(), Liveness::Alive);
        // Its id given to another process: the same id, another start time.
        let reused = Owner::new(live.pid, live.start.map(|s| s + 1));
        assert_eq!(reused.liveness(), Liveness::Gone);
        assert_eq!(Owner::new(me.pid, me.start.map(|s| s + 1)).liveness(), Liveness::Gone);
        // Judged by its id alone, as what was written before start times were kept is.
        assert_eq!(Owner::new(live.pid, None).liveness(), Liveness::Alive);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(live.liveness(), Liveness::Gone);
        assert_eq!(Owner::new(live.pid, None).liveness(), Liveness::Gone);
        assert!(Owner::of_process(live.pid).is_none());
        // Above the kernel's largest process id.
        assert!(Owner::new(u32::MAX - 1, None).is_gone());
        // A process that has exited but that its parent has not collected yet (a zombie).
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let owner = Owner::of_process(zombie.id()).unwrap();
        let t0 = std::time::Instant::now();
        while owner.liveness() == Liveness::Alive && t0.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(owner.liveness(), Liveness::Gone);
        zombie.wait().unwrap();
    }
}
