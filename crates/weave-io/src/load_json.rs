//! The `load_json` step: files that hold one JSON array of objects, read element by
//! element, so that a file of any size streams through a buffer the size of one element.

use std::io::BufRead;
use std::path::PathBuf;

use weave_core::{
    Batch, BatchBuilder, CanonicalConfig, Params, Rejected, Shape, Source, Step, StepContext, StepError, StepInfo,
    StepKind,
};

use crate::input::Input;
use crate::jsonl::{NotAnObject, push_object};

/// The `load_json` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "load_json",
        Shape::Source,
        "read JSON files that each hold one array of objects, element by element, in batches",
        ["path", "batch_size", "batch_bytes", "max_record_bytes"],
        build,
    )
});

/// Reads files that each hold one JSON array of objects (one file, or every file a glob
/// matches, in order), one element at a time: memory holds one element, never the file.
///
/// Records are made as `load_jsonl` makes them (see [`crate::LoadJsonl`]). An element that
/// is not an object, is not valid JSON or not UTF-8 is a bad record, named by its file,
/// line, column and index. A file that is not one array (empty, another value at the
/// top, something after the closing `]`, or cut short) is an error naming the file and
/// the place.
#[derive(Debug)]
pub struct LoadJson {
    paths: Vec<PathBuf>,
    batch: crate::BatchLimit,
    max_record: usize,
    config: CanonicalConfig,
    /// The next file to open, as an index into `paths`.
    next_file: usize,
    /// The file being read, with its index in `paths`.
    open: Option<(usize, ArrayReader<std::io::BufReader<Input>>)>,
    /// The current element's bytes, reused.
    buf: Vec<u8>,
    /// The current element's fields, reused.
    fields: Vec<(String, weave_core::Value)>,
}

fn build(p: &Params) -> Option<Step> {
    let paths = crate::input::input_paths(p, "the JSON file to read, or a glob pattern");
    let config = crate::input::config(p, paths.as_deref().unwrap_or_default());
    let batch = crate::BatchLimit::read(p);
    let max_record = crate::max_record_bytes(p);
    if p.has_errors() {
        return None;
    }
    Some(Step::Source(Box::new(LoadJson {
        paths: crate::input::whole_files_of(paths?, p.context().shard()),
        batch,
        max_record,
        config,
        next_file: 0,
        open: None,
        buf: Vec::new(),
        fields: Vec::new(),
    })))
}

impl StepInfo for LoadJson {
    fn fields_vary(&self, _input: bool) -> bool {
        // A JSON record has the keys it has: they may vary from record to record.
        true
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    /// 2: values as they were read (see `load_jsonl`'s version 2).
    fn version(&self) -> u32 {
        2
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_read(&self) -> Vec<PathBuf> {
        crate::input::local_files(&self.paths)
    }
}

impl Source for LoadJson {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        let mut b = BatchBuilder::new();
        let mut bytes = 0;
        while !self.batch.full(b.len(), bytes) {
            let (file, reader) = match &mut self.open {
                Some((file, reader)) => (*file, reader),
                None => {
                    let Some(path) = self.paths.get(self.next_file) else { break };
                    let reader = ArrayReader::new(
                        std::io::BufReader::with_capacity(1 << 20, crate::input::open(path)?),
                        self.max_record,
                    );
                    self.next_file += 1;
                    let (file, reader) = self.open.insert((self.next_file - 1, reader));
                    (*file, reader)
                }
            };
            let path = &self.paths[file];
            let element = match reader.next_element(&mut self.buf) {
                Ok(Some(element)) => element,
                Ok(None) => {
                    self.open = None;
                    continue;
                }
                Err(ArrayError::Io(e)) => {
                    return Err(StepError::environment(format!("cannot read {}", path.display()), e));
                }
                Err(ArrayError::Syntax { line, column, message }) => {
                    return Err(StepError::fatal(format!("{}:{line}:{column}: {message}", path.display())));
                }
            };
            let index = element.index;
            let reason = if element.too_large {
                crate::too_large(&format!("element {index}"), self.max_record)
            } else {
                match std::str::from_utf8(&self.buf) {
                    Err(_) => format!("element {index} is not valid UTF-8"),
                    Ok(text) => match push_object(&mut b, text, &mut self.fields) {
                        Ok(()) => {
                            bytes += text.len();
                            continue;
                        }
                        Err(NotAnObject::Found(t)) => format!("element {index}: expected a JSON object, found {t}"),
                        Err(NotAnObject::Invalid(e)) => {
                            let (line, column) = element.position_of(&self.buf, &e);
                            let message = e.to_string();
                            let message = message.split(" at line ").next().unwrap_or_default();
                            format!("element {index}: invalid JSON: {message} at {line}:{column}")
                        }
                    },
                }
            };
            let origin = Some(format!("{}:{}:{}", path.display(), element.line, element.column));
            ctx.reject(Rejected { reason, record: None, origin });
        }
        Ok(if b.is_empty() { None } else { Some(b.finish()) })
    }
}

/// Where the reader is in the file's one array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// After `[`: an element or `]` comes next.
    First,
    /// After an element: `,` or `]` comes next.
    Next,
    /// After the closing `]` (and the check that nothing follows it).
    Done,
}

/// Why the array cannot be read on.
#[derive(Debug)]
pub(crate) enum ArrayError {
    /// The reader failed.
    Io(std::io::Error),
    /// The file is not one JSON array; `line` and `column` count from 1, columns in
    /// characters.
    Syntax { line: u64, column: u64, message: String },
}

impl From<std::io::Error> for ArrayError {
    fn from(e: std::io::Error) -> Self {
        ArrayError::Io(e)
    }
}

/// Where an element starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Element {
    /// Its index in the array, from 0.
    pub(crate) index: u64,
    /// The line of its first byte, from 1.
    pub(crate) line: u64,
    /// The column of its first byte, from 1, in characters.
    pub(crate) column: u64,
    /// It is larger than the reader's bound: it was read past, and only its first bytes
    /// are in the buffer.
    pub(crate) too_large: bool,
}

impl Element {
    /// The file's line and column of the place a JSON error in this element's `bytes` points
    /// at (serde_json counts from the element's start, columns in bytes).
    fn position_of(&self, bytes: &[u8], e: &serde_json::Error) -> (u64, u64) {
        let (mut line, mut column) = (self.line, self.column);
        let mut rest = bytes;
        for _ in 1..e.line() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    rest = &rest[nl + 1..];
                    line += 1;
                    column = 1;
                }
                None => break,
            }
        }
        let before = &rest[..e.column().saturating_sub(1).min(rest.len())];
        column += before.iter().filter(|&&b| b & 0xC0 != 0x80).count() as u64;
        (line, column)
    }
}

/// Reads one JSON array element by element, checking the array's own syntax (brackets,
/// commas, what comes before and after) and handing each element's bytes over unparsed.
///
/// An element ends where its brackets balance (strings and escapes are skipped), or, for
/// a plain value, at the next comma, `]` or whitespace; what it holds is for the caller's
/// parser to judge, so that one bad element is one bad record and the array reads on.
#[derive(Debug)]
pub(crate) struct ArrayReader<R> {
    reader: R,
    state: State,
    /// The place of the next byte.
    line: u64,
    column: u64,
    /// The next element's index.
    index: u64,
    /// The most bytes of an element held (`max_record_bytes`).
    max: usize,
    /// Where an element's bytes past `max` go, one chunk at a time, to count its place.
    spill: Vec<u8>,
}

impl<R: BufRead> ArrayReader<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        ArrayReader { reader, state: State::Start, line: 1, column: 1, index: 0, max, spill: Vec::new() }
    }

    fn syntax(&self, message: impl Into<String>) -> ArrayError {
        ArrayError::Syntax { line: self.line, column: self.column, message: message.into() }
    }

    /// The next byte, not consumed.
    fn peek(&mut self) -> Result<Option<u8>, ArrayError> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    /// Consumes one byte that is not a newline.
    fn bump(&mut self, b: u8) {
        self.reader.consume(1);
        if b & 0xC0 != 0x80 {
            self.column += 1;
        }
    }

    /// Skips JSON whitespace; the byte after it, not consumed, or `None` at the end.
    fn skip_whitespace(&mut self) -> Result<Option<u8>, ArrayError> {
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(None);
            }
            let mut n = 0;
            for &b in chunk {
                match b {
                    b'\n' => {
                        self.line += 1;
                        self.column = 1;
                    }
                    b' ' | b'\t' | b'\r' => self.column += 1,
                    _ => break,
                }
                n += 1;
            }
            let all = n == chunk.len();
            self.reader.consume(n);
            if !all {
                return self.peek();
            }
        }
    }

    /// The next element's bytes into `buf` (cleared first) and where it starts, or `None`
    /// after the array's closing `]`.
    pub(crate) fn next_element(&mut self, buf: &mut Vec<u8>) -> Result<Option<Element>, ArrayError> {
        buf.clear();
        if self.state == State::Start {
            self.skip_bom()?;
            match self.skip_whitespace()? {
                Some(b'[') => {
                    self.bump(b'[');
                    self.state = State::First;
                }
                None => return Err(self.syntax("the file is empty; expected a JSON array of objects, `[{...}, ...]`")),
                Some(b'{') => {
                    return Err(self.syntax(
                        "expected a JSON array of objects, found an object; \
                         for one object per line, use load_jsonl",
                    ));
                }
                Some(b) => return Err(self.syntax(format!("expected a JSON array of objects, found {}", describe(b)))),
            }
        }
        loop {
            let next = self.skip_whitespace()?;
            match (self.state, next) {
                (State::Done, _) => return Ok(None),
                (_, None) => {
                    return Err(self.syntax(format!(
                        "the file ends inside the array, after {} element{}, with no closing `]` (is it cut short?)",
                        self.index,
                        if self.index == 1 { "" } else { "s" }
                    )));
                }
                (State::First | State::Next, Some(b']')) => {
                    self.bump(b']');
                    self.state = State::Done;
                    if let Some(b) = self.skip_whitespace()? {
                        return Err(self.syntax(format!("unexpected {} after the array's closing `]`", describe(b))));
                    }
                    return Ok(None);
                }
                (State::Next, Some(b',')) => {
                    self.bump(b',');
                    if self.skip_whitespace()? == Some(b']') {
                        return Err(self.syntax("`]` after a comma: the array has a trailing comma"));
                    }
                    self.state = State::First;
                }
                (State::Next, Some(b)) => {
                    return Err(self.syntax(format!(
                        "expected `,` or `]` after element {}, found {}",
                        self.index - 1,
                        describe(b)
                    )));
                }
                (State::First, Some(b',')) => return Err(self.syntax("expected an element, found `,`")),
                (State::First, Some(first)) => {
                    let mut element =
                        Element { index: self.index, line: self.line, column: self.column, too_large: false };
                    element.too_large = self.scan_element(first, buf, &element)? > self.max;
                    self.index += 1;
                    self.state = State::Next;
                    return Ok(Some(element));
                }
                (State::Start, Some(_)) => return Err(self.syntax("the array has not started")),
            }
        }
    }

    /// Skips a UTF-8 byte-order mark at the start of the file.
    fn skip_bom(&mut self) -> Result<(), ArrayError> {
        for expected in [0xEF, 0xBB, 0xBF] {
            match self.peek()? {
                Some(b) if b == expected => self.reader.consume(1),
                // A partial mark is not UTF-8, and the caller reports the byte it stops at.
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Copies one element, which starts with `first`, into `buf`.
    fn scan_element(&mut self, first: u8, buf: &mut Vec<u8>, element: &Element) -> Result<usize, ArrayError> {
        let bracketed = matches!(first, b'{' | b'[');
        let (mut depth, mut in_string, mut escaped) = (0u64, false, false);
        let mut size = 0;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Err(ArrayError::Syntax {
                    line: self.line,
                    column: self.column,
                    message: format!(
                        "the file ends inside element {}, which starts at {}:{} (is it cut short?)",
                        element.index, element.line, element.column
                    ),
                });
            }
            let mut n = 0;
            let mut done = false;
            while n < chunk.len() {
                if in_string {
                    if escaped {
                        escaped = false;
                        n += 1;
                        continue;
                    }
                    // Most of an element is string: skip to its next quote or backslash.
                    match memchr::memchr2(b'"', b'\\', &chunk[n..]) {
                        None => n = chunk.len(),
                        Some(at) => {
                            n += at;
                            if chunk[n] == b'"' {
                                in_string = false;
                            } else {
                                escaped = true;
                            }
                            n += 1;
                        }
                    }
                    continue;
                }
                match chunk[n] {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    // Closes nothing of this element: it belongs to what comes after.
                    b'}' | b']' if depth == 0 => done = true,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 && bracketed {
                            n += 1;
                            done = true;
                        }
                    }
                    b',' | b' ' | b'\t' | b'\r' | b'\n' if depth == 0 => done = true,
                    _ => {}
                }
                if done {
                    break;
                }
                n += 1;
            }
            size += n;
            // Held while within the bound; past it, only its place is followed.
            if buf.len() <= self.max {
                buf.extend_from_slice(&chunk[..n]);
                self.reader.consume(n);
                self.advance(&buf[buf.len() - n..]);
            } else {
                let mut spill = std::mem::take(&mut self.spill);
                spill.clear();
                spill.extend_from_slice(&chunk[..n]);
                self.reader.consume(n);
                self.advance(&spill);
                self.spill = spill;
            }
            if done {
                return Ok(size);
            }
        }
    }

    /// Moves the place past `bytes`: lines counted at `\n`, columns in characters.
    fn advance(&mut self, bytes: &[u8]) {
        // Counting in whole slices rather than byte by byte in the scan: memchr and the
        // compiler use vector instructions.
        let chars = |b: &[u8]| b.iter().filter(|&&b| (b as i8) >= -0x40).count() as u64;
        match memchr::memrchr(b'\n', bytes) {
            None => self.column += chars(bytes),
            Some(last) => {
                self.line += memchr::memchr_iter(b'\n', bytes).count() as u64;
                self.column = 1 + chars(&bytes[last + 1..]);
            }
        }
    }
}

/// A byte as an error message shows it.
fn describe(b: u8) -> String {
    match b {
        b'!'..=b'~' => format!("`{}`", b as char),
        _ => format!("byte 0x{b:02x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, read_source, source_error};
    use std::io::Read;

    /// Reads `bytes` as a file with `load_json`, two records a batch: the records as JSON,
    /// the rejected ones as `line:column: reason`.
    fn load(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        std::fs::write(&path, bytes).unwrap();
        let step = build_step("load_json", &format!("path = {:?}\nbatch_size = 2", path.to_str().unwrap()));
        let (rows, rejected) = read_source(step);
        let prefix = format!("{}:", path.display());
        (rows, rejected.iter().map(|r| r.strip_prefix(&prefix).unwrap_or(r).to_owned()).collect())
    }

    /// The error reading `bytes` stops with, its file shown as `in.json`.
    fn error(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        std::fs::write(&path, bytes).unwrap();
        let err = source_error(build_step("load_json", &format!("path = {:?}", path.to_str().unwrap())));
        assert_eq!(err.origin(), weave_core::ErrorOrigin::User, "{err}");
        err.to_string().replace(&path.display().to_string(), "in.json")
    }

    #[test]
    fn objects_become_records_exactly_as_load_jsonl_makes_them() {
        let objects = [
            r#"{"a": 1, "t": "x"}"#,
            r#"{"t": "y", "z": [1, {"k": null}]}"#,
            r#"{"a": 2.5, "t": "é😀 \"]}[{,\\\n"}"#,
            r#"{"z": {"deep": [[], [{}]]}, "a": null}"#,
        ];
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("in.jsonl");
        std::fs::write(&jsonl, objects.join("\n")).unwrap();
        let json = dir.path().join("in.json");
        std::fs::write(&json, format!("[{}]", objects.join(",\n  "))).unwrap();
        let batches = |kind: &str, path: &std::path::Path| {
            let Step::Source(mut s) = build_step(kind, &format!("path = {:?}", path.to_str().unwrap())) else {
                panic!()
            };
            let mut ctx = StepContext::new("load", 0, 0, Default::default());
            let mut out = Vec::new();
            while let Some(b) = s.next_batch(&mut ctx).unwrap() {
                out.push(b);
            }
            assert!(ctx.take_rejected().is_empty());
            out
        };
        let from_json = batches("load_json", &json);
        assert_eq!(from_json, batches("load_jsonl", &jsonl));
        // `a` holds ints and floats, each kept as it came.
        assert_eq!(from_json[0].schema().to_string(), "{a: any, t: string, z: any}");
        assert_eq!(from_json[0].row(2).get_str("t"), Some("é😀 \"]}[{,\\\n"));
    }

    #[test]
    fn empty_arrays_whitespace_and_a_bom_give_no_records() {
        for bytes in [&b"[]"[..], b"  [ \r\n ]  \n", b"\xef\xbb\xbf[\n]"] {
            assert_eq!(load(bytes), (vec![], vec![]), "{}", String::from_utf8_lossy(bytes));
        }
        let (rows, rej) = load(b"\xef\xbb\xbf[{\"a\": 1}]");
        assert_eq!((rows, rej), (vec![r#"{"a":1}"#.to_owned()], vec![]));
    }

    #[test]
    fn bad_elements_are_bad_records_named_by_place_and_index() {
        let (rows, rej) =
            load(b"[\n  {\"a\": 1},\n  [1, 2],\n  \"s\",\n  {\"a\": tru},\n  {\"b\": \"\xff\"}, 7,\n  {\"a\": 3}\n]\n");
        assert_eq!(rows, [r#"{"a":1}"#, r#"{"a":3}"#]);
        assert_eq!(
            rej,
            [
                "3:3: element 1: expected a JSON object, found list",
                "4:3: element 2: expected a JSON object, found string",
                "5:3: element 3: invalid JSON: expected ident at 5:12",
                "6:3: element 4 is not valid UTF-8",
                "6:15: element 5: expected a JSON object, found int",
            ]
        );
    }

    #[test]
    fn an_element_over_max_record_bytes_is_read_past_with_its_place_kept() {
        let big = format!("{{\"t\": \"{}\n\"}}", "é".repeat(100_000));
        let bytes = format!("[{{\"n\": 1}},\n {big}, {{\"n\": 2}},\n  {{\"n\": 3, \"x\": [1, 2]}}]");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.json");
        std::fs::write(&path, bytes).unwrap();
        let config = format!("path = {:?}\nmax_record_bytes = \"20KiB\"", path.to_str().unwrap());
        let (rows, rejected) = read_source(build_step("load_json", &config));
        assert_eq!(rows, [r#"{"n":1,"x":null}"#, r#"{"n":2,"x":null}"#, r#"{"n":3,"x":[1,2]}"#]);
        assert_eq!(
            rejected,
            [format!(
                "{}:2:2: element 1 is larger than `max_record_bytes` (20 KiB); it was skipped without being read into memory",
                path.display()
            )]
        );
        // The place of what follows is still right (the line break inside the skipped
        // element counted): a bad element after it is named by it.
        let bytes = format!("[{big},\n  {{\"n\": }}]");
        std::fs::write(&path, bytes).unwrap();
        let (_, rejected) = read_source(build_step("load_json", &config));
        assert_eq!(rejected.len(), 2);
        assert!(rejected[1].starts_with(&format!("{}:3:3: element 1: invalid JSON", path.display())), "{rejected:?}");
    }

    #[test]
    fn a_file_that_is_not_one_array_is_an_error_with_its_place() {
        let cases: [(&[u8], &str); 12] = [
            (b"", "1:1: the file is empty; expected a JSON array of objects, `[{...}, ...]`"),
            (b"  \n ", "2:2: the file is empty; expected a JSON array of objects, `[{...}, ...]`"),
            (
                b"{\"a\": 1}",
                "1:1: expected a JSON array of objects, found an object; for one object per line, use load_jsonl",
            ),
            (b"\xffx", "1:1: expected a JSON array of objects, found byte 0xff"),
            (b"[{\"a\": 1}] x", "1:12: unexpected `x` after the array's closing `]`"),
            (b"[{\"a\": 1}]\n\xff", "2:1: unexpected byte 0xff after the array's closing `]`"),
            (b"[{\"a\": 1}][]", "1:11: unexpected `[` after the array's closing `]`"),
            (
                b"[{\"a\": 1},",
                "1:11: the file ends inside the array, after 1 element, with no closing `]` (is it cut short?)",
            ),
            (
                b"[{\"a\": 1},\n {\"a\": \"x",
                "2:10: the file ends inside element 1, which starts at 2:2 (is it cut short?)",
            ),
            (b"[{\"a\": 1} {\"a\": 2}]", "1:11: expected `,` or `]` after element 0, found `{`"),
            (b"[{\"a\": 1},]", "1:11: `]` after a comma: the array has a trailing comma"),
            (b"[,{\"a\": 1}]", "1:2: expected an element, found `,`"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(error(bytes), format!("in.json:{expected}"), "{}", String::from_utf8_lossy(bytes));
        }
    }

    /// A JSON array of `n` objects, one per line, made as it is read.
    struct Generated {
        n: u64,
        next: u64,
        chunk: Vec<u8>,
        at: usize,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.chunk.len() {
                self.chunk.clear();
                self.at = 0;
                if self.next == 0 {
                    self.chunk.extend_from_slice(b"[\n");
                }
                match self.next.cmp(&self.n) {
                    std::cmp::Ordering::Less => {
                        let sep = if self.next + 1 < self.n { ",\n" } else { "\n]\n" };
                        self.chunk.extend(format!("{{\"i\": {}, \"t\": \"é{{[\\\"\"}}{sep}", self.next).bytes());
                    }
                    std::cmp::Ordering::Equal if self.n == 0 => self.chunk.extend_from_slice(b"]"),
                    _ => return Ok(0),
                }
                self.next += 1;
            }
            let n = buf.len().min(self.chunk.len() - self.at);
            buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn a_large_array_streams_through_a_small_buffer() {
        let n = 200_000;
        let source = Generated { n, next: 0, chunk: Vec::new(), at: 0 };
        // Seven bytes at a time: every element, string and escape is split across reads.
        let mut reader = ArrayReader::new(std::io::BufReader::with_capacity(7, source), usize::MAX);
        let mut buf = Vec::new();
        let mut b = BatchBuilder::new();
        let mut last = None;
        while let Some(element) = reader.next_element(&mut buf).unwrap() {
            if element.index % 50_000 == 0 {
                push_object(&mut b, std::str::from_utf8(&buf).unwrap(), &mut Vec::new()).unwrap();
            }
            last = Some(element);
        }
        assert_eq!(last, Some(Element { index: n - 1, line: n + 1, column: 1, too_large: false }));
        // Memory held one element at a time, never the array (about 9 MB here).
        assert!(buf.capacity() < 128, "the element buffer grew to {}", buf.capacity());
        let records: Vec<String> = b.finish().to_records().iter().map(|r| r.to_string()).collect();
        assert_eq!(records.len(), 4);
        assert_eq!(records[3], r#"{"i":150000,"t":"é{[\""}"#);
    }

    #[test]
    fn huge_elements_and_a_glob_that_names_the_file_of_each_bad_element() {
        let dir = tempfile::tempdir().unwrap();
        let big = "ß".repeat(4 << 20);
        std::fs::write(dir.path().join("a.json"), format!("[{{\"t\": \"{big}\"}}]")).unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, b"[{\"t\": \"x\"},\n 1]").unwrap();
        std::fs::write(dir.path().join("b.json.gz"), e.finish().unwrap()).unwrap();
        let step = build_step("load_json", &format!("path = {:?}", dir.path().join("*.json*").to_str().unwrap()));
        let (rows, rej) = read_source(step);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].len(), big.len() + r#"{"t":""}"#.len());
        assert_eq!(rows[1], r#"{"t":"x"}"#);
        let b = dir.path().join("b.json.gz").display().to_string();
        assert_eq!(rej, [format!("{b}:2:2: element 1: expected a JSON object, found int")]);
    }
}
