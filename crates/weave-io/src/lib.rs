//! Weave's file formats and atomic outputs: the loaders (`load_csv`, `load_jsonl`,
//! `load_json`, `load_text`, `load_parquet`), the exporters (`export_jsonl`, `export_csv`,
//! `export_json`, `export_parquet`), the files they write atomically (a temporary file
//! renamed into place, split and partitioned sets committed whole through a manifest),
//! gzip and zstd, and the input reader the other steps read their files with.
//!
//! Parquet, and the conversion of a [`Batch`](weave_core::Batch) to an Arrow
//! `RecordBatch` and back ([`arrow`]), are behind the `parquet` feature (on by default),
//! which is the only one that pulls the arrow and parquet crates.
//!
//! [`register`] adds this crate's kinds to a registry; `weave_steps::registry()` holds
//! them with the others.
//!
//! ```
//! let mut registry = weave_core::Registry::new();
//! weave_io::register(&mut registry);
//! assert!(registry.get("load_csv").is_some());
//! ```
#![deny(missing_docs)]

#[cfg(feature = "parquet")]
pub mod arrow;
mod csv;
mod csv_fast;
pub mod input;
mod json;
mod json_array;
mod jsonl;
mod lines;
mod load_json;
mod output;
#[cfg(feature = "parquet")]
mod parquet_footer;
#[cfg(feature = "parquet")]
mod parquet_io;
#[cfg(feature = "parquet")]
mod parquet_meta;
#[cfg(feature = "remote")]
mod remote;
#[cfg(not(feature = "remote"))]
#[path = "remote_off.rs"]
mod remote;

pub use csv::{ExportCsv, LoadCsv};
pub use json::{write_json_str, write_jsonl, write_value};
pub use json_array::ExportJson;
pub use jsonl::{ExportJsonl, LoadJsonl};
pub use lines::LoadText;
pub use load_json::LoadJson;
#[cfg(feature = "parquet")]
pub use parquet_io::{ExportParquet, LoadParquet};

use weave_core::missing_field;

/// The largest `batch_size`: a source sizes its columns for a batch up front, so a billion
/// rows would be an allocation that fails before the memory budget could refuse it. Past
/// a few thousand rows a batch is no faster.
pub const MAX_BATCH_SIZE: u64 = 1_000_000;

/// Rows per batch for a source: the `batch_size` key, from 1 to [`MAX_BATCH_SIZE`], 2048 by
/// default.
///
/// Small enough that a batch's text stays in the CPU's caches from one step to the next
/// and that the batches in flight hold little memory (with 8192 rows of the `io` corpus,
/// the pipeline touched twice the memory and its page faults cost a tenth of its time),
/// large enough that the cost per batch (a channel send, an event) is noise.
pub fn batch_size(p: &weave_core::Params) -> usize {
    p.u64_in("batch_size", 1, MAX_BATCH_SIZE).unwrap_or(2048) as usize
}

/// The default of `max_record_bytes`.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// The largest record a text loader holds: the `max_record_bytes` key, 256 MiB by default.
/// A longer record (a line, a CSV record, an element of a JSON array) is a bad record named
/// by its place, and the loader reads past it without holding it, so that a file with no
/// line break, or a CSV quote never closed, cannot take all the memory.
fn max_record_bytes(p: &weave_core::Params) -> usize {
    let n = p.bytes("max_record_bytes").unwrap_or(MAX_RECORD_BYTES as u64);
    if n == 0
        && let Some(item) = p.item("max_record_bytes")
    {
        p.error_at(item, "`max_record_bytes` must be at least 1");
    }
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The reason a record over [`max_record_bytes`] is set aside: `what` is "line",
/// "record"...
fn too_large(what: &str, max: usize) -> String {
    format!(
        "{what} is larger than `max_record_bytes` ({}); it was skipped without being read into memory",
        weave_core::format_bytes(max as u64)
    )
}

/// How big a text loader's batches get: `batch_size` rows, or `batch_bytes` of input
/// (1 MiB by default), whichever comes first; a batch always takes at least one record.
/// The byte bound keeps the memory in flight small when records are large (web pages,
/// documents), where 2048 rows could be tens of megabytes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimit {
    rows: usize,
    bytes: usize,
}

impl BatchLimit {
    /// The `batch_size` and `batch_bytes` keys of `p`.
    fn read(p: &weave_core::Params) -> Self {
        let rows = batch_size(p);
        let bytes = p.bytes("batch_bytes").unwrap_or(1 << 20);
        if bytes == 0
            && let Some(item) = p.item("batch_bytes")
        {
            p.error_at(item, "`batch_bytes` must be at least 1");
        }
        BatchLimit { rows, bytes: usize::try_from(bytes).unwrap_or(usize::MAX) }
    }

    /// Whether a batch of `rows` records and `bytes` bytes is full.
    fn full(self, rows: usize, bytes: usize) -> bool {
        rows >= self.rows || bytes >= self.bytes
    }
}

/// Adds the loaders and exporters to `registry` (with the `parquet` feature,
/// `load_parquet` and `export_parquet` too).
pub fn register(registry: &mut weave_core::Registry) {
    for kind in [
        &csv::KIND,
        &jsonl::LOAD_KIND,
        &load_json::KIND,
        &lines::KIND,
        &jsonl::EXPORT_KIND,
        &csv::EXPORT_KIND,
        &json_array::EXPORT_KIND,
        #[cfg(feature = "parquet")]
        &parquet_io::LOAD_KIND,
        #[cfg(feature = "parquet")]
        &parquet_io::EXPORT_KIND,
    ] {
        registry.register(weave_core::StepKind::clone(kind));
    }
}

/// A registry of this crate's kinds alone, for its tests.
#[cfg(test)]
fn registry() -> weave_core::Registry {
    let mut r = weave_core::Registry::new();
    register(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use weave_core::{ConfTable, Params, SourceFile, Step};

    pub(crate) fn params(config: &str) -> Params {
        params_at(std::path::Path::new("t.toml"), config)
    }

    fn params_at(file: &std::path::Path, config: &str) -> Params {
        let table = ConfTable::parse(config).unwrap_or_else(|e| panic!("bad test TOML: {e:?}"));
        Params::new(table, SourceFile::new(file, config), "step", Some("s".into())).reading_schema()
    }

    /// Builds a step of `kind` from its keys for a run that is `shard` of a job.
    pub(crate) fn build_sharded_step(kind: &str, config: &str, shard: weave_core::Shard) -> Step {
        let k = super::registry().get(kind).cloned().unwrap_or_else(|| panic!("no kind {kind}"));
        let context = weave_core::BuildContext::new(Vec::new(), None).with_shard(Some(shard));
        let p = params_at(std::path::Path::new("t.toml"), config).with_context(std::sync::Arc::new(context));
        let step = (k.build)(&p);
        let diags = p.finish(&k.all_keys());
        assert!(!diags.has_errors(), "{diags}");
        step.unwrap_or_else(|| panic!("{kind} did not build"))
    }

    /// Builds a step of `kind` from its keys, panicking with the diagnostics if it fails.
    pub(crate) fn build_step(kind: &str, config: &str) -> Step {
        build_step_at(kind, std::path::Path::new("t.toml"), config)
    }

    /// Builds a step of `kind` as written in the pipeline file `file` (relative paths
    /// resolve against its folder).
    pub(crate) fn build_step_at(kind: &str, file: &std::path::Path, config: &str) -> Step {
        let k = super::registry().get(kind).cloned().unwrap_or_else(|| panic!("no kind {kind}"));
        let p = params_at(file, config);
        let step = (k.build)(&p);
        let diags = p.finish(&k.all_keys());
        assert!(!diags.has_errors(), "{diags}");
        step.unwrap_or_else(|| panic!("{kind} did not build"))
    }

    /// Checks the errors that building a step of `kind` from `config` reports, as
    /// `line:column message`.
    pub(crate) fn check_build_errors(kind: &str, config: &str, expected: &[&str]) {
        let k = super::registry().get(kind).cloned().unwrap_or_else(|| panic!("no kind {kind}"));
        let p = params(config);
        let _ = (k.build)(&p);
        let diags = p.finish(&k.all_keys());
        let got: Vec<String> = diags
            .0
            .iter()
            .map(|d| {
                let l = d.location.as_ref().map_or("-".into(), |l| format!("{}:{}", l.line, l.column));
                format!("{l} {}", d.message)
            })
            .collect();
        assert_eq!(got, expected, "\n{diags}");
    }

    /// Reads a source to its end: its batches, and its rejected records as
    /// `origin: reason`.
    pub(crate) fn read_batches(step: Step) -> (Vec<weave_core::Batch>, Vec<String>) {
        let Step::Source(mut s) = step else { panic!("not a source") };
        let mut ctx = weave_core::StepContext::new("load", 0, 0, Default::default());
        let mut batches = Vec::new();
        while let Some(b) = s.next_batch(&mut ctx).unwrap_or_else(|e| panic!("{e}")) {
            batches.push(b);
        }
        let rejected = ctx
            .take_rejected()
            .into_iter()
            .map(|r| format!("{}: {}", r.origin.unwrap_or_default(), r.reason))
            .collect();
        (batches, rejected)
    }

    /// Reads a source to its end: its records as JSON, and its rejected records as
    /// `origin: reason`.
    pub(crate) fn read_source(step: Step) -> (Vec<String>, Vec<String>) {
        let (batches, rejected) = read_batches(step);
        (batches.iter().flat_map(|b| b.to_records()).map(|r| r.to_string()).collect(), rejected)
    }

    /// The error a source stops with.
    pub(crate) fn source_error(step: Step) -> weave_core::StepError {
        let Step::Source(mut s) = step else { panic!("not a source") };
        let mut ctx = weave_core::StepContext::new("load", 0, 0, Default::default());
        loop {
            match s.next_batch(&mut ctx) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the source ended without an error"),
                Err(e) => return e,
            }
        }
    }

    // regression: the loaders read `max_record_bytes` only once their other keys were fine,
    // so with another error it was called an unknown key ("did you mean
    // `max_record_bytes`?"), and its own mistake went untold.
    #[test]
    fn every_loader_reports_each_bad_limit_at_once() {
        for kind in ["load_csv", "load_jsonl", "load_json", "load_text"] {
            check_build_errors(
                kind,
                "path = \"x\"\nbatch_size = 0\nmax_record_bytes = \"0\"",
                &["2:14 `batch_size` must be from 1 to 1000000, not 0", "3:20 `max_record_bytes` must be at least 1"],
            );
        }
    }
}
