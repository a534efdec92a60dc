//! The `load_csv` step: a streaming CSV reader.

use std::path::PathBuf;

use weave_core::{
    Batch, CanonicalConfig, Column, Params, Record, Rejected, Shape, Source, Step, StepContext, StepError, StepInfo,
    StepKind, StrColumn, ValueRef,
};

use crate::output::{Export, Format, OutputSpec};

/// The `load_csv` kind.
pub(crate) const KIND: StepKind = StepKind {
    name: "load_csv",
    shape: Shape::Source,
    summary: "read CSV files with a header row, streaming, in batches",
    keys: &["path", "delimiter", "quote", "batch_size"],
    build,
};

/// Reads CSV files with a header row (one file, or every file a glob matches, in order;
/// they must all have the same header). Every field is read as a string. Rows with the
/// wrong number of fields or invalid UTF-8 are rejected with their file and line number
/// (the step's `on_bad_record` policy decides whether the run stops).
#[derive(Debug)]
pub struct LoadCsv {
    paths: Vec<PathBuf>,
    delimiter: u8,
    quote: u8,
    batch_size: usize,
    config: CanonicalConfig,
    /// The next file to open, as an index into `paths`.
    next_file: usize,
    /// The file being read.
    open: Option<OpenCsv>,
    /// The header, from the first file that has one, and that file: every file must match it.
    header: Option<(Vec<String>, usize)>,
    record: csv::ByteRecord,
    /// Bytes of text per column in the last batch: the next batch's buffers start that big,
    /// so that a short file does not hold a full batch's worth of empty capacity.
    hint: Vec<usize>,
}

#[derive(Debug)]
struct OpenCsv {
    /// Its index in `paths`.
    file: usize,
    reader: csv::Reader<LineIndex<crate::input::Input>>,
}

/// A reader that notes where the line breaks it passes on are, so that a record's line can
/// be found from its byte offset. The csv crate counts lines itself, but one short after
/// each CRLF line ending (BurntSushi/rust-csv#395), and CRLF is common in CSV files.
#[derive(Debug)]
struct LineIndex<R> {
    inner: R,
    /// Bytes read so far.
    offset: u64,
    /// The carriage returns and line feeds read and not yet behind a record:
    /// (offset, whether it is a line feed).
    pending: std::collections::VecDeque<(u64, bool)>,
    /// Line feeds before the first pending one.
    passed: u64,
    /// Where the parser is in the CSV syntax, followed byte by byte alongside it, so that
    /// a quoted field still open at the end of the file is seen: the csv crate reads the
    /// rest of the file into it without a word, which would lose every row after it.
    quotes: QuoteState,
    /// The input has ended.
    eof: bool,
}

/// The CSV syntax as far as quoting goes: the start of a field, inside an unquoted one,
/// inside a quoted one, or just after a quote inside a quoted one (an end, or the first
/// half of a doubled quote).
#[derive(Debug, Clone, Copy)]
struct QuoteState {
    quote: u8,
    delimiter: u8,
    state: u8,
    /// Where the quoted field that is open began.
    opened_at: u64,
}

impl QuoteState {
    const START: u8 = 0;
    const UNQUOTED: u8 = 1;
    const QUOTED: u8 = 2;
    const QUOTE_IN_QUOTED: u8 = 3;

    /// Follows `data`, which starts at byte `offset` of the input. Only quotes, delimiters
    /// and line feeds change anything but "inside a field", so the scan jumps from one to
    /// the next (a carriage return counts as a field byte: the line feed after it ends the
    /// field all the same).
    fn scan(&mut self, data: &[u8], offset: u64) {
        let mut last = 0;
        for at in memchr::memchr3_iter(self.quote, self.delimiter, b'\n', data) {
            if at > last {
                self.ordinary();
            }
            self.step(data[at], offset + at as u64);
            last = at + 1;
        }
        if data.len() > last {
            self.ordinary();
        }
    }

    /// The effect of one or more bytes that are none of quote, delimiter, line feed.
    fn ordinary(&mut self) {
        self.state = match self.state {
            Self::QUOTED => Self::QUOTED,
            _ => Self::UNQUOTED,
        };
    }

    fn step(&mut self, b: u8, at: u64) {
        let end = b == self.delimiter || b == b'\n' || b == b'\r';
        self.state = match self.state {
            Self::START if b == self.quote => {
                self.opened_at = at;
                Self::QUOTED
            }
            Self::START | Self::UNQUOTED if end => Self::START,
            Self::START | Self::UNQUOTED => Self::UNQUOTED,
            Self::QUOTED if b == self.quote => Self::QUOTE_IN_QUOTED,
            Self::QUOTED => Self::QUOTED,
            _ if b == self.quote => Self::QUOTED,
            _ if end => Self::START,
            _ => Self::UNQUOTED,
        };
    }
}

impl<R> LineIndex<R> {
    fn new(inner: R, delimiter: u8, quote: u8) -> Self {
        LineIndex {
            inner,
            offset: 0,
            pending: std::collections::VecDeque::new(),
            passed: 0,
            quotes: QuoteState { quote, delimiter, state: QuoteState::START, opened_at: 0 },
            eof: false,
        }
    }

    /// Where a quoted field began that the file ended inside of, once the input has ended.
    fn unclosed_quote(&self) -> Option<u64> {
        (self.eof && self.quotes.state == QuoteState::QUOTED).then_some(self.quotes.opened_at)
    }

    /// The line (from 1) of the record the parser started at `byte`: records start at a
    /// line's first byte, or at the line break before it (after a CRLF), and blank lines
    /// before a record are skipped as part of it. Records must be asked for in order.
    fn line_at(&mut self, byte: u64) -> u64 {
        while let Some(&(at, lf)) = self.pending.front() {
            if at >= byte {
                break;
            }
            self.passed += u64::from(lf);
            self.pending.pop_front();
        }
        let mut line = self.passed + 1;
        for (expected, &(at, lf)) in (byte..).zip(&self.pending) {
            if at != expected {
                break;
            }
            line += u64::from(lf);
        }
        line
    }
}

impl<R: std::io::Read> std::io::Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        let data = &buf[..n];
        for i in memchr::memchr2_iter(b'\n', b'\r', data) {
            self.pending.push_back((self.offset + i as u64, data[i] == b'\n'));
        }
        self.quotes.scan(data, self.offset);
        self.offset += n as u64;
        Ok(n)
    }
}

fn single_byte(p: &Params, key: &str, default: u8) -> u8 {
    let Some(s) = p.str(key) else { return default };
    match s.as_bytes() {
        [b] => *b,
        _ if s == "\\t" => b'\t',
        _ => {
            if let Some(item) = p.item(key) {
                p.error_at(item, format!("`{key}` must be one ASCII character, such as \",\" or \"\\t\""));
            }
            default
        }
    }
}

fn build(p: &Params) -> Option<Step> {
    let paths = crate::input::input_paths(p, "the CSV file to read, or a glob pattern");
    let delimiter = single_byte(p, "delimiter", b',');
    let quote = single_byte(p, "quote", b'"');
    let batch_size = crate::batch_size(p);
    if p.has_errors() {
        return None;
    }
    Some(Step::Source(Box::new(LoadCsv {
        paths: paths?,
        delimiter,
        quote,
        batch_size,
        config: p.canonical(&["batch_size"]),
        next_file: 0,
        open: None,
        header: None,
        record: csv::ByteRecord::new(),
        hint: Vec::new(),
    })))
}

impl StepInfo for LoadCsv {
    fn kind(&self) -> &str {
        KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_read(&self) -> Vec<PathBuf> {
        self.paths.clone()
    }
}

impl LoadCsv {
    /// Opens the next file that has a header (an empty file has none, and no rows), checks
    /// its header, and makes it the open one. `false` when no file is left.
    fn open_next(&mut self) -> Result<bool, StepError> {
        while let Some(path) = self.paths.get(self.next_file) {
            let file = self.next_file;
            self.next_file += 1;
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(self.delimiter)
                .quote(self.quote)
                .flexible(true)
                .has_headers(true)
                .from_reader(LineIndex::new(crate::input::open(path)?, self.delimiter, self.quote));
            let header = reader.byte_headers().map_err(|e| csv_error(path, e))?;
            if header.is_empty() {
                continue;
            }
            let names = header_names(path, header)?;
            match &self.header {
                None => {
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
            self.open = Some(OpenCsv { file, reader });
            return Ok(true);
        }
        Ok(false)
    }
}

/// The names of a header row, each UTF-8, not empty, and not given twice.
fn header_names(path: &std::path::Path, header: &csv::ByteRecord) -> Result<Vec<String>, StepError> {
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (i, h) in header.iter().enumerate() {
        let name = std::str::from_utf8(h).map_err(|_| {
            StepError::fatal(format!("{}:1: column {} of the header is not valid UTF-8", path.display(), i + 1))
        })?;
        if name.is_empty() {
            return Err(StepError::fatal(format!("{}:1: column {} of the header has no name", path.display(), i + 1)));
        }
        if names.iter().any(|n| n == name) {
            return Err(StepError::fatal(format!("{}:1: the header names column `{name}` twice", path.display())));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

fn csv_error(path: &std::path::Path, e: csv::Error) -> StepError {
    let line = e.position().map_or(String::new(), |p| format!(":{}", p.line()));
    match e.kind() {
        csv::ErrorKind::Io(_) => StepError::environment(format!("cannot read {}{line}", path.display()), e),
        _ => StepError::fatal(format!("{}{line}: {e}", path.display())),
    }
}

impl Source for LoadCsv {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        if self.open.is_none() && !self.open_next()? {
            return Ok(None);
        }
        let Some((header, _)) = &self.header else { return Ok(None) };
        let header = header.clone();
        let width = header.len();
        let rows_hint = if self.hint.iter().any(|&h| h > 0) { self.batch_size } else { self.batch_size.min(256) };
        let mut cols: Vec<StrColumn> = self.hint.iter().map(|&h| StrColumn::with_capacity(rows_hint, h)).collect();
        let mut rows = 0;
        while rows < self.batch_size {
            let Some(open) = self.open.as_mut() else {
                if self.open_next()? {
                    continue;
                }
                break;
            };
            let path = &self.paths[open.file];
            match open.reader.read_byte_record(&mut self.record) {
                Ok(false) => {
                    self.open = None;
                    continue;
                }
                Ok(true) => {}
                Err(e) => return Err(csv_error(path, e)),
            }
            let record = &self.record;
            let line = open.reader.get_mut().line_at(record.position().map_or(0, csv::Position::byte));
            let origin = || Some(format!("{}:{line}", path.display()));
            if let Some(at) = open.reader.get_ref().unclosed_quote()
                && record.position().is_none_or(|p| p.byte() <= at)
            {
                // The last record: its quoted field ran to the end of the file.
                let reason = format!(
                    "a quoted field that starts on line {} is never closed, so the rest of the file would be read into it",
                    open.reader.get_mut().line_at(at),
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
            let text = crate::text::utf8(record.as_slice()).filter(|t| {
                (0..width)
                    .all(|i| record.range(i).is_some_and(|r| t.is_char_boundary(r.start) && t.is_char_boundary(r.end)))
            });
            let Some(text) = text else {
                let bad = record.iter().position(|f| std::str::from_utf8(f).is_err()).unwrap_or_default();
                let reason = format!("field `{}` is not valid UTF-8", header[bad]);
                ctx.reject(Rejected { reason, record: Some(raw_record(&header, record)), origin: origin() });
                continue;
            };
            for (i, c) in cols.iter_mut().enumerate() {
                // Checked just above: every range is there and on character boundaries.
                c.push(record.range(i).and_then(|r| text.get(r)).unwrap_or_default());
            }
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        for (h, c) in self.hint.iter_mut().zip(&cols) {
            *h = c.data().len();
        }
        let schema = std::sync::Arc::new(weave_core::Schema::new(
            header.into_iter().map(|h| weave_core::Field::new(h, weave_core::DataType::Str)).collect(),
        ));
        let columns = cols.into_iter().map(|c| std::sync::Arc::new(Column::Str(c))).collect();
        Batch::new(schema, columns).map(Some).map_err(|e| StepError::internal(e.to_string()))
    }
}

/// A rejected row as a record: fields lossily decoded, extra fields numbered.
fn raw_record(header: &[String], row: &csv::ByteRecord) -> Record {
    row.iter()
        .enumerate()
        .map(|(i, f)| {
            let k = header.get(i).cloned().unwrap_or_else(|| format!("_extra_{}", i + 1 - header.len()));
            (k, String::from_utf8_lossy(f).into_owned())
        })
        .collect()
}

/// The `export_csv` kind.
pub(crate) const EXPORT_KIND: StepKind = StepKind {
    name: "export_csv",
    shape: Shape::Sink,
    summary: "write records as CSV with a header row (gzip/zstd, split into parts, partitioned by fields); files appear whole when the run succeeds",
    keys: &[
        "path",
        "compression",
        "level",
        "max_rows",
        "max_bytes",
        "max_partitions",
        "manifest",
        "delimiter",
        "fields",
    ],
    build: build_export,
};

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
    /// The header row, once the columns are known.
    header: Vec<u8>,
    record: csv::ByteRecord,
    cell: Vec<u8>,
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
        if let Some(extra) = batch.schema().names().find(|n| !fields.iter().any(|f| f == n)) {
            return Err(StepError::fatal(format!(
                "field `{extra}` is not among the CSV columns ({}); list the columns with `fields = [...]`",
                fields.join(", ")
            )));
        }
        let columns: Vec<Option<&Column>> =
            fields.iter().map(|f| batch.schema().index_of(f).map(|c| &*batch.columns()[c])).collect();
        let io = |e: csv::Error| StepError::internal(format!("cannot format a CSV row: {e}"));
        let mut w = csv::WriterBuilder::new().delimiter(self.delimiter).has_headers(false).from_writer(out);
        for r in 0..batch.len() {
            self.record.clear();
            for c in &columns {
                match c.map(|c| c.get(r)) {
                    None | Some(ValueRef::Null) => self.record.push_field(b""),
                    Some(ValueRef::Str(s)) => self.record.push_field(s.as_bytes()),
                    Some(other) => {
                        use std::io::Write as _;
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
}

fn build_export(p: &Params) -> Option<Step> {
    let spec = OutputSpec::read(p, "the CSV file to write");
    let delimiter = single_byte(p, "delimiter", b',');
    let fields = p.str_list("fields");
    if let (Some(f), Some(item)) = (&fields, p.item("fields"))
        && f.is_empty()
    {
        p.error_at(item, "`fields` is empty: name the columns, or leave `fields` out to take the first batch's fields");
    }
    if p.has_errors() {
        return None;
    }
    let mut format =
        Csv { delimiter, fields: None, header: Vec::new(), record: csv::ByteRecord::new(), cell: Vec::new() };
    if let Some(fields) = fields
        && let Err(e) = format.set_fields(fields)
    {
        p.push(weave_core::Diagnostic::error(e.to_string()));
        return None;
    }
    Some(Step::Sink(Box::new(ExportCsv { out: Export::new(spec?, format), config: p.canonical(&["max_partitions"]) })))
}

crate::output::export_step!(ExportCsv, EXPORT_KIND);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::build_step;
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
        assert!(rej[0].starts_with("3: a quoted field that starts on line 3 is never closed"), "{rej:?}");
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
            (&b"a,a\n1,2\n"[..], "the header names column `a` twice"),
            (b"a,\n1,2\n", "column 2 of the header has no name"),
            (b"a,\xff\n1,2\n", "column 2 of the header is not valid UTF-8"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("h.csv");
            std::fs::write(&path, bytes).unwrap();
            let err =
                crate::tests::source_error(build_step("load_csv", &format!("path = {:?}", path.to_str().unwrap())));
            assert_eq!(err.to_string(), format!("{}:1: {message}", path.display()));
        }
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
