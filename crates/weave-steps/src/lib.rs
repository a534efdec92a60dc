//! Weave's built-in steps, and the [`registry`] through which pipeline files name them.
//!
//! Each step kind is a [`StepKind`](weave_core::StepKind): a name, a shape, its keys and a
//! constructor that reads them from the pipeline file. The text and JSON functions that
//! the steps are made of are public too, so that benchmarks and custom steps reuse them.
//!
//! ```
//! let registry = weave_steps::registry();
//! assert!(registry.get("load_csv").is_some());
//! ```
#![deny(missing_docs)]

mod arrow;
mod augment;
mod clean;
mod concat;
mod csv;
mod dataset;
mod dedup;
mod input;
mod json;
mod json_array;
mod jsonl;
mod lines;
mod llm;
mod load_json;
mod near_dedup;
mod noise;
mod output;
mod parquet_footer;
mod parquet_io;
mod text;
mod validate;

pub use augment::Augment;
pub use clean::Clean;
pub use concat::Concat;
pub use csv::{ExportCsv, LoadCsv};
pub use dataset::{Compare, Filter, Generate, Mix, Sample, Split};
pub use dedup::{Dedup, KeyHasher, KeySet};
pub use json::{write_json_str, write_jsonl, write_value};
pub use json_array::ExportJson;
pub use jsonl::{ExportJsonl, LoadJsonl};
pub use lines::LoadText;
pub use llm::{LlmAugment, LlmGenerate, LlmJudge, requests_in_flight, settle_requests};
pub use load_json::LoadJson;
pub use near_dedup::NearDedup;
pub use noise::{
    CaseNoise, Frequency, LocalShuffle, Noiser, PatternNoiser, PatternSet, PunctuationNoise, Rng, Scratch, Severity,
    Typos, WhitespaceNoise, WordDropout, changed_words, hash_bytes, record_seed,
};
pub use parquet_io::{ExportParquet, LoadParquet};
pub use text::{collapse_into, lowercase_into, trim_collapse_into, trim_into};
pub use validate::{Coherence, CoherenceScorer, Validate};

/// The error for a field the step was told to use but the data does not have.
fn missing_field(batch: &weave_core::Batch, name: &str) -> weave_core::StepError {
    let known: Vec<&str> = batch.schema().names().collect();
    weave_core::StepError::fatal(format!("field `{name}` is not in the data (fields: {})", known.join(", ")))
}

/// A number written in the pipeline file (a bound, a value to equal), as drop reasons and
/// messages name it: `18`, `0.5` (a float as Rust prints one: `3` for 3.0).
fn number_label(v: &weave_core::Value) -> String {
    match v {
        weave_core::Value::Float(x) => x.to_string(),
        v => v.to_string(),
    }
}

/// The regular expression written at `item` (the value of key `what`), or `None` with
/// the problem recorded at its place.
fn regex_at(p: &weave_core::Params, item: &weave_core::ConfItem, what: &str) -> Option<regex::Regex> {
    match &item.value {
        weave_core::ConfValue::Str(s) => match regex::Regex::new(s) {
            Ok(re) => Some(re),
            Err(e) => {
                // The regex crate's message draws the pattern over several lines; its last
                // line says what is wrong, and the diagnostic already points at the place.
                let text = e.to_string();
                let why = text.lines().last().unwrap_or_default().trim_start_matches("error: ").to_owned();
                p.error_at(item, format!("`{what}` is not a valid regular expression: {why}"));
                None
            }
        },
        other => {
            p.error_at(item, format!("`{what}` must be a regular expression (a string), not {}", other.type_name()));
            None
        }
    }
}

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
fn batch_size(p: &weave_core::Params) -> usize {
    p.u64_in("batch_size", 1, MAX_BATCH_SIZE).unwrap_or(2048) as usize
}

/// The default of `max_record_bytes`.
const MAX_RECORD_BYTES: usize = 256 << 20;

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

/// A registry holding every built-in step kind.
pub fn registry() -> weave_core::Registry {
    let mut r = weave_core::Registry::new();
    for kind in [
        &csv::KIND,
        &jsonl::LOAD_KIND,
        &load_json::KIND,
        &lines::KIND,
        &clean::KIND,
        &augment::KIND,
        &dedup::KIND,
        &validate::KIND,
        &near_dedup::KIND,
        &concat::KIND,
        &dataset::GENERATE_KIND,
        &dataset::MIX_KIND,
        &dataset::SPLIT_KIND,
        &dataset::FILTER_KIND,
        &dataset::SAMPLE_KIND,
        &dataset::COMPARE_KIND,
        &llm::GENERATE_KIND,
        &llm::JUDGE_KIND,
        &jsonl::EXPORT_KIND,
        &csv::EXPORT_KIND,
        &json_array::EXPORT_KIND,
        &parquet_io::LOAD_KIND,
        &parquet_io::EXPORT_KIND,
    ] {
        r.register(weave_core::StepKind::clone(kind));
    }
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
        Params::new(table, SourceFile::new(file, config), "step", Some("s".into()))
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
