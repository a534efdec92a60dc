//! Maps: a nested object's fields, in the order they came.

use std::collections::BTreeMap;
use std::fmt;

use indexmap::IndexMap;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use crate::value::Value;

/// A map from field names to values that keeps the order its keys were first inserted in:
/// a JSON object read from a file comes out with its fields where they were.
///
/// Two maps are equal when they hold the same entries, whatever their order, as two JSON
/// objects are: order is how a map is written, not what it holds. Dedup, uniqueness
/// checks and seeded choices agree, since they key a map by its entries in name order.
///
/// Setting a key the map already has replaces its value in place (as Python's `dict` and
/// JavaScript objects do, and as a JSON object with a key written twice reads: the last
/// value, where the key first stood).
///
/// A map is a struct (named fields, as a JSON object or a Parquet struct) unless it is
/// marked a key-value map ([`Map::is_key_value`]): one read from an Arrow or Parquet map,
/// whose rows each have their own keys, written back as a map rather than as a struct of
/// every key any row had. The mark is not part of what a map holds: it does not change
/// equality, and JSON writes both alike.
#[derive(Clone, Default)]
pub struct Map {
    // Boxed so that a `Value` stays 32 bytes: nested maps are rare, values are many.
    entries: Box<IndexMap<String, Value>>,
    key_value: bool,
}

impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Map::default()
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Map { entries: Box::new(IndexMap::with_capacity(n)), key_value: false }
    }

    /// Sets `key` to `value`: in place if the key is there (returning the old value), at
    /// the end if not.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.entries.insert(key.into(), value.into())
    }

    /// Whether this is a key-value map (an Arrow map) rather than a struct.
    pub fn is_key_value(&self) -> bool {
        self.key_value
    }

    /// Marks this as a key-value map (`true`) or a struct.
    pub fn set_key_value(&mut self, key_value: bool) {
        self.key_value = key_value;
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)
    }

    /// A mutable reference to the value of `key`.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.entries.get_mut(key)
    }

    /// Whether the map has `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Removes `key`, keeping the other entries in order, and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.entries.shift_remove(key)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> MapIter<'_> {
        MapIter(self.entries.iter())
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &String> + ExactSizeIterator {
        self.entries.keys()
    }

    /// The values in order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator {
        self.entries.values()
    }

    /// An estimate of the heap bytes the map owns: its table, and its keys' and values'
    /// own heap.
    pub fn heap_size(&self) -> usize {
        // Each entry is stored with its hash, and indexed by a slot and a control byte.
        let per_entry = std::mem::size_of::<(u64, String, Value)>() + std::mem::size_of::<usize>() + 1;
        std::mem::size_of::<IndexMap<String, Value>>()
            + self.entries.capacity() * per_entry
            + self.entries.iter().map(|(k, v)| k.capacity() + v.heap_size()).sum::<usize>()
    }
}

/// The entries of a [`Map`], in order.
#[derive(Debug, Clone)]
pub struct MapIter<'a>(indexmap::map::Iter<'a, String, Value>);

impl<'a> Iterator for MapIter<'a> {
    type Item = (&'a String, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for MapIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for MapIter<'_> {}

/// The entries of a [`Map`], owned, in order.
#[derive(Debug)]
pub struct MapIntoIter(indexmap::map::IntoIter<String, Value>);

impl Iterator for MapIntoIter {
    type Item = (String, Value);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for MapIntoIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for MapIntoIter {}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a String, &'a Value);
    type IntoIter = MapIter<'a>;

    fn into_iter(self) -> MapIter<'a> {
        self.iter()
    }
}

impl IntoIterator for Map {
    type Item = (String, Value);
    type IntoIter = MapIntoIter;

    fn into_iter(self) -> MapIntoIter {
        MapIntoIter(self.entries.into_iter())
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Map {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Map::new();
        m.extend(iter);
        m
    }
}

impl<K: Into<String>, V: Into<Value>> Extend<(K, V)> for Map {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Into<String>, V: Into<Value>, const N: usize> From<[(K, V); N]> for Map {
    /// The entries in the order written.
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl From<BTreeMap<String, Value>> for Map {
    /// The entries in key order.
    fn from(m: BTreeMap<String, Value>) -> Self {
        m.into_iter().collect()
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

impl Serialize for Map {
    /// A map of the entries, in order.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Map {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Map;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of field names to values")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Map, A::Error> {
                // The size is the encoder's word: bounded, so that a damaged length cannot
                // reserve the memory.
                let mut m = Map::with_capacity(access.size_hint().unwrap_or(0).min(4096));
                while let Some((k, v)) = access.next_entry::<String, Value>()? {
                    m.insert(k, v);
                }
                Ok(m)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}
