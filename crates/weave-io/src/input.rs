//! Input files: the `path` key of every loader (one file or a glob pattern), and opening
//! them, decompressing `.gz` and `.zst` on the fly. [`Lines`] and [`not_a_regular_file`]
//! are public for the steps of other crates that read files of their own (`generate`'s
//! slot files, `augment`'s pattern files), so that they read them as the loaders do.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use weave_core::{Diagnostic, Params, Rejected, StepContext, StepError};

/// The files a loader reads, from its `path` key: one file, or a glob pattern
/// (`data/*.jsonl.gz`, `shards/**/part-*.parquet`) expanded here, at build time, into the
/// regular files it matches, in sorted order. Relative paths and patterns resolve against
/// the pipeline file's folder. `*` and `?` match within one path component and not a
/// leading dot (so hidden files, such as the temporary files of a run's own outputs, are
/// left out); `**` matches any number of folders. A pattern that matches no file is an
/// error at the key. A missing single file is reported when the step runs, as before; one
/// that is there but is no regular file (a folder, a FIFO, a device) is an error at the key.
pub(crate) fn input_paths(p: &Params, what: &str) -> Option<Vec<PathBuf>> {
    let raw = p.required_str("path", what)?;
    if crate::remote::is_url(&raw) {
        crate::remote::configure(&raw, p.context().storage());
        return match crate::remote::resolve(&raw) {
            Ok(objects) => {
                crate::remote::remember(&objects);
                Some(objects.into_iter().map(|o| PathBuf::from(o.url)).collect())
            }
            Err(e) => {
                p.error_at(p.item("path")?, e);
                None
            }
        };
    }
    let literal = weave_core::resolve(p.file().path(), &raw);
    // A name with `[` or `*` in it that exists as it is written is that file.
    if !raw.contains(['*', '?', '[']) || literal.is_file() {
        if let Some(why) = not_a_regular_file(&literal) {
            p.error_at(p.item("path")?, format!("`path` {why}"));
            return None;
        }
        return Some(vec![literal]);
    }
    let item = p.item("path")?;
    let at = Some(p.locate(item.span.clone()));
    let pattern = if Path::new(&raw).is_absolute() {
        raw.clone()
    } else {
        match p.file().path().parent().map(|d| d.to_str()) {
            None | Some(Some("")) => raw.clone(),
            // The folder's own name may hold `[` or `*`: it is matched literally.
            Some(Some(dir)) => format!("{}/{raw}", glob::Pattern::escape(dir)),
            Some(None) => {
                p.error_at(item, "a glob pattern needs the pipeline file's folder name to be UTF-8");
                return None;
            }
        }
    };
    let options =
        glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: true };
    let entries = match glob::glob_with(&pattern, options) {
        Ok(entries) => entries,
        Err(e) => {
            p.error_at(item, format!("`path` is not a valid glob pattern: {}", e.msg));
            return None;
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(path) if path.is_file() => files.push(path),
            Ok(_) => {}
            Err(e) => {
                p.error_at(item, format!("cannot list {} to match `{raw}`: {}", e.path().display(), e.error()));
                return None;
            }
        }
    }
    if files.is_empty() {
        p.push(
            Diagnostic::error(format!("no file matches the pattern `{raw}`"))
                .with_code("no-match")
                .at(at)
                .with_help(format!("looked for {pattern}")),
        );
        return None;
    }
    files.sort();
    Some(files)
}

/// The files of `paths` on this machine: what a loader declares it reads
/// ([`weave_core::StepInfo::files_read`]), for the cache to hash and the run's lineage.
/// Remote objects are left out: their identity is in the step's configuration instead
/// ([`config`]).
pub(crate) fn local_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().filter(|p| !crate::remote::is_remote(p)).cloned().collect()
}

/// A loader's configuration for the cache key: its keys as written, and, when it reads
/// remote objects, each object's URL, size and version (ETag or version id) as the store
/// gave them when the pipeline was built, so that an object replaced in place changes the
/// key without anything being downloaded to find out.
pub(crate) fn config(p: &Params, paths: &[PathBuf]) -> weave_core::CanonicalConfig {
    let canonical = p.canonical();
    let objects = crate::remote::identities(paths);
    if objects.is_empty() {
        return canonical;
    }
    let mut value: serde_json::Value = serde_json::from_slice(canonical.as_bytes()).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("remote_objects".to_owned(), serde_json::Value::Array(objects));
    }
    weave_core::CanonicalConfig::of(&value).unwrap_or(canonical)
}

/// Why a path that is there cannot be read as an input file, such as `names a FIFO (in.txt),
/// not a regular file: ...`; `None` for a regular file, or for one that is not there (that
/// is told when it is opened).
///
/// An input is hashed for the cache key before it is read, and read again on a re-run: a
/// FIFO would be emptied by the hash, or block it for ever while nothing writes to it, and a
/// device such as `/dev/zero` never ends. So they are refused when the pipeline is built,
/// where `weave validate` reports them, rather than hanging `weave plan` and `weave run`.
pub fn not_a_regular_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let t = meta.file_type();
    let what = if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a folder"
    } else {
        special_file_kind(&t)
    };
    Some(format!(
        "names {what} ({}), not a regular file: inputs must be regular files, since Weave reads each once to hash it for the cache and again to load it",
        path.display()
    ))
}

/// What a file that is neither a regular file nor a folder is.
#[cfg(unix)]
fn special_file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// What a file that is neither a regular file nor a folder is.
#[cfg(not(unix))]
fn special_file_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// An input file's bytes, decompressed when its name ends in `.gz` or `.zst`.
pub(crate) struct Input(Box<dyn Read + Send>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// Whether `path` is read through a decoder ([`open`]), whose bytes cannot be cut into a
/// shard's range without reading all that comes before.
pub(crate) fn is_compressed(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("gz" | "zst" | "zstd"))
}

/// One file of a loader's share of its input (see [`weave_core::Shard`]): the file whole,
/// or the records that start in a range of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Its index in the loader's files.
    pub(crate) file: usize,
    /// The range its records start in; `None` for the whole file.
    pub(crate) bytes: Option<std::ops::Range<u64>>,
}

/// What a run reads of `paths`: every file whole, or, in a sharded run, the shard's share
/// of the files taken as one stream of bytes in order. A file that `splittable` says can
/// be cut is cut at the shard's range (its records are the shard's whose first byte is in
/// it); any other file is the shard's whose range holds its first byte.
pub(crate) fn pieces(
    paths: &[PathBuf],
    shard: Option<weave_core::Shard>,
    splittable: impl Fn(&Path) -> bool,
) -> Result<Vec<Piece>, StepError> {
    let Some(shard) = shard else {
        return Ok((0..paths.len()).map(|file| Piece { file, bytes: None }).collect());
    };
    let mut sizes = Vec::with_capacity(paths.len());
    for path in paths {
        if crate::remote::is_remote(path) {
            sizes.push(crate::remote::size(path)?);
            continue;
        }
        let meta = std::fs::metadata(path)
            .map_err(|e| StepError::environment(format!("cannot open {}", path.display()), e))?;
        sizes.push(meta.len());
    }
    let total: u64 = sizes.iter().sum();
    let range = shard.range(total);
    let mut out = Vec::new();
    let mut at = 0u64;
    for (file, &size) in sizes.iter().enumerate() {
        let start = at;
        at += size;
        // A remote object is read whole by one shard: cutting it would need a ranged GET
        // and, for line numbers, a count of the line feeds before the range (a download).
        if !splittable(&paths[file]) || crate::remote::is_remote(&paths[file]) {
            if shard.owns(start, total) {
                out.push(Piece { file, bytes: None });
            }
            continue;
        }
        let (lo, hi) = (range.start.max(start), range.end.min(at));
        if lo >= hi {
            continue;
        }
        let bytes = (lo - start)..(hi - start);
        let whole = bytes.start == 0 && bytes.end == size;
        out.push(Piece { file, bytes: (!whole).then_some(bytes) });
    }
    Ok(out)
}

/// The files of `paths` that are `shard`'s, for a loader that reads each file whole (a JSON
/// array, Parquet): each is the shard's whose range holds its first byte (see [`pieces`]).
/// The other shards' files are left out at build time, so that they are neither hashed
/// for the cache key nor read. When a file cannot be looked at, every file is kept, and
/// the run names the one it cannot open.
pub(crate) fn whole_files_of(paths: Vec<PathBuf>, shard: Option<weave_core::Shard>) -> Vec<PathBuf> {
    match pieces(&paths, shard, |_| false) {
        Ok(ps) if shard.is_some() => ps.into_iter().map(|p| paths[p.file].clone()).collect(),
        _ => paths,
    }
}

/// Opens `path` for reading, with a decoder chosen by its extension (gzip, including
/// several members one after the other; zstd).
pub(crate) fn open(path: &Path) -> Result<Input, StepError> {
    let file: Box<dyn Read + Send> = if crate::remote::is_remote(path) {
        crate::remote::open(path, 0)?
    } else {
        Box::new(File::open(path).map_err(|e| StepError::environment(format!("cannot open {}", path.display()), e))?)
    };
    // The loaders buffer what they read; the decoders buffer the compressed side.
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    Ok(Input(match ext.as_deref() {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Some("zst" | "zstd") => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(|e| StepError::environment(format!("cannot read {} as zstd", path.display()), e))?,
        ),
        _ => file,
    }))
}

/// The character encoding of an input file (`encoding`), decoded to UTF-8 as it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// UTF-8, read as it is (the default).
    Utf8,
    /// ISO-8859-1: each byte is the character of that number.
    Latin1,
    /// Windows-1252 (what spreadsheets on Windows write as "ANSI").
    Windows1252,
    /// UTF-16: little-endian unless a byte-order mark says otherwise.
    Utf16,
    /// UTF-16, little-endian (a byte-order mark still decides when there is one).
    Utf16Le,
    /// UTF-16, big-endian (a byte-order mark still decides when there is one).
    Utf16Be,
}

impl Encoding {
    /// The names `encoding` takes.
    pub(crate) const NAMES: [&'static str; 6] = ["utf-8", "latin-1", "windows-1252", "utf-16", "utf-16le", "utf-16be"];

    /// The `encoding` key (UTF-8 without it).
    pub(crate) fn read(p: &Params) -> Encoding {
        let Some(item) = p.item("encoding") else { return Encoding::Utf8 };
        let Some(name) = p.str("encoding") else { return Encoding::Utf8 };
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "utf-8" | "utf8" => Encoding::Utf8,
            "latin-1" | "latin1" | "iso-8859-1" => Encoding::Latin1,
            "windows-1252" | "cp1252" => Encoding::Windows1252,
            "utf-16" | "utf16" => Encoding::Utf16,
            "utf-16le" => Encoding::Utf16Le,
            "utf-16be" => Encoding::Utf16Be,
            _ => {
                p.error_at(
                    item,
                    format!("unknown encoding `{name}`; the encodings are {}", Encoding::NAMES.join(", ")),
                );
                Encoding::Utf8
            }
        }
    }

    /// `input`, decoded to UTF-8.
    pub(crate) fn decode(self, input: Input) -> Input {
        let with = |e: &'static encoding_rs::Encoding, input: Input| {
            Input(Box::new(
                encoding_rs_io::DecodeReaderBytesBuilder::new().encoding(Some(e)).bom_override(true).build(input.0),
            ))
        };
        match self {
            Encoding::Utf8 => input,
            Encoding::Latin1 => {
                Input(Box::new(Latin1 { inner: input.0, raw: vec![0; 32 << 10], out: Vec::new(), at: 0 }))
            }
            Encoding::Windows1252 => with(encoding_rs::WINDOWS_1252, input),
            Encoding::Utf16 | Encoding::Utf16Le => with(encoding_rs::UTF_16LE, input),
            Encoding::Utf16Be => with(encoding_rs::UTF_16BE, input),
        }
    }
}

/// ISO-8859-1 decoded to UTF-8: each byte is the character of that number (which
/// encoding_rs, following the web's rules, reads as Windows-1252 instead).
struct Latin1 {
    inner: Box<dyn Read + Send>,
    raw: Vec<u8>,
    out: Vec<u8>,
    at: usize,
}

impl Read for Latin1 {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.out.len() {
            let n = self.inner.read(&mut self.raw)?;
            self.out.clear();
            self.at = 0;
            for &b in &self.raw[..n] {
                if b < 0x80 {
                    self.out.push(b);
                } else {
                    self.out.extend_from_slice(char::from(b).encode_utf8(&mut [0; 2]).as_bytes());
                }
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Files read line by line, one after the other, as the line-oriented loaders read them.
#[derive(Debug)]
pub struct Lines {
    paths: Vec<PathBuf>,
    /// The run's shard, whose share of the files is read.
    shard: Option<weave_core::Shard>,
    /// What is read of `paths`, worked out at the first line.
    pieces: Option<Vec<Piece>>,
    /// The piece being read: `pieces[file]`, open in `reader`.
    file: usize,
    /// The index in `paths` of the open piece's file.
    path: usize,
    /// Where the next line starts in the open file, and where the piece's range ends (a
    /// line that starts there or after is the next shard's).
    pos: u64,
    end: Option<u64>,
    reader: Option<std::io::BufReader<Input>>,
    /// The lines read of the open piece, and those of its file before it (counted when a
    /// message first asks for a line's number).
    line_no: u64,
    before: LinesBefore,
    buf: Vec<u8>,
    /// The longest line held, in bytes (`max_record_bytes`).
    max: usize,
    /// Bytes read from a file at a time.
    buffer: usize,
}

/// A piece of a loader's share opened by [`Lines`].
struct OpenPiece {
    path: usize,
    input: Input,
    before: LinesBefore,
    pos: u64,
    end: Option<u64>,
}

/// One line of [`Lines`], with where it is.
#[derive(Debug)]
pub struct Line<'a> {
    /// The file it is in.
    pub path: &'a Path,
    /// Its text, without the line ending.
    pub text: &'a str,
    /// Its number in the piece of the file read, from 1, and the lines before the piece.
    in_piece: u64,
    before: &'a LinesBefore,
}

impl Line<'_> {
    /// Its number in its file, from 1.
    pub fn number(&self) -> u64 {
        self.before.get() + self.in_piece
    }

    /// `file:line`, as bad records name their origin.
    pub fn origin(&self) -> String {
        format!("{}:{}", self.path.display(), self.number())
    }
}

/// The lines of a file before byte `upto`, where a shard's piece of it starts, counted the
/// first time a line's number is asked for. A shard numbers its lines from its piece's
/// start, and only a message about one of them (a bad record, a read error) needs the
/// line feeds before it, which most runs never make: so a job's shards read their own
/// ranges and no more, where each counted the bytes before its range (N / 2 readings of
/// the input for N shards).
#[derive(Debug, Default)]
pub(crate) struct LinesBefore {
    path: PathBuf,
    upto: u64,
    counted: std::sync::OnceLock<u64>,
}

impl LinesBefore {
    /// The lines before byte `upto` of `path` (none when `upto` is 0).
    pub(crate) fn new(path: &Path, upto: u64) -> Self {
        LinesBefore { path: path.to_path_buf(), upto, counted: std::sync::OnceLock::new() }
    }

    /// Their count. If the file cannot be read again for it, a warning says so, and the
    /// lines are numbered from the piece's start.
    pub(crate) fn get(&self) -> u64 {
        if self.upto == 0 {
            return 0;
        }
        *self.counted.get_or_init(|| {
            count_line_feeds(&self.path, self.upto).unwrap_or_else(|e| {
                log::warn!(
                    "cannot count the lines of {} before byte {} ({e}): the line numbers given for it count from there",
                    self.path.display(),
                    self.upto
                );
                0
            })
        })
    }
}

/// The line feeds in the first `upto` bytes of `path`.
fn count_line_feeds(path: &Path, upto: u64) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let (mut lines, mut left, mut buf) = (0, upto, vec![0u8; 1 << 20]);
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines += line_feeds(&buf[..n]);
        left -= n as u64;
    }
    Ok(lines)
}

impl Lines {
    /// A reader of the files `paths`, in order, holding lines of at most `max` bytes.
    pub fn new(paths: Vec<PathBuf>, max: usize) -> Self {
        Lines {
            paths,
            shard: None,
            pieces: None,
            file: 0,
            path: 0,
            pos: 0,
            end: None,
            reader: None,
            line_no: 0,
            before: LinesBefore::default(),
            buf: Vec::new(),
            max,
            buffer: 1 << 20,
        }
    }

    /// The same reader for a run that is `shard` of a job: it reads the lines that start
    /// in the shard's share of the files (see [`weave_core::Shard`]); a compressed file is
    /// read whole by the shard its first byte falls to. Line numbers stay those of the file.
    pub fn with_shard(mut self, shard: Option<weave_core::Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// Opens piece number `file` of `paths`' share (worked out into `pieces` at the first
    /// call): where its lines start, and where its range ends. `None` when none is left.
    /// (A function of the fields it needs rather than a method, so that the line a call of
    /// `next_line` returns, which borrows `paths`, does not hold all of `self`.)
    fn open_piece(
        paths: &[PathBuf],
        shard: Option<weave_core::Shard>,
        pieces: &mut Option<Vec<Piece>>,
        file: usize,
    ) -> Result<Option<OpenPiece>, StepError> {
        if pieces.is_none() {
            *pieces = Some(self::pieces(paths, shard, |p| !is_compressed(p))?);
        }
        let Some(piece) = pieces.as_ref().and_then(|p| p.get(file)).cloned() else { return Ok(None) };
        let path = &paths[piece.file];
        Ok(Some(match piece.bytes {
            None => {
                OpenPiece { path: piece.file, input: open(path)?, before: LinesBefore::default(), pos: 0, end: None }
            }
            Some(range) => {
                let (input, pos) = open_at(path, range.start)?;
                OpenPiece { path: piece.file, input, before: LinesBefore::new(path, pos), pos, end: Some(range.end) }
            }
        }))
    }

    /// The next line, the files taken in order; line numbers count from 1 in each file,
    /// and each file's first line loses its byte-order mark. A line that is not UTF-8 is
    /// set aside in `ctx` with its place and skipped, and so is a line longer than `max`
    /// bytes, read past without being held. `None` after the last file.
    pub fn next_line(&mut self, ctx: &mut StepContext) -> Result<Option<Line<'_>>, StepError> {
        use std::io::BufRead;
        loop {
            if self.reader.is_none() {
                let Some(open) = Lines::open_piece(&self.paths, self.shard, &mut self.pieces, self.file)? else {
                    return Ok(None);
                };
                (self.path, self.line_no, self.pos, self.end) = (open.path, 0, open.pos, open.end);
                self.before = open.before;
                self.reader = Some(std::io::BufReader::with_capacity(self.buffer, open.input));
            }
            if self.end.is_some_and(|end| self.pos >= end) {
                // The rest of the file is the next shard's.
                self.reader = None;
                self.file += 1;
                continue;
            }
            let Some(reader) = self.reader.as_mut() else { return Ok(None) };
            let path = &self.paths[self.path];
            self.buf.clear();
            // A line within the bound is held whole, with a BOM and a CRLF ending; of a
            // longer one, only its first bytes: its length, and its last two bytes (for
            // the ending), are followed as it is read past.
            let hold = self.max.saturating_add(5);
            let (mut n, mut last) = (0, [0u8; 2]);
            loop {
                let chunk = reader.fill_buf().map_err(|e| {
                    StepError::environment(
                        format!("cannot read {}:{}", path.display(), self.before.get() + self.line_no + 1),
                        e,
                    )
                })?;
                if chunk.is_empty() {
                    break;
                }
                let (take, ended) = match memchr::memchr(b'\n', chunk) {
                    Some(i) => (i + 1, true),
                    None => (chunk.len(), false),
                };
                let room = hold.saturating_sub(self.buf.len()).min(take);
                self.buf.extend_from_slice(&chunk[..room]);
                last = match &chunk[..take] {
                    [.., a, b] => [*a, *b],
                    [b] => [last[1], *b],
                    [] => last,
                };
                reader.consume(take);
                n += take;
                if ended {
                    break;
                }
            }
            if n == 0 {
                self.reader = None;
                self.file += 1;
                continue;
            }
            let first_of_file = self.pos == 0;
            self.pos += n as u64;
            self.line_no += 1;
            // The line's length without its ending ("\n", "\r\n" or a last "\r").
            let mut len = n;
            for ending in [b'\n', b'\r'] {
                if len > 0 && last[1] == ending {
                    len -= 1;
                    last = [0, last[0]];
                }
            }
            let start = if first_of_file && len >= 3 && self.buf.starts_with(b"\xef\xbb\xbf") { 3 } else { 0 };
            if len - start > self.max {
                ctx.reject(Rejected {
                    reason: crate::too_large("line", self.max),
                    record: None,
                    origin: Some(format!("{}:{}", path.display(), self.before.get() + self.line_no)),
                });
                continue;
            }
            // Within the bound, so held whole.
            let end = len;
            // Checked first and read after, so that the borrow ends before the next line
            // (a second SIMD check of a valid line costs little; unsafe is not allowed).
            if crate::input::utf8(&self.buf[start..end]).is_none() {
                ctx.reject(Rejected {
                    reason: "line is not valid UTF-8".into(),
                    record: None,
                    origin: Some(format!("{}:{}", path.display(), self.before.get() + self.line_no)),
                });
                continue;
            }
            let text = crate::input::utf8(&self.buf[start..end]).unwrap_or_default();
            return Ok(Some(Line { path, text, in_piece: self.line_no, before: &self.before }));
        }
    }
}

/// Opens a local file that is not compressed at byte `at`.
pub(crate) fn open_plain_at(path: &Path, at: u64) -> Result<Input, StepError> {
    use std::io::{Seek, SeekFrom};
    let mut file =
        File::open(path).map_err(|e| StepError::environment(format!("cannot open {}", path.display()), e))?;
    file.seek(SeekFrom::Start(at)).map_err(|e| StepError::environment(format!("cannot read {}", path.display()), e))?;
    Ok(Input(Box::new(file)))
}

/// Opens a file that is not compressed at the first line that starts at or after byte
/// `start` (> 0: the line the byte before it ends, or after the next line feed), and
/// returns it and where that line starts.
fn open_at(path: &Path, start: u64) -> Result<(Input, u64), StepError> {
    use std::io::{BufRead, Seek, SeekFrom};
    let read_error = |e| StepError::environment(format!("cannot read {}", path.display()), e);
    let mut file =
        File::open(path).map_err(|e| StepError::environment(format!("cannot open {}", path.display()), e))?;
    let mut pos = start.saturating_sub(1);
    file.seek(SeekFrom::Start(pos)).map_err(read_error)?;
    let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
    if start > 0 {
        loop {
            let chunk = reader.fill_buf().map_err(read_error)?;
            if chunk.is_empty() {
                break;
            }
            let (take, ended) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            reader.consume(take);
            pos += take as u64;
            if ended {
                break;
            }
        }
    }
    Ok((Input(Box::new(reader)), pos))
}

/// The line feeds in `bytes`. Counted in blocks of 64 bytes with a byte-wide count per
/// block, which the compiler turns into a few vector compares and one sum per block: on
/// the `io` benchmark's 168 MB, 10 ms where a 64-bit count per byte took 65 ms.
pub(crate) fn line_feeds(bytes: &[u8]) -> u64 {
    let mut blocks = bytes.chunks_exact(64);
    let mut n = 0;
    for block in &mut blocks {
        n += u64::from(block.iter().fold(0u8, |c, &b| c + u8::from(b == b'\n')));
    }
    n + blocks.remainder().iter().map(|&b| u64::from(b == b'\n')).sum::<u64>()
}

/// `bytes` as text if they are valid UTF-8, checked with SIMD (several times faster than
/// `std::str::from_utf8` on the mostly-ASCII text that loaders read).
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    mod lines_properties {
        use super::*;
        use proptest::prelude::*;

        /// A line read (its number and text) or set aside (its number and why).
        type Read = Result<(u64, String), (u64, &'static str)>;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            /// On any mix of text, line breaks, a BOM and bytes that are not UTF-8, read
            /// through buffers of 1 to 8 bytes or the usual one, `Lines` gives each line
            /// (its ending, and the first line's BOM, taken off) with its number, and sets
            /// aside the lines over the bound, then those that are not UTF-8, by number.
            #[test]
            fn lines_match_a_plain_split(
                parts in proptest::collection::vec(prop_oneof![
                    Just(&b"ab"[..]), Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..]), Just(&b"\xff"[..]),
                    Just("é".as_bytes()), Just(&b"\xef\xbb\xbf"[..]), Just(&b" "[..]),
                ], 0..40),
                buffer in prop_oneof![1usize..9, Just(1usize << 20)],
                bound in prop_oneof![Just(usize::MAX / 2), 0usize..12],
            ) {
                let bytes = parts.concat();
                let mut expected: Vec<Read> = Vec::new();
                let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
                if pieces.last().is_some_and(|p| p.is_empty()) {
                    pieces.pop();
                }
                for (i, piece) in pieces.into_iter().enumerate() {
                    let n = i as u64 + 1;
                    let mut line = piece.strip_suffix(b"\r").unwrap_or(piece);
                    if n == 1 {
                        line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
                    }
                    expected.push(if line.len() > bound {
                        Err((n, "larger"))
                    } else {
                        match std::str::from_utf8(line) {
                            Ok(t) => Ok((n, t.to_owned())),
                            Err(_) => Err((n, "not valid UTF-8")),
                        }
                    });
                }

                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("in.txt");
                std::fs::write(&path, &bytes).unwrap();
                let mut lines = Lines::new(vec![path.clone()], bound);
                lines.buffer = buffer;
                let mut ctx = StepContext::new("load", 0, 0, Default::default());
                let mut got: Vec<Read> = Vec::new();
                while let Some(line) = lines.next_line(&mut ctx).unwrap() {
                    got.push(Ok((line.number(), line.text.to_owned())));
                }
                for r in ctx.take_rejected() {
                    let n: u64 = r.origin.unwrap().rsplit(':').next().unwrap().parse().unwrap();
                    let why = if r.reason.contains("larger") { "larger" } else { "not valid UTF-8" };
                    got.push(Err((n, why)));
                }
                let key = |r: &Read| match r { Ok((n, _)) | Err((n, _)) => *n };
                got.sort_by_key(key);
                prop_assert_eq!(got, expected, "{:?} buffer {} bound {}", String::from_utf8_lossy(&bytes), buffer, bound);
            }
        }
    }

    mod shard_properties {
        use super::*;
        use proptest::prelude::*;

        /// Every line a reader gives, with its file, number, and text, and every line it
        /// sets aside.
        fn read_all(lines: &mut Lines) -> (Vec<(String, u64, String)>, Vec<String>) {
            let mut ctx = StepContext::new("load", 0, 0, Default::default());
            let mut got = Vec::new();
            while let Some(line) = lines.next_line(&mut ctx).unwrap() {
                got.push((line.path.display().to_string(), line.number(), line.text.to_owned()));
            }
            let rejected = ctx.take_rejected().into_iter().map(|r| format!("{:?} {}", r.origin, r.reason)).collect();
            (got, rejected)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            /// Whatever the files (empty ones, lines of any length, CRLF, no final line
            /// break, a compressed one read whole) and however many shards, the shards'
            /// lines, in shard order, are the whole reading's: each line once, with its
            /// file and number; and so are the lines set aside.
            #[test]
            fn the_shards_lines_in_order_are_the_whole_reading(
                files in proptest::collection::vec(
                    (proptest::collection::vec(prop_oneof![
                        Just(&b"ab"[..]), Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"xyz xyz xyz"[..]),
                        Just(&b"\xff"[..]), Just(&b""[..]),
                    ], 0..30), any::<bool>()),
                    1..5,
                ),
                count in 1u32..9,
                bound in prop_oneof![Just(usize::MAX / 2), 4usize..12],
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut paths = Vec::new();
                for (i, (parts, compressed)) in files.iter().enumerate() {
                    let bytes = parts.concat();
                    let path = if *compressed {
                        let p = dir.path().join(format!("{i}.txt.zst"));
                        std::fs::write(&p, zstd::encode_all(&bytes[..], 1).unwrap()).unwrap();
                        p
                    } else {
                        let p = dir.path().join(format!("{i}.txt"));
                        std::fs::write(&p, &bytes).unwrap();
                        p
                    };
                    paths.push(path);
                }
                let whole = read_all(&mut Lines::new(paths.clone(), bound));
                let (mut lines, mut rejected) = (Vec::new(), Vec::new());
                for i in 0..count {
                    let shard = weave_core::Shard::new(i, count).unwrap();
                    let mut reader = Lines::new(paths.clone(), bound).with_shard(Some(shard));
                    reader.buffer = 7;
                    let (l, r) = read_all(&mut reader);
                    lines.extend(l);
                    rejected.extend(r);
                }
                prop_assert_eq!(lines, whole.0);
                prop_assert_eq!(rejected, whole.1);
            }
        }
    }

    #[test]
    fn gzip_and_zstd_read_back_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = "a,b\n1,2\n".repeat(1000);
        let gz = dir.path().join("x.csv.gz");
        let mut e = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
        let zst = dir.path().join("x.csv.zst");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        for p in [&gz, &zst] {
            let mut out = String::new();
            open(p).unwrap().read_to_string(&mut out).unwrap();
            assert_eq!(out, text, "{}", p.display());
        }
        let bad = dir.path().join("bad.gz");
        std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage").unwrap();
        let mut out = String::new();
        assert!(open(&bad).unwrap().read_to_string(&mut out).is_err());
    }

    use crate::tests::{build_step, build_step_at, check_build_errors, read_source};

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_glob_reads_every_match_in_sorted_order_and_names_the_file_of_each_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(&d.join("shards/b/part-2.jsonl"), b"{\"n\": 3}\n{bad\n");
        write(&d.join("shards/a/part-1.jsonl.gz"), &gz(b"{\"n\": 1}\n"));
        write(&d.join("shards/a/part-1b.jsonl"), b"\xef\xbb\xbf{\"n\": 2}\n\xff\n");
        // Not matched: a hidden file, a folder whose name matches, another name.
        write(&d.join("shards/a/.part-0.jsonl"), b"{\"n\": 0}\n");
        std::fs::create_dir_all(d.join("shards/a/part-9.jsonl")).unwrap();
        write(&d.join("shards/other.jsonl"), b"{\"n\": 0}\n");
        let config = format!("path = {:?}", d.join("shards/**/part-*.jsonl*").to_str().unwrap());
        let step = build_step("load_jsonl", &config);
        let expected: Vec<PathBuf> =
            ["shards/a/part-1.jsonl.gz", "shards/a/part-1b.jsonl", "shards/b/part-2.jsonl"].map(|f| d.join(f)).into();
        assert_eq!(step.info().files_read(), expected);
        let (rows, rejected) = read_source(step);
        assert_eq!(rows, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
        let part = |f: &str| d.join(f).display().to_string();
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0], format!("{}:2: line is not valid UTF-8", part("shards/a/part-1b.jsonl")));
        assert!(rejected[1].starts_with(&format!("{}:2: invalid JSON", part("shards/b/part-2.jsonl"))), "{rejected:?}");
    }

    #[test]
    fn a_glob_that_matches_nothing_or_is_malformed_is_a_build_error() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = dir.path().join("*.csv").to_str().unwrap().to_owned();
        check_build_errors(
            "load_csv",
            &format!("path = {pattern:?}"),
            &[&format!("1:8 no file matches the pattern `{pattern}`")],
        );
        check_build_errors(
            "load_text",
            "path = \"data/[a-.txt\"",
            &["1:8 `path` is not a valid glob pattern: invalid range pattern"],
        );
        check_build_errors(
            "load_jsonl",
            "batch_size = 2",
            &["1:1 missing required key `path` (the JSONL file to read, or a glob pattern)"],
        );
    }

    // regression: a FIFO or a device as an input hung `weave plan` and `weave run` for ever
    // (hashing it for the cache key), and a folder was told only when the run read it.
    #[test]
    fn an_input_that_is_no_regular_file_is_a_build_error() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("in.csv");
        std::fs::create_dir(&folder).unwrap();
        let fifo = dir.path().join("in.txt");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let why = "not a regular file: inputs must be regular files, since Weave reads each once to hash it for the cache and again to load it";
        for (kind, path, what) in [
            ("load_csv", folder.clone(), "a folder"),
            ("load_text", fifo.clone(), "a FIFO (named pipe)"),
            ("load_jsonl", PathBuf::from("/dev/zero"), "a character device"),
        ] {
            let path = path.to_str().unwrap();
            check_build_errors(
                kind,
                &format!("path = {path:?}"),
                &[&format!("1:8 `path` names {what} ({path}), {why}")],
            );
        }
        // A glob leaves them out, as it leaves out anything that is not a regular file.
        write(&dir.path().join("a.txt"), b"a\n");
        let pattern = dir.path().join("*.txt");
        let (rows, _) = read_source(build_step("load_text", &format!("path = {:?}", pattern.to_str().unwrap())));
        assert_eq!(rows, [r#"{"text":"a"}"#]);
    }

    #[test]
    fn relative_patterns_resolve_against_the_pipeline_file_and_literal_names_win() {
        let dir = tempfile::tempdir().unwrap();
        // The pipeline's folder has glob characters of its own: they are matched literally.
        let root = dir.path().join("runs [1]");
        write(&root.join("data/b.txt"), b"b\n");
        write(&root.join("data/a.txt"), b"a\n");
        write(&root.join("data/[x].txt"), b"literal\n");
        let pipeline = root.join("pipeline.toml");
        let (rows, _) = read_source(build_step_at("load_text", &pipeline, "path = \"data/?.txt\""));
        assert_eq!(rows, [r#"{"text":"a"}"#, r#"{"text":"b"}"#]);
        // A file whose own name looks like a pattern is that file.
        let (rows, _) = read_source(build_step_at("load_text", &pipeline, "path = \"data/[x].txt\""));
        assert_eq!(rows, [r#"{"text":"literal"}"#]);
    }
}
