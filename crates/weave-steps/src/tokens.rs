//! The `tokens` step: counts the tokens of a text field with one of OpenAI's BPE encodings
//! (tiktoken-rs, whose tables are bundled in the crate: nothing is downloaded at build or
//! run time), writes the count to a field, and can drop records with too few or too many.
//!
//! The text is encoded as ordinary text: a special token's spelling (`<|endoftext|>`) in
//! the data counts as the tokens of its characters, as Python tiktoken's
//! `encode_ordinary` counts it, since data is not a prompt's control sequence.
//!
//! An encoding's tables take a few hundred milliseconds to read into their hash maps, so
//! each is read once per process, by the first batch that needs it, and shared by every
//! step and thread after that.

use std::sync::{Arc, LazyLock};

use tiktoken_rs::CoreBPE;
use weave_core::{
    Batch, CanonicalConfig, Column, Params, PrimitiveColumn, Shape, Step, StepContext, StepError, StepInfo, StepKind,
    Transform,
};

/// The `tokens` kind.
pub(crate) static KIND: LazyLock<StepKind> = LazyLock::new(|| {
    StepKind::new(
        "tokens",
        Shape::Transform,
        "count the tokens of a text field with an OpenAI BPE encoding (o200k_base, cl100k_base...; bundled, no download) into a field, the total in the figures, and drop records by min_tokens / max_tokens",
        ["field", "count_field", "encoding", "min_tokens", "max_tokens"],
        build,
    )
});

/// The reasons dropped records are counted and excluded under.
const TOO_FEW: &str = "fewer tokens than `min_tokens`";
const TOO_MANY: &str = "more tokens than `max_tokens`";

/// The encodings, by the name the pipeline file gives.
const ENCODINGS: [&str; 4] = ["o200k_base", "cl100k_base", "p50k_base", "r50k_base"];

/// Each encoding's tables, read on first use. A failure (which the bundled tables should
/// never give) is kept as its message and reported by every batch that needs them.
type Loaded = LazyLock<Result<CoreBPE, String>>;
static O200K: Loaded = LazyLock::new(|| tiktoken_rs::o200k_base().map_err(|e| e.to_string()));
static CL100K: Loaded = LazyLock::new(|| tiktoken_rs::cl100k_base().map_err(|e| e.to_string()));
static P50K: Loaded = LazyLock::new(|| tiktoken_rs::p50k_base().map_err(|e| e.to_string()));
static R50K: Loaded = LazyLock::new(|| tiktoken_rs::r50k_base().map_err(|e| e.to_string()));

/// The encoding named `name` (one of [`ENCODINGS`]), read if it was not yet.
fn encoding(name: &str) -> Result<&'static CoreBPE, StepError> {
    let loaded: &'static Loaded = match name {
        "cl100k_base" => &CL100K,
        "p50k_base" => &P50K,
        "r50k_base" => &R50K,
        _ => &O200K,
    };
    loaded.as_ref().map_err(|e| StepError::internal(format!("the {name} encoding's bundled tables do not load: {e}")))
}

/// Counts tokens: see the module's documentation and the README.
#[derive(Debug)]
pub(crate) struct Tokens {
    field: String,
    count_field: String,
    encoding: &'static str,
    min_tokens: Option<u64>,
    max_tokens: Option<u64>,
    config: CanonicalConfig,
}

fn build(p: &Params) -> Option<Step> {
    let field = p.str("field").unwrap_or_else(|| "text".to_owned());
    let count_field = p.str("count_field").unwrap_or_else(|| "tokens".to_owned());
    if let Some(item) = p.item("count_field") {
        if count_field.is_empty() {
            p.error_at(item, "`count_field` is empty: name the field to write");
        } else if count_field == field {
            p.error_at(item, format!("`count_field` is `{field}`, the text field itself, which it would overwrite"));
        }
    }
    let encoding = p.choice("encoding", &ENCODINGS).unwrap_or(ENCODINGS[0]);
    let min_tokens = p.u64("min_tokens");
    let max_tokens = p.u64("max_tokens");
    if let (Some(lo), Some(hi), Some(item)) = (min_tokens, max_tokens, p.item("max_tokens"))
        && hi < lo
    {
        p.error_at(item, format!("`max_tokens` ({hi}) is below `min_tokens` ({lo}), so every record would be dropped"));
    }
    if p.has_errors() {
        return None;
    }
    Some(Step::Transform(Arc::new(Tokens {
        field,
        count_field,
        encoding,
        min_tokens,
        max_tokens,
        config: p.canonical(),
    })))
}

impl StepInfo for Tokens {
    fn fields_read(&self) -> Vec<String> {
        vec![self.field.clone()]
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn estimated_cost(&self) -> f64 {
        // BPE merges cost several times a cleaning pass per byte.
        5.0
    }
}

impl Transform for Tokens {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let texts = crate::text_column(batch, &self.field, &KIND.name)?;
        let bpe = encoding(self.encoding)?;
        let n = batch.len();
        let mut counts = PrimitiveColumn::<i64>::new();
        let mut drop: Vec<Option<&'static str>> = vec![None; n];
        let (mut kept_tokens, mut dropped_tokens) = (0u64, 0u64);
        for (row, reason) in drop.iter_mut().enumerate() {
            // A null text has no tokens: its count is null, and the filters read it as 0.
            let count = match texts.and_then(|t| t.get(row)) {
                Some(text) => {
                    let c = bpe.encode_ordinary(text).len() as u64;
                    counts.push(i64::try_from(c).unwrap_or(i64::MAX));
                    c
                }
                None => {
                    counts.push_null();
                    0
                }
            };
            *reason = if self.min_tokens.is_some_and(|m| count < m) {
                Some(TOO_FEW)
            } else if self.max_tokens.is_some_and(|m| count > m) {
                Some(TOO_MANY)
            } else {
                None
            };
            if reason.is_some() {
                dropped_tokens += count;
            } else {
                kept_tokens += count;
            }
        }
        ctx.add_stat("tokens", kept_tokens);
        if self.min_tokens.is_some() || self.max_tokens.is_some() {
            ctx.add_stat("tokens_dropped", dropped_tokens);
        }
        let out = batch
            .with_column(&self.count_field, Column::Int(counts))
            .map_err(|e| StepError::internal(e.to_string()))?;
        Ok(crate::drop_rows(out, &drop, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::{Record, Value};

    fn run(config: &str, records: &[Record]) -> (Batch, StepContext) {
        crate::tests::run_transform("tokens", config, records)
    }

    /// The strings whose counts are checked below.
    const TEXTS: [&str; 9] = [
        "hello world",
        "tiktoken is great!",
        "The quick brown fox jumps over the lazy dog.",
        "Der Zug hat wieder Verspätung.",
        "火车又晚点了。",
        "    def f(x):\n        return x ** 2  # square\n",
        "<|endoftext|> is a special token's spelling",
        "Visit https://example.com/a?b=1&c=2 — 3.14159, ☃ and 🦀!",
        "",
    ];

    // The counts of the Python `tiktoken` package, version 0.14.0, for TEXTS:
    // `len(tiktoken.get_encoding(name).encode_ordinary(text))`. Its tables were the files
    // bundled in tiktoken-rs 0.12.1, put in TIKTOKEN_CACHE_DIR (the machine has no other
    // network than package registries), which tiktoken accepted after checking each
    // against the SHA-256 it pins: so the tables are OpenAI's, and the counts agreeing
    // shows that the splitting and merging agree too.
    #[test]
    fn counts_agree_with_python_tiktoken_for_every_encoding() {
        let expected: [(&str, [i64; 9]); 4] = [
            ("o200k_base", [2, 6, 10, 9, 7, 15, 13, 28, 0]),
            ("cl100k_base", [2, 6, 10, 9, 9, 15, 13, 28, 0]),
            ("p50k_base", [2, 6, 10, 13, 16, 16, 13, 29, 0]),
            ("r50k_base", [2, 6, 10, 13, 16, 24, 13, 29, 0]),
        ];
        let records: Vec<Record> = TEXTS.iter().map(|t| Record::new().with("text", *t)).collect();
        for (encoding, counts) in expected {
            let (out, mut ctx) = run(&format!("encoding = \"{encoding}\""), &records);
            let got: Vec<i64> = (0..out.len()).map(|i| out.row(i).get("tokens").unwrap().as_int().unwrap()).collect();
            assert_eq!(got, counts, "{encoding}");
            let total: i64 = counts.iter().sum();
            assert_eq!(ctx.take_added_stats(), [("tokens".to_owned(), Value::Int(total))], "{encoding}");
        }
    }

    #[test]
    fn min_and_max_tokens_drop_records_with_reasons_and_the_figures_split_the_total() {
        let mut records: Vec<Record> = TEXTS.iter().map(|t| Record::new().with("text", *t)).collect();
        records.push(Record::new().with("text", Value::Null));
        let (out, mut ctx) =
            run("count_field = \"n\"\nencoding = \"cl100k_base\"\nmin_tokens = 6\nmax_tokens = 13", &records);
        let kept: Vec<&str> = (0..out.len()).map(|i| out.row(i).get_str("text").unwrap()).collect();
        assert_eq!(kept, [TEXTS[1], TEXTS[2], TEXTS[3], TEXTS[4], TEXTS[6]]);
        let mut dropped = ctx.take_dropped();
        dropped.sort();
        // "hello world" (2), the empty text and the null one (0) are too few; the code (15)
        // and the URL (28) too many.
        assert_eq!(dropped, [(TOO_FEW.to_owned(), 3), (TOO_MANY.to_owned(), 2)]);
        let excluded = ctx.take_excluded();
        assert_eq!(excluded[0].0, TOO_FEW);
        assert_eq!(excluded[0].1.get("n"), Some(&Value::Int(2)), "the record as written, with its count");
        let null = excluded.iter().find(|(_, r)| r.get("text") == Some(&Value::Null)).expect("the null text");
        assert_eq!(null.1.get("n"), Some(&Value::Null), "a null text has a null count");
        let mut stats = ctx.take_added_stats();
        stats.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            stats,
            [
                ("tokens".to_owned(), Value::Int(6 + 10 + 9 + 9 + 13)),
                ("tokens_dropped".to_owned(), Value::Int(2 + 15 + 28))
            ]
        );
    }

    #[test]
    fn bad_settings_are_errors_at_their_keys() {
        check_build_errors(
            "tokens",
            "encoding = \"gpt2\"\nmin_tokens = 10\nmax_tokens = 5\ncount_field = \"text\"",
            &[
                "4:15 `count_field` is `text`, the text field itself, which it would overwrite",
                "1:12 `encoding` must be one of \"o200k_base\", \"cl100k_base\", \"p50k_base\", \"r50k_base\", not \"gpt2\"",
                "3:14 `max_tokens` (5) is below `min_tokens` (10), so every record would be dropped",
            ],
        );
        check_build_errors("tokens", "min_tokens = -1", &["1:14 `min_tokens` must not be negative"]);
        let Step::Transform(t) = build_step("tokens", "") else { panic!() };
        let mut ctx = StepContext::new("tokens", 0, 0, Default::default());
        let e = t.apply(&Batch::from_records(&[Record::new().with("text", 1.5)]), &mut ctx).unwrap_err();
        assert!(e.to_string().contains("field `text` holds float values; `tokens` reads text"), "{e}");
    }
}
