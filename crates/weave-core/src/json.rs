//! JSON text to values, exactly: objects keep their order, integers keep their digits.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::map::Map;
use crate::value::{MAX_DEPTH, Value};

impl Value {
    /// Parses one JSON value, exactly: an object's keys keep their order (a key written
    /// twice keeps its first place and its last value), an integer keeps its kind and its
    /// digits (`Int`, `UInt` above `i64::MAX`, `BigInt` beyond 64 bits: never a float),
    /// and a float is the nearest `f64`, as serde_json reads it.
    ///
    /// Every JSON text that becomes data is read through this (or
    /// [`Value::fields_from_json`]), so a value is written back as it was read. Errors are
    /// serde_json's, with its line and column.
    pub fn from_json(text: &str) -> Result<Value, serde_json::Error> {
        read_exactly(text, |seed, de| seed.deserialize(de))
    }

    /// Parses a JSON text that should be an object into `fields` (cleared first), in
    /// order, read as [`Value::from_json`] reads it: the one way the JSON loaders turn a
    /// line or an element into a record. A key written twice keeps its first place and
    /// its last value. A JSON value of another type is [`JsonText::Other`].
    ///
    /// An object's fields go into a list the caller reuses rather than a [`Map`]: a record
    /// is read once, in order, so hashing its keys would be wasted (`cargo xtask bench
    /// loaders`).
    pub fn fields_from_json(text: &str, fields: &mut Vec<(String, Value)>) -> Result<JsonText, serde_json::Error> {
        read_exactly(text, |exact, de| {
            fields.clear();
            Fields { out: &mut *fields, exact }.deserialize(de)
        })
    }
}

/// What a JSON text given to [`Value::fields_from_json`] held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonText {
    /// An object, whose fields are in the list.
    Object,
    /// A value of another type, named as [`Value::type_name`] names it (`"list"`).
    Other(&'static str),
}

/// Reads `text` with `read`, once with a seed that reads numbers as serde_json does, and,
/// only when that reading met a float that may have been an integer past 64 bits, again
/// with each number matched with its literal.
fn read_exactly<T>(
    text: &str,
    mut read: impl FnMut(
        Exact<'_>,
        &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, serde_json::Error> {
    let wide = Cell::new(false);
    let mut once = |literals: Option<&[&str]>| {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = read(Exact { literals, next: &Cell::new(0), wide: &wide, enclosing: 0 }, &mut de)?;
        de.end()?;
        Ok(v)
    };
    let v = once(None)?;
    if !wide.get() {
        return Ok(v);
    }
    // serde_json reads an integer past 64 bits as a float. It said a float that may have
    // been one, so the text is read again, each number matched with its literal.
    let literals = number_literals(text);
    once(Some(&literals))
}

/// Reads an object's fields into a list (see [`Value::fields_from_json`]); any other value
/// is read whole, for its type's name.
struct Fields<'f, 'a> {
    out: &'f mut Vec<(String, Value)>,
    exact: Exact<'a>,
}

impl<'de> DeserializeSeed<'de> for Fields<'_, '_> {
    type Value = JsonText;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<JsonText, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_, '_> {
    type Value = JsonText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonText, A::Error> {
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(self.exact)?;
            self.out.push((k, v));
        }
        keep_last_of_each_key(self.out);
        Ok(JsonText::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<JsonText, A::Error> {
        self.exact.visit_seq(seq).map(|v| JsonText::Other(v.type_name()))
    }
    fn visit_unit<E>(self) -> Result<JsonText, E> {
        Ok(JsonText::Other("null"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<JsonText, E> {
        Ok(JsonText::Other("bool"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<JsonText, E> {
        Ok(JsonText::Other("int"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<JsonText, E> {
        Ok(JsonText::Other("int"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<JsonText, E> {
        // A lone number is no record, whatever its size.
        Ok(JsonText::Other("float"))
    }
    fn visit_str<E>(self, _: &str) -> Result<JsonText, E> {
        Ok(JsonText::Other("string"))
    }
}

/// Makes a list of fields hold each key once, as a JSON reader does: a key written twice
/// keeps its first place and its last value. Objects rarely repeat a key, so the common
/// case is only a check (without allocating, for a small object).
fn keep_last_of_each_key(fields: &mut Vec<(String, Value)>) {
    let repeats = if fields.len() <= 16 {
        fields.iter().enumerate().any(|(i, (k, _))| fields[..i].iter().any(|(j, _)| j == k))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(fields.len());
        !fields.iter().all(|(k, _)| seen.insert(k.as_str()))
    };
    if !repeats {
        return;
    }
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(fields.len());
    let mut kept: Vec<(String, Value)> = Vec::with_capacity(fields.len());
    for (k, v) in fields.drain(..) {
        match at.get(&k) {
            Some(&i) => kept[i].1 = v,
            None => {
                at.insert(k.clone(), kept.len());
                kept.push((k, v));
            }
        }
    }
    *fields = kept;
}

/// The text of every number in a JSON text, in order. Strings are skipped (with their
/// escapes); anything else that is not a number is passed over, since serde_json, not
/// this, judges the syntax: in valid JSON the two agree on every number.
fn number_literals(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    i += 1;
                }
                // Only ASCII bytes were passed, so both ends are character boundaries.
                out.push(text.get(start..i).unwrap_or_default());
            }
            _ => i += 1,
        }
    }
    out
}

/// Whether a number's text is an integer (no fraction, no exponent).
fn is_integer_literal(s: &str) -> bool {
    !s.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// The smallest `f64` past `u64::MAX`, and `i64::MIN`: serde_json reads an integer
/// literal outside `[i64::MIN, u64::MAX]` as a float at or past these.
const PAST_U64: f64 = 18_446_744_073_709_551_616.0;
const I64_MIN: f64 = -9_223_372_036_854_775_808.0;

/// Reads a value; numbers are counted in document order, so that the `n`-th number
/// serde_json reports is the `n`-th literal of the text.
#[derive(Clone, Copy)]
pub(crate) struct Exact<'a> {
    /// Every number's text, on the second reading; `None` on the first.
    pub(crate) literals: Option<&'a [&'a str]>,
    /// How many numbers were read so far.
    pub(crate) next: &'a Cell<usize>,
    /// Set when a float might have been an integer past 64 bits.
    pub(crate) wide: &'a Cell<bool>,
    /// The lists and maps around the value read: one nested past [`MAX_DEPTH`] is an
    /// error (serde_json stops at the same depth; other formats may not).
    pub(crate) enclosing: usize,
}

impl Exact<'_> {
    /// The reader of what a list or map holds, or the error of one nested too deep.
    fn inside<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.enclosing >= MAX_DEPTH {
            return Err(E::custom(crate::value::too_deep()));
        }
        Ok(Exact { enclosing: self.enclosing + 1, ..self })
    }

    fn number(&self) -> usize {
        let n = self.next.get();
        self.next.set(n + 1);
        n
    }
}

impl<'de> DeserializeSeed<'de> for Exact<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Exact<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        self.number();
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        self.number();
        Ok(Value::from(v))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        self.number();
        Ok(Value::from_i128(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        self.number();
        Ok(match i128::try_from(v) {
            Ok(v) => Value::from_i128(v),
            Err(_) => Value::BigInt(v.to_string()),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        let n = self.number();
        if v.fract() != 0.0 || !(v >= PAST_U64 || v <= I64_MIN) {
            return Ok(Value::Float(v));
        }
        match self.literals {
            None => {
                self.wide.set(true);
                Ok(Value::Float(v))
            }
            Some(literals) => Ok(match literals.get(n) {
                Some(s) if is_integer_literal(s) => Value::BigInt((*s).to_owned()),
                _ => Value::Float(v),
            }),
        }
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.inside()?;
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.inside()?;
        let mut out = Map::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(inner)?;
            out.insert(k, v);
        }
        Ok(Value::Map(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        Value::from_json(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    // regression: objects came out with their keys sorted (`{"alpha":…,"mid":…,"zeta":…}`).
    #[test]
    fn objects_keep_their_key_order_at_every_depth() {
        let text = r#"{"zeta":1,"alpha":{"y":1,"b":2},"mid":3}"#;
        assert_eq!(parse(text).to_string(), text);
        // A key written twice keeps its first place and its last value, as Python reads it.
        assert_eq!(parse(r#"{"b":1,"a":2,"b":3}"#).to_string(), r#"{"b":3,"a":2}"#);
    }

    // regression: integers past i64 became floats (18446744073709551615 → 1.8446744073709552e19).
    #[test]
    fn integers_keep_their_digits_at_any_size() {
        assert_eq!(parse("18446744073709551615"), Value::UInt(u64::MAX));
        assert_eq!(parse("9223372036854775808"), Value::UInt(1 << 63));
        assert_eq!(parse("-9223372036854775808"), Value::Int(i64::MIN));
        assert_eq!(parse("-9223372036854775809"), Value::BigInt("-9223372036854775809".into()));
        assert_eq!(parse("18446744073709551616"), Value::BigInt("18446744073709551616".into()));
        let big = format!("1{}", "0".repeat(30));
        assert_eq!(parse(&big), Value::BigInt(big.clone()));
        // Floats stay floats, however large or integral.
        assert_eq!(parse("1e30"), Value::Float(1e30));
        assert_eq!(parse("1.0e19"), Value::Float(1e19));
        assert_eq!(parse("-9.3e18"), Value::Float(-9.3e18));
        assert_eq!(parse("12345678901234567"), Value::Int(12_345_678_901_234_567));
        // Every number is matched with its own text, through strings that hold digits,
        // minus signs and escaped quotes.
        let text = format!(r#"{{"a\"1":"-2\\","l":[1.5,{big},-3,{{"k":1e+30,"n":-{big}}}],"z":"0"}}"#);
        assert_eq!(parse(&text).to_string(), text);
    }

    #[test]
    fn an_object_s_fields_are_read_into_a_list_in_order() {
        let mut fields = Vec::new();
        let text = r#"{"zeta":1,"alpha":{"y":1,"b":2},"zeta":18446744073709551616,"mid":3}"#;
        assert_eq!(Value::fields_from_json(text, &mut fields).unwrap(), JsonText::Object);
        let got: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got, ["zeta=18446744073709551616", r#"alpha={"y":1,"b":2}"#, "mid=3"]);
        // Past 16 keys the repeats are found by hashing; the list is reused.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{}\":{i}", i % 20)).collect();
        assert_eq!(Value::fields_from_json(&format!("{{{}}}", many.join(",")), &mut fields).unwrap(), JsonText::Object);
        assert_eq!(fields.len(), 20);
        assert_eq!((fields[3].0.as_str(), &fields[3].1), ("k3", &Value::Int(23)));
        for (text, found) in [("[1]", "list"), ("3", "int"), ("1e400", ""), ("\"x\"", "string"), ("null", "null")] {
            match Value::fields_from_json(text, &mut fields) {
                Ok(JsonText::Other(t)) => assert_eq!(t, found),
                Ok(JsonText::Object) => panic!("{text} is no object"),
                Err(e) => assert!(found.is_empty(), "{text}: {e}"),
            }
        }
        assert!(Value::fields_from_json(r#"{"a":1} x"#, &mut fields).is_err());
    }

    #[test]
    fn invalid_json_is_serde_json_s_error() {
        // Past 308 digits a number is beyond any float, and serde_json refuses it: a bad
        // record, never a changed value.
        let e = Value::from_json(&format!("[{}]", "9".repeat(400))).unwrap_err();
        assert!(e.to_string().starts_with("number out of range"), "{e}");
        let e = Value::from_json(r#"{"a": 1x}"#).unwrap_err();
        assert!(e.to_string().contains("line 1 column"), "{e}");
        assert!(Value::from_json(r#"{"a": 100000000000000000000000 "#).is_err());
        assert!(Value::from_json("1 2").is_err());
    }
}
