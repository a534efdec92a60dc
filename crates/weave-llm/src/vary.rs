//! `vary_by`: what, besides the messages and the answer's number, tells two requests of an
//! LLM step apart, so that records which render the same prompt still get answers of
//! their own when the model samples.
//!
//! Each request carries a `seed` ([`super::Request`]) hashed from the pipeline's seed, the
//! messages, the answer's number (`llm_generate`'s `n`) and, but for `"prompt"`, a salt
//! taken from the record. Two requests with the same body are one request: sent once in a
//! call and answered from the cache afterwards. So the salt decides which records share
//! an answer:
//!
//! - `"prompt"`: none; records with the same prompt share their answers (what a judge
//!   wants: a score belongs to the text). Survives any reordering.
//! - `"record"`: every field of the record, by name and value; records that differ in any
//!   field (an id will do) get requests of their own, identical records share. Survives
//!   a reordering and a change of batch size, since it looks at the record only; a field
//!   added upstream changes every request. Over records whose fields vary (JSON), it
//!   reads the record's own fields (those not null) in name order, since a batch's fields
//!   and their order depend on the records that share it; over fixed fields (CSV,
//!   Parquet), every field in the file's order, as earlier versions did.
//! - `["field", ...]`: those fields only, as `"record"` does with every field.
//! - `"position"`: the record's place in the step's input (its batch's sequence number and
//!   its row in it, and the shard, in a job of shards, whose batches are numbered from 0
//!   each); every record is asked anew, identical ones too, but a reordering, a record
//!   added before it, or another batch size upstream asks again.

use weave_core::{Batch, ConfValue, Params, StepContext, StepError, ValueRef};

/// The words `vary_by` takes (besides a list of fields).
const WORDS: &[&str] = &["prompt", "record", "position"];

/// What tells the requests of two records apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VaryBy {
    /// Nothing but the messages.
    Prompt,
    /// Every field of the record.
    Record,
    /// These fields of the record.
    Fields(Vec<String>),
    /// The record's position in the step's input, in this shard (its index) of a job.
    Position(u32),
}

impl VaryBy {
    /// Reads `vary_by` from `p`; `default` when it is not written.
    pub(crate) fn read(p: &Params, default: VaryBy) -> VaryBy {
        let Some(item) = p.item("vary_by") else { return default };
        match &item.value {
            ConfValue::Str(_) => match p.choice("vary_by", WORDS) {
                Some("prompt") => VaryBy::Prompt,
                Some("record") => VaryBy::Record,
                Some("position") => VaryBy::Position(p.context().shard().map_or(0, |s| s.index())),
                _ => default,
            },
            ConfValue::Array(a) if !a.is_empty() => match p.str_list("vary_by") {
                Some(fields) if fields.iter().all(|f| !f.is_empty()) => VaryBy::Fields(fields),
                Some(_) => {
                    p.error_at(item, "`vary_by` lists an empty field name");
                    default
                }
                None => default,
            },
            _ => {
                p.error_at(
                    item,
                    "`vary_by` must be \"prompt\", \"record\", \"position\" or a non-empty list of field names",
                );
                default
            }
        }
    }

    /// The fields it names (`vary_by = [...]`).
    pub(crate) fn fields_read(&self) -> Vec<String> {
        match self {
            VaryBy::Fields(fields) => fields.clone(),
            VaryBy::Record | VaryBy::Prompt | VaryBy::Position(_) => Vec::new(),
        }
    }

    /// The columns of `batch` the salt is taken from, or an error naming a field it lacks.
    /// `"record"` over an input whose fields vary ([`StepContext::fields_vary`]: JSON
    /// records) takes them in name order, since a batch's order depends on the records
    /// that share it.
    pub(crate) fn columns(&self, batch: &Batch, ctx: &StepContext) -> Result<Vec<usize>, StepError> {
        match self {
            VaryBy::Record if ctx.fields_vary() => {
                let fields = batch.schema().fields();
                let mut columns: Vec<usize> = (0..fields.len()).collect();
                columns.sort_by(|&a, &b| fields[a].name.cmp(&fields[b].name));
                Ok(columns)
            }
            VaryBy::Record => Ok((0..batch.schema().len()).collect()),
            VaryBy::Fields(fields) => fields
                .iter()
                .map(|f| {
                    batch.schema().index_of(f).ok_or_else(|| {
                        let e = crate::missing_field(batch, f);
                        StepError::fatal(format!("`vary_by`: {e}"))
                    })
                })
                .collect(),
            VaryBy::Prompt | VaryBy::Position(_) => Ok(Vec::new()),
        }
    }

    /// The salt of row `row` of `batch` (`columns` from [`VaryBy::columns`]); `None` for
    /// `"prompt"`, whose requests are those of earlier versions, so that their answers
    /// in the cache still serve. `"record"` over an input whose fields vary leaves out the
    /// fields that are null (a record read from JSON has a null for a field it lacks when
    /// another record of its batch has it), under a salt of its own (v2), so that a
    /// record's salt is the same in any batch; over fixed fields (CSV, Parquet) it is the
    /// salt of earlier versions, whose answers in the cache still serve.
    pub(crate) fn salt(&self, batch: &Batch, columns: &[usize], row: usize, ctx: &StepContext) -> Option<[u8; 32]> {
        let own_fields = matches!(self, VaryBy::Record) && ctx.fields_vary();
        let mut h = blake3::Hasher::new_derive_key(if own_fields {
            "weave llm request salt v2"
        } else {
            "weave llm request salt v1"
        });
        match self {
            VaryBy::Prompt => return None,
            VaryBy::Position(shard) => {
                h.update(b"position");
                h.update(&shard.to_le_bytes());
                h.update(&ctx.sequence().to_le_bytes());
                h.update(&(row as u64).to_le_bytes());
            }
            VaryBy::Record | VaryBy::Fields(_) => {
                h.update(b"fields");
                let mut text = String::new();
                for &c in columns {
                    let name = &batch.schema().fields()[c].name;
                    // By value, in canonical text: the same record gives the same salt
                    // whatever type its batch's column took (text, mixed).
                    text.clear();
                    match batch.columns()[c].get(row) {
                        ValueRef::Null if own_fields => continue,
                        ValueRef::Null => text.push_str("null"),
                        v => {
                            use std::fmt::Write as _;
                            let _ = write!(text, "{}", v.canonical());
                        }
                    }
                    for part in [name.as_bytes(), text.as_bytes()] {
                        h.update(&(part.len() as u64).to_le_bytes());
                        h.update(part);
                    }
                }
            }
        }
        Some(*h.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::{ConfTable, Record, SourceFile, Value};

    fn read(text: &str) -> (VaryBy, Vec<String>) {
        let table = ConfTable::parse(text).unwrap();
        let p = Params::new(table, SourceFile::new("t.toml", text), "step", Some("s".into()));
        let v = VaryBy::read(&p, VaryBy::Record);
        let diags = p.finish(&["vary_by"]);
        (v, diags.0.iter().map(|d| d.message.clone()).collect())
    }

    #[test]
    fn the_key_reads_words_and_field_lists_and_names_what_is_wrong() {
        assert_eq!(read(""), (VaryBy::Record, vec![]));
        assert_eq!(read("vary_by = \"prompt\""), (VaryBy::Prompt, vec![]));
        assert_eq!(read("vary_by = \"position\""), (VaryBy::Position(0), vec![]));
        assert_eq!(read("vary_by = [\"id\", \"lang\"]"), (VaryBy::Fields(vec!["id".into(), "lang".into()]), vec![]));
        let (_, e) = read("vary_by = \"records\"");
        assert_eq!(e, ["`vary_by` must be one of \"prompt\", \"record\", \"position\", not \"records\""]);
        let (_, e) = read("vary_by = 3");
        assert_eq!(e, ["`vary_by` must be \"prompt\", \"record\", \"position\" or a non-empty list of field names"]);
        let (_, e) = read("vary_by = []");
        assert_eq!(e.len(), 1);
        let (_, e) = read("vary_by = [\"\"]");
        assert_eq!(e, ["`vary_by` lists an empty field name"]);
    }

    /// Over JSON records, whose fields vary, a record's `"record"` salt is its own: the
    /// same whatever records share its batch (their fields, their order, a null where it
    /// lacks a field another has). Over fixed fields, the salt of earlier versions.
    #[test]
    fn a_records_salt_over_varying_fields_does_not_depend_on_its_batch() {
        let varying = |seq| StepContext::new("s", 1, seq, Default::default()).with_fields_varying(true);
        let alone = Batch::from_records(&[Record::new().with("id", 1i64).with("topic", "cats")]);
        let shared = Batch::from_records(&[
            Record::new().with("extra", "x").with("topic", "dogs").with("id", 2i64),
            Record::new().with("id", 1i64).with("topic", "cats"),
        ]);
        let salt = |b: &Batch, row| {
            let ctx = varying(0);
            VaryBy::Record.salt(b, &VaryBy::Record.columns(b, &ctx).unwrap(), row, &ctx).unwrap()
        };
        assert_eq!(salt(&alone, 0), salt(&shared, 1), "the same record, another batch");
        assert_ne!(salt(&shared, 0), salt(&shared, 1));
        // An explicit null is the same record as a missing field.
        let with_null =
            Batch::from_records(&[Record::new().with("id", 1i64).with("topic", "cats").with("extra", Value::Null)]);
        assert_eq!(salt(&alone, 0), salt(&with_null, 0));
        // Fixed fields: the salt earlier versions gave, so that their answers still serve.
        let fixed = StepContext::new("s", 1, 0, Default::default());
        let old = VaryBy::Record.salt(&alone, &VaryBy::Record.columns(&alone, &fixed).unwrap(), 0, &fixed).unwrap();
        let mut h = blake3::Hasher::new_derive_key("weave llm request salt v1");
        h.update(b"fields");
        for part in [&b"id"[..], b"1", b"topic", b"\"cats\""] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        assert_eq!(old, *h.finalize().as_bytes());
        assert_ne!(old, salt(&alone, 0));
    }

    #[test]
    fn salts_follow_the_record_not_its_place_but_for_position() {
        let ctx = |seq| StepContext::new("s", 1, seq, Default::default());
        let batch = Batch::from_records(&[
            Record::new().with("id", 1i64).with("topic", "cats"),
            Record::new().with("id", 2i64).with("topic", "cats"),
            Record::new().with("id", 1i64).with("topic", "cats"),
        ]);
        let moved = Batch::from_records(&[Record::new().with("id", 1i64).with("topic", "cats")]);
        let salts = |v: &VaryBy, b: &Batch, seq| {
            let cols = v.columns(b, &ctx(seq)).unwrap();
            (0..b.len()).map(|r| v.salt(b, &cols, r, &ctx(seq))).collect::<Vec<_>>()
        };
        let record = salts(&VaryBy::Record, &batch, 0);
        assert_ne!(record[0], record[1], "another id");
        assert_eq!(record[0], record[2], "the same record");
        assert_eq!(record[0], salts(&VaryBy::Record, &moved, 7)[0], "wherever it stands");
        let topic = salts(&VaryBy::Fields(vec!["topic".into()]), &batch, 0);
        assert!(topic.iter().all(|s| *s == topic[0]));
        assert_ne!(topic[0], record[0]);
        let position = salts(&VaryBy::Position(0), &batch, 0);
        assert_ne!(position[0], position[2], "identical records, two places");
        assert_ne!(position[0], salts(&VaryBy::Position(0), &batch, 1)[0], "another batch");
        assert_ne!(position[0], salts(&VaryBy::Position(1), &batch, 0)[0], "another shard's batch 0");
        assert_eq!(salts(&VaryBy::Prompt, &batch, 0), [None, None, None]);
        let e = VaryBy::Fields(vec!["topik".into()]).columns(&batch, &ctx(0)).unwrap_err().to_string();
        assert!(e.starts_with("`vary_by`: ") && e.contains("topik"), "{e}");
    }
}
