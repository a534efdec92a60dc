//! The `dedup` step: drops records whose chosen fields repeat an earlier record's.

use std::collections::HashSet;

use weave_core::{
    Batch, CanonicalConfig, Params, Shape, StatefulTransform, Step, StepContext, StepError, StepInfo, StepKind,
    ValueRef,
};

/// The `dedup` kind.
pub(crate) const KIND: StepKind = StepKind {
    name: "dedup",
    shape: Shape::StatefulTransform,
    summary: "drop records whose fields (after an optional normalisation) repeat an earlier record's",
    keys: &["fields", "normalize"],
    build,
};

const NORMALIZE: &[&str] = &["lowercase", "trim", "collapse_whitespace"];

/// Keeps the first record of each distinct key and drops the rest, counting them as
/// `duplicate`. A key is a 128-bit blake3 of the chosen fields (normalised as asked), so
/// memory grows by 16 bytes (plus the set's overhead) per distinct record, whatever the
/// text's length.
#[derive(Debug)]
pub struct Dedup {
    keys: RecordKeys,
    seen: HashSet<u128>,
    config: CanonicalConfig,
}

fn build(p: &Params) -> Option<Step> {
    let keys = RecordKeys::read(p, "make a record a duplicate");
    if p.has_errors() {
        return None;
    }
    Some(Step::StatefulTransform(Box::new(Dedup { keys: keys?, seen: HashSet::new(), config: p.canonical(&[]) })))
}

impl StepInfo for Dedup {
    fn kind(&self) -> &str {
        KIND.name
    }

    /// 2: numbers are keyed by value (an integral float matches the integer).
    fn version(&self) -> u32 {
        2
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }
}

/// The 128-bit keys of records, from chosen fields normalised as asked: what `dedup` and
/// `validate`'s uniqueness check compare.
#[derive(Debug)]
pub(crate) struct RecordKeys {
    /// The fields the key covers; `None` means every field of the record.
    fields: Option<Vec<String>>,
    lowercase: bool,
    /// Collapse inner whitespace to one space, and trim the ends.
    collapse: bool,
    trim: bool,
    buf: String,
}

impl RecordKeys {
    /// Reads `fields` and `normalize` from `p`; `purpose` ends the message for an empty
    /// `fields` ("name the fields that {purpose}").
    pub(crate) fn read(p: &Params, purpose: &str) -> Option<RecordKeys> {
        let fields = p.str_list("fields");
        if let (Some(f), Some(item)) = (&fields, p.item("fields"))
            && f.is_empty()
        {
            p.error_at(
                item,
                format!("`fields` is empty: name the fields that {purpose}, or leave `fields` out to use every field"),
            );
        }
        let mut norm = Vec::new();
        let mut ok = true;
        for n in p.str_list("normalize").unwrap_or_default() {
            match NORMALIZE.iter().find(|k| **k == n) {
                Some(k) => norm.push(*k),
                None => {
                    ok = false;
                    let mut msg = format!("unknown normalisation \"{n}\" (known: {})", NORMALIZE.join(", "));
                    if let Some(m) = weave_core::did_you_mean(&n, NORMALIZE.iter().copied()) {
                        msg = format!("unknown normalisation \"{n}\" (did you mean \"{m}\"?)");
                    }
                    if let Some(item) = p.item("normalize") {
                        p.error_at(item, msg);
                    }
                }
            }
        }
        ok.then(|| RecordKeys {
            fields,
            lowercase: norm.contains(&"lowercase"),
            collapse: norm.contains(&"collapse_whitespace"),
            trim: norm.contains(&"trim"),
            buf: String::new(),
        })
    }

    /// The fields the key covers; `None` means every field.
    pub(crate) fn fields(&self) -> Option<&[String]> {
        self.fields.as_deref()
    }

    /// The columns of `batch` that the key covers, or an error naming a missing field.
    pub(crate) fn columns(&self, batch: &Batch) -> Result<Vec<usize>, StepError> {
        match &self.fields {
            None => Ok((0..batch.schema().len()).collect()),
            Some(fields) => fields
                .iter()
                .map(|f| batch.schema().index_of(f).ok_or_else(|| crate::missing_field(batch, f)))
                .collect(),
        }
    }

    /// The key of row `row` of `batch`, over `columns` (from [`RecordKeys::columns`]).
    pub(crate) fn key(&mut self, batch: &Batch, columns: &[usize], row: usize) -> u128 {
        let mut h = blake3::Hasher::new();
        for &c in columns {
            // Field names are part of the key when every field is used, so that
            // records with different fields never match.
            if self.fields.is_none() {
                let name = &batch.schema().fields()[c].name;
                h.update(&(name.len() as u64).to_le_bytes());
                h.update(name.as_bytes());
            }
            match batch.columns()[c].get(row) {
                ValueRef::Null => {
                    h.update(&[0]);
                }
                ValueRef::Str(s) => {
                    self.normalise(s);
                    h.update(&[1]);
                    h.update(&(self.buf.len() as u64).to_le_bytes());
                    h.update(self.buf.as_bytes());
                }
                // Numbers by value: a column that mixes integers and floats holds 3 as
                // 3.0, so whether a 3 is an Int or a Float depends on its batch.
                ValueRef::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    h.update(&[3]);
                    h.update(&(f as i64).to_le_bytes());
                }
                ValueRef::Int(i) => {
                    h.update(&[3]);
                    h.update(&i.to_le_bytes());
                }
                other => {
                    let text = other.to_string();
                    h.update(&[2]);
                    h.update(&(text.len() as u64).to_le_bytes());
                    h.update(text.as_bytes());
                }
            }
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&h.finalize().as_bytes()[..16]);
        u128::from_le_bytes(key)
    }

    /// Writes the normalised form of `s` into the reused buffer.
    fn normalise(&mut self, s: &str) {
        self.buf.clear();
        let s = if self.trim || self.collapse { s.trim() } else { s };
        let push = |buf: &mut String, part: &str| {
            if self.lowercase {
                buf.extend(part.chars().flat_map(char::to_lowercase));
            } else {
                buf.push_str(part);
            }
        };
        if self.collapse {
            for (i, w) in s.split_whitespace().enumerate() {
                if i > 0 {
                    self.buf.push(' ');
                }
                push(&mut self.buf, w);
            }
        } else {
            push(&mut self.buf, s);
        }
    }
}

impl StatefulTransform for Dedup {
    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let columns = self.keys.columns(batch)?;
        let mut keep = Vec::with_capacity(batch.len());
        for row in 0..batch.len() {
            keep.push(self.seen.insert(self.keys.key(batch, &columns, row)));
        }
        let dropped = keep.iter().filter(|k| !**k).count() as u64;
        if ctx.keeps_dropped() {
            for (i, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
                ctx.drop_record("duplicate", || batch.row(i).to_record());
            }
        } else {
            ctx.count_dropped("duplicate", dropped);
        }
        if dropped < batch.len() as u64 {
            out.push(batch.filter(&keep));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::Record;

    fn run(config: &str, batches: &[Vec<Record>]) -> (Vec<String>, u64) {
        let Step::StatefulTransform(mut d) = build_step("dedup", config) else { panic!("not stateful") };
        let mut ctx = StepContext::new("dedup", 0, 0, Default::default());
        let mut out = Vec::new();
        for b in batches {
            d.process(&Batch::from_records(b), &mut ctx, &mut out).unwrap();
        }
        let dropped = ctx.take_dropped().iter().map(|(_, n)| n).sum();
        (out.iter().flat_map(|b| b.to_records()).map(|r| r.to_string()).collect(), dropped)
    }

    fn rec(id: i64, text: &str) -> Record {
        Record::new().with("id", id).with("text", text)
    }

    #[test]
    fn duplicates_across_batches_are_dropped_keeping_the_first() {
        let (rows, dropped) =
            run("fields = [\"text\"]", &[vec![rec(1, "a"), rec(2, "b"), rec(3, "a")], vec![rec(4, "b"), rec(5, "c")]]);
        assert_eq!(rows, [r#"{"id":1,"text":"a"}"#, r#"{"id":2,"text":"b"}"#, r#"{"id":5,"text":"c"}"#]);
        assert_eq!(dropped, 2);
    }

    #[test]
    fn normalisation_decides_what_counts_as_the_same() {
        let batch = vec![rec(1, "Hello  World"), rec(2, " hello world "), rec(3, "HELLO WORLD!")];
        let (rows, _) = run("fields = [\"text\"]", std::slice::from_ref(&batch));
        assert_eq!(rows.len(), 3, "exact by default");
        let (rows, _) = run("fields = [\"text\"]\nnormalize = [\"lowercase\", \"collapse_whitespace\"]", &[batch]);
        assert_eq!(rows, [r#"{"id":1,"text":"Hello  World"}"#, r#"{"id":3,"text":"HELLO WORLD!"}"#]);
    }

    #[test]
    fn numbers_match_by_value_whatever_their_batch_made_them() {
        let n = |v: weave_core::Value| Record::new().with("n", v);
        use weave_core::Value::{Float, Int};
        // In the first batch 3 sits in a column of floats (beside 2.5); in the second, of ints.
        let (rows, dropped) =
            run("fields = [\"n\"]", &[vec![n(Float(3.0)), n(Float(2.5))], vec![n(Int(3)), n(Int(4))]]);
        assert_eq!(dropped, 1, "{rows:?}");
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn without_fields_the_whole_record_is_the_key() {
        let (rows, _) = run("", &[vec![rec(1, "a"), rec(1, "a"), rec(2, "a")]]);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn field_boundaries_and_nulls_are_kept_apart() {
        let r = |a: &str, b: Option<&str>| Record::new().with("a", a).with("b", b.map(str::to_owned));
        let (rows, _) = run(
            "fields = [\"a\", \"b\"]",
            &[vec![r("ab", Some("c")), r("a", Some("bc")), r("x", None), r("x", Some(""))]],
        );
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn bad_config_and_missing_fields_are_named() {
        check_build_errors(
            "dedup",
            "fields = []\nnormalize = [\"lowercse\"]",
            &[
                "1:10 `fields` is empty: name the fields that make a record a duplicate, or leave `fields` out to use every field",
                "2:13 unknown normalisation \"lowercse\" (did you mean \"lowercase\"?)",
            ],
        );
        let Step::StatefulTransform(mut d) = build_step("dedup", "fields = [\"txt\"]") else { panic!() };
        let mut ctx = StepContext::new("dedup", 0, 0, Default::default());
        let err = d.process(&Batch::from_records(&[rec(1, "a")]), &mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "field `txt` is not in the data (fields: id, text)");
    }
}
