//! Casting a value to a type: the one set of rules for `fields`'s `cast` and `load_csv`'s
//! `types`, so that a value reads the same wherever it is typed.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::conf::{ConfTable, ConfValue};
use crate::params::Params;
use crate::scalar::{Decimal, MAX_DECIMAL_PRECISION, TimeUnit, Timestamp, date_of_days, days_of_date};
use crate::value::{TextForm, Value, ValueRef};

/// The table under `key` (`{ field = "type", ... }`), each type one of
/// [`CastType::NAMES`] (or `"decimal(P, S)"`, `"timestamp(UNIT)"`), or a table that also
/// gives a format (`{ type = "timestamp", format = "%d/%m/%Y %H:%M", unit = "ms", zone =
/// "UTC" }`); each problem an error at its place in the file. `None` when the key is not
/// there.
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
                Ok(t) => out.push((field.clone(), t)),
                Err(why) => {
                    p.error_at(v, format!("`{key}.{field}`: {why}"));
                }
            },
            ConfValue::Table(table) => match CastType::from_table(table) {
                Ok(t) => out.push((field.clone(), t)),
                Err(why) => {
                    p.error_at(v, format!("`{key}.{field}`: {why}"));
                }
            },
            other => {
                p.error_at(
                    v,
                    format!(
                        "`{key}.{field}` must name a type (a string) or be a table with `type`, not {}",
                        other.type_name()
                    ),
                );
            }
        }
    }
    Some(out)
}

/// A type a value is cast to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// A date: ISO 8601 text (`2024-05-01`) or text in `format` (chrono's strftime).
    Date {
        /// The format of the text, when not ISO 8601.
        format: Option<String>,
    },
    /// A timestamp in `unit`: RFC 3339 / ISO 8601 text (`2024-05-01T12:30:00Z`, a space
    /// for the `T`, an offset or none, a date alone for midnight) or text in `format`.
    Timestamp {
        /// The unit of the values.
        unit: TimeUnit,
        /// `UTC` or a fixed offset (`+02:00`): text without an offset is a time there, and
        /// the values carry the zone. Without it, text with an offset is an instant (zone
        /// `UTC`) and text without one a wall-clock time in no zone.
        zone: Option<String>,
        /// The format of the text (chrono's strftime), when not RFC 3339.
        format: Option<String>,
    },
    /// A decimal of `precision` digits, `scale` of them after the point, exactly: a value
    /// with more places is an error, not rounded.
    Decimal {
        /// The most digits.
        precision: u8,
        /// The digits after the point.
        scale: i8,
    },
}

impl CastType {
    /// The names the types are written as (`decimal` takes its precision and scale:
    /// `decimal(10, 2)`; `timestamp` may take a unit: `timestamp(ms)`).
    pub const NAMES: [&'static str; 8] =
        ["string", "int", "float", "bool", "json", "date", "timestamp", "decimal(P, S)"];

    /// The type written `s`, or why it is none.
    pub fn parse(s: &str) -> Result<CastType, String> {
        let unknown = || format!("unknown type `{s}`; the types are {}", CastType::NAMES.join(", "));
        let (name, args) = match s.split_once('(') {
            Some((name, rest)) => {
                let args = rest.strip_suffix(')').ok_or_else(unknown)?;
                (name.trim(), Some(args.split(',').map(str::trim).collect::<Vec<_>>()))
            }
            None => (s.trim(), None),
        };
        Ok(match (name, args.as_deref()) {
            ("string", None) => CastType::Str,
            ("int", None) => CastType::Int,
            ("float", None) => CastType::Float,
            ("bool", None) => CastType::Bool,
            ("json", None) => CastType::Json,
            ("date", None) => CastType::Date { format: None },
            ("timestamp", None) => CastType::Timestamp { unit: TimeUnit::Microsecond, zone: None, format: None },
            ("timestamp", Some([unit])) => CastType::Timestamp { unit: unit_named(unit)?, zone: None, format: None },
            ("timestamp", Some([unit, zone])) => {
                CastType::Timestamp { unit: unit_named(unit)?, zone: Some(zone_named(zone)?), format: None }
            }
            ("decimal", Some([p, s])) => {
                let precision: u8 = p.parse().map_err(|_| format!("a decimal's precision is a number, not `{p}`"))?;
                let scale: i8 = s.parse().map_err(|_| format!("a decimal's scale is a number, not `{s}`"))?;
                decimal(precision, scale)?
            }
            ("decimal", None) => return Err("`decimal` needs its precision and scale: `decimal(10, 2)`".to_owned()),
            _ => return Err(unknown()),
        })
    }

    /// The type a table describes: `type` (as [`CastType::parse`] reads it), and for a
    /// date or a timestamp `format`, for a timestamp `unit` and `zone`, for a decimal
    /// `precision` and `scale`.
    pub fn from_table(t: &ConfTable) -> Result<CastType, String> {
        let get = |k: &str| t.entries.iter().find(|(key, _, _)| key == k).map(|(_, _, v)| &v.value);
        if let Some((k, _, _)) = t
            .entries
            .iter()
            .find(|(k, _, _)| !["type", "format", "unit", "zone", "precision", "scale"].contains(&k.as_str()))
        {
            return Err(format!("unknown key `{k}`; a type's table has type, format, unit, zone, precision, scale"));
        }
        let text = |k: &str| match get(k) {
            None => Ok(None),
            Some(ConfValue::Str(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("`{k}` must be a string, not {}", other.type_name())),
        };
        let int = |k: &str| match get(k) {
            None => Ok(None),
            Some(ConfValue::Int(i)) => Ok(Some(*i)),
            Some(other) => Err(format!("`{k}` must be an integer, not {}", other.type_name())),
        };
        let name = text("type")?.ok_or("the table needs `type`")?;
        let format = text("format")?;
        if let Some(f) = &format {
            check_format(f)?;
        }
        let only = |keys: &[&str], ty: &str| match keys.iter().find(|k| get(k).is_some()) {
            Some(k) => Err(format!("`{k}` does not apply to {ty}")),
            None => Ok(()),
        };
        Ok(match name.as_str() {
            "date" => {
                only(&["unit", "zone", "precision", "scale"], "a date")?;
                CastType::Date { format }
            }
            "timestamp" => {
                only(&["precision", "scale"], "a timestamp")?;
                let unit = text("unit")?.map(|u| unit_named(&u)).transpose()?.unwrap_or(TimeUnit::Microsecond);
                let zone = text("zone")?.map(|z| zone_named(&z)).transpose()?;
                CastType::Timestamp { unit, zone, format }
            }
            "decimal" => {
                only(&["format", "unit", "zone"], "a decimal")?;
                let precision = int("precision")?.ok_or("a decimal needs `precision`")?;
                let scale = int("scale")?.unwrap_or(0);
                let precision =
                    u8::try_from(precision).map_err(|_| format!("precision {precision} is out of range"))?;
                let scale = i8::try_from(scale).map_err(|_| format!("scale {scale} is out of range"))?;
                decimal(precision, scale)?
            }
            other => {
                only(&["format", "unit", "zone", "precision", "scale"], "this type")?;
                CastType::parse(other)?
            }
        })
    }

    /// Its name, as messages print it (`decimal(10, 2)`, `timestamp(ms)`).
    pub fn name(&self) -> String {
        match self {
            CastType::Str => "string".into(),
            CastType::Int => "int".into(),
            CastType::Float => "float".into(),
            CastType::Bool => "bool".into(),
            CastType::Json => "json".into(),
            CastType::Date { .. } => "date".into(),
            CastType::Timestamp { unit, zone: None, .. } => format!("timestamp({})", unit.name()),
            CastType::Timestamp { unit, zone: Some(z), .. } => format!("timestamp({}, {z})", unit.name()),
            CastType::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
        }
    }
}

fn unit_named(s: &str) -> Result<TimeUnit, String> {
    TimeUnit::parse(s).ok_or_else(|| format!("unknown time unit `{s}`; the units are {}", TimeUnit::NAMES.join(", ")))
}

/// A zone a timestamp cast can apply: `UTC` or a fixed offset.
fn zone_named(s: &str) -> Result<String, String> {
    if s == "UTC" || offset_seconds(s).is_some() {
        Ok(s.to_owned())
    } else {
        Err(format!("zone `{s}` is not `UTC` or an offset such as `+02:00` (zone names need a time zone database)"))
    }
}

/// The seconds east of UTC of an offset written `+HH:MM` or `-HH:MM` (`UTC`: 0).
fn offset_seconds(s: &str) -> Option<i32> {
    if s == "UTC" || s == "Z" {
        return Some(0);
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = s[1..].split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(sign * (h * 3600 + m * 60))
}

fn decimal(precision: u8, scale: i8) -> Result<CastType, String> {
    if precision == 0 || precision > MAX_DECIMAL_PRECISION {
        return Err(format!("a decimal's precision must be 1 to {MAX_DECIMAL_PRECISION}, not {precision}"));
    }
    if i16::from(scale) > i16::from(precision) {
        return Err(format!("a decimal's scale ({scale}) cannot exceed its precision ({precision})"));
    }
    Ok(CastType::Decimal { precision, scale })
}

/// A strftime format chrono can use, or what is wrong with it.
fn check_format(f: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        return Err(format!("format `{f}` is not a valid strftime format"));
    }
    Ok(())
}

/// `v` as type `t`, or why not. Null stays null, and so does empty text cast to anything
/// but a string. Text is read with the whitespace around it trimmed; see the README's
/// table of kinds for each type's rules.
pub fn cast(v: ValueRef<'_>, t: &CastType) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    // An empty CSV field is a missing value, as pandas and polars read it.
    if *t != CastType::Str
        && let ValueRef::Str(s) = v
        && s.trim().is_empty()
    {
        return Ok(Value::Null);
    }
    match t {
        CastType::Str => Ok(match v {
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            // Their text forms, unquoted (a date's text is `2024-05-01`).
            // Bytes that are UTF-8 text (writers that store strings as plain binary).
            ValueRef::Binary(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::Str(s.to_owned()),
                Err(_) => return Err(format!("{} bytes are not UTF-8 text", b.len())),
            },
            ValueRef::Timestamp(_) | ValueRef::Date(_) | ValueRef::Decimal(_) => Value::Str(TextForm(v).to_string()),
            other => Value::Str(other.to_string()),
        }),
        CastType::Int => match v {
            ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_) => Ok(v.to_owned()),
            ValueRef::Bool(b) => Ok(Value::Int(i64::from(b))),
            ValueRef::Float(f) => float_to_int(f).ok_or_else(|| format!("{v} is not a whole number")),
            ValueRef::Decimal(d) => {
                let p = 10i128.pow(u32::from(d.scale().unsigned_abs()));
                let whole =
                    if d.scale() >= 0 { (d.value() % p == 0).then(|| d.value() / p) } else { d.value().checked_mul(p) };
                whole.map(Value::from_i128).ok_or_else(|| format!("{v} is not a whole number"))
            }
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
            ValueRef::Decimal(d) => Ok(Value::Float(d.to_f64())),
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
        CastType::Date { format } => match v {
            ValueRef::Date(_) => Ok(v.to_owned()),
            ValueRef::Timestamp(ts) => ts
                .to_naive()
                .map(|dt| Value::Date(days_of_date(dt.date())))
                .ok_or_else(|| format!("{v} is out of range")),
            ValueRef::Str(s) => parse_date(s.trim(), format.as_deref()).map(|d| Value::Date(days_of_date(d))),
            _ => Err(format!("{v} is not a date")),
        },
        CastType::Timestamp { unit, zone, format } => {
            let zone_arc = || zone.as_ref().map(|z| Arc::new(z.clone()));
            let (naive, had_offset) = match v {
                ValueRef::Timestamp(ts) => {
                    // Another unit or zone: the same instant (or wall-clock time).
                    let dt = ts.to_naive().ok_or_else(|| format!("{v} is out of range"))?;
                    let keep = if zone.is_some() { zone_arc() } else { ts.zone_arc().cloned() };
                    return Timestamp::from_naive(dt, *unit, keep)
                        .map(Value::Timestamp)
                        .ok_or_else(|| format!("{v} does not fit a timestamp in {}", unit.name()));
                }
                ValueRef::Date(d) => (
                    date_of_days(d)
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .ok_or_else(|| format!("{v} is out of range"))?,
                    false,
                ),
                ValueRef::Int(i) => return Ok(Value::Timestamp(Timestamp::new(i, *unit, zone_arc()))),
                ValueRef::Str(s) => parse_timestamp(s.trim(), format.as_deref())?,
                _ => return Err(format!("{v} is not a timestamp")),
            };
            // Text without an offset is a time in the zone asked for (UTC when none).
            let naive = match (had_offset, zone.as_deref().and_then(offset_seconds)) {
                (false, Some(east)) => naive - chrono::TimeDelta::seconds(i64::from(east)),
                _ => naive,
            };
            let zone = match (zone_arc(), had_offset) {
                (Some(z), _) => Some(z),
                (None, true) => Some(Arc::new("UTC".to_owned())),
                (None, false) => None,
            };
            Timestamp::from_naive(naive, *unit, zone)
                .map(Value::Timestamp)
                .ok_or_else(|| format!("{v} does not fit a timestamp in {}", unit.name()))
        }
        CastType::Decimal { precision, scale } => match v {
            ValueRef::Decimal(d) => Decimal::parse(&d.to_string(), *precision, *scale).map(Value::Decimal),
            ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_) => {
                Decimal::parse(&v.to_string(), *precision, *scale).map(Value::Decimal)
            }
            // A float by its shortest text, which is what it was written as.
            ValueRef::Float(f) if f.is_finite() => {
                Decimal::parse(&f.to_string(), *precision, *scale).map(Value::Decimal)
            }
            ValueRef::Str(s) => Decimal::parse(s, *precision, *scale).map(Value::Decimal),
            _ => Err(format!("{v} is not a decimal number")),
        },
    }
}

/// Date text: ISO 8601, or in `format`.
fn parse_date(s: &str, format: Option<&str>) -> Result<NaiveDate, String> {
    let f = format.unwrap_or("%Y-%m-%d");
    NaiveDate::parse_from_str(s, f).map_err(|e| match format {
        Some(f) => format!("{s:?} is not a date in the format `{f}` ({e})"),
        None => format!("{s:?} is not an ISO 8601 date such as 2024-05-01 ({e})"),
    })
}

/// Timestamp text as a date and time, in UTC when the text had an offset (and whether it
/// had one).
fn parse_timestamp(s: &str, format: Option<&str>) -> Result<(NaiveDateTime, bool), String> {
    if let Some(f) = format {
        if let Ok(dt) = DateTime::parse_from_str(s, f) {
            return Ok((dt.naive_utc(), true));
        }
        return match NaiveDateTime::parse_from_str(s, f) {
            Ok(dt) => Ok((dt, false)),
            // A format of a date alone: midnight.
            Err(e) => match NaiveDate::parse_from_str(s, f) {
                Ok(d) => Ok((d.and_hms_opt(0, 0, 0).unwrap_or_default(), false)),
                Err(_) => Err(format!("{s:?} is not a timestamp in the format `{f}` ({e})")),
            },
        };
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok((dt.naive_utc(), true));
    }
    // RFC 3339 allows a space for the `T`; ISO 8601 allows no offset at all.
    for f in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.fZ", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, f) {
            return Ok((dt.naive_utc(), true));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Ok((dt, false));
        }
    }
    match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) => Ok((d.and_hms_opt(0, 0, 0).unwrap_or_default(), false)),
        Err(_) => Err(format!("{s:?} is not an RFC 3339 timestamp such as 2024-05-01T12:30:00Z")),
    }
}

/// A float that is a whole number in the 64-bit range, as an int.
fn float_to_int(f: f64) -> Option<Value> {
    // 2^63 as a float: the first value past `i64::MAX`.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then(|| Value::Int(f as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(text: &str, t: &str) -> Result<String, String> {
        cast(ValueRef::Str(text), &CastType::parse(t)?).map(|v| format!("{}: {v}", v.type_name()))
    }

    #[test]
    fn dates_timestamps_and_decimals_parse_from_text_or_say_why_not() {
        assert_eq!(to("2024-02-29", "date"), Ok(r#"date: "2024-02-29""#.into()));
        assert_eq!(
            to("2024-02-30", "date"),
            Err("\"2024-02-30\" is not an ISO 8601 date such as 2024-05-01 (input is out of range)".into())
        );
        assert_eq!(to("2024-05-01T12:30:00Z", "timestamp"), Ok(r#"timestamp: "2024-05-01T12:30:00.000000Z""#.into()));
        assert_eq!(
            to("2024-05-01 14:30:00.5+02:00", "timestamp(ms)"),
            Ok(r#"timestamp: "2024-05-01T12:30:00.500Z""#.into()),
            "an offset makes an instant in UTC"
        );
        assert_eq!(to("2024-05-01T12:30:00", "timestamp(s)"), Ok(r#"timestamp: "2024-05-01T12:30:00""#.into()));
        assert_eq!(to("2024-05-01", "timestamp(s)"), Ok(r#"timestamp: "2024-05-01T00:00:00""#.into()));
        assert_eq!(
            to("2024-05-01 14:30", "timestamp(s, +02:00)"),
            Ok(r#"timestamp: "2024-05-01T12:30:00Z""#.into()),
            "text without an offset is a time in the zone given"
        );
        assert_eq!(
            to("2024-05-01T12:30:00.5", "timestamp(s)"),
            Err("\"2024-05-01T12:30:00.5\" does not fit a timestamp in s".into())
        );
        assert!(to("yesterday", "timestamp").unwrap_err().contains("is not an RFC 3339 timestamp"));
        assert_eq!(to(" 12.5 ", "decimal(5, 2)"), Ok(r#"decimal: "12.50""#.into()));
        assert_eq!(to("12.555", "decimal(5, 2)"), Err("\"12.555\" has more than 2 decimal places".into()));
        assert_eq!(to("", "decimal(5, 2)"), Ok("null: null".into()), "empty text is a missing value");
        let ts = CastType::Timestamp { unit: TimeUnit::Second, zone: None, format: Some("%d/%m/%Y %H:%M".into()) };
        assert_eq!(cast(ValueRef::Str("01/05/2024 08:00"), &ts).unwrap().to_string(), r#""2024-05-01T08:00:00""#);
        let d = CastType::Date { format: Some("%d/%m/%Y".into()) };
        assert!(cast(ValueRef::Str("2024-05-01"), &d).unwrap_err().contains("is not a date in the format `%d/%m/%Y`"));
    }

    #[test]
    fn the_new_types_cast_to_each_other_and_to_text() {
        let dec = cast(ValueRef::Str("3.10"), &CastType::parse("decimal(4, 2)").unwrap()).unwrap();
        assert_eq!(cast(dec.as_ref(), &CastType::Str), Ok(Value::Str("3.10".into())), "unquoted text");
        assert_eq!(cast(dec.as_ref(), &CastType::Float), Ok(Value::Float(3.1)));
        assert_eq!(cast(dec.as_ref(), &CastType::Int), Err("\"3.10\" is not a whole number".into()));
        assert_eq!(
            cast(ValueRef::Float(0.1), &CastType::parse("decimal(3, 2)").unwrap()).unwrap().to_string(),
            "\"0.10\""
        );
        let ts = cast(ValueRef::Str("2024-05-01T23:30:00Z"), &CastType::parse("timestamp(ms)").unwrap()).unwrap();
        assert_eq!(cast(ts.as_ref(), &CastType::parse("date").unwrap()).unwrap().to_string(), "\"2024-05-01\"");
        let s = cast(ts.as_ref(), &CastType::parse("timestamp(s)").unwrap()).unwrap();
        assert_eq!(s.to_string(), "\"2024-05-01T23:30:00Z\"", "another unit, the zone kept");
        assert_eq!(
            cast(ValueRef::Binary(b"hi"), &CastType::Str),
            Ok(Value::Str("hi".into())),
            "bytes that are UTF-8 are their text"
        );
        assert!(cast(ValueRef::Binary(&[0xff]), &CastType::Str).unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn type_names_are_checked_with_their_arguments() {
        assert_eq!(CastType::parse("decimal(39, 2)"), Err("a decimal's precision must be 1 to 38, not 39".into()));
        assert_eq!(CastType::parse("decimal"), Err("`decimal` needs its precision and scale: `decimal(10, 2)`".into()));
        assert_eq!(
            CastType::parse("timestamp(ms, Europe/Paris)"),
            Err(
                "zone `Europe/Paris` is not `UTC` or an offset such as `+02:00` (zone names need a time zone database)"
                    .into()
            )
        );
        assert!(CastType::parse("timestamp(min)").unwrap_err().starts_with("unknown time unit `min`"));
        assert_eq!(CastType::parse("decimal(10,2)").map(|t| t.name()), Ok("decimal(10, 2)".into()));
    }
}
