//! The files a Weave run writes and who owns them.
//!
//! - [`Owner`]: the process that owns something on disk (a temporary file, a cache pin, a
//!   run record that says `running`), as its id and start time, and [`Owner::liveness`],
//!   the one check of whether it still runs, against an id the kernel gave again to
//!   another process. A later version adds the host and boot id (and leases) here, for
//!   folders shared between machines.
//! - [`TempFile`]: a file written under a temporary name that records its owner, then
//!   renamed into place; [`write_atomically`] for a small file in one go.
//! - [`shared_fact`]: a fact about a file's content (its hash, its first quote) worked out
//!   once by the processes that share a folder, and trusted while the file's [`Stamp`]
//!   stays the same.
//! - [`sweep_dead_temporaries`]: the temporary files of owners that are gone, removed (a
//!   folder is swept before the first temporary file a process makes in it);
//!   [`remove_live_temporaries`]: this process's own, removed on a forced stop.
//!
//! Every crate that writes files through a rename uses this one, so that a killed run's
//! debris is recognised, and removed, by every later run alike. It depends on no weave
//! crate: the executor, the cache, the monitor and the steps all stand on it.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let target = dir.path().join("out.txt");
//! let (mut file, tmp) = weave_fs::TempFile::new_in(dir.path()).unwrap();
//! std::io::Write::write_all(&mut file, b"whole or nothing").unwrap();
//! assert!(tmp.path().file_name().unwrap().to_string_lossy().starts_with(".weave-"));
//! tmp.persist(&target).unwrap();
//! assert_eq!(std::fs::read_to_string(&target).unwrap(), "whole or nothing");
//! assert_eq!(weave_fs::Owner::current().liveness(), weave_fs::Liveness::Alive);
//! ```
#![deny(missing_docs)]

mod facts;
mod owner;
mod temp;

pub use facts::{Fact, Stamp, shared_fact};
pub use owner::{
    LEASE_EXPIRY, LEASE_RENEWAL, LeaseGuard, Liveness, Owner, hold_lease, holder_is_gone, host_name, lease_expired,
    pid_space,
};
pub use temp::{TempFile, owner_of_tag, owner_tag, remove_live_temporaries, sweep_dead_temporaries, write_atomically};

/// 64-bit FNV-1a: the pid space's number, the names of shared facts' records (each record
/// holds the path it is for, which is what is checked).
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}
