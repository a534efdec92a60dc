//! Schemas: the names and types of a batch's fields.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DataType {
    /// Every value is null so far.
    Null,
    /// Booleans.
    Bool,
    /// 64-bit signed integers.
    Int,
    /// 64-bit floats.
    Float,
    /// UTF-8 strings.
    Str,
    /// Values of mixed or nested type.
    Any,
    /// 64-bit unsigned integers (see [`Column::UInt`](crate::Column::UInt)).
    UInt,
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::Null => "null",
            DataType::Bool => "bool",
            DataType::Int => "int",
            DataType::Float => "float",
            DataType::Str => "string",
            DataType::Any => "any",
            DataType::UInt => "uint",
        })
    }
}

/// One named, typed field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// The type of its column.
    pub data_type: DataType,
}

impl Field {
    /// A field.
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        Field { name: name.into(), data_type }
    }
}

/// Up to this many fields, a look-up by name is a scan; past it, a hash map.
pub(crate) const WIDE: usize = 16;

/// The ordered fields of a batch. Batches share their schema through an `Arc`.
///
/// Look-up by name is a linear scan while the schema is a handful of fields, where a scan
/// beats hashing the name; a wide schema (a CSV of 100,000 columns) makes a name → position
/// map on its first look-up, so that looking up every field stays linear in their number.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Schema {
    fields: Vec<Field>,
    /// Name → position (the first, for a repeated name), made when first needed.
    #[serde(skip)]
    index: OnceLock<HashMap<String, usize>>,
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

impl Eq for Schema {}

impl std::hash::Hash for Schema {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fields.hash(state);
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").field("fields", &self.fields).finish()
    }
}

impl Schema {
    /// A schema of these fields. Names must be unique; [`Batch::new`](crate::Batch::new)
    /// checks it.
    pub fn new(fields: Vec<Field>) -> Self {
        Schema { fields, index: OnceLock::new() }
    }

    /// The fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The position of the field called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        if self.fields.len() <= WIDE {
            return self.fields.iter().position(|f| f.name == name);
        }
        let index = self.index.get_or_init(|| {
            // In reverse, so that the first of a repeated name is the one kept.
            self.fields.iter().enumerate().rev().map(|(i, f)| (f.name.clone(), i)).collect()
        });
        index.get(name).copied()
    }

    /// The field names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", field.name, field.data_type)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_and_narrow_schemas_find_the_first_field_of_a_name() {
        for n in [3, WIDE + 1, 20_000] {
            let mut fields: Vec<Field> = (0..n).map(|i| Field::new(format!("f{i}"), DataType::Str)).collect();
            fields.push(Field::new("f1", DataType::Int));
            let s = Schema::new(fields);
            assert_eq!(s.index_of("f0"), Some(0));
            assert_eq!(s.index_of("f1"), Some(1), "the first of a repeated name");
            assert_eq!(s.index_of(&format!("f{}", n - 1)), Some(n - 1));
            assert_eq!(s.index_of("nope"), None);
            // The map is not part of what a schema is.
            assert_eq!(s.clone(), Schema::new(s.fields().to_vec()));
            let json = serde_json::to_string(&s).unwrap();
            assert!(json.starts_with("{\"fields\":[") && !json.contains("index"), "{}", &json[..40]);
            let back: Schema = serde_json::from_str(&json).unwrap();
            assert_eq!(back.index_of("f1"), Some(1));
        }
    }
}
