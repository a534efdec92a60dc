//! The `load_jsonl` and `export_jsonl` steps.

use std::path::PathBuf;

use weave_core::{
    Batch, BatchBuilder, CanonicalConfig, JsonText, Params, Rejected, Shape, Source, Step, StepContext, StepError,
    StepInfo, StepKind, Value,
};

use crate::input::Lines;
use crate::json::{NonFinite, write_objects};
use crate::output::{Export, Format, OutputSpec};

/// The `load_jsonl` kind.
pub(crate) static LOAD_KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "load_jsonl",
        Shape::Source,
        "read JSON Lines files (one object per line), streaming, in batches",
        ["path", "batch_size", "batch_bytes", "max_record_bytes"],
        build_load,
    )
});

/// The `export_jsonl` kind.
pub(crate) static EXPORT_KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "export_jsonl",
        Shape::Sink,
        "write records as JSON Lines (gzip/zstd, split into parts, partitioned by fields); files appear whole when the run succeeds",
        crate::output::KEYS,
        build_export,
    )
});

/// Reads JSON Lines files (one, or every file a glob matches, in order): one object per
/// line, blank lines skipped. A line that is not a JSON object, or not UTF-8, is rejected
/// with its file and line number.
#[derive(Debug)]
pub struct LoadJsonl {
    paths: Vec<PathBuf>,
    batch: crate::BatchLimit,
    config: CanonicalConfig,
    lines: Lines,
    /// A record's fields, reused.
    fields: Vec<(String, Value)>,
}

fn build_load(p: &Params) -> Option<Step> {
    let paths = crate::input::input_paths(p, "the JSONL file to read, or a glob pattern");
    let config = crate::input::config(p, paths.as_deref().unwrap_or_default());
    let batch = crate::BatchLimit::read(p);
    let max_record = crate::max_record_bytes(p);
    if p.has_errors() {
        return None;
    }
    let paths = paths?;
    Some(Step::Source(Box::new(LoadJsonl {
        lines: Lines::new(paths.clone(), max_record).with_shard(p.context().shard()),
        fields: Vec::new(),
        paths,
        batch,
        config,
    })))
}

impl StepInfo for LoadJsonl {
    fn fields_vary(&self, _input: bool) -> bool {
        // A JSON record has the keys it has: they may vary from record to record.
        true
    }

    fn kind(&self) -> &str {
        &LOAD_KIND.name
    }

    /// 2: values as they were read: nested fields in order (they were sorted), integers
    /// exact at any size, ints and floats in one field each as it came.
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

/// Why a JSON text is not a record.
#[derive(Debug)]
pub(crate) enum NotAnObject {
    /// It is JSON, but this type of value.
    Found(&'static str),
    /// It is not JSON.
    Invalid(serde_json::Error),
}

/// Parses one JSON object and appends it to `b` as a row: the one way the JSON loaders
/// turn objects into records, so that they agree on fields and types (the builder adds a
/// field when a record first has it, with nulls before, and widens a column's type when
/// records disagree, as [`weave_core::Column::push`] says). Values are read exactly
/// ([`Value::fields_from_json`]): fields keep their order, integers their digits.
/// `fields` is a buffer the caller reuses from record to record.
pub(crate) fn push_object(
    b: &mut BatchBuilder,
    text: &str,
    fields: &mut Vec<(String, Value)>,
) -> Result<(), NotAnObject> {
    match Value::fields_from_json(text, fields) {
        Ok(JsonText::Object) => {
            b.push_row(fields.iter().map(|(k, v)| (k.as_str(), v.as_ref())));
            Ok(())
        }
        Ok(JsonText::Other(t)) => Err(NotAnObject::Found(t)),
        Err(e) => Err(NotAnObject::Invalid(e)),
    }
}

impl Source for LoadJsonl {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        let mut b = BatchBuilder::new();
        let mut bytes = 0;
        while !self.batch.full(b.len(), bytes) {
            let Some(line) = self.lines.next_line(ctx)? else { break };
            let text = line.text.trim();
            if text.is_empty() {
                continue;
            }
            let reason = match push_object(&mut b, text, &mut self.fields) {
                Ok(()) => {
                    bytes += text.len();
                    continue;
                }
                Err(NotAnObject::Found(t)) => format!("expected a JSON object, found {t}"),
                Err(NotAnObject::Invalid(e)) => format!("invalid JSON: {e}"),
            };
            let origin = Some(line.origin());
            ctx.reject(Rejected { reason, record: None, origin });
        }
        Ok(if b.is_empty() { None } else { Some(b.finish()) })
    }
}

/// Writes records as JSON Lines: one file, or parts split by rows or bytes and partitioned
/// by fields, compressed by the extension, all written under temporary names and moved
/// into place on commit (see `output.rs`).
#[derive(Debug)]
pub struct ExportJsonl {
    out: Export<Jsonl>,
    config: CanonicalConfig,
}

/// JSON Lines: an object and a newline per record.
#[derive(Debug, Default)]
struct Jsonl {
    nulled: NonFinite,
}

impl Format for Jsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn rows(&mut self, batch: &Batch, out: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<(), StepError> {
        write_objects(batch, out, b"", b"\n", &mut self.nulled, |end| ends.push(end));
        Ok(())
    }

    fn report(&mut self, ctx: &mut StepContext) {
        self.nulled.report(ctx, "JSON");
    }
}

fn build_export(p: &Params) -> Option<Step> {
    let spec = OutputSpec::read(p, "the JSONL file to write")?;
    Some(Step::Sink(Box::new(ExportJsonl { out: Export::new(spec, Jsonl::default()), config: p.canonical() })))
}

crate::output::export_step!(ExportJsonl, EXPORT_KIND, 1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::build_step;

    #[test]
    fn floats_read_as_the_nearest_float_and_survive_an_export() {
        // regression (found by the `load_json` fuzz target): serde_json's fast float
        // parser is off by one unit in the last place for some numbers, so `1.1e29` read as
        // 1.0999999999999999e29, and a file that the JSONL exporter wrote read back with
        // other values than it was written from.
        for (text, nearest) in [("1.1e29", 1.1e29), ("0.11e30", 1.1e29), ("110000000000000000000000000000", 1.1e29)] {
            let mut b = BatchBuilder::new();
            push_object(&mut b, &format!("{{\"x\": {text}}}"), &mut Vec::new()).unwrap();
            let batch = b.finish();
            assert_eq!(batch.row(0).get("x").and_then(|v| v.as_f64()), Some(nearest), "{text}");
            let mut written = Vec::new();
            crate::write_jsonl(&batch, &mut written);
            let mut again = BatchBuilder::new();
            push_object(&mut again, std::str::from_utf8(&written).unwrap().trim(), &mut Vec::new()).unwrap();
            assert_eq!(again.finish(), batch, "{text}, written as {}", String::from_utf8_lossy(&written));
        }
    }

    /// `bytes` through load_jsonl (with `extra` keys) → export_jsonl: what the export wrote,
    /// and the context with the rejected records and the figures.
    fn round_trip(bytes: &[u8], extra: &str) -> (String, StepContext) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, bytes).unwrap();
        let Step::Source(mut load) =
            build_step("load_jsonl", &format!("path = {:?}\n{extra}", input.to_str().unwrap()))
        else {
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
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        (std::fs::read_to_string(&output).unwrap(), ctx)
    }

    #[test]
    fn load_then_export_round_trips_and_rejects_bad_lines() {
        let (out, mut ctx) =
            round_trip(b"\xef\xbb\xbf{\"a\": 1, \"t\": \"x\"}\n\n[1]\n{bad\n{\"t\": \"y\", \"z\": [1]}\r\n\xff\n", "");
        assert_eq!(out, "{\"a\":1,\"t\":\"x\",\"z\":null}\n{\"a\":null,\"t\":\"y\",\"z\":[1]}\n");
        let rej: Vec<String> = ctx
            .take_rejected()
            .into_iter()
            .map(|r| format!("{} {}", r.origin.unwrap().rsplit(':').next().unwrap(), r.reason))
            .collect();
        assert_eq!(rej.len(), 3);
        assert_eq!(rej[0], "3 expected a JSON object, found list");
        assert!(rej[1].starts_with("4 invalid JSON"), "{}", rej[1]);
        assert_eq!(rej[2], "6 line is not valid UTF-8");
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

    #[test]
    fn empty_files_missing_fields_and_huge_fields() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jsonl");
        std::fs::write(&empty, b"").unwrap();
        let (rows, rej) =
            crate::tests::read_source(build_step("load_jsonl", &format!("path = {:?}", empty.to_str().unwrap())));
        assert!(rows.is_empty() && rej.is_empty());
        let big = "\u{1F600}".repeat(1 << 20);
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, format!("{{\"a\": 1}}\n{{\"b\": \"{big}\"}}\n{{\"a\": 2.5, \"b\": null}}\n")).unwrap();
        // One batch (a 4 MB record would end a batch of the default 1 MiB).
        let config = format!("path = {:?}\nbatch_bytes = \"16MiB\"", path.to_str().unwrap());
        let (rows, rej) = crate::tests::read_source(build_step("load_jsonl", &config));
        assert!(rej.is_empty());
        // A field a record lacks is null there; ints and floats in one field each stay
        // what they were.
        assert_eq!(rows[0], r#"{"a":1,"b":null}"#);
        assert_eq!(rows[1], format!("{{\"a\":null,\"b\":\"{big}\"}}"));
        assert_eq!(rows[2], r#"{"a":2.5,"b":null}"#);
    }

    // regression: `{"zeta":1,"alpha":{"y":1,"b":2},"mid":3}` came out as
    // `{"alpha":{"b":2,"y":1},"mid":3,"zeta":1}`.
    #[test]
    fn fields_keep_their_order_at_every_depth() {
        let line = "{\"zeta\":1,\"alpha\":{\"y\":1,\"b\":2},\"mid\":3}\n";
        assert_eq!(round_trip(line.as_bytes(), "").0, line);
        // A later record that adds a field adds it at the end; one that lists the fields
        // in another order is written in the order of the first (nested maps keep their own).
        let (out, _) =
            round_trip(b"{\"b\":1,\"a\":{\"z\":1,\"y\":2}}\n{\"a\":{\"y\":3,\"z\":4},\"c\":5,\"b\":6}\n", "");
        assert_eq!(out, "{\"b\":1,\"a\":{\"z\":1,\"y\":2},\"c\":null}\n{\"b\":6,\"a\":{\"y\":3,\"z\":4},\"c\":5}\n");
    }

    // regression: integers past i64 became floats (18446744073709551615 →
    // 1.8446744073709552e19), and 17-digit ints next to a float lost their last digits.
    #[test]
    fn numbers_come_out_as_they_went_in_whatever_the_batches() {
        let text = concat!(
            r#"{"u":18446744073709551615,"big":1000000000000000000000000000000,"neg":-9223372036854775809,"x":12345678901234567,"f":1e+30,"l":[18446744073709551616,0.1]}"#,
            "\n",
            r#"{"u":1,"big":2,"neg":-1,"x":0.5,"f":-0.0,"l":[]}"#,
            "\n",
            r#"{"u":9223372036854775808,"big":-100000000000000000000,"neg":3,"x":12345678901234569,"f":2.5,"l":null}"#,
            "\n"
        );
        for batch in ["batch_size = 1", "batch_size = 2", ""] {
            let (out, mut ctx) = round_trip(text.as_bytes(), batch);
            assert_eq!(out, text, "{batch}");
            assert!(ctx.take_rejected().is_empty() && ctx.take_added_stats().is_empty());
        }
    }

    // JSON has no NaN or infinity: such a float is written as null and counted.
    #[test]
    fn nan_is_written_as_null_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        let Step::Sink(mut export) = build_step("export_jsonl", &format!("path = {:?}", output.to_str().unwrap()))
        else {
            panic!()
        };
        let mut ctx = StepContext::new("s", 0, 0, Default::default());
        let records = [
            weave_core::Record::new().with("x", f64::NAN).with("l", Value::List(vec![Value::Float(f64::INFINITY)])),
            weave_core::Record::new().with("x", 1.5).with("l", Value::Null),
        ];
        export.write(&Batch::from_records(&records), &mut ctx).unwrap();
        export.commit(&mut ctx).unwrap();
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "{\"x\":null,\"l\":[null]}\n{\"x\":1.5,\"l\":null}\n");
        assert_eq!(ctx.take_added_stats(), [("non_finite_as_null".to_owned(), Value::Int(2))]);
    }
}
