//! Weave's built-in steps, and the [`registry`] through which pipeline files name them.
//!
//! Each step kind is a [`StepKind`](weave_core::StepKind): a name, a shape, its keys and a
//! constructor that reads them from the pipeline file. The text and JSON functions that
//! the steps are made of are public too, so that benchmarks and custom steps reuse them.
//!
//! The pure transforms (cleaning, dedup, augment and the rule-based noisers, validation,
//! the dataset operations) are this crate's own. Cargo features add the kinds of the
//! crates beside it to [`registry`]:
//! - `io` (on by default): the loaders and exporters of weave-io (`load_csv`,
//!   `export_jsonl`...). weave-io itself is always a dependency: `generate`'s slot files
//!   and `augment`'s pattern files are read with its reader.
//! - `parquet` (on by default): `load_parquet` and `export_parquet`, and the arrow and
//!   parquet crates (weave-io's feature of the same name).
//! - `llm` (on by default): `llm_generate`, `llm_judge` and the LLM noisers of `augment`,
//!   from weave-llm, with its HTTP client and its answer cache (weave-cache).
//!
//! ```
//! let registry = weave_steps::registry();
//! assert!(registry.get("clean").is_some());
//! assert_eq!(registry.get("load_csv").is_some(), cfg!(feature = "io"));
//! ```
#![deny(missing_docs)]

/// A batch as an Arrow record batch and back (the `parquet` feature).
#[cfg(feature = "parquet")]
pub use weave_io::arrow;
pub use weave_io::{
    ExportCsv, ExportJson, ExportJsonl, LoadCsv, LoadJson, LoadJsonl, LoadText, MAX_BATCH_SIZE, write_json_str,
    write_jsonl, write_value,
};
#[cfg(feature = "parquet")]
pub use weave_io::{ExportParquet, LoadParquet};
#[cfg(feature = "llm")]
pub use weave_llm::{LlmAugment, LlmGenerate, LlmJudge, requests_in_flight, settle_requests};

mod augment;
mod clean;
mod concat;
mod dataset;
mod dedup;
mod exchange;
#[cfg(test)]
mod golden;
mod language;
mod llm;
#[cfg(all(test, feature = "llm"))]
mod llm_tests;
mod near_dedup;
mod noise;
mod pii;
mod quality;
mod spill;
mod text;
mod tokens;
mod validate;

pub use augment::Augment;
pub use clean::Clean;
pub use concat::Concat;
pub use dataset::{Compare, Fields, Filter, Generate, Mix, Sample, Split};
pub use dedup::{Dedup, KeyHasher, KeySet};
pub use near_dedup::NearDedup;
pub use noise::{
    CaseNoise, Frequency, LocalShuffle, Noiser, PatternNoiser, PatternSet, PunctuationNoise, Rng, Scratch, Severity,
    Typos, WhitespaceNoise, WordDropout, changed_words, hash_bytes, record_seed,
};
pub use text::{collapse_into, lowercase_into, trim_collapse_into, trim_into};
pub use validate::{Coherence, CoherenceScorer, Validate};

// The file reader and the source's batch size, which `generate` (slot files) and
// `augment` (pattern files) read with as the loaders do.
use weave_core::missing_field;
use weave_io::{MAX_RECORD_BYTES, batch_size, input};

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

/// The text column `name` of `batch`, for a step of kind `kind` that reads text: `None` when
/// every value is null, an error naming the field when it holds something else or is not
/// in the data.
fn text_column<'b>(
    batch: &'b weave_core::Batch,
    name: &str,
    kind: &str,
) -> Result<Option<&'b weave_core::StrColumn>, weave_core::StepError> {
    match batch.column(name) {
        Some(weave_core::Column::Str(c)) => Ok(Some(c)),
        Some(weave_core::Column::Null(_)) => Ok(None),
        Some(other) => Err(weave_core::StepError::fatal(format!(
            "field `{name}` holds {} values; `{kind}` reads text",
            other.data_type()
        ))),
        None => Err(missing_field(batch, name)),
    }
}

/// `batch` without the rows that have a reason in `reasons` (one per row; `None` keeps
/// it), each dropped through `ctx`: counted under its reason, and kept for the exclusion
/// file as the step wrote it when the step has one.
fn drop_rows(
    batch: weave_core::Batch,
    reasons: &[Option<&str>],
    ctx: &mut weave_core::StepContext,
) -> weave_core::Batch {
    if reasons.iter().all(Option::is_none) {
        return batch;
    }
    for (row, reason) in reasons.iter().enumerate() {
        if let Some(reason) = reason {
            ctx.drop_record(reason, || batch.row(row).to_record());
        }
    }
    let keep: Vec<bool> = reasons.iter().map(Option::is_none).collect();
    batch.filter(&keep)
}

/// A registry holding every built-in step kind.
pub fn registry() -> weave_core::Registry {
    let mut r = weave_core::Registry::new();
    for kind in [
        &clean::KIND,
        &augment::KIND,
        &dedup::KIND,
        &validate::KIND,
        &near_dedup::KIND,
        &concat::KIND,
        &dataset::GENERATE_KIND,
        &dataset::MIX_KIND,
        &dataset::SPLIT_KIND,
        &dataset::FIELDS_KIND,
        &dataset::FILTER_KIND,
        &pii::KIND,
        &quality::KIND,
        &dataset::SAMPLE_KIND,
        &dataset::COMPARE_KIND,
        &language::KIND,
        &tokens::KIND,
    ] {
        r.register(weave_core::StepKind::clone(kind));
    }
    #[cfg(feature = "io")]
    weave_io::register(&mut r);
    #[cfg(feature = "llm")]
    weave_llm::register(&mut r);
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

    /// Ends a stateful step's input as the executor does: `finish`, then `more` until it
    /// has let out everything it held.
    pub(crate) fn finish(
        t: &mut dyn weave_core::StatefulTransform,
        ctx: &mut weave_core::StepContext,
        out: &mut Vec<weave_core::Batch>,
    ) -> Result<(), weave_core::StepError> {
        t.finish(ctx, out)?;
        while t.more(ctx, out)? {}
        Ok(())
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

    /// Runs a transform of `kind` written as `config` on `records`, keeping the records it
    /// drops (as with an exclusion file), and returns its output and its context.
    pub(crate) fn run_transform(
        kind: &str,
        config: &str,
        records: &[weave_core::Record],
    ) -> (weave_core::Batch, weave_core::StepContext) {
        let Step::Transform(t) = build_step(kind, config) else { panic!("{kind} is not a transform") };
        let mut ctx = weave_core::StepContext::new(kind, 0, 0, Default::default()).keeping_dropped(true);
        let out =
            t.apply(&weave_core::Batch::from_records(records), &mut ctx).unwrap_or_else(|e| panic!("{kind}: {e}"));
        (out, ctx)
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
}
