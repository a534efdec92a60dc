//! The `load_csv` step: a streaming CSV reader.

use std::path::PathBuf;

use weave_core::{
    Batch, CanonicalConfig, Column, Params, Record, Rejected, Shape, Source, Step, StepContext, StepError, StepInfo,
    StepKind, StrColumn, ValueRef,
};

use crate::json::NonFinite;
use crate::output::{Export, Format, OutputSpec};
use weave_core::cast::CastType;

/// The `load_csv` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "load_csv",
        Shape::Source,
        "read CSV files with a header row (or names given), streaming, in batches; fields typed by `types`",
        [
            "path",
            "delimiter",
            "quote",
            "batch_size",
            "batch_bytes",
            "max_record_bytes",
            "types",
            "infer",
            "null_values",
            "header",
            "names",
            "encoding",
        ],
        build,
    )
});

/// Reads CSV files with a header row (one file, or every file a glob matches, in order;
/// they must all have the same header), or without one (`header = false`) under the
/// `names` given. Every field is read as a string, unless `types` types it (with the
/// rules of `weave_core::cast`, as the `fields` step's `cast`); a value in `null_values`
/// is null. Rows with the wrong number of fields, invalid UTF-8 or a value that does not
/// parse as its type are rejected with their file and line number (the step's
/// `on_bad_record` policy decides whether the run stops). A header's empty or repeated
/// names are renamed (`column_3`, `id_2`) with a warning.
#[derive(Debug)]
pub struct LoadCsv {
    paths: Vec<PathBuf>,
    /// The run's shard, and what it reads of `paths` (worked out when the first file is
    /// opened; see [`crate::input::pieces`]).
    shard: Option<weave_core::Shard>,
    /// Where facts about the input files are shared with the other shards of a job (the
    /// cache's `files.d/`): a file's first quote, worked out once between them.
    facts: Option<PathBuf>,
    pieces: Option<Vec<crate::input::Piece>>,
    delimiter: u8,
    quote: u8,
    batch: crate::BatchLimit,
    max_record: usize,
    config: CanonicalConfig,
    /// The next piece to open, as an index into `pieces`.
    next_file: usize,
    /// The file being read.
    open: Option<OpenCsv>,
    /// The lines before the piece read of a file that this shard reads from inside it, by
    /// the file's index (see [`CsvReader::skip_to`]): a line's number in a message is its
    /// line in the piece plus these.
    lines_before: Vec<(usize, std::sync::Arc<crate::input::LinesBefore>)>,
    /// The header, from the first file that has one, and that file: every file must match it.
    header: Option<(Vec<String>, usize)>,
    /// Bytes of text per column in the last batch: the next batch's buffers start that big,
    /// so that a short file does not hold a full batch's worth of empty capacity.
    hint: Vec<usize>,
    /// Rows in the last batch.
    rows_hint: usize,
    /// The fields `types` types, by name.
    types: Vec<(String, CastType)>,
    /// The texts that read as null.
    null_values: Vec<String>,
    /// The names given (`names`): of a file without a header row, or in place of its
    /// header's.
    names: Option<Vec<String>>,
    /// Whether each file starts with a header row.
    has_header: bool,
    /// Whether the fields `types` leaves out are typed from the first batch (`infer`),
    /// and whether that is done.
    infer: bool,
    inferred: bool,
    /// The files' character encoding.
    encoding: crate::input::Encoding,
}

#[derive(Debug)]
struct OpenCsv {
    /// Its index in `paths`.
    file: usize,
    reader: CsvReader,
    /// The range of bytes the shard's records start in (`None`: the whole file).
    bytes: Option<std::ops::Range<u64>>,
}

/// A CSV file read record by record, with `csv_core` doing the parsing. Two things the
/// csv crate's reader gets wrong are done here: lines are counted by their line feeds (the
/// csv crate counts one short after each CRLF line ending, BurntSushi/rust-csv#395, and
/// CRLF is common in CSV files), and a quoted field still open at the end of the input is
/// seen (the csv crate reads the rest of the file into it without a word, which would lose
/// every row after it). Both come out of the bytes the parser consumes, with no second
/// scan of the input.
struct CsvReader {
    input: crate::input::Input,
    core: csv_core::Reader,
    buf: Box<[u8]>,
    /// The unread part of `buf`.
    start: usize,
    end: usize,
    /// The input has ended.
    eof: bool,
    /// The line feed given to the parser after the input ended (see [`CsvReader::read`]).
    fed_end: bool,
    /// Line feeds consumed so far, and those before the byte this reader started at (a
    /// shard's piece read from its range: counted when a message first needs a line).
    lines: u64,
    before: std::sync::Arc<crate::input::LinesBefore>,
    /// Whether this reader started at the file's first byte (it has seen every byte
    /// before the ones it reads).
    from_start: bool,
    /// Bytes consumed so far, and where the last record read starts (its first byte that
    /// is not a line break): a shard's records are those that start in its range.
    consumed: u64,
    record_start: u64,
    /// The last record's fields, unescaped, one after the other, and where each ends.
    fields: Vec<u8>,
    ends: Vec<usize>,
    len: usize,
    /// The most memory a record may take (`max_record_bytes`): the text of its fields and
    /// 8 bytes per field (where it ends), so that a line of delimiters is bounded too. The
    /// rest of a larger record is parsed into `spill`, over and over, and dropped.
    max: usize,
    spill: Vec<u8>,
    spill_ends: Vec<usize>,
    /// The delimiter and quote, for records split without the parser.
    delimiter: u8,
    quote: u8,
    /// Records may be split without the parser ([`crate::csv_fast`]): once the parser has
    /// been called, which strips a byte order mark at the start of the file only.
    fast: bool,
}

impl std::fmt::Debug for CsvReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvReader").field("lines", &self.lines).field("eof", &self.eof).finish_non_exhaustive()
    }
}

/// What [`CsvReader::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CsvRead {
    /// A record, which starts on this line (from 1).
    Record {
        line: u64,
    },
    /// The last record, which starts on this line and has a quoted field that the input
    /// ended inside of.
    Unclosed {
        line: u64,
    },
    /// A record larger than `max_record_bytes`, which starts on this line: read past, its
    /// fields not kept.
    TooLarge {
        line: u64,
    },
    End,
}

/// Bytes read from the input at a time.
const CSV_BUFFER: usize = 64 << 10;

impl CsvReader {
    fn new(input: crate::input::Input, delimiter: u8, quote: u8, max: usize) -> Self {
        CsvReader {
            input,
            core: csv_core::ReaderBuilder::new().delimiter(delimiter).quote(quote).build(),
            buf: vec![0; CSV_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            fed_end: false,
            lines: 0,
            before: std::sync::Arc::default(),
            from_start: true,
            consumed: 0,
            record_start: 0,
            fields: vec![0; 1024],
            ends: vec![0; 16],
            len: 0,
            max,
            spill: Vec::new(),
            spill_ends: Vec::new(),
            delimiter,
            quote,
            fast: false,
        }
    }

    /// The fields of the last record read.
    fn record(&self) -> CsvRecord<'_> {
        CsvRecord { fields: &self.fields, ends: &self.ends[..self.len] }
    }

    /// Reads the next record.
    ///
    /// A record's line is that of its first byte: the line breaks before it (those that
    /// end the record before, and blank lines, which the parser skips) are counted first.
    /// Once the input has ended, the parser is given one line feed before the end: it ends
    /// the last record if that record is complete, and it is read into a quoted field if
    /// one is open, which is how an unclosed quote is told (that line feed is then taken
    /// back out of the field).
    fn read(&mut self) -> std::io::Result<CsvRead> {
        use csv_core::ReadRecordResult as R;
        // A record that lies whole in the buffer is split here ([`crate::csv_fast`]). The
        // parser is then between records (after a line feed, or a carriage return), where
        // it reads a byte that is not a line break as it would at the start: skipping the
        // record leaves it where it would be after parsing it.
        if self.fast
            && let Some(got) = crate::csv_fast::split_record(
                &self.buf[self.start..self.end],
                self.delimiter,
                self.quote,
                self.max,
                &mut self.fields,
                &mut self.ends,
            )
        {
            let line = self.lines + 1;
            self.len = got.fields;
            self.record_start = self.consumed;
            self.lines += got.line_feeds;
            self.start += got.consumed;
            self.consumed += got.consumed as u64;
            return Ok(CsvRead::Record { line });
        }
        let (mut out, mut nends) = (0, 0);
        let mut line = None;
        let (mut unclosed, mut too_large) = (false, false);
        loop {
            if self.start == self.end && !self.eof {
                self.fill()?;
            }
            let real = self.start < self.end;
            let input: &[u8] = if real {
                &self.buf[self.start..self.end]
            } else if !self.fed_end {
                b"\n"
            } else {
                &[]
            };
            let (res, nin, nout, nend) = if too_large {
                self.core.read_record(input, &mut self.spill, &mut self.spill_ends)
            } else {
                self.core.read_record(input, &mut self.fields[out..], &mut self.ends[nends..])
            };
            self.fast = true;
            if real {
                let mut consumed = &input[..nin];
                if line.is_none() {
                    let first = consumed.iter().position(|&b| b != b'\n' && b != b'\r');
                    let (breaks, rest) = consumed.split_at(first.unwrap_or(consumed.len()));
                    self.lines += line_feeds(breaks);
                    if let Some(first) = first {
                        line = Some(self.lines + 1);
                        self.record_start = self.consumed + first as u64;
                    }
                    consumed = rest;
                }
                self.lines += line_feeds(consumed);
                self.start += nin;
                self.consumed += nin as u64;
            } else if !self.fed_end && nin == 1 {
                self.fed_end = true;
                // Read into an open record rather than ending it: a quoted field is open.
                unclosed = res == R::InputEmpty && line.is_some();
            }
            if !too_large {
                out += nout;
                nends += nend;
            }
            match res {
                R::InputEmpty => {}
                R::OutputFull | R::OutputEndsFull if too_large => {}
                // What this record holds so far, not what earlier ones left the buffers.
                R::OutputFull | R::OutputEndsFull if out.saturating_add(nends.saturating_mul(8)) > self.max => {
                    too_large = true;
                    self.spill.resize(64 << 10, 0);
                    self.spill_ends.resize(1024, 0);
                }
                R::OutputFull => {
                    // Up to one byte over the bound, so that a record over it is told.
                    let more = self.fields.len().max(1024).min((self.max + 1).saturating_sub(out).max(1));
                    self.fields.resize(self.fields.len() + more, 0);
                }
                R::OutputEndsFull => {
                    let more = self.ends.len().max(16);
                    self.ends.resize(self.ends.len() + more, 0);
                }
                R::Record if too_large || out.saturating_add(nends.saturating_mul(8)) > self.max => {
                    self.len = 0;
                    let line = line.unwrap_or(self.lines + 1);
                    return Ok(if unclosed { CsvRead::Unclosed { line } } else { CsvRead::TooLarge { line } });
                }
                R::Record => {
                    self.len = nends;
                    let line = line.unwrap_or(self.lines + 1);
                    if unclosed {
                        // The line feed given at the end is the last byte of the last field.
                        if let Some(last) = self.ends[..nends].last_mut() {
                            *last = last.saturating_sub(1);
                        }
                        return Ok(CsvRead::Unclosed { line });
                    }
                    return Ok(CsvRead::Record { line });
                }
                R::End => return Ok(CsvRead::End),
            }
        }
    }

    /// Moves to the first record that starts at or after byte `target` (its first byte
    /// that is not a line break), without parsing the records before it: their bytes are
    /// only followed through the states that decide where a record ends ([`At`], with
    /// [`follow`]). That is what a shard does with the bytes before its range when
    /// [`CsvReader::skip_to`] cannot tell: the full parse it replaces cost each shard of a
    /// job as much as reading its own share again. Lines and bytes consumed are counted as
    /// [`CsvReader::read`] counts them. `false` when the input ends first (the records that
    /// start after `target` are none). `target` is past the bytes consumed so far (a
    /// shard's range starts past byte 0).
    fn skim_to(&mut self, target: u64) -> std::io::Result<bool> {
        let mut at = At::Record;
        // At the file's start, a byte-order mark is taken off by the parser, and the first
        // record is then said to start at byte 0 (where the reader counts from): it is
        // never at or past the target.
        let mut from_zero = self.take_byte_order_mark()?;
        loop {
            if self.start == self.end {
                if self.eof {
                    return Ok(false);
                }
                self.fill()?;
                if self.eof {
                    return Ok(false);
                }
            }
            let chunk = &self.buf[self.start..self.end];
            let mut i = 0;
            if from_zero {
                while i < chunk.len() && is_term(chunk[i]) {
                    i += 1;
                }
                if i < chunk.len() {
                    (at, from_zero) = (At::Field, false);
                }
            }
            let from = usize::try_from(target.saturating_sub(self.consumed)).unwrap_or(usize::MAX);
            let found = if from_zero { None } else { follow(&mut at, chunk, i, from, self.delimiter, self.quote) };
            let upto = found.unwrap_or(chunk.len());
            self.lines += line_feeds(&chunk[..upto]);
            self.start += upto;
            self.consumed += upto as u64;
            if found.is_some() {
                self.restart_between_records();
                return Ok(true);
            }
        }
    }

    /// Moves to the first record that starts at or after byte `target`, as
    /// [`CsvReader::skim_to`] does, without following the bytes before `target`: of those
    /// this reader has still to consume, only the line feeds are counted and whether one is
    /// a quote noted (a reader opened at the byte before `target` has one to consume). At
    /// `target` the parse can be in any state the byte before it allows
    /// ([`At::possible_after`]); each is followed on from there, and when every one of them
    /// starts the next record at the same byte (or none before the input ends), the bytes
    /// before `target` could not have left the parse anywhere else. Inside quotes is only
    /// possible when a quote came before: when that state alone disagrees, and this reader
    /// has not seen every byte before, `quote_before` is asked. Where a line break inside
    /// quotes is near `target`, or quotes are rare, the states disagree: `None`, and only
    /// following every byte from the start can tell (this reader has then consumed bytes
    /// and is dropped). So a shard of a job reads its own range and little more.
    fn skip_to(
        &mut self,
        target: u64,
        mut quote_before: impl FnMut() -> std::io::Result<bool>,
    ) -> std::io::Result<Option<bool>> {
        // After a byte-order mark, the first record is said to start at byte 0, however
        // many line breaks come before it: the bytes before `target` must hold more.
        let mut from_zero = self.take_byte_order_mark()?;
        if from_zero && target <= self.consumed {
            return Ok(None);
        }
        let (delimiter, quote) = (self.delimiter, self.quote);
        let (mut quoted, mut before) = (false, None);
        while self.consumed < target {
            if self.start == self.end {
                self.fill()?;
                if self.eof {
                    return Ok(Some(false));
                }
            }
            let n = (self.end - self.start).min(usize::try_from(target - self.consumed).unwrap_or(usize::MAX));
            let chunk = &self.buf[self.start..self.start + n];
            self.lines += line_feeds(chunk);
            quoted = quoted || memchr::memchr(quote, chunk).is_some();
            from_zero = from_zero && chunk.iter().all(|&b| is_term(b));
            before = chunk.last().copied().or(before);
            self.start += n;
            self.consumed += n as u64;
        }
        let Some(before) = before.filter(|_| !from_zero) else { return Ok(None) };
        // Whether a quote came before `target` is known, or asked once, when it matters.
        let mut known = quoted || self.from_start;
        // Each state the parse can be in at `target`, and where following it has got to.
        let mut states: Vec<(At, At)> =
            At::possible_after(before, true, delimiter, quote).into_iter().map(|s| (s, s)).collect();
        if known && !quoted {
            states.retain(|s| s.0 != At::Quoted);
        }
        loop {
            if self.start == self.end {
                if self.consumed - target > SKIP_WINDOW {
                    return Ok(None);
                }
                self.fill()?;
                if self.eof {
                    // No state started a record before the input ended.
                    return Ok(Some(false));
                }
            }
            let chunk = &self.buf[self.start..self.end];
            let mut found: Vec<Option<usize>> =
                states.iter_mut().map(|(_, at)| follow(at, chunk, 0, 0, delimiter, quote)).collect();
            let agree = |found: &[Option<usize>]| found.windows(2).all(|w| w[0] == w[1]);
            if let Some(inside) = states.iter().position(|s| s.0 == At::Quoted)
                && !known
                && !agree(&found)
            {
                known = true;
                if !quote_before()? {
                    states.remove(inside);
                    found.remove(inside);
                }
            }
            if !agree(&found) {
                return Ok(None);
            }
            let first = found.first().copied().flatten();
            let chunk = &self.buf[self.start..self.end];
            let upto = first.unwrap_or(chunk.len());
            self.lines += line_feeds(&chunk[..upto]);
            self.start += upto;
            self.consumed += upto as u64;
            if first.is_some() {
                self.restart_between_records();
                return Ok(Some(true));
            }
        }
    }

    /// At the file's start, takes a byte-order mark off as the parser does: `true` when
    /// there was one.
    fn take_byte_order_mark(&mut self) -> std::io::Result<bool> {
        if self.consumed != 0 {
            return Ok(false);
        }
        if self.start == self.end && !self.eof {
            self.fill()?;
        }
        if self.buf[self.start..self.end].starts_with(b"\xef\xbb\xbf") {
            (self.start, self.consumed) = (self.start + 3, 3);
            return Ok(true);
        }
        Ok(false)
    }

    /// Leaves the parser between records, where a skim or skip has stopped (or inside a
    /// CRLF, whose LF is then skipped as a blank line would be): it starts afresh. A fresh
    /// parser takes a byte-order mark off the first bytes it is given, which past the
    /// file's first byte are a record's own: it is then first given a line feed, which
    /// between records it skips as a blank line, so that it has read and takes nothing off.
    fn restart_between_records(&mut self) {
        self.core.reset();
        if self.consumed > 0 {
            let _ = self.core.read_record(b"\n", &mut [], &mut []);
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        loop {
            match std::io::Read::read(&mut self.input, &mut self.buf) {
                Ok(n) => {
                    (self.start, self.end) = (0, n);
                    self.eof = n == 0;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

use crate::input::line_feeds;

/// How far past its target [`CsvReader::skip_to`] follows the states it cannot tell apart
/// before it leaves the question to a full skim.
const SKIP_WINDOW: u64 = 1 << 20;

fn is_term(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

/// Where a parse is, in the states that decide where a record ends: `csv_core`'s with this
/// loader's settings (a delimiter, a quote doubled inside quotes, CR, LF or CRLF ending
/// records, no escape or comment character), merged where they lead on alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Between records: line breaks are skipped, any other byte starts a record.
    Record,
    /// At a field's start, or just after a quote inside quotes (both lead on the same way).
    Field,
    /// Inside an unquoted field (a quote there is text).
    Unquoted,
    /// Inside quotes.
    Quoted,
}

impl At {
    /// The states a parse can be in just after byte `b`: between records after a line
    /// break; at a field's start after a delimiter, or after a quote (one that closes, or
    /// half of a doubled one); inside an unquoted field after anything but a delimiter or a
    /// line break; inside quotes after anything, when a quote came at all (`quoted`).
    fn possible_after(b: u8, quoted: bool, delimiter: u8, quote: u8) -> Vec<At> {
        let mut states = Vec::with_capacity(4);
        if is_term(b) {
            states.push(At::Record);
        }
        if b == delimiter || b == quote {
            states.push(At::Field);
        }
        if !is_term(b) && b != delimiter {
            states.push(At::Unquoted);
        }
        if quoted {
            states.push(At::Quoted);
        }
        states
    }
}

/// Follows `chunk` from byte `i` in state `at` until a record starts at a byte at or past
/// `from` (its index is returned), or the chunk ends (`None`; `at` is then the state at its
/// end). `memchr` jumps over the runs inside a field where no state changes; the shards'
/// property tests hold this to the parser's records.
fn follow(at: &mut At, chunk: &[u8], mut i: usize, from: usize, delimiter: u8, quote: u8) -> Option<usize> {
    while i < chunk.len() {
        match *at {
            At::Record if is_term(chunk[i]) => i += 1,
            At::Record if i >= from => return Some(i),
            At::Record => *at = At::Field,
            At::Field => {
                let b = chunk[i];
                *at = if b == quote {
                    At::Quoted
                } else if b == delimiter {
                    At::Field
                } else if is_term(b) {
                    At::Record
                } else {
                    At::Unquoted
                };
                i += 1;
            }
            At::Unquoted => match memchr::memchr3(delimiter, b'\n', b'\r', &chunk[i..]) {
                Some(j) => {
                    *at = if chunk[i + j] == delimiter { At::Field } else { At::Record };
                    i += j + 1;
                }
                None => i = chunk.len(),
            },
            At::Quoted => match memchr::memchr(quote, &chunk[i..]) {
                Some(j) => {
                    *at = At::Field;
                    i += j + 1;
                }
                None => i = chunk.len(),
            },
        }
    }
    None
}

/// One record's fields.
#[derive(Debug, Clone, Copy)]
struct CsvRecord<'a> {
    fields: &'a [u8],
    ends: &'a [usize],
}

impl<'a> CsvRecord<'a> {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Every field's bytes, one after the other.
    fn as_slice(&self) -> &'a [u8] {
        &self.fields[..self.ends.last().copied().unwrap_or(0)]
    }

    /// Where field `i` is in [`CsvRecord::as_slice`].
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start..self.ends[i]
    }

    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.len()).map(|i| &self.fields[self.range(i)])
    }
}

/// A one-character key (`delimiter`, `quote`): one ASCII character, and not a line break,
/// which ends records whatever the key says.
fn single_byte(p: &Params, key: &str, default: u8) -> u8 {
    let Some(s) = p.str(key) else { return default };
    let problem = match s.as_bytes() {
        [b'\n' | b'\r'] => "cannot be a line break",
        [b] if b.is_ascii() => return *b,
        _ if s == "\\t" => return b'\t',
        _ => "must be one ASCII character, such as \",\" or \"\\t\"",
    };
    if let Some(item) = p.item(key) {
        p.error_at(item, format!("`{key}` {problem}"));
    }
    default
}

fn build(p: &Params) -> Option<Step> {
    let paths = crate::input::input_paths(p, "the CSV file to read, or a glob pattern");
    let config = crate::input::config(p, paths.as_deref().unwrap_or_default());
    let delimiter = single_byte(p, "delimiter", b',');
    let quote = single_byte(p, "quote", b'"');
    if delimiter == quote
        && let Some(item) = p.item("quote").or_else(|| p.item("delimiter"))
    {
        let c = char::from(quote);
        p.error_at(item, format!("`delimiter` and `quote` are both {:?}: they must differ", c.to_string()));
    }
    let batch = crate::BatchLimit::read(p);
    let max_record = crate::max_record_bytes(p);
    let types = weave_core::cast::types_at(p, "types").unwrap_or_default();
    let null_values = p.str_list("null_values").unwrap_or_default();
    let has_header = p.bool("header").unwrap_or(true);
    let encoding = crate::input::Encoding::read(p);
    let names = p.str_list("names");
    match (&names, has_header, p.item("names"), p.item("header")) {
        (None, false, _, Some(item)) => {
            p.error_at(item, "`header = false` needs `names`: the fields of each row, in order");
        }
        (Some(n), _, Some(item), _) => {
            let mut seen = std::collections::HashSet::new();
            if n.is_empty() {
                p.error_at(item, "`names` is empty: name the fields of each row");
            } else if let Some(twice) = n.iter().find(|x| !seen.insert(x.as_str())) {
                p.error_at(item, format!("`names` names `{twice}` twice"));
            } else if n.iter().any(String::is_empty) {
                p.error_at(item, "`names` has an empty name");
            }
        }
        _ => {}
    }
    if let (Some(n), Some(item)) = (&names, p.item("types"))
        && let Some((field, _)) = types.iter().find(|(f, _)| !n.contains(f))
    {
        p.error_at(item, format!("`types` names `{field}`, which is not in `names`"));
    }
    if p.has_errors() {
        return None;
    }
    let shard = p.context().shard();
    if let (Some(s), Some(item)) = (shard, p.item("infer"))
        && s.count() > 1
        && p.bool("infer") == Some(true)
    {
        p.error_at(
            item,
            "`infer` types fields from the first batch, which each shard of a job reads differently: give the fields' `types` for a sharded run",
        );
        return None;
    }
    Some(Step::Source(Box::new(LoadCsv {
        paths: paths?,
        shard,
        facts: p.context().cache_dir().map(|d| d.join("files.d")),
        pieces: None,
        delimiter,
        quote,
        batch,
        max_record,
        config,
        next_file: 0,
        open: None,
        lines_before: Vec::new(),
        header: None,
        hint: Vec::new(),
        rows_hint: 0,
        types,
        null_values,
        names,
        has_header,
        infer: p.bool("infer").unwrap_or(false),
        inferred: false,
        encoding,
    })))
}

impl StepInfo for LoadCsv {
    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_read(&self) -> Vec<PathBuf> {
        crate::input::local_files(&self.paths)
    }
}

impl LoadCsv {
    /// Opens the next file that has a header (an empty file has none, and no rows), checks
    /// its header, and makes it the open one. `false` when no file is left.
    fn open_next(&mut self) -> Result<bool, StepError> {
        if self.pieces.is_none() {
            // A file decoded as it is read is not cut: its bytes are not the file's.
            let utf8 = self.encoding == crate::input::Encoding::Utf8;
            self.pieces =
                Some(crate::input::pieces(&self.paths, self.shard, |p| utf8 && !crate::input::is_compressed(p))?);
        }
        while let Some(piece) = self.pieces.as_ref().and_then(|p| p.get(self.next_file)).cloned() {
            let (file, bytes) = (piece.file, piece.bytes);
            let path = &self.paths[file];
            let bytes = match bytes {
                Some(r) => Some(
                    cut_after_text(path, r.start, self.delimiter, self.quote)?
                        ..cut_after_text(path, r.end, self.delimiter, self.quote)?,
                ),
                None => None,
            };
            self.next_file += 1;
            let input = self.encoding.decode(crate::input::open(path)?);
            let mut reader = CsvReader::new(input, self.delimiter, self.quote, self.max_record);
            if let (Some(names), false) = (&self.names, self.has_header) {
                // No header row: every row is data, under the names given.
                if self.header.is_none() {
                    self.hint = vec![0; names.len()];
                    self.header = Some((names.clone(), file));
                }
                if self.skim(file, &mut reader, bytes.as_ref())? {
                    self.open = Some(OpenCsv { file, reader, bytes });
                    return Ok(true);
                }
                continue;
            }
            match reader.read().map_err(|e| read_error(path, &reader, e))? {
                CsvRead::End => continue,
                CsvRead::Unclosed { .. } => {
                    return Err(StepError::fatal(format!(
                        "{}:1: the header has a quoted field that is never closed, so the whole file would be read into it",
                        path.display()
                    )));
                }
                CsvRead::TooLarge { .. } => {
                    let reason = crate::too_large("the header", self.max_record);
                    return Err(StepError::fatal(format!("{}:1: {reason}", path.display())));
                }
                CsvRead::Record { .. } => {}
            }
            let names = match &self.names {
                // The names given replace the header's.
                Some(given) if given.len() != reader.record().len() => {
                    return Err(StepError::fatal(format!(
                        "{}:1: `names` gives {} names, the header has {} columns",
                        path.display(),
                        given.len(),
                        reader.record().len()
                    )));
                }
                Some(given) => given.clone(),
                None => header_names(path, reader.record())?,
            };
            match &self.header {
                None => {
                    if let Some((field, _)) = self.types.iter().find(|(f, _)| !names.contains(f)) {
                        return Err(StepError::fatal(format!(
                            "`types` names `{field}`, which the header of {} does not have (its columns: {})",
                            path.display(),
                            names.join(", ")
                        )));
                    }
                    self.hint = vec![0; names.len()];
                    self.header = Some((names, file));
                }
                Some((first, first_file)) if *first != names => {
                    return Err(StepError::fatal(format!(
                        "{}:1: the header ({}) differs from the first file's ({}: {}); \
                         every file the pattern matches must have the same columns",
                        path.display(),
                        names.join(", "),
                        self.paths[*first_file].display(),
                        first.join(", ")
                    )));
                }
                Some(_) => {}
            }
            if self.skim(file, &mut reader, bytes.as_ref())? {
                self.open = Some(OpenCsv { file, reader, bytes });
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Takes `reader` (of file `file`, past its header) past the records that start before
    /// a shard's `range`: `false` when none starts at or after it. The piece is read from
    /// the byte before its range, on a handle of its own ([`CsvReader::skip_to`]), and
    /// becomes `reader`; only when the states near the range's start disagree is `reader`
    /// followed from the file's start ([`CsvReader::skim_to`]). (A file without a header
    /// row that starts with a byte-order mark is followed from its start too: where its
    /// first record is said to start depends on every byte before it.)
    fn skim(
        &mut self,
        file: usize,
        reader: &mut CsvReader,
        range: Option<&std::ops::Range<u64>>,
    ) -> Result<bool, StepError> {
        let Some(r) = range.filter(|r| r.start > reader.consumed) else { return Ok(true) };
        let path = self.paths[file].clone();
        if reader.consumed > 0 || !starts_with_bom(&path)? {
            let at = r.start - 1;
            let mut near =
                CsvReader::new(crate::input::open_plain_at(&path, at)?, self.delimiter, self.quote, self.max_record);
            (near.consumed, near.from_start) = (at, false);
            near.before = std::sync::Arc::new(crate::input::LinesBefore::new(&path, at));
            let (quote, facts) = (self.quote, self.facts.as_deref());
            let found = near
                .skip_to(r.start, || quote_before(facts, &path, r.start, quote))
                .map_err(|e| read_error(&path, &near, e))?;
            if let Some(left) = found {
                self.lines_before.push((file, std::sync::Arc::clone(&near.before)));
                *reader = near;
                return Ok(left);
            }
            log::debug!(
                "{}: where the records after byte {} start cannot be told from the bytes near it (a line break inside quotes, or rare quotes): following the file from its start",
                path.display(),
                r.start
            );
        }
        reader.skim_to(r.start).map_err(|e| read_error(&path, reader, e))
    }

    /// The number in its file of line `line` of the piece read of file `file`.
    fn line_in_file(&self, file: usize, line: u64) -> u64 {
        line + self.lines_before.iter().find(|(f, _)| *f == file).map_or(0, |(_, b)| b.get())
    }
}

/// Whether `path` starts with a byte-order mark.
fn starts_with_bom(path: &std::path::Path) -> Result<bool, StepError> {
    use std::io::Read as _;
    let mut first = Vec::with_capacity(3);
    crate::input::open_plain_at(path, 0)?
        .take(3)
        .read_to_end(&mut first)
        .map_err(|e| StepError::environment(format!("cannot read {}", path.display()), e))?;
    Ok(first == b"\xef\xbb\xbf")
}

/// Whether a `quote` comes before byte `target` of `path`. With a folder of facts shared
/// by the shards of a job (`facts`, the cache's `files.d/`), by the file's first quote,
/// found once between them (`weave_fs::shared_fact`): a file without quotes is read once
/// for the job, not up to its cut by each shard. Without one, looked for from `target`
/// back, so that it is found at once in a file with quotes, and the whole reading before
/// `target` is only for a file with none there.
fn quote_before(
    facts: Option<&std::path::Path>,
    path: &std::path::Path,
    target: u64,
    quote: u8,
) -> std::io::Result<bool> {
    if let Some(dir) = facts {
        let abs = std::fs::canonicalize(path)?;
        let first =
            weave_fs::shared_fact(Some(dir), &abs, &format!("first-byte-{quote:02x}"), || first_byte(&abs, quote))?;
        return Ok(first.value.is_some_and(|at| at < target));
    }
    use std::io::{Read as _, Seek as _};
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut end = target;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(std::io::SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if memchr::memchr(quote, &buf[..n]).is_some() {
            return Ok(true);
        }
        end = start;
    }
    Ok(false)
}

/// Where `byte` first comes in the file at `path`, if anywhere.
fn first_byte(path: &std::path::Path, byte: u8) -> std::io::Result<Option<u64>> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(i) = memchr::memchr(byte, &buf[..n]) {
            return Ok(Some(at + i as u64));
        }
        at += n as u64;
    }
}

/// Where a shard's range that starts or ends at byte `cut` of a CSV file starts or ends
/// instead: the first byte at or past `cut` whose byte before is text (not a delimiter,
/// quote or line break; the end of the file when none is). Both shards that share the cut
/// move it alike, so the shards' records are still every record once. A cut after text
/// leaves the parse inside an unquoted field or inside quotes, which
/// [`CsvReader::skip_to`] tells apart from the bytes after it in most files; after a line
/// break, a cut could also be at a record's start, which looks the same from there on.
fn cut_after_text(path: &std::path::Path, cut: u64, delimiter: u8, quote: u8) -> Result<u64, StepError> {
    use std::io::{Read as _, Seek as _};
    if cut == 0 {
        return Ok(0);
    }
    let io = |e| StepError::environment(format!("cannot read {}", path.display()), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(std::io::SeekFrom::Start(cut - 1)).map_err(io)?;
    let mut buf = [0u8; 4096];
    let mut at = cut - 1;
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            return Ok(at);
        }
        if let Some(i) = buf[..n].iter().position(|&b| !is_term(b) && b != delimiter && b != quote) {
            return Ok(at + i as u64 + 1);
        }
        at += n as u64;
    }
}

/// The names of a header row, each UTF-8. An empty name is read as `column_N` (N its
/// column, from 1) and a repeated one as `NAME_2`, `NAME_3`..., each with a warning: a
/// spreadsheet's export often has them, and the data is still good.
fn header_names(path: &std::path::Path, header: CsvRecord<'_>) -> Result<Vec<String>, StepError> {
    let mut raw: Vec<&str> = Vec::with_capacity(header.len());
    for (i, h) in header.iter().enumerate() {
        raw.push(std::str::from_utf8(h).map_err(|_| {
            StepError::fatal(format!("{}:1: column {} of the header is not valid UTF-8", path.display(), i + 1))
        })?);
    }
    // Sets, not scans of the names so far: a header of 100,000 columns took 23 s.
    let all: std::collections::HashSet<&str> = raw.iter().copied().collect();
    let mut used: std::collections::HashSet<String> = std::collections::HashSet::with_capacity(raw.len());
    let mut names: Vec<String> = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        if !name.is_empty() && used.insert((*name).to_owned()) {
            names.push((*name).to_owned());
            continue;
        }
        let base = if name.is_empty() { format!("column_{}", i + 1) } else { (*name).to_owned() };
        let mut k = if name.is_empty() { 1 } else { 2 };
        let fresh = loop {
            let candidate = if k == 1 { base.clone() } else { format!("{base}_{k}") };
            if !used.contains(&candidate) && !all.contains(candidate.as_str()) {
                break candidate;
            }
            k += 1;
        };
        if name.is_empty() {
            log::warn!("{}:1: column {} of the header has no name: it is read as `{fresh}`", path.display(), i + 1);
        } else {
            log::warn!(
                "{}:1: the header names column `{name}` twice: column {} is read as `{fresh}`",
                path.display(),
                i + 1
            );
        }
        used.insert(fresh.clone());
        names.push(fresh);
    }
    Ok(names)
}

/// A read error (a broken compressed stream, a failing disk), named by the file and the
/// line the reader had reached.
fn read_error(path: &std::path::Path, reader: &CsvReader, e: std::io::Error) -> StepError {
    StepError::environment(format!("cannot read {}:{}", path.display(), reader.before.get() + reader.lines + 1), e)
}

impl Source for LoadCsv {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        loop {
            match self.read_batch(ctx)? {
                Read::Batch(b) => return Ok(Some(b)),
                Read::End => return Ok(None),
                // Every row of a batch set aside: on to the next one.
                Read::AllSetAside => {}
            }
        }
    }
}

/// What [`LoadCsv::read_batch`] read.
enum Read {
    Batch(Batch),
    AllSetAside,
    End,
}

impl LoadCsv {
    fn read_batch(&mut self, ctx: &mut StepContext) -> Result<Read, StepError> {
        if self.open.is_none() && !self.open_next()? {
            return Ok(Read::End);
        }
        let Some((header, _)) = &self.header else { return Ok(Read::End) };
        let header = header.clone();
        let width = header.len();
        let rows_hint = if self.hint.iter().any(|&h| h > 0) { self.rows_hint } else { self.batch.rows.min(256) };
        let mut cols: Vec<StrColumn> = self.hint.iter().map(|&h| StrColumn::with_capacity(rows_hint, h)).collect();
        let (mut rows, mut bytes) = (0, 0);
        // Where each row came from, when its values are typed (a value that does not parse
        // is a bad record named by its line).
        let typing = !self.types.is_empty() || !self.null_values.is_empty() || (self.infer && !self.inferred);
        let mut origins: Vec<(usize, u64)> = Vec::new();
        while !self.batch.full(rows, bytes) {
            let Some(open) = self.open.as_mut() else {
                if self.open_next()? {
                    continue;
                }
                break;
            };
            let path = &self.paths[open.file];
            let read = open.reader.read();
            // A shard reads the records that start in its range: those before it are
            // parsed past (where a record starts depends on the quotes before it), and the
            // first one after it ends the file.
            if let (Some(range), Ok(CsvRead::Record { .. } | CsvRead::Unclosed { .. } | CsvRead::TooLarge { .. })) =
                (&open.bytes, &read)
            {
                if open.reader.record_start >= range.end {
                    self.open = None;
                    continue;
                }
                if open.reader.record_start < range.start {
                    continue;
                }
            }
            let (line, unclosed) = match read {
                Ok(CsvRead::Record { line }) => (line, false),
                Ok(CsvRead::Unclosed { line }) => (line, true),
                Ok(CsvRead::TooLarge { line }) => {
                    let reason = crate::too_large("the record", self.max_record);
                    let line = line + open.reader.before.get();
                    ctx.reject(Rejected { reason, record: None, origin: Some(format!("{}:{line}", path.display())) });
                    continue;
                }
                Ok(CsvRead::End) => {
                    self.open = None;
                    continue;
                }
                Err(e) => return Err(read_error(path, &open.reader, e)),
            };
            let record = open.reader.record();
            let before = &open.reader.before;
            let origin = || Some(format!("{}:{}", path.display(), before.get() + line));
            if unclosed {
                // The last record: its quoted field ran to the end of the file.
                let line = before.get() + line;
                let reason = format!(
                    "a quoted field in the record that starts on line {line} is never closed, \
                     so the rest of the file would be read into it"
                );
                ctx.reject(Rejected { reason, record: Some(raw_record(&header, record)), origin: origin() });
                continue;
            }
            if record.len() != width {
                let reason = format!("expected {width} fields (as in the header), found {}", record.len());
                ctx.reject(Rejected { reason, record: Some(raw_record(&header, record)), origin: origin() });
                continue;
            }
            // One UTF-8 check for the whole row: its fields are valid when the row is and
            // every field starts and ends on a character boundary. (A check per field, then
            // a conversion per field, was an eighth of the `io` benchmark's time.)
            let text = crate::input::utf8(record.as_slice()).filter(|t| {
                (0..width).all(|i| {
                    let r = record.range(i);
                    t.is_char_boundary(r.start) && t.is_char_boundary(r.end)
                })
            });
            let Some(text) = text else {
                let bad = record.iter().position(|f| std::str::from_utf8(f).is_err()).unwrap_or_default();
                let reason = format!("field `{}` is not valid UTF-8", header[bad]);
                ctx.reject(Rejected { reason, record: Some(raw_record(&header, record)), origin: origin() });
                continue;
            };
            for (i, c) in cols.iter_mut().enumerate() {
                // Checked just above: every range is there and on character boundaries.
                c.push(text.get(record.range(i)).unwrap_or_default());
            }
            rows += 1;
            bytes += text.len();
            if typing {
                origins.push((open.file, line));
            }
        }
        if rows == 0 {
            return Ok(Read::End);
        }
        for (h, c) in self.hint.iter_mut().zip(&cols) {
            *h = c.data().len();
        }
        self.rows_hint = rows;
        if self.infer && !self.inferred {
            self.infer_types(&header, &cols);
        }
        let columns: Vec<Column> =
            if typing { self.typed(&header, cols, &origins, ctx) } else { cols.into_iter().map(Column::Str).collect() };
        if columns.first().is_some_and(Column::is_empty) {
            return Ok(Read::AllSetAside);
        }
        let schema = std::sync::Arc::new(weave_core::Schema::new(
            header.into_iter().zip(&columns).map(|(h, c)| weave_core::Field::new(h, c.data_type())).collect(),
        ));
        let columns = columns.into_iter().map(std::sync::Arc::new).collect();
        Batch::new(schema, columns).map(Read::Batch).map_err(|e| StepError::internal(e.to_string()))
    }

    /// Types the fields `types` leaves out from the values of the first batch (`infer`):
    /// a field whose every value (leaving out nulls, `null_values` and empty text) is a
    /// whole number is an int, one whose every value is a number a float, one whose every
    /// value is true or false (any case) a bool; any other stays a string, and so does a
    /// field with a number written with a leading zero (`007`, a zip code, keeps its
    /// zero) or with no value at all.
    fn infer_types(&mut self, header: &[String], cols: &[StrColumn]) {
        self.inferred = true;
        for (name, col) in header.iter().zip(cols) {
            if self.types.iter().any(|(f, _)| f == name) {
                continue;
            }
            let values = || {
                col.iter()
                    .flatten()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && !self.null_values.iter().any(|n| n == v))
            };
            if values().next().is_none() {
                continue;
            }
            let leading_zero = |v: &str| {
                let digits = v.trim_start_matches(['-', '+']);
                digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.")
            };
            let numeric = |v: &str| {
                v.bytes().any(|b| b.is_ascii_digit())
                    && v.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
                    && v.parse::<f64>().is_ok()
                    && !leading_zero(v)
            };
            let whole = |v: &str| numeric(v) && v.trim_start_matches(['-', '+']).bytes().all(|b| b.is_ascii_digit());
            let ty = if values().all(whole) {
                CastType::Int
            } else if values().all(numeric) {
                CastType::Float
            } else if values().all(|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")) {
                CastType::Bool
            } else {
                continue;
            };
            log::debug!("load_csv infers `{name}` as {}", ty.name());
            self.types.push((name.clone(), ty));
        }
    }

    /// The string columns of a batch with `null_values` made null and `types` applied;
    /// a row with a value that does not parse is set aside (named by its file and line,
    /// with the field and the value) and left out of every column.
    fn typed(
        &self,
        header: &[String],
        cols: Vec<StrColumn>,
        origins: &[(usize, u64)],
        ctx: &mut StepContext,
    ) -> Vec<Column> {
        let rows = origins.len();
        let mut bad: Vec<Option<String>> = vec![None; rows];
        let mut out: Vec<Column> = Vec::with_capacity(cols.len());
        // The text of the columns that are converted, for the records set aside (the
        // others are moved into `out` as they are, not copied).
        let mut raw: Vec<Option<StrColumn>> = Vec::with_capacity(cols.len());
        for (name, col) in header.iter().zip(cols) {
            let ty = self.types.iter().find(|(f, _)| f == name).map(|(_, t)| t);
            if ty.is_none() && !col.iter().any(|v| v.is_some_and(|v| self.null_values.iter().any(|n| n == v))) {
                out.push(Column::Str(col));
                raw.push(None);
                continue;
            }
            let mut c = Column::Null(0);
            for (r, v) in col.iter().enumerate() {
                let v = v.filter(|v| !self.null_values.iter().any(|n| n == v));
                let value = match (v, ty) {
                    (None, _) => weave_core::Value::Null,
                    (Some(v), None) => weave_core::Value::Str(v.to_owned()),
                    (Some(v), Some(t)) => match weave_core::cast::cast(weave_core::ValueRef::Str(v), t) {
                        Ok(x) => x,
                        Err(why) => {
                            if bad[r].is_none() {
                                bad[r] = Some(format!("`{name}` does not parse as {}: {why}", t.name()));
                            }
                            weave_core::Value::Null
                        }
                    },
                };
                c.push(value.as_ref());
            }
            // A column typed as text keeps its type when every value is null.
            if matches!(c, Column::Null(_)) && ty.is_none_or(|t| *t == CastType::Str) {
                let mut s = StrColumn::with_capacity(rows, 0);
                for _ in 0..rows {
                    s.push_null();
                }
                c = Column::Str(s);
            }
            out.push(c);
            raw.push(Some(col));
        }
        if bad.iter().all(Option::is_none) {
            return out;
        }
        let mut keep = Vec::with_capacity(rows);
        for (r, why) in bad.into_iter().enumerate() {
            match why {
                None => keep.push(r),
                Some(reason) => {
                    let (file, line) = origins[r];
                    let line = self.line_in_file(file, line);
                    let text = |i: usize| match &raw[i] {
                        Some(c) => c.get(r).map(str::to_owned),
                        None => out[i].as_str().and_then(|c| c.get(r)).map(str::to_owned),
                    };
                    let record: Record = header.iter().enumerate().map(|(i, h)| (h.clone(), text(i))).collect();
                    let origin = Some(format!("{}:{line}", self.paths[file].display()));
                    ctx.reject(Rejected { reason, record: Some(record), origin });
                }
            }
        }
        out.iter().map(|c| c.take(&keep)).collect()
    }
}

/// A rejected row as a record: fields lossily decoded, extra fields numbered.
fn raw_record(header: &[String], row: CsvRecord<'_>) -> Record {
    row.iter()
        .enumerate()
        .map(|(i, f)| {
            let k = header.get(i).cloned().unwrap_or_else(|| format!("_extra_{}", i + 1 - header.len()));
            (k, String::from_utf8_lossy(f).into_owned())
        })
        .collect()
}

/// The `export_csv` kind.
pub(crate) static EXPORT_KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "export_csv",
        Shape::Sink,
        "write records as CSV with a header row (gzip/zstd, split into parts, partitioned by fields); files appear whole when the run succeeds",
        ["path", "compression", "level", "max_rows", "max_bytes", "max_partitions", "manifest", "delimiter", "fields"],
        build_export,
    )
});

/// Writes records as CSV: a header row, then one row per record, in one file or in parts
/// (each with its header) as the export cuts them. The columns are
/// `fields` when given, else the first batch's fields; null is an empty cell, and lists
/// and maps are written as JSON.
#[derive(Debug)]
pub struct ExportCsv {
    out: Export<Csv>,
    config: CanonicalConfig,
}

/// CSV rows under a header.
#[derive(Debug)]
struct Csv {
    delimiter: u8,
    /// The columns, once known.
    fields: Option<Vec<String>>,
    /// Whether the columns are the step's `fields` (else the first batch's).
    given: bool,
    /// The header row, once the columns are known.
    header: Vec<u8>,
    record: csv::ByteRecord,
    cell: Vec<u8>,
    /// Floats inside lists and maps, written as JSON, that JSON cannot hold.
    nulled: NonFinite,
}

impl Csv {
    fn set_fields(&mut self, fields: Vec<String>) -> Result<(), StepError> {
        self.header.clear();
        if !fields.is_empty() {
            let mut w = csv::WriterBuilder::new().delimiter(self.delimiter).from_writer(&mut self.header);
            w.write_record(&fields).map_err(|e| StepError::internal(format!("cannot format the CSV header: {e}")))?;
            w.flush().map_err(|e| StepError::internal(format!("cannot format the CSV header: {e}")))?;
        }
        self.fields = Some(fields);
        Ok(())
    }
}

impl Format for Csv {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn rows(&mut self, batch: &Batch, out: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<(), StepError> {
        if self.fields.is_none() {
            self.set_fields(batch.schema().names().map(str::to_owned).collect())?;
        }
        let fields = self.fields.as_deref().unwrap_or_default();
        if fields.is_empty() && !batch.is_empty() {
            // A line of no cells is no row to a CSV reader (and none has a header to name).
            return Err(StepError::fatal(
                "records with no fields cannot be written as CSV rows (a row has at least one column): export them as JSON Lines",
            ));
        }
        let columns: Vec<Option<&Column>> =
            fields.iter().map(|f| batch.schema().index_of(f).map(|c| &*batch.columns()[c])).collect();
        // Every field of the batch is a column when as many columns are found as it has
        // fields (names are unique on both sides): no scan of the columns per field. A
        // field outside the columns that is null in every record of the batch loses
        // nothing (a null is an empty cell): records read from JSON have such fields where
        // another record of their batch had the field, so whether it is there depends on
        // the batch, not the records.
        let holds_a_value = |c: &Column| (0..c.len()).any(|r| !c.get(r).is_null());
        if columns.iter().flatten().count() < batch.schema().len()
            && let Some(extra) = batch
                .schema()
                .names()
                .zip(batch.columns())
                .find(|(n, c)| !fields.iter().any(|f| f == n) && holds_a_value(c))
                .map(|(n, _)| n)
        {
            let fix = if self.given {
                ": add it to `fields`, or remove it from the records before this step"
            } else {
                " (the first batch's fields); list the columns with `fields = [...]`"
            };
            return Err(StepError::fatal(format!(
                "field `{extra}` is not among the CSV columns ({}){fix}",
                fields.join(", ")
            )));
        }
        let io = |e: csv::Error| StepError::internal(format!("cannot format a CSV row: {e}"));
        let mut w = csv::WriterBuilder::new().delimiter(self.delimiter).has_headers(false).from_writer(out);
        for r in 0..batch.len() {
            self.record.clear();
            for (c, name) in columns.iter().zip(fields) {
                match c.map(|c| c.get(r)) {
                    // A real null is an empty cell; NaN and the infinities are written as
                    // pandas, polars and Python's `float` read them back.
                    None | Some(ValueRef::Null) => self.record.push_field(b""),
                    Some(ValueRef::Str(s)) => self.record.push_field(s.as_bytes()),
                    Some(ValueRef::Float(x)) if x.is_nan() => self.record.push_field(b"NaN"),
                    Some(ValueRef::Float(x)) if x.is_infinite() => {
                        self.record.push_field(if x > 0.0 { b"inf" } else { b"-inf" });
                    }
                    // Timestamps, dates, decimals and bytes in their text forms (RFC 3339,
                    // ISO 8601, digits, base64), unquoted.
                    Some(
                        v @ (ValueRef::Timestamp(_) | ValueRef::Date(_) | ValueRef::Decimal(_) | ValueRef::Binary(_)),
                    ) => {
                        use std::io::Write as _;
                        self.cell.clear();
                        let _ = write!(self.cell, "{}", weave_core::TextForm(v));
                        self.record.push_field(&self.cell);
                    }
                    Some(other) => {
                        use std::io::Write as _;
                        self.nulled.add(name, crate::json::non_finite(other));
                        self.cell.clear();
                        // Writing to a Vec cannot fail.
                        let _ = write!(self.cell, "{other}");
                        self.record.push_field(&self.cell);
                    }
                }
            }
            w.write_byte_record(&self.record).map_err(io)?;
            // The row's end is where the file may be cut.
            w.flush().map_err(|e| StepError::internal(format!("cannot format CSV: {e}")))?;
            ends.push(w.get_ref().len());
        }
        Ok(())
    }

    fn start(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header);
    }

    fn report(&mut self, ctx: &mut StepContext) {
        self.nulled.report(ctx, "JSON (in a CSV cell)");
    }
}

fn build_export(p: &Params) -> Option<Step> {
    let spec = OutputSpec::read(p, "the CSV file to write");
    let delimiter = single_byte(p, "delimiter", b',');
    if delimiter == b'"'
        && let Some(item) = p.item("delimiter")
    {
        p.error_at(item, "`delimiter` cannot be `\"`, which quotes the fields that need it");
    }
    let fields = p.str_list("fields");
    if let (Some(f), Some(item)) = (&fields, p.item("fields")) {
        if f.is_empty() {
            p.error_at(
                item,
                "`fields` is empty: name the columns, or leave `fields` out to take the first batch's fields",
            );
        }
        // A column named twice would make a header that `load_csv` refuses.
        let mut seen = std::collections::HashSet::with_capacity(f.len());
        if let Some(twice) = f.iter().find(|n| !seen.insert(n.as_str())) {
            p.error_at(item, format!("`fields` names `{twice}` twice"));
        }
    }
    if p.has_errors() {
        return None;
    }
    let mut format = Csv {
        delimiter,
        fields: None,
        given: fields.is_some(),
        header: Vec::new(),
        record: csv::ByteRecord::new(),
        cell: Vec::new(),
        nulled: NonFinite::default(),
    };
    if let Some(fields) = fields
        && let Err(e) = format.set_fields(fields)
    {
        p.push(weave_core::Diagnostic::error(e.to_string()));
        return None;
    }
    Some(Step::Sink(Box::new(ExportCsv { out: Export::new(spec?, format), config: p.canonical() })))
}

// 2: NaN and the infinities are written as `NaN`, `inf`, `-inf` (they were `null`).
crate::output::export_step!(ExportCsv, EXPORT_KIND, 2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use std::io::Write;

    fn read_all(bytes: &[u8], extra: &str) -> (Vec<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let Step::Source(mut s) =
            build_step("load_csv", &format!("path = {:?}\nbatch_size = 2\n{extra}", path.to_str().unwrap()))
        else {
            panic!()
        };
        let mut ctx = StepContext::new("load", 0, 0, Default::default());
        let mut rows = Vec::new();
        while let Some(b) = s.next_batch(&mut ctx).unwrap() {
            assert!(b.len() <= 2);
            rows.extend(b.to_records().iter().map(|r| r.to_string()));
        }
        let rejected = ctx
            .take_rejected()
            .into_iter()
            .map(|r| format!("{}: {}", r.origin.unwrap().rsplit(':').next().unwrap(), r.reason))
            .collect();
        (rows, rejected)
    }

    #[test]
    fn reads_quoted_fields_bom_and_crlf() {
        let (rows, rej) = read_all(b"\xef\xbb\xbfid,text\r\n1,\"a, \"\"quoted\"\"\r\nline\"\r\n2,plain\r\n3,\r\n", "");
        assert_eq!(
            rows,
            [r#"{"id":"1","text":"a, \"quoted\"\r\nline"}"#, r#"{"id":"2","text":"plain"}"#, r#"{"id":"3","text":""}"#]
        );
        assert!(rej.is_empty());
    }

    #[test]
    fn a_quote_that_is_never_closed_is_a_bad_record_not_the_rest_of_the_file() {
        let (rows, rej) = read_all(b"id,text\n1,\"fine\"\n2,\"broken here\n3,next row\n4,last\n", "");
        assert_eq!(rows, [r#"{"id":"1","text":"fine"}"#]);
        assert_eq!(rej.len(), 1, "{rej:?}");
        assert!(rej[0].starts_with("3: a quoted field in the record that starts on line 3 is never closed"), "{rej:?}");
        // Quotes inside an unquoted field (inch marks) and doubled quotes are no such thing.
        let (rows, rej) = read_all(b"id,text\n1,a 5\" screen\n2,\"say \"\"hi\"\"\"\n3,\"multi\nline\"\n", "");
        assert_eq!(rows.len(), 3, "{rows:?} {rej:?}");
        assert!(rej.is_empty());
    }

    #[test]
    fn ragged_rows_and_invalid_utf8_are_rejected_with_their_line() {
        let (rows, rej) = read_all(b"a,b\n1,2\n3\n4,5,6\n7,\xff\n8,9\n", "");
        assert_eq!(rows, [r#"{"a":"1","b":"2"}"#, r#"{"a":"8","b":"9"}"#]);
        assert_eq!(
            rej,
            [
                "3: expected 2 fields (as in the header), found 1",
                "4: expected 2 fields (as in the header), found 3",
                "5: field `b` is not valid UTF-8"
            ]
        );
    }

    #[test]
    fn a_character_split_across_two_fields_is_invalid_utf8() {
        // regression: the row as a whole is valid UTF-8 ("é"), its two fields are not.
        let (rows, rej) = read_all(b"a,b\n\xc3,\xa9\n1,\xc3\xa9\n", "");
        assert_eq!(rows, [r#"{"a":"1","b":"é"}"#]);
        assert_eq!(rej, ["2: field `a` is not valid UTF-8"]);
    }

    #[test]
    fn compressed_input_is_read_by_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv.zst");
        std::fs::write(&path, zstd::encode_all(&b"a,b\n1,2\n3,4\n"[..], 3).unwrap()).unwrap();
        let Step::Source(mut s) = build_step("load_csv", &format!("path = {:?}", path.to_str().unwrap())) else {
            panic!()
        };
        let b = s.next_batch(&mut StepContext::new("load", 0, 0, Default::default())).unwrap().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.row(1).get_str("b"), Some("4"));
    }

    #[test]
    fn other_delimiters_and_empty_files() {
        let (rows, _) = read_all(b"a\tb\n1\t2\n", "delimiter = \"\\t\"");
        assert_eq!(rows, [r#"{"a":"1","b":"2"}"#]);
        let (rows, _) = read_all(b"a,b\n", "");
        assert!(rows.is_empty());
        let (rows, _) = read_all(b"", "");
        assert!(rows.is_empty());
    }

    #[test]
    fn export_writes_a_header_quotes_and_json_for_nested_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let Step::Sink(mut out) = build_step("export_csv", &format!("path = {:?}", path.to_str().unwrap())) else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        let recs = vec![
            Record::new()
                .with("id", 1i64)
                .with("text", "a, \"b\"\nc")
                .with("tags", weave_core::Value::List(vec!["x".into()])),
            Record::new().with("id", 2i64).with("text", weave_core::Value::Null).with("tags", weave_core::Value::Null),
        ];
        out.write(&Batch::from_records(&recs), &mut ctx).unwrap();
        let more = Batch::from_records(&[Record::new().with("id", 3i64)]);
        out.write(&more, &mut ctx).unwrap();
        assert!(!path.exists());
        out.commit(&mut ctx).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "id,text,tags\n1,\"a, \"\"b\"\"\nc\",\"[\"\"x\"\"]\"\n2,,\n3,,\n"
        );
        // A field outside the columns is an error, not a silent drop.
        let late = Batch::from_records(&[Record::new().with("id", 4i64).with("extra", "x")]);
        let err = out.write(&late, &mut ctx).unwrap_err();
        assert!(err.to_string().starts_with("field `extra` is not among the CSV columns (id, text, tags)"), "{err}");
    }

    // regression: JSON records whose batch had a field only as nulls (another record of
    // the batch had it null, or a step gave the batch a column of nulls for a field it
    // reads) failed the export as "not among the CSV columns", by batch.
    #[test]
    fn a_field_outside_the_columns_that_is_null_in_the_batch_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let Step::Sink(mut out) = build_step("export_csv", &format!("path = {:?}", path.to_str().unwrap())) else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        out.write(&Batch::from_records(&[Record::new().with("id", 1i64)]), &mut ctx).unwrap();
        let nulls = Batch::from_records(&[
            Record::new().with("id", 2i64).with("extra", weave_core::Value::Null),
            Record::new().with("id", 3i64),
        ]);
        out.write(&nulls, &mut ctx).unwrap();
        let valued = Batch::from_records(&[Record::new().with("id", 4i64), Record::new().with("extra", "x")]);
        let err = out.write(&valued, &mut ctx).unwrap_err();
        assert!(err.to_string().starts_with("field `extra` is not among the CSV columns (id)"), "{err}");
        out.commit(&mut ctx).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "id\n1\n2\n3\n");
    }

    // regression: records without fields (`{}`) were written as lines of `""` under no
    // header, a file that load_csv refuses ("column 1 of the header has no name"): a CSV row
    // has at least one column, so they are an error, as in export_parquet.
    #[test]
    fn export_refuses_records_without_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let Step::Sink(mut out) = build_step("export_csv", &format!("path = {:?}", path.to_str().unwrap())) else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        let err = out.write(&Batch::from_records(&[Record::new(), Record::new()]), &mut ctx).unwrap_err();
        assert_eq!(
            err.to_string(),
            "records with no fields cannot be written as CSV rows (a row has at least one column): export them as JSON Lines"
        );
        out.abort();
        assert!(!path.exists());
    }

    // regression: a delimiter equal to the quote, or a line break, was accepted and gave a
    // confusing error at run time (loading) or a CSV file no reader can split (exporting:
    // `delimiter = "\""` wrote `1""a ""b"""`); columns named twice were accepted too.
    #[test]
    fn delimiters_that_cannot_work_and_columns_named_twice_are_refused() {
        check_build_errors(
            "load_csv",
            "path = \"x.csv\"\nquote = \",\"",
            &["2:9 `delimiter` and `quote` are both \",\": they must differ"],
        );
        check_build_errors(
            "load_csv",
            "path = \"x.csv\"\ndelimiter = \"\\n\"\nquote = \"\\r\"",
            &["2:13 `delimiter` cannot be a line break", "3:9 `quote` cannot be a line break"],
        );
        check_build_errors(
            "export_csv",
            "path = \"x.csv\"\ndelimiter = '\"'",
            &["2:13 `delimiter` cannot be `\"`, which quotes the fields that need it"],
        );
        check_build_errors(
            "export_csv",
            "path = \"x.csv\"\ndelimiter = \"\\r\"\nfields = [\"id\", \"text\", \"id\"]",
            &["2:13 `delimiter` cannot be a line break", "3:10 `fields` names `id` twice"],
        );
    }

    // regression: with `fields` given, a field outside them was told to "list the columns
    // with `fields = [...]`", which the step already did.
    #[test]
    fn a_field_outside_the_given_columns_says_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = format!("path = {:?}\nfields = [\"id\"]", dir.path().join("out.csv").to_str().unwrap());
        let Step::Sink(mut out) = build_step("export_csv", &config) else { panic!() };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        let err = out.write(&Batch::from_records(&[Record::new().with("id", 1i64).with("extra", "x")]), &mut ctx);
        assert_eq!(
            err.unwrap_err().to_string(),
            "field `extra` is not among the CSV columns (id): add it to `fields`, or remove it from the records before this step"
        );
    }

    // regression: NaN was written as the text `null` while a real null is an empty cell.
    #[test]
    fn export_writes_nan_and_infinities_as_readers_read_them_and_null_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let Step::Sink(mut out) = build_step("export_csv", &format!("path = {:?}", path.to_str().unwrap())) else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        let recs: Vec<Record> = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.5]
            .into_iter()
            .map(|x| Record::new().with("x", x))
            .chain([Record::new().with("x", weave_core::Value::Null)])
            .collect();
        out.write(&Batch::from_records(&recs), &mut ctx).unwrap();
        out.commit(&mut ctx).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\nNaN\ninf\n-inf\n1.5\n\"\"\n");
        assert!(ctx.take_added_stats().is_empty(), "nothing was changed");
        // Rust (as Python, pandas and polars) reads them back as the floats they were.
        let back: Vec<f64> = ["NaN", "inf", "-inf"].iter().map(|t| t.parse().unwrap()).collect();
        assert!(back[0].is_nan() && back[1] == f64::INFINITY && back[2] == f64::NEG_INFINITY);
    }

    // regression: CSV columns came out sorted when the records came from JSON.
    #[test]
    fn json_records_become_csv_columns_in_their_order_with_exact_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(
            &input,
            "{\"zeta\":1,\"alpha\":{\"y\":1,\"b\":2},\"mid\":18446744073709551615,\"big\":-9223372036854775809}\n",
        )
        .unwrap();
        let (batches, _) =
            crate::tests::read_batches(build_step("load_jsonl", &format!("path = {:?}", input.to_str().unwrap())));
        let path = dir.path().join("out.csv");
        let Step::Sink(mut out) = build_step("export_csv", &format!("path = {:?}", path.to_str().unwrap())) else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        for b in &batches {
            out.write(b, &mut ctx).unwrap();
        }
        out.commit(&mut ctx).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "zeta,alpha,mid,big\n1,\"{\"\"y\"\":1,\"\"b\"\":2}\",18446744073709551615,-9223372036854775809\n"
        );
    }

    #[test]
    fn export_of_nothing_with_fields_still_has_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let config = format!("path = {:?}\nfields = [\"a\", \"b\"]\ndelimiter = \";\"", path.to_str().unwrap());
        let Step::Sink(mut out) = build_step("export_csv", &config) else { panic!() };
        out.commit(&mut StepContext::new("out", 0, 0, Default::default())).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a;b\n");
    }

    #[test]
    fn a_missing_file_is_named() {
        let Step::Source(mut s) = build_step("load_csv", "path = \"/nonexistent/x.csv\"") else { panic!() };
        let mut ctx = StepContext::new("load", 0, 0, Default::default());
        let err = s.next_batch(&mut ctx).unwrap_err();
        assert_eq!(err.to_string(), "cannot open /nonexistent/x.csv");
        assert_eq!(err.origin(), weave_core::ErrorOrigin::Environment);
    }

    #[test]
    fn a_glob_of_csv_files_is_one_stream_that_names_the_file_of_each_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), b"id,text\n1,x\n2,y\n").unwrap();
        std::fs::write(dir.path().join("b.csv"), b"").unwrap();
        std::fs::write(dir.path().join("c.csv"), b"\xef\xbb\xbfid,text\r\n3,z\r\n4\r\n").unwrap();
        std::fs::write(dir.path().join("d.csv"), b"id,text\n").unwrap();
        let pattern = dir.path().join("*.csv");
        let config = format!("path = {:?}\nbatch_size = 3", pattern.to_str().unwrap());
        let Step::Source(mut s) = build_step("load_csv", &config) else { panic!() };
        assert_eq!(s.files_read().len(), 4);
        let mut ctx = StepContext::new("load", 0, 0, Default::default());
        let first = s.next_batch(&mut ctx).unwrap().unwrap();
        // One batch spans the first and third files (the second is empty).
        assert_eq!(first.len(), 3);
        assert_eq!(first.row(2).get_str("text"), Some("z"));
        assert!(s.next_batch(&mut ctx).unwrap().is_none());
        let rej = ctx.take_rejected();
        assert_eq!(rej.len(), 1);
        assert_eq!(rej[0].origin.as_deref(), Some(format!("{}:3", dir.path().join("c.csv").display()).as_str()));
    }

    #[test]
    fn files_with_another_header_are_an_error_that_names_both() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), b"id,text\n1,x\n").unwrap();
        std::fs::write(dir.path().join("b.csv"), b"id,body\n2,y\n").unwrap();
        let config = format!("path = {:?}", dir.path().join("*.csv").to_str().unwrap());
        let err = crate::tests::source_error(build_step("load_csv", &config));
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1: the header (id, body) differs from the first file's ({}: id, text); \
                 every file the pattern matches must have the same columns",
                dir.path().join("b.csv").display(),
                dir.path().join("a.csv").display()
            )
        );
    }

    #[test]
    fn huge_fields_and_bad_headers() {
        let big = "é".repeat(3 << 20);
        let (rows, rej) = read_all(format!("a,b\n1,\"{big}\"\n2,x\n").as_bytes(), "");
        assert!(rej.is_empty());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].len(), big.len() + r#"{"a":"1","b":""}"#.len());
        for (bytes, message) in [
            (&b"a,\xff\n1,2\n"[..], "column 2 of the header is not valid UTF-8"),
            (
                b"a,\"b\n1,2\n",
                "the header has a quoted field that is never closed, so the whole file would be read into it",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("h.csv");
            std::fs::write(&path, bytes).unwrap();
            let err =
                crate::tests::source_error(build_step("load_csv", &format!("path = {:?}", path.to_str().unwrap())));
            assert_eq!(err.to_string(), format!("{}:1: {message}", path.display()));
        }
    }

    // Issue 18, item 2: a header's empty and repeated names are renamed, not fatal.
    #[test]
    fn empty_and_repeated_header_names_are_renamed() {
        let (rows, rej) = read_all(b"a,a,,a_2,\n1,2,3,4,5\n", "");
        assert!(rej.is_empty());
        assert_eq!(rows, [r#"{"a":"1","a_3":"2","column_3":"3","a_2":"4","column_5":"5"}"#]);
    }

    #[test]
    fn types_and_null_values_type_the_fields_and_bad_values_name_their_line() {
        let csv = b"id,score,ok,tags,name\n1, 3.5 ,yes,\"[1,2]\",Ada\n2,NA,no,[],NA\n3,n/a,true,[],Alan\n4,,1,x,\n";
        let extra =
            "types = { id = \"int\", score = \"float\", ok = \"bool\", tags = \"json\" }\nnull_values = [\"NA\"]";
        let (rows, rej) = read_all(csv, extra);
        assert_eq!(
            rows,
            [
                r#"{"id":1,"score":3.5,"ok":true,"tags":[1,2],"name":"Ada"}"#,
                r#"{"id":2,"score":null,"ok":false,"tags":[],"name":null}"#,
            ]
        );
        assert_eq!(
            rej,
            [
                "4: `score` does not parse as float: \"n/a\" is not a number",
                "5: `tags` does not parse as json: \"x\" is not JSON (expected value at line 1 column 1)",
            ]
        );
        // Without types, every field is text as before: the same bytes.
        let (rows, _) = read_all(b"id,score\n1, 3.5 \n", "");
        assert_eq!(rows, [r#"{"id":"1","score":" 3.5 "}"#]);
    }

    #[test]
    fn infer_types_fields_from_the_first_batch_and_keeps_leading_zeros() {
        let csv = b"id,zip,score,ok,text,empty\n1,02139,1.5,TRUE,a,\n2,10001,2,false,b,\n";
        let (rows, rej) = read_all(csv, "infer = true");
        assert!(rej.is_empty(), "{rej:?}");
        assert_eq!(
            rows,
            [
                r#"{"id":1,"zip":"02139","score":1.5,"ok":true,"text":"a","empty":""}"#,
                r#"{"id":2,"zip":"10001","score":2.0,"ok":false,"text":"b","empty":""}"#,
            ]
        );
        // A later value that does not fit the inferred type is a bad record.
        let (rows, rej) = read_all(b"n\n1\n2\nthree\n", "infer = true");
        assert_eq!(rows, [r#"{"n":1}"#, r#"{"n":2}"#]);
        assert_eq!(rej, ["4: `n` does not parse as int: \"three\" is not a number"]);
    }

    #[test]
    fn latin_1_and_utf_16_files_are_read_as_utf_8() {
        let text = "name,city\nJosé,Zürich\n";
        let latin1: Vec<u8> = text.chars().map(|c| u8::try_from(u32::from(c)).unwrap()).collect();
        let expected = [r#"{"name":"José","city":"Zürich"}"#];
        assert_eq!(read_all(&latin1, "encoding = \"latin-1\"").0, expected);
        let mut utf16le = vec![0xFF, 0xFE];
        utf16le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(read_all(&utf16le, "encoding = \"utf-16\"").0, expected);
        let mut utf16be = vec![0xFE, 0xFF];
        utf16be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(read_all(&utf16be, "encoding = \"utf-16\"").0, expected, "the byte-order mark decides");
        // Read as UTF-8, latin-1's é is not valid: a bad record naming its line.
        let (rows, rej) = read_all(&latin1, "");
        assert!(rows.is_empty());
        assert_eq!(rej, ["2: field `name` is not valid UTF-8"]);
        check_build_errors(
            "load_csv",
            "path = \"in.csv\"\nencoding = \"ebcdic\"",
            &[
                "2:12 unknown encoding `ebcdic`; the encodings are utf-8, latin-1, windows-1252, utf-16, utf-16le, utf-16be",
            ],
        );
    }

    #[test]
    fn a_row_set_aside_for_a_value_that_does_not_parse_keeps_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "id,score,name\n1,x,Ada\n").unwrap();
        let config = format!("path = {:?}\ntypes = {{ score = \"float\" }}", path.to_str().unwrap());
        let Step::Source(mut s) = build_step("load_csv", &config) else { panic!() };
        let mut ctx = StepContext::new("load", 0, 0, Default::default());
        assert!(s.next_batch(&mut ctx).unwrap().is_none(), "the only row is set aside");
        let rejected = ctx.take_rejected();
        assert_eq!(rejected[0].record.as_ref().unwrap().to_string(), r#"{"id":"1","score":"x","name":"Ada"}"#);
    }

    #[test]
    fn a_file_without_a_header_row_takes_the_names_given() {
        let (rows, rej) =
            read_all(b"1,a\n2,b\n3,c\n", "header = false\nnames = [\"id\", \"text\"]\ntypes = { id = \"int\" }");
        assert!(rej.is_empty());
        assert_eq!(rows, [r#"{"id":1,"text":"a"}"#, r#"{"id":2,"text":"b"}"#, r#"{"id":3,"text":"c"}"#]);
        check_build_errors(
            "load_csv",
            "path = \"in.csv\"\nheader = false\ntypes = { x = \"datum\", y = 3 }",
            &[
                "3:15 `types.x`: unknown type `datum`; the types are string, int, float, bool, json, date, timestamp, decimal(P, S)",
                "3:28 `types.y` must name a type (a string) or be a table with `type`, not an integer",
                "2:10 `header = false` needs `names`: the fields of each row, in order",
            ],
        );
        // With a header row, the names given replace its names.
        let (rows, _) = read_all(b"x,y\n1,a\n", "names = [\"id\", \"text\"]");
        assert_eq!(rows, [r#"{"id":"1","text":"a"}"#]);
    }

    #[test]
    fn the_last_record_ends_with_the_file_whatever_its_last_byte() {
        for (bytes, last) in [
            (&b"a,b\n1,2"[..], r#"{"a":"1","b":"2"}"#),
            (b"a,b\n1,\"2\"", r#"{"a":"1","b":"2"}"#),
            (b"a,b\n1,\"\"", r#"{"a":"1","b":""}"#),
            (b"a,b\r\n1,\"x\ny\"\r", r#"{"a":"1","b":"x\ny"}"#),
            (b"a,b\n1,\n\n\n", r#"{"a":"1","b":""}"#),
        ] {
            let (rows, rej) = read_all(bytes, "");
            assert_eq!(rows, [last], "{}", String::from_utf8_lossy(bytes));
            assert!(rej.is_empty(), "{rej:?}");
        }
        // A quote opened in the last field, with nothing after it, or only line breaks.
        for bytes in [&b"a,b\n1,2\n3,\""[..], b"a,b\n1,2\n3,\"\r\n\r\n", b"a,b\n1,2\n3,\"x,\"\"y\n"] {
            let (rows, rej) = read_all(bytes, "");
            assert_eq!(rows, [r#"{"a":"1","b":"2"}"#], "{}", String::from_utf8_lossy(bytes));
            assert_eq!(rej.len(), 1, "{rej:?}");
            assert!(rej[0].starts_with("3: a quoted field in the record that starts on line 3"), "{rej:?}");
        }
    }

    #[test]
    fn a_record_over_max_record_bytes_is_read_past_and_named() {
        let big = "x".repeat(200_000);
        let bytes = format!("a,b\n1,\"{big}\"\n2,{big}\n3,ok\n4,\"{big}\n");
        let (rows, rej) = read_all(bytes.as_bytes(), "max_record_bytes = \"64KiB\"");
        assert_eq!(rows, [r#"{"a":"3","b":"ok"}"#]);
        assert_eq!(
            rej,
            [
                "2: the record is larger than `max_record_bytes` (64 KiB); it was skipped without being read into memory",
                "3: the record is larger than `max_record_bytes` (64 KiB); it was skipped without being read into memory",
                "5: a quoted field in the record that starts on line 5 is never closed, so the rest of the file would be read into it",
            ]
        );
        // A record of many empty fields is bounded too, and the bound is on the record:
        // one just under it is read.
        let commas = ",".repeat(20_000);
        let fit = "z".repeat(60_000);
        let (rows, rej) = read_all(format!("a,b\n{commas}\n5,{fit}\n").as_bytes(), "max_record_bytes = \"64KiB\"");
        assert_eq!(rows.len(), 1);
        assert_eq!(rej.len(), 1, "{rej:?}");
        assert!(rej[0].starts_with("2: the record is larger"), "{rej:?}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.csv");
        std::fs::write(&path, format!("a,{big}\n1,2\n")).unwrap();
        let config = format!("path = {:?}\nmax_record_bytes = 1000", path.to_str().unwrap());
        let err = crate::tests::source_error(build_step("load_csv", &config));
        assert!(err.to_string().starts_with(&format!("{}:1: the header is larger", path.display())), "{err}");
    }

    #[test]
    fn line_numbers_hold_across_read_buffers() {
        // Far more than one read buffer, CRLF and LF mixed, multi-line quoted fields, a
        // CRLF split between two reads somewhere: every bad row is named by its own line,
        // counted here independently.
        let mut bytes = b"id,text\r\n".to_vec();
        let (mut line, mut expected, mut good) = (2u64, Vec::new(), 0);
        for i in 0..20_000 {
            let eol: &[u8] = if i % 3 == 0 { b"\n" } else { b"\r\n" };
            if i % 997 == 0 {
                bytes.extend_from_slice(format!("{i}").as_bytes());
                expected.push(format!("{line}: expected 2 fields (as in the header), found 1"));
            } else if i % 7 == 0 {
                bytes.extend_from_slice(format!("{i},\"two\r\nlines, \"\"quoted\"\"\"").as_bytes());
                line += 1;
                good += 1;
            } else {
                bytes.extend_from_slice(format!("{i},row {i}").as_bytes());
                good += 1;
            }
            bytes.extend_from_slice(eol);
            line += 1;
            if i % 1000 == 500 {
                bytes.extend_from_slice(b"\r\n\n");
                line += 2;
            }
        }
        assert!(bytes.len() > 4 * CSV_BUFFER);
        let (rows, rej) = read_all(&bytes, "");
        assert_eq!(rows.len(), good);
        assert_eq!(rej, expected);
    }

    #[test]
    fn a_damaged_compressed_file_is_a_read_error_naming_file_and_line() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for i in 0..50_000 {
            writeln!(gz, "{i},some text {i}").unwrap();
        }
        let mut bytes = b"".to_vec();
        let body = gz.finish().unwrap();
        let mut header = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        header.write_all(b"id,text\n").unwrap();
        bytes.extend_from_slice(&header.finish().unwrap());
        bytes.extend_from_slice(&body[..body.len() / 2]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv.gz");
        std::fs::write(&path, &bytes).unwrap();
        let Step::Source(mut s) = build_step("load_csv", &format!("path = {:?}", path.to_str().unwrap())) else {
            panic!()
        };
        let mut ctx = StepContext::new("load", 0, 0, Default::default());
        let err = loop {
            match s.next_batch(&mut ctx) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a truncated gzip stream read to its end"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.origin(), weave_core::ErrorOrigin::Environment);
        let message = err.to_string();
        let prefix = format!("cannot read {}:", path.display());
        let line: u64 =
            message.strip_prefix(&prefix).and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("{message}"));
        assert!(line > 1000 && line < 50_000, "{message}");
    }

    // regression: with CRLF line endings the csv crate reports each record one line early
    // (BurntSushi/rust-csv#395), so a bad row was named by the line before it.
    #[test]
    fn bad_rows_are_named_by_their_own_line_whatever_the_line_endings() {
        let lf = b"a,b\n1,2\n\n\"x\ny\",2\n3\n4,5\n6\n";
        let crlf = b"a,b\r\n1,2\r\n\r\n\"x\r\ny\",2\r\n3\r\n4,5\r\n6\r\n";
        let mixed = b"\xef\xbb\xbfa,b\r\n1,2\n\r\n\"x\ny\",2\r\n3\n4,5\r\n6";
        for bytes in [&lf[..], crlf, mixed] {
            let (rows, rej) = read_all(bytes, "");
            assert_eq!(rows.len(), 3, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(
                rej,
                [
                    "6: expected 2 fields (as in the header), found 1",
                    "8: expected 2 fields (as in the header), found 1"
                ],
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

#[cfg(test)]
mod reader_properties {
    use super::*;
    use proptest::prelude::*;

    /// Where a quote-aware scan of the bytes ends: inside a quoted field or not. Written
    /// byte by byte, the plain way, as the reference for the reader's unclosed quotes.
    fn ends_in_a_quote(bytes: &[u8]) -> bool {
        #[derive(PartialEq)]
        enum S {
            Start,
            Unquoted,
            Quoted,
            QuoteInQuoted,
        }
        let mut s = S::Start;
        for &b in bytes {
            let end = matches!(b, b',' | b'\n' | b'\r');
            s = match s {
                S::Start if b == b'"' => S::Quoted,
                S::Start | S::Unquoted if end => S::Start,
                S::Start | S::Unquoted => S::Unquoted,
                S::Quoted if b == b'"' => S::QuoteInQuoted,
                S::Quoted => S::Quoted,
                S::QuoteInQuoted if b == b'"' => S::Quoted,
                S::QuoteInQuoted if end => S::Start,
                S::QuoteInQuoted => S::Unquoted,
            };
        }
        s == S::Quoted
    }

    fn input(bytes: &[u8]) -> crate::input::Input {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, bytes).unwrap();
        // Opened, then the file's folder goes: the open file stays readable.
        crate::input::open(&path).unwrap()
    }

    /// Every row a `load_csv` source gives (as text), and every row it sets aside (its line
    /// and why).
    fn drain(s: &mut Box<dyn weave_core::Source>) -> (Vec<String>, Vec<String>) {
        let mut ctx = StepContext::new("load", 0, 0, Default::default());
        let mut rows = Vec::new();
        while let Some(b) = s.next_batch(&mut ctx).unwrap() {
            rows.extend(b.to_records().iter().map(|r| r.to_string()));
        }
        let rejected = ctx.take_rejected().into_iter().map(|r| format!("{:?}: {}", r.origin, r.reason)).collect();
        (rows, rejected)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the quoting (line breaks inside quoted fields, doubled quotes, quotes
        /// left open at the end), the ragged rows and the number of shards, the shards'
        /// rows in shard order are the whole file's, each once, and so are the rows set
        /// aside, each named by its own line.
        #[test]
        fn the_shards_rows_in_order_are_the_whole_files(
            parts in proptest::collection::vec(prop_oneof![
                Just("a"), Just("bc"), Just(","), Just("\""), Just("\"\""), Just("\n"), Just("\r\n"), Just("\r"), Just(" "),
                Just("\"x\ny\""), Just("1,2\n"), Just("\"a\"b"), Just("\u{feff}"),
            ], 0..80),
            count in 1u32..8,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.csv");
            std::fs::write(&path, format!("h1,h2\n{}", parts.concat())).unwrap();
            let config = format!("path = {:?}\nbatch_size = 3", path.to_str().unwrap());
            let Step::Source(mut whole) = crate::tests::build_step("load_csv", &config) else { panic!() };
            let whole = drain(&mut whole);
            let (mut rows, mut rejected) = (Vec::new(), Vec::new());
            for i in 0..count {
                let shard = weave_core::Shard::new(i, count).unwrap();
                let Step::Source(mut s) = crate::tests::build_sharded_step("load_csv", &config, shard) else { panic!() };
                let (r, x) = drain(&mut s);
                rows.extend(r);
                rejected.extend(x);
            }
            prop_assert_eq!(rows, whole.0);
            prop_assert_eq!(rejected, whole.1);
        }
    }

    /// Every record a reader gives from where it is, as (where it starts, its line, its
    /// fields).
    fn records_of(r: &mut CsvReader) -> Vec<(u64, u64, Vec<Vec<u8>>)> {
        let mut got = Vec::new();
        loop {
            match r.read().unwrap() {
                CsvRead::End => break,
                CsvRead::Record { line } | CsvRead::Unclosed { line } | CsvRead::TooLarge { line } => {
                    got.push((r.record_start, line, r.record().iter().map(<[u8]>::to_vec).collect::<Vec<_>>()));
                }
            }
        }
        got
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]
        /// Skimming to any byte, in buffers of any size, lands where a full parse would: the
        /// records read after it are the records that start at or after that byte, with
        /// their lines, and skimming reports that none is left exactly when none is.
        /// Skipping there, from the start or from the byte before it, either says it
        /// cannot tell or lands in the same place.
        #[test]
        fn skimming_or_skipping_to_a_byte_lands_where_a_full_parse_would(
            parts in proptest::collection::vec(prop_oneof![
                Just("a"), Just("bc"), Just(","), Just("\""), Just("\"\""), Just("\n"), Just("\r\n"), Just("\r"), Just(" "),
                Just("\"x\ny\""), Just("\"a\"b"), Just("\u{feff}"), Just("é"), Just("\"p, q\",1\n"), Just("7,\"r\"\n"),
            ], 0..60),
            // From 3 bytes: a byte-order mark is known as one when it comes whole.
            buffer in prop_oneof![Just(CSV_BUFFER), 3usize..6],
            target_at in 0.0f64..1.1,
        ) {
            let bytes: Vec<u8> = parts.concat().into_bytes();
            // Past the first byte, as a shard's range is when it skims.
            let target = ((bytes.len() as f64 * target_at) as u64).max(1);
            let mut whole = CsvReader::new(input(&bytes), b',', b'"', usize::MAX / 2);
            let expected: Vec<_> = records_of(&mut whole).into_iter().filter(|r| r.0 >= target).collect();
            let mut reader = CsvReader::new(input(&bytes), b',', b'"', usize::MAX / 2);
            reader.buf = vec![0; buffer].into_boxed_slice();
            let left = reader.skim_to(target).unwrap();
            let got = if left { records_of(&mut reader) } else { Vec::new() };
            prop_assert_eq!(left, !expected.is_empty());
            prop_assert_eq!(&got, &expected);
            let mut reader = CsvReader::new(input(&bytes), b',', b'"', usize::MAX / 2);
            reader.buf = vec![0; buffer].into_boxed_slice();
            if let Some(left) = reader.skip_to(target, || unreachable!("a reader from the start has seen every byte before")).unwrap() {
                let got = if left { records_of(&mut reader) } else { Vec::new() };
                prop_assert_eq!(left, !expected.is_empty());
                prop_assert_eq!(&got, &expected);
            }
            // Read from the byte before the target, as a shard reads its piece (not for a
            // file that starts with a byte-order mark, which is followed from its start),
            // with the lines before counted apart.
            let at = target as usize - 1;
            if at < bytes.len() && !bytes.starts_with(b"\xef\xbb\xbf") {
                let mut near = CsvReader::new(input(&bytes[at..]), b',', b'"', usize::MAX / 2);
                near.buf = vec![0; buffer].into_boxed_slice();
                (near.consumed, near.from_start) = (at as u64, false);
                let quoted = bytes[..target as usize].contains(&b'"');
                if let Some(left) = near.skip_to(target, || Ok(quoted)).unwrap() {
                    let before = line_feeds(&bytes[..at]);
                    let got: Vec<_> = if left { records_of(&mut near) } else { Vec::new() }
                        .into_iter()
                        .map(|(start, line, fields)| (start, line + before, fields))
                        .collect();
                    prop_assert_eq!(left, !expected.is_empty());
                    prop_assert_eq!(got, expected);
                }
            }
        }
    }

    /// A quoted field with line breaks, larger than the stretch the states are followed
    /// for, across the shards' cuts: the shards follow the file from its start, and their
    /// rows in order are still the whole file's.
    #[test]
    fn a_quoted_field_with_line_breaks_across_the_cuts_is_followed_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        let big: String = (0..150_000).map(|i| format!("line {i}, \"\"q\"\"\n")).collect();
        std::fs::write(&path, format!("h1,h2\n1,a\n2,\"{big}\"\n3,b\n4,\"c\nd\"\n")).unwrap();
        assert!(big.len() as u64 > 2 * SKIP_WINDOW);
        let config = format!("path = {:?}\nbatch_size = 2", path.to_str().unwrap());
        let Step::Source(mut whole) = crate::tests::build_step("load_csv", &config) else { panic!() };
        let whole = drain(&mut whole);
        assert_eq!(whole.0.len(), 4);
        for count in [2u32, 3, 5] {
            let mut rows = Vec::new();
            for i in 0..count {
                let shard = weave_core::Shard::new(i, count).unwrap();
                let Step::Source(mut s) = crate::tests::build_sharded_step("load_csv", &config, shard) else {
                    panic!()
                };
                rows.extend(drain(&mut s).0);
            }
            assert_eq!(rows, whole.0, "{count} shards");
        }
    }

    /// On a file whose quoted fields hold no line break, or that has no quotes, a piece
    /// read from the byte before its cut decides alone where its records start wherever
    /// the cut falls after text, so that a shard reads its own range and little more.
    /// The shards of a job find a file's first quote once between them (in the folder of
    /// shared facts), so that a file without quotes is not read up to its cut by each.
    #[test]
    fn the_first_quote_is_found_once_for_the_shards_and_tells_each_cut() {
        let dir = tempfile::tempdir().unwrap();
        let facts = dir.path().join("files.d");
        let plain = dir.path().join("plain.csv");
        let quoted = dir.path().join("quoted.csv");
        let mut text = String::from("a,b\n");
        for i in 0..1000 {
            text.push_str(&format!("{i},{}\n", i * 7));
        }
        std::fs::write(&plain, &text).unwrap();
        let at = text.len() / 2;
        let with_quote = format!("{}\"x\"{}", &text[..at], &text[at..]);
        std::fs::write(&quoted, &with_quote).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for f in [&plain, &quoted] {
            std::fs::File::options().write(true).open(f).unwrap().set_modified(old).unwrap();
        }
        for target in [10, 2000, text.len() as u64 - 1] {
            assert!(!quote_before(Some(&facts), &plain, target, b'"').unwrap());
            assert!(!quote_before(None, &plain, target, b'"').unwrap());
        }
        for (target, before) in
            [(10, false), (at as u64, false), (at as u64 + 1, true), (with_quote.len() as u64, true)]
        {
            assert_eq!(quote_before(Some(&facts), &quoted, target, b'"').unwrap(), before, "{target}");
            assert_eq!(quote_before(None, &quoted, target, b'"').unwrap(), before, "{target}");
        }
        let records = std::fs::read_dir(&facts)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count();
        assert_eq!(records, 2, "one record per file");
    }

    #[test]
    fn a_piece_needs_no_full_parse_where_quoted_fields_hold_no_line_break() {
        for quoted in [true, false] {
            let mut csv = String::from("id,text\n");
            for i in 0..2000 {
                if quoted {
                    csv.push_str(&format!("{i},\"  word, other \"\"quoted\"\" #{i} \"\n"));
                } else {
                    csv.push_str(&format!("{i},  word other #{i} \r\n"));
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.csv");
            std::fs::write(&path, &csv).unwrap();
            let mut whole = CsvReader::new(input(csv.as_bytes()), b',', b'"', usize::MAX / 2);
            let all = records_of(&mut whole);
            let mut decided = 0;
            for cut in (9..csv.len() as u64).step_by(97) {
                let cut = cut_after_text(&path, cut, b',', b'"').unwrap();
                let expected: Vec<_> = all.iter().filter(|r| r.0 >= cut).cloned().collect();
                let at = cut - 1;
                let mut near =
                    CsvReader::new(crate::input::open_plain_at(&path, at).unwrap(), b',', b'"', usize::MAX / 2);
                (near.consumed, near.from_start) = (at, false);
                near.before = std::sync::Arc::new(crate::input::LinesBefore::new(&path, at));
                let left = near
                    .skip_to(cut, || quote_before(None, &path, cut, b'"'))
                    .unwrap()
                    .unwrap_or_else(|| panic!("undecided at byte {cut}"));
                assert_eq!(left, !expected.is_empty());
                let got: Vec<_> = records_of(&mut near)
                    .into_iter()
                    .map(|(start, line, fields)| (start, line + near.before.get(), fields))
                    .collect();
                assert_eq!(got, expected, "at byte {cut}");
                decided += 1;
            }
            assert!(decided > 100);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// On any mix of text, delimiters, quotes and line breaks, the reader returns the
        /// csv crate's records, each with the line of its first byte (line feeds before
        /// it, plus one), and calls the last one unclosed exactly when the input ends
        /// inside a quoted field.
        #[test]
        fn records_lines_and_unclosed_quotes_match_a_plain_reading(
            parts in proptest::collection::vec(prop_oneof![
                Just("a"), Just("bc"), Just(","), Just("\""), Just("\"\""), Just("\n"), Just("\r\n"), Just("\r"), Just(" "), Just("é"),
                Just("x,y\n"), Just("x\n\u{feff}z\n"), Just("\"p\",\"q\r\"\"\"\n"), Just("\"a\"b"),
            ], 0..60),
            small_buffer in any::<bool>(),
            bound in prop_oneof![Just(usize::MAX / 2), 0usize..40],
        ) {
            let bytes: Vec<u8> = parts.concat().into_bytes();
            let unclosed = ends_in_a_quote(&bytes);
            let mut reference = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(&bytes[..]);
            let mut expected = Vec::new();
            let mut row = csv::ByteRecord::new();
            let mut last_fields: Vec<Vec<u8>> = Vec::new();
            while reference.read_byte_record(&mut row).unwrap() {
                let at = row.position().map_or(0, csv::Position::byte) as usize;
                let first = bytes[at..].iter().position(|&b| b != b'\n' && b != b'\r').map_or(bytes.len(), |p| at + p);
                let line = 1 + bytes[..first].iter().filter(|&&b| b == b'\n').count() as u64;
                let fields: Vec<Vec<u8>> = row.iter().map(<[u8]>::to_vec).collect();
                last_fields.clone_from(&fields);
                let size = fields.iter().map(Vec::len).sum::<usize>() + 8 * fields.len();
                expected.push((line, if size > bound { None } else { Some(fields) }));
            }
            // The last record is the unclosed one, whatever its size.
            if unclosed && let Some(last) = expected.last_mut() {
                last.1 = Some(last_fields.clone());
            }

            let mut reader = CsvReader::new(input(&bytes), b',', b'"', bound);
            if small_buffer {
                reader.buf = vec![0; 3].into_boxed_slice();
            }
            let mut got = Vec::new();
            let mut flagged = Vec::new();
            loop {
                let (line, fields, is_unclosed) = match reader.read().unwrap() {
                    CsvRead::Record { line } => (line, Some(reader.record().iter().map(<[u8]>::to_vec).collect()), false),
                    CsvRead::Unclosed { line } => {
                        let fields: Vec<Vec<u8>> = reader.record().iter().map(<[u8]>::to_vec).collect();
                        // Read past when too large (the line feed given at the end
                        // counted): then nothing of it is kept.
                        let size = last_fields.iter().map(Vec::len).sum::<usize>() + 8 * last_fields.len() + 1;
                        prop_assert_eq!(fields.is_empty(), size > bound);
                        (line, Some(if fields.is_empty() { last_fields.clone() } else { fields }), true)
                    }
                    CsvRead::TooLarge { line } => (line, None, false),
                    CsvRead::End => break,
                };
                got.push((line, fields));
                flagged.push(is_unclosed);
            }
            prop_assert_eq!(&got, &expected, "{:?} bound {}", String::from_utf8_lossy(&bytes), bound);
            let last_unclosed = flagged.last().copied().unwrap_or(false);
            prop_assert_eq!(last_unclosed, unclosed, "{:?}", String::from_utf8_lossy(&bytes));
            prop_assert!(flagged.iter().rev().skip(1).all(|f| !f), "only the last record can be unclosed");
        }
    }
}
