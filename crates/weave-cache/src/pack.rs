//! Packs: small entries appended to one file per writing process, for values that are many,
//! small and written one at a time (LLM answers).
//!
//! A [`Store`](crate::Store) entry is a file of its own, written to a temporary file,
//! synced and renamed: about half a millisecond on ext4, three quarters of it creating the
//! inode. An LLM step at 1,024 requests in flight receives some 10,000 answers a second,
//! and each was paid for, so each must be kept. In a pack an answer costs one `write` to a
//! file this process alone appends to, and the syncs are shared: a writer that wants its
//! entry durable waits for the next `fdatasync` of the pack, which one of the waiting
//! writers runs for all of them (a group commit).
//!
//! A pack is `packs/<pid space>-<pid>-<start>-<n>.pack`, named after the [`Owner`] that
//! appends to it, so that `weave cache gc` never removes a pack a live process writes (on
//! another machine sharing the folder: while its lease, the pack's modification time,
//! is renewed). It holds a
//! header (magic, format version) and then records: payload length, codec, key, a blake3
//! checksum over the three and the payload (as a store entry's), and the payload. Readers
//! index every pack when they open the folder (and again on [`Packs::refresh`]); a record
//! that does not check out ends the reading of its pack, so a record torn by a crash, or
//! being written while the folder is read, is never data. An entry is looked up in the
//! index and read with one positioned read, its checksum checked again.
//!
//! Eviction takes whole packs, least recently used first (a hit marks its pack used once
//! per process), as [`Store::gc`](crate::Store::gc) does entries.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

use weave_fs::Owner;

use crate::error::Error;
use crate::key::Key;
use crate::store::checksum;

/// The first bytes of every pack.
const MAGIC: &[u8; 8] = b"WEAVE\x00P\x01";
/// The pack format: bump it when the header or the records change.
pub const PACK_FORMAT_VERSION: u32 = 1;
/// magic (8) + format (4).
const FILE_HEADER_LEN: u64 = 12;
/// payload length (8) + codec (4) + key (32) + checksum (32).
const RECORD_HEADER_LEN: usize = 76;
/// The largest payload a record may claim; a larger length is damage.
const MAX_PAYLOAD: u64 = 1 << 30;

/// The packs of one cache folder (`root/packs`): an index of every entry in them, and this
/// process's pack, created when it first appends.
///
/// Cheap to clone; [`Packs::shared`] gives every caller in a process the same one, so that
/// the folder is indexed once and this process appends to one pack.
#[derive(Debug, Clone)]
pub struct Packs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    index: Mutex<Index>,
    writer: Mutex<WriterState>,
    /// Signalled when a record waits for a sync.
    work: Condvar,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Key, Loc>,
    packs: Vec<PackFile>,
    by_name: HashMap<PathBuf, usize>,
}

/// Where an entry's payload is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: usize,
    /// The offset of the record (its header).
    offset: u64,
    len: u64,
}

/// A pack in the index. Its file is opened for each read, not held: a cache used by
/// many runs holds as many packs, more than a process may keep open.
#[derive(Debug)]
struct PackFile {
    path: PathBuf,
    /// How far the pack has been read: the end of its last whole record.
    read_to: u64,
    /// A record that did not check out ended the reading of this pack for good.
    damaged: bool,
    /// Whether a hit has marked it used (once per process is enough for eviction).
    touched: bool,
}

#[derive(Debug, Default)]
struct WriterState {
    writer: Option<Writer>,
    /// Records to write and sync, with what to call once they are on disk.
    pending: Vec<Pending>,
    /// Whether the sync thread runs (it stops after a while without work).
    syncer: bool,
}

/// The pack a record was written to: its file and name.
type Written = (Arc<File>, PathBuf);

/// What is called once a record is on disk, or with why it may not be.
pub type Durable = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// A record for the pack's thread to write and sync.
struct Pending {
    key: Key,
    codec: u32,
    payload: Vec<u8>,
    done: Durable,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("key", &self.key).finish_non_exhaustive()
    }
}

/// How long the sync thread waits for work before it stops.
const SYNCER_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// This process's pack.
#[derive(Debug)]
struct Writer {
    file: Arc<File>,
    path: PathBuf,
    /// The pack's index in [`Index::packs`].
    pack: usize,
    /// Bytes written.
    len: u64,
    /// Keeps the pack's lease renewed while this process may append to it.
    _lease: weave_fs::LeaseGuard,
}

/// A pack on disk, for eviction and listing.
#[derive(Debug, Clone)]
pub(crate) struct PackInfo {
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    pub(crate) used: SystemTime,
    /// Whether the process that appends to it may still run (then it is never removed).
    pub(crate) live: bool,
}

impl Packs {
    /// The packs of the cache in `root` (`root/packs`, created if needed), indexed now.
    /// Every call makes a new index: [`Packs::shared`] is the one to use in a run.
    pub fn open(root: &Path) -> Result<Packs, Error> {
        let dir = root.join("packs");
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let packs = Packs {
            inner: Arc::new(Inner { dir, index: Mutex::default(), writer: Mutex::default(), work: Condvar::new() }),
        };
        packs.refresh()?;
        Ok(packs)
    }

    /// This process's packs of the cache in `root`: the same index and the same pack for
    /// every caller (every LLM step of every run in the process), brought up to date with
    /// what other processes appended since it was last read ([`Packs::refresh`]).
    pub fn shared(root: &Path) -> Result<Packs, Error> {
        static SHARED: OnceLock<Mutex<HashMap<PathBuf, Packs>>> = OnceLock::new();
        let dir = root.join("packs");
        fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let id = fs::canonicalize(&dir).map_err(Error::io(&dir))?;
        let mut map = lock(SHARED.get_or_init(Mutex::default));
        if let Some(p) = map.get(&id) {
            let p = p.clone();
            drop(map);
            p.refresh()?;
            return Ok(p);
        }
        let p = Packs::open(root)?;
        map.insert(id, p.clone());
        Ok(p)
    }

    /// Reads what was appended to the folder's packs since they were last read: new packs,
    /// and new records of the packs already indexed.
    pub fn refresh(&self) -> Result<(), Error> {
        let dir = &self.inner.dir;
        let mut names: Vec<PathBuf> = Vec::new();
        for e in fs::read_dir(dir).map_err(Error::io(dir))? {
            let e = e.map_err(Error::io(dir))?;
            let path = e.path();
            if path.extension().is_some_and(|x| x == "pack") {
                names.push(path);
            }
        }
        names.sort();
        let mut index = lock(&self.inner.index);
        for path in names {
            let i = match index.by_name.get(&path) {
                Some(&i) => i,
                None => {
                    let pack = PackFile { path: path.clone(), read_to: 0, damaged: false, touched: false };
                    index.packs.push(pack);
                    let i = index.packs.len() - 1;
                    index.by_name.insert(path, i);
                    i
                }
            };
            read_pack(&mut index, i);
        }
        Ok(())
    }

    /// The entry under `key` (its codec and payload), if a pack holds it. A record that no
    /// longer checks out is a warning and a miss, never data.
    pub fn get(&self, key: &Key) -> Option<(u32, Vec<u8>)> {
        let (loc, path, touch) = {
            let mut index = lock(&self.inner.index);
            let loc = *index.entries.get(key)?;
            let pack = &mut index.packs[loc.pack];
            let touch = !std::mem::replace(&mut pack.touched, true);
            (loc, pack.path.clone(), touch)
        };
        let mut record = vec![0u8; RECORD_HEADER_LEN + loc.len as usize];
        let read = File::open(&path).and_then(|f| {
            f.read_exact_at(&mut record, loc.offset)?;
            if touch {
                // Marks the pack used, for least-recently-used eviction.
                let _ = f.set_modified(SystemTime::now());
            }
            Ok(())
        });
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Evicted (`weave cache gc`) since it was read: a miss, as for any entry.
                log::debug!("the cache pack {} is gone", path.display());
                lock(&self.inner.index).entries.remove(key);
                return None;
            }
            _ => {}
        }
        match parse_record(&record) {
            Some((k, codec, payload)) if k == *key => Some((codec, payload.to_vec())),
            _ => {
                log::warn!(
                    "the cache entry {key} in {} at byte {} no longer checks out; it is recomputed",
                    path.display(),
                    loc.offset
                );
                lock(&self.inner.index).entries.remove(key);
                None
            }
        }
    }

    /// Whether a pack holds an entry under `key`.
    pub fn contains(&self, key: &Key) -> bool {
        lock(&self.inner.index).entries.contains_key(key)
    }

    /// Appends `payload` under `key` to this process's pack (created on the first call)
    /// and returns once it is on disk: [`Packs::append_then`], waited for. An entry the
    /// packs already hold is not written again (the same key always holds the same
    /// content).
    pub fn append(&self, key: &Key, codec: u32, payload: &[u8]) -> Result<(), Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.append_then(
            key,
            codec,
            payload,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Io {
                path: self.inner.dir.clone(),
                source: std::io::Error::other("the pack's sync thread stopped"),
            })
        })
    }

    /// Hands `payload` over to be appended under `key`, and returns at once, touching no
    /// disk: the pack's thread writes it, and `then` is called once it is on disk (or
    /// with why it may not be). The thread writes every record handed over meanwhile,
    /// then runs one `fdatasync` for all of them (a group commit). A caller that must not
    /// block (an async task) waits for `then` instead of a thread.
    pub fn append_then(&self, key: &Key, codec: u32, payload: &[u8], then: Durable) {
        if self.contains(key) {
            return then(Ok(()));
        }
        let mut state = lock(&self.inner.writer);
        state.pending.push(Pending { key: *key, codec, payload: payload.to_vec(), done: then });
        if state.syncer {
            self.inner.work.notify_one();
            return;
        }
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new().name("weave-pack-sync".into()).spawn(move || sync_loop(&inner));
        if spawned.is_ok() {
            state.syncer = true;
        } else {
            // No thread: write and sync here, for what waits now.
            let pending = std::mem::take(&mut state.pending);
            drop(state);
            write_and_sync(&self.inner, pending);
        }
    }
}

impl Inner {
    /// Writes a record of `payload` under `key` to this process's pack: the pack's file
    /// and name, or `None` when the packs already hold the key.
    fn write(&self, key: &Key, codec: u32, payload: &[u8]) -> Result<Option<Written>, Error> {
        if lock(&self.index).entries.contains_key(key) {
            return Ok(None);
        }
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
        let mut codec_len = [0u8; 12];
        codec_len[..4].copy_from_slice(&codec.to_le_bytes());
        codec_len[4..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        record.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        record.extend_from_slice(&codec.to_le_bytes());
        record.extend_from_slice(key.as_bytes());
        record.extend_from_slice(&checksum(&codec_len, key.as_bytes(), payload));
        record.extend_from_slice(payload);

        let mut state = lock(&self.writer);
        let w = match state.writer.take() {
            Some(w) => w,
            None => self.new_writer()?,
        };
        let w = state.writer.insert(w);
        let offset = w.len;
        if let Err(e) = (&*w.file).write_all(&record) {
            // A record cut short (a full disk) would end the reading of the pack there:
            // cut it off, and start a new pack next time.
            let _ = w.file.set_len(offset);
            let path = w.path.clone();
            state.writer = None;
            return Err(Error::Io { path, source: e });
        }
        w.len += record.len() as u64;
        let (end, pack, file, path) = (w.len, w.pack, Arc::clone(&w.file), w.path.clone());
        drop(state);
        let mut index = lock(&self.index);
        index.entries.entry(*key).or_insert(Loc { pack, offset, len: payload.len() as u64 });
        let p = &mut index.packs[pack];
        p.read_to = p.read_to.max(end);
        Ok(Some((file, path)))
    }

    /// Creates this process's pack: its header written and synced, and its name in the
    /// folder synced, so that what is appended later is found after a power cut.
    fn new_writer(&self) -> Result<Writer, Error> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = &self.dir;
        let me = Owner::current();
        let (file, path) = loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{}.pack", weave_fs::owner_tag(me, n)));
            match OpenOptions::new().read(true).append(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                // Left by an earlier process that had this id and start time (a reboot).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::Io { path, source: e }),
            }
        };
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&PACK_FORMAT_VERSION.to_le_bytes());
        (&file).write_all(&header).map_err(Error::io(&path))?;
        file.sync_all().map_err(Error::io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
        let file = Arc::new(file);
        let mut index = lock(&self.index);
        let pack = PackFile { path: path.clone(), read_to: FILE_HEADER_LEN, damaged: false, touched: true };
        index.packs.push(pack);
        let i = index.packs.len() - 1;
        index.by_name.insert(path.clone(), i);
        let lease = weave_fs::hold_lease(&path);
        Ok(Writer { file, path, pack: i, len: FILE_HEADER_LEN, _lease: lease })
    }
}

/// The sync thread: takes every record waiting, syncs their packs once each, and tells
/// their writers; stops after [`SYNCER_IDLE`] without work.
fn sync_loop(inner: &Inner) {
    loop {
        let mut state = lock(&inner.writer);
        while state.pending.is_empty() {
            let (s, waited) = inner.work.wait_timeout(state, SYNCER_IDLE).unwrap_or_else(PoisonError::into_inner);
            state = s;
            if waited.timed_out() && state.pending.is_empty() {
                state.syncer = false;
                return;
            }
        }
        let pending = std::mem::take(&mut state.pending);
        drop(state);
        write_and_sync(inner, pending);
    }
}

/// Writes the records of `pending`, syncs their packs (each once), and tells each record's
/// writer.
fn write_and_sync(inner: &Inner, pending: Vec<Pending>) {
    let written: Vec<(Result<Option<Written>, Error>, Durable)> =
        pending.into_iter().map(|p| (inner.write(&p.key, p.codec, &p.payload), p.done)).collect();
    let mut outcome: Vec<(*const File, Result<(), std::io::ErrorKind>, String)> = Vec::new();
    for (w, done) in written {
        let (file, path) = match w {
            Ok(Some(f)) => f,
            Ok(None) => {
                done(Ok(()));
                continue;
            }
            Err(e) => {
                done(Err(e));
                continue;
            }
        };
        let at = Arc::as_ptr(&file);
        let r = match outcome.iter().find(|(f, _, _)| *f == at) {
            Some((_, r, why)) => r.map_err(|kind| std::io::Error::new(kind, why.clone())),
            None => {
                let r = file.sync_data();
                let why = r.as_ref().err().map(ToString::to_string).unwrap_or_default();
                outcome.push((at, r.as_ref().map(|_| ()).map_err(std::io::Error::kind), why));
                r
            }
        };
        done(r.map_err(|e| Error::Io { path, source: e }));
    }
}

/// Reads pack `i` from where its reading stopped, indexing every whole record that checks
/// out; stops at the end, at a record not yet whole (being written, or torn by a crash),
/// or for good at one that does not check out.
fn read_pack(index: &mut Index, i: usize) {
    let pack = &index.packs[i];
    if pack.damaged {
        return;
    }
    let (path, from) = (pack.path.clone(), pack.read_to);
    // A pack removed since it was listed (`weave cache gc`) has nothing more to read.
    let Ok(file) = File::open(&path) else { return };
    let Ok(size) = file.metadata().map(|m| m.len()) else { return };
    let mut offset = from;
    let mut damaged = None;
    if offset == 0 {
        if size < FILE_HEADER_LEN {
            return;
        }
        let mut header = [0u8; FILE_HEADER_LEN as usize];
        if file.read_exact_at(&mut header, 0).is_err() {
            return;
        }
        if &header[..8] != MAGIC {
            damaged = Some("it is not a weave pack".to_owned());
        } else if u32::from_le_bytes([header[8], header[9], header[10], header[11]]) != PACK_FORMAT_VERSION {
            damaged = Some("it was written in another format, by another version of weave".to_owned());
        }
        offset = FILE_HEADER_LEN;
    }
    let mut reader = BufReader::with_capacity(1 << 16, ReadAt { file: &file, at: offset });
    let mut record = Vec::new();
    while damaged.is_none() && size.saturating_sub(offset) >= RECORD_HEADER_LEN as u64 {
        record.resize(RECORD_HEADER_LEN, 0);
        if reader.read_exact(&mut record).is_err() {
            break;
        }
        let len = u64::from_le_bytes(record[..8].try_into().unwrap_or_default());
        if len > MAX_PAYLOAD {
            damaged = Some(format!("the record at byte {offset} claims {len} bytes"));
            break;
        }
        if size.saturating_sub(offset + RECORD_HEADER_LEN as u64) < len {
            // Not whole yet, or torn: read again from here next time.
            break;
        }
        record.resize(RECORD_HEADER_LEN + len as usize, 0);
        if reader.read_exact(&mut record[RECORD_HEADER_LEN..]).is_err() {
            break;
        }
        let Some((key, _, _)) = parse_record(&record) else {
            damaged = Some(format!("the record at byte {offset} does not match its checksum"));
            break;
        };
        index.entries.entry(key).or_insert(Loc { pack: i, offset, len });
        offset += record.len() as u64;
    }
    let pack = &mut index.packs[i];
    pack.read_to = offset;
    if let Some(why) = damaged {
        log::warn!("the cache pack {} is damaged ({why}); the entries after that are recomputed", path.display());
        pack.damaged = true;
    }
}

/// A record's key, codec and payload, if its checksum holds.
fn parse_record(record: &[u8]) -> Option<(Key, u32, &[u8])> {
    if record.len() < RECORD_HEADER_LEN {
        return None;
    }
    let len = u64::from_le_bytes(record[..8].try_into().ok()?);
    let payload = &record[RECORD_HEADER_LEN..];
    if payload.len() as u64 != len {
        return None;
    }
    let mut codec_len = [0u8; 12];
    codec_len[..4].copy_from_slice(&record[8..12]);
    codec_len[4..].copy_from_slice(&record[..8]);
    let key_bytes: [u8; 32] = record[12..44].try_into().ok()?;
    if checksum(&codec_len, &key_bytes, payload) != record[44..76] {
        return None;
    }
    let codec = u32::from_le_bytes(record[8..12].try_into().ok()?);
    Some((Key::from_bytes(key_bytes), codec, payload))
}

/// Sequential reads of a file from an offset, without moving a shared cursor.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The packs in `root/packs`, for eviction and listing.
pub(crate) fn list(root: &Path) -> Result<Vec<PackInfo>, Error> {
    let dir = root.join("packs");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Io { path: dir, source: e }),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(Error::io(&dir))?;
        let path = e.path();
        if path.extension().is_none_or(|x| x != "pack") {
            continue;
        }
        let meta = match e.metadata() {
            Ok(m) => m,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::Io { path, source: err }),
        };
        let live = owner_of(&path).is_none_or(|o| !weave_fs::holder_is_gone(&o, &path));
        out.push(PackInfo { path, bytes: meta.len(), used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), live });
    }
    Ok(out)
}

/// The entries of the pack at `path`: key and record size, for listing. A pack that cannot
/// be read lists as empty.
pub(crate) fn entries(path: &Path) -> Vec<(Key, u64)> {
    let mut index = Index::default();
    index.packs.push(PackFile { path: path.to_path_buf(), read_to: 0, damaged: false, touched: true });
    read_pack(&mut index, 0);
    let mut out: Vec<(Key, u64)> =
        index.entries.into_iter().map(|(k, loc)| (k, (RECORD_HEADER_LEN as u64) + loc.len)).collect();
    out.sort_by_key(|(k, _)| *k.as_bytes());
    out
}

/// The process that appends to the pack at `path`, from its name (a
/// [`weave_fs::owner_tag`]); `None` for a name that does not say (never removed).
fn owner_of(path: &Path) -> Option<Owner> {
    weave_fs::owner_of_tag(path.file_stem()?.to_str()?)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        Key::of_content(&i.to_le_bytes())
    }

    fn the_pack(root: &Path) -> PathBuf {
        let mut packs: Vec<_> = fs::read_dir(root.join("packs")).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(packs.len(), 1, "one pack per writing process: {packs:?}");
        packs.pop().unwrap()
    }

    #[test]
    fn entries_appended_are_read_back_here_and_by_another_reader() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::open(dir.path()).unwrap();
        assert!(packs.get(&key(1)).is_none());
        for i in 0..100 {
            packs.append(&key(i), 7, format!("answer {i}").as_bytes()).unwrap();
        }
        assert_eq!(packs.get(&key(42)), Some((7, b"answer 42".to_vec())));
        let other = Packs::open(dir.path()).unwrap();
        for i in 0..100 {
            assert_eq!(other.get(&key(i)).map(|e| e.1), Some(format!("answer {i}").into_bytes()));
        }
        // Written again: not appended twice.
        let size = fs::metadata(the_pack(dir.path())).unwrap().len();
        packs.append(&key(3), 7, b"answer 3").unwrap();
        assert_eq!(fs::metadata(the_pack(dir.path())).unwrap().len(), size);
    }

    #[test]
    fn a_reader_sees_what_another_writer_appends_after_a_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Packs::open(dir.path()).unwrap();
        let writer = Packs::open(dir.path()).unwrap();
        writer.append(&key(1), 1, b"one").unwrap();
        assert!(reader.get(&key(1)).is_none(), "not read yet");
        reader.refresh().unwrap();
        assert_eq!(reader.get(&key(1)).map(|e| e.1), Some(b"one".to_vec()));
        writer.append(&key(2), 1, b"two").unwrap();
        reader.refresh().unwrap();
        assert_eq!(reader.get(&key(2)).map(|e| e.1), Some(b"two".to_vec()));
    }

    #[test]
    fn a_torn_last_record_is_a_miss_and_the_ones_before_it_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let packs = Packs::open(dir.path()).unwrap();
            for i in 0..3 {
                packs.append(&key(i), 1, b"a paid answer").unwrap();
            }
        }
        let path = the_pack(dir.path());
        let size = fs::metadata(&path).unwrap().len();
        for cut in [1, 10, RECORD_HEADER_LEN as u64 + 5] {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(size - cut).unwrap();
            let packs = Packs::open(dir.path()).unwrap();
            assert!(packs.get(&key(0)).is_some() && packs.get(&key(1)).is_some(), "cut {cut}");
            assert!(packs.get(&key(2)).is_none(), "cut {cut}: the torn record is not data");
            f.set_len(size).unwrap();
        }
    }

    #[test]
    fn a_damaged_record_is_a_miss_never_data() {
        let dir = tempfile::tempdir().unwrap();
        Packs::open(dir.path()).unwrap().append(&key(0), 1, b"a paid answer").unwrap();
        let path = the_pack(dir.path());
        let clean = fs::read(&path).unwrap();
        let at = |i: usize| {
            let mut b = clean.clone();
            b[i] ^= 1;
            b
        };
        let header = FILE_HEADER_LEN as usize;
        for (what, bytes) in [
            ("a payload byte", at(clean.len() - 2)),
            ("a key byte", at(header + 20)),
            ("a checksum byte", at(header + 50)),
            ("the codec", at(header + 9)),
            ("the magic", at(1)),
            ("the format", at(8)),
        ] {
            fs::write(&path, &bytes).unwrap();
            assert!(Packs::open(dir.path()).unwrap().get(&key(0)).is_none(), "{what}");
        }
        // Damage after the index was read: found at the read.
        fs::write(&path, &clean).unwrap();
        let packs = Packs::open(dir.path()).unwrap();
        fs::write(&path, at(clean.len() - 2)).unwrap();
        assert!(packs.get(&key(0)).is_none());
    }

    #[test]
    fn a_length_past_any_sane_size_is_damage_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        Packs::open(dir.path()).unwrap().append(&key(0), 1, b"x").unwrap();
        let path = the_pack(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes[FILE_HEADER_LEN as usize..FILE_HEADER_LEN as usize + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        assert!(Packs::open(dir.path()).unwrap().get(&key(0)).is_none());
    }

    #[test]
    fn many_threads_appending_durably_share_the_syncs_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::open(dir.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let packs = &packs;
                s.spawn(move || {
                    for i in 0..200 {
                        packs.append(&key(t * 1000 + i), 1, &(t * 1000 + i).to_le_bytes()).unwrap();
                    }
                });
            }
        });
        let again = Packs::open(dir.path()).unwrap();
        for t in 0..8u32 {
            for i in 0..200 {
                assert_eq!(again.get(&key(t * 1000 + i)).map(|e| e.1), Some((t * 1000 + i).to_le_bytes().to_vec()));
            }
        }
        assert_eq!(entries(&the_pack(dir.path())).len(), 1600);
    }

    #[test]
    fn every_record_appended_without_waiting_is_reported_on_disk_once() {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::open(dir.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let (packs, tx) = (&packs, tx.clone());
                s.spawn(move || {
                    for i in 0..250 {
                        let tx = tx.clone();
                        let n = t * 1000 + i;
                        packs.append_then(
                            &key(n),
                            1,
                            &n.to_le_bytes(),
                            Box::new(move |r| tx.send((n, r.is_ok())).unwrap()),
                        );
                    }
                });
            }
        });
        drop(tx);
        let mut told: Vec<(u32, bool)> = rx.iter().collect();
        told.sort_unstable();
        assert_eq!(told.len(), 1000, "each record is told once");
        assert!(told.iter().all(|(_, ok)| *ok));
        let again = Packs::open(dir.path()).unwrap();
        assert!(told.iter().all(|(n, _)| again.get(&key(*n)).is_some()));
        // A key the packs hold is told at once, and not written again.
        let size = fs::metadata(the_pack(dir.path())).unwrap().len();
        let (tx, rx) = std::sync::mpsc::channel();
        packs.append_then(&key(3), 1, b"3", Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        assert!(rx.recv().unwrap());
        assert_eq!(fs::metadata(the_pack(dir.path())).unwrap().len(), size);
    }

    #[test]
    fn shared_packs_are_one_per_folder_in_a_process() {
        let dir = tempfile::tempdir().unwrap();
        let a = Packs::shared(dir.path()).unwrap();
        let b = Packs::shared(&dir.path().join(".")).unwrap();
        a.append(&key(1), 1, b"one").unwrap();
        assert_eq!(b.get(&key(1)).map(|e| e.1), Some(b"one".to_vec()));
        b.append(&key(2), 1, b"two").unwrap();
        the_pack(dir.path());
    }

    #[test]
    fn a_pack_names_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        Packs::open(dir.path()).unwrap().append(&key(1), 1, b"one").unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].live, "this process writes it");
        assert_eq!(owner_of(&listed[0].path), Some(Owner::current()));
        assert_eq!(owner_of(Path::new("x/123-0-4.pack")), Some(Owner::new(123, None)));
        assert_eq!(
            owner_of(Path::new("x/00000000000000ff-123-5-4.pack")),
            Some(Owner::in_space(123, Some(5), Some(255)))
        );
        assert_eq!(owner_of(Path::new("x/abc.pack")), None);
    }
}
