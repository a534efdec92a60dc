//! The pipeline file as a tree of values that remember where they were written.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// A value from the pipeline file, with its byte span.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfItem {
    /// The value.
    pub value: ConfValue,
    /// Where it was written (bytes of the file).
    pub span: Range<usize>,
}

/// The value of a [`ConfItem`].
#[derive(Debug, Clone, PartialEq)]
pub enum ConfValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A date or time, as written.
    Datetime(String),
    /// An array.
    Array(Vec<ConfItem>),
    /// A table.
    Table(ConfTable),
}

impl ConfValue {
    /// The name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConfValue::Str(_) => "a string",
            ConfValue::Int(_) => "an integer",
            ConfValue::Float(_) => "a float",
            ConfValue::Bool(_) => "a boolean",
            ConfValue::Datetime(_) => "a date-time",
            ConfValue::Array(_) => "an array",
            ConfValue::Table(_) => "a table",
        }
    }

    /// The value as JSON, with table keys sorted: the canonical form that cache keys hash.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ConfValue::Str(s) | ConfValue::Datetime(s) => serde_json::Value::String(s.clone()),
            ConfValue::Int(i) => (*i).into(),
            ConfValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| f.to_string().into(), serde_json::Value::Number)
            }
            ConfValue::Bool(b) => (*b).into(),
            ConfValue::Array(a) => a.iter().map(|i| i.value.to_json()).collect(),
            ConfValue::Table(t) => t.to_json(),
        }
    }
}

/// A table: keys in the order written, each with its span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfTable {
    /// The entries: (key, key's span, value).
    pub entries: Vec<(String, Range<usize>, ConfItem)>,
}

impl ConfTable {
    /// Parses TOML text, or returns the parser's message and the span it points at.
    pub fn parse(text: &str) -> Result<ConfTable, (String, Option<Range<usize>>)> {
        parse(text)
    }

    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&ConfItem> {
        self.entries.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v)
    }

    /// The table as JSON (keys sorted).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.entries.iter().map(|(k, _, v)| (k.clone(), v.value.to_json())).collect())
    }
}

/// Parses TOML text into a spanned tree, or the parser's message and span.
pub(crate) fn parse(text: &str) -> Result<ConfTable, (String, Option<Range<usize>>)> {
    let doc = DeTable::parse(text).map_err(|e| (e.message().to_owned(), e.span()))?;
    convert_table(doc.into_inner())
}

fn convert_table(t: DeTable<'_>) -> Result<ConfTable, (String, Option<Range<usize>>)> {
    let mut entries = Vec::with_capacity(t.len());
    for (k, v) in t {
        let key_span = k.span();
        let item = convert(v)?;
        entries.push((k.into_inner().into_owned(), key_span, item));
    }
    // Keys come out sorted; messages read better in the order the user wrote them.
    entries.sort_by_key(|(_, span, _)| span.start);
    Ok(ConfTable { entries })
}

fn convert(v: toml::Spanned<DeValue<'_>>) -> Result<ConfItem, (String, Option<Range<usize>>)> {
    let span = v.span();
    let value = match v.into_inner() {
        DeValue::String(s) => ConfValue::Str(s.into_owned()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            match i64::from_str_radix(&digits, i.radix()) {
                Ok(n) => ConfValue::Int(n),
                Err(_) => return Err((format!("integer `{i}` does not fit in 64 bits"), Some(span))),
            }
        }
        DeValue::Float(f) => {
            let text = f.as_str().replace('_', "");
            let x = match text.as_str() {
                "inf" | "+inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" | "+nan" | "-nan" => f64::NAN,
                t => t.parse().map_err(|_| (format!("`{f}` is not a number"), Some(span.clone())))?,
            };
            ConfValue::Float(x)
        }
        DeValue::Boolean(b) => ConfValue::Bool(b),
        DeValue::Datetime(d) => ConfValue::Datetime(d.to_string()),
        DeValue::Array(a) => ConfValue::Array(a.into_iter().map(convert).collect::<Result<_, _>>()?),
        DeValue::Table(t) => ConfValue::Table(convert_table(t)?),
    };
    Ok(ConfItem { value, span })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "a = 1\n[t]\nz = \"x\"\nb = [1.5, true]\n";
        let t = parse(text).unwrap();
        assert_eq!(t.entries[0].0, "a");
        let ConfValue::Table(inner) = &t.get("t").unwrap().value else { panic!() };
        let keys: Vec<&str> = inner.entries.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "b"]);
        let z = inner.get("z").unwrap();
        assert_eq!(&text[z.span.clone()], "\"x\"");
        assert_eq!(inner.to_json().to_string(), r#"{"b":[1.5,true],"z":"x"}"#);
    }

    #[test]
    fn syntax_errors_carry_a_span() {
        let (msg, span) = parse("a = \n").unwrap_err();
        assert!(!msg.is_empty());
        assert!(span.is_some());
    }
}
