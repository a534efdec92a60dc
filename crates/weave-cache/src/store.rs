//! The store: entries on disk under their key, written atomically, checked on read.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::codec;
use crate::error::Error;
use crate::key::Key;
use crate::pack;

/// The first bytes of every entry.
const MAGIC: &[u8; 8] = b"WEAVE\x00C\x01";
/// The entry format: bump it when the header or its meaning changes.
/// 2: the header names the entry's key.
pub const FORMAT_VERSION: u32 = 2;
/// magic (8) + format (4) + codec (4) + payload length (8) + checksum (32) + the key the
/// entry was written under (32). The checksum is blake3 over the codec, the length, the key
/// and the payload, so that a damaged key field reads as damage, and an intact entry under
/// another key's name as exactly that.
const HEADER_LEN: usize = 88;

/// How old a temporary file without an owner in its name (written by a version of weave
/// from before they had one) must be before [`Store::gc`] takes it for a dead writer's.
const UNOWNED_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A content-addressed store of entries under `root/objects/ab/cdef…`.
///
/// Writes go to a temporary file in `root/tmp`, are synced, and are renamed into place,
/// so a reader sees a whole entry or none, even with several processes writing at once
/// (the same key always holds the same content, so the last rename wins harmlessly).
/// Temporary files are `weave_fs::TempFile`s, named after the process that writes them:
/// those of a process that is gone (a killed run; an LLM step's part can be large) are
/// removed when the store is opened, when a process first writes into it, and by
/// [`Store::gc`].
/// Every entry starts with a header (magic, format version, codec, payload length, blake3
/// of the payload, and the key it was written under); an entry that fails any check, or
/// that is found under another key than its own (a file moved or copied over another), is
/// reported as a warning, removed, and read as a miss — never returned as data.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Whether an entry of another version's format was met (said once, not per entry).
    met_old_format: Arc<AtomicBool>,
}

/// A read entry.
#[derive(Debug)]
pub struct Entry {
    /// The codec that wrote the payload.
    pub codec: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries.
    pub entries: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// How long after its last write a folder of exchanged keys is kept by
/// [`Store::gc`] whatever the size asked for.
pub const EXCHANGE_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Store {
    /// Opens (creating if needed) a store in `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, Error> {
        let root = root.into();
        for dir in [root.join("objects"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        let store = Store { root, met_old_format: Arc::default() };
        weave_fs::sweep_dead_temporaries(&store.tmp_dir());
        Ok(store)
    }

    /// Where entries are written before they are renamed into place.
    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Removes the temporary files in `tmp/` that no live process writes: those of owners
    /// that are gone, and those named by versions of weave that did not record their
    /// owner (`entry-…`) once they are a day old (an entry is written in seconds, so no
    /// live writer is that slow). Returns how many were removed.
    fn sweep_tmp(&self) -> usize {
        let tmp = self.tmp_dir();
        let mut removed = weave_fs::sweep_dead_temporaries(&tmp);
        let Ok(entries) = fs::read_dir(&tmp) else { return removed };
        for e in entries.flatten() {
            let unowned = e.file_name().to_str().is_some_and(|n| n.starts_with("entry-"));
            let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|m| m.elapsed().ok());
            if unowned && old.is_some_and(|age| age > UNOWNED_TEMPORARY_AGE) && fs::remove_file(e.path()).is_ok() {
                log::info!("removed {}, a temporary file left by an earlier version of weave", e.path().display());
                removed += 1;
            }
        }
        removed
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &Key) -> PathBuf {
        let hex = key.to_hex();
        self.root.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    /// Whether an entry exists under `key` (without checking it).
    pub fn contains(&self, key: &Key) -> bool {
        self.path_of(key).is_file()
    }

    /// Writes `payload` under `key`, atomically and durably (synced before the rename).
    pub fn put(&self, key: &Key, codec: u32, payload: &[u8]) -> Result<(), Error> {
        self.put_with(key, codec, payload, true)
    }

    /// Writes `payload` under `key`, atomically; synced to disk first when `durable`.
    /// Without the sync, a power cut can leave the entry torn or empty — which its
    /// checksum then reveals, so it reads as a miss: cheap to recompute, never wrong.
    pub fn put_with(&self, key: &Key, codec: u32, payload: &[u8], durable: bool) -> Result<(), Error> {
        let path = self.path_of(key);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let tmp_dir = self.tmp_dir();
        let (mut file, tmp) = weave_fs::TempFile::new_in(&tmp_dir).map_err(Error::io(&tmp_dir))?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&codec.to_le_bytes());
        header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let sum = checksum(&header[12..24], key.as_bytes(), payload);
        header.extend_from_slice(&sum);
        header.extend_from_slice(key.as_bytes());
        let tmp_path = tmp.path().to_path_buf();
        file.write_all(&header).map_err(Error::io(&tmp_path))?;
        file.write_all(payload).map_err(Error::io(&tmp_path))?;
        if durable {
            file.sync_all().map_err(Error::io(&tmp_path))?;
        }
        drop(file);
        tmp.persist(&path).map_err(Error::io(&path))?;
        Ok(())
    }

    /// Reads and decodes (with [`codec::decode`]) the value under `key`: `None` if there is
    /// none, or if the entry is damaged, written under another key, or does not decode
    /// (another codec, a value laid out otherwise, nested past `weave_core::MAX_DEPTH`),
    /// each logged as a warning, the entry removed: damage is a miss, never data or a crash.
    pub fn get_decoded<T: serde::de::DeserializeOwned>(&self, key: &Key) -> Result<Option<T>, Error> {
        let Some(entry) = self.get(key)? else { return Ok(None) };
        let value = if entry.codec == codec::BINCODE2 { codec::decode(&entry.payload) } else { None };
        if value.is_none() {
            let path = self.path_of(key);
            log::warn!("cache entry {} does not decode; removing it and recomputing", path.display());
            let _ = fs::remove_file(&path);
        }
        Ok(value)
    }

    /// Reads the entry under `key`: `None` if there is none, or if it is damaged or
    /// written under another key (which is logged as a warning, and the entry removed).
    pub fn get(&self, key: &Key) -> Result<Option<Entry>, Error> {
        let path = self.path_of(key);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(Error::io(&path))?;
        match check(&bytes, key) {
            Ok(codec) => {
                // Mark it used, for least-recently-used eviction.
                let _ = file.set_modified(SystemTime::now());
                bytes.drain(..HEADER_LEN);
                Ok(Some(Entry { codec, payload: bytes }))
            }
            Err(Unusable::OldFormat(format)) => {
                // A cache kept across an upgrade holds many: one line says it for all.
                if !self.met_old_format.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "the cache in {} holds entries written in format {format} by another version of weave (this one reads {FORMAT_VERSION}): each is removed when met and computed again (LLM answers among them are asked again)",
                        self.root.display()
                    );
                }
                log::debug!("cache entry {} is in format {format}; removing it", path.display());
                let _ = fs::remove_file(&path);
                Ok(None)
            }
            Err(Unusable::Other(why)) => {
                log::warn!("cache entry {} {why}; removing it and recomputing", path.display());
                let _ = fs::remove_file(&path);
                Ok(None)
            }
        }
    }

    /// Removes the entry under `key`, if any.
    pub fn remove(&self, key: &Key) -> Result<(), Error> {
        let path = self.path_of(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io { path, source: e }),
            _ => Ok(()),
        }
    }

    /// Every entry: key, size on disk, last use (for an entry in a pack, the pack's).
    pub fn list(&self) -> Result<Vec<(Key, u64, SystemTime)>, Error> {
        let mut out = self.list_objects()?;
        for pack in pack::list(&self.root)? {
            out.extend(pack::entries(&pack.path).into_iter().map(|(key, bytes)| (key, bytes, pack.used)));
        }
        Ok(out)
    }

    /// The entries that are files of their own (`objects/`): key, size, last use.
    fn list_objects(&self) -> Result<Vec<(Key, u64, SystemTime)>, Error> {
        let objects = self.root.join("objects");
        let mut out = Vec::new();
        for shard in fs::read_dir(&objects).map_err(Error::io(&objects))? {
            let shard = shard.map_err(Error::io(&objects))?;
            let prefix = shard.file_name().to_string_lossy().into_owned();
            if !shard.path().is_dir() {
                continue;
            }
            for e in fs::read_dir(shard.path()).map_err(Error::io(shard.path()))? {
                let e = e.map_err(Error::io(shard.path()))?;
                let name = format!("{prefix}{}", e.file_name().to_string_lossy());
                let Some(key) = Key::from_hex(&name) else { continue };
                let meta = e.metadata().map_err(Error::io(e.path()))?;
                out.push((key, meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
        Ok(out)
    }

    /// How many entries and bytes the store holds (in `objects/` and in `packs/`; the
    /// bytes of the keys the shards of jobs exchange, in `exchange/`, too).
    pub fn stats(&self) -> Result<Stats, Error> {
        let list = self.list()?;
        let exchanged: u64 = self.list_exchanges().iter().map(|(_, b, _)| b).sum();
        Ok(Stats { entries: list.len() as u64, bytes: list.iter().map(|(_, b, _)| b).sum::<u64>() + exchanged })
    }

    /// The folders of keys exchanged by the shards of jobs (`exchange/<key>-of-N/`): each
    /// with its bytes and when a file was last put in it.
    fn list_exchanges(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        let Ok(rd) = fs::read_dir(self.root.join("exchange")) else { return Vec::new() };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            // Last used: its newest file's time (an empty folder's own).
            let (mut bytes, mut newest) = (0, None);
            for f in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                if let Ok(m) = f.metadata() {
                    bytes += m.len();
                    newest = newest.max(Some(m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                }
            }
            let used = newest.unwrap_or_else(|| meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            out.push((e.path(), bytes, used));
        }
        out
    }

    /// Evicts least recently used entries until the store holds at most `max_bytes`,
    /// never an entry in `keep` (those a running run holds), after removing the temporary
    /// files of writers that are gone. A pack ([`Packs`](crate::Packs)) goes whole, and
    /// never while the process that appends to it may run. The keys exchanged by the
    /// shards of a job go whole too, least recently written first, and never within
    /// [`EXCHANGE_GRACE`] of their last write: a job's next stage may wait that long in a
    /// scheduler's queue, and its shards need every earlier shard's keys. Returns the
    /// entries (and bytes) removed.
    pub fn gc(&self, max_bytes: u64, keep: &dyn Fn(&Key) -> bool) -> Result<Stats, Error> {
        enum Unit {
            Object(Key),
            Pack(PathBuf, bool),
            Exchange(PathBuf, bool),
        }
        self.sweep_tmp();
        let mut units: Vec<(Unit, u64, SystemTime)> =
            self.list_objects()?.into_iter().map(|(k, bytes, used)| (Unit::Object(k), bytes, used)).collect();
        units.extend(pack::list(&self.root)?.into_iter().map(|p| (Unit::Pack(p.path, p.live), p.bytes, p.used)));
        let now = SystemTime::now();
        units.extend(self.list_exchanges().into_iter().map(|(path, bytes, used)| {
            let recent = now.duration_since(used).map_or(true, |age| age < EXCHANGE_GRACE);
            (Unit::Exchange(path, recent), bytes, used)
        }));
        let mut total: u64 = units.iter().map(|(_, b, _)| b).sum();
        units.sort_by_key(|(_, _, used)| *used);
        let mut removed = Stats::default();
        for (unit, bytes, _) in units {
            if total <= max_bytes {
                break;
            }
            match unit {
                Unit::Object(key) if !keep(&key) => {
                    self.remove(&key)?;
                    removed.entries += 1;
                }
                Unit::Pack(path, false) => {
                    let entries = pack::entries(&path).len() as u64;
                    match fs::remove_file(&path) {
                        Ok(()) => removed.entries += entries,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::Io { path, source: e }),
                    }
                }
                Unit::Exchange(path, false) => match fs::remove_dir_all(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::Io { path, source: e }),
                },
                _ => continue,
            }
            total -= bytes;
            removed.bytes += bytes;
        }
        Ok(removed)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<Stats, Error> {
        self.gc(0, &|_| false)
    }
}

/// Why an entry cannot be used.
enum Unusable {
    /// Written in another format (by another version of weave).
    OldFormat(u32),
    /// Anything else, as the end of a sentence that starts with the entry.
    Other(String),
}

/// The checksum of an entry: blake3 over its codec and length (`codec_len`, as in the
/// header), the key it is written under, and its payload.
pub(crate) fn checksum(codec_len: &[u8], key: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(codec_len).update(key).update(payload);
    *h.finalize().as_bytes()
}

/// Checks an entry's header and payload, and that it was written under `key`; the codec,
/// or why it cannot be used, as the end of a sentence that starts with the entry.
fn check(bytes: &[u8], key: &Key) -> Result<u32, Unusable> {
    let short = || Unusable::Other(format!("is damaged ({} bytes, shorter than the header)", bytes.len()));
    // Magic and format first: an older format's header is shorter.
    if bytes.len() < 12 {
        return Err(short());
    }
    if &bytes[..8] != MAGIC {
        return Err(Unusable::Other("is damaged (not a weave cache entry)".to_owned()));
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let format = word(8);
    if format != FORMAT_VERSION {
        return Err(Unusable::OldFormat(format));
    }
    if bytes.len() < HEADER_LEN {
        return Err(short());
    }
    let codec = word(12);
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[16..24]);
    let len = u64::from_le_bytes(len);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(Unusable::Other(format!("is damaged (payload is {} bytes, the header says {len})", payload.len())));
    }
    if checksum(&bytes[12..24], &bytes[56..88], payload) != bytes[24..56] {
        return Err(Unusable::Other("is damaged (it does not match its checksum)".to_owned()));
    }
    if &bytes[56..88] != key.as_bytes() {
        let mut other = [0u8; 32];
        other.copy_from_slice(&bytes[56..88]);
        return Err(Unusable::Other(format!(
            "holds the entry of another key ({}): it was moved or copied over this one",
            Key::from_bytes(other).to_hex()
        )));
    }
    Ok(codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("cache")).unwrap();
        (dir, s)
    }

    #[test]
    fn put_then_get_round_trips() {
        let (_d, s) = store();
        let k = Key::of_content(b"k");
        assert!(s.get(&k).unwrap().is_none());
        s.put(&k, 7, b"payload").unwrap();
        let e = s.get(&k).unwrap().unwrap();
        assert_eq!((e.codec, e.payload.as_slice()), (7, &b"payload"[..]));
        assert_eq!(s.stats().unwrap(), Stats { entries: 1, bytes: (HEADER_LEN + 7) as u64 });
        assert_eq!(std::fs::read_dir(s.root().join("tmp")).unwrap().count(), 0, "no temporary file left");
    }

    #[test]
    fn every_kind_of_damage_is_a_miss_and_removes_the_entry() {
        let (_d, s) = store();
        let k = Key::of_content(b"k");
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let damages: Vec<(&str, Damage)> = vec![
            ("flip a payload byte", Box::new(|b| b[HEADER_LEN + 3] ^= 1)),
            ("flip a header byte", Box::new(|b| b[2] ^= 1)),
            ("truncate", Box::new(|b| b.truncate(b.len() - 1))),
            ("cut inside the header", Box::new(|b| b.truncate(10))),
            ("empty", Box::new(|b| b.clear())),
            ("append", Box::new(|b| b.push(0))),
            ("wrong format version", Box::new(|b| b[8] = 99)),
            ("flip a byte of the key in the header", Box::new(|b| b[60] ^= 1)),
            ("flip a byte of the codec", Box::new(|b| b[12] ^= 1)),
        ];
        for (what, damage) in damages {
            s.put(&k, 1, b"some payload bytes").unwrap();
            let path = s.path_of(&k);
            let mut bytes = std::fs::read(&path).unwrap();
            damage(&mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            assert!(s.get(&k).unwrap().is_none(), "{what}: read as a miss");
            assert!(!path.exists(), "{what}: the damaged entry is removed");
        }
    }

    // regression: a damaged byte in the header's key field was reported as an entry moved
    // from another key, sending the user looking for a copy that never happened.
    #[test]
    fn damage_to_the_key_field_is_told_apart_from_an_entry_under_another_key() {
        let (_d, s) = store();
        let (a, b) = (Key::of_content(b"a"), Key::of_content(b"b"));
        s.put(&a, 1, b"the output of a").unwrap();
        let mut bytes = std::fs::read(s.path_of(&a)).unwrap();
        let why = |r: Result<u32, Unusable>| match r {
            Err(Unusable::Other(m)) => m,
            _ => panic!("expected a reason"),
        };
        assert!(why(check(&bytes, &b)).contains("holds the entry of another key"));
        bytes[70] ^= 1;
        assert!(why(check(&bytes, &a)).contains("is damaged"));
    }

    #[test]
    fn an_entry_of_the_previous_format_is_a_miss_and_is_removed() {
        let (_d, s) = store();
        let k = Key::of_content(b"k");
        // Format 1: a 56-byte header without the key.
        let payload = b"an answer paid for";
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        v1.extend_from_slice(blake3::hash(payload).as_bytes());
        v1.extend_from_slice(payload);
        let path = s.path_of(&k);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &v1).unwrap();
        assert!(matches!(check(&v1, &k), Err(Unusable::OldFormat(1))));
        assert!(s.get(&k).unwrap().is_none());
        assert!(!path.exists());
        assert!(s.met_old_format.load(Ordering::Relaxed), "said once for the whole store");
    }

    // regression: two intact entries swapped on disk were served as each other's data.
    #[test]
    fn an_entry_under_another_key_is_a_miss_and_is_removed() {
        let (_d, s) = store();
        let (a, b) = (Key::of_content(b"a"), Key::of_content(b"b"));
        s.put(&a, 1, b"the output of a").unwrap();
        s.put(&b, 1, b"the output of b").unwrap();
        let (pa, pb) = (s.path_of(&a), s.path_of(&b));
        let (ba, bb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
        std::fs::write(&pa, bb).unwrap();
        std::fs::write(&pb, ba).unwrap();
        assert!(s.get(&a).unwrap().is_none(), "b's entry read under a");
        assert!(s.get(&b).unwrap().is_none(), "a's entry read under b");
        assert!(!pa.exists() && !pb.exists(), "both are removed, to be recomputed");
        s.put(&a, 1, b"the output of a").unwrap();
        assert_eq!(s.get(&a).unwrap().unwrap().payload, b"the output of a");
    }

    #[test]
    fn gc_evicts_least_recently_used_and_spares_kept_keys() {
        let (_d, s) = store();
        let keys: Vec<Key> = (0..4u8).map(|i| Key::of_content(&[i])).collect();
        for (i, k) in keys.iter().enumerate() {
            s.put(k, 1, &[0u8; 100]).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            File::options().write(true).open(s.path_of(k)).unwrap().set_modified(t).unwrap();
        }
        // Reading key 0 makes it the most recently used.
        assert!(s.get(&keys[0]).unwrap().is_some());
        let each = (HEADER_LEN + 100) as u64;
        let kept = keys[1];
        let removed = s.gc(2 * each, &|k| *k == kept).unwrap();
        assert_eq!(removed.entries, 2);
        assert!(s.contains(&keys[0]) && s.contains(&keys[1]));
        assert!(!s.contains(&keys[2]) && !s.contains(&keys[3]));
        assert_eq!(s.clear().unwrap().entries, 2);
    }

    // regression (issue 13, item 7): entries were written through randomly named
    // temporary files in `tmp/` that nothing removed after a killed run.
    #[cfg(target_os = "linux")]
    #[test]
    fn packs_are_counted_listed_and_evicted_whole_never_while_their_writer_lives() {
        let (_d, s) = store();
        let packs = crate::Packs::open(s.root()).unwrap();
        for i in 0..3u8 {
            packs.append(&Key::of_content(&[i]), 1, &[i; 50]).unwrap();
        }
        s.put(&Key::of_content(b"object"), 1, &[0u8; 100]).unwrap();
        let stats = s.stats().unwrap();
        assert_eq!(stats.entries, 4, "three answers in a pack and one entry of its own");
        assert_eq!(s.list().unwrap().len(), 4);
        // This process appends to the pack: gc keeps it, even to reach zero.
        assert_eq!(s.clear().unwrap().entries, 1);
        assert_eq!(s.stats().unwrap().entries, 3);
        // The same pack left by a process that is gone (a pid past any pid_max), older
        // than an entry of its own: it goes first, whole.
        let dir = s.root().join("packs");
        let pack = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let dead = dir.join(format!("{:016x}-4294967295-1-0.pack", weave_fs::pid_space().unwrap_or(0)));
        fs::rename(&pack, &dead).unwrap();
        File::options().write(true).open(&dead).unwrap().set_modified(SystemTime::UNIX_EPOCH).unwrap();
        let newer = Key::of_content(b"newer");
        s.put(&newer, 1, &[0u8; 100]).unwrap();
        let removed = s.gc((HEADER_LEN + 100) as u64, &|_| false).unwrap();
        assert_eq!(removed.entries, 3);
        assert!(!dead.exists() && s.contains(&newer));
    }

    // Issue 17: the keys the shards of a job exchange were never removed.
    #[test]
    fn gc_removes_exchanged_keys_whole_least_recent_first_never_within_the_grace() {
        let (_d, s) = store();
        let folder = |name: &str, age: std::time::Duration| {
            let dir = s.root().join("exchange").join(name);
            fs::create_dir_all(&dir).unwrap();
            for part in ["part-00000-of-00002.keys", "part-00001-of-00002.keys"] {
                fs::write(dir.join(part), [0u8; 1000]).unwrap();
                let t = SystemTime::now() - age;
                File::options().write(true).open(dir.join(part)).unwrap().set_modified(t).unwrap();
            }
            dir
        };
        let day = std::time::Duration::from_secs(24 * 3600);
        let (old, older, live) = (folder("aa-of-2", 3 * day), folder("bb-of-2", 9 * day), folder("cc-of-2", day / 24));
        assert_eq!(s.stats().unwrap().bytes, 6000, "the exchanged keys count in the cache's size");
        // Down to 3,000 bytes: the oldest folder goes first, whole; then the next.
        let removed = s.gc(3000, &|_| false).unwrap();
        assert_eq!(removed.bytes, 4000);
        assert!(!older.exists() && !old.exists());
        // A folder written within the grace stays, even to reach zero.
        assert_eq!(s.clear().unwrap().bytes, 0);
        assert!(live.join("part-00001-of-00002.keys").exists());
    }

    #[test]
    fn opening_and_gc_remove_the_temporary_files_of_dead_writers_only() {
        let (_d, s) = store();
        let tmp = s.root().join("tmp");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let live = weave_fs::Owner::of_process(child.id()).unwrap();
        let me = weave_fs::Owner::current();
        let name = |o: weave_fs::Owner| format!(".weave-{}-{}-0.tmp", o.pid(), o.start().unwrap_or(0));
        let dead = name(weave_fs::Owner::new(me.pid(), me.start().map(|t| t + 1)));
        let old_day = SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
        for (f, when) in [
            (name(live), None),
            (dead.clone(), None),
            ("entry-aB3xYz".to_owned(), Some(old_day)),
            ("entry-Qw9Rt1".to_owned(), None),
        ] {
            std::fs::write(tmp.join(&f), "half an entry").unwrap();
            if let Some(t) = when {
                File::options().write(true).open(tmp.join(&f)).unwrap().set_modified(t).unwrap();
            }
        }
        let left = || {
            let mut v: Vec<String> =
                std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        };
        let s = Store::open(s.root()).unwrap();
        assert!(!left().contains(&dead), "opening removes a dead writer's file");
        assert!(left().contains(&"entry-aB3xYz".to_owned()), "an unowned file waits for gc");
        s.gc(u64::MAX, &|_| false).unwrap();
        assert_eq!(left(), [name(live), "entry-Qw9Rt1".to_owned()], "a live writer's and a young unowned file stay");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_key_leave_a_valid_entry() {
        let (_d, s) = store();
        let k = Key::of_content(b"shared");
        let payload = vec![42u8; 1 << 20];
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..5 {
                        s.put(&k, 1, &payload).unwrap();
                        if let Some(e) = s.get(&k).unwrap() {
                            assert_eq!(e.payload.len(), payload.len());
                        }
                    }
                });
            }
        });
        assert_eq!(s.get(&k).unwrap().unwrap().payload, payload);
    }
}
