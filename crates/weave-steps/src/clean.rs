//! The `clean` step: rewriting and filtering rules applied to text fields.

use weave_core::{
    Batch, CanonicalConfig, Column, ConfValue, Params, Shape, Step, StepContext, StepError, StepInfo, StepKind,
    StrColumn, Transform,
};

use crate::text::{collapse_into, lowercase_into, trim_collapse_into, trim_into};

/// The `clean` kind.
pub(crate) const KIND: StepKind = StepKind {
    name: "clean",
    shape: Shape::Transform,
    summary: "rewrite text fields (trim, collapse_whitespace, lowercase) and drop records by length",
    keys: &["rules", "fields"],
    build,
};

/// The rules a `clean` step knows.
const REWRITES: &[&str] = &["trim", "collapse_whitespace", "lowercase"];
const FILTERS: &[&str] = &["min_chars", "max_chars", "min_words", "max_words"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Trim,
    Collapse,
    /// Trim and collapse in one pass (written as `trim` then `collapse_whitespace`, or the
    /// other way round: the result is the same).
    TrimCollapse,
    Lowercase,
    MinChars(u64),
    MaxChars(u64),
    MinWords(u64),
    MaxWords(u64),
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Trim => "trim",
            Rule::Collapse => "collapse_whitespace",
            Rule::TrimCollapse => "trim+collapse_whitespace",
            Rule::Lowercase => "lowercase",
            Rule::MinChars(_) => "min_chars",
            Rule::MaxChars(_) => "max_chars",
            Rule::MinWords(_) => "min_words",
            Rule::MaxWords(_) => "max_words",
        }
    }
}

/// Rewrites text fields and drops records by length, rule by rule in the order written.
#[derive(Debug)]
pub struct Clean {
    rules: Vec<Rule>,
    /// The fields to clean; `None` means every string field.
    fields: Option<Vec<String>>,
    config: CanonicalConfig,
}

fn build(p: &Params) -> Option<Step> {
    let fields = p.str_list("fields");
    let mut rules = Vec::new();
    match p.item("rules") {
        None => {
            p.push(weave_core::Diagnostic::error(
                "missing required key `rules` (the cleaning rules, such as [\"trim\", \"collapse_whitespace\"])",
            ));
        }
        Some(item) => match &item.value {
            ConfValue::Array(items) => {
                for it in items {
                    match &it.value {
                        ConfValue::Str(s) => match s.as_str() {
                            "trim" => rules.push(Rule::Trim),
                            "collapse_whitespace" => rules.push(Rule::Collapse),
                            "lowercase" => rules.push(Rule::Lowercase),
                            other => {
                                let mut msg = format!("unknown cleaning rule \"{other}\"");
                                if FILTERS.contains(&other) {
                                    msg.push_str(&format!(": `{other}` takes a number, write {{ {other} = 20 }}"));
                                } else if let Some(m) =
                                    weave_core::did_you_mean(other, REWRITES.iter().chain(FILTERS).copied())
                                {
                                    msg.push_str(&format!(" (did you mean \"{m}\"?)"));
                                }
                                p.error_at(it, msg);
                            }
                        },
                        ConfValue::Table(t) if t.entries.len() == 1 => {
                            let (name, _, v) = &t.entries[0];
                            let n = match &v.value {
                                _ if name == "dedup" => 0,
                                ConfValue::Int(n) if *n >= 0 => *n as u64,
                                _ => {
                                    p.error_at(v, format!("`{name}` must be a non-negative integer"));
                                    continue;
                                }
                            };
                            match name.as_str() {
                                "min_chars" => rules.push(Rule::MinChars(n)),
                                "max_chars" => rules.push(Rule::MaxChars(n)),
                                "min_words" => rules.push(Rule::MinWords(n)),
                                "max_words" => rules.push(Rule::MaxWords(n)),
                                "dedup" => {
                                    p.error_at(
                                        it,
                                        "dedup is a step of its own (it remembers what it saw, cleaning does not, so cleaning can run in parallel): add a step with kind = \"dedup\" and fields = [...] after this one",
                                    );
                                }
                                other => {
                                    let mut msg = format!("unknown cleaning rule `{other}`");
                                    if let Some(m) =
                                        weave_core::did_you_mean(other, FILTERS.iter().chain(REWRITES).copied())
                                    {
                                        msg.push_str(&format!(" (did you mean `{m}`?)"));
                                    }
                                    p.error_at(it, msg);
                                }
                            }
                        }
                        _ => {
                            p.error_at(
                                it,
                                "a rule is a name (\"trim\") or a table with one number ({ min_chars = 20 })",
                            );
                        }
                    }
                }
            }
            other => {
                p.error_at(item, format!("`rules` must be a list, not {}", other.type_name()));
            }
        },
    }
    if p.has_errors() {
        return None;
    }
    // Adjacent trim and collapse become one pass.
    let mut fused: Vec<Rule> = Vec::with_capacity(rules.len());
    for r in rules {
        match (fused.last(), r) {
            (Some(Rule::Trim), Rule::Collapse) | (Some(Rule::Collapse), Rule::Trim) => {
                fused.pop();
                fused.push(Rule::TrimCollapse);
            }
            _ => fused.push(r),
        }
    }
    Some(Step::Transform(std::sync::Arc::new(Clean { rules: fused, fields, config: p.canonical(&[]) })))
}

impl StepInfo for Clean {
    fn kind(&self) -> &str {
        KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
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
                Rule::Trim | Rule::Collapse | Rule::TrimCollapse | Rule::Lowercase => {
                    let f: fn(&str, &mut weave_core::Appender<'_>) = match rule {
                        Rule::Trim => trim_into,
                        Rule::Collapse => collapse_into,
                        Rule::TrimCollapse => trim_collapse_into,
                        _ => lowercase_into,
                    };
                    for name in &names {
                        let Some(col) = text_column(&out, name)? else { continue };
                        let mut new = StrColumn::with_capacity(col.len(), col.data().len());
                        for v in col.iter() {
                            match v {
                                Some(s) => new.push_with(|a| f(s, a)),
                                None => new.push_null(),
                            }
                        }
                        out =
                            out.with_column(name, Column::Str(new)).map_err(|e| StepError::internal(e.to_string()))?;
                    }
                }
                Rule::MinChars(_) | Rule::MaxChars(_) | Rule::MinWords(_) | Rule::MaxWords(_) => {
                    let mut keep = vec![true; out.len()];
                    for name in &names {
                        let Some(col) = text_column(&out, name)? else {
                            // A column of nulls: every value has length 0.
                            if matches!(rule, Rule::MinChars(n) | Rule::MinWords(n) if *n > 0) {
                                keep.iter_mut().for_each(|k| *k = false);
                            }
                            continue;
                        };
                        for (k, v) in keep.iter_mut().zip(col.iter()) {
                            let s = v.unwrap_or("");
                            let ok = match *rule {
                                Rule::MinChars(n) => at_least_chars(s, n),
                                Rule::MaxChars(n) => !at_least_chars(s, n + 1),
                                Rule::MinWords(n) => s.split_whitespace().count() as u64 >= n,
                                Rule::MaxWords(n) => s.split_whitespace().count() as u64 <= n,
                                _ => true,
                            };
                            *k &= ok;
                        }
                    }
                    let dropped = keep.iter().filter(|k| !**k).count() as u64;
                    ctx.count_dropped(rule.name(), dropped);
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

/// The string column `name`, `None` for a column of nulls, or an error naming the field.
fn text_column<'b>(batch: &'b Batch, name: &str) -> Result<Option<&'b StrColumn>, StepError> {
    match batch.column(name) {
        Some(Column::Str(c)) => Ok(Some(c)),
        Some(Column::Null(_)) => Ok(None),
        Some(other) => Err(StepError::fatal(format!(
            "field `{name}` holds {} values; `clean` works on strings",
            other.data_type()
        ))),
        None => {
            let known: Vec<&str> = batch.schema().names().collect();
            Err(StepError::fatal(format!("field `{name}` is not in the data (fields: {})", known.join(", "))))
        }
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
        let (rows, dropped) =
            run("rules = [\"trim\", \"collapse_whitespace\", \"lowercase\", { min_chars = 3 }]", &recs);
        assert_eq!(rows, [r#"{"text":"hello world","n":1}"#]);
        assert_eq!(dropped, [("min_chars".to_owned(), 2)]);
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
                "1:78 a rule is a name (\"trim\") or a table with one number ({ min_chars = 20 })",
                "1:81 unknown cleaning rule \"min_chars\": `min_chars` takes a number, write { min_chars = 20 }",
                "2:1 unknown key `filds` in step",
            ],
        );
    }
}
