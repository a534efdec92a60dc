//! Who owns what a run leaves on disk, and whether that owner still lives.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The process that owns something on disk: a temporary file (its name), a cache pin, a
/// run record that says `running`.
///
/// An owner is a process on this machine since its last boot: its id and its start time
/// (clock ticks after boot, field 22 of `/proc/<pid>/stat`), so that an id the kernel has
/// given again to another process does not pass for the owner. A folder or a cache shared
/// between machines (a cluster's file system) needs more: the host and its boot id, and a
/// lease for an owner that cannot be looked up from here. They belong in this type, as
/// fields that what is on disk today lacks and reads without (as `process_start` is read
/// without from pins and records written before it was kept), and in [`Owner::liveness`].
///
/// Serialised as `{"pid": ..., "process_start": ...}`, to be flattened into the file that
/// carries it; `process_start` is left out where it is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pid: u32,
    /// Clock ticks after boot at which the process started; `None` where it was not
    /// recorded (a pin or record written before it was, a system without `/proc`), and
    /// the owner is then judged by its id alone.
    #[serde(default, rename = "process_start", skip_serializing_if = "Option::is_none")]
    start: Option<u64>,
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
}

impl Owner {
    /// An owner as recorded: a process id and, where known, its start time.
    pub fn new(pid: u32, start: Option<u64>) -> Owner {
        Owner { pid, start }
    }

    /// This process.
    pub fn current() -> Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner { pid, start: start_time(pid).ok().flatten() }
        })
    }

    /// The process that has id `pid` now, with its start time; `None` when there is none
    /// or it cannot be looked up.
    pub fn of_process(pid: u32) -> Option<Owner> {
        let start = start_time(pid).ok()??;
        Some(Owner { pid, start: Some(start) })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The start time (clock ticks after boot), where known.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// Whether the owner still runs. Gone only when that is certain: a missing `/proc`
    /// entry, one that holds another process with the same id, or one of a process that
    /// has ended and waits for its parent to collect it (a zombie writes nothing more).
    /// (A `/proc` mounted with
    /// `hidepid=2` hides other users' processes, which then read as gone: a folder shared
    /// by users on such a machine is out of reach of this check.)
    pub fn liveness(&self) -> Liveness {
        let me = Owner::current();
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
    /// removed.
    pub fn is_gone(&self) -> bool {
        self.liveness() == Liveness::Gone
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
        let o = Owner::new(4242, Some(987_654));
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(text, r#"{"pid":4242,"process_start":987654}"#);
        assert_eq!(serde_json::from_str::<Owner>(&text).unwrap(), o);
        // Written before start times were kept.
        assert_eq!(serde_json::from_str::<Owner>(r#"{"pid":7,"other":1}"#).unwrap(), Owner::new(7, None));
        assert_eq!(serde_json::to_string(&Owner::new(7, None)).unwrap(), r#"{"pid":7}"#);
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
