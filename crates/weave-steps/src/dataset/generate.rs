//! The `generate` step: records made from templates with slots filled at random.

use std::path::PathBuf;
use std::sync::Arc;

use weave_core::{
    Batch, CanonicalConfig, Column, ConfItem, ConfValue, DataType, Diagnostic, Field, Params, PrimitiveColumn, Schema,
    Shape, Source, Step, StepContext, StepError, StepInfo, StepKind, StrColumn, TemplatePart, Value, did_you_mean,
};

use super::{Rng, position_key, salt};

/// The `generate` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "generate",
        Shape::Source,
        "make `count` records from templates such as \"My {device} won't {problem}.\", each slot filled with a seeded random value",
        ["templates", "slots", "count", "field", "template_field", "batch_size", "seed"],
        build,
    )
});

/// A piece of a template: text as it is, or a slot (by its number in `slots`).
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Slot(usize),
}

#[derive(Debug)]
struct Template {
    pieces: Vec<Piece>,
    /// The slots it uses, each once, in order of first use: the order values are drawn.
    slots: Vec<usize>,
    /// Fields given with the template (`{ text = "...", label = "billing" }`), by their
    /// number among all templates' extra fields.
    fields: Vec<(usize, Value)>,
}

/// Where a slot's values come from.
#[derive(Debug)]
enum Values {
    List(Vec<String>),
    /// A text file, one value per line (blank lines skipped), read when the step starts.
    File(PathBuf),
}

/// Makes `count` records from templates: each record takes a template at random and fills
/// each of its slots (`{device}`) with a random value of that slot, the same value
/// wherever the slot appears in the template. A record holds the text (`text`), the
/// template's number from 0 (`template`), the value of every slot (null for the slots
/// its template does not use), and any fields given with its template.
///
/// Record `i` is drawn from the seed and `i` alone, so the output does not depend on the
/// batch size. `{{` and `}}` write literal braces.
#[derive(Debug)]
pub struct Generate {
    templates: Vec<Template>,
    slot_names: Vec<String>,
    slots: Vec<Values>,
    /// The values of each slot, once read.
    values: Option<Vec<Vec<String>>>,
    extra_fields: Vec<String>,
    count: u64,
    field: String,
    template_field: String,
    batch_size: usize,
    seed: Option<u64>,
    next: u64,
    schema: Option<Arc<Schema>>,
    /// Bytes per row of the text and of each slot column in the last batch, to size the
    /// next batch's buffers in one allocation.
    row_bytes: Vec<usize>,
    config: CanonicalConfig,
}

/// A value given with a template, as a record field.
fn field_value(p: &Params, name: &str, item: &ConfItem) -> Option<Value> {
    Some(match &item.value {
        ConfValue::Str(s) => Value::Str(s.clone()),
        ConfValue::Int(i) => Value::Int(*i),
        ConfValue::Float(f) => Value::Float(*f),
        ConfValue::Bool(b) => Value::Bool(*b),
        other => {
            p.error_at(
                item,
                format!("field `{name}` of a template must be a string, number or boolean, not {}", other.type_name()),
            );
            return None;
        }
    })
}

/// The slots table: each slot's values, a list or `{ file = "values.txt" }`.
fn read_slots(p: &Params) -> Vec<(String, std::ops::Range<usize>, Option<Values>)> {
    let Some(item) = p.item("slots") else { return Vec::new() };
    let ConfValue::Table(t) = &item.value else {
        p.error_at(item, format!("`slots` must be a table of slot names and values, not {}", item.value.type_name()));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, span, v) in &t.entries {
        let values = match &v.value {
            ConfValue::Array(a) if a.is_empty() => {
                p.error_at(v, format!("slot `{name}` has no values"));
                None
            }
            ConfValue::Array(a) => {
                let mut list = Vec::with_capacity(a.len());
                for i in a {
                    match &i.value {
                        ConfValue::Str(s) => list.push(s.clone()),
                        other => {
                            p.error_at(
                                i,
                                format!("the values of slot `{name}` must be strings, not {}", other.type_name()),
                            );
                        }
                    }
                }
                Some(Values::List(list))
            }
            ConfValue::Table(ft) => match (ft.entries.len(), ft.get("file").map(|f| &f.value)) {
                (1, Some(ConfValue::Str(path))) => {
                    let path = weave_core::resolve(p.file().path(), path);
                    match crate::input::not_a_regular_file(&path) {
                        Some(why) => {
                            p.error_at(v, format!("slot `{name}`: `file` {why}"));
                            None
                        }
                        None => Some(Values::File(path)),
                    }
                }
                _ => {
                    p.error_at(v, format!("slot `{name}` takes a list of values or {{ file = \"values.txt\" }}"));
                    None
                }
            },
            other => {
                p.error_at(
                    v,
                    format!(
                        "slot `{name}` takes a list of values or {{ file = \"values.txt\" }}, not {}",
                        other.type_name()
                    ),
                );
                None
            }
        };
        out.push((name.clone(), span.clone(), values));
    }
    out
}

fn build(p: &Params) -> Option<Step> {
    let slots = read_slots(p);
    let slot_names: Vec<String> = slots.iter().map(|(n, _, _)| n.clone()).collect();
    let count = p.u64("count");
    if !p.has("count") {
        p.push(Diagnostic::error("missing required key `count` (how many records to make)"));
    }
    if let (Some(0), Some(item)) = (count, p.item("count")) {
        p.error_at(item, "`count` must be at least 1: generating no record leaves nothing to export");
    }
    let field = p.str("field").unwrap_or_else(|| "text".to_owned());
    let template_field = p.str("template_field").unwrap_or_else(|| "template".to_owned());
    let batch_size = crate::batch_size(p);
    let seed = super::seed_key(p);
    let mut templates = Vec::new();
    let mut extra_fields: Vec<String> = Vec::new();
    let mut used = vec![false; slot_names.len()];
    match p.item("templates") {
        None => p.push(Diagnostic::error(
            "missing required key `templates` (texts with slots, such as [\"My {device} won't {problem}.\"])",
        )),
        Some(item) => match &item.value {
            ConfValue::Array(a) if a.is_empty() => {
                p.error_at(item, "`templates` is empty: give at least one template");
            }
            ConfValue::Array(a) => {
                for t in a {
                    let (text, fields) = match &t.value {
                        ConfValue::Str(s) => (s.as_str(), Vec::new()),
                        ConfValue::Table(tt) => {
                            let Some(ConfValue::Str(s)) = tt.get("text").map(|i| &i.value) else {
                                p.error_at(t, "a template table needs `text`: { text = \"...\", label = \"...\" }");
                                continue;
                            };
                            let mut fields = Vec::new();
                            for (name, _, v) in tt.entries.iter().filter(|(k, _, _)| k != "text") {
                                let Some(value) = field_value(p, name, v) else { continue };
                                let i = extra_fields.iter().position(|f| f == name).unwrap_or_else(|| {
                                    extra_fields.push(name.clone());
                                    extra_fields.len() - 1
                                });
                                fields.push((i, value));
                            }
                            (s.as_str(), fields)
                        }
                        other => {
                            p.error_at(
                                t,
                                format!(
                                    "a template is a string or {{ text = \"...\", ... }}, not {}",
                                    other.type_name()
                                ),
                            );
                            continue;
                        }
                    };
                    let parsed = match weave_core::parse_template(text, "slot") {
                        Ok(x) => x,
                        Err(e) => {
                            p.error_at(t, e.to_string());
                            continue;
                        }
                    };
                    let mut pieces = Vec::with_capacity(parsed.len());
                    let mut uses = Vec::new();
                    for part in parsed {
                        let s = match part {
                            TemplatePart::Text(s) => {
                                pieces.push(Piece::Text(s));
                                continue;
                            }
                            TemplatePart::Name { name, .. } => name,
                        };
                        match slot_names.iter().position(|n| *n == s) {
                            Some(i) => {
                                used[i] = true;
                                if !uses.contains(&i) {
                                    uses.push(i);
                                }
                                pieces.push(Piece::Slot(i));
                            }
                            None => {
                                let mut msg = format!("the template uses slot `{s}`, which `slots` does not define");
                                match did_you_mean(&s, slot_names.iter().map(String::as_str)) {
                                    Some(m) => msg.push_str(&format!(" (did you mean `{m}`?)")),
                                    None if slot_names.is_empty() => msg.push_str(" (there are no slots)"),
                                    None => msg.push_str(&format!(" (slots: {})", slot_names.join(", "))),
                                }
                                p.error_at(t, msg);
                            }
                        }
                    }
                    templates.push(Template { pieces, slots: uses, fields });
                }
            }
            other => {
                p.error_at(item, format!("`templates` must be a list, not {}", other.type_name()));
            }
        },
    }
    for ((name, span, _), used) in slots.iter().zip(&used) {
        if !used && !p.has_errors() {
            p.push(
                Diagnostic::warning(format!("slot `{name}` is not used by any template"))
                    .with_code("unused-slot")
                    .at(Some(p.locate(span.clone()))),
            );
        }
    }
    // Field names must not collide: the text, the template number, slots, extra fields.
    let mut names: Vec<&str> = vec![&field];
    for n in std::iter::once(&template_field).chain(&slot_names).chain(&extra_fields) {
        if names.contains(&n.as_str()) {
            if let Some(item) = p.item("templates") {
                p.error_at(item, format!("two output fields are named `{n}` (the text, `template_field`, a slot, or a field given with a template): rename one"));
            }
        } else {
            names.push(n);
        }
    }
    if p.has_errors() {
        return None;
    }
    let slots: Vec<Values> = slots.into_iter().filter_map(|(_, _, v)| v).collect();
    // Repeats are certain when `count` passes the distinct records the templates can make.
    if slots.iter().all(|s| matches!(s, Values::List(_))) {
        let sizes: Vec<u128> =
            slots.iter().map(|s| if let Values::List(l) = s { l.len() as u128 } else { 1 }).collect();
        let distinct: u128 =
            templates.iter().map(|t| t.slots.iter().map(|&s| sizes[s]).fold(1u128, u128::saturating_mul)).sum();
        if let (Some(c), Some(item)) = (count, p.item("count"))
            && u128::from(c) > distinct
        {
            p.push(
                Diagnostic::warning(format!(
                    "`count` is {c}, but the templates can make only {distinct} distinct records: expect repeats"
                ))
                .with_code("repeats")
                .at(Some(p.locate(item.span.clone()))),
            );
        }
    }
    // A shard generates its share of the positions: each record is a function of the seed
    // and its position alone, so the shards' records together are the whole run's.
    let positions = p.context().shard().map_or(0..count?, |s| s.range(count.unwrap_or_default()));
    Some(Step::Source(Box::new(Generate {
        templates,
        slot_names,
        slots,
        values: None,
        extra_fields,
        count: positions.end,
        field,
        template_field,
        batch_size,
        seed,
        next: positions.start,
        schema: None,
        row_bytes: Vec::new(),
        config: p.canonical(),
    })))
}

impl StepInfo for Generate {
    fn kind(&self) -> &str {
        &KIND.name
    }

    /// 2: a template field holding ints in some templates and floats in others keeps each as written (they were all floats in batches that mixed them).
    fn version(&self) -> u32 {
        2
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_read(&self) -> Vec<PathBuf> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Values::File(p) => Some(p.clone()),
                Values::List(_) => None,
            })
            .collect()
    }
}

impl Generate {
    /// Every slot's values, reading the files.
    fn load_values(&self, ctx: &mut StepContext) -> Result<Vec<Vec<String>>, StepError> {
        let mut out = Vec::with_capacity(self.slots.len());
        for (name, s) in self.slot_names.iter().zip(&self.slots) {
            out.push(match s {
                Values::List(l) => l.clone(),
                Values::File(path) => {
                    let mut lines = crate::input::Lines::new(vec![path.clone()], crate::MAX_RECORD_BYTES);
                    let mut values = Vec::new();
                    while let Some(line) = lines.next_line(ctx)? {
                        if !line.text.trim().is_empty() {
                            values.push(line.text.to_owned());
                        }
                    }
                    if values.is_empty() {
                        return Err(StepError::fatal(format!(
                            "slot `{name}`: {} has no values (one per line)",
                            path.display()
                        )));
                    }
                    values
                }
            });
        }
        Ok(out)
    }
}

impl Source for Generate {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        if self.next >= self.count {
            return Ok(None);
        }
        if self.values.is_none() {
            self.values = Some(self.load_values(ctx)?);
        }
        let Some(values) = &self.values else { return Ok(None) };
        let seed = self.seed.unwrap_or(ctx.seed());
        let end = (self.next + self.batch_size as u64).min(self.count);
        let rows = (end - self.next) as usize;
        let bytes = |c: usize, guess: usize| rows * (self.row_bytes.get(c).copied().unwrap_or(guess) + 1);
        let mut text = StrColumn::with_capacity(rows, bytes(0, 64));
        let mut template = Vec::with_capacity(rows);
        let mut slot_cols: Vec<StrColumn> =
            (0..values.len()).map(|s| StrColumn::with_capacity(rows, bytes(s + 1, 8))).collect();
        let mut extra_cols: Vec<Column> = self.extra_fields.iter().map(|_| Column::Null(0)).collect();
        let mut drawn = vec![usize::MAX; values.len()];
        for i in self.next..end {
            let mut rng = Rng::new(position_key(seed, salt::GENERATE, i));
            let ti = rng.below(self.templates.len());
            let t = &self.templates[ti];
            drawn.iter_mut().for_each(|d| *d = usize::MAX);
            for &s in &t.slots {
                drawn[s] = rng.below(values[s].len());
            }
            text.push_with(|a| {
                for piece in &t.pieces {
                    match piece {
                        Piece::Text(s) => a.push_str(s),
                        Piece::Slot(s) => a.push_str(&values[*s][drawn[*s]]),
                    }
                }
            });
            template.push(ti as i64);
            for (s, col) in slot_cols.iter_mut().enumerate() {
                match drawn[s] {
                    usize::MAX => col.push_null(),
                    d => col.push(&values[s][d]),
                }
            }
            for (f, col) in extra_cols.iter_mut().enumerate() {
                match t.fields.iter().find(|(i, _)| *i == f) {
                    Some((_, v)) => col.push(v.as_ref()),
                    None => col.push(weave_core::ValueRef::Null),
                }
            }
        }
        self.next = end;
        self.row_bytes =
            std::iter::once(&text).chain(&slot_cols).map(|c| c.data().len().div_ceil(rows.max(1))).collect();
        let mut columns: Vec<Arc<Column>> =
            vec![Arc::new(Column::Str(text)), Arc::new(Column::Int(PrimitiveColumn::from_values(template)))];
        columns.extend(slot_cols.into_iter().map(|c| Arc::new(Column::Str(c))));
        columns.extend(extra_cols.into_iter().map(Arc::new));
        // Extra columns take their type from their values; the schema follows them.
        let fields: Vec<Field> = std::iter::once(&self.field)
            .chain(std::iter::once(&self.template_field))
            .chain(&self.slot_names)
            .chain(&self.extra_fields)
            .zip(&columns)
            .map(|(n, c)| Field::new(n.clone(), c.data_type()))
            .collect();
        let schema = match &self.schema {
            Some(s) if s.fields() == fields.as_slice() => Arc::clone(s),
            _ => {
                let s = Arc::new(Schema::new(fields));
                self.schema = Some(Arc::clone(&s));
                s
            }
        };
        debug_assert!(schema.fields()[0].data_type == DataType::Str);
        Batch::new(schema, columns).map(Some).map_err(|e| StepError::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use std::collections::HashSet;

    // regression: `batch_size` had no upper bound, and `generate` sized its columns for
    // a whole batch up front: a billion rows aborted on a failed allocation.
    #[test]
    fn batch_size_has_an_upper_bound() {
        check_build_errors(
            "generate",
            "count = 1000000000\nbatch_size = 1000000000\ntemplates = [\"x\"]",
            &["2:14 `batch_size` must be from 1 to 1000000, not 1000000000"],
        );
    }

    fn generate(config: &str, seed: u64) -> Vec<String> {
        let Step::Source(mut g) = build_step("generate", config) else { panic!("generate is a source") };
        let mut ctx = StepContext::new("generate", seed, 0, Default::default());
        let mut out = Vec::new();
        while let Some(b) = g.next_batch(&mut ctx).unwrap() {
            out.extend(b.to_records().iter().map(ToString::to_string));
        }
        out
    }

    const DEVICES: &str = "templates = [\"My {device} won't {problem}.\", \"{device}: {problem}, {problem}!\"]\n\
        slots = { device = [\"phone\", \"laptop\", \"tablet\"], problem = [\"charge\", \"boot\"] }\n";

    #[test]
    fn records_hold_the_text_the_template_and_the_slot_values() {
        let rows = generate(&format!("{DEVICES}count = 200"), 42);
        assert_eq!(rows.len(), 200);
        let mut seen_templates = HashSet::new();
        for r in &rows {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            let (device, problem) = (v["device"].as_str().unwrap(), v["problem"].as_str().unwrap());
            let want = match v["template"].as_i64().unwrap() {
                0 => format!("My {device} won't {problem}."),
                1 => format!("{device}: {problem}, {problem}!"),
                t => panic!("template {t}"),
            };
            assert_eq!(v["text"], want.as_str());
            seen_templates.insert(v["template"].as_i64());
        }
        assert_eq!(seen_templates.len(), 2);
        let distinct: HashSet<&String> = rows.iter().collect();
        assert_eq!(distinct.len(), 12, "3 devices × 2 problems × 2 templates");
    }

    #[test]
    fn seeded_records_are_fixed_forever() {
        // Part of the output contract (see `weave_core::rng`): recorded before the random
        // streams moved to weave-core, they must never change.
        let want = [
            r#"{"text":"laptop: charge, charge!","template":1,"device":"laptop","problem":"charge"}"#,
            r#"{"text":"tablet: boot, boot!","template":1,"device":"tablet","problem":"boot"}"#,
            r#"{"text":"phone: charge, charge!","template":1,"device":"phone","problem":"charge"}"#,
            r#"{"text":"phone: charge, charge!","template":1,"device":"phone","problem":"charge"}"#,
        ];
        assert_eq!(generate(&format!("{DEVICES}count = 4"), 42), want);
    }

    #[test]
    fn output_depends_on_the_seed_not_on_the_batch_size() {
        let a = generate(&format!("{DEVICES}count = 1000"), 1);
        assert_eq!(a, generate(&format!("{DEVICES}count = 1000\nbatch_size = 7"), 1));
        assert_ne!(a, generate(&format!("{DEVICES}count = 1000"), 2));
        assert_eq!(
            generate(&format!("{DEVICES}count = 1000\nseed = 2"), 1),
            generate(&format!("{DEVICES}count = 1000"), 2)
        );
        // The first records do not change when more are asked for.
        assert_eq!(generate(&format!("{DEVICES}count = 10"), 1), a[..10]);
    }

    #[test]
    fn templates_carry_fields_and_braces_and_slots_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("colors.txt"), "red\r\n\nblue\n").unwrap();
        let config = "templates = [{ text = \"{{literal}} {color}\", label = \"paint\", weight = 2 }, \"plain\"]\n\
            slots = { color = { file = \"colors.txt\" } }\ncount = 40\nfield = \"prompt\"\n";
        let pipeline = dir.path().join("p.toml");
        let table = weave_core::ConfTable::parse(config).unwrap();
        let p = Params::new(table, weave_core::SourceFile::new(pipeline, config), "step", Some("g".into()));
        let Some(Step::Source(mut g)) = (KIND.build)(&p) else { panic!("{}", p.finish(&KIND.all_keys())) };
        assert_eq!(g.files_read(), [dir.path().join("colors.txt")]);
        let mut ctx = StepContext::new("g", 0, 0, Default::default());
        let batch = g.next_batch(&mut ctx).unwrap().unwrap();
        assert_eq!(
            batch.schema().to_string(),
            "{prompt: string, template: int, color: string, label: string, weight: int}"
        );
        let rows: HashSet<String> = batch.to_records().iter().map(ToString::to_string).collect();
        let want: HashSet<String> = [
            r#"{"prompt":"{literal} red","template":0,"color":"red","label":"paint","weight":2}"#,
            r#"{"prompt":"{literal} blue","template":0,"color":"blue","label":"paint","weight":2}"#,
            r#"{"prompt":"plain","template":1,"color":null,"label":null,"weight":null}"#,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(rows, want);
    }

    #[test]
    fn an_empty_slot_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.txt");
        std::fs::write(&path, "\n  \n").unwrap();
        let config = format!(
            "templates = [\"{{x}}\"]\nslots = {{ x = {{ file = {:?} }} }}\ncount = 1",
            path.display().to_string()
        );
        let Step::Source(mut g) = build_step("generate", &config) else { panic!() };
        let err = g.next_batch(&mut StepContext::new("g", 0, 0, Default::default())).unwrap_err();
        assert_eq!(err.to_string(), format!("slot `x`: {} has no values (one per line)", path.display()));
    }

    // regression: a slot file that is a device or a FIFO hung `weave plan` and `weave run`
    // (hashing it for the cache key) instead of being refused.
    #[test]
    fn a_slot_file_that_is_no_regular_file_is_a_build_error() {
        let dir = tempfile::tempdir().unwrap();
        for path in [PathBuf::from("/dev/zero"), dir.path().to_path_buf()] {
            let what = if path.is_dir() { "a folder" } else { "a character device" };
            let path = path.display().to_string();
            check_build_errors(
                "generate",
                &format!("templates = [\"{{x}}\"]\nslots = {{ x = {{ file = {path:?} }} }}\ncount = 1"),
                &[&format!(
                    "2:15 slot `x`: `file` names {what} ({path}), not a regular file: inputs must be regular files, since Weave reads each once to hash it for the cache and again to load it"
                )],
            );
        }
    }

    // regression: `count = 0` made no record, and the run succeeded with an empty output.
    #[test]
    fn a_count_of_zero_is_refused() {
        check_build_errors(
            "generate",
            "templates = [\"x\"]\ncount = 0",
            &["2:9 `count` must be at least 1: generating no record leaves nothing to export"],
        );
    }

    #[test]
    fn template_mistakes_are_named() {
        check_build_errors(
            "generate",
            "templates = [\"My {devise} broke\", \"{ok\", \"a } b\", \"{}\"]\nslots = { device = [\"phone\"], color = [] }\ncount = 1",
            &[
                "2:39 slot `color` has no values",
                "1:14 the template uses slot `devise`, which `slots` does not define (did you mean `device`?)",
                "1:35 the `{` at character 1 opens a slot that is not closed (write `{{` for a brace)",
                "1:42 the `}` at character 3 closes no slot (write `}}` for a brace)",
                "1:51 the slot at character 1 has no name (write `{{}}` for braces)",
            ],
        );
        check_build_errors(
            "generate",
            "templates = [\"{a}\"]\nslots = { a = [\"x\"], b = [\"y\"] }\ncount = 5",
            &[
                "2:22 slot `b` is not used by any template",
                "3:9 `count` is 5, but the templates can make only 1 distinct records: expect repeats",
            ],
        );
        check_build_errors(
            "generate",
            "templates = []\nslots = [1]",
            &[
                "2:9 `slots` must be a table of slot names and values, not an array",
                "- missing required key `count` (how many records to make)",
                "1:13 `templates` is empty: give at least one template",
            ],
        );
        check_build_errors(
            "generate",
            "templates = [\"{text}\"]\nslots = { text = [\"x\"] }\ncount = 1",
            &[
                "1:13 two output fields are named `text` (the text, `template_field`, a slot, or a field given with a template): rename one",
            ],
        );
    }
}
