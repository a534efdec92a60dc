//! The `load_jsonl` and `export_jsonl` steps.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use weave_core::{
    Batch, BatchBuilder, CanonicalConfig, Params, Rejected, Shape, Sink, Source, Step, StepContext, StepError,
    StepInfo, StepKind, Value,
};

use crate::json::write_jsonl;
use crate::output::AtomicOutput;

/// The `load_jsonl` kind.
pub(crate) const LOAD_KIND: StepKind = StepKind {
    name: "load_jsonl",
    shape: Shape::Source,
    summary: "read a JSON Lines file (one object per line), streaming, in batches",
    keys: &["path", "batch_size"],
    build: build_load,
};

/// The `export_jsonl` kind.
pub(crate) const EXPORT_KIND: StepKind = StepKind {
    name: "export_jsonl",
    shape: Shape::Sink,
    summary: "write records as JSON Lines; the file appears whole when the run succeeds",
    keys: &["path"],
    build: build_export,
};

/// Reads a JSON Lines file: one object per line, blank lines skipped. A line that is not a
/// JSON object, or not UTF-8, is rejected with its line number.
#[derive(Debug)]
pub struct LoadJsonl {
    path: PathBuf,
    batch_size: usize,
    config: CanonicalConfig,
    reader: Option<BufReader<crate::input::Input>>,
    line_no: u64,
    line: Vec<u8>,
}

fn build_load(p: &Params) -> Option<Step> {
    let path = p.required_path("path", "the JSONL file to read");
    let batch_size = crate::batch_size(p);
    if p.has_errors() {
        return None;
    }
    Some(Step::Source(Box::new(LoadJsonl {
        path: path?,
        batch_size,
        config: p.canonical(&["batch_size"]),
        reader: None,
        line_no: 0,
        line: Vec::new(),
    })))
}

impl StepInfo for LoadJsonl {
    fn kind(&self) -> &str {
        LOAD_KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_read(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
}

impl Source for LoadJsonl {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        if self.reader.is_none() {
            let f = crate::input::open(&self.path)?;
            self.reader = Some(BufReader::with_capacity(1 << 20, f));
        }
        let Some(reader) = self.reader.as_mut() else { return Ok(None) };
        let mut b = BatchBuilder::new();
        while b.len() < self.batch_size {
            self.line.clear();
            let n = reader.read_until(b'\n', &mut self.line).map_err(|e| {
                StepError::environment(format!("cannot read {}:{}", self.path.display(), self.line_no + 1), e)
            })?;
            if n == 0 {
                break;
            }
            self.line_no += 1;
            let origin = || Some(format!("{}:{}", self.path.display(), self.line_no));
            let mut text = self.line.as_slice();
            if self.line_no == 1 {
                text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
            }
            let Ok(text) = std::str::from_utf8(text) else {
                ctx.reject(Rejected { reason: "line is not valid UTF-8".into(), record: None, origin: origin() });
                continue;
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Map(m)) => b.push_row(m.iter().map(|(k, v)| (k.as_str(), v.as_ref()))),
                Ok(other) => ctx.reject(Rejected {
                    reason: format!("expected a JSON object, found {}", other.type_name()),
                    record: None,
                    origin: origin(),
                }),
                Err(e) => ctx.reject(Rejected { reason: format!("invalid JSON: {e}"), record: None, origin: origin() }),
            }
        }
        Ok(if b.is_empty() { None } else { Some(b.finish()) })
    }
}

/// Writes records as JSON Lines into a temporary file beside the target, renamed into
/// place on commit: readers never see a half-written file.
#[derive(Debug)]
pub struct ExportJsonl {
    out: AtomicOutput,
    config: CanonicalConfig,
    buf: Vec<u8>,
}

fn build_export(p: &Params) -> Option<Step> {
    let path = p.required_path("path", "the JSONL file to write")?;
    Some(Step::Sink(Box::new(ExportJsonl { out: AtomicOutput::new(path), config: p.canonical(&[]), buf: Vec::new() })))
}

impl StepInfo for ExportJsonl {
    fn kind(&self) -> &str {
        EXPORT_KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_written(&self) -> Vec<PathBuf> {
        vec![self.out.path().to_path_buf()]
    }
}

impl Sink for ExportJsonl {
    fn write(&mut self, batch: &Batch, _ctx: &mut StepContext) -> Result<(), StepError> {
        self.buf.clear();
        write_jsonl(batch, &mut self.buf);
        self.out.write_all(&self.buf)
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

    #[test]
    fn load_then_export_round_trips_and_rejects_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(
            &input,
            b"\xef\xbb\xbf{\"a\": 1, \"t\": \"x\"}\n\n[1]\n{bad\n{\"t\": \"y\", \"z\": [1]}\r\n\xff\n",
        )
        .unwrap();
        let Step::Source(mut load) = build_step("load_jsonl", &format!("path = {:?}", input.to_str().unwrap())) else {
            panic!()
        };
        let output = dir.path().join("sub/out.jsonl");
        let Step::Sink(mut export) = build_step("export_jsonl", &format!("path = {:?}", output.to_str().unwrap()))
        else {
            panic!()
        };
        let mut ctx = StepContext::new("s", 0, 0, Default::default());
        while let Some(b) = load.next_batch(&mut ctx).unwrap() {
            export.write(&b, &mut ctx).unwrap();
            assert!(!output.exists(), "output must not appear before commit");
        }
        export.commit(&mut ctx).unwrap();
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            "{\"a\":1,\"t\":\"x\",\"z\":null}\n{\"a\":null,\"t\":\"y\",\"z\":[1]}\n"
        );
        let rej: Vec<String> = ctx
            .take_rejected()
            .into_iter()
            .map(|r| format!("{} {}", r.origin.unwrap().rsplit(':').next().unwrap(), r.reason))
            .collect();
        assert_eq!(rej.len(), 3);
        assert_eq!(rej[0], "3 expected a JSON object, found list");
        assert!(rej[1].starts_with("4 invalid JSON"), "{}", rej[1]);
        assert_eq!(rej[2], "6 line is not valid UTF-8");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn abort_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        let Step::Sink(mut export) = build_step("export_jsonl", &format!("path = {:?}", output.to_str().unwrap()))
        else {
            panic!()
        };
        let mut ctx = StepContext::new("s", 0, 0, Default::default());
        export.write(&Batch::from_records(&[weave_core::Record::new().with("a", 1i64)]), &mut ctx).unwrap();
        export.abort();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
