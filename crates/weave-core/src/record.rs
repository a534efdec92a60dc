//! Records: one row, owned, with its fields in order.

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
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Record {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut r = Record::new();
        for (k, v) in iter {
            r.set(k, v);
        }
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
                let mut r = Record::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    r.set(k, v);
                }
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
}
