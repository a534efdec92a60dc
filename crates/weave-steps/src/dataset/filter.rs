//! The `filter` step: keeps the records whose field meets every condition.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use regex::Regex;
use weave_core::{
    Batch, CanonicalConfig, ConfItem, ConfValue, Params, Rejected, Shape, Step, StepContext, StepError, StepInfo,
    StepKind, Transform, Value, ValueRef,
};

/// The `filter` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "filter",
        Shape::Transform,
        "keep the records whose field equals a value, is in a list, matches a pattern or lies in a range (or, with not, the others)",
        ["field", "equals", "in", "matches", "min", "max", "not"],
        build,
    )
});

/// A value written in the pipeline file.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    /// An int or a float as written, compared exactly.
    Num(Value),
    Bool(bool),
}

impl std::fmt::Display for Lit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lit::Str(s) => write!(f, "{s:?}"),
            Lit::Num(n) => f.write_str(&crate::number_label(n)),
            Lit::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl Lit {
    /// Whether `v` equals this value, compared as this value's type: a string matches the
    /// field's text (the number 3 reads "3"), a number matches numerically (the string
    /// "3.0" from a CSV file equals 3), a boolean matches true / false or "true" / "false".
    fn matches(&self, v: ValueRef<'_>, buf: &mut String) -> bool {
        match (self, v) {
            (_, ValueRef::Null) => false,
            (Lit::Str(s), ValueRef::Str(x)) => s == x,
            (Lit::Str(s), other) => {
                text_of(other, buf);
                s == buf
            }
            (Lit::Num(n), other) => number_of(other).is_some_and(|x| x.cmp_number(n.as_ref()) == Some(Ordering::Equal)),
            (Lit::Bool(b), ValueRef::Bool(x)) => *b == x,
            (Lit::Bool(b), ValueRef::Str(x)) => x.trim() == if *b { "true" } else { "false" },
            (Lit::Bool(_), _) => false,
        }
    }
}

/// The text of a value that is not a string, written into a reused buffer.
fn text_of(v: ValueRef<'_>, buf: &mut String) {
    use std::fmt::Write;
    buf.clear();
    let _ = write!(buf, "{v}");
}

/// A value as a number: numbers as they are, strings read as numbers (CSV fields are
/// strings), exactly.
fn number_of(v: ValueRef<'_>) -> Option<ValueRef<'_>> {
    match v {
        ValueRef::Str(s) => ValueRef::parse_number(s.trim()),
        v if v.is_number() => Some(v),
        _ => None,
    }
}

#[derive(Debug)]
enum Cond {
    Equals(Lit),
    In { strs: HashSet<String>, others: Vec<Lit> },
    Matches(Regex),
    Min(Value),
    Max(Value),
}

/// One condition with the words that explain a drop.
#[derive(Debug)]
struct Check {
    cond: Cond,
    /// What holds when the condition does (`label == "a"`).
    holds: String,
    /// What holds when it does not (`label != "a"`): the drop reason.
    fails: String,
}

/// Keeps the records whose `field` meets every condition given (`equals`, `in`,
/// `matches`, `min`, `max`), or with `not = true` the records that do not. Dropped
/// records are counted (and kept for an exclusion file) under the condition that failed,
/// such as `split != "train"` or `score < 0.5`.
///
/// A null value meets no condition. `min` and `max` compare numbers, reading strings as
/// numbers (every CSV field is a string); a value that is not a number there is a bad
/// record, which `on_bad_record` decides about: it is never silently dropped.
#[derive(Debug)]
pub struct Filter {
    field: String,
    checks: Vec<Check>,
    not: bool,
    config: CanonicalConfig,
}

fn literal(p: &Params, key: &str, item: &ConfItem) -> Option<Lit> {
    match &item.value {
        ConfValue::Str(s) => Some(Lit::Str(s.clone())),
        ConfValue::Int(i) => Some(Lit::Num(Value::Int(*i))),
        ConfValue::Float(f) => Some(Lit::Num(Value::Float(*f))),
        ConfValue::Bool(b) => Some(Lit::Bool(*b)),
        other => {
            p.error_at(item, format!("`{key}` takes a string, a number or a boolean, not {}", other.type_name()));
            None
        }
    }
}

fn build(p: &Params) -> Option<Step> {
    let field = p.required_str("field", "the field the conditions test");
    let not = p.bool("not").unwrap_or(false);
    let name = field.clone().unwrap_or_default();
    let mut checks = Vec::new();
    if let Some(item) = p.item("equals")
        && let Some(lit) = literal(p, "equals", item)
    {
        checks.push(Check {
            holds: format!("{name} == {lit}"),
            fails: format!("{name} != {lit}"),
            cond: Cond::Equals(lit),
        });
    }
    if let Some(item) = p.item("in") {
        match &item.value {
            ConfValue::Array(a) if !a.is_empty() => {
                let lits: Vec<Lit> = a.iter().filter_map(|i| literal(p, "in", i)).collect();
                let shown: Vec<String> = lits.iter().take(5).map(Lit::to_string).collect();
                let more = if lits.len() > 5 { ", ..." } else { "" };
                let list = format!("[{}{more}]", shown.join(", "));
                let mut strs = HashSet::new();
                let mut others = Vec::new();
                for l in lits {
                    match l {
                        Lit::Str(s) => {
                            strs.insert(s);
                        }
                        l => others.push(l),
                    }
                }
                checks.push(Check {
                    holds: format!("{name} in {list}"),
                    fails: format!("{name} not in {list}"),
                    cond: Cond::In { strs, others },
                });
            }
            ConfValue::Array(_) => {
                p.error_at(item, "`in` is empty, so no record would be kept: list the values to keep");
            }
            other => {
                p.error_at(item, format!("`in` must be a list of values, not {}", other.type_name()));
            }
        }
    }
    if let Some(item) = p.item("matches") {
        match &item.value {
            ConfValue::Str(s) => match Regex::new(s) {
                Ok(re) => checks.push(Check {
                    holds: format!("{name} matches /{s}/"),
                    fails: format!("{name} does not match /{s}/"),
                    cond: Cond::Matches(re),
                }),
                Err(e) => {
                    let text = e.to_string();
                    let why = text.lines().last().unwrap_or_default().trim_start_matches("error: ").to_owned();
                    p.error_at(item, format!("`matches` is not a valid regular expression: {why}"));
                }
            },
            other => {
                p.error_at(
                    item,
                    format!("`matches` must be a regular expression (a string), not {}", other.type_name()),
                );
            }
        }
    }
    let min = p.number("min");
    let max = p.number("max");
    if let Some(m) = &min {
        let l = crate::number_label(m);
        checks.push(Check {
            holds: format!("{name} >= {l}"),
            fails: format!("{name} < {l}"),
            cond: Cond::Min(m.clone()),
        });
    }
    if let Some(m) = &max {
        let l = crate::number_label(m);
        checks.push(Check {
            holds: format!("{name} <= {l}"),
            fails: format!("{name} > {l}"),
            cond: Cond::Max(m.clone()),
        });
    }
    if let (Some(lo), Some(hi), Some(item)) = (&min, &max, p.item("max"))
        && hi.as_ref().cmp_number(lo.as_ref()) == Some(Ordering::Less)
    {
        let (hi, lo) = (crate::number_label(hi), crate::number_label(lo));
        p.error_at(item, format!("`max` ({hi}) is below `min` ({lo}), so no record would be kept"));
    }
    if checks.is_empty() && !p.has_errors() && field.is_some() {
        p.push(
            weave_core::Diagnostic::error(format!("filter on `{name}` has no condition"))
                .with_help("add `equals`, `in`, `matches`, `min` or `max`"),
        );
    }
    if p.has_errors() {
        return None;
    }
    Some(Step::Transform(Arc::new(Filter { field: field?, checks, not, config: p.canonical() })))
}

impl StepInfo for Filter {
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
        0.2
    }
}

/// What a condition says about one value.
enum Verdict {
    Holds,
    Fails,
    /// The value cannot be compared (a word where a number is needed).
    Bad,
}

impl Cond {
    fn test(&self, v: ValueRef<'_>, buf: &mut String) -> Verdict {
        let holds = match self {
            Cond::Equals(lit) => lit.matches(v, buf),
            Cond::In { strs, others } => {
                let s = match v {
                    ValueRef::Null => None,
                    ValueRef::Str(s) => Some(s),
                    other => {
                        text_of(other, buf);
                        Some(buf.as_str())
                    }
                };
                let hit = s.is_some_and(|s| strs.contains(s));
                hit || others.iter().any(|l| l.matches(v, &mut String::new()))
            }
            Cond::Matches(re) => match v {
                ValueRef::Null => false,
                ValueRef::Str(s) => re.is_match(s),
                other => {
                    text_of(other, buf);
                    re.is_match(buf)
                }
            },
            Cond::Min(m) | Cond::Max(m) => {
                if v.is_null() {
                    return Verdict::Fails;
                }
                let Some(x) = number_of(v) else { return Verdict::Bad };
                // Exactly; NaN is in no range.
                match (self, x.cmp_number(m.as_ref())) {
                    (_, None) => false,
                    (Cond::Min(_), Some(o)) => o != Ordering::Less,
                    (_, Some(o)) => o != Ordering::Greater,
                }
            }
        };
        if holds { Verdict::Holds } else { Verdict::Fails }
    }
}

impl Transform for Filter {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let col = super::column(batch, &self.field)?;
        let mut keep = vec![true; batch.len()];
        let mut buf = String::new();
        let not_reason = || {
            let all: Vec<&str> = self.checks.iter().map(|c| c.holds.as_str()).collect();
            format!("not ({})", all.join(" and "))
        };
        for (row, k) in keep.iter_mut().enumerate() {
            let v = col.get(row);
            let mut failed = None;
            for c in &self.checks {
                match c.cond.test(v, &mut buf) {
                    Verdict::Holds => {}
                    Verdict::Fails => {
                        failed = Some(c);
                        break;
                    }
                    Verdict::Bad => {
                        *k = false;
                        ctx.reject(Rejected {
                            reason: format!("`{}` is not a number: {v}", self.field),
                            record: Some(batch.row(row).to_record()),
                            origin: None,
                        });
                        break;
                    }
                }
            }
            if !*k {
                continue;
            }
            match (failed, self.not) {
                (None, false) | (Some(_), true) => {}
                (Some(c), false) => {
                    *k = false;
                    ctx.drop_record(&c.fails, || batch.row(row).to_record());
                }
                (None, true) => {
                    *k = false;
                    ctx.drop_record(&not_reason(), || batch.row(row).to_record());
                }
            }
        }
        Ok(batch.filter(&keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::Record;

    /// Filters `records` and returns the kept ids, the drop counts by reason, and the
    /// rejected records' reasons.
    fn check(config: &str, records: &[Record]) -> (Vec<String>, Vec<(String, u64)>, Vec<String>) {
        let Step::Transform(t) = build_step("filter", config) else { panic!("filter is a transform") };
        let mut ctx = StepContext::new("filter", 0, 0, Default::default()).keeping_dropped(true);
        let out = t.apply(&Batch::from_records(records), &mut ctx).unwrap();
        let ids = out.to_records().iter().map(|r| r.get("id").map(ToString::to_string).unwrap_or_default()).collect();
        let excluded = ctx.take_excluded();
        let dropped = ctx.take_dropped();
        assert_eq!(excluded.len() as u64, dropped.iter().map(|(_, n)| n).sum::<u64>(), "every drop keeps its record");
        (ids, dropped, ctx.take_rejected().into_iter().map(|r| r.reason).collect())
    }

    fn rec(id: i64, split: &str, score: impl Into<weave_core::Value>) -> Record {
        Record::new().with("id", id).with("split", split).with("score", score)
    }

    fn data() -> Vec<Record> {
        vec![rec(1, "train", 0.9), rec(2, "test", 0.2), rec(3, "train", 0.4), rec(4, "validation", 0.7)]
    }

    #[test]
    fn equals_keeps_one_split_and_names_the_reason() {
        let (ids, dropped, _) = check("field = \"split\"\nequals = \"train\"", &data());
        assert_eq!(ids, ["1", "3"]);
        assert_eq!(dropped, [("split != \"train\"".to_owned(), 2)]);
        let (ids, dropped, _) = check("field = \"split\"\nequals = \"train\"\nnot = true", &data());
        assert_eq!(ids, ["2", "4"]);
        assert_eq!(dropped, [("not (split == \"train\")".to_owned(), 2)]);
    }

    #[test]
    fn in_matches_and_ranges_combine() {
        let (ids, _, _) = check("field = \"split\"\nin = [\"test\", \"validation\"]", &data());
        assert_eq!(ids, ["2", "4"]);
        let (ids, _, _) = check("field = \"split\"\nmatches = \"^t\"", &data());
        assert_eq!(ids, ["1", "2", "3"]);
        let (ids, dropped, _) = check("field = \"score\"\nmin = 0.3\nmax = 0.8", &data());
        assert_eq!(ids, ["3", "4"]);
        assert_eq!(dropped, [("score > 0.8".to_owned(), 1), ("score < 0.3".to_owned(), 1)]);
    }

    #[test]
    fn values_compare_as_the_condition_s_type() {
        // CSV fields are strings: numbers in them compare as numbers.
        let csv = vec![rec(1, "a", "3.0"), rec(2, "b", " 12 "), rec(3, "c", "3")];
        let (ids, _, _) = check("field = \"score\"\nequals = 3", &csv);
        assert_eq!(ids, ["1", "3"]);
        let (ids, _, _) = check("field = \"score\"\nmin = 10", &csv);
        assert_eq!(ids, ["2"]);
        // A string condition matches a number's text; booleans match "true".
        let (ids, _, _) = check("field = \"id\"\nin = [\"2\", 4]", &data());
        assert_eq!(ids, ["2", "4"]);
        let flags = vec![
            Record::new().with("id", 1i64).with("ok", true),
            Record::new().with("id", 2i64).with("ok", false),
            Record::new().with("id", 3i64).with("ok", "true"),
        ];
        let (ids, _, _) = check("field = \"ok\"\nequals = true", &flags);
        assert_eq!(ids, ["1", "3"]);
    }

    // regression: numbers compared as floats, so 2^53 + 1 passed `max = 9007199254740992`
    // and equalled its neighbour.
    #[test]
    fn numbers_compare_exactly_at_any_size() {
        use weave_core::Value;
        let rows = vec![
            rec(1, "a", Value::Int(9_007_199_254_740_993)),
            rec(2, "b", Value::Int(9_007_199_254_740_992)),
            rec(3, "c", Value::UInt(u64::MAX)),
            rec(4, "d", "9007199254740993"),
            rec(5, "e", Value::Float(f64::NAN)),
        ];
        let (ids, dropped, _) = check("field = \"score\"\nmax = 9007199254740992", &rows);
        assert_eq!(ids, ["2"]);
        assert_eq!(dropped, [("score > 9007199254740992".to_owned(), 4)], "NaN is in no range");
        let (ids, _, _) = check("field = \"score\"\nequals = 9007199254740993", &rows);
        assert_eq!(ids, ["1", "4"]);
        let (ids, _, _) = check("field = \"score\"\nmin = 9223372036854775807", &rows);
        assert_eq!(ids, ["3"]);
    }

    #[test]
    fn nulls_meet_no_condition_and_words_in_a_range_are_bad_records() {
        let rows = vec![
            rec(1, "a", 1.0),
            Record::new().with("id", 2i64).with("split", "b").with("score", weave_core::Value::Null),
            rec(3, "c", "n/a"),
        ];
        let (ids, dropped, rejected) = check("field = \"score\"\nmin = 0", &rows);
        assert_eq!(ids, ["1"]);
        assert_eq!(dropped, [("score < 0".to_owned(), 1)]);
        assert_eq!(rejected, ["`score` is not a number: \"n/a\""]);
        let (ids, _, _) = check("field = \"score\"\nequals = 1\nnot = true", &rows);
        assert_eq!(ids, ["2", "3"], "with not, a null (which meets nothing) is kept");
    }

    #[test]
    fn bad_conditions_are_named() {
        check_build_errors(
            "filter",
            "equals = [1]\nin = []\nmatches = \"(\"\nmin = 5\nmax = 1\nnott = true",
            &[
                "1:1 missing required key `field` (the field the conditions test)",
                "1:10 `equals` takes a string, a number or a boolean, not an array",
                "2:6 `in` is empty, so no record would be kept: list the values to keep",
                "3:11 `matches` is not a valid regular expression: unclosed group",
                "5:7 `max` (1) is below `min` (5), so no record would be kept",
                "6:1 unknown key `nott` in step",
            ],
        );
        check_build_errors("filter", "field = \"x\"", &["- filter on `x` has no condition"]);
        let Step::Transform(t) = build_step("filter", "field = \"splt\"\nequals = \"train\"") else { panic!() };
        let mut ctx = StepContext::new("filter", 0, 0, Default::default());
        let err = t.apply(&Batch::from_records(&data()), &mut ctx).unwrap_err();
        assert_eq!(err.to_string(), "field `splt` is not in the data (fields: id, split, score)");
    }
}
