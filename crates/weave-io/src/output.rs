//! Output that appears whole or not at all: one file, or a set of parts (split by rows or
//! bytes, partitioned by the values of fields) moved into place together at commit and
//! listed in a manifest.
//!
//! [`AtomicOutput`] is one file: written (optionally compressed) into a temporary file
//! beside its target, synced, and renamed into place. [`Export`] drives the exporters on
//! top of it: a [`Format`] turns batches into bytes, and the export cuts them into files
//! as the `path` pattern, `max_rows`, `max_bytes` and the partition fields ask.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use weave_core::{Batch, ConfItem, ConfValue, Params, StepContext, StepError, ValueRef};
use weave_fs::TempFile;

/// How an output file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Plain bytes.
    None,
    /// gzip at a level from 0 to 9.
    Gzip(u32),
    /// zstd at a level from 1 to 22.
    Zstd(i32),
}

impl Compression {
    /// The name the `compression` key and the manifest use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip(_) => "gzip",
            Compression::Zstd(_) => "zstd",
        }
    }
}

/// The compression a file name asks for by its extension (`.gz`, `.zst` or `.zstd`, as the
/// loaders read them), with the extension's length.
fn compression_of_name(name: &str) -> Option<(&'static str, usize)> {
    let lower = name.to_ascii_lowercase();
    [(".gz", "gzip"), (".zst", "zstd"), (".zstd", "zstd")]
        .into_iter()
        .find(|(ext, _)| lower.ends_with(ext) && lower.len() > ext.len())
        .map(|(ext, c)| (c, ext.len()))
}

/// The file under the encoder: counts the bytes that reach the disk and, for the parts of
/// a set, hashes them as they go (so the manifest's hashes cost no second read).
pub(crate) struct Tally {
    file: FileOut,
    bytes: u64,
    hasher: Option<blake3::Hasher>,
    /// Bytes whose write-back has been started (see [`WRITE_BACK_EVERY`]).
    written_back: u64,
}

/// Where a [`Tally`]'s bytes go: the file, or a writer thread that owns it.
#[derive(Debug)]
enum FileOut {
    Direct(File),
    Behind(Behind),
}

/// A writer thread of one output: the bytes a step's call encodes are handed over a
/// buffer at a time (at most two waiting), and the thread makes the system calls, so that
/// the call does not wait for the kernel's copy into the page cache. The `io` bench's
/// export spent a tenth of a one-core run there; the tuned program it is measured against
/// writes from a thread of its own too. The first error ends the thread and is returned
/// by the next write, or by [`Behind::close`].
#[derive(Debug)]
struct Behind {
    full: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<File>>>,
}

impl Behind {
    /// Starts the thread for `file`; gives the file back if no thread can be started
    /// (the caller then writes directly).
    fn start(file: File) -> Result<Behind, File> {
        let Ok(mut theirs) = file.try_clone() else { return Err(file) };
        let (full, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (empty_tx, empty) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
        let spawned = std::thread::Builder::new().name("weave-writer".into()).spawn(move || {
            let (mut written, mut written_back) = (0u64, 0u64);
            for buf in full_rx {
                theirs.write_all(&buf)?;
                written += buf.len() as u64;
                if written - written_back >= WRITE_BACK_EVERY {
                    start_write_back(&theirs, written_back, written);
                    written_back = written;
                }
                let _ = empty_tx.try_send(buf);
            }
            Ok(theirs)
        });
        match spawned {
            Ok(thread) => Ok(Behind { full: Some(full), empty, thread: Some(thread) }),
            Err(_) => Err(file),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut v = self.empty.try_recv().unwrap_or_default();
        v.clear();
        v.extend_from_slice(buf);
        let sent = self.full.as_ref().is_some_and(|full| full.send(v).is_ok());
        if sent {
            Ok(())
        } else {
            Err(self.stop().err().unwrap_or_else(|| std::io::Error::other("the writer stopped")))
        }
    }

    /// Waits for every byte handed over to be written; returns the file, or the first error.
    fn close(mut self) -> std::io::Result<File> {
        self.stop()
    }

    fn stop(&mut self) -> std::io::Result<File> {
        self.full = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the output's writer thread panicked")),
            None => Err(std::io::Error::other("the output's writer thread has already stopped")),
        }
    }
}

/// Every this many bytes written, the kernel is asked to start writing them to the disk
/// (on Linux; elsewhere nothing is done). The sync at commit then waits for the last few
/// megabytes rather than for the whole file: on the `prep` benchmark's 200 MB output it
/// took 100 ms, a tenth of the run, during which nothing else was left to do. Only
/// write-back is started, and nothing is waited for, so an I/O error is still reported by
/// the sync at commit, as before.
const WRITE_BACK_EVERY: u64 = 8 << 20;

/// Asks the kernel to start writing bytes `from..to` of `file` to the disk.
fn start_write_back(file: &File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    if let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        // Advice: a failure changes nothing but the timing, so it is not an error.
        // (DONTNEED starts the write-back of the range's dirty pages, and drops the
        // pages that are already clean, which a pipeline's output does not need kept.)
        let _ = rustix::fs::fadvise(file, from, Some(len), rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

impl Tally {
    /// Counts (and hashes, when `hash`) what goes to `file`, written by a thread of its own
    /// when `behind` (see [`Behind`]).
    fn new(file: File, hash: bool, behind: bool) -> Self {
        let file = if behind {
            match Behind::start(file) {
                Ok(b) => FileOut::Behind(b),
                Err(file) => FileOut::Direct(file),
            }
        } else {
            FileOut::Direct(file)
        };
        Tally { file, bytes: 0, hasher: hash.then(blake3::Hasher::new), written_back: 0 }
    }

    /// The file with every byte written to it (the writer thread's done), the bytes
    /// written and their hash: or the first error.
    fn close(self) -> std::io::Result<(File, u64, Option<blake3::Hasher>)> {
        let file = match self.file {
            FileOut::Direct(f) => f,
            FileOut::Behind(b) => b.close()?,
        };
        Ok((file, self.bytes, self.hasher))
    }
}

impl Write for Tally {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match &mut self.file {
            FileOut::Direct(f) => {
                let n = f.write(buf)?;
                if self.bytes + n as u64 - self.written_back >= WRITE_BACK_EVERY {
                    start_write_back(f, self.written_back, self.bytes + n as u64);
                    self.written_back = self.bytes + n as u64;
                }
                n
            }
            FileOut::Behind(b) => {
                b.write(buf)?;
                buf.len()
            }
        };
        self.bytes += n as u64;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            FileOut::Direct(f) => f.flush(),
            // Handed over is as far as a flush goes: `close` waits for the writes.
            FileOut::Behind(_) => Ok(()),
        }
    }
}

/// The encoder a file's bytes go through.
pub(crate) enum Encoder {
    /// Plain bytes.
    Plain(Tally),
    /// gzip (the header's time is 0, so the same data gives the same bytes).
    Gzip(flate2::write::GzEncoder<Tally>),
    /// zstd, single-threaded, so the same data gives the same bytes.
    Zstd(zstd::stream::write::Encoder<'static, Tally>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Plain(_) => "Encoder::Plain",
            Encoder::Gzip(_) => "Encoder::Gzip",
            Encoder::Zstd(_) => "Encoder::Zstd",
        })
    }
}

impl Encoder {
    fn new(file: Tally, compression: Compression) -> std::io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::Plain(file),
            Compression::Gzip(level) => {
                Encoder::Gzip(flate2::write::GzEncoder::new(file, flate2::Compression::new(level)))
            }
            Compression::Zstd(level) => Encoder::Zstd(zstd::stream::write::Encoder::new(file, level)?),
        })
    }

    /// Writes what the encoder still holds (the compressed stream's end) and returns the file.
    fn finish(self) -> std::io::Result<Tally> {
        match self {
            Encoder::Plain(f) => Ok(f),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(buf),
            Encoder::Gzip(w) => w.write_all(buf),
            Encoder::Zstd(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

/// The `StepInfo` and `Sink` of an exporter: a struct with `out: Export<F>` and
/// `config: CanonicalConfig`, of the kind `$kind`. Every text exporter is one of these;
/// only the format differs.
macro_rules! export_step {
    ($step:ty, $kind:expr, $version:expr) => {
        impl weave_core::StepInfo for $step {
            fn kind(&self) -> &str {
                &$kind.name
            }

            fn version(&self) -> u32 {
                $version
            }

            fn config(&self) -> weave_core::CanonicalConfig {
                self.config.clone()
            }

            fn files_written(&self) -> Vec<std::path::PathBuf> {
                self.out.files_written()
            }

            fn fields_read(&self) -> Vec<String> {
                self.out.fields_read()
            }

            fn written_patterns(&self) -> Vec<weave_core::FilePattern> {
                self.out.written_patterns()
            }
        }

        impl weave_core::Sink for $step {
            fn write(
                &mut self,
                batch: &weave_core::Batch,
                ctx: &mut weave_core::StepContext,
            ) -> Result<(), weave_core::StepError> {
                let written = self.out.write(batch);
                self.out.report(ctx);
                written
            }

            fn commit(&mut self, _ctx: &mut weave_core::StepContext) -> Result<(), weave_core::StepError> {
                self.out.commit()
            }

            fn abort(&mut self) {
                self.out.abort();
            }
        }
    };
}
pub(crate) use export_step;

/// The buffered, possibly compressing writer into an [`AtomicOutput`]'s temporary file.
pub(crate) type TempWriter = Box<BufWriter<Encoder>>;

/// Where an [`AtomicOutput`] is.
#[derive(Debug)]
enum State {
    /// Nothing written yet: no temporary file.
    Idle,
    /// Being written into a temporary file.
    Writing { out: TempWriter, tmp: TempFile },
    /// Its writer handed over to a format library ([`AtomicOutput::take_writer`]).
    // Only the Parquet writer borrows the writer: without the `parquet` feature, nothing does.
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    Lent { tmp: TempFile },
    /// Written, synced and closed, waiting to be moved into place.
    Finished { tmp: TempFile },
    /// In place.
    Persisted,
}

/// What a finished file holds on disk.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    /// Bytes in the file (compressed, when it is).
    pub(crate) bytes: u64,
    /// The blake3 of those bytes in hex, for a file made with [`AtomicOutput::hashed`].
    pub(crate) blake3: Option<String>,
}

/// A file written into a temporary file beside its target and renamed into place on
/// [`AtomicOutput::commit`]: a reader never sees a half-written file, and a failed run
/// leaves nothing (dropping the temporary file deletes it, and [`AtomicOutput::abort`]
/// removes the folders it created).
///
/// The parts of a set commit in two moves: [`AtomicOutput::finish`] (flush, end the
/// compressed stream, sync, close) for every part first, where the errors happen (a full
/// disk), then [`AtomicOutput::persist`] (a rename) for each.
#[derive(Debug)]
pub(crate) struct AtomicOutput {
    path: PathBuf,
    compression: Compression,
    capacity: usize,
    hash: bool,
    /// Written by a thread of its own ([`Behind`]).
    behind: bool,
    state: State,
    written: Option<Written>,
    /// Folders this output created, deepest first, removed again on abort when empty.
    created: Vec<PathBuf>,
}

impl AtomicOutput {
    pub(crate) fn new(path: PathBuf) -> Self {
        AtomicOutput {
            path,
            compression: Compression::None,
            capacity: 1 << 20,
            hash: false,
            behind: false,
            state: State::Idle,
            written: None,
            created: Vec::new(),
        }
    }

    /// Builder: compresses what is written.
    pub(crate) fn compressed(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Builder: buffers this many bytes before they go to the encoder (1 MiB by default).
    pub(crate) fn buffered(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Builder: the file's bytes are written by a thread of its own ([`Behind`]): for an
    /// output written a megabyte at a time, one file open at a time (not a partitioned
    /// export's many files).
    pub(crate) fn written_behind(mut self) -> Self {
        self.behind = true;
        self
    }

    /// Builder: hashes the file's bytes with blake3 as they are written.
    pub(crate) fn hashed(mut self) -> Self {
        self.hash = true;
        self
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The writer, creating the temporary file (and the folders to it) on first use.
    pub(crate) fn writer(&mut self) -> Result<&mut BufWriter<Encoder>, StepError> {
        if matches!(self.state, State::Idle) {
            let dir = if crate::remote::is_remote(&self.path) {
                // A remote output is spooled in the system's temporary folder and uploaded
                // whole at commit (see `remote.rs`): nothing of it is in the bucket before.
                std::env::temp_dir()
            } else {
                let dir = match self.path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                // The run checked the files it names before it started; a part's name is
                // made as it goes, so each is looked at here, before anything is written.
                if let Ok(m) = std::fs::symlink_metadata(&self.path)
                    && !m.is_file()
                {
                    let what = if m.is_symlink() {
                        "a symbolic link (an output is replaced whole, which would replace the link, not the file it points to)"
                    } else if m.is_dir() {
                        "a folder"
                    } else {
                        "not a regular file (a device, a FIFO or a socket)"
                    };
                    return Err(StepError::fatal(format!("cannot write {}: it is {what}", self.path.display())));
                }
                create_dirs(&dir, &mut self.created)?;
                dir
            };
            // Named after this process, so that a later run can remove it if this one is
            // killed; with the permissions `File::create` would give, as it is the user's file.
            let (file, tmp) = TempFile::new_in(&dir).map_err(|e| {
                StepError::environment(format!("cannot create a temporary file in {}", dir.display()), e)
            })?;
            let tally = Tally::new(file, self.hash, self.behind);
            let encoder = Encoder::new(tally, self.compression).map_err(|e| {
                let what = format!("cannot start {} compression for {}", self.compression.name(), self.path.display());
                StepError::environment(what, e)
            })?;
            self.state = State::Writing { out: Box::new(BufWriter::with_capacity(self.capacity, encoder)), tmp };
        }
        match &mut self.state {
            State::Writing { out, .. } => Ok(out),
            _ => Err(StepError::internal(format!("{} was written to after it was finished", self.path.display()))),
        }
    }

    /// Hands the writer itself over, for a format library that must own what it writes to
    /// (the Parquet writer). Give it back with [`AtomicOutput::restore`] before
    /// [`AtomicOutput::finish`]; if it is dropped instead, the temporary file is still
    /// deleted on abort (or when this output is dropped).
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub(crate) fn take_writer(&mut self) -> Result<TempWriter, StepError> {
        self.writer()?;
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Writing { out, tmp } => {
                self.state = State::Lent { tmp };
                Ok(out)
            }
            other => {
                self.state = other;
                Err(StepError::internal("writer vanished"))
            }
        }
    }

    /// The temporary file of a finished output, which can be read back until it is moved
    /// into place or thrown away (the Parquet exporter rewrites it when its schema widens).
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub(crate) fn finished_temporary(&self) -> Option<&Path> {
        match &self.state {
            State::Finished { tmp } => Some(tmp.path()),
            _ => None,
        }
    }

    /// A new output to the same file, made as this one was, that takes over the folders
    /// this one created (so that aborting it still removes them).
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub(crate) fn successor(&mut self) -> AtomicOutput {
        let mut next = AtomicOutput::new(self.path.clone());
        next.compression = self.compression;
        next.capacity = self.capacity;
        next.hash = self.hash;
        next.behind = self.behind;
        next.created = self.take_created();
        next
    }

    /// Takes back the writer [`AtomicOutput::take_writer`] handed over.
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub(crate) fn restore(&mut self, out: TempWriter) {
        if let State::Lent { tmp } = std::mem::replace(&mut self.state, State::Idle) {
            self.state = State::Writing { out, tmp };
        }
    }

    /// Appends bytes.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> Result<(), StepError> {
        let w = self.writer()?;
        if let Err(e) = w.write_all(bytes) {
            return Err(StepError::environment(format!("cannot write {}", self.path.display()), e));
        }
        Ok(())
    }

    /// Flushes, ends the compressed stream, syncs and closes the temporary file (creating
    /// it, empty, if nothing was written). Once finished, nothing more can be written.
    pub(crate) fn finish(&mut self) -> Result<Written, StepError> {
        if let Some(w) = &self.written {
            return Ok(w.clone());
        }
        self.writer()?;
        let State::Writing { out, tmp } = std::mem::replace(&mut self.state, State::Idle) else {
            return Err(StepError::internal("writer vanished"));
        };
        let path = &self.path;
        let cannot_write = |e: std::io::Error| StepError::environment(format!("cannot write {}", path.display()), e);
        let encoder = (*out).into_inner().map_err(|e| cannot_write(e.into_error()))?;
        let tally = encoder.finish().map_err(cannot_write)?;
        let (mut file, bytes, hasher) = tally.close().map_err(cannot_write)?;
        file.flush().map_err(cannot_write)?;
        file.sync_all().map_err(|e| StepError::environment(format!("cannot sync {}", path.display()), e))?;
        let written = Written { bytes, blake3: hasher.map(|h| h.finalize().to_hex().to_string()) };
        self.state = State::Finished { tmp };
        self.written = Some(written.clone());
        Ok(written)
    }

    /// Moves the finished file into place, replacing what was there.
    pub(crate) fn persist(&mut self) -> Result<(), StepError> {
        match std::mem::replace(&mut self.state, State::Persisted) {
            // Uploaded, then the spooled file is deleted (dropped); a failed upload leaves
            // no object, and the output is then no longer finished.
            State::Finished { tmp } if crate::remote::is_remote(&self.path) => {
                crate::remote::upload(tmp.path(), &self.path).inspect_err(|_| self.state = State::Idle)
            }
            State::Finished { tmp } => tmp.persist(&self.path).map_err(|e| {
                StepError::environment(format!("cannot move the output into place at {}", self.path.display()), e)
            }),
            State::Persisted => Ok(()),
            other => {
                self.state = other;
                Err(StepError::internal(format!("{} was moved into place before it was finished", self.path.display())))
            }
        }
    }

    /// Finishes and moves into place; a run with no rows still produces its (empty) file.
    pub(crate) fn commit(&mut self) -> Result<(), StepError> {
        self.finish()?;
        self.persist()
    }

    /// Throws the temporary file away and removes the folders made for it that are empty.
    pub(crate) fn abort(&mut self) {
        if !matches!(self.state, State::Persisted) {
            self.state = State::Idle;
            self.written = None;
        }
        remove_empty_dirs(&std::mem::take(&mut self.created));
    }

    /// The folders this output created, deepest first, which it then leaves to the caller.
    fn take_created(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.created)
    }
}

/// Creates `dir` and its missing parents, noting those it created, deepest first.
fn create_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), StepError> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    std::fs::create_dir_all(dir).map_err(|e| StepError::environment(format!("cannot create {}", dir.display()), e))?;
    created.extend(missing);
    Ok(())
}

/// Removes each folder that is empty, in the order given (deepest first).
fn remove_empty_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        // A folder that is not empty holds something else: it stays.
        let _ = std::fs::remove_dir(d);
    }
}

/// One piece of a `path` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Literal text.
    Text(String),
    /// The part's number, zero-padded to this many digits.
    Index(usize),
    /// The value of this field, made safe for a file name.
    Field(String),
}

/// The digits `{index}` is padded to when no width is given.
const INDEX_WIDTH: usize = 5;

/// A `path` with placeholders: `{index}` or `{index:0N}` for the part's number and
/// `{field}` for a field's value; `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        for part in weave_core::parse_template(s, "placeholder").map_err(|e| e.to_string())? {
            pieces.push(match part {
                weave_core::TemplatePart::Text(text) => Piece::Text(text),
                weave_core::TemplatePart::Name { name, .. } => placeholder(&name)?,
            });
        }
        Ok(Template { pieces })
    }

    /// The pattern `raw` (as written in the pipeline file at `file`) resolved as
    /// [`weave_core::resolve`] resolves paths: a relative one goes under the file's folder.
    fn under(mut self, file: &Path, raw: &str) -> Template {
        if crate::remote::is_url(raw) {
            return self;
        }
        let resolved = weave_core::resolve(file, raw);
        let resolved = resolved.to_string_lossy();
        // What resolving put in front of the path as written.
        let Some(prefix) = resolved.strip_suffix(raw).filter(|p| !p.is_empty()) else { return self };
        match self.pieces.first_mut() {
            Some(Piece::Text(t)) => t.insert_str(0, prefix),
            _ => self.pieces.insert(0, Piece::Text(prefix.to_owned())),
        }
        self
    }

    /// The fields named by placeholders, each once, in the order they first appear.
    fn fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.pieces {
            if let Piece::Field(f) = p
                && !out.contains(f)
            {
                out.push(f.clone());
            }
        }
        out
    }

    fn has_index(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Index(_)))
    }

    /// The compression the file's extension asks for.
    fn compression(&self) -> Option<&'static str> {
        match self.pieces.last() {
            Some(Piece::Text(t)) => compression_of_name(t).map(|(c, _)| c),
            _ => None,
        }
    }

    /// The pattern with `-{index}` put before the file's extension (`data.jsonl.gz` becomes
    /// `data-{index}.jsonl.gz`), or at the end when the name has no extension.
    fn with_index_suffix(&self) -> Template {
        let mut pieces = self.pieces.clone();
        let suffix = [Piece::Text("-".into()), Piece::Index(INDEX_WIDTH)];
        let Some(Piece::Text(t)) = pieces.pop() else {
            pieces.extend(self.pieces.last().cloned());
            pieces.extend(suffix);
            return Template { pieces };
        };
        let name_start = t.rfind('/').map_or(0, |i| i + 1);
        let comp = compression_of_name(&t[name_start..]).map_or(0, |(_, n)| n);
        let body = &t[name_start..t.len() - comp];
        // A dot that starts the file name makes a hidden file, not an extension, unless a
        // placeholder comes before it in the same name.
        let name_is_text = name_start > 0 || pieces.is_empty();
        let cut = match body.rfind('.') {
            Some(0) if name_is_text => t.len() - comp,
            Some(d) => name_start + d,
            None => t.len() - comp,
        };
        if cut > 0 {
            pieces.push(Piece::Text(t[..cut].to_owned()));
        }
        pieces.extend(suffix);
        if cut < t.len() {
            pieces.push(Piece::Text(t[cut..].to_owned()));
        }
        Template { pieces }
    }

    /// The path for part `index`, with the fields' file-name values in [`Template::fields`] order.
    fn render(&self, index: u64, values: &[String]) -> PathBuf {
        let fields = self.fields();
        let mut s = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => s.push_str(t),
                Piece::Index(w) => s.push_str(&format!("{index:0w$}")),
                Piece::Field(f) => {
                    let k = fields.iter().position(|x| x == f).unwrap_or_default();
                    s.push_str(values.get(k).map_or("", String::as_str));
                }
            }
        }
        PathBuf::from(s)
    }

    /// The text before the first placeholder.
    fn literal_prefix(&self) -> String {
        let mut prefix = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => prefix.push_str(t),
                _ => break,
            }
        }
        prefix
    }

    /// Whether the pattern can make `path`.
    fn matches(&self, path: &str) -> bool {
        fn go(pieces: &[Piece], s: &str) -> bool {
            let Some((first, rest)) = pieces.split_first() else { return s.is_empty() };
            match first {
                Piece::Text(t) => s.strip_prefix(t.as_str()).is_some_and(|r| go(rest, r)),
                Piece::Index(w) => {
                    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
                    (*w..=digits).rev().any(|n| go(rest, &s[n..]))
                }
                Piece::Field(_) => {
                    let len = s.find('/').unwrap_or(s.len());
                    s[..len].char_indices().skip(1).map(|(i, _)| i).chain([len]).any(|n| n > 0 && go(rest, &s[n..]))
                }
            }
        }
        go(&self.pieces, path)
    }

    /// Where a set's manifest goes unless `manifest` says: in the deepest folder of the
    /// pattern before any placeholder, named after the file name without its placeholders
    /// and extensions, behind a dot (`out/{split}/part-{index}.jsonl.gz` gives
    /// `out/.part.manifest.json`, `out/{split}.jsonl` gives `out/.manifest.json`).
    ///
    /// The dot hides it from the globs that read the data: a shell's `*`, Python's
    /// `glob`, Hugging Face `datasets` (whose `data_files` skip hidden files), pyarrow
    /// datasets and Spark (which skip names starting with `.` or `_`), Weave's own
    /// loaders. Without it `out/*.json` took the manifest for data.
    fn default_manifest(&self) -> PathBuf {
        let legacy = self.legacy_manifest();
        let name = legacy.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        legacy.with_file_name(format!(".{name}"))
    }

    /// The default manifest's name before it was hidden (`out/part.manifest.json`): a
    /// set written then still has it, and its commit must clear it out with its parts.
    fn legacy_manifest(&self) -> PathBuf {
        let prefix = self.literal_prefix();
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..=i]);
        // Placeholders become NUL, which no path holds, and are dropped at the end.
        let full: String = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                _ => "\u{0}",
            })
            .collect();
        let name = &full[full.rfind('/').map_or(0, |i| i + 1)..];
        let name = &name[..name.len() - compression_of_name(name).map_or(0, |(_, n)| n)];
        let name = match name.rfind('.') {
            Some(d) if d > 0 => &name[..d],
            _ => name,
        };
        let stem: String = name.split('\u{0}').collect();
        let stem = stem.trim_matches(|c| matches!(c, '-' | '_' | '.' | ' '));
        let file = if stem.is_empty() { "manifest.json".to_owned() } else { format!("{stem}.manifest.json") };
        PathBuf::from(format!("{dir}{file}"))
    }
}

fn placeholder(inner: &str) -> Result<Piece, String> {
    let (name, spec) = match inner.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (inner, None),
    };
    if name.is_empty() {
        return Err(format!(
            "`{{{inner}}}` names nothing: write `{{index}}` for the part's number or `{{field}}` for a field's value"
        ));
    }
    if name.contains(['/', '\\', '{']) {
        return Err(format!("`{{{inner}}}` is not a field name"));
    }
    match (name, spec) {
        ("index", None) => Ok(Piece::Index(INDEX_WIDTH)),
        ("index", Some(spec)) => {
            let width = spec
                .strip_prefix('0')
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|w| (1..=20).contains(w))
                .ok_or_else(|| {
                format!("`{{index:{spec}}}`: the width is written `0N`, N from 1 to 20, as in `{{index:05}}`")
            })?;
            Ok(Piece::Index(width))
        }
        (_, Some(_)) => Err(format!("`{{{inner}}}`: only `{{index}}` takes a width")),
        (field, None) => Ok(Piece::Field(field.to_owned())),
    }
}

/// The longest file-name value a partition gets, in bytes.
const MAX_NAME: usize = 200;

/// Appends `v` made safe as (part of) a file name: letters, digits and `-_.=+@` are kept,
/// any other character becomes `_`; a leading `.` becomes `_` (no hidden files, no `..`);
/// the empty string is `__empty__` and null `__null__`; at most 200 bytes are kept.
fn file_name_value(v: ValueRef<'_>, out: &mut String) {
    let start = out.len();
    let mut push = |s: &str| {
        for c in s.chars() {
            if out.len() - start + c.len_utf8() > MAX_NAME {
                break;
            }
            let keep = c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+' | '@');
            out.push(if keep { c } else { '_' });
        }
    };
    match v {
        ValueRef::Null => out.push_str("__null__"),
        ValueRef::Str(s) => push(s),
        other => push(&other.to_string()),
    }
    if out.len() == start {
        out.push_str("__empty__");
    } else if out[start..].starts_with('.') {
        out.replace_range(start..=start, "_");
    }
}

/// Appends a key that tells values apart exactly (type and content), for grouping rows.
fn raw_key(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Null => out.push(b'n'),
        ValueRef::Str(s) => {
            out.push(b's');
            out.extend_from_slice(s.as_bytes());
        }
        other => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{}:{other}", other.type_name());
        }
    }
    out.push(0xff);
}

/// The keys every text exporter takes, besides its own.
pub(crate) const KEYS: [&str; 7] =
    ["path", "compression", "level", "max_rows", "max_bytes", "max_partitions", "manifest"];

/// Partitions allowed by default.
const MAX_PARTITIONS: u64 = 100;

/// Where and how an export writes, from the keys every text exporter takes ([`KEYS`]).
#[derive(Debug, Clone)]
pub(crate) struct OutputSpec {
    /// The file, for a single-file output.
    path: PathBuf,
    /// The pattern parts are named by; `None` for a single file.
    template: Option<Template>,
    /// `path` as the pipeline file writes it, for messages.
    raw: String,
    /// The fields the output is partitioned by.
    fields: Vec<String>,
    compression: Compression,
    max_rows: Option<u64>,
    max_bytes: Option<u64>,
    max_partitions: usize,
    /// Where the set's manifest goes; `None` for a single file.
    manifest: Option<PathBuf>,
    /// The manifest's default name in earlier versions (see [`Template::legacy_manifest`]),
    /// when `manifest` is not given: read at commit so that a set they wrote is cleared out.
    legacy_manifest: Option<PathBuf>,
}

impl OutputSpec {
    /// Reads the keys; `what` says what `path` is, for a missing-key message.
    pub(crate) fn read(p: &Params, what: &str) -> Option<OutputSpec> {
        let raw = p.required_str("path", what);
        let compression = p.choice("compression", &["none", "gzip", "zstd"]);
        let level = p.item("level").and_then(|item| match &item.value {
            ConfValue::Int(i) => Some((*i, item)),
            other => {
                p.error_at(item, format!("`level` must be an integer, not {}", other.type_name()));
                None
            }
        });
        let max_rows = p.u64("max_rows");
        let max_bytes = p.bytes("max_bytes");
        let max_partitions = p.u64("max_partitions");
        let manifest = p.path("manifest");
        for (key, v) in [("max_rows", max_rows), ("max_bytes", max_bytes), ("max_partitions", max_partitions)] {
            if v == Some(0)
                && let Some(item) = p.item(key)
            {
                p.error_at(item, format!("`{key}` must be at least 1"));
            }
        }
        // A shard's output sits beside the other shards' (`{shard}`, or a part name put
        // before the extension: see `weave_core::Shard::apply`).
        let raw = weave_core::Shard::apply(p.context().shard(), &raw?);
        let at_path = |msg: &str| {
            if let Some(item) = p.item("path") {
                p.error_at(item, msg);
            }
        };
        // The pattern is read from the path as written, so that braces in the pipeline's
        // own folder are not taken for placeholders; a relative one then goes under it.
        let template = match Template::parse(&raw) {
            Ok(t) => Some(t.under(p.file().path(), &raw)),
            Err(e) => {
                at_path(&format!("`path`: {e}"));
                None
            }
        };
        let split = max_rows.is_some() || max_bytes.is_some();
        let fields = template.as_ref().map(Template::fields).unwrap_or_default();
        if template.as_ref().is_some_and(|t| t.has_index() && !split) {
            at_path(
                "`path` has `{index}`, which numbers the parts of a split output: set `max_rows` or `max_bytes`, or take `{index}` out",
            );
        }
        if raw.is_empty() || raw.ends_with(['/', '\\']) {
            at_path("`path` names a folder: name the file");
        } else if crate::remote::is_url(&raw) {
            crate::remote::configure(&raw, p.context().storage());
            if let Err(e) = crate::remote::check_target(&raw) {
                at_path(&e);
            }
        }
        if max_partitions.is_some()
            && fields.is_empty()
            && let Some(item) = p.item("max_partitions")
        {
            p.error_at(item, "`max_partitions` caps the values of `path`'s `{field}` placeholders, and it has none");
        }
        let set = split || !fields.is_empty();
        if manifest.is_some()
            && !set
            && let Some(item) = p.item("manifest")
        {
            p.error_at(
                item,
                "`manifest` lists the parts of a split or partitioned output, and this output is one file (set `max_rows`, `max_bytes`, or a `{field}` in `path`)",
            );
        }
        let compression = read_compression(p, template.as_ref(), compression, level);
        if p.has_errors() {
            return None;
        }
        let template = template?;
        let path = template.render(0, &[]);
        let legacy_manifest = (set && manifest.is_none()).then(|| template.legacy_manifest());
        let manifest = set.then(|| manifest.unwrap_or_else(|| template.default_manifest()));
        let template = match (set, split && !template.has_index()) {
            (false, _) => None,
            (true, true) => Some(template.with_index_suffix()),
            (true, false) => Some(template),
        };
        Some(OutputSpec {
            path,
            raw,
            template,
            fields,
            compression: compression?,
            max_rows,
            max_bytes,
            max_partitions: max_partitions.unwrap_or(MAX_PARTITIONS) as usize,
            manifest,
            legacy_manifest,
        })
    }

    /// The files the export writes, as far as is known before the run: the file, or for a
    /// set its manifest, which lists the parts (with their hashes) once they are written.
    pub(crate) fn files_written(&self) -> Vec<PathBuf> {
        // A remote output is no file of this machine: the run's checks of its files and its
        // lineage (which hashes what it wrote) are of local files only.
        if self.is_remote() {
            return Vec::new();
        }
        vec![self.manifest.clone().unwrap_or_else(|| self.path.clone())]
    }

    /// Whether the output goes to object storage.
    pub(crate) fn is_remote(&self) -> bool {
        crate::remote::is_remote(&self.path)
    }

    /// For a set, the parts it may write: the files the pattern can make, under the
    /// pattern's folder before its first placeholder.
    pub(crate) fn written_patterns(&self) -> Vec<weave_core::FilePattern> {
        let Some(template) = &self.template else { return Vec::new() };
        if self.is_remote() {
            return Vec::new();
        }
        let prefix = template.literal_prefix();
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..=i]).to_owned();
        let shown = self.raw.clone();
        let template = template.clone();
        let folder = if dir.is_empty() { PathBuf::from(".") } else { PathBuf::from(&dir) };
        let mut patterns =
            vec![weave_core::FilePattern::new(folder, shown, move |rel| template.matches(&format!("{dir}{rel}")))];
        // The commit also writes the note of earlier parts beside the manifest, and
        // removes a manifest of the name earlier versions gave it.
        if let Some(manifest) = &self.manifest {
            let folder = manifest.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let names: Vec<String> = [Some(previous_record(manifest)), self.legacy_manifest.clone()]
                .into_iter()
                .flatten()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            let shown = format!("{} (and {})", self.raw, names.join(", "));
            patterns.push(weave_core::FilePattern::new(folder, shown, move |rel| names.iter().any(|n| n == rel)));
        }
        patterns
    }
}

/// The compression the extension and the `compression` and `level` keys agree on, or
/// `None` with the disagreement reported.
fn read_compression(
    p: &Params,
    template: Option<&Template>,
    key: Option<&'static str>,
    level: Option<(i64, &ConfItem)>,
) -> Option<Compression> {
    let ext_of = |c: &str| if c == "gzip" { ".gz" } else { ".zst" };
    let from_ext = template.and_then(Template::compression);
    let kind = match (from_ext, key) {
        (Some(e), Some(k)) if e != k => {
            if let Some(item) = p.item("compression") {
                let msg = format!(
                    "`compression` is \"{k}\" but `path` ends in {}, which means {e}: make them agree",
                    ext_of(e)
                );
                p.error_at(item, msg);
            }
            return None;
        }
        (None, Some(k)) if k != "none" => {
            if let Some(item) = p.item("compression") {
                let msg = format!(
                    "`compression` is \"{k}\" but `path` does not end in {ext}: end it in {ext} (readers, Weave's loaders too, choose the decoder by the extension)",
                    ext = ext_of(k)
                );
                p.error_at(item, msg);
            }
            return None;
        }
        (e, k) => e.or(k).unwrap_or("none"),
    };
    let (lo, hi, default) = match kind {
        "gzip" => (0, 9, 6),
        "zstd" => (1, 22, 3),
        _ => {
            if let Some((_, item)) = level {
                p.error_at(item, "`level` needs compression: end `path` in .gz or .zst");
                return None;
            }
            return Some(Compression::None);
        }
    };
    let level = match level {
        Some((l, _)) if (lo..=hi).contains(&l) => l,
        Some((l, item)) => {
            p.error_at(item, format!("`level` {l} is out of range: {kind} levels go from {lo} to {hi}"));
            return None;
        }
        None => default,
    };
    Some(if kind == "gzip" { Compression::Gzip(level as u32) } else { Compression::Zstd(level as i32) })
}

/// How an exporter turns batches into bytes.
pub(crate) trait Format: std::fmt::Debug + Send {
    /// The format's name in the manifest (`"jsonl"`).
    fn name(&self) -> &'static str;

    /// Serialises every row of `batch` into `out`, one after the other, pushing the offset
    /// where each row ends into `ends`.
    fn rows(&mut self, batch: &Batch, out: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<(), StepError>;

    /// Appends what starts every file (a CSV header, JSON's `[`).
    fn start(&self, out: &mut Vec<u8>) {
        let _ = out;
    }

    /// The bytes at the start of each serialised row that the first row of a file leaves
    /// out (the comma before a JSON array's element).
    fn lead(&self) -> usize {
        0
    }

    /// Appends what ends a file holding `records` records.
    fn end(&self, records: u64, out: &mut Vec<u8>) {
        let _ = (records, out);
    }

    /// Reports, as the step's figures, what the rows serialised since the last call had to
    /// give up to fit the format (JSON's NaN written as null).
    fn report(&mut self, ctx: &mut StepContext) {
        let _ = ctx;
    }
}

/// A partition of the output: the records with one set of values of the partition fields
/// (the only partition, for an output that is not partitioned).
#[derive(Debug)]
struct Partition {
    /// The fields' values as they go into file names.
    names: Vec<String>,
    /// The fields' values, for the manifest.
    values: serde_json::Map<String, serde_json::Value>,
    next_index: u64,
    open: Option<Part>,
}

/// A file of the output.
#[derive(Debug)]
struct Part {
    out: AtomicOutput,
    partition: usize,
    records: u64,
    /// Bytes written, before compression.
    bytes: u64,
}

/// The points of a set's commit where a test can stop it, as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitStep {
    /// The record of the earlier parts is in place, nothing else has changed.
    RecordWritten,
    /// The old manifests are gone and the new parts in place; no manifest.
    PartsMoved,
    /// The new manifest is in place; the earlier parts it does not list are still there.
    ManifestMoved,
}

#[cfg(test)]
thread_local! {
    /// Where the commits of sets on this thread stop, as a crash would (tests only).
    static CRASH_AT: std::cell::Cell<Option<CommitStep>> = const { std::cell::Cell::new(None) };
}

/// Where a set's commit lists the parts of the earlier manifests until the new manifest
/// is in place and they are removed: `.<manifest name>.previous` beside the manifest (one
/// dot when the name has one already). A run killed inside its commit leaves it, and the
/// next commit of the set removes what it lists.
fn previous_record(manifest: &Path) -> PathBuf {
    let name = manifest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let hidden = if name.starts_with('.') { name } else { format!(".{name}") };
    manifest.with_file_name(format!("{hidden}.previous"))
}

/// Writes the record of a set's earlier parts (`{"parts": [{"path": ...}]}`, the
/// manifest's shape, paths relative to its folder) through a temporary file and a rename.
fn write_record(record: &Path, parts: &[PathBuf], relative: &dyn Fn(&Path) -> String) -> Result<(), StepError> {
    let listed: Vec<serde_json::Value> = parts.iter().map(|p| serde_json::json!({ "path": relative(p) })).collect();
    let mut text = serde_json::to_vec_pretty(&serde_json::json!({ "parts": listed }))
        .map_err(|e| StepError::internal(format!("the list of earlier parts does not serialise: {e}")))?;
    text.push(b'\n');
    let mut out = AtomicOutput::new(record.to_path_buf());
    out.write_all(&text)?;
    out.commit()
}

/// Removes a file, or a remote object (which S3 removes whether it is there or not).
fn remove_file(path: &Path) -> std::io::Result<()> {
    if crate::remote::is_remote(path) {
        return crate::remote::remove(path).map_err(std::io::Error::other);
    }
    std::fs::remove_file(path)
}

/// Removes a file; one that is not there is no error.
fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Buffer of a file in an output that is not partitioned.
const BUFFER: usize = 1 << 20;
/// Buffer of each partition's open file: partitions share the memory.
const PARTITION_BUFFER: usize = 64 << 10;

/// Writes batches through a [`Format`] into one file, or into a set of parts named by a
/// pattern, split by `max_rows` and `max_bytes` and partitioned by `{field}` placeholders.
///
/// Every file is written under a temporary name: nothing is visible before
/// [`Export::commit`], and [`Export::abort`] removes everything. A set's commit finishes
/// every part (flush, sync) before it moves any into place, then removes the parts of the
/// previous run that its manifest lists and this run did not write, and moves the new
/// manifest into place last: the manifest is the mark of a complete set.
#[derive(Debug)]
pub(crate) struct Export<F> {
    format: F,
    spec: OutputSpec,
    partitions: Vec<Partition>,
    /// Exact values (see [`raw_key`]) → partition.
    by_key: HashMap<Vec<u8>, usize>,
    /// File-name values → partition, to catch two values that would share files.
    by_name: HashMap<String, usize>,
    /// Parts finished and waiting for the commit.
    done: Vec<Part>,
    /// Bytes a non-empty part ends with.
    end_len: u64,
    buf: Vec<u8>,
    ends: Vec<usize>,
    scratch: Vec<u8>,
    key: Vec<u8>,
}

impl<F: Format> Export<F> {
    pub(crate) fn new(spec: OutputSpec, format: F) -> Self {
        let mut end = Vec::new();
        format.end(1, &mut end);
        Export {
            format,
            spec,
            partitions: Vec::new(),
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            done: Vec::new(),
            end_len: end.len() as u64,
            buf: Vec::new(),
            ends: Vec::new(),
            scratch: Vec::new(),
            key: Vec::new(),
        }
    }

    pub(crate) fn files_written(&self) -> Vec<PathBuf> {
        self.spec.files_written()
    }

    /// The fields the output's `path` partitions it by.
    pub(crate) fn fields_read(&self) -> Vec<String> {
        self.spec.fields.clone()
    }

    pub(crate) fn written_patterns(&self) -> Vec<weave_core::FilePattern> {
        self.spec.written_patterns()
    }

    /// Reports the format's figures (see [`Format::report`]).
    pub(crate) fn report(&mut self, ctx: &mut StepContext) {
        self.format.report(ctx);
    }

    /// Writes a batch's records into their files.
    pub(crate) fn write(&mut self, batch: &Batch) -> Result<(), StepError> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut ends = std::mem::take(&mut self.ends);
        buf.clear();
        ends.clear();
        let result = self.format.rows(batch, &mut buf, &mut ends).and_then(|()| self.route_batch(batch, &buf, &ends));
        self.buf = buf;
        self.ends = ends;
        result
    }

    fn route_batch(&mut self, batch: &Batch, buf: &[u8], ends: &[usize]) -> Result<(), StepError> {
        if ends.is_empty() {
            return Ok(());
        }
        if self.spec.fields.is_empty() {
            let p = self.partition_of(batch, &[], 0)?;
            return self.route(p, 0..ends.len(), buf, ends);
        }
        let columns: Vec<usize> = self
            .spec
            .fields
            .iter()
            .map(|f| {
                batch.schema().index_of(f).ok_or_else(|| {
                    StepError::fatal(format!(
                        "{}, and `path` partitions the output by it",
                        crate::missing_field(batch, f)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        // Rows go out in runs that share a partition, so sorted or grouped data is copied in
        // large slices.
        let mut run = (0, self.partition_of(batch, &columns, 0)?);
        for row in 1..ends.len() {
            let p = self.partition_of(batch, &columns, row)?;
            if p != run.1 {
                self.route(run.1, run.0..row, buf, ends)?;
                run = (row, p);
            }
        }
        self.route(run.1, run.0..ends.len(), buf, ends)
    }

    /// The partition of `row`, made when it is new.
    fn partition_of(&mut self, batch: &Batch, columns: &[usize], row: usize) -> Result<usize, StepError> {
        self.key.clear();
        for &c in columns {
            raw_key(batch.columns()[c].get(row), &mut self.key);
        }
        if let Some(&p) = self.by_key.get(self.key.as_slice()) {
            return Ok(p);
        }
        let fields = &self.spec.fields;
        if self.partitions.len() >= self.spec.max_partitions {
            let shown: Vec<String> = columns.iter().map(|&c| batch.columns()[c].get(row).to_string()).collect();
            let names: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            return Err(StepError::fatal(format!(
                "more than {} partitions (`max_partitions`): {} {} another value, {}; raise `max_partitions` (each partition keeps a file open, with a 64 KiB buffer) or partition by a field with fewer values",
                self.spec.max_partitions,
                names.join(", "),
                if names.len() == 1 { "has" } else { "have" },
                shown.join(", ")
            )));
        }
        let mut names = Vec::with_capacity(columns.len());
        let mut values = serde_json::Map::new();
        for (&c, f) in columns.iter().zip(fields) {
            let v = batch.columns()[c].get(row);
            let mut name = String::new();
            file_name_value(v, &mut name);
            names.push(name);
            values.insert(f.clone(), serde_json::to_value(v.to_owned()).unwrap_or_default());
        }
        let joined = names.join("/");
        if let Some(&q) = self.by_name.get(&joined) {
            let show =
                |m: &serde_json::Map<String, serde_json::Value>| serde_json::Value::Object(m.clone()).to_string();
            return Err(StepError::fatal(format!(
                "the partitions {} and {} would share files (both are named \"{joined}\" once made safe for a file name); partition by a field whose values differ in their letters or digits",
                show(&self.partitions[q].values),
                show(&values),
            )));
        }
        let p = self.partitions.len();
        self.partitions.push(Partition { names, values, next_index: 0, open: None });
        self.by_key.insert(self.key.clone(), p);
        self.by_name.insert(joined, p);
        Ok(p)
    }

    /// Writes `rows` (serialised in `buf`, each ending at its offset in `ends`) into
    /// partition `p`'s files, starting a new one whenever the open one is full.
    fn route(&mut self, p: usize, rows: std::ops::Range<usize>, buf: &[u8], ends: &[usize]) -> Result<(), StepError> {
        let start_of = |r: usize| if r == 0 { 0 } else { ends[r - 1] };
        let lead = self.format.lead();
        let (max_rows, max_bytes) = (self.spec.max_rows, self.spec.max_bytes);
        let mut i = rows.start;
        while i < rows.end {
            self.open(p)?;
            let Some(part) = self.partitions[p].open.as_mut() else {
                return Err(StepError::internal("a part vanished"));
            };
            let skip = if part.records == 0 { lead } else { 0 };
            let (mut records, mut bytes, mut k) = (part.records, part.bytes, i);
            while k < rows.end {
                if max_rows.is_some_and(|m| records >= m) {
                    break;
                }
                let size = (ends[k] - start_of(k) - if records == 0 { lead } else { 0 }) as u64;
                // A part holds at least one record, however large.
                if max_bytes.is_some_and(|m| records > 0 && bytes + size + self.end_len > m) {
                    break;
                }
                records += 1;
                bytes += size;
                k += 1;
            }
            if k > i {
                part.out.write_all(&buf[start_of(i) + skip..ends[k - 1]])?;
                part.records = records;
                part.bytes = bytes;
            }
            i = k;
            // A full part is closed at once, so that input that ends exactly at a boundary
            // leaves no empty part behind.
            let full = k < rows.end || max_rows.is_some_and(|m| records >= m);
            if full && self.spec.template.is_some() {
                self.close(p)?;
            }
        }
        Ok(())
    }

    /// Opens the next file of partition `p`, unless one is open.
    fn open(&mut self, p: usize) -> Result<(), StepError> {
        let partition = &mut self.partitions[p];
        if partition.open.is_some() {
            return Ok(());
        }
        let path = match &self.spec.template {
            None => self.spec.path.clone(),
            Some(t) => t.render(partition.next_index, &partition.names),
        };
        partition.next_index += 1;
        let buffer = if self.spec.fields.is_empty() { BUFFER } else { PARTITION_BUFFER };
        let mut out = AtomicOutput::new(path).compressed(self.spec.compression).buffered(buffer);
        if self.spec.fields.is_empty() {
            out = out.written_behind();
        }
        if self.spec.manifest.is_some() {
            out = out.hashed();
        }
        self.scratch.clear();
        self.format.start(&mut self.scratch);
        let bytes = self.scratch.len() as u64;
        let result = out.write_all(&self.scratch);
        // Kept even when the write failed, so that abort cleans up after it.
        partition.open = Some(Part { out, partition: p, records: 0, bytes });
        result
    }

    /// Ends and finishes partition `p`'s open file.
    fn close(&mut self, p: usize) -> Result<(), StepError> {
        let Some(mut part) = self.partitions[p].open.take() else { return Ok(()) };
        self.scratch.clear();
        self.format.end(part.records, &mut self.scratch);
        part.bytes += self.scratch.len() as u64;
        let result = part.out.write_all(&self.scratch).and_then(|()| part.out.finish());
        self.done.push(part);
        result.map(|_| ())
    }

    /// Finishes every file and moves them all into place; for a set, clears out the
    /// previous run's parts and writes the manifest. On failure, nothing new is left.
    pub(crate) fn commit(&mut self) -> Result<(), StepError> {
        let result = self.commit_all();
        if result.is_err() {
            // The executor does not abort a sink whose commit failed: clean up here.
            self.abort();
        }
        result
    }

    fn commit_all(&mut self) -> Result<(), StepError> {
        // An output with no record still gets its file (an empty array, a header), unless it
        // is partitioned: then no partition names a file.
        if self.partitions.is_empty() && self.spec.fields.is_empty() {
            self.partitions.push(Partition {
                names: Vec::new(),
                values: serde_json::Map::new(),
                next_index: 0,
                open: None,
            });
            self.open(0)?;
        }
        for p in 0..self.partitions.len() {
            self.close(p)?;
        }
        match self.spec.manifest.clone() {
            Some(manifest) => self.commit_set(&manifest),
            None => match self.done.as_mut_slice() {
                [only] => only.out.persist(),
                _ => Err(StepError::internal("a single-file export made several files")),
            },
        }
    }

    fn commit_set(&mut self, manifest: &Path) -> Result<(), StepError> {
        let dir = manifest.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        let relative = |path: &Path| -> String {
            let rel = path.strip_prefix(&dir).unwrap_or(path);
            rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
        };
        self.done.sort_by(|a, b| a.out.path().cmp(b.out.path()));
        if let Some(clash) = self.done.iter().find(|d| d.out.path() == manifest) {
            return Err(StepError::fatal(format!(
                "part {} would overwrite the manifest: set `manifest` to another file",
                clash.out.path().display()
            )));
        }
        let mut parts = Vec::with_capacity(self.done.len());
        let mut total = 0;
        for d in &mut self.done {
            let w = d.out.finish()?;
            total += d.records;
            let mut entry = serde_json::json!({
                "path": relative(d.out.path()),
                "records": d.records,
                "bytes": w.bytes,
                "blake3": w.blake3,
            });
            let values = &self.partitions[d.partition].values;
            if !values.is_empty() {
                entry["partition"] = serde_json::Value::Object(values.clone());
            }
            parts.push(entry);
        }
        let mut text = serde_json::to_vec_pretty(&serde_json::json!({
            "format": self.format.name(),
            "compression": self.spec.compression.name(),
            "records": total,
            "parts": parts,
        }))
        .map_err(|e| StepError::internal(format!("the manifest does not serialise: {e}")))?;
        text.push(b'\n');
        let mut new_manifest = AtomicOutput::new(manifest.to_path_buf());
        new_manifest.write_all(&text)?;
        new_manifest.finish()?;

        // From here on the set changes on disk, in an order that a crash at any point
        // leaves recoverable. First, every part that an earlier manifest lists (the
        // current one, one of the name earlier versions used, and the record of a run
        // killed inside its commit) goes into that record, written whole.
        let record = previous_record(manifest);
        let legacy = self.spec.legacy_manifest.clone().filter(|l| l != manifest);
        let mut stale: Vec<PathBuf> = Vec::new();
        for listed in [Some(manifest), legacy.as_deref(), Some(record.as_path())].into_iter().flatten() {
            for p in self.listed_parts(listed, &dir) {
                if !stale.contains(&p) {
                    stale.push(p);
                }
            }
        }
        if !stale.is_empty() {
            self.crash_point(CommitStep::RecordWritten, || write_record(&record, &stale, &relative))?;
        }
        // Then the manifests go, so that a set caught half-way has none and does not read
        // as complete.
        for old in [Some(manifest), legacy.as_deref()].into_iter().flatten() {
            remove_if_there(old).map_err(|e| {
                StepError::environment(format!("cannot remove the previous manifest {}", old.display()), e)
            })?;
        }
        for k in 0..self.done.len() {
            if let Err(e) = self.done[k].out.persist() {
                // What was moved is taken back out: without a manifest it is no output.
                for d in &self.done[..k] {
                    if let Err(e) = remove_file(d.out.path()) {
                        log::warn!("cannot remove {}: {e}", d.out.path().display());
                    }
                }
                return Err(e);
            }
        }
        self.crash_point(CommitStep::PartsMoved, || Ok(()))?;
        // The new manifest is the commit point: the set is complete once it is in place.
        new_manifest.persist()?;
        self.crash_point(CommitStep::ManifestMoved, || Ok(()))?;
        // Only then are the parts no manifest lists any more removed, and the record last.
        let written: std::collections::HashSet<&Path> = self.done.iter().map(|d| d.out.path()).collect();
        let mut emptied = Vec::new();
        for old in stale.iter().filter(|p| !written.contains(p.as_path())) {
            match remove_file(old) {
                Ok(()) => {
                    log::debug!("removed {}, a part of an earlier run that this run did not write", old.display());
                    let parents = old.ancestors().skip(1).take_while(|a| a.starts_with(&dir) && *a != dir);
                    emptied.extend(parents.map(Path::to_path_buf));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let what = format!(
                        "cannot remove {}, a part of an earlier run that this run did not write",
                        old.display()
                    );
                    return Err(StepError::environment(what, e));
                }
            }
        }
        emptied.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        emptied.dedup();
        remove_empty_dirs(&emptied);
        remove_if_there(&record).map_err(|e| {
            StepError::environment(
                format!("cannot remove {}, the list of the set's earlier parts", record.display()),
                e,
            )
        })
    }

    /// Runs `f`, then, in tests, stops the commit there as a crash would.
    fn crash_point(&self, at: CommitStep, f: impl FnOnce() -> Result<(), StepError>) -> Result<(), StepError> {
        f()?;
        #[cfg(test)]
        if CRASH_AT.with(std::cell::Cell::get) == Some(at) {
            return Err(StepError::internal(format!("simulated crash after {at:?}")));
        }
        let _ = at;
        Ok(())
    }

    /// The parts a manifest (or the record of earlier parts) at `listed` names that the
    /// pattern can make: only those are removed, so that a file the export did not make is
    /// never touched. A file that cannot be read lists none.
    fn listed_parts(&self, listed: &Path, dir: &Path) -> Vec<PathBuf> {
        let Some(template) = &self.spec.template else { return Vec::new() };
        // A remote set's manifest is read from the bucket (a small object).
        let read =
            if crate::remote::is_remote(listed) { crate::remote::read_whole(listed) } else { std::fs::read(listed) };
        let text = match read {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                log::warn!("cannot read {} ({e}); the parts it lists are left alone", listed.display());
                return Vec::new();
            }
        };
        let parsed: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("cannot read {} ({e}); the parts it lists are left alone", listed.display());
                return Vec::new();
            }
        };
        let listed = parsed.get("parts").and_then(serde_json::Value::as_array).map_or(&[][..], Vec::as_slice);
        listed
            .iter()
            .filter_map(|p| p.get("path").and_then(serde_json::Value::as_str))
            .filter(|rel| !Path::new(rel).is_absolute() && !rel.split('/').any(|c| c == ".." || c.is_empty()))
            .map(|rel| dir.join(rel))
            .filter(|path| template.matches(&path.to_string_lossy()))
            .collect()
    }

    /// Throws away everything written, and the folders made for it.
    pub(crate) fn abort(&mut self) {
        let mut dirs = Vec::new();
        for part in self.partitions.iter_mut().filter_map(|p| p.open.as_mut()).chain(self.done.iter_mut()) {
            dirs.extend(part.out.take_created());
            part.out.abort();
        }
        for p in &mut self.partitions {
            p.open = None;
        }
        self.done.clear();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.dedup();
        remove_empty_dirs(&dirs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_thread_writes_every_byte_in_order_and_hashes_as_a_direct_write() {
        let dir = tempfile::tempdir().unwrap();
        let chunks: Vec<Vec<u8>> =
            (0..40u32).map(|i| vec![(i % 251) as u8; 1 + (i as usize * 37_123) % (3 << 20)]).collect();
        let mut results = Vec::new();
        for behind in [false, true] {
            let path = dir.path().join(format!("out-{behind}"));
            let mut t = Tally::new(File::create(&path).unwrap(), true, behind);
            for c in &chunks {
                t.write_all(c).unwrap();
            }
            t.flush().unwrap();
            let (file, bytes, hasher) = t.close().unwrap();
            drop(file);
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(on_disk, chunks.concat(), "behind: {behind}");
            results.push((bytes, hasher.unwrap().finalize()));
        }
        assert_eq!(results[0], results[1]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_writer_threads_error_is_returned_by_a_later_write_or_the_close() {
        // /dev/full refuses every write with ENOSPC, as a full disk does.
        let Ok(full) = File::options().write(true).open("/dev/full") else { return };
        let mut t = Tally::new(full, false, true);
        let chunk = vec![7u8; 1 << 20];
        let failed = (0..16).find_map(|_| t.write_all(&chunk).err());
        let err = match failed {
            Some(e) => e,
            None => match t.close() {
                Ok(_) => panic!("neither a write nor the close reported the full disk"),
                Err(e) => e,
            },
        };
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
    }

    #[cfg(unix)]
    #[test]
    fn the_output_gets_the_permissions_file_create_gives_not_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let plain = dir.path().join("plain.txt");
        File::create(&plain).unwrap();
        let path = dir.path().join("out.jsonl");
        let mut out = AtomicOutput::new(path.clone());
        out.write_all(b"{}\n").unwrap();
        out.commit().unwrap();
        assert_eq!(mode(&path), mode(&plain), "{:o}", mode(&path));
    }

    #[test]
    fn a_file_of_many_write_back_blocks_is_written_whole_plain_and_compressed() {
        // Writes that straddle the write-back bound, of odd sizes, then the whole file
        // read back: starting the write-back early must change nothing in it.
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(2 * WRITE_BACK_EVERY as usize + 12_345)).map(|i| (i * 7 % 251) as u8).collect();
        for (name, compression) in [("plain.bin", Compression::None), ("packed.bin.zst", Compression::Zstd(1))] {
            let path = dir.path().join(name);
            let mut out = AtomicOutput::new(path.clone()).compressed(compression).hashed();
            for chunk in data.chunks(1_000_003) {
                out.write_all(chunk).unwrap();
            }
            let written = out.finish().unwrap();
            out.persist().unwrap();
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(written.bytes, on_disk.len() as u64);
            assert_eq!(written.blake3.as_deref(), Some(blake3::hash(&on_disk).to_hex().as_str()));
            let back = match compression {
                Compression::None => on_disk,
                _ => zstd::decode_all(&on_disk[..]).unwrap(),
            };
            assert!(back == data, "{name} differs");
        }
    }

    #[test]
    fn templates_parse_and_render() {
        let t = Template::parse("out/{split}/part-{index:03}.jsonl").unwrap();
        assert_eq!(t.fields(), ["split"]);
        assert_eq!(t.render(7, &["train".into()]), PathBuf::from("out/train/part-007.jsonl"));
        assert_eq!(t.render(1234, &["x".into()]), PathBuf::from("out/x/part-1234.jsonl"));
        let t = Template::parse("a{{b}}/{index}").unwrap();
        assert_eq!(t.render(12, &[]), PathBuf::from("a{b}/00012"));
        for (bad, why) in [
            ("out/{split", "the `{` at character 5 opens a placeholder that is not closed"),
            ("out/}x", "the `}` at character 5 closes no placeholder"),
            ("out/{}", "the placeholder at character 5 has no name"),
            ("{index:5}", "the width is written `0N`"),
            ("{index:0}", "the width is written `0N`"),
            ("{lang:03}", "only `{index}` takes a width"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_index_goes_before_the_extension() {
        let cases = [
            ("out/data.jsonl", "out/data-00003.jsonl"),
            ("out/data.jsonl.gz", "out/data-00003.jsonl.gz"),
            ("out/data.v2.csv.zst", "out/data.v2-00003.csv.zst"),
            ("out/data", "out/data-00003"),
            ("out/.hidden", "out/.hidden-00003"),
            ("out/{split}.jsonl", "out/x-00003.jsonl"),
            ("out/{split}", "out/x-00003"),
            ("data.json", "data-00003.json"),
        ];
        for (path, want) in cases {
            let t = Template::parse(path).unwrap().with_index_suffix();
            let values: Vec<String> = t.fields().iter().map(|_| "x".to_owned()).collect();
            assert_eq!(t.render(3, &values), PathBuf::from(want), "{path}");
        }
    }

    #[test]
    fn patterns_match_what_they_make_and_nothing_else() {
        let t = Template::parse("out/{split}/part-{index:03}.jsonl").unwrap();
        assert!(t.matches("out/train/part-007.jsonl"));
        assert!(t.matches("out/train/part-12345.jsonl"));
        assert!(!t.matches("out/train/part-07.jsonl"));
        assert!(!t.matches("out/a/b/part-007.jsonl"));
        assert!(!t.matches("out/train/part-007.jsonl.bak"));
        assert!(!t.matches("out/train/notes.jsonl"));
    }

    #[test]
    fn manifests_are_named_after_the_pattern() {
        let cases = [
            ("out/{split}/part-{index}.jsonl.gz", "out/.part.manifest.json"),
            ("out/{split}.jsonl", "out/.manifest.json"),
            ("out/data.jsonl", "out/.data.manifest.json"),
            ("train-{index:05}.json", ".train.manifest.json"),
            ("/abs/x/{lang}-{index}.csv", "/abs/x/.manifest.json"),
        ];
        for (path, want) in cases {
            assert_eq!(Template::parse(path).unwrap().default_manifest(), PathBuf::from(want), "{path}");
        }
    }

    #[test]
    fn values_become_safe_file_names() {
        let name = |v: ValueRef<'_>| {
            let mut s = String::from("keep:");
            file_name_value(v, &mut s);
            s
        };
        assert_eq!(name(ValueRef::Str("train")), "keep:train");
        assert_eq!(name(ValueRef::Str("../etc/passwd")), "keep:_._etc_passwd");
        assert_eq!(name(ValueRef::Str("a b/c\\d:e*?")), "keep:a_b_c_d_e__");
        assert_eq!(name(ValueRef::Str("Zürich-数据")), "keep:Zürich-数据");
        assert_eq!(name(ValueRef::Str("")), "keep:__empty__");
        assert_eq!(name(ValueRef::Null), "keep:__null__");
        assert_eq!(name(ValueRef::Int(-3)), "keep:-3");
        assert_eq!(name(ValueRef::Str(&"é".repeat(300))).len(), "keep:".len() + 200);
    }
}

/// The exporters' shared behaviour, through the real kinds: splitting, partitioning,
/// compression, the manifest, and what is on disk before, at and after the commit.
#[cfg(test)]
mod export_tests {
    use std::io::Read as _;
    use std::path::Path;

    use weave_core::{Batch, Record, Sink, Step, StepContext, Value};

    use crate::tests::{build_step, check_build_errors};

    fn sink(kind: &str, config: &str) -> Box<dyn Sink> {
        let Step::Sink(s) = build_step(kind, config) else { panic!("{kind} is not a sink") };
        s
    }

    fn ctx() -> StepContext {
        StepContext::new("export", 0, 0, Default::default())
    }

    /// `n` records: `id`, a `text` whose length varies, and a `split` of three values.
    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                Record::new()
                    .with("id", i as i64)
                    .with("text", format!("record {i} {}", "x".repeat(i % 7)))
                    .with("split", ["train", "test", "dev"][i % 3])
            })
            .collect()
    }

    /// Writes `records` in batches of `batch` and commits.
    fn export(kind: &str, config: &str, records: &[Record], batch: usize) -> Box<dyn Sink> {
        let mut s = sink(kind, config);
        let mut c = ctx();
        for chunk in records.chunks(batch.max(1)) {
            s.write(&Batch::from_records(chunk), &mut c).unwrap();
        }
        s.commit(&mut c).unwrap();
        s
    }

    /// Every file under `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    fn read(path: &Path) -> Vec<u8> {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut out = Vec::new();
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => {
                flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).unwrap();
            }
            Some("zst") => out = zstd::decode_all(&bytes[..]).unwrap(),
            _ => out = bytes,
        }
        out
    }

    fn text(path: &Path) -> String {
        String::from_utf8(read(path)).unwrap()
    }

    fn config(dir: &Path, path: &str, extra: &str) -> String {
        format!("path = {:?}\n{extra}", dir.join(path).to_str().unwrap())
    }

    fn manifest(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn as_json(records: &[Record]) -> serde_json::Value {
        serde_json::to_value(records).unwrap()
    }

    #[test]
    fn json_is_one_array_compact_or_pretty() {
        let dir = tempfile::tempdir().unwrap();
        let mut recs = records(3);
        recs[1] = recs[1].clone().with("tags", Value::List(vec!["a".into(), Value::Map(Default::default())]));
        recs[2] = recs[2].clone().with("score", 0.5);
        export("export_json", &config(dir.path(), "c.json", ""), &recs, 2);
        let compact = text(&dir.path().join("c.json"));
        assert!(compact.starts_with("[\n{\"id\":0,") && compact.ends_with("}\n]\n"), "{compact}");
        assert_eq!(compact.lines().count(), 5, "one object per line: {compact}");
        // Each batch's records have the batch's fields, as in JSON Lines.
        let all: Vec<Record> = recs.chunks(2).flat_map(|c| Batch::from_records(c).to_records()).collect();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&compact).unwrap(), as_json(&all));

        export("export_json", &config(dir.path(), "p.json", "pretty = true"), &recs, 2);
        let pretty = text(&dir.path().join("p.json"));
        assert_eq!(pretty, serde_json::to_string_pretty(&all).unwrap() + "\n");
    }

    #[test]
    fn no_records_still_make_valid_files() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, name, extra, want) in [
            ("export_json", "a.json", "", "[]\n"),
            ("export_json", "b.json", "pretty = true", "[]\n"),
            ("export_jsonl", "c.jsonl", "", ""),
            ("export_csv", "d.csv", "fields = [\"a\", \"b\"]", "a,b\n"),
            ("export_json", "e.json.gz", "", "[]\n"),
        ] {
            export(kind, &config(dir.path(), name, extra), &[], 1);
            assert_eq!(text(&dir.path().join(name)), want, "{kind} {extra}");
        }
        // Split, the set has one empty part; partitioned, it has none.
        export("export_json", &config(dir.path(), "s/part-{index}.json", "max_rows = 2"), &[], 1);
        assert_eq!(tree(&dir.path().join("s")), [".part.manifest.json", "part-00000.json"]);
        assert_eq!(text(&dir.path().join("s/part-00000.json")), "[]\n");
        export("export_jsonl", &config(dir.path(), "q/{split}.jsonl", ""), &[], 1);
        assert_eq!(tree(&dir.path().join("q")), [".manifest.json"]);
        assert_eq!(manifest(&dir.path().join("q/.manifest.json"))["parts"], serde_json::json!([]));
    }

    #[test]
    fn an_unsplit_export_is_one_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let s = export("export_jsonl", &config(dir.path(), "out.jsonl", ""), &records(5), 2);
        assert_eq!(tree(dir.path()), ["out.jsonl"]);
        assert_eq!(s.files_written(), [dir.path().join("out.jsonl")]);
        assert_eq!(text(&dir.path().join("out.jsonl")).lines().count(), 5);
    }

    #[test]
    fn max_rows_splits_at_the_boundary_without_an_empty_part() {
        let dir = tempfile::tempdir().unwrap();
        let recs = records(10);
        let s = export("export_jsonl", &config(dir.path(), "out/data.jsonl", "max_rows = 5"), &recs, 3);
        assert_eq!(tree(&dir.path().join("out")), [".data.manifest.json", "data-00000.jsonl", "data-00001.jsonl"]);
        assert_eq!(s.files_written(), [dir.path().join("out/.data.manifest.json")]);
        let m = manifest(&dir.path().join("out/.data.manifest.json"));
        assert_eq!(m["format"], "jsonl");
        assert_eq!(m["compression"], "none");
        assert_eq!(m["records"], 10);
        for (k, part) in m["parts"].as_array().unwrap().iter().enumerate() {
            let path = dir.path().join("out").join(part["path"].as_str().unwrap());
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(part["records"], 5);
            assert_eq!(part["bytes"], bytes.len());
            assert_eq!(part["blake3"], blake3::hash(&bytes).to_hex().as_str());
            let ids: Vec<i64> = String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap())
                .collect();
            assert_eq!(ids, (k as i64 * 5..k as i64 * 5 + 5).collect::<Vec<_>>());
        }
        // One more record makes a third part of one.
        export("export_jsonl", &config(dir.path(), "eleven/part-{index:02}.jsonl", "max_rows = 5"), &records(11), 4);
        let parts = tree(&dir.path().join("eleven"));
        assert_eq!(parts, [".part.manifest.json", "part-00.jsonl", "part-01.jsonl", "part-02.jsonl"]);
        assert_eq!(text(&dir.path().join("eleven/part-02.jsonl")).lines().count(), 1);
    }

    #[test]
    fn the_parts_are_the_unsplit_output_cut_whatever_the_batches() {
        let dir = tempfile::tempdir().unwrap();
        let recs = records(50);
        export("export_jsonl", &config(dir.path(), "whole.jsonl", ""), &recs, 50);
        let whole = text(&dir.path().join("whole.jsonl"));
        for (batch, name) in [(1, "a"), (7, "b"), (50, "c")] {
            let path = format!("{name}/p-{{index}}.jsonl");
            export("export_jsonl", &config(dir.path(), &path, "max_rows = 8\nmax_bytes = 200"), &recs, batch);
            let parts: Vec<String> =
                tree(&dir.path().join(name)).into_iter().filter(|p| p.starts_with("p-0")).collect();
            let mut joined = String::new();
            for p in &parts {
                let t = text(&dir.path().join(name).join(p));
                assert!(t.len() <= 200, "{p} has {} bytes", t.len());
                assert!(t.lines().count() <= 8);
                joined.push_str(&t);
            }
            assert_eq!(joined, whole, "batches of {batch}");
            // Batch boundaries change nothing: the same parts, byte for byte.
            assert!(parts.len() >= 7, "{parts:?}");
            let m = manifest(&dir.path().join(name).join(".p.manifest.json"));
            assert_eq!(m["parts"], manifest(&dir.path().join("a/.p.manifest.json"))["parts"], "batches of {batch}");
        }
    }

    #[test]
    fn a_record_larger_than_max_bytes_gets_a_part_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![
            Record::new().with("t", "a"),
            Record::new().with("t", "b".repeat(100)),
            Record::new().with("t", "c"),
            Record::new().with("t", "d"),
        ];
        export("export_json", &config(dir.path(), "p-{index:01}.json", "max_bytes = 30"), &recs, 4);
        let texts: Vec<String> = (0..3).map(|k| text(&dir.path().join(format!("p-{k}.json")))).collect();
        assert_eq!(texts[0], "[\n{\"t\":\"a\"}\n]\n");
        assert!(texts[1].contains(&"b".repeat(100)) && texts[1].len() > 30);
        assert_eq!(texts[2], "[\n{\"t\":\"c\"},\n{\"t\":\"d\"}\n]\n");
        assert!(texts[2].len() <= 30);
        assert!(!dir.path().join("p-3.json").exists());
    }

    #[test]
    fn every_csv_part_has_its_header_and_every_json_part_is_an_array() {
        let dir = tempfile::tempdir().unwrap();
        let recs = records(7);
        export("export_csv", &config(dir.path(), "c/part-{index}.csv", "max_rows = 3\ndelimiter = \";\""), &recs, 2);
        let parts: Vec<String> = (0..3).map(|k| text(&dir.path().join(format!("c/part-{k:05}.csv")))).collect();
        for p in &parts {
            assert!(p.starts_with("id;text;split\n"), "{p}");
        }
        assert_eq!(parts[2], "id;text;split\n6;record 6 xxxxxx;train\n");
        let rows: usize = parts.iter().map(|p| p.lines().count() - 1).sum();
        assert_eq!(rows, 7);

        export("export_json", &config(dir.path(), "j/part-{index}.json", "max_rows = 3\npretty = true"), &recs, 2);
        let mut all = Vec::new();
        for k in 0..3 {
            let v: serde_json::Value =
                serde_json::from_str(&text(&dir.path().join(format!("j/part-{k:05}.json")))).unwrap();
            all.extend(v.as_array().unwrap().iter().cloned());
        }
        assert_eq!(serde_json::Value::Array(all), as_json(&recs));
    }

    #[test]
    fn compressed_output_decompresses_to_the_uncompressed_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let recs = records(300);
        for (kind, ext) in [("export_jsonl", "jsonl"), ("export_csv", "csv"), ("export_json", "json")] {
            export(kind, &config(dir.path(), &format!("plain.{ext}"), ""), &recs, 64);
            let plain = read(&dir.path().join(format!("plain.{ext}")));
            for (name, extra) in [
                (format!("a.{ext}.gz"), ""),
                (format!("b.{ext}.gz"), "compression = \"gzip\"\nlevel = 9"),
                (format!("c.{ext}.zst"), ""),
                (format!("d.{ext}.zst"), "compression = \"zstd\"\nlevel = 19"),
            ] {
                export(kind, &config(dir.path(), &name, extra), &recs, 64);
                let path = dir.path().join(&name);
                assert!(std::fs::metadata(&path).unwrap().len() < plain.len() as u64 / 2, "{name} is not compressed");
                assert_eq!(read(&path), plain, "{name}");
            }
            // Split and compressed: the parts decompress to the plain bytes, cut.
            export(kind, &config(dir.path(), &format!("s-{ext}/x.{ext}.zst"), "max_rows = 100"), &recs, 64);
            let m = manifest(&dir.path().join(format!("s-{ext}/.x.manifest.json")));
            assert_eq!(m["compression"], "zstd");
            assert_eq!(m["parts"][0]["path"], format!("x-00000.{ext}.zst"));
            if kind == "export_jsonl" {
                let joined: Vec<u8> =
                    (0..3).flat_map(|k| read(&dir.path().join(format!("s-{ext}/x-{k:05}.{ext}.zst")))).collect();
                assert_eq!(joined, plain);
            }
        }
        // The same data gives the same compressed bytes.
        export("export_jsonl", &config(dir.path(), "again.jsonl.gz", ""), &recs, 7);
        assert_eq!(
            std::fs::read(dir.path().join("again.jsonl.gz")).unwrap(),
            std::fs::read(dir.path().join("a.jsonl.gz")).unwrap()
        );
    }

    #[test]
    fn partitions_by_a_field_with_splitting() {
        let dir = tempfile::tempdir().unwrap();
        let recs = records(20);
        export("export_jsonl", &config(dir.path(), "by/{split}.jsonl", ""), &recs, 6);
        assert_eq!(tree(&dir.path().join("by")), [".manifest.json", "dev.jsonl", "test.jsonl", "train.jsonl"]);
        let train = text(&dir.path().join("by/train.jsonl"));
        assert_eq!(train.lines().count(), 7);
        assert!(train.lines().all(|l| l.contains("\"split\":\"train\"")));
        let m = manifest(&dir.path().join("by/.manifest.json"));
        assert_eq!(m["records"], 20);
        assert_eq!(m["parts"][2]["path"], "train.jsonl");
        assert_eq!(m["parts"][2]["partition"], serde_json::json!({"split": "train"}));

        export("export_csv", &config(dir.path(), "both/{split}/part-{index:03}.csv.gz", "max_rows = 3"), &recs, 6);
        let files = tree(&dir.path().join("both"));
        assert_eq!(
            files,
            [
                ".part.manifest.json",
                "dev/part-000.csv.gz",
                "dev/part-001.csv.gz",
                "test/part-000.csv.gz",
                "test/part-001.csv.gz",
                "test/part-002.csv.gz",
                "train/part-000.csv.gz",
                "train/part-001.csv.gz",
                "train/part-002.csv.gz",
            ]
        );
        assert_eq!(text(&dir.path().join("both/train/part-002.csv.gz")), "id,text,split\n18,record 18 xxxx,train\n");
    }

    #[test]
    fn partition_values_are_made_safe_and_never_merged() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |v: Value| Record::new().with("k", v).with("n", 1i64);
        let recs = vec![rec("a/b".into()), rec("..".into()), rec(Value::Null), rec("".into()), rec(Value::Int(3))];
        export("export_jsonl", &config(dir.path(), "v/{k}.jsonl", ""), &recs, 2);
        assert_eq!(
            tree(&dir.path().join("v")),
            [".manifest.json", "3.jsonl", "_..jsonl", "__empty__.jsonl", "__null__.jsonl", "a_b.jsonl"]
        );
        let m = manifest(&dir.path().join("v/.manifest.json"));
        let a_b = m["parts"].as_array().unwrap().iter().find(|p| p["path"] == "a_b.jsonl").unwrap();
        assert_eq!(a_b["partition"], serde_json::json!({"k": "a/b"}));

        // Two values with one file name would share files: an error, not a silent merge.
        let mut s = sink("export_jsonl", &config(dir.path(), "w/{k}.jsonl", ""));
        let err = s.write(&Batch::from_records(&[rec("a/b".into()), rec("a:b".into())]), &mut ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the partitions {\"k\":\"a/b\"} and {\"k\":\"a:b\"} would share files (both are named \"a_b\" once made safe for a file name); partition by a field whose values differ in their letters or digits"
        );
        s.abort();
        assert!(!dir.path().join("w").exists(), "abort removes the folder it made");
    }

    #[test]
    fn a_missing_partition_field_and_too_many_partitions_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink("export_jsonl", &config(dir.path(), "{lang}.jsonl", ""));
        let err = s.write(&Batch::from_records(&records(2)), &mut ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `lang` is not in the data (fields: id, text, split), and `path` partitions the output by it"
        );

        let mut s = sink("export_jsonl", &config(dir.path(), "cap/{id}.jsonl", "max_partitions = 4"));
        let err = s.write(&Batch::from_records(&records(10)), &mut ctx()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "more than 4 partitions (`max_partitions`): `id` has another value, 4; raise `max_partitions`"
            ),
            "{err}"
        );
        s.abort();
        assert_eq!(tree(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn nothing_shows_before_the_commit_and_abort_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink("export_jsonl", &config(dir.path(), "new/deeper/{split}/p.jsonl.gz", "max_rows = 2"));
        s.write(&Batch::from_records(&records(9)), &mut ctx()).unwrap();
        let visible: Vec<String> =
            tree(dir.path()).into_iter().filter(|f| !f.rsplit('/').next().unwrap().starts_with(".weave-")).collect();
        assert!(visible.is_empty(), "{visible:?}");
        s.abort();
        assert!(!dir.path().join("new").exists(), "the folders made for the output are gone");

        // A folder that was there stays, with what it held.
        std::fs::create_dir(dir.path().join("kept")).unwrap();
        std::fs::write(dir.path().join("kept/notes.txt"), "mine").unwrap();
        let mut s = sink("export_csv", &config(dir.path(), "kept/{split}/p.csv", "max_rows = 2"));
        s.write(&Batch::from_records(&records(9)), &mut ctx()).unwrap();
        s.abort();
        assert_eq!(tree(dir.path()), ["kept/notes.txt"]);
    }

    #[test]
    fn stale_parts_of_an_earlier_larger_run_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "out/{split}/part-{index}.jsonl", "max_rows = 2");
        export("export_jsonl", &cfg, &records(30), 8);
        assert!(dir.path().join("out/train/part-00004.jsonl").exists());
        // Files the export did not make: one that looks like a part, one that does not.
        std::fs::write(dir.path().join("out/train/part-00099.jsonl"), "not ours").unwrap();
        std::fs::write(dir.path().join("out/train/notes.txt"), "mine").unwrap();
        let recs: Vec<Record> =
            records(30).into_iter().filter(|r| r.get("split") != Some(&Value::from("dev"))).take(5).collect();
        export("export_jsonl", &cfg, &recs, 8);
        assert_eq!(
            tree(&dir.path().join("out")),
            [
                ".part.manifest.json",
                "test/part-00000.jsonl",
                "train/notes.txt",
                "train/part-00000.jsonl",
                "train/part-00001.jsonl",
                "train/part-00099.jsonl",
            ]
        );
        let m = manifest(&dir.path().join("out/.part.manifest.json"));
        assert_eq!(m["records"], 5);
        assert_eq!(m["parts"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn a_commit_killed_half_way_is_cleared_up_by_the_next() {
        // regression: a split export killed inside its commit, then run again, left the
        // parts that the new manifest does not list, so a glob over the output read
        // 1,869,052 records instead of 1,484,526.
        use super::{CRASH_AT, CommitStep};
        for at in [CommitStep::RecordWritten, CommitStep::PartsMoved, CommitStep::ManifestMoved] {
            let dir = tempfile::tempdir().unwrap();
            let cfg = config(dir.path(), "out/data.jsonl", "max_rows = 2");
            export("export_jsonl", &cfg, &records(10), 4);
            assert_eq!(tree(&dir.path().join("out")).len(), 6, "5 parts and the manifest");
            // A run of 6 records (3 parts), killed inside its commit.
            let mut s = sink("export_jsonl", &cfg);
            s.write(&Batch::from_records(&records(6)), &mut ctx()).unwrap();
            CRASH_AT.with(|c| c.set(Some(at)));
            let err = s.commit(&mut ctx()).unwrap_err();
            CRASH_AT.with(|c| c.set(None));
            assert!(err.to_string().contains("simulated crash"), "{err}");
            // The next run of 6 records leaves exactly its 3 parts and its manifest.
            export("export_jsonl", &cfg, &records(6), 4);
            assert_eq!(
                tree(&dir.path().join("out")),
                [".data.manifest.json", "data-00000.jsonl", "data-00001.jsonl", "data-00002.jsonl"],
                "killed after {at:?}"
            );
            assert_eq!(manifest(&dir.path().join("out/.data.manifest.json"))["records"], 6);
        }
    }

    #[test]
    fn a_set_under_the_manifest_name_of_earlier_versions_is_cleared_out_too() {
        // Earlier versions named the manifest `data.manifest.json`: a set they wrote is
        // replaced whole, its manifest included, rather than left beside the new one.
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "out/data.jsonl", "max_rows = 2");
        export("export_jsonl", &cfg, &records(10), 4);
        let out = dir.path().join("out");
        std::fs::rename(out.join(".data.manifest.json"), out.join(".data.manifest.json")).unwrap();
        export("export_jsonl", &cfg, &records(5), 4);
        assert_eq!(tree(&out), [".data.manifest.json", "data-00000.jsonl", "data-00001.jsonl", "data-00002.jsonl"]);
    }

    #[test]
    fn the_manifest_is_hidden_from_the_globs_that_read_the_data() {
        // regression: `data.manifest.json` beside `data-00001.json` matched `out/*.json`,
        // so `datasets.load_dataset("json", data_files="out/*.json")` failed on it.
        let dir = tempfile::tempdir().unwrap();
        export("export_json", &config(dir.path(), "out/data.json", "max_rows = 3"), &records(7), 4);
        let pattern = format!("{}/out/*.json", dir.path().display());
        // As a shell or Python's glob matches: `*` does not match a leading dot.
        let options = glob::MatchOptions { require_literal_leading_dot: true, ..Default::default() };
        let matched: Vec<String> = glob::glob_with(&pattern, options)
            .unwrap()
            .map(|p| p.unwrap().file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(matched, ["data-00000.json", "data-00001.json", "data-00002.json"]);
        // Weave's own loaders read the parts and nothing else.
        let Step::Source(mut load) = build_step("load_json", &format!("path = {pattern:?}")) else { panic!() };
        let mut read = 0;
        let mut c = ctx();
        while let Some(b) = load.next_batch(&mut c).unwrap() {
            read += b.len();
        }
        assert_eq!(read, 7);
    }

    #[test]
    fn a_set_names_the_files_it_may_write_or_remove_for_the_runs_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = sink("export_jsonl", &config(dir.path(), "out/{split}/part.jsonl", "max_rows = 2"));
        let patterns = s.written_patterns();
        let may_write = |path: &str| {
            patterns
                .iter()
                .any(|p| Path::new(path).strip_prefix(p.dir()).is_ok_and(|rel| p.matches(&rel.to_string_lossy())))
        };
        let at = |rel: &str| dir.path().join(rel).to_string_lossy().into_owned();
        for yes in [
            "out/train/part-00000.jsonl",
            "out/x/part-12345.jsonl",
            "out/.part.manifest.json.previous",
            "out/part.manifest.json",
        ] {
            assert!(may_write(&at(yes)), "{yes}");
        }
        for no in ["out/train/part.jsonl", "out/train/notes.txt", "out/a/b/part-00000.jsonl", "part-00000.jsonl"] {
            assert!(!may_write(&at(no)), "{no}");
        }
        // One file names no pattern: it names its file outright.
        assert!(sink("export_jsonl", &config(dir.path(), "one.jsonl", "")).written_patterns().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn a_part_that_is_not_a_regular_file_is_refused_and_left_alone() {
        // The run's check before it starts cannot know the parts' names: each part is
        // looked at as it is opened.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p-00001.jsonl");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let mut s = sink("export_jsonl", &config(dir.path(), "p.jsonl", "max_rows = 1"));
        let err = s.write(&Batch::from_records(&records(3)), &mut ctx()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot write {}: it is not a regular file (a device, a FIFO or a socket)", fifo.display())
        );
        s.abort();
        assert_eq!(tree(dir.path()), ["p-00001.jsonl"]);
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&std::fs::symlink_metadata(&fifo).unwrap().file_type()));
    }

    #[test]
    fn an_output_under_a_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        for extra in ["", "max_rows = 1"] {
            let mut s = sink("export_jsonl", &config(dir.path(), "file/sub/out.jsonl", extra));
            let err = s.write(&Batch::from_records(&records(2)), &mut ctx()).unwrap_err();
            assert_eq!(err.to_string(), format!("cannot create {}", dir.path().join("file/sub").display()));
            assert_eq!(err.origin(), weave_core::ErrorOrigin::Environment);
            s.abort();
        }
        assert_eq!(tree(dir.path()), ["file"]);
    }

    #[test]
    fn bad_keys_are_reported_at_their_place() {
        check_build_errors(
            "export_jsonl",
            "path = \"out.jsonl\"\ncompression = \"gz\"",
            &["2:15 `compression` must be one of \"none\", \"gzip\", \"zstd\", not \"gz\""],
        );
        check_build_errors(
            "export_jsonl",
            "path = \"out.jsonl.gz\"\ncompression = \"zstd\"",
            &["2:15 `compression` is \"zstd\" but `path` ends in .gz, which means gzip: make them agree"],
        );
        check_build_errors(
            "export_csv",
            "path = \"out.csv\"\ncompression = \"gzip\"",
            &[
                "2:15 `compression` is \"gzip\" but `path` does not end in .gz: end it in .gz (readers, Weave's loaders too, choose the decoder by the extension)",
            ],
        );
        check_build_errors(
            "export_json",
            "path = \"out.json.zst\"\nlevel = 30",
            &["2:9 `level` 30 is out of range: zstd levels go from 1 to 22"],
        );
        check_build_errors(
            "export_json",
            "path = \"out.json\"\nlevel = 3",
            &["2:9 `level` needs compression: end `path` in .gz or .zst"],
        );
        check_build_errors(
            "export_jsonl",
            "path = \"out/part-{index}.jsonl\"",
            &[
                "1:8 `path` has `{index}`, which numbers the parts of a split output: set `max_rows` or `max_bytes`, or take `{index}` out",
            ],
        );
        check_build_errors(
            "export_jsonl",
            "path = \"out/{split.jsonl\"\nmax_rows = 0",
            &[
                "2:12 `max_rows` must be at least 1",
                "1:8 `path`: the `{` at character 5 opens a placeholder that is not closed (write `{{` for a brace)",
            ],
        );
        check_build_errors(
            "export_csv",
            "path = \"out/{index:5}.csv\"\nmax_bytes = \"1MB\"",
            &["1:8 `path`: `{index:5}`: the width is written `0N`, N from 1 to 20, as in `{index:05}`"],
        );
        check_build_errors(
            "export_jsonl",
            "path = \"out.jsonl\"\nmanifest = \"m.json\"\nmax_partitions = 3",
            &[
                "3:18 `max_partitions` caps the values of `path`'s `{field}` placeholders, and it has none",
                "2:12 `manifest` lists the parts of a split or partitioned output, and this output is one file (set `max_rows`, `max_bytes`, or a `{field}` in `path`)",
            ],
        );
        check_build_errors("export_json", "path = \"out/\"", &["1:8 `path` names a folder: name the file"]);
        check_build_errors(
            "export_json",
            "path = \"a.json\"\npretty = 1",
            &["2:10 `pretty` must be true or false, not an integer"],
        );
    }

    #[test]
    fn every_exporter_takes_the_common_keys() {
        for kind in ["export_jsonl", "export_csv", "export_json"] {
            let k = crate::registry().get(kind).cloned().unwrap();
            for key in super::KEYS {
                assert!(k.keys.contains(&key.into()), "{kind} lacks `{key}`");
            }
        }
    }

    #[test]
    fn two_exports_of_one_set_are_refused_before_the_run() {
        let text = "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n\
                    [[step]]\nid = \"a\"\nkind = \"export_jsonl\"\nafter = \"load\"\npath = \"out/{split}.jsonl\"\n\n\
                    [[step]]\nid = \"b\"\nkind = \"export_json\"\nafter = \"load\"\npath = \"out/{split}.json\"\n";
        let err = weave_core::Pipeline::from_file_text("p.toml", text, &crate::registry()).unwrap_err();
        assert!(err.to_string().contains("steps \"a\" and \"b\" both write out/.manifest.json"), "{err}");
    }
}
