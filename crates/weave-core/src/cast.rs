//! Casting a value to a type: the one set of rules for `fields`'s `cast` and `load_csv`'s
//! `types`, so that a value reads the same wherever it is typed.

use crate::conf::ConfValue;
use crate::params::Params;
use crate::value::{Value, ValueRef};

/// The table under `key` (`{ field = "type", ... }`), each type one of
/// [`CastType::NAMES`]; each problem an error at its place in the file. `None` when the
/// key is not there.
pub fn types_at(p: &Params, key: &str) -> Option<Vec<(String, CastType)>> {
    let item = p.item(key)?;
    let ConfValue::Table(t) = &item.value else {
        p.error_at(
            item,
            format!("`{key}` must be a table such as {{ score = \"float\" }}, not {}", item.value.type_name()),
        );
        return Some(Vec::new());
    };
    if t.entries.is_empty() {
        p.error_at(item, format!("`{key}` is empty: name the fields it applies to"));
    }
    let mut out = Vec::new();
    for (field, _, v) in &t.entries {
        match &v.value {
            ConfValue::Str(name) => match CastType::parse(name) {
                Some(t) => out.push((field.clone(), t)),
                None => {
                    p.error_at(
                        v,
                        format!("unknown type `{name}` for `{field}`; the types are {}", CastType::NAMES.join(", ")),
                    );
                }
            },
            other => {
                p.error_at(v, format!("`{key}.{field}` must name a type (a string), not {}", other.type_name()));
            }
        }
    }
    Some(out)
}

/// A type a value is cast to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CastType {
    /// Text: numbers and booleans as their text, lists and tables as JSON.
    Str,
    /// A whole number of any size.
    Int,
    /// A 64-bit float.
    Float,
    /// A boolean.
    Bool,
    /// Text read as JSON (a CSV field holding an object or a list).
    Json,
}

impl CastType {
    /// The names the types are written as.
    pub const NAMES: [&'static str; 5] = ["string", "int", "float", "bool", "json"];

    /// The type named `s` (one of [`CastType::NAMES`]).
    pub fn parse(s: &str) -> Option<CastType> {
        Some(match s {
            "string" => CastType::Str,
            "int" => CastType::Int,
            "float" => CastType::Float,
            "bool" => CastType::Bool,
            "json" => CastType::Json,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            CastType::Str => "string",
            CastType::Int => "int",
            CastType::Float => "float",
            CastType::Bool => "bool",
            CastType::Json => "json",
        }
    }
}

/// `v` as type `t`, or why not. Null stays null, and so does empty text cast to anything
/// but a string. Text is read with the whitespace around it trimmed; see the README's
/// table of kinds for each type's rules.
pub fn cast(v: ValueRef<'_>, t: CastType) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    // An empty CSV field is a missing value, as pandas and polars read it.
    if t != CastType::Str
        && let ValueRef::Str(s) = v
        && s.trim().is_empty()
    {
        return Ok(Value::Null);
    }
    match t {
        CastType::Str => Ok(match v {
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            other => Value::Str(other.to_string()),
        }),
        CastType::Int => match v {
            ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_) => Ok(v.to_owned()),
            ValueRef::Bool(b) => Ok(Value::Int(i64::from(b))),
            ValueRef::Float(f) => float_to_int(f).ok_or_else(|| format!("{v} is not a whole number")),
            ValueRef::Str(s) => match ValueRef::parse_number(s.trim()) {
                Some(n @ (ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_))) => Ok(n.to_owned()),
                Some(ValueRef::Float(f)) => float_to_int(f).ok_or_else(|| format!("{v} is not a whole number")),
                _ => Err(format!("{v} is not a number")),
            },
            _ => Err(format!("{v} is not a number")),
        },
        CastType::Float => match v {
            ValueRef::Int(i) => Ok(Value::Float(i as f64)),
            ValueRef::UInt(u) => Ok(Value::Float(u as f64)),
            ValueRef::Float(_) => Ok(v.to_owned()),
            ValueRef::Bool(b) => Ok(Value::Float(if b { 1.0 } else { 0.0 })),
            ValueRef::BigInt(s) | ValueRef::Str(s) => {
                s.trim().parse::<f64>().map(Value::Float).map_err(|_| format!("{v} is not a number"))
            }
            _ => Err(format!("{v} is not a number")),
        },
        CastType::Bool => match v {
            ValueRef::Bool(_) => Ok(v.to_owned()),
            ValueRef::Int(0) => Ok(Value::Bool(false)),
            ValueRef::Int(1) => Ok(Value::Bool(true)),
            ValueRef::Float(f) if f == 0.0 || f == 1.0 => Ok(Value::Bool(f == 1.0)),
            ValueRef::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "0" => Ok(Value::Bool(false)),
                _ => Err(format!("{v} is not true, false, yes, no, 1 or 0")),
            },
            _ => Err(format!("{v} is not true, false, yes, no, 1 or 0")),
        },
        CastType::Json => match v {
            ValueRef::Str(s) => Value::from_json(s).map_err(|e| format!("{v} is not JSON ({e})")),
            other => Ok(other.to_owned()),
        },
    }
}

/// A float that is a whole number in the 64-bit range, as an int.
fn float_to_int(f: f64) -> Option<Value> {
    // 2^63 as a float: the first value past `i64::MAX`.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then(|| Value::Int(f as i64))
}
