//! Weave's content-addressed cache of intermediate results.
//!
//! - [`Store`]: entries on disk under a blake3 [`Key`], written atomically (temp file,
//!   fsync, rename), each with a header (magic, format version, codec, length, blake3 of
//!   the payload, its key); a torn or corrupt entry, or one found under another key, is a
//!   warning and a miss, never data.
//! - [`KeyBuilder`]: keys from named, length-framed parts: a step's kind, version,
//!   canonical configuration (every key written for it but the output-neutral ones), the
//!   pipeline-level settings, the seed, and its inputs' keys (a Merkle chain through the
//!   DAG).
//! - [`Packs`]: small entries (LLM answers) appended to one file per writing process,
//!   with the syncs of writers that wait at once shared (a group commit), indexed in
//!   memory; a record that does not check out is a miss, as in the store.
//! - [`FileIndex`]: input files' content hashes, computed once and then trusted while
//!   (path, size, mtime, inode) stay the same, as git's index does, so that an unchanged
//!   10 GB input is not reread to plan a run.
//! - [`codec`]: the only place values become bytes (bincode 2 over serde).
//!
//! ```
//! use weave_cache::{KeyBuilder, Store, codec};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path()).unwrap();
//! let key = KeyBuilder::new("step-output").part("kind", b"clean").number("version", 1).finish();
//! store.put(&key, codec::BINCODE2, &codec::encode(&vec![1u32, 2, 3]).unwrap()).unwrap();
//! let entry = store.get(&key).unwrap().unwrap();
//! assert_eq!(codec::decode::<Vec<u32>>(&entry.payload), Some(vec![1, 2, 3]));
//! ```
//!
//! - [`CachePlan`]: every step's key and status for a pipeline (cached, partial, stale,
//!   to compute, and why), and the entries the executor reads and writes through
//!   `weave_core::StepCache`; [`Pin`] and [`gc`] keep a running run's entries from eviction.
#![deny(missing_docs)]

pub mod codec;
mod error;
mod files;
mod key;
mod pack;
mod plan;
mod store;

pub use error::Error;
pub use files::FileIndex;
pub use key::{Key, KeyBuilder};
pub use pack::{Durable, PACK_FORMAT_VERSION, Packs};
pub use plan::{CacheOptions, CachePlan, MAX_SET_ASIDE_BYTES, Pin, Status, StepPlan, gc, pipeline_relative};
pub use store::{EXCHANGE_GRACE, Entry, FORMAT_VERSION, Stats, Store};

use std::path::{Path, PathBuf};

/// The files and folders the cache writes and removes in its folder `dir`: its entries
/// (`objects/`) and their temporary files (`tmp/`), the packs of small entries (`packs/`),
/// the steps' last keys (`keys/`), the
/// pins of running runs (`pins/`), the keys the shards of a job exchange (`exchange/`) and
/// the index of input files (`files.json`, and `files.d/` where processes sharing the
/// cache leave large files' hashes for each other). Nothing
/// else there is the cache's: a run refuses to write an output onto these, and may keep
/// other files beside them (the quarantine file, with the cache in `.weave/`).
pub fn own_paths(dir: &Path) -> Vec<PathBuf> {
    ["objects", "tmp", "packs", "keys", "pins", "exchange", "files.json", "files.d"]
        .iter()
        .map(|name| dir.join(name))
        .collect()
}
