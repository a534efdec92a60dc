//! Records: one row, owned, with its fields in order.

use std::collections::HashMap;
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use crate::value::Value;

/// One row with its fields in order: the simple, owned view that custom steps use.
///
/// Inside the engine rows live in a columnar [`Batch`](crate::Batch); a `Record` is what
/// [`Batch::to_records`](crate::Batch::to_records) and
/// [`Batch::map_records`](crate::Batch::map_records) hand out. Serialises as a JSON object
/// with the fields in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    fields: Vec<(String, Value)>,
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record::default()
    }

    /// The value of `field`, if the record has it.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == field).map(|(_, v)| v)
    }

    /// A mutable reference to the value of `field`, if the record has it.
    pub fn get_mut(&mut self, field: &str) -> Option<&mut Value> {
        self.fields.iter_mut().find(|(k, _)| k == field).map(|(_, v)| v)
    }

    /// Sets `field`, replacing its value in place or appending it at the end.
    pub fn set(&mut self, field: impl Into<String>, value: impl Into<Value>) {
        let field = field.into();
        let value = value.into();
        match self.get_mut(&field) {
            Some(v) => *v = value,
            None => self.fields.push((field, value)),
        }
    }

    /// Builder form of [`Record::set`].
    pub fn with(mut self, field: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set(field, value);
        self
    }

    /// Removes `field` and returns its value.
    pub fn remove(&mut self, field: &str) -> Option<Value> {
        let i = self.fields.iter().position(|(k, _)| k == field)?;
        Some(self.fields.remove(i).1)
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// [`Record::set`] for each pair, in time linear in their number: past a few fields,
    /// names are found through a map rather than a scan (a row of a 100,000-column file set
    /// aside as a bad record took minutes).
    fn set_all(&mut self, pairs: impl IntoIterator<Item = (String, Value)>) {
        let mut index: Option<HashMap<String, usize>> = None;
        for (k, v) in pairs {
            if index.is_none() && self.fields.len() < crate::schema::WIDE {
                self.set(k, v);
                continue;
            }
            let fields = &self.fields;
            // In reverse, so that the first of a repeated name is the one kept.
            let index = index
                .get_or_insert_with(|| fields.iter().enumerate().rev().map(|(i, (k, _))| (k.clone(), i)).collect());
            match index.get(&k) {
                Some(&i) => self.fields[i].1 = v,
                None => {
                    index.insert(k.clone(), self.fields.len());
                    self.fields.push((k, v));
                }
            }
        }
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Record {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut r = Record::new();
        r.set_all(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
        r
    }
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Record;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a record (a map of field names to values)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, Value>()? {
                    pairs.push(pair);
                }
                let mut r = Record::new();
                r.set_all(pairs);
                Ok(r)
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl fmt::Display for Record {
    /// Records display as a JSON object.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keeps_field_order_and_replaces_in_place() {
        let mut r = Record::new().with("b", 1i64).with("a", "x");
        r.set("b", 2i64);
        assert_eq!(r.to_string(), r#"{"b":2,"a":"x"}"#);
        let back: Record = serde_json::from_str(&r.to_string()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_wide_record_collects_like_a_narrow_one() {
        // A repeated name keeps its first place and its last value, before and after the
        // record is wide enough for a map.
        let pairs = (0..20_000).map(|i| (format!("f{}", i % 15_000), i as i64));
        let r: Record = pairs.collect();
        assert_eq!(r.len(), 15_000);
        assert_eq!(r.iter().next(), Some(("f0", &Value::Int(15_000))));
        assert_eq!(r.get("f14999"), Some(&Value::Int(14_999)));
        assert_eq!(r.get("f4999"), Some(&Value::Int(19_999)));
        let back: Record = serde_json::from_str(&r.to_string()).unwrap();
        assert_eq!(back, r);
    }
}
