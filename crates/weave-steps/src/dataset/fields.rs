//! The `fields` step: select, drop, rename, fill, cast, add, template, flatten and nest
//! fields, in one pass over each batch.
//!
//! Each key is an operation, applied in the order the keys are written in the step's
//! table, each on what the ones before it left. Whole columns move without a copy
//! (select, drop, rename); the others make the columns they change. A value that does not
//! cast, a template that names a field a record lacks, or a field to flatten that holds
//! something other than a table, makes the record bad: it is set aside with the field
//! and the value (`on_bad_record` decides what follows) and the others go on.

use std::collections::HashSet;
use std::sync::Arc;

use weave_core::cast::{CastType as Type, cast};
use weave_core::{
    Batch, CanonicalConfig, Column, ConfItem, ConfValue, DataType, Field, Map, Params, Rejected, Schema, Shape, Step,
    StepContext, StepError, StepInfo, StepKind, TemplatePart, Transform, Value, ValueRef,
};

/// The `fields` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "fields",
        Shape::Transform,
        "select, drop, rename, fill, cast, add, template, flatten or nest fields, in the order the keys are written",
        ["select", "drop", "rename", "fill", "cast", "add", "template", "flatten", "nest", "separator"],
        build,
    )
});

/// One operation, as written.
#[derive(Debug)]
enum Op {
    Select(Vec<String>),
    Drop(Vec<String>),
    /// Old name → new name, all at once (so that two fields may swap names).
    Rename(Vec<(String, String)>),
    Fill(Vec<(String, Value)>),
    Cast(Vec<(String, Type)>),
    Add(Vec<(String, Value)>),
    Template(Vec<(String, Vec<TemplatePart>)>),
    /// The fields to flatten, or every field that holds tables.
    Flatten(Option<Vec<String>>),
    /// New field → the fields it gathers.
    Nest(Vec<(String, Vec<String>)>),
}

impl Op {
    /// The key it is written under.
    fn key(&self) -> serde_json::Value {
        serde_json::Value::from(match self {
            Op::Select(_) => "select",
            Op::Drop(_) => "drop",
            Op::Rename(_) => "rename",
            Op::Fill(_) => "fill",
            Op::Cast(_) => "cast",
            Op::Add(_) => "add",
            Op::Template(_) => "template",
            Op::Flatten(_) => "flatten",
            Op::Nest(_) => "nest",
        })
    }
}

/// Reshapes records: see the module's documentation and the README's table of kinds.
#[derive(Debug)]
pub struct Fields {
    ops: Vec<Op>,
    separator: String,
    config: CanonicalConfig,
}

/// The entries of the table under `key`, each with its item; an error at the key if it is
/// not a table.
fn table_entries<'p>(p: &'p Params, key: &str, item: &'p ConfItem) -> Option<Vec<(&'p str, &'p ConfItem)>> {
    match &item.value {
        ConfValue::Table(t) if !t.entries.is_empty() => {
            Some(t.entries.iter().map(|(k, _, v)| (k.as_str(), v)).collect())
        }
        ConfValue::Table(_) => {
            p.error_at(item, format!("`{key}` is empty: name the fields it applies to"));
            None
        }
        other => {
            p.error_at(
                item,
                format!("`{key}` must be a table of fields, such as {{ text = ... }}, not {}", other.type_name()),
            );
            None
        }
    }
}

/// A value written in the file, as a record's value.
fn value_of(item: &ConfItem) -> Value {
    match &item.value {
        ConfValue::Datetime(s) => Value::Str(s.clone()),
        _ => Value::from_json(&item.value.to_json().to_string()).unwrap_or(Value::Null),
    }
}

fn build(p: &Params) -> Option<Step> {
    let mut ops: Vec<(usize, Op)> = Vec::new();
    for key in ["select", "drop"] {
        let Some(item) = p.item(key) else { continue };
        let Some(names) = p.str_list(key) else { continue };
        if key == "select" && names.is_empty() {
            p.error_at(item, "`select` is empty, so every field would go: name the fields to keep");
            continue;
        }
        let mut seen = HashSet::new();
        if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
            p.error_at(item, format!("`{key}` names `{twice}` twice"));
            continue;
        }
        ops.push((item.span.start, if key == "select" { Op::Select(names) } else { Op::Drop(names) }));
    }
    if let Some(item) = p.item("rename")
        && let Some(entries) = table_entries(p, "rename", item)
    {
        let mut pairs = Vec::new();
        let mut targets = HashSet::new();
        for (old, v) in entries {
            match &v.value {
                ConfValue::Str(new) if new.is_empty() => {
                    p.error_at(v, format!("`rename.{old}` is empty: a field needs a name"));
                }
                ConfValue::Str(new) if !targets.insert(new.clone()) => {
                    p.error_at(v, format!("`rename` gives two fields the name `{new}`"));
                }
                ConfValue::Str(new) => pairs.push((old.to_owned(), new.clone())),
                other => {
                    p.error_at(v, format!("`rename.{old}` must be the new name (a string), not {}", other.type_name()));
                }
            }
        }
        ops.push((item.span.start, Op::Rename(pairs)));
    }
    for key in ["fill", "add"] {
        let Some(item) = p.item(key) else { continue };
        let Some(entries) = table_entries(p, key, item) else { continue };
        let pairs: Vec<(String, Value)> = entries.into_iter().map(|(k, v)| (k.to_owned(), value_of(v))).collect();
        ops.push((item.span.start, if key == "fill" { Op::Fill(pairs) } else { Op::Add(pairs) }));
    }
    if let (Some(item), Some(pairs)) = (p.item("cast"), weave_core::cast::types_at(p, "cast")) {
        ops.push((item.span.start, Op::Cast(pairs)));
    }
    if let Some(item) = p.item("template")
        && let Some(entries) = table_entries(p, "template", item)
    {
        let mut pairs = Vec::new();
        for (field, v) in entries {
            match &v.value {
                ConfValue::Str(t) => match weave_core::parse_template(t, "field") {
                    Ok(parts) => pairs.push((field.to_owned(), parts)),
                    Err(e) => {
                        p.error_at(v, format!("`template.{field}`: {e}"));
                    }
                },
                other => {
                    p.error_at(
                        v,
                        format!(
                            "`template.{field}` must be a string such as \"{{first}} {{last}}\", not {}",
                            other.type_name()
                        ),
                    );
                }
            }
        }
        ops.push((item.span.start, Op::Template(pairs)));
    }
    if let Some(item) = p.item("flatten") {
        match &item.value {
            ConfValue::Bool(true) => ops.push((item.span.start, Op::Flatten(None))),
            ConfValue::Bool(false) => {}
            ConfValue::Array(_) => {
                if let Some(names) = p.str_list("flatten") {
                    ops.push((item.span.start, Op::Flatten(Some(names))));
                }
            }
            other => {
                p.error_at(
                    item,
                    format!(
                        "`flatten` takes true (every field that holds tables) or a list of fields, not {}",
                        other.type_name()
                    ),
                );
            }
        }
    }
    if let Some(item) = p.item("nest")
        && let Some(entries) = table_entries(p, "nest", item)
    {
        let mut pairs = Vec::new();
        for (field, v) in entries {
            let names: Option<Vec<String>> = match &v.value {
                ConfValue::Array(a) if !a.is_empty() => a
                    .iter()
                    .map(|i| match &i.value {
                        ConfValue::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            match names {
                Some(names) => pairs.push((field.to_owned(), names)),
                None => {
                    p.error_at(
                        v,
                        format!("`nest.{field}` must be a list of the fields it gathers, such as [\"a\", \"b\"]"),
                    );
                }
            }
        }
        ops.push((item.span.start, Op::Nest(pairs)));
    }
    let separator = p.str("separator").unwrap_or_else(|| ".".to_owned());
    if separator.is_empty()
        && let Some(item) = p.item("separator")
    {
        p.error_at(item, "`separator` is empty: flattened names would run together");
    }
    if ops.is_empty() && !p.has_errors() {
        p.push(
            weave_core::Diagnostic::error("`fields` has nothing to do")
                .with_help("add `select`, `drop`, `rename`, `fill`, `cast`, `add`, `template`, `flatten` or `nest`"),
        );
    }
    if p.has_errors() {
        return None;
    }
    ops.sort_by_key(|(at, _)| *at);
    let ops: Vec<Op> = ops.into_iter().map(|(_, op)| op).collect();
    // The order of the keys decides the output, and a canonical configuration sorts keys:
    // the order goes into the cache key on its own.
    let mut config: serde_json::Value = serde_json::from_slice(p.canonical().as_bytes()).unwrap_or_default();
    if let Some(m) = config.as_object_mut() {
        m.insert("operation_order".to_owned(), ops.iter().map(Op::key).collect());
    }
    let config = match CanonicalConfig::of(&config) {
        Ok(c) => c,
        Err(e) => {
            p.push(weave_core::Diagnostic::error(format!("the configuration of `fields` cannot be keyed: {e}")));
            return None;
        }
    };
    Some(Step::Transform(Arc::new(Fields { ops, separator, config })))
}

impl StepInfo for Fields {
    fn fields_vary(&self, input: bool) -> bool {
        // Flattening gives a record a field per key of its tables, which vary from record
        // to record.
        input || self.ops.iter().any(|op| matches!(op, Op::Flatten(_)))
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn estimated_cost(&self) -> f64 {
        0.2
    }
}

/// The batch being reshaped: its columns by name, and each row's first problem.
struct Work<'a> {
    cols: Vec<(String, Arc<Column>)>,
    rows: usize,
    bad: Vec<Option<String>>,
    separator: &'a str,
}

impl Work<'_> {
    fn position(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|(n, _)| n == name)
    }

    fn mark(&mut self, row: usize, why: impl FnOnce() -> String) {
        if self.bad[row].is_none() {
            self.bad[row] = Some(why());
        }
    }

    /// Puts `col` under `name`: in its place if the field is there, else at the end.
    fn set(&mut self, name: &str, col: Column) {
        match self.position(name) {
            Some(i) => self.cols[i].1 = Arc::new(col),
            None => self.cols.push((name.to_owned(), Arc::new(col))),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), StepError> {
        match op {
            Op::Select(names) => {
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    let col = match self.position(n) {
                        Some(i) => Arc::clone(&self.cols[i].1),
                        // A field no record of the batch has: null, as it reads.
                        None => Arc::new(Column::Null(self.rows)),
                    };
                    out.push((n.clone(), col));
                }
                self.cols = out;
            }
            Op::Drop(names) => self.cols.retain(|(n, _)| !names.contains(n)),
            Op::Rename(pairs) => {
                for (name, _) in &mut self.cols {
                    if let Some((_, new)) = pairs.iter().find(|(old, _)| old == name) {
                        name.clone_from(new);
                    }
                }
                let mut seen = HashSet::new();
                if let Some((name, _)) = self.cols.iter().find(|(n, _)| !seen.insert(n.as_str())) {
                    return Err(StepError::fatal(format!(
                        "`rename` gives the name `{name}` to a field while the data has a field of that name: drop or rename that one first"
                    )));
                }
            }
            Op::Fill(pairs) => {
                for (name, value) in pairs {
                    let col = match self.position(name) {
                        Some(i) => {
                            let old = &self.cols[i].1;
                            if (0..self.rows).all(|r| !old.get(r).is_null()) {
                                continue;
                            }
                            // A whole number filling a column of floats is a float, so that
                            // the column keeps one type (a Parquet export needs it).
                            let value = match (old.data_type(), value) {
                                (DataType::Float, Value::Int(i)) => Value::Float(*i as f64),
                                _ => value.clone(),
                            };
                            let mut col = Column::Null(0);
                            for r in 0..self.rows {
                                match old.get(r) {
                                    ValueRef::Null => col.push(value.as_ref()),
                                    v => col.push(v),
                                }
                            }
                            col
                        }
                        None => constant(value, self.rows),
                    };
                    self.set(name, col);
                }
            }
            Op::Add(pairs) => {
                for (name, value) in pairs {
                    let col = constant(value, self.rows);
                    self.set(name, col);
                }
            }
            Op::Cast(pairs) => {
                for (name, t) in pairs {
                    let Some(i) = self.position(name) else { continue };
                    let old = Arc::clone(&self.cols[i].1);
                    let done = matches!(
                        (t, old.data_type()),
                        (Type::Str, DataType::Str)
                            | (Type::Int, DataType::Int | DataType::UInt)
                            | (Type::Float, DataType::Float)
                            | (Type::Bool, DataType::Bool)
                            | (_, DataType::Null)
                    );
                    if done {
                        continue;
                    }
                    let mut col = Column::Null(0);
                    for r in 0..self.rows {
                        match cast(old.get(r), t) {
                            Ok(v) => col.push(v.as_ref()),
                            Err(why) => {
                                self.mark(r, || format!("`{name}` cannot be cast to {}: {why}", t.name()));
                                col.push(ValueRef::Null);
                            }
                        }
                    }
                    self.cols[i].1 = Arc::new(col);
                }
            }
            Op::Template(pairs) => {
                for (name, parts) in pairs {
                    let mut col = Column::Str(weave_core::StrColumn::with_capacity(self.rows, 16 * self.rows));
                    let sources: Vec<Option<Arc<Column>>> = parts
                        .iter()
                        .map(|part| match part {
                            TemplatePart::Name { name, .. } => self.position(name).map(|i| Arc::clone(&self.cols[i].1)),
                            TemplatePart::Text(_) => None,
                        })
                        .collect();
                    let mut text = String::new();
                    for r in 0..self.rows {
                        text.clear();
                        let mut missing = None;
                        for (part, source) in parts.iter().zip(&sources) {
                            match part {
                                TemplatePart::Text(t) => text.push_str(t),
                                TemplatePart::Name { name: field, .. } => {
                                    match source.as_ref().map_or(ValueRef::Null, |c| c.get(r)) {
                                        ValueRef::Null => missing = Some(field),
                                        ValueRef::Str(s) => text.push_str(s),
                                        v => {
                                            use std::fmt::Write;
                                            let _ = write!(text, "{v}");
                                        }
                                    }
                                }
                            }
                        }
                        if let Some(field) = missing {
                            self.mark(r, || {
                                format!("`{name}`: the template names `{field}`, which the record lacks (or is null)")
                            });
                            col.push(ValueRef::Null);
                        } else {
                            col.push(ValueRef::Str(&text));
                        }
                    }
                    self.set(name, col);
                }
            }
            Op::Flatten(which) => {
                let mut out: Vec<(String, Arc<Column>)> = Vec::with_capacity(self.cols.len());
                for (name, col) in std::mem::take(&mut self.cols) {
                    let wanted = match which {
                        Some(names) => names.contains(&name),
                        None => (0..self.rows).any(|r| matches!(col.get(r), ValueRef::Map(_))),
                    };
                    if !wanted {
                        out.push((name, col));
                        continue;
                    }
                    for (sub, c) in self.flatten(&name, &col) {
                        out.push((sub, Arc::new(c)));
                    }
                }
                let mut seen = HashSet::new();
                if let Some((name, _)) = out.iter().find(|(n, _)| !seen.insert(n.as_str())) {
                    return Err(StepError::fatal(format!(
                        "`flatten` makes a field `{name}` while the data has a field of that name: rename one of them first"
                    )));
                }
                self.cols = out;
            }
            Op::Nest(pairs) => {
                for (name, members) in pairs {
                    let present: Vec<(String, Arc<Column>)> =
                        self.cols.iter().filter(|(n, _)| members.contains(n)).cloned().collect();
                    let at = self.cols.iter().position(|(n, _)| members.contains(n));
                    let mut col = Column::Null(0);
                    for r in 0..self.rows {
                        let mut m = Map::new();
                        // In the order the list names them.
                        for member in members {
                            if let Some((_, c)) = present.iter().find(|(n, _)| n == member) {
                                m.insert(member.clone(), c.get(r).to_owned());
                            }
                        }
                        col.push(ValueRef::Map(&m));
                    }
                    self.cols.retain(|(n, _)| !members.contains(n));
                    let at = at.map_or(self.cols.len(), |i| i.min(self.cols.len()));
                    if let Some(i) = self.position(name) {
                        self.cols[i].1 = Arc::new(col);
                    } else {
                        self.cols.insert(at, (name.clone(), Arc::new(col)));
                    }
                }
            }
        }
        Ok(())
    }

    /// The columns of a field of tables: each key (of tables within tables too) becomes
    /// `field<separator>key`, in the order the keys first come; a row without a key holds
    /// null there. A value that is neither a table nor null makes its record bad.
    fn flatten(&mut self, name: &str, col: &Column) -> Vec<(String, Column)> {
        let mut out: Vec<(String, Column)> = Vec::new();
        let mut pairs: Vec<(String, Value)> = Vec::new();
        for r in 0..self.rows {
            pairs.clear();
            match col.get(r) {
                ValueRef::Map(m) => flatten_into(name, m, self.separator, &mut pairs),
                ValueRef::Null => {}
                v => {
                    let shown = v.to_string();
                    self.mark(r, || format!("`{name}` cannot be flattened: it holds {shown}, not a table"));
                }
            }
            for (key, v) in &pairs {
                let i = match out.iter().position(|(n, _)| n == key) {
                    Some(i) => i,
                    None => {
                        out.push((key.clone(), Column::Null(r)));
                        out.len() - 1
                    }
                };
                out[i].1.push(v.as_ref());
            }
            for (_, c) in &mut out {
                if c.len() == r {
                    c.push(ValueRef::Null);
                }
            }
        }
        out
    }
}

fn flatten_into(prefix: &str, m: &Map, sep: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in m.iter() {
        let key = format!("{prefix}{sep}{k}");
        match v {
            Value::Map(inner) => flatten_into(&key, inner, sep, out),
            v => out.push((key, v.clone())),
        }
    }
}

/// A column of `rows` copies of `value`.
fn constant(value: &Value, rows: usize) -> Column {
    let mut col = Column::Null(0);
    for _ in 0..rows {
        col.push(value.as_ref());
    }
    col
}

impl Transform for Fields {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let rows = batch.len();
        let cols =
            batch.schema().fields().iter().zip(batch.columns()).map(|(f, c)| (f.name.clone(), Arc::clone(c))).collect();
        let mut work = Work { cols, rows, bad: vec![None; rows], separator: &self.separator };
        for op in &self.ops {
            work.apply(op)?;
        }
        let schema = Schema::new(work.cols.iter().map(|(n, c)| Field::new(n.clone(), c.data_type())).collect());
        let out = Batch::new(Arc::new(schema), work.cols.into_iter().map(|(_, c)| c).collect())
            .map_err(|e| StepError::internal(format!("fields made a batch that does not hold together: {e}")))?;
        if work.bad.iter().all(Option::is_none) {
            return Ok(out);
        }
        let mut keep = vec![true; rows];
        for (row, why) in work.bad.into_iter().enumerate() {
            if let Some(reason) = why {
                keep[row] = false;
                ctx.reject(Rejected { reason, record: Some(batch.row(row).to_record()), origin: None });
            }
        }
        Ok(out.filter(&keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::Record;

    /// Runs `fields` with `config` over `records`: the records out, and the reasons of the
    /// records set aside.
    fn run(config: &str, records: &[Record]) -> (Vec<serde_json::Value>, Vec<String>) {
        let (rows, bad, _) = run_named(config, records);
        (rows, bad)
    }

    /// [`run`], and the output's field names in order.
    fn run_named(config: &str, records: &[Record]) -> (Vec<serde_json::Value>, Vec<String>, Vec<String>) {
        let Step::Transform(t) = build_step("fields", config) else { panic!("fields is a transform") };
        let mut ctx = StepContext::new("fields", 0, 0, Default::default());
        let out = t.apply(&Batch::from_records(records), &mut ctx).unwrap();
        let rows = out.rows().map(|r| serde_json::to_value(r.to_record()).unwrap()).collect();
        let names = out.schema().fields().iter().map(|f| f.name.clone()).collect();
        (rows, ctx.take_rejected().into_iter().map(|r| r.reason).collect(), names)
    }

    fn people() -> Vec<Record> {
        vec![
            Record::new()
                .with("id", "1")
                .with("first", "Ada")
                .with("last", "Lovelace")
                .with("score", " 3.0 ")
                .with("debug", true),
            Record::new()
                .with("id", "2")
                .with("first", "Alan")
                .with("last", "Turing")
                .with("score", Value::Null)
                .with("debug", false),
        ]
    }

    #[test]
    fn operations_apply_in_the_order_they_are_written() {
        let config = "rename = { first = \"given\" }\nselect = [\"id\", \"given\", \"last\", \"score\"]\n\
                      cast = { id = \"int\", score = \"float\" }\nfill = { score = 0 }\n\
                      template = { name = \"{given} {last}\" }\nadd = { source = \"web\", version = 2 }";
        let (rows, bad, names) = run_named(config, &people());
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(
            rows,
            [
                serde_json::json!({"id": 1, "given": "Ada", "last": "Lovelace", "score": 3.0, "name": "Ada Lovelace", "source": "web", "version": 2}),
                serde_json::json!({"id": 2, "given": "Alan", "last": "Turing", "score": 0.0, "name": "Alan Turing", "source": "web", "version": 2}),
            ]
        );
        assert_eq!(names, ["id", "given", "last", "score", "name", "source", "version"], "fields keep their order");
        // Written the other way round, the select comes first and knows no `given`.
        let (rows, _) = run("select = [\"id\", \"given\"]\nrename = { first = \"given\" }", &people());
        assert_eq!(rows[0], serde_json::json!({"id": "1", "given": null}));
    }

    #[test]
    fn the_order_of_the_operations_is_in_the_cache_key() {
        let config = |text: &str| build_step("fields", text).info().config();
        let a = config("select = [\"id\", \"given\"]\nrename = { first = \"given\" }");
        let b = config("rename = { first = \"given\" }\nselect = [\"id\", \"given\"]");
        assert_ne!(a, b, "the same keys in another order make other records");
        assert_eq!(a, config("select = [\"id\", \"given\"]\nrename = { first = \"given\" }"));
    }

    #[test]
    fn renames_happen_at_once_and_a_clash_is_an_error() {
        let (rows, _) =
            run("rename = { first = \"last\", last = \"first\" }\ndrop = [\"debug\", \"score\", \"id\"]", &people());
        assert_eq!(rows[0], serde_json::json!({"last": "Ada", "first": "Lovelace"}));
        let Step::Transform(t) = build_step("fields", "rename = { first = \"last\" }") else { panic!() };
        let mut ctx = StepContext::new("fields", 0, 0, Default::default());
        let err = t.apply(&Batch::from_records(&people()), &mut ctx).unwrap_err();
        assert!(
            err.to_string().contains("gives the name `last` to a field while the data has a field of that name"),
            "{err}"
        );
    }

    #[test]
    fn values_that_do_not_cast_set_their_record_aside_with_the_field_and_value() {
        let rows = vec![
            Record::new().with("n", "42").with("f", "1e3").with("b", "Yes").with("j", "{\"a\": [1, 2]}"),
            Record::new().with("n", "4.5").with("f", "x").with("b", "maybe").with("j", "{"),
            Record::new().with("n", 7.0).with("f", 2i64).with("b", 0i64).with("j", Value::Null),
            Record::new().with("n", "99999999999999999999999").with("f", true).with("b", 1.0).with("j", "[]"),
            Record::new().with("n", "").with("f", "  ").with("b", "").with("j", ""),
        ];
        let (out, bad) = run("cast = { n = \"int\", f = \"float\", b = \"bool\", j = \"json\" }", &rows);
        assert_eq!(
            out,
            [
                serde_json::json!({"n": 42, "f": 1000.0, "b": true, "j": {"a": [1, 2]}}),
                serde_json::json!({"n": 7, "f": 2.0, "b": false, "j": null}),
                serde_json::from_str::<serde_json::Value>(
                    r#"{"n": 99999999999999999999999, "f": 1.0, "b": true, "j": []}"#
                )
                .unwrap(),
                serde_json::json!({"n": null, "f": null, "b": null, "j": null}),
            ]
        );
        assert_eq!(bad, ["`n` cannot be cast to int: \"4.5\" is not a whole number"]);
        let (_, bad) = run("cast = { f = \"float\" }", &rows[1..2]);
        assert_eq!(bad, ["`f` cannot be cast to float: \"x\" is not a number"]);
        let (_, bad) = run("cast = { b = \"bool\" }", &rows[1..2]);
        assert_eq!(bad, ["`b` cannot be cast to bool: \"maybe\" is not true, false, yes, no, 1 or 0"]);
        let (_, bad) = run("cast = { j = \"json\" }", &rows[1..2]);
        assert!(bad[0].starts_with("`j` cannot be cast to json: \"{\" is not JSON"), "{bad:?}");
        let (out, _) = run("cast = { n = \"string\", b = \"string\" }", &rows[2..3]);
        assert_eq!(out[0]["n"], "7.0");
        assert_eq!(out[0]["b"], "0");
    }

    #[test]
    fn a_template_naming_a_missing_field_sets_the_record_aside() {
        let rows = vec![Record::new().with("first", "Ada"), Record::new().with("first", "Alan").with("last", "Turing")];
        let (out, bad) = run("template = { name = \"{first} {last} ({{x}})\" }", &rows);
        assert_eq!(out, [serde_json::json!({"first": "Alan", "last": "Turing", "name": "Alan Turing ({x})"})]);
        assert_eq!(bad, ["`name`: the template names `last`, which the record lacks (or is null)"]);
    }

    #[test]
    fn flatten_and_nest_are_inverses() {
        let meta = |a: i64, deep: Option<&str>| {
            let mut m = Map::new();
            m.insert("a", a);
            if let Some(d) = deep {
                let mut inner = Map::new();
                inner.insert("c", d);
                m.insert("b", Value::Map(inner));
            }
            Value::Map(m)
        };
        let rows = vec![
            Record::new().with("id", 1i64).with("meta", meta(1, Some("x"))),
            Record::new().with("id", 2i64).with("meta", meta(2, None)),
            Record::new().with("id", 3i64).with("meta", Value::Null),
        ];
        let (out, bad) = run("flatten = [\"meta\"]", &rows);
        assert!(bad.is_empty());
        assert_eq!(
            out,
            [
                serde_json::json!({"id": 1, "meta.a": 1, "meta.b.c": "x"}),
                serde_json::json!({"id": 2, "meta.a": 2, "meta.b.c": null}),
                serde_json::json!({"id": 3, "meta.a": null, "meta.b.c": null}),
            ]
        );
        let (out, _) = run("flatten = true\nseparator = \"_\"\nnest = { m = [\"meta_b_c\", \"meta_a\"] }", &rows[..1]);
        assert_eq!(out, [serde_json::json!({"id": 1, "m": {"meta_b_c": "x", "meta_a": 1}})]);
        let (out, bad) = run("flatten = [\"id\"]", &rows[..1]);
        assert!(out.is_empty());
        assert_eq!(bad, ["`id` cannot be flattened: it holds 1, not a table"]);
    }

    #[test]
    fn bad_keys_are_named_where_they_are_written() {
        check_build_errors(
            "fields",
            "select = []\nrename = { a = \"x\", b = \"x\", c = 3 }\ncast = { a = \"datum\" }\ntemplate = { t = \"{a\" }\nflatten = 3\nnest = { m = [] }\nseparator = \"\"",
            &[
                "1:10 `select` is empty, so every field would go: name the fields to keep",
                "2:25 `rename` gives two fields the name `x`",
                "2:34 `rename.c` must be the new name (a string), not an integer",
                "3:14 `cast.a`: unknown type `datum`; the types are string, int, float, bool, json, date, timestamp, decimal(P, S)",
                "4:18 `template.t`: the `{` at character 1 opens a field that is not closed (write `{{` for a brace)",
                "5:11 `flatten` takes true (every field that holds tables) or a list of fields, not an integer",
                "6:14 `nest.m` must be a list of the fields it gathers, such as [\"a\", \"b\"]",
                "7:13 `separator` is empty: flattened names would run together",
            ],
        );
        check_build_errors("fields", "flatten = false", &["- `fields` has nothing to do"]);
    }
}
