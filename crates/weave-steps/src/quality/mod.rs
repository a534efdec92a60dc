//! The `quality` step: the Gopher quality, Gopher repetition, C4 and FineWeb quality
//! filters of web-scale pretraining data, with datatrove's default thresholds, on one
//! text field.
//!
//! A step of its own rather than `clean` rules: each filter is a set of rules that share
//! one reading of the document (its words, lines, paragraphs and n-grams, split as
//! datatrove splits English, in [`words`]) and one table of thresholds named as datatrove
//! names them, and C4 rewrites the text it keeps (it drops lines) while the others only
//! judge it. The filters run in the order `filters` lists them, each on the text the one
//! before left; a record that fails a rule is dropped with the reason
//! `"<filter>: <rule> <measure> <op> <threshold>"` (`gopher_repetition: top_2_gram 0.231
//! > 0.2`), counted under `"<filter>: <rule>"`, and each rule's drops are a figure
//! `"<filter>.<rule>"`.

mod filters;
mod words;

use std::sync::{Arc, LazyLock};

use weave_core::{
    Batch, CanonicalConfig, Column, ConfValue, Params, Shape, Step, StepContext, StepError, StepInfo, StepKind,
    StrColumn, Transform,
};

use filters::{C4, C4_LINE_RULES, DUP_RULES, Fail, FineWeb, GopherQuality, GopherRepetition, TOP_RULES};

/// The `quality` kind.
pub(crate) static KIND: LazyLock<StepKind> = LazyLock::new(|| {
    StepKind::new(
        "quality",
        Shape::Transform,
        "drop documents by the Gopher quality, Gopher repetition, C4 and FineWeb filters (datatrove's rules and default thresholds), naming the rule each fails",
        ["field", "filters", "gopher_quality", "gopher_repetition", "c4", "fineweb"],
        build,
    )
});

/// The filters, in the order FineWeb's pipeline runs them (the default order).
const FILTERS: [&str; 4] = ["gopher_repetition", "gopher_quality", "c4", "fineweb"];

/// One filter with its thresholds.
#[derive(Debug, Clone)]
enum Filter {
    GopherRepetition(GopherRepetition),
    GopherQuality(GopherQuality),
    C4(C4),
    FineWeb(FineWeb),
}

impl Filter {
    fn name(&self) -> &'static str {
        match self {
            Filter::GopherRepetition(_) => "gopher_repetition",
            Filter::GopherQuality(_) => "gopher_quality",
            Filter::C4(_) => "c4",
            Filter::FineWeb(_) => "fineweb",
        }
    }
}

/// Drops documents that fail a quality filter: see the module's documentation.
#[derive(Debug)]
pub(crate) struct Quality {
    field: String,
    filters: Vec<Filter>,
    config: CanonicalConfig,
}

/// A threshold: the number written, `false` to turn the rule off, or the default.
fn limit(p: &Params, key: &str, default: Option<f64>) -> Option<f64> {
    let Some(item) = p.item(key) else { return default };
    match &item.value {
        ConfValue::Bool(false) => None,
        ConfValue::Int(i) if *i >= 0 => Some(*i as f64),
        ConfValue::Float(x) if *x >= 0.0 => Some(*x),
        _ => {
            p.error_at(item, format!("`{key}` must be a non-negative number, or false to turn the rule off"));
            default
        }
    }
}

/// A whole-number threshold (a count of words, sentences or characters).
fn count_limit(p: &Params, key: &str, default: Option<u64>) -> Option<u64> {
    let Some(item) = p.item(key) else { return default };
    match &item.value {
        ConfValue::Bool(false) => None,
        ConfValue::Int(i) if *i >= 0 => Some(*i as u64),
        _ => {
            p.error_at(item, format!("`{key}` must be a non-negative integer, or false to turn the rule off"));
            default
        }
    }
}

/// A threshold that cannot be turned off (FineWeb's).
fn number(p: &Params, key: &str, default: f64) -> f64 {
    let Some(item) = p.item(key) else { return default };
    match &item.value {
        ConfValue::Int(i) if *i >= 0 => *i as f64,
        ConfValue::Float(x) if *x >= 0.0 => *x,
        _ => {
            p.error_at(item, format!("`{key}` must be a non-negative number"));
            default
        }
    }
}

fn flag(p: &Params, key: &str, default: bool) -> bool {
    p.bool(key).unwrap_or(default)
}

const GOPHER_QUALITY_KEYS: [&str; 10] = [
    "min_doc_words",
    "max_doc_words",
    "min_avg_word_length",
    "max_avg_word_length",
    "max_symbol_word_ratio",
    "max_bullet_lines_ratio",
    "max_ellipsis_lines_ratio",
    "max_non_alpha_words_ratio",
    "min_stop_words",
    "stop_words",
];
const GOPHER_REPETITION_KEYS: [&str; 13] = [
    "dup_line_frac",
    "dup_para_frac",
    "dup_line_char_frac",
    "dup_para_char_frac",
    "top_2_gram",
    "top_3_gram",
    "top_4_gram",
    "dup_5_gram",
    "dup_6_gram",
    "dup_7_gram",
    "dup_8_gram",
    "dup_9_gram",
    "dup_10_gram",
];
const C4_KEYS: [&str; 9] = [
    "remove_citations",
    "filter_no_terminal_punct",
    "min_num_sentences",
    "min_words_per_line",
    "max_word_length",
    "filter_lorem_ipsum",
    "filter_javascript",
    "filter_curly_bracket",
    "filter_policy",
];
const FINEWEB_KEYS: [&str; 6] = [
    "line_punct_thr",
    "line_punct_exclude_zero",
    "short_line_thr",
    "short_line_length",
    "char_duplicates_ratio",
    "new_line_ratio",
];

fn read_filter(p: &Params, name: &str) -> Filter {
    let sub = p.table(name);
    let Some(t) = sub else {
        return match name {
            "gopher_repetition" => Filter::GopherRepetition(GopherRepetition::default()),
            "gopher_quality" => Filter::GopherQuality(GopherQuality::default()),
            "c4" => Filter::C4(C4::default()),
            _ => Filter::FineWeb(FineWeb::default()),
        };
    };
    let filter = match name {
        "gopher_repetition" => {
            let d = GopherRepetition::default();
            let grams = |rules: &[&'static str], defaults: &[(usize, f64)]| -> Vec<(usize, f64)> {
                rules
                    .iter()
                    .zip(defaults)
                    .filter_map(|(rule, &(n, max))| limit(&t, rule, Some(max)).map(|m| (n, m)))
                    .collect()
            };
            Filter::GopherRepetition(GopherRepetition {
                dup_line_frac: limit(&t, "dup_line_frac", d.dup_line_frac),
                dup_para_frac: limit(&t, "dup_para_frac", d.dup_para_frac),
                dup_line_char_frac: limit(&t, "dup_line_char_frac", d.dup_line_char_frac),
                dup_para_char_frac: limit(&t, "dup_para_char_frac", d.dup_para_char_frac),
                top_n_grams: grams(&TOP_RULES, &d.top_n_grams),
                dup_n_grams: grams(&DUP_RULES, &d.dup_n_grams),
            })
        }
        "gopher_quality" => {
            let d = GopherQuality::default();
            let stop_words = match t.str_list("stop_words") {
                Some(list) => {
                    if list.is_empty()
                        && let Some(item) = t.item("stop_words")
                    {
                        t.error_at(item, "`stop_words` is empty: list the words, or set `min_stop_words = false`");
                    }
                    list
                }
                None => d.stop_words,
            };
            Filter::GopherQuality(GopherQuality {
                min_doc_words: limit(&t, "min_doc_words", d.min_doc_words),
                max_doc_words: limit(&t, "max_doc_words", d.max_doc_words),
                min_avg_word_length: limit(&t, "min_avg_word_length", d.min_avg_word_length),
                max_avg_word_length: limit(&t, "max_avg_word_length", d.max_avg_word_length),
                max_symbol_word_ratio: limit(&t, "max_symbol_word_ratio", d.max_symbol_word_ratio),
                max_bullet_lines_ratio: limit(&t, "max_bullet_lines_ratio", d.max_bullet_lines_ratio),
                max_ellipsis_lines_ratio: limit(&t, "max_ellipsis_lines_ratio", d.max_ellipsis_lines_ratio),
                max_non_alpha_words_ratio: limit(&t, "max_non_alpha_words_ratio", d.max_non_alpha_words_ratio),
                min_stop_words: limit(&t, "min_stop_words", d.min_stop_words),
                stop_words,
            })
        }
        "c4" => {
            let d = C4::default();
            Filter::C4(C4 {
                remove_citations: flag(&t, "remove_citations", d.remove_citations),
                filter_no_terminal_punct: flag(&t, "filter_no_terminal_punct", d.filter_no_terminal_punct),
                min_num_sentences: count_limit(&t, "min_num_sentences", d.min_num_sentences),
                min_words_per_line: count_limit(&t, "min_words_per_line", d.min_words_per_line),
                max_word_length: count_limit(&t, "max_word_length", d.max_word_length),
                filter_lorem_ipsum: flag(&t, "filter_lorem_ipsum", d.filter_lorem_ipsum),
                filter_javascript: flag(&t, "filter_javascript", d.filter_javascript),
                filter_curly_bracket: flag(&t, "filter_curly_bracket", d.filter_curly_bracket),
                filter_policy: flag(&t, "filter_policy", d.filter_policy),
            })
        }
        _ => {
            let d = FineWeb::default();
            Filter::FineWeb(FineWeb {
                line_punct_thr: number(&t, "line_punct_thr", d.line_punct_thr),
                line_punct_exclude_zero: flag(&t, "line_punct_exclude_zero", d.line_punct_exclude_zero),
                short_line_thr: number(&t, "short_line_thr", d.short_line_thr),
                short_line_length: t.u64("short_line_length").unwrap_or(d.short_line_length),
                char_duplicates_ratio: number(&t, "char_duplicates_ratio", d.char_duplicates_ratio),
                new_line_ratio: number(&t, "new_line_ratio", d.new_line_ratio),
            })
        }
    };
    let known: &[&str] = match name {
        "gopher_repetition" => &GOPHER_REPETITION_KEYS,
        "gopher_quality" => &GOPHER_QUALITY_KEYS,
        "c4" => &C4_KEYS,
        _ => &FINEWEB_KEYS,
    };
    p.absorb(t, known);
    filter
}

fn build(p: &Params) -> Option<Step> {
    let field = p.str("field").unwrap_or_else(|| "text".to_owned());
    let names: Vec<String> = match p.str_list("filters") {
        None => FILTERS.iter().map(|f| (*f).to_owned()).collect(),
        Some(names) => {
            let item = p.item("filters");
            for n in &names {
                if !FILTERS.contains(&n.as_str())
                    && let Some(item) = item
                {
                    let mut msg = format!("unknown filter `{n}`; the filters are {}", FILTERS.join(", "));
                    if let Some(m) = weave_core::did_you_mean(n, FILTERS.iter().copied()) {
                        msg = format!(
                            "unknown filter `{n}` (did you mean `{m}`?); the filters are {}",
                            FILTERS.join(", ")
                        );
                    }
                    p.error_at(item, msg);
                }
            }
            if names.is_empty()
                && let Some(item) = item
            {
                p.error_at(item, "`filters` is empty, so nothing would be checked");
            }
            let mut seen = std::collections::HashSet::new();
            if let (Some(twice), Some(item)) = (names.iter().find(|n| !seen.insert(n.as_str())), item) {
                p.error_at(item, format!("`filters` names `{twice}` twice"));
            }
            names
        }
    };
    // Thresholds for a filter that does not run would be silently ignored: an error.
    for f in FILTERS {
        if !names.iter().any(|n| n == f)
            && let Some(item) = p.item(f)
        {
            p.error_at(item, format!("`{f}` sets thresholds, but `filters` does not run `{f}`"));
        }
    }
    if p.has_errors() {
        return None;
    }
    let filters = names.iter().map(|n| read_filter(p, n)).collect();
    if p.has_errors() {
        return None;
    }
    Some(Step::Transform(Arc::new(Quality { field, filters, config: p.canonical() })))
}

impl StepInfo for Quality {
    fn fields_read(&self) -> Vec<String> {
        vec![self.field.clone()]
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }
}

impl Quality {
    /// The text left after every filter, or the filter and rule it failed; `c4_lines`
    /// counts the lines C4 took out.
    fn judge(&self, text: &str, c4_lines: &mut [u64; 5]) -> Result<Option<String>, (&'static str, Fail)> {
        let mut rewritten: Option<String> = None;
        for f in &self.filters {
            let now = rewritten.as_deref().unwrap_or(text);
            let failed = match f {
                Filter::GopherRepetition(g) => g.check(now),
                Filter::GopherQuality(g) => g.check(now),
                Filter::FineWeb(g) => g.check(now),
                Filter::C4(c) => match c.check(now, c4_lines) {
                    Ok(kept) => {
                        if kept != now {
                            rewritten = Some(kept);
                        }
                        None
                    }
                    Err(fail) => Some(fail),
                },
            };
            if let Some(fail) = failed {
                return Err((f.name(), fail));
            }
        }
        Ok(rewritten)
    }
}

impl Transform for Quality {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let col = match batch.column(&self.field) {
            Some(Column::Str(c)) => Some(c),
            Some(Column::Null(_)) => None,
            Some(other) => {
                return Err(StepError::fatal(format!(
                    "field `{}` holds {} values; `quality` judges text",
                    self.field,
                    other.data_type()
                )));
            }
            None => return Err(crate::missing_field(batch, &self.field)),
        };
        let mut keep = vec![true; batch.len()];
        let mut texts = StrColumn::with_capacity(batch.len(), col.map_or(0, |c| c.data().len()));
        let mut rewritten = false;
        let mut c4_lines = [0u64; 5];
        let mut by_rule: Vec<(String, u64)> = Vec::new();
        for (row, k) in keep.iter_mut().enumerate() {
            // A null reads as the empty string, as `clean` reads it.
            let value = col.and_then(|c| c.get(row));
            match self.judge(value.unwrap_or(""), &mut c4_lines) {
                Ok(new) => match (&new, value) {
                    (Some(t), _) => {
                        rewritten = true;
                        texts.push(t);
                    }
                    (None, Some(v)) => texts.push(v),
                    (None, None) => texts.push_null(),
                },
                Err((filter, fail)) => {
                    *k = false;
                    texts.push_null();
                    let counted = format!("{filter}: {}", fail.rule);
                    ctx.drop_record_because(
                        &counted,
                        || format!("{counted} {}", fail.detail),
                        || batch.row(row).to_record(),
                    );
                    let figure = format!("{filter}.{}", fail.rule);
                    match by_rule.iter_mut().find(|(n, _)| *n == figure) {
                        Some((_, c)) => *c += 1,
                        None => by_rule.push((figure, 1)),
                    }
                }
            }
        }
        for (name, n) in by_rule {
            ctx.add_stat(&name, n);
        }
        for (rule, n) in C4_LINE_RULES.iter().zip(c4_lines) {
            if n > 0 {
                ctx.add_stat(&format!("c4.{rule}"), n);
            }
        }
        let mut out = if rewritten {
            batch.with_column(&self.field, Column::Str(texts)).map_err(|e| StepError::internal(e.to_string()))?
        } else {
            batch.clone()
        };
        if keep.iter().any(|k| !k) {
            out = out.filter(&keep);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::{Record, Value};

    fn run(config: &str, texts: &[&str]) -> (Vec<String>, StepContext) {
        let Step::Transform(t) = build_step("quality", config) else { panic!("not a transform") };
        let mut ctx = StepContext::new("quality", 0, 0, Default::default()).keeping_dropped(true);
        let recs: Vec<Record> =
            texts.iter().enumerate().map(|(i, t)| Record::new().with("id", i as i64).with("text", *t)).collect();
        let out = t.apply(&Batch::from_records(&recs), &mut ctx).unwrap();
        let kept = out
            .to_records()
            .iter()
            .map(|r| r.get("text").and_then(|v| v.as_str()).unwrap_or_default().to_owned())
            .collect();
        (kept, ctx)
    }

    /// A page every filter keeps (datatrove's too).
    fn good_page() -> String {
        [
            "The river that runs past the old mill has been a source of pride for the town.",
            "In spring the water rises, and the meadows on either side turn a deep green.",
            "Farmers have grazed their sheep there since long before anyone kept records.",
            "A stone bridge, built with local granite, links the two halves of the village.",
            "Children learn to swim in the shallow pool below the weir each summer.",
            "The parish council meets once a month to discuss repairs to the banks.",
            "Visitors often stop at the bakery to buy bread and walk along the towpath.",
            "Nobody can say for certain how many mills once stood along this stretch.",
        ]
        .join("\n")
    }

    #[test]
    fn each_drop_names_the_filter_the_rule_and_the_measure() {
        let good = good_page();
        let repeated = format!("{good}\n{}", "Buy cheap shoes now and save more money today!\n".repeat(12));
        let (kept, mut ctx) = run("", &[&good, &repeated, "Too short."]);
        assert_eq!(kept, std::slice::from_ref(&good));
        let excluded = ctx.take_excluded();
        let reasons: Vec<&str> = excluded.iter().map(|(r, _)| r.as_str()).collect();
        // A short text's one 2-gram is most of it: the repetition filter, first in the
        // order, drops it before the quality filter counts its words (as datatrove would).
        assert_eq!(
            reasons,
            ["gopher_repetition: dup_line_frac 0.524 > 0.3", "gopher_repetition: top_2_gram 0.900 > 0.2"]
        );
        assert_eq!(excluded[1].1.get("id"), Some(&Value::Int(2)));
        assert_eq!(
            ctx.take_dropped(),
            [("gopher_repetition: dup_line_frac".to_owned(), 1), ("gopher_repetition: top_2_gram".to_owned(), 1)]
        );
        let stats = ctx.take_added_stats();
        assert!(stats.contains(&("gopher_repetition.top_2_gram".to_owned(), Value::Int(1))), "{stats:?}");
    }

    #[test]
    fn keys_select_filters_and_override_thresholds() {
        let good = good_page();
        // With `min_doc_words` lowered and C4 alone, a short page of full sentences passes.
        let short = "The river that runs past the old mill is lovely and wide.";
        let (kept, _) = run(
            "filters = [\"gopher_quality\"]\ngopher_quality = { min_doc_words = 5, min_stop_words = false }",
            &[short],
        );
        assert_eq!(kept, [short]);
        // C4 keeps only the lines that end in punctuation, and says how many it took out.
        let page = format!("Home | About\n{good}\nPlease enable JavaScript to view the comments.");
        let (kept, mut ctx) = run("filters = [\"c4\"]", &[&page]);
        assert_eq!(kept, std::slice::from_ref(&good));
        let stats = ctx.take_added_stats();
        assert!(stats.contains(&("c4.lines_no_terminal_punct".to_owned(), Value::Int(1))), "{stats:?}");
        assert!(stats.contains(&("c4.lines_javascript".to_owned(), Value::Int(1))), "{stats:?}");
        let (kept, mut ctx) = run("filters = [\"c4\"]\nc4 = { min_num_sentences = 20 }", &[&good]);
        assert!(kept.is_empty());
        assert_eq!(ctx.take_excluded()[0].0, "c4: min_num_sentences 8 < 20");
    }

    #[test]
    fn bad_keys_are_reported_at_their_place() {
        check_build_errors(
            "quality",
            "filters = [\"gopher\", \"c4\"]\nfineweb = { short_line_thr = 0.5 }\ngopher_quality = { min_doc_words = -1 }",
            &[
                "1:11 unknown filter `gopher` (did you mean `gopher_quality`?); the filters are gopher_repetition, gopher_quality, c4, fineweb",
                "3:18 `gopher_quality` sets thresholds, but `filters` does not run `gopher_quality`",
                "2:11 `fineweb` sets thresholds, but `filters` does not run `fineweb`",
            ],
        );
        check_build_errors(
            "quality",
            "c4 = { min_num_sentences = 2.5, lorem = true }\ngopher_repetition = { top_2_gram = \"high\" }",
            &[
                "2:36 `top_2_gram` must be a non-negative number, or false to turn the rule off",
                "1:28 `min_num_sentences` must be a non-negative integer, or false to turn the rule off",
                "1:33 unknown key `lorem` in `c4`",
            ],
        );
    }

    #[test]
    fn a_field_that_is_not_text_is_an_error_naming_it() {
        let Step::Transform(t) = build_step("quality", "field = \"n\"") else { panic!() };
        let mut ctx = StepContext::new("quality", 0, 0, Default::default());
        let err = t.apply(&Batch::from_records(&[Record::new().with("n", 1i64)]), &mut ctx).unwrap_err();
        assert_eq!(err.to_string(), "field `n` holds int values; `quality` judges text");
        let err = t.apply(&Batch::from_records(&[Record::new().with("text", "a")]), &mut ctx).unwrap_err();
        assert_eq!(err.to_string(), "field `n` is not in the data (fields: text)");
    }
}
