//! Declared schemas: the `schema` a step may declare (every step, as one of its common
//! keys; `export_parquet` also fixes its file's columns by it), and the check of a batch
//! against one.
//!
//! `schema = { id = { type = "int", nullable = false }, score = "float" }` names the fields
//! a record may have, each with a type as `fields`'s `cast` names it, nullable unless it
//! says `nullable = false`. A schema is strict: a record with a field it does not name
//! (and not null) does not fit, so that a schema says what every record holds and no more;
//! `"json"` declares a field that may hold anything.

use crate::batch::Batch;
use crate::cast::CastType;
use crate::column::Column;
use crate::conf::{ConfTable, ConfValue};
use crate::params::Params;
use crate::step::{Rejected, StepContext};
use crate::value::ValueRef;

/// One field of a declared schema: its name, its type, and whether it may be null.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeclaredField {
    /// The field's name.
    pub name: String,
    /// The type its values have.
    pub ty: CastType,
    /// Whether it may be null (or missing).
    pub nullable: bool,
}

/// A declared schema: the fields a step's records have, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeclaredSchema {
    fields: Vec<DeclaredField>,
}

impl DeclaredSchema {
    /// A schema of these fields.
    pub fn new(fields: Vec<DeclaredField>) -> Self {
        DeclaredSchema { fields }
    }

    /// The fields in order.
    pub fn fields(&self) -> &[DeclaredField] {
        &self.fields
    }

    /// Reads `key` of `p` (`schema = { field = "type", other = { type = "float", nullable =
    /// false } }`), reporting what is wrong with it at its place in the file; `None` when
    /// the key is absent or wrong.
    pub fn read(p: &Params, key: &str) -> Option<DeclaredSchema> {
        let item = p.item(key)?;
        let ConfValue::Table(t) = &item.value else {
            p.error_at(
                item,
                format!(
                    "`{key}` must be a table such as {{ id = \"int\", text = \"string\" }}, not {}",
                    item.value.type_name()
                ),
            );
            return None;
        };
        if t.entries.is_empty() {
            p.error_at(item, format!("`{key}` is empty: declare the fields of the records"));
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (name, _, v) in &t.entries {
            let field = match &v.value {
                ConfValue::Str(ty) => CastType::parse(ty).map(|ty| (ty, true)),
                ConfValue::Table(table) => {
                    let nullable =
                        match table.entries.iter().find(|(k, _, _)| k == "nullable").map(|(_, _, v)| &v.value) {
                            None => Ok(true),
                            Some(ConfValue::Bool(b)) => Ok(*b),
                            Some(other) => Err(format!("`nullable` must be true or false, not {}", other.type_name())),
                        };
                    let rest = ConfTable {
                        entries: table.entries.iter().filter(|(k, _, _)| k != "nullable").cloned().collect(),
                    };
                    nullable.and_then(|n| CastType::from_table(&rest).map(|ty| (ty, n)))
                }
                other => {
                    Err(format!("must name a type (a string) or be a table with `type`, not {}", other.type_name()))
                }
            };
            match field {
                Ok((ty, nullable)) => out.push(DeclaredField { name: name.clone(), ty, nullable }),
                Err(why) => {
                    ok = false;
                    p.error_at(v, format!("`{key}.{name}`: {why}"));
                }
            }
        }
        (ok && !out.is_empty()).then_some(DeclaredSchema { fields: out })
    }

    /// The rows of `batch` that do not fit, in row order, each with the first reason found:
    /// a field the schema does not name holding a value, a value of another type than its
    /// field's, a null (or a missing field) where the schema says none may be.
    ///
    /// Checked column by column: a column whose type is the declared one (an int column
    /// declared `int`) is not looked into, and a nullable field of such a column costs
    /// nothing; only the others are read value by value.
    pub fn misfits(&self, batch: &Batch) -> Vec<(usize, String)> {
        let mut reasons: Vec<Option<String>> = Vec::new();
        let mut note = |row: usize, why: &dyn Fn() -> String| {
            if reasons.is_empty() {
                reasons.resize(batch.len(), None);
            }
            if reasons[row].is_none() {
                reasons[row] = Some(why());
            }
        };
        for (name, c) in batch.schema().names().zip(batch.columns()) {
            let c: &Column = c;
            let Some(f) = self.fields.iter().find(|f| f.name == name) else {
                if !matches!(c, Column::Null(_)) {
                    for row in (0..c.len()).filter(|&i| !c.get(i).is_null()) {
                        note(row, &|| format!("field `{name}` is not in the declared schema"));
                    }
                }
                continue;
            };
            let same = matches!(
                (&f.ty, c),
                (_, Column::Null(_))
                    | (CastType::Json, _)
                    | (CastType::Str, Column::Str(_))
                    | (CastType::Int, Column::Int(_))
                    | (CastType::Float, Column::Float(_))
                    | (CastType::Bool, Column::Bool(_))
            );
            if !same {
                for row in 0..c.len() {
                    let v = c.get(row);
                    if !v.is_null() && !fits(&f.ty, v) {
                        note(row, &|| format!("`{name}`: expected {}, found {} {v}", f.ty.name(), v.type_name()));
                    }
                }
            }
        }
        for f in self.fields.iter().filter(|f| !f.nullable) {
            let null = || format!("`{}`: expected {} (not null), found null", f.name, f.ty.name());
            match batch.column(&f.name) {
                None => (0..batch.len()).for_each(|row| note(row, &null)),
                Some(c) => {
                    for row in (0..c.len()).filter(|&i| c.get(i).is_null()) {
                        note(row, &null);
                    }
                }
            }
        }
        reasons.into_iter().enumerate().filter_map(|(row, r)| Some((row, r?))).collect()
    }

    /// `batch` without the records that do not fit, which are rejected in `ctx` as bad
    /// records whose reason names the step, the field, the type expected and the value
    /// found (they go where the step's other bad records go: the quarantine file, or the
    /// run's failure, by the step's `on_bad_record`).
    pub fn check(&self, batch: &Batch, ctx: &mut StepContext) -> Batch {
        let misfits = self.misfits(batch);
        if misfits.is_empty() {
            return batch.clone();
        }
        let mut keep = vec![true; batch.len()];
        for (row, why) in misfits {
            keep[row] = false;
            let reason = format!("the schema of step `{}`: {why}", ctx.step_id());
            ctx.reject(Rejected { reason, record: Some(batch.row(row).to_record()), origin: None });
        }
        batch.filter(&keep)
    }
}

/// Whether a field declared `ty` holds `v` (not null) as it is: a value of that type, an
/// int a float holds exactly in a `float` field, a timestamp of the declared unit and zone,
/// a decimal of no more places and whole digits than declared, anything in `json`. These
/// are the values `export_parquet` writes into a column of the type without a change.
pub fn fits(ty: &CastType, v: ValueRef<'_>) -> bool {
    match (ty, v) {
        (_, ValueRef::Null) | (CastType::Json, _) => true,
        (CastType::Str, ValueRef::Str(_))
        | (CastType::Int, ValueRef::Int(_))
        | (CastType::Float, ValueRef::Float(_))
        | (CastType::Bool, ValueRef::Bool(_))
        | (CastType::Date { .. }, ValueRef::Date(_)) => true,
        (CastType::Float, ValueRef::Int(i)) => exact_float(i128::from(i)),
        (CastType::Float, ValueRef::UInt(u)) => exact_float(i128::from(u)),
        (CastType::Timestamp { unit, zone, .. }, ValueRef::Timestamp(t)) => {
            t.unit() == *unit && t.zone() == zone.as_deref()
        }
        (CastType::Decimal { precision, scale }, ValueRef::Decimal(d)) => {
            d.scale() <= *scale
                && i16::from(d.precision()) - i16::from(d.scale()) <= i16::from(*precision) - i16::from(*scale)
        }
        _ => false,
    }
}

/// Whether a 64-bit float holds `i` exactly.
fn exact_float(i: i128) -> bool {
    let f = i as f64;
    // A float of at least 2^127 would saturate the cast back; no i128 is that large.
    f.abs() < 1.7e38 && f as i128 == i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::value::Value;

    fn schema(toml: &str) -> (Option<DeclaredSchema>, Vec<String>) {
        let text = format!("schema = {toml}\n");
        let file = crate::SourceFile::new("p.toml", text.as_str());
        let p = Params::new(crate::conf::parse(&text).expect("toml"), file, "step", Some("s".into()));
        let s = DeclaredSchema::read(&p, "schema");
        let diags = p.finish(&["schema"]);
        let at =
            |d: &crate::Diagnostic| d.location.as_ref().map_or(String::new(), |l| format!("{}:{} ", l.line, l.column));
        (s, diags.0.iter().map(|d| format!("{}{}", at(d), d.message)).collect())
    }

    fn batch(lines: &[&str]) -> Batch {
        let records: Vec<Record> = lines.iter().map(|l| serde_json::from_str(l).expect("json")).collect();
        Batch::from_records(&records)
    }

    #[test]
    fn records_that_do_not_fit_are_named_with_the_field_the_type_and_the_value() {
        let (s, errors) = schema(r#"{ id = { type = "int", nullable = false }, score = "float", tag = "string" }"#);
        assert!(errors.is_empty(), "{errors:?}");
        let s = s.expect("a schema");
        let b = batch(&[
            r#"{"id":1,"score":0.5,"tag":"a"}"#,
            r#"{"id":2,"score":3,"tag":null}"#,
            r#"{"id":3,"score":"high","tag":"b"}"#,
            r#"{"score":1.5}"#,
            r#"{"id":5,"score":1.5,"extra":true}"#,
            r#"{"id":6,"score":9007199254740993}"#,
            r#"{"id":"7"}"#,
            r#"{"id":8,"extra":null}"#,
        ]);
        assert_eq!(
            s.misfits(&b),
            vec![
                (2, r#"`score`: expected float, found string "high""#.to_owned()),
                (3, "`id`: expected int (not null), found null".to_owned()),
                (4, "field `extra` is not in the declared schema".to_owned()),
                (5, "`score`: expected float, found int 9007199254740993".to_owned()),
                (6, r#"`id`: expected int, found string "7""#.to_owned()),
            ]
        );
        let mut ctx = StepContext::new("clean", 0, 0, Default::default());
        let kept = s.check(&b, &mut ctx);
        assert_eq!(kept.len(), 3);
        assert_eq!(kept.row(1).get("score"), Some(ValueRef::Int(3)), "an int a float holds is kept as it is");
        let rejected = ctx.take_rejected();
        assert_eq!(rejected.len(), 5);
        assert_eq!(rejected[0].reason, r#"the schema of step `clean`: `score`: expected float, found string "high""#);
        assert_eq!(rejected[0].record.as_ref().and_then(|r| r.get("id")), Some(&Value::Int(3)));
    }

    #[test]
    fn typed_columns_of_the_declared_type_fit_as_they_are() {
        let (s, _) = schema(r#"{ a = "int", b = "string", c = "json", d = { type = "bool", nullable = false } }"#);
        let s = s.expect("a schema");
        let b = batch(&[r#"{"a":1,"b":"x","c":[1],"d":true}"#, r#"{"a":null,"b":null,"c":{"k":1},"d":false}"#]);
        assert!(s.misfits(&b).is_empty());
        assert!(s.misfits(&Batch::empty()).is_empty());
    }

    #[test]
    fn dates_timestamps_and_decimals_fit_their_declared_unit_zone_and_digits() {
        use crate::scalar::{Decimal, TimeUnit, Timestamp};
        let (s, _) = schema(r#"{ at = "timestamp(ms, UTC)", price = "decimal(5, 2)" }"#);
        let s = s.expect("a schema");
        let ts = |unit, zone: Option<&str>| {
            Value::Timestamp(Timestamp::new(0, unit, zone.map(|z| std::sync::Arc::new(z.to_owned()))))
        };
        let dec = |text: &str, p, s| Value::Decimal(Decimal::parse(text, p, s).expect("decimal"));
        let rows = [
            (ts(TimeUnit::Millisecond, Some("UTC")), dec("123.4", 4, 1)),
            (ts(TimeUnit::Microsecond, Some("UTC")), dec("1.25", 3, 2)),
            (ts(TimeUnit::Millisecond, None), dec("1234.5", 5, 1)),
            (ts(TimeUnit::Millisecond, Some("UTC")), dec("1.255", 4, 3)),
        ];
        let records: Vec<Record> =
            rows.into_iter().map(|(at, price)| Record::new().with("at", at).with("price", price)).collect();
        let found: Vec<String> =
            s.misfits(&Batch::from_records(&records)).into_iter().map(|(r, why)| format!("{r} {why}")).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("1 `at`: expected timestamp(ms, UTC), found timestamp"), "{found:?}");
        assert!(found[1].starts_with("2 `at`: expected timestamp(ms, UTC), found timestamp"), "{found:?}");
        assert!(found[2].starts_with("3 `price`: expected decimal(5, 2), found decimal \"1.255\""), "{found:?}");
    }

    #[test]
    fn a_schema_naming_an_unknown_type_is_an_error_at_its_place() {
        let (s, errors) = schema(r#"{ a = "datum", b = { type = "int", nullable = 1 } }"#);
        assert!(s.is_none());
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("1:16 ") && errors[0].contains("`schema.a`: unknown type `datum`"), "{errors:?}");
        assert!(errors[1].contains("`schema.b`: `nullable` must be true or false, not an integer"), "{errors:?}");
        let (_, errors) = schema("{}");
        assert!(errors[0].contains("`schema` is empty"), "{errors:?}");
        let (_, errors) = schema("\"int\"");
        assert!(errors[0].contains("`schema` must be a table"), "{errors:?}");
    }
}
