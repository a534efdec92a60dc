//! Prompt templates: text with `{variable}`s, every variable checked when the pipeline is
//! built, filled from each record when the step runs.

use weave_core::{Batch, ConfValue, Params, StepError, ValueRef};

/// What a variable of a template stands for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Var {
    /// A value known when the step is built (a noiser's style, the judge's criteria).
    Fixed(String),
    /// A field of each record, cut to `max_chars` characters if given.
    Field { name: String, max_chars: Option<usize> },
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field { name: String, max_chars: Option<usize> },
}

/// A compiled template: fixed variables already filled in, record fields left to fill.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prompt {
    pieces: Vec<Piece>,
    /// The variables it uses, by name, in order of first use.
    vars: Vec<String>,
}

impl Prompt {
    /// Compiles `src`, asking `resolve` what each variable stands for; every problem is
    /// returned (an unclosed brace, a variable `resolve` does not know).
    pub(crate) fn compile(src: &str, resolve: &dyn Fn(&str) -> Result<Var, String>) -> Result<Prompt, Vec<String>> {
        let parsed = weave_core::parse_template(src, "variable").map_err(|e| vec![e.to_string()])?;
        let mut pieces: Vec<Piece> = Vec::new();
        let mut vars: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        let push_text = |pieces: &mut Vec<Piece>, t: &str| match pieces.last_mut() {
            Some(Piece::Text(prev)) => prev.push_str(t),
            _ => pieces.push(Piece::Text(t.to_owned())),
        };
        for part in parsed {
            let s = match part {
                weave_core::TemplatePart::Text(t) => {
                    push_text(&mut pieces, &t);
                    continue;
                }
                weave_core::TemplatePart::Name { name, .. } => name,
            };
            if !vars.contains(&s) {
                vars.push(s.clone());
            }
            match resolve(&s) {
                Ok(Var::Fixed(v)) => push_text(&mut pieces, &v),
                Ok(Var::Field { name, max_chars }) => pieces.push(Piece::Field { name, max_chars }),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(Prompt { pieces, vars }) } else { Err(errors) }
    }

    /// Whether the template uses variable `name`.
    pub(crate) fn uses(&self, name: &str) -> bool {
        self.vars.iter().any(|v| v == name)
    }

    /// Whether its fixed text mentions `word` (ASCII case ignored).
    pub(crate) fn mentions(&self, word: &str) -> bool {
        let word = word.to_ascii_lowercase();
        self.pieces.iter().any(|p| matches!(p, Piece::Text(t) if t.to_ascii_lowercase().contains(&word)))
    }

    /// The record fields it reads, each once.
    pub(crate) fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.pieces {
            if let Piece::Field { name, .. } = p
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        out
    }

    /// The column of each field the template reads, in `batch`; a field the batch does
    /// not have is an error naming it.
    pub(crate) fn columns(&self, batch: &Batch) -> Result<Vec<usize>, StepError> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Field { name, .. } => {
                    Some(batch.schema().index_of(name).ok_or_else(|| crate::missing_field(batch, name)))
                }
                Piece::Text(_) => None,
            })
            .collect()
    }

    /// Appends the template filled from row `row` of `batch` (`columns` from
    /// [`Prompt::columns`]) to `out`. A null field is the record's problem: the reason is
    /// returned.
    pub(crate) fn render(&self, batch: &Batch, columns: &[usize], row: usize, out: &mut String) -> Result<(), String> {
        let mut c = columns.iter();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field { name, max_chars } => {
                    let Some(&col) = c.next() else { return Err("internal: template columns do not match".into()) };
                    let start = out.len();
                    match batch.columns()[col].get(row) {
                        ValueRef::Null => return Err(format!("field `{name}` is null")),
                        ValueRef::Str(s) => out.push_str(s),
                        v => {
                            use std::fmt::Write as _;
                            let _ = write!(out, "{v}");
                        }
                    }
                    if let Some(max) = max_chars
                        && let Some((cut, _)) = out[start..].char_indices().nth(*max)
                    {
                        out.truncate(start + cut);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Reads the template at `key` (or `default` when the key is absent), resolving its
/// variables with `resolve`; problems are recorded at the key's value.
pub(crate) fn read(
    p: &Params,
    key: &str,
    default: Option<&str>,
    resolve: &dyn Fn(&str) -> Result<Var, String>,
) -> Option<Prompt> {
    let Some(item) = p.item(key) else {
        let d = default?;
        return match Prompt::compile(d, resolve) {
            Ok(prompt) => Some(prompt),
            Err(e) => {
                p.push(weave_core::Diagnostic::error(format!("internal: the default `{key}` does not compile: {e:?}")));
                None
            }
        };
    };
    let ConfValue::Str(src) = &item.value else {
        p.error_at(item, format!("`{key}` must be a template (a string), not {}", item.value.type_name()));
        return None;
    };
    match Prompt::compile(src, resolve) {
        Ok(prompt) => Some(prompt),
        Err(errors) => {
            for e in errors {
                p.error_at(item, format!("`{key}`: {e}"));
            }
            None
        }
    }
}

/// The error for a variable that is none of `known`, with a suggestion.
pub(crate) fn unknown_var(name: &str, known: &[&str]) -> String {
    let mut msg = format!("unknown variable `{{{name}}}`");
    match weave_core::did_you_mean(name, known.iter().copied()) {
        Some(m) => msg.push_str(&format!(" (did you mean `{{{m}}}`?)")),
        None => {
            let list: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
            msg.push_str(&format!("; the variables are {}", list.join(", ")));
        }
    }
    msg.push_str(" (write `{{` and `}}` for braces)");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::Record;

    fn fields_and(fixed: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Result<Var, String> {
        move |name: &str| match fixed.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => Ok(Var::Fixed((*v).to_owned())),
            None if name == "text" => Ok(Var::Field { name: "body".into(), max_chars: None }),
            None if name == "context" => Ok(Var::Field { name: "doc".into(), max_chars: Some(5) }),
            None => Err(unknown_var(name, &["text", "context", "style"])),
        }
    }

    #[test]
    fn fixed_variables_are_filled_in_and_fields_per_record() {
        let p =
            Prompt::compile("{style}: {text} [{context}] {{json}}", &fields_and(&[("style", "Be {brief}")])).unwrap();
        assert!(p.uses("style") && p.uses("text") && !p.uses("other"));
        assert_eq!(p.fields(), ["body", "doc"]);
        let batch = Batch::from_records(&[
            Record::new().with("body", "hello").with("doc", "héllo wörld").with("n", 3i64),
            Record::new().with("body", weave_core::Value::Null).with("doc", "x").with("n", 4i64),
        ]);
        let cols = p.columns(&batch).unwrap();
        let mut out = String::new();
        p.render(&batch, &cols, 0, &mut out).unwrap();
        assert_eq!(
            out, "Be {brief}: hello [héllo] {json}",
            "fixed values are not parsed again; context cut to 5 chars"
        );
        assert_eq!(p.render(&batch, &cols, 1, &mut String::new()), Err("field `body` is null".into()));
    }

    #[test]
    fn non_text_values_are_written_as_json() {
        let p = Prompt::compile("{n} {tags}", &|n: &str| Ok(Var::Field { name: n.into(), max_chars: None })).unwrap();
        let batch = Batch::from_records(&[Record::new()
            .with("n", 3i64)
            .with("tags", weave_core::Value::List(vec!["a".into(), weave_core::Value::Bool(true)]))]);
        let mut out = String::new();
        p.render(&batch, &p.columns(&batch).unwrap(), 0, &mut out).unwrap();
        assert_eq!(out, r#"3 ["a",true]"#);
        let missing = Prompt::compile("{nope}", &|n: &str| Ok(Var::Field { name: n.into(), max_chars: None })).unwrap();
        let err = missing.columns(&batch).unwrap_err().to_string();
        assert_eq!(err, "field `nope` is not in the data (fields: n, tags)");
    }

    #[test]
    fn mistakes_are_all_named() {
        let errs = Prompt::compile("{styel} {txt} {", &fields_and(&[("style", "x")])).unwrap_err();
        assert_eq!(errs, ["the `{` at character 15 opens a variable that is not closed (write `{{` for a brace)"]);
        let errs = Prompt::compile("{styel} {txt} {zzz}", &fields_and(&[("style", "x")])).unwrap_err();
        assert_eq!(
            errs,
            [
                "unknown variable `{styel}` (did you mean `{style}`?) (write `{{` and `}}` for braces)",
                "unknown variable `{txt}` (did you mean `{text}`?) (write `{{` and `}}` for braces)",
                "unknown variable `{zzz}`; the variables are {text}, {context}, {style} (write `{{` and `}}` for braces)",
            ]
        );
    }
}
