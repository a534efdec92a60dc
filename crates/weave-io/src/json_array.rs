//! The `export_json` step: one JSON array of objects.

use weave_core::{Batch, CanonicalConfig, Params, Shape, Step, StepContext, StepError, StepKind};

use crate::json::{NonFinite, write_objects, write_pretty_objects};
use crate::output::{Export, Format, OutputSpec};

/// The `export_json` kind.
pub(crate) static EXPORT_KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "export_json",
        Shape::Sink,
        "write records as one JSON array of objects (gzip/zstd, split into parts, partitioned by fields); files appear whole when the run succeeds",
        ["path", "compression", "level", "max_rows", "max_bytes", "max_partitions", "manifest", "pretty"],
        build,
    )
});

/// Writes records as one JSON array of objects, streamed as the batches come (nothing is
/// held back until the end). Compact by default, an object per line:
///
/// ```text
/// [
/// {"id":1,"text":"a"},
/// {"id":2,"text":"b"}
/// ]
/// ```
///
/// With `pretty = true`, laid out as serde_json's pretty printer does (two spaces a
/// level). No records give `[]`; every part of a split output is an array of its own.
#[derive(Debug)]
pub struct ExportJson {
    out: Export<JsonArray>,
    config: CanonicalConfig,
}

/// A JSON array of objects.
#[derive(Debug)]
struct JsonArray {
    pretty: bool,
    nulled: NonFinite,
}

impl Format for JsonArray {
    fn name(&self) -> &'static str {
        "json"
    }

    fn rows(&mut self, batch: &Batch, out: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<(), StepError> {
        // Every element comes after a comma and a newline; a file's first leaves the comma
        // out (`lead`).
        if self.pretty {
            write_pretty_objects(batch, out, b",\n", &mut self.nulled, |end| ends.push(end));
        } else {
            write_objects(batch, out, b",\n", b"", &mut self.nulled, |end| ends.push(end));
        }
        Ok(())
    }

    fn report(&mut self, ctx: &mut StepContext) {
        self.nulled.report(ctx, "JSON");
    }

    fn start(&self, out: &mut Vec<u8>) {
        out.push(b'[');
    }

    fn lead(&self) -> usize {
        1
    }

    fn end(&self, records: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(if records == 0 { b"]\n" } else { b"\n]\n" });
    }
}

fn build(p: &Params) -> Option<Step> {
    let spec = OutputSpec::read(p, "the JSON file to write");
    let pretty = p.bool("pretty").unwrap_or(false);
    let spec = spec?;
    Some(Step::Sink(Box::new(ExportJson {
        out: Export::new(spec, JsonArray { pretty, nulled: NonFinite::default() }),
        config: p.canonical(),
    })))
}

crate::output::export_step!(ExportJson, EXPORT_KIND, 1);
