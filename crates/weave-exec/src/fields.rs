//! The fields a step reads ([`StepInfo::fields_read`](weave_core::StepInfo::fields_read)),
//! made present in every batch it is handed, so that a record's fate never depends on the
//! records that share its batch.
//!
//! A batch is columnar: its fields are the union of its records' fields, and a record
//! without one of them holds a null there. Records whose fields vary (JSON Lines) thus
//! make batches that lack a field some other batches have, and a step that looked the
//! field up would see it in one batch and not in the next. Before each call, the batch
//! gets a column of nulls for every field the step reads that it lacks, when its input's
//! fields vary; when they are fixed (a CSV's columns), a missing field is a misspelt name,
//! and the call fails at once. At the end of the input, a field of a varying input that
//! no batch had fails the step, or, in a shard of a job (whose records are a part of the
//! input), is said in a warning.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use weave_core::{Batch, Column, StepError, missing_field};

/// At most this many names of the fields seen are kept for the message of a field that
/// was in no record.
const NAMES_KEPT: usize = 64;

/// The fields one step reads, and which of them its input has had so far.
#[derive(Debug, Default)]
pub(crate) struct ReadFields {
    names: Vec<String>,
    /// Whether the step's input is records whose fields vary.
    vary: bool,
    /// Whether the job is split into shards: a field no record of this run's share had
    /// may be in another's.
    sharded: bool,
    /// Per name, whether a batch has had it.
    seen: Vec<AtomicBool>,
    /// The fields of the batches that lacked one, for the message at the end.
    others: Mutex<BTreeSet<String>>,
}

impl ReadFields {
    /// The fields `names` (repeats taken once) of a step whose input's fields vary or not.
    pub(crate) fn new(names: Vec<String>, vary: bool, sharded: bool) -> Self {
        let mut unique: Vec<String> = Vec::with_capacity(names.len());
        for n in names {
            if !unique.contains(&n) {
                unique.push(n);
            }
        }
        let seen = unique.iter().map(|_| AtomicBool::new(false)).collect();
        ReadFields { names: unique, vary, sharded, seen, others: Mutex::default() }
    }

    /// `batch` with every field the step reads: itself when it has them, else (an input
    /// whose fields vary) with a column of nulls for each it lacks, or an error naming the
    /// first missing field (an input of fixed fields).
    pub(crate) fn complete<'b>(&self, batch: &'b Batch) -> Result<Cow<'b, Batch>, StepError> {
        let mut out = Cow::Borrowed(batch);
        for (name, seen) in self.names.iter().zip(&self.seen) {
            if batch.schema().index_of(name).is_some() {
                seen.store(true, Ordering::Relaxed);
                continue;
            }
            if !self.vary {
                return Err(missing_field(batch, name));
            }
            if !seen.load(Ordering::Relaxed) {
                let mut others = self.others.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for n in batch.schema().names() {
                    if others.len() >= NAMES_KEPT {
                        break;
                    }
                    if !others.contains(n) {
                        others.insert(n.to_owned());
                    }
                }
            }
            let with = out
                .with_column(name, Column::Null(batch.len()))
                .map_err(|e| StepError::internal(format!("adding the absent field `{name}` as nulls: {e}")))?;
            out = Cow::Owned(with);
        }
        Ok(out)
    }

    /// At the end of the step's input: an error for a field of a varying input that no
    /// batch had (a warning in a shard of a job). `batches` is how many the step had: an
    /// input with none says nothing of its fields.
    pub(crate) fn at_end(&self, step: &str, batches: u64) -> Result<(), StepError> {
        if !self.vary || batches == 0 {
            return Ok(());
        }
        let Some(name) = self.names.iter().zip(&self.seen).find(|(_, s)| !s.load(Ordering::Relaxed)).map(|(n, _)| n)
        else {
            return Ok(());
        };
        let others = self.others.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut fields: Vec<&str> = others.iter().map(String::as_str).collect();
        if others.len() >= NAMES_KEPT {
            fields.push("…");
        }
        let fields = if fields.is_empty() { "none".to_owned() } else { fields.join(", ") };
        let message = format!("field `{name}` is in no record of the input (fields the records have: {fields})");
        if self.sharded {
            log::warn!(
                "step {step}: {message} of this shard; its records read it as null (another shard's may have it)"
            );
            return Ok(());
        }
        Err(StepError::fatal(message))
    }

    /// Counts every field as seen: a batch the step was not called on (an interrupted
    /// run's stored output stood in for it) may have had them.
    pub(crate) fn seen_unknown(&self) {
        self.seen.iter().for_each(|s| s.store(true, Ordering::Relaxed));
    }

    /// Whether the step's input is records whose fields vary.
    pub(crate) fn vary(&self) -> bool {
        self.vary
    }

    /// Whether the step reads no field.
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::{Record, ValueRef};

    fn batch(records: &[Record]) -> Batch {
        Batch::from_records(records)
    }

    #[test]
    fn a_varying_input_gets_nulls_for_a_field_its_batch_lacks_and_fails_only_if_no_batch_had_it() {
        let read = ReadFields::new(vec!["x".into(), "x".into()], true, false);
        let without = batch(&[Record::new().with("a", 1i64)]);
        let got = read.complete(&without).unwrap();
        assert_eq!(got.schema().names().collect::<Vec<_>>(), ["a", "x"]);
        assert_eq!(got.column("x").unwrap().get(0), ValueRef::Null);
        let err = read.at_end("f", 1).unwrap_err().to_string();
        assert!(err.contains("field `x` is in no record of the input (fields the records have: a)"), "{err}");
        let with = batch(&[Record::new().with("x", 2i64)]);
        assert!(matches!(read.complete(&with).unwrap(), Cow::Borrowed(_)));
        read.at_end("f", 2).unwrap();
    }

    #[test]
    fn a_fixed_input_without_the_field_fails_at_once_naming_it() {
        let read = ReadFields::new(vec!["lenght".into()], false, false);
        let err = read.complete(&batch(&[Record::new().with("length", 1i64)])).unwrap_err().to_string();
        assert!(err.contains("field `lenght` is not in the data (fields: length)"), "{err}");
        read.at_end("f", 1).unwrap();
    }

    #[test]
    fn a_shard_only_warns_and_an_empty_input_says_nothing() {
        let read = ReadFields::new(vec!["x".into()], true, true);
        read.complete(&batch(&[Record::new().with("a", 1i64)])).unwrap();
        read.at_end("f", 1).unwrap();
        let single = ReadFields::new(vec!["x".into()], true, false);
        single.at_end("f", 0).unwrap();
    }
}
