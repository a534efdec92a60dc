//! The checks of the `validate` step: how each is read from the pipeline file, and how it
//! judges every row of a batch at once.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use regex::Regex;
use weave_core::{Batch, ConfItem, ConfValue, Params, PrimitiveColumn, StepError, Value, ValueRef};

use super::coherence::CoherenceScorer;
use crate::dedup::RecordKeys;

/// The check names, as `check = "..."` writes them.
pub(super) const CHECKS: &[&str] = &["completeness", "coherence", "length", "schema", "uniqueness"];

/// The types a schema check knows.
const TYPES: &[&str] = &["string", "int", "float", "bool", "list", "map"];

/// The most fields one completeness check takes (two failure codes each must fit a byte).
const MAX_COMPLETENESS_FIELDS: usize = 127;

/// One check, as written in `checks`.
#[derive(Debug)]
pub(super) struct Check {
    /// How stats, reports and `failed_checks` name it: its `name`, or the check's name and
    /// its field (`schema.age`), or the check's name alone for the checks over several fields.
    pub(super) label: String,
    /// Why a row fails, by failure code (code 1 is index 0), without the label.
    pub(super) whys: Vec<String>,
    /// The drop reasons, by failure code: `"{label}: {short why}"`, short and free of
    /// thresholds, since they label counts in the run's summary and metrics.
    pub(super) reasons: Vec<String>,
    /// The field the check writes its score to, if it has a score and writes it.
    pub(super) score_field: Option<String>,
    pub(super) rule: Rule,
}

/// What a check asks of a record.
#[derive(Debug)]
pub(super) enum Rule {
    Completeness(Completeness),
    Coherence(Coherence),
    Length(Length),
    Schema(Schema),
    Uniqueness(Uniqueness),
}

/// Every field present, not null and not empty.
#[derive(Debug)]
pub(super) struct Completeness {
    fields: Vec<String>,
    /// Per field, the records where it was null, missing or empty.
    missing: Vec<u64>,
}

/// The coherence score of a text field at least `min_score`.
#[derive(Debug)]
pub(super) struct Coherence {
    field: String,
    min_score: f64,
    optional: bool,
    /// The scores seen: count, sum, min, max.
    scored: u64,
    sum: f64,
    min: f64,
    max: f64,
}

/// Bounds on a text field's length in characters and words.
#[derive(Debug)]
pub(super) struct Length {
    field: String,
    min_chars: Option<u64>,
    max_chars: Option<u64>,
    min_words: Option<u64>,
    max_words: Option<u64>,
    optional: bool,
}

/// A field's type, numeric range, pattern or allowed values.
#[derive(Debug)]
pub(super) struct Schema {
    field: String,
    ty: Option<&'static str>,
    /// Read string values as `ty` before checking them.
    parse: bool,
    /// Bounds as written (an int or a float), compared with each value exactly.
    min: Option<Value>,
    max: Option<Value>,
    pattern: Option<Regex>,
    allowed: Option<Allowed>,
    optional: bool,
}

/// The values a schema check allows, by type, each list sorted for a binary search (a
/// few comparisons of short strings beat hashing them).
#[derive(Debug, Default)]
struct Allowed {
    strings: Vec<String>,
    ints: Vec<i64>,
    bools: Vec<bool>,
}

/// No two records (that passed every check) with the same key.
#[derive(Debug)]
pub(super) struct Uniqueness {
    /// How a record's key is made; the step makes the batch's keys ahead of its ordered
    /// call (see `UniqueKeys`).
    keys: Arc<RecordKeys>,
    /// The keys of records that passed every check so far.
    seen: HashSet<u128>,
}

// Failure codes, per check. 0 always means "passed".
const NULL: u8 = 1;
const NOT_STRING: u8 = 2;
const LOW_SCORE: u8 = 3;
const FEW_CHARS: u8 = 3;
const MANY_CHARS: u8 = 4;
const FEW_WORDS: u8 = 5;
const MANY_WORDS: u8 = 6;
const WRONG_TYPE: u8 = 2;
const NOT_NUMBER: u8 = 3;
const BELOW_MIN: u8 = 4;
const ABOVE_MAX: u8 = 5;
const PATTERN_NOT_STRING: u8 = 6;
const NO_MATCH: u8 = 7;
const NOT_ALLOWED: u8 = 8;
/// The code of a uniqueness failure, set by the step once the other checks are known.
pub(super) const DUPLICATE: u8 = 1;

/// Reads one item of `checks`; `prefix` goes before the default score field names. `None`
/// when it has errors, which are recorded in `p`.
pub(super) fn read_check(p: &Params, item: &ConfItem, prefix: &str) -> Option<Check> {
    let ConfValue::Table(t) = &item.value else {
        p.error_at(
            item,
            format!(
                "a check is a table such as {{ check = \"coherence\", field = \"text\" }}, not {}",
                item.value.type_name()
            ),
        );
        return None;
    };
    let context = match t.get("check").map(|i| &i.value) {
        Some(ConfValue::Str(s)) if CHECKS.contains(&s.as_str()) => format!("check `{s}`"),
        _ => "check".to_owned(),
    };
    let sub =
        Params::new(t.clone(), p.file().clone(), context, p.step_id().map(str::to_owned)).spanning(item.span.clone());
    let kind = if sub.has("check") {
        sub.choice("check", CHECKS)
    } else {
        sub.required_str("check", "which check: completeness, coherence, length, schema or uniqueness");
        None
    };
    let Some(kind) = kind else {
        // The check is unknown, so its other keys cannot be judged: do not report them.
        for (key, _, _) in &t.entries {
            sub.item(key);
        }
        p.absorb(sub, &[]);
        return None;
    };
    let name = sub.str("name");
    if let (Some(n), Some(i)) = (&name, sub.item("name"))
        && n.trim().is_empty()
    {
        sub.error_at(i, "`name` is empty");
    }
    let field = || {
        let f = sub.required_str("field", "the field to check")?;
        if f.is_empty() {
            sub.error_at(sub.item("field")?, "`field` is empty");
        }
        Some(f)
    };
    let optional = || sub.bool("optional").unwrap_or(false);
    let (rule, keys, field_name): (Option<Rule>, &[&str], Option<String>) = match kind {
        "completeness" => {
            let fields = read_completeness_fields(&sub);
            let rule = fields.map(|fields| Rule::Completeness(Completeness { missing: vec![0; fields.len()], fields }));
            (rule, &["check", "name", "fields"], None)
        }
        "coherence" => {
            let field = field();
            let min_score = sub.f64("min_score").unwrap_or(0.5);
            if !(0.0..=1.0).contains(&min_score)
                && let Some(i) = sub.item("min_score")
            {
                sub.error_at(i, format!("`min_score` must be from 0 to 1, not {min_score}"));
            }
            let optional = optional();
            let rule = field.clone().map(|field| {
                Rule::Coherence(Coherence {
                    field,
                    min_score,
                    optional,
                    scored: 0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                })
            });
            (rule, &["check", "name", "field", "min_score", "score_field", "optional"], field)
        }
        "length" => {
            let field = field();
            let [min_chars, max_chars, min_words, max_words] =
                ["min_chars", "max_chars", "min_words", "max_words"].map(|k| sub.u64(k));
            if !["min_chars", "max_chars", "min_words", "max_words"].iter().any(|k| sub.has(k)) {
                sub.error_at(
                    item,
                    "a length check needs at least one of `min_chars`, `max_chars`, `min_words`, `max_words`",
                );
            }
            for (lo, hi, lo_key, hi_key) in
                [(min_chars, max_chars, "min_chars", "max_chars"), (min_words, max_words, "min_words", "max_words")]
            {
                if let (Some(lo), Some(hi), Some(i)) = (lo, hi, sub.item(hi_key))
                    && lo > hi
                {
                    sub.error_at(i, format!("`{hi_key}` ({hi}) is below `{lo_key}` ({lo}): no record could pass"));
                }
            }
            let optional = optional();
            let rule = field
                .clone()
                .map(|field| Rule::Length(Length { field, min_chars, max_chars, min_words, max_words, optional }));
            (rule, &["check", "name", "field", "min_chars", "max_chars", "min_words", "max_words", "optional"], field)
        }
        "schema" => {
            let field = field();
            let schema = read_schema(&sub, item);
            let optional = optional();
            let rule = field.clone().zip(schema).map(|(field, s)| Rule::Schema(Schema { field, optional, ..s }));
            (rule, &["check", "name", "field", "type", "parse", "min", "max", "pattern", "allowed", "optional"], field)
        }
        "uniqueness" => {
            let keys = RecordKeys::read(&sub, "make a record a duplicate");
            let rule = keys.map(|keys| Rule::Uniqueness(Uniqueness { keys: Arc::new(keys), seen: HashSet::new() }));
            (rule, &["check", "name", "fields", "normalize"], None)
        }
        _ => unreachable!("`choice` returns one of CHECKS"),
    };
    // Only coherence has a per-record score worth keeping.
    let score_field = if kind == "coherence" { read_score_field(&sub, prefix) } else { None };
    let ok = !sub.has_errors();
    p.absorb(sub, keys);
    let rule = rule.filter(|_| ok)?;
    let label = name.unwrap_or_else(|| match &field_name {
        Some(f) => format!("{kind}.{f}"),
        None => kind.to_owned(),
    });
    let whys = rule.whys();
    let reasons = rule.short_whys().iter().map(|w| format!("{label}: {w}")).collect();
    Some(Check { label, whys, reasons, score_field, rule })
}

/// The `fields` of a completeness check: required, not empty.
fn read_completeness_fields(sub: &Params) -> Option<Vec<String>> {
    if !sub.has("fields") {
        sub.required_str("fields", "the fields every record must have");
        return None;
    }
    let fields = sub.str_list("fields")?;
    let item = sub.item("fields")?;
    if fields.is_empty() {
        sub.error_at(item, "`fields` is empty: name the fields every record must have");
        return None;
    }
    if fields.len() > MAX_COMPLETENESS_FIELDS {
        sub.error_at(
            item,
            format!("a completeness check takes at most {MAX_COMPLETENESS_FIELDS} fields: split it in two"),
        );
        return None;
    }
    Some(fields)
}

/// The `score_field` of a check with a score: a name, `false` for none, or the default.
fn read_score_field(sub: &Params, prefix: &str) -> Option<String> {
    match sub.item("score_field").map(|i| (i, &i.value)) {
        None => Some(format!("{prefix}coherence_score")),
        Some((_, ConfValue::Str(s))) if !s.is_empty() => Some(s.clone()),
        Some((_, ConfValue::Bool(false))) => None,
        Some((i, other)) => {
            let what = if matches!(other, ConfValue::Str(_)) {
                "an empty string".to_owned()
            } else {
                other.type_name().to_owned()
            };
            sub.error_at(i, format!("`score_field` must be a field name, or false to write no score, not {what}"));
            None
        }
    }
}

/// The constraints of a schema check (its field and `optional` are filled in by the caller).
fn read_schema(sub: &Params, item: &ConfItem) -> Option<Schema> {
    let ty = sub.choice("type", TYPES);
    let parse = sub.bool("parse").unwrap_or(false);
    let (min, max) = (sub.number("min"), sub.number("max"));
    let pattern = sub.item("pattern").and_then(|i| crate::regex_at(sub, i, "pattern"));
    let allowed = sub.item("allowed").and_then(|i| read_allowed(sub, i, ty));
    if !["type", "min", "max", "pattern", "allowed"].iter().any(|k| sub.has(k)) {
        sub.error_at(item, "a schema check needs at least one of `type`, `min`, `max`, `pattern`, `allowed`");
    }
    if let (Some(t @ ("string" | "bool" | "list" | "map")), Some(i)) = (ty, sub.item("min").or(sub.item("max"))) {
        sub.error_at(i, format!("`min` and `max` bound numbers, and `type` is \"{t}\""));
    }
    if let (Some(lo), Some(hi), Some(i)) = (&min, &max, sub.item("max"))
        && hi.as_ref().cmp_number(lo.as_ref()) == Some(std::cmp::Ordering::Less)
    {
        sub.error_at(
            i,
            format!(
                "`max` ({}) is below `min` ({}): no record could pass",
                crate::number_label(hi),
                crate::number_label(lo)
            ),
        );
    }
    if let (Some(t), Some(i)) = (ty, sub.item("pattern"))
        && t != "string"
        && !parse
    {
        sub.error_at(i, format!("`pattern` matches strings, and `type` is \"{t}\""));
    }
    if parse
        && !matches!(ty, Some("int" | "float" | "bool"))
        && let Some(i) = sub.item("parse")
    {
        sub.error_at(i, "`parse` reads strings as `type`, which must then be \"int\", \"float\" or \"bool\"");
    }
    Some(Schema { field: String::new(), ty, parse, min, max, pattern, allowed, optional: false })
}

/// The `allowed` list: strings, integers or booleans, fitting `ty` when given.
fn read_allowed(sub: &Params, item: &ConfItem, ty: Option<&str>) -> Option<Allowed> {
    let ConfValue::Array(values) = &item.value else {
        sub.error_at(item, format!("`allowed` must be a list of values, not {}", item.value.type_name()));
        return None;
    };
    if values.is_empty() {
        sub.error_at(item, "`allowed` is empty: no record could pass");
        return None;
    }
    let mut a = Allowed::default();
    let mut ok = true;
    for v in values {
        let fits = match (&v.value, ty) {
            (ConfValue::Str(s), None | Some("string")) => {
                a.strings.push(s.clone());
                true
            }
            (ConfValue::Int(n), None | Some("int" | "float")) => {
                a.ints.push(*n);
                true
            }
            (ConfValue::Bool(b), None | Some("bool")) => {
                a.bools.push(*b);
                true
            }
            (ConfValue::Str(_) | ConfValue::Int(_) | ConfValue::Bool(_), Some(t)) => {
                sub.error_at(v, format!("`allowed` lists {}, and `type` is \"{t}\"", v.value.type_name()));
                false
            }
            (other, _) => {
                sub.error_at(v, format!("`allowed` lists strings, integers or booleans, not {}", other.type_name()));
                false
            }
        };
        ok &= fits;
    }
    a.strings.sort_unstable();
    a.ints.sort_unstable();
    ok.then_some(a)
}

impl Rule {
    /// Why a row fails, by failure code (code 1 is index 0), in a few words that name the
    /// key that decided rather than its value.
    fn short_whys(&self) -> Vec<String> {
        let own = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect();
        match self {
            Rule::Completeness(c) => {
                c.fields.iter().flat_map(|f| [format!("`{f}` null or missing"), format!("`{f}` empty")]).collect()
            }
            Rule::Coherence(_) => own(&["null or missing", "not a string", "score below min_score"]),
            Rule::Length(_) => own(&[
                "null or missing",
                "not a string",
                "under min_chars",
                "over max_chars",
                "under min_words",
                "over max_words",
            ]),
            Rule::Schema(s) => {
                let ty = s.ty.unwrap_or("");
                let article = if ty == "int" { "an" } else { "a" };
                vec![
                    "null or missing".to_owned(),
                    format!("not {article} {ty}"),
                    "not a number".to_owned(),
                    "below min".to_owned(),
                    "above max".to_owned(),
                    "not a string".to_owned(),
                    "no match for pattern".to_owned(),
                    "not in allowed".to_owned(),
                ]
            }
            Rule::Uniqueness(_) => own(&["duplicate"]),
        }
    }

    /// Why a row fails, by failure code (code 1 is index 0), with the threshold or
    /// pattern that decided, for the report.
    fn whys(&self) -> Vec<String> {
        let null = |f: &str| format!("`{f}` is null or missing");
        let not_string = |f: &str| format!("`{f}` is not a string");
        match self {
            Rule::Completeness(c) => c.fields.iter().flat_map(|f| [null(f), format!("`{f}` is empty")]).collect(),
            Rule::Coherence(c) => {
                vec![null(&c.field), not_string(&c.field), format!("coherence of `{}` below {}", c.field, c.min_score)]
            }
            Rule::Length(l) => {
                let f = &l.field;
                let bound = |b: Option<u64>| b.map_or_else(String::new, |n| n.to_string());
                vec![
                    null(f),
                    not_string(f),
                    format!("`{f}` under {} characters", bound(l.min_chars)),
                    format!("`{f}` over {} characters", bound(l.max_chars)),
                    format!("`{f}` under {} words", bound(l.min_words)),
                    format!("`{f}` over {} words", bound(l.max_words)),
                ]
            }
            Rule::Schema(s) => {
                let f = &s.field;
                let ty = s.ty.unwrap_or("");
                let article = if ty == "int" { "an" } else { "a" };
                let num = |b: &Option<Value>| b.as_ref().map_or_else(String::new, crate::number_label);
                vec![
                    null(f),
                    format!("`{f}` is not {article} {ty}"),
                    format!("`{f}` is not a number"),
                    format!("`{f}` below {}", num(&s.min)),
                    format!("`{f}` above {}", num(&s.max)),
                    not_string(f),
                    format!("`{f}` does not match {}", s.pattern.as_ref().map_or("", Regex::as_str)),
                    format!("`{f}` is not an allowed value"),
                ]
            }
            Rule::Uniqueness(_) => vec!["repeats an earlier record".to_owned()],
        }
    }
}

impl Check {
    /// The fields the check reads whose absence from the whole run is worth a warning
    /// (uniqueness needs its fields in every batch, as dedup does, so it is not listed).
    pub(super) fn fields(&self) -> Vec<&str> {
        match &self.rule {
            Rule::Completeness(c) => c.fields.iter().map(String::as_str).collect(),
            Rule::Coherence(c) => vec![&c.field],
            Rule::Length(l) => vec![&l.field],
            Rule::Schema(s) => vec![&s.field],
            Rule::Uniqueness(_) => Vec::new(),
        }
    }

    /// Judges every row of `batch`: writes each row's failure code (0 when it passed) into
    /// `codes`, and returns the per-row scores of a check that has them (written out only
    /// when the check has a `score_field`). Uniqueness passes
    /// every row here; [`Check::duplicate`] and [`Check::remember`] judge each row by its
    /// key once the other checks are known.
    pub(super) fn evaluate(
        &mut self,
        batch: &Batch,
        codes: &mut [u8],
        scorer: &mut CoherenceScorer,
    ) -> Result<Option<PrimitiveColumn<f64>>, StepError> {
        let value = |field: &str| {
            let col = batch.column(field);
            move |row: usize| col.map_or(ValueRef::Null, |c| c.get(row))
        };
        match &mut self.rule {
            Rule::Completeness(c) => {
                for (k, field) in c.fields.iter().enumerate() {
                    let get = value(field);
                    let base = 2 * k as u8;
                    for (row, code) in codes.iter_mut().enumerate() {
                        let fail = match get(row) {
                            ValueRef::Null => NULL,
                            ValueRef::Str(s) if s.trim().is_empty() => 2,
                            ValueRef::List([]) => 2,
                            ValueRef::Map(m) if m.is_empty() => 2,
                            _ => continue,
                        };
                        c.missing[k] += 1;
                        if *code == 0 {
                            *code = base + fail;
                        }
                    }
                }
                Ok(None)
            }
            Rule::Coherence(c) => {
                let get = value(&c.field);
                let mut scores = PrimitiveColumn::new();
                for (row, code) in codes.iter_mut().enumerate() {
                    let score = match get(row) {
                        ValueRef::Str(s) => {
                            // Rounded before the comparison, so that the score written is the
                            // one that decided.
                            let score = (scorer.score(s).score * 1e4).round() / 1e4;
                            c.scored += 1;
                            c.sum += score;
                            c.min = c.min.min(score);
                            c.max = c.max.max(score);
                            if score < c.min_score {
                                *code = LOW_SCORE;
                            }
                            Some(score)
                        }
                        ValueRef::Null => {
                            if !c.optional {
                                *code = NULL;
                            }
                            None
                        }
                        _ => {
                            *code = NOT_STRING;
                            None
                        }
                    };
                    match score {
                        Some(s) => scores.push(s),
                        None => scores.push_null(),
                    }
                }
                Ok(Some(scores))
            }
            Rule::Length(l) => {
                let get = value(&l.field);
                let chars = l.min_chars.is_some() || l.max_chars.is_some();
                let words = l.min_words.is_some() || l.max_words.is_some();
                for (row, code) in codes.iter_mut().enumerate() {
                    *code = match get(row) {
                        ValueRef::Str(s) => {
                            let n_chars = if chars { s.chars().count() as u64 } else { 0 };
                            let n_words = if words { s.split_whitespace().count() as u64 } else { 0 };
                            if l.min_chars.is_some_and(|m| n_chars < m) {
                                FEW_CHARS
                            } else if l.max_chars.is_some_and(|m| n_chars > m) {
                                MANY_CHARS
                            } else if l.min_words.is_some_and(|m| n_words < m) {
                                FEW_WORDS
                            } else if l.max_words.is_some_and(|m| n_words > m) {
                                MANY_WORDS
                            } else {
                                0
                            }
                        }
                        ValueRef::Null if l.optional => 0,
                        ValueRef::Null => NULL,
                        _ => NOT_STRING,
                    };
                }
                Ok(None)
            }
            Rule::Schema(s) => {
                let get = value(&s.field);
                for (row, code) in codes.iter_mut().enumerate() {
                    *code = s.judge(get(row));
                }
                Ok(None)
            }
            Rule::Uniqueness(_) => Ok(None),
        }
    }

    /// For a uniqueness check, whether `key` (a row's) repeats the key of a record that
    /// passed every check; false for other checks.
    pub(super) fn duplicate(&self, key: u128) -> bool {
        match &self.rule {
            Rule::Uniqueness(u) => u.seen.contains(&key),
            _ => false,
        }
    }

    /// For a uniqueness check, remembers a row's `key`: the row passed every check.
    pub(super) fn remember(&mut self, key: u128) {
        if let Rule::Uniqueness(u) = &mut self.rule {
            u.seen.insert(key);
        }
    }

    /// For a uniqueness check, hashes its keys under `secret` (the shards of a job share
    /// one, so that their keys compare). Called at build time, before the keys are shared.
    pub(super) fn share_secret(&mut self, secret: (u64, u64)) {
        if let Rule::Uniqueness(u) = &mut self.rule
            && let Some(keys) = Arc::get_mut(&mut u.keys)
        {
            keys.secret = secret;
        }
    }

    /// For a uniqueness check, how its keys are made.
    pub(super) fn record_keys(&self) -> Option<&Arc<RecordKeys>> {
        match &self.rule {
            Rule::Uniqueness(u) => Some(&u.keys),
            _ => None,
        }
    }

    /// What row `row` of `batch` holds that made it fail with `code`, for the report: the
    /// value (shortened), and the score or length that decided; empty when there is
    /// nothing to show beyond the reason (a null value, a completeness failure).
    pub(super) fn detail(&self, batch: &Batch, row: usize, code: u8, score: Option<f64>) -> String {
        let field = match &self.rule {
            Rule::Completeness(_) => return String::new(),
            Rule::Coherence(c) => c.field.as_str(),
            Rule::Length(l) => l.field.as_str(),
            Rule::Schema(s) => s.field.as_str(),
            Rule::Uniqueness(u) => match u.keys.fields().and_then(|f| f.first()) {
                Some(f) => f.as_str(),
                None => return String::new(),
            },
        };
        let v = batch.column(field).map_or(ValueRef::Null, |c| c.get(row));
        match (&self.rule, code, v, score) {
            (_, _, ValueRef::Null, _) => String::new(),
            (Rule::Coherence(_), LOW_SCORE, _, Some(score)) => format!("score {score}, {}", preview(v)),
            (Rule::Length(_), FEW_CHARS | MANY_CHARS, ValueRef::Str(s), _) => {
                format!("{} characters, {}", s.chars().count(), preview(v))
            }
            (Rule::Length(_), FEW_WORDS | MANY_WORDS, ValueRef::Str(s), _) => {
                format!("{} words, {}", s.split_whitespace().count(), preview(v))
            }
            _ => preview(v),
        }
    }

    /// The check's own dataset-level figures, named after its label.
    pub(super) fn stats(&self, out: &mut Vec<(String, Value)>) {
        let label = &self.label;
        match &self.rule {
            Rule::Completeness(c) => {
                for (f, n) in c.fields.iter().zip(&c.missing) {
                    out.push((format!("{label}.missing.{f}"), Value::Int(*n as i64)));
                }
            }
            Rule::Coherence(c) if c.scored > 0 => {
                out.push((format!("{label}.mean"), Value::Float((c.sum / c.scored as f64 * 1e4).round() / 1e4)));
                out.push((format!("{label}.min"), Value::Float(c.min)));
                out.push((format!("{label}.max"), Value::Float(c.max)));
            }
            _ => {}
        }
    }
}

impl Schema {
    /// The failure code of one value (0 when it passes).
    fn judge(&self, v: ValueRef<'_>) -> u8 {
        if v.is_null() {
            return if self.optional { 0 } else { NULL };
        }
        let original = v;
        // A string read as the type, when asked: a number or a boolean, never borrowed.
        let v = match (self.parse, v) {
            (true, ValueRef::Str(s)) => {
                let s = s.trim();
                let parsed = match self.ty {
                    // Integers of any size, exactly; a float's text as a float.
                    Some("int") => ValueRef::parse_number(s).filter(|v| v.type_name() == "int"),
                    Some("float") => ValueRef::parse_number(s).filter(|v| v.as_f64().is_some_and(f64::is_finite)),
                    Some("bool") => s.parse::<bool>().ok().map(ValueRef::Bool),
                    _ => None,
                };
                match parsed {
                    Some(p) => p,
                    None => return WRONG_TYPE,
                }
            }
            _ => v,
        };
        if let Some(ty) = self.ty {
            let fits = match (ty, v) {
                ("string", ValueRef::Str(_))
                | ("int", ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_))
                | ("float", ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_) | ValueRef::Float(_))
                | ("bool", ValueRef::Bool(_))
                | ("list", ValueRef::List(_))
                | ("map", ValueRef::Map(_)) => true,
                // A float column (Parquet's, say) holds whole numbers as 3.0.
                ("int", ValueRef::Float(x)) => x.fract() == 0.0,
                _ => false,
            };
            if !fits {
                return WRONG_TYPE;
            }
        }
        if self.min.is_some() || self.max.is_some() {
            // Exactly, whatever the kinds: 2^53 + 1 is above a bound of 2^53, and
            // 18446744073709551615 is above 18446744073709551614. NaN is no number in range.
            if !v.is_number() || v.as_f64().is_some_and(f64::is_nan) {
                return NOT_NUMBER;
            }
            let against = |b: &Option<Value>| b.as_ref().and_then(|b| v.cmp_number(b.as_ref()));
            if against(&self.min) == Some(Ordering::Less) {
                return BELOW_MIN;
            }
            if against(&self.max) == Some(Ordering::Greater) {
                return ABOVE_MAX;
            }
        }
        if let Some(re) = &self.pattern {
            let ValueRef::Str(s) = original else { return PATTERN_NOT_STRING };
            if !re.is_match(s) {
                return NO_MATCH;
            }
        }
        if let Some(a) = &self.allowed {
            let ok = match v {
                ValueRef::Str(s) => a.strings.binary_search_by(|x| x.as_str().cmp(s)).is_ok(),
                ValueRef::Int(n) => a.ints.binary_search(&n).is_ok(),
                ValueRef::Float(x) => x.fract() == 0.0 && a.ints.binary_search(&(x as i64)).is_ok(),
                ValueRef::Bool(b) => a.bools.contains(&b),
                _ => false,
            };
            if !ok {
                return NOT_ALLOWED;
            }
        }
        0
    }
}

/// A value as JSON, cut at 60 characters, for reports.
pub(super) fn preview(v: ValueRef<'_>) -> String {
    const MAX: usize = 60;
    let s = v.to_string();
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// How many rows failed with each code, for the report: `counts[code - 1]`, and `whys`
/// what the codes mean.
pub(super) fn breakdown(counts: &[u64], whys: &[String]) -> String {
    let parts: Vec<String> =
        counts.iter().zip(whys).filter(|(n, _)| **n > 0).map(|(n, why)| format!("{why}: {n}")).collect();
    parts.join("; ")
}
