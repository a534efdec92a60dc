//! The `load_csv` step: a streaming CSV reader.

use std::path::PathBuf;

use weave_core::{
    Batch, CanonicalConfig, Column, Params, Record, Rejected, Shape, Sink, Source, Step, StepContext, StepError,
    StepInfo, StepKind, StrColumn, ValueRef,
};

use crate::output::{Export, Format, OutputSpec};

/// The `load_csv` kind.
pub(crate) const KIND: StepKind = StepKind {
    name: "load_csv",
    shape: Shape::Source,
    summary: "read a CSV file with a header row, streaming, in batches",
    keys: &["path", "delimiter", "quote", "batch_size"],
    build,
};

/// Reads a CSV file with a header row. Every field is read as a string. Rows with the
/// wrong number of fields or invalid UTF-8 are rejected with their line number (the step's
/// `on_bad_record` policy decides whether the run stops).
#[derive(Debug)]
pub struct LoadCsv {
    path: PathBuf,
    delimiter: u8,
    quote: u8,
    batch_size: usize,
    config: CanonicalConfig,
    state: Option<CsvState>,
}

#[derive(Debug)]
struct CsvState {
    reader: csv::Reader<crate::input::Input>,
    header: Vec<String>,
    record: csv::ByteRecord,
    done: bool,
    /// Bytes of text per column in the last batch: the next batch's buffers start that big,
    /// so that a short file does not hold a full batch's worth of empty capacity.
    hint: Vec<usize>,
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
    let path = p.required_path("path", "the CSV file to read");
    let delimiter = single_byte(p, "delimiter", b',');
    let quote = single_byte(p, "quote", b'"');
    let batch_size = crate::batch_size(p);
    if p.has_errors() {
        return None;
    }
    Some(Step::Source(Box::new(LoadCsv {
        path: path?,
        delimiter,
        quote,
        batch_size,
        config: p.canonical(&["batch_size"]),
        state: None,
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
        vec![self.path.clone()]
    }
}

impl LoadCsv {
    fn open(&self) -> Result<CsvState, StepError> {
        let file = crate::input::open(&self.path)?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
            .quote(self.quote)
            .flexible(true)
            .has_headers(true)
            .from_reader(file);
        let header = match reader.byte_headers() {
            Ok(h) => h.clone(),
            Err(e) => return Err(csv_error(&self.path, e)),
        };
        let mut names = Vec::with_capacity(header.len());
        for (i, h) in header.iter().enumerate() {
            let name = std::str::from_utf8(h).map_err(|_| {
                StepError::fatal(format!(
                    "{}:1: column {} of the header is not valid UTF-8",
                    self.path.display(),
                    i + 1
                ))
            })?;
            if name.is_empty() {
                return Err(StepError::fatal(format!(
                    "{}:1: column {} of the header has no name",
                    self.path.display(),
                    i + 1
                )));
            }
            if names.contains(&name.to_owned()) {
                return Err(StepError::fatal(format!(
                    "{}:1: the header names column `{name}` twice",
                    self.path.display()
                )));
            }
            names.push(name.to_owned());
        }
        let hint = vec![0; names.len()];
        Ok(CsvState { reader, header: names, record: csv::ByteRecord::new(), done: false, hint })
    }
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
        if self.state.is_none() {
            self.state = Some(self.open()?);
        }
        let Some(st) = self.state.as_mut() else { return Ok(None) };
        if st.done {
            return Ok(None);
        }
        let width = st.header.len();
        let rows_hint = if st.hint.iter().any(|&h| h > 0) { self.batch_size } else { self.batch_size.min(256) };
        let mut cols: Vec<StrColumn> = st.hint.iter().map(|&h| StrColumn::with_capacity(rows_hint, h)).collect();
        let mut rows = 0;
        while rows < self.batch_size {
            match st.reader.read_byte_record(&mut st.record) {
                Ok(false) => {
                    st.done = true;
                    break;
                }
                Ok(true) => {}
                Err(e) => return Err(csv_error(&self.path, e)),
            }
            let line = st.record.position().map_or(0, csv::Position::line);
            let origin = || Some(format!("{}:{line}", self.path.display()));
            if st.record.len() != width {
                let reason = format!("expected {width} fields (as in the header), found {}", st.record.len());
                ctx.reject(Rejected { reason, record: Some(raw_record(&st.header, &st.record)), origin: origin() });
                continue;
            }
            // One UTF-8 check for the whole row: its fields are valid when the row is and
            // every field starts and ends on a character boundary. (A check per field, then
            // a conversion per field, was an eighth of the `io` benchmark's time.)
            let text = std::str::from_utf8(st.record.as_slice()).ok().filter(|t| {
                (0..width).all(|i| {
                    st.record.range(i).is_some_and(|r| t.is_char_boundary(r.start) && t.is_char_boundary(r.end))
                })
            });
            let Some(text) = text else {
                let bad = st.record.iter().position(|f| std::str::from_utf8(f).is_err()).unwrap_or_default();
                let reason = format!("field `{}` is not valid UTF-8", st.header[bad]);
                ctx.reject(Rejected { reason, record: Some(raw_record(&st.header, &st.record)), origin: origin() });
                continue;
            };
            for (i, c) in cols.iter_mut().enumerate() {
                // Checked just above: every range is there and on character boundaries.
                c.push(st.record.range(i).and_then(|r| text.get(r)).unwrap_or_default());
            }
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        for (h, c) in st.hint.iter_mut().zip(&cols) {
            *h = c.data().len();
        }
        let schema = std::sync::Arc::new(weave_core::Schema::new(
            st.header.iter().map(|h| weave_core::Field::new(h.clone(), weave_core::DataType::Str)).collect(),
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

impl StepInfo for ExportCsv {
    fn kind(&self) -> &str {
        EXPORT_KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_written(&self) -> Vec<PathBuf> {
        self.out.files_written()
    }
}

impl Sink for ExportCsv {
    fn write(&mut self, batch: &Batch, _ctx: &mut StepContext) -> Result<(), StepError> {
        self.out.write(batch)
    }

    fn commit(&mut self, _ctx: &mut StepContext) -> Result<(), StepError> {
        self.out.commit()
    }

    fn abort(&mut self) {
        self.out.abort();
    }
}

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
}
