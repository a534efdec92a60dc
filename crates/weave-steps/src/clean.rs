//! The `clean` step: rewriting and filtering rules applied to text fields.

use regex::Regex;
use unicode_normalization::UnicodeNormalization;
use weave_core::{
    Appender, Batch, CanonicalConfig, Column, ConfItem, ConfValue, Params, Shape, Step, StepContext, StepError,
    StepInfo, StepKind, StrColumn, Transform,
};

use crate::text::{collapse_into, lowercase_into, trim_collapse_into, trim_into};

/// The `clean` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "clean",
        Shape::Transform,
        "rewrite text fields (trim, collapse_whitespace, lowercase, nfc, strip_html, replace...) and drop records by length, pattern or quality",
        ["rules", "fields"],
        build,
    )
});

/// Rules written as a bare name.
const NAMED: &[&str] =
    &["trim", "collapse_whitespace", "lowercase", "nfc", "strip_control", "strip_html", "drop_empty"];
/// Rules written as `{ name = value }`.
const VALUED: &[&str] = &[
    "min_chars",
    "max_chars",
    "min_words",
    "max_words",
    "replace",
    "drop_if_match",
    "min_alpha_ratio",
    "max_repeated_line_ratio",
    "min_mean_word_length",
    "max_mean_word_length",
    "min_punct_line_ratio",
];

/// A rule that rewrites each value.
#[derive(Debug, Clone)]
enum Rewrite {
    Trim,
    Collapse,
    /// Trim and collapse in one pass (written as `trim` then `collapse_whitespace`, or the
    /// other way round: the result is the same).
    TrimCollapse,
    Lowercase,
    /// Unicode canonical composition (NFC).
    Nfc,
    /// Control characters removed, except tab, line feed and carriage return.
    StripControl,
    /// HTML tags removed and the common entities decoded.
    StripHtml,
    /// Every match of the pattern replaced (`$1` and `${name}` refer to groups).
    Replace(Regex, String),
}

/// A rule that drops records: a record is kept only if every cleaned field passes.
#[derive(Debug, Clone)]
enum Filter {
    MinChars(u64),
    MaxChars(u64),
    MinWords(u64),
    MaxWords(u64),
    DropIfMatch(Regex),
    DropEmpty,
    /// Letters among the characters that are not whitespace.
    MinAlphaRatio(f64),
    /// Non-empty lines that repeat an earlier line of the same value.
    MaxRepeatedLineRatio(f64),
    MinMeanWordLength(f64),
    MaxMeanWordLength(f64),
    /// Non-empty lines that end in terminal punctuation.
    MinPunctLineRatio(f64),
}

impl Filter {
    /// The name drops are counted under.
    fn name(&self) -> &'static str {
        match self {
            Filter::MinChars(_) => "min_chars",
            Filter::MaxChars(_) => "max_chars",
            Filter::MinWords(_) => "min_words",
            Filter::MaxWords(_) => "max_words",
            Filter::DropIfMatch(_) => "drop_if_match",
            Filter::DropEmpty => "drop_empty",
            Filter::MinAlphaRatio(_) => "min_alpha_ratio",
            Filter::MaxRepeatedLineRatio(_) => "max_repeated_line_ratio",
            Filter::MinMeanWordLength(_) => "min_mean_word_length",
            Filter::MaxMeanWordLength(_) => "max_mean_word_length",
            Filter::MinPunctLineRatio(_) => "min_punct_line_ratio",
        }
    }

    /// Whether a value passes (a null value is read as the empty string).
    fn keeps(&self, s: &str) -> bool {
        match self {
            Filter::MinChars(n) => at_least_chars(s, *n),
            Filter::MaxChars(n) => !at_least_chars(s, n + 1),
            Filter::MinWords(n) => s.split_whitespace().count() as u64 >= *n,
            Filter::MaxWords(n) => s.split_whitespace().count() as u64 <= *n,
            Filter::DropIfMatch(re) => !re.is_match(s),
            Filter::DropEmpty => !s.trim().is_empty(),
            Filter::MinAlphaRatio(min) => alpha_ratio(s) >= *min,
            Filter::MaxRepeatedLineRatio(max) => repeated_line_ratio(s) <= *max,
            Filter::MinMeanWordLength(min) => mean_word_length(s) >= *min,
            Filter::MaxMeanWordLength(max) => mean_word_length(s) <= *max,
            Filter::MinPunctLineRatio(min) => punct_line_ratio(s) >= *min,
        }
    }
}

#[derive(Debug, Clone)]
enum Rule {
    Rewrite(Rewrite),
    Filter(Filter),
}

/// Rewrites text fields and drops records, rule by rule in the order written.
#[derive(Debug)]
pub struct Clean {
    rules: Vec<Rule>,
    /// The fields to clean; `None` means every string field (only when every rule is a
    /// rewrite: a filter needs its fields named).
    fields: Option<Vec<String>>,
    config: CanonicalConfig,
}

fn build(p: &Params) -> Option<Step> {
    let fields = p.str_list("fields");
    if let (Some(f), Some(item)) = (&fields, p.item("fields"))
        && f.is_empty()
    {
        p.error_at(item, "`fields` is empty: name the fields to clean, such as [\"text\"]");
    }
    if let (Some(f), Some(item)) = (&fields, p.item("fields")) {
        let mut seen = std::collections::HashSet::with_capacity(f.len());
        if let Some(twice) = f.iter().find(|n| !seen.insert(n.as_str())) {
            p.error_at(item, format!("`fields` names `{twice}` twice"));
        }
    }
    let mut rules = Vec::new();
    // The first filter, to point at when no field names what it judges.
    let mut first_filter: Option<(&'static str, &ConfItem)> = None;
    match p.item("rules") {
        None => {
            p.push(weave_core::Diagnostic::error(
                "missing required key `rules` (the cleaning rules, such as [\"trim\", \"collapse_whitespace\"])",
            ));
        }
        Some(item) => match &item.value {
            ConfValue::Array(items) => {
                for it in items {
                    if let Some(rule) = read_rule(p, it) {
                        if let (Rule::Filter(f), None) = (&rule, first_filter) {
                            first_filter = Some((f.name(), it));
                        }
                        rules.push(rule);
                    }
                }
            }
            other => {
                p.error_at(item, format!("`rules` must be a list, not {}", other.type_name()));
            }
        },
    }
    // A filter judges every field it cleans, and without `fields` that is every string
    // field: `{ min_chars = 20 }` would drop every record for its short id. The field a
    // filter judges is named, never guessed.
    if let (None, Some((name, item))) = (&fields, first_filter) {
        p.push(
            weave_core::Diagnostic::error(format!(
                "the filter `{name}` needs `fields`: the field(s) whose text it judges"
            ))
            .with_code("missing-key")
            .at(Some(p.locate(item.span.clone())))
            .with_help(
                "add `fields = [\"text\"]`, naming your text field(s); without `fields`, every string field (ids and labels too) would have to pass it",
            ),
        );
    }
    if p.has_errors() {
        return None;
    }
    // Adjacent trim and collapse become one pass.
    let mut fused: Vec<Rule> = Vec::with_capacity(rules.len());
    for r in rules {
        match (fused.last(), &r) {
            (Some(Rule::Rewrite(Rewrite::Trim)), Rule::Rewrite(Rewrite::Collapse))
            | (Some(Rule::Rewrite(Rewrite::Collapse)), Rule::Rewrite(Rewrite::Trim)) => {
                fused.pop();
                fused.push(Rule::Rewrite(Rewrite::TrimCollapse));
            }
            _ => fused.push(r),
        }
    }
    Some(Step::Transform(std::sync::Arc::new(Clean { rules: fused, fields, config: p.canonical() })))
}

/// One rule from the list, or `None` with the problem recorded at its place.
fn read_rule(p: &Params, it: &ConfItem) -> Option<Rule> {
    let unknown = |name: &str, quote: &str| {
        let mut msg = format!("unknown cleaning rule {quote}{name}{quote}");
        if VALUED.contains(&name) && quote == "\"" {
            msg.push_str(&format!(": `{name}` takes a value, write {{ {name} = ... }}"));
        } else if NAMED.contains(&name) && quote == "`" {
            msg.push_str(&format!(": write it as a name, \"{name}\""));
        } else if let Some(m) = weave_core::did_you_mean(name, NAMED.iter().chain(VALUED).copied()) {
            msg.push_str(&format!(" (did you mean {quote}{m}{quote}?)"));
        }
        p.error_at(it, msg);
        None
    };
    let (name, v) = match &it.value {
        ConfValue::Str(s) => {
            return match s.as_str() {
                "trim" => Some(Rule::Rewrite(Rewrite::Trim)),
                "collapse_whitespace" => Some(Rule::Rewrite(Rewrite::Collapse)),
                "lowercase" => Some(Rule::Rewrite(Rewrite::Lowercase)),
                "nfc" => Some(Rule::Rewrite(Rewrite::Nfc)),
                "strip_control" => Some(Rule::Rewrite(Rewrite::StripControl)),
                "strip_html" => Some(Rule::Rewrite(Rewrite::StripHtml)),
                "drop_empty" => Some(Rule::Filter(Filter::DropEmpty)),
                other => unknown(other, "\""),
            };
        }
        ConfValue::Table(t) if t.entries.len() == 1 => {
            let (name, _, v) = &t.entries[0];
            (name.as_str(), v)
        }
        _ => {
            p.error_at(it, "a rule is a name (\"trim\") or a table with one entry ({ min_chars = 20 })");
            return None;
        }
    };
    let count = || match &v.value {
        ConfValue::Int(n) if *n >= 0 => Some(*n as u64),
        _ => {
            p.error_at(v, format!("`{name}` must be a non-negative integer"));
            None
        }
    };
    let number = |max: Option<f64>| {
        let x = match &v.value {
            ConfValue::Int(n) => *n as f64,
            ConfValue::Float(x) => *x,
            _ => f64::NAN,
        };
        let ok = x >= 0.0 && max.is_none_or(|m| x <= m);
        if !ok {
            let range = max.map_or("a non-negative number".to_owned(), |m| format!("a number from 0 to {m}"));
            p.error_at(v, format!("`{name}` must be {range}"));
        }
        ok.then_some(x)
    };
    let regex = |item: &ConfItem, what: &str| crate::regex_at(p, item, what);
    Some(match name {
        "min_chars" => Rule::Filter(Filter::MinChars(count()?)),
        "max_chars" => Rule::Filter(Filter::MaxChars(count()?)),
        "min_words" => Rule::Filter(Filter::MinWords(count()?)),
        "max_words" => Rule::Filter(Filter::MaxWords(count()?)),
        "min_alpha_ratio" => Rule::Filter(Filter::MinAlphaRatio(number(Some(1.0))?)),
        "max_repeated_line_ratio" => Rule::Filter(Filter::MaxRepeatedLineRatio(number(Some(1.0))?)),
        "min_punct_line_ratio" => Rule::Filter(Filter::MinPunctLineRatio(number(Some(1.0))?)),
        "min_mean_word_length" => Rule::Filter(Filter::MinMeanWordLength(number(None)?)),
        "max_mean_word_length" => Rule::Filter(Filter::MaxMeanWordLength(number(None)?)),
        "drop_if_match" => Rule::Filter(Filter::DropIfMatch(regex(v, "drop_if_match")?)),
        "replace" => {
            let ConfValue::Table(t) = &v.value else {
                p.error_at(v, "`replace` takes a table: { replace = { pattern = \"...\", with = \"...\" } }");
                return None;
            };
            let sub = Params::new(t.clone(), p.file().clone(), "`replace`", p.step_id().map(str::to_owned))
                .spanning(v.span.clone());
            let pattern = sub.required_str("pattern", "the regular expression to replace");
            let with = sub.str("with").unwrap_or_default();
            let re = pattern.and_then(|_| sub.item("pattern")).and_then(|i| regex(i, "pattern"));
            p.absorb(sub, &["pattern", "with"]);
            Rule::Rewrite(Rewrite::Replace(re?, with))
        }
        "dedup" => {
            p.error_at(
                it,
                "dedup is a step of its own (it remembers what it saw, cleaning does not, so cleaning can run in parallel): add a step with kind = \"dedup\" and fields = [...] after this one",
            );
            return None;
        }
        other => return unknown(other, "`"),
    })
}

impl StepInfo for Clean {
    fn fields_read(&self) -> Vec<String> {
        self.fields.clone().unwrap_or_default()
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }
}

impl Rewrite {
    /// Writes the rewritten `s`.
    fn apply(&self, s: &str, out: &mut Appender<'_>) {
        match self {
            Rewrite::Trim => trim_into(s, out),
            Rewrite::Collapse => collapse_into(s, out),
            Rewrite::TrimCollapse => trim_collapse_into(s, out),
            Rewrite::Lowercase => lowercase_into(s, out),
            Rewrite::Nfc => {
                if unicode_normalization::is_nfc_quick(s.chars()) == unicode_normalization::IsNormalized::Yes {
                    out.push_str(s);
                } else {
                    s.nfc().for_each(|c| out.push(c));
                }
            }
            Rewrite::StripControl => {
                for part in s.split(|c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
                    out.push_str(part);
                }
            }
            Rewrite::StripHtml => strip_html(s, out),
            Rewrite::Replace(re, with) => out.push_str(&re.replace_all(s, with.as_str())),
        }
    }
}

impl Transform for Clean {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let names: Vec<String> = match &self.fields {
            Some(f) => f.clone(),
            None => batch
                .schema()
                .fields()
                .iter()
                .filter(|f| f.data_type == weave_core::DataType::Str)
                .map(|f| f.name.clone())
                .collect(),
        };
        let mut out = batch.clone();
        for rule in &self.rules {
            match rule {
                Rule::Rewrite(rw) => {
                    // The new columns go in place and the batch is made once per rule:
                    // `with_column` per field copies the list of columns each time, which
                    // over every field of a wide batch is quadratic.
                    let mut columns = out.columns().to_vec();
                    for name in &names {
                        let Some(col) = text_column(&out, name)? else { continue };
                        let mut new = StrColumn::with_capacity(col.len(), col.data().len());
                        for v in col.iter() {
                            match v {
                                Some(s) => new.push_with(|a| rw.apply(s, a)),
                                None => new.push_null(),
                            }
                        }
                        if let Some(i) = out.schema().index_of(name) {
                            columns[i] = std::sync::Arc::new(Column::Str(new));
                        }
                    }
                    out = Batch::new(std::sync::Arc::clone(out.schema()), columns)
                        .map_err(|e| StepError::internal(e.to_string()))?;
                }
                Rule::Filter(f) => {
                    let mut keep = vec![true; out.len()];
                    for name in &names {
                        match text_column(&out, name)? {
                            Some(col) => {
                                for (k, v) in keep.iter_mut().zip(col.iter()) {
                                    *k = *k && f.keeps(v.unwrap_or(""));
                                }
                            }
                            // A column of nulls: every value reads as "".
                            None => {
                                if !f.keeps("") {
                                    keep.iter_mut().for_each(|k| *k = false);
                                }
                            }
                        }
                    }
                    let dropped = keep.iter().filter(|k| !**k).count() as u64;
                    if ctx.keeps_dropped() {
                        for (i, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
                            ctx.drop_record(f.name(), || out.row(i).to_record());
                        }
                    } else {
                        ctx.count_dropped(f.name(), dropped);
                    }
                    if dropped > 0 {
                        out = out.filter(&keep);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Whether `s` has at least `n` characters, without counting past `n`.
fn at_least_chars(s: &str, n: u64) -> bool {
    if (s.len() as u64) < n {
        return false;
    }
    if s.is_ascii() {
        return true;
    }
    s.chars().take(n as usize).count() as u64 >= n
}

/// Letters among the characters that are not whitespace (0 for none).
pub(crate) fn alpha_ratio(s: &str) -> f64 {
    let (mut letters, mut all) = (0u64, 0u64);
    for c in s.chars().filter(|c| !c.is_whitespace()) {
        all += 1;
        letters += u64::from(c.is_alphabetic());
    }
    if all == 0 { 0.0 } else { letters as f64 / all as f64 }
}

/// Non-empty lines that repeat an earlier line of the same value (0 for none).
pub(crate) fn repeated_line_ratio(s: &str) -> f64 {
    // Most values are one line: answer those without allocating.
    if s.lines().filter(|l| !l.trim().is_empty()).nth(1).is_none() {
        return 0.0;
    }
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.len() < 2 {
        return 0.0;
    }
    let mut seen = std::collections::HashSet::with_capacity(lines.len());
    let repeated = lines.iter().filter(|l| !seen.insert(**l)).count();
    repeated as f64 / lines.len() as f64
}

/// The mean length of the whitespace-separated words, in characters (0 for none).
fn mean_word_length(s: &str) -> f64 {
    let (mut words, mut chars) = (0u64, 0u64);
    for w in s.split_whitespace() {
        words += 1;
        chars += w.chars().count() as u64;
    }
    if words == 0 { 0.0 } else { chars as f64 / words as f64 }
}

/// Non-empty lines that end in terminal punctuation (0 for none).
fn punct_line_ratio(s: &str) -> f64 {
    let (mut lines, mut ended) = (0u64, 0u64);
    for l in s.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()) {
        lines += 1;
        ended += u64::from(l.ends_with(['.', '!', '?', '"', '\'', '\u{201d}', '\u{2019}', '\u{2026}', ':', ';']));
    }
    if lines == 0 { 0.0 } else { ended as f64 / lines as f64 }
}

/// Writes `s` without HTML tags or comments, with the common entities decoded. A `<` that
/// does not open a tag (`a < b`) is kept.
fn strip_html(s: &str, out: &mut Appender<'_>) {
    let mut rest = s;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with("<!--") {
            rest = rest.find("-->").map_or("", |e| &rest[e + 3..]);
            continue;
        }
        if rest.starts_with('<') {
            let opens_tag = rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!');
            match (opens_tag, rest.find('>')) {
                (true, Some(e)) => rest = &rest[e + 1..],
                _ => {
                    out.push('<');
                    rest = &rest[1..];
                }
            }
            continue;
        }
        // An entity: `&name;` or `&#123;` or `&#x1F;`, up to 10 characters.
        let end = rest[1..].find(';').filter(|&e| e <= 10).map(|e| e + 1);
        let decoded = end.and_then(|e| decode_entity(&rest[1..e]));
        match (end, decoded) {
            (Some(e), Some(c)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

fn decode_entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        _ => return None,
    })
}

/// The string column `name`, `None` for a column of nulls, or an error naming the field.
fn text_column<'b>(batch: &'b Batch, name: &str) -> Result<Option<&'b StrColumn>, StepError> {
    match batch.column(name) {
        Some(Column::Str(c)) => Ok(Some(c)),
        Some(Column::Null(_)) => Ok(None),
        Some(other) => Err(StepError::fatal(format!(
            "field `{name}` holds {} values; `clean` works on strings",
            other.data_type()
        ))),
        None => Err(crate::missing_field(batch, name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::Record;

    fn run(config: &str, records: &[Record]) -> (Vec<String>, Vec<(String, u64)>) {
        let Step::Transform(t) = build_step("clean", config) else { panic!("not a transform") };
        let mut ctx = StepContext::new("clean", 0, 0, Default::default());
        let out = t.apply(&Batch::from_records(records), &mut ctx).unwrap();
        (out.to_records().iter().map(|r| r.to_string()).collect(), ctx.take_dropped())
    }

    #[test]
    fn rules_apply_in_order_and_count_drops() {
        let recs = vec![
            Record::new().with("text", "  Hello   World  ").with("n", 1i64),
            Record::new().with("text", " hi ").with("n", 2i64),
            Record::new().with("text", weave_core::Value::Null).with("n", 3i64),
        ];
        let (rows, dropped) = run(
            "fields = [\"text\"]\nrules = [\"trim\", \"collapse_whitespace\", \"lowercase\", { min_chars = 3 }]",
            &recs,
        );
        assert_eq!(rows, [r#"{"text":"hello world","n":1}"#]);
        assert_eq!(dropped, [("min_chars".to_owned(), 2)]);
    }

    // regression: without `fields`, `{ min_chars = 20 }` judged every string field, `id`
    // included, so a natural first pipeline dropped every record and "succeeded" with an
    // empty file.
    #[test]
    fn a_filter_needs_the_fields_it_judges() {
        check_build_errors(
            "clean",
            "rules = [\"trim\", { min_chars = 20 }, \"drop_empty\"]",
            &["1:18 the filter `min_chars` needs `fields`: the field(s) whose text it judges"],
        );
        check_build_errors(
            "clean",
            "fields = []\nrules = [\"trim\"]",
            &["1:10 `fields` is empty: name the fields to clean, such as [\"text\"]"],
        );
        // Rewrites alone still apply to every string field.
        let recs = vec![Record::new().with("id", " 1 ").with("text", " a ").with("n", 2i64)];
        let (rows, _) = run("rules = [\"trim\"]", &recs);
        assert_eq!(rows, [r#"{"id":"1","text":"a","n":2}"#]);
        // Named, a filter judges only its fields: the short id no longer drops the record.
        let recs = vec![Record::new().with("id", "1").with("text", "long enough text")];
        let (rows, dropped) = run("fields = [\"text\"]\nrules = [{ min_chars = 5 }]", &recs);
        assert_eq!(rows.len(), 1);
        assert!(dropped.is_empty());
    }

    #[test]
    fn fields_limit_what_is_cleaned() {
        let recs = vec![Record::new().with("a", " x ").with("b", " y ")];
        let (rows, _) = run("rules = [\"trim\"]\nfields = [\"a\"]", &recs);
        assert_eq!(rows, [r#"{"a":"x","b":" y "}"#]);
    }

    #[test]
    fn a_missing_field_names_the_fields_there_are() {
        let Step::Transform(t) = build_step("clean", "rules = [\"trim\"]\nfields = [\"txt\"]") else { panic!() };
        let mut ctx = StepContext::new("clean", 0, 0, Default::default());
        let err = t.apply(&Batch::from_records(&[Record::new().with("text", "a")]), &mut ctx).unwrap_err();
        assert_eq!(err.to_string(), "field `txt` is not in the data (fields: text)");
    }

    fn texts(config: &str, texts: &[&str]) -> (Vec<String>, Vec<(String, u64)>) {
        let recs: Vec<Record> = texts.iter().map(|t| Record::new().with("text", *t)).collect();
        let (rows, dropped) = run(&format!("fields = [\"text\"]\n{config}"), &recs);
        let rows = rows
            .iter()
            .map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["text"].as_str().unwrap().to_owned())
            .collect();
        (rows, dropped)
    }

    #[test]
    fn unicode_control_and_html_rules() {
        let (rows, _) = texts(
            "rules = [\"nfc\", \"strip_control\", \"strip_html\"]",
            &[
                "cafe\u{301}",
                "a\u{0}b\u{7}c\td\ne",
                "<p class=\"x\">Fish &amp; chips</p><!-- hidden --> 3 < 4 &#233;&#x41; &bogus;",
            ],
        );
        assert_eq!(rows, ["caf\u{e9}", "abc\td\ne", "Fish & chips 3 < 4 \u{e9}A &bogus;"]);
    }

    #[test]
    fn replace_and_drop_if_match_use_regular_expressions() {
        let (rows, dropped) = texts(
            "rules = [{ replace = { pattern = \"(\\\\d{3})-(\\\\d{4})\", with = \"$2-$1\" } }, { drop_if_match = \"(?i)lorem\" }]",
            &["call 555-1234 now", "Lorem ipsum", "plain"],
        );
        assert_eq!(rows, ["call 1234-555 now", "plain"]);
        assert_eq!(dropped, [("drop_if_match".to_owned(), 1)]);
    }

    #[test]
    fn quality_filters_follow_their_definitions() {
        let spam = "buy now\nbuy now\nbuy now\nreal line";
        let (rows, dropped) = texts(
            "rules = [{ min_alpha_ratio = 0.5 }, { max_repeated_line_ratio = 0.3 }, { min_mean_word_length = 3 }, { min_punct_line_ratio = 0.5 }, \"drop_empty\"]",
            &["1234 5678 !!!", spam, "a b c d e f.", "No punctuation here", "A proper sentence.", "   "],
        );
        assert_eq!(rows, ["A proper sentence."]);
        let names: Vec<&str> = dropped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["min_alpha_ratio", "max_repeated_line_ratio", "min_mean_word_length", "min_punct_line_ratio"]
        );
        assert_eq!(repeated_line_ratio(spam), 0.5);
        assert_eq!(mean_word_length("ab abcd"), 3.0);
        assert_eq!(alpha_ratio("ab 12"), 0.5);
        assert_eq!(punct_line_ratio("Yes.\nno\n\n"), 0.5);
    }

    #[test]
    fn bad_values_of_the_new_rules_are_placed() {
        check_build_errors(
            "clean",
            "rules = [{ min_alpha_ratio = 1.5 }, { drop_if_match = \"(\" }, { replace = { patern = \"x\" } }, \"nfd\"]",
            &[
                "1:30 `min_alpha_ratio` must be a number from 0 to 1",
                "1:55 `drop_if_match` is not a valid regular expression: unclosed group",
                "1:74 missing required key `pattern` (the regular expression to replace)",
                "1:76 unknown key `patern` in `replace`",
                "1:94 unknown cleaning rule \"nfd\" (did you mean \"nfc\"?)",
            ],
        );
    }

    #[test]
    fn a_dedup_rule_points_to_the_dedup_step() {
        check_build_errors(
            "clean",
            "rules = [\"trim\", { dedup = [\"text\"] }]",
            &[
                "1:18 dedup is a step of its own (it remembers what it saw, cleaning does not, so cleaning can run in parallel): add a step with kind = \"dedup\" and fields = [...] after this one",
            ],
        );
    }

    #[test]
    fn bad_rules_are_reported_at_their_place() {
        check_build_errors(
            "clean",
            "rules = [\"trim\", \"colapse_whitespace\", { min_chars = -1 }, { min_char = 2 }, 3, \"min_chars\"]\nfilds = [\"a\"]",
            &[
                "1:18 unknown cleaning rule \"colapse_whitespace\" (did you mean \"collapse_whitespace\"?)",
                "1:54 `min_chars` must be a non-negative integer",
                "1:60 unknown cleaning rule `min_char` (did you mean `min_chars`?)",
                "1:78 a rule is a name (\"trim\") or a table with one entry ({ min_chars = 20 })",
                "1:81 unknown cleaning rule \"min_chars\": `min_chars` takes a value, write { min_chars = ... }",
                "2:1 unknown key `filds` in step",
            ],
        );
    }
}
