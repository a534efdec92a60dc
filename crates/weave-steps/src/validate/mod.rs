//! The `validate` step: checks records (completeness, coherence, length, schema,
//! uniqueness), writes their scores, and drops or flags the records that fall short, or
//! fails the run with a report of them.
//!
//! The step is always a stateful transform, even without a uniqueness check: its figures
//! (pass rates, mean coherence, failures by check) must be totals over the run, and the
//! executor keeps the last value of each figure rather than summing per-batch ones, so
//! only a step that sees every batch in order can set them (in `finish`). The same holds
//! for `on_fail = "fail"`, whose report counts every failure of the run. The price is that
//! the step's batches are not spread over worker threads; it still runs on a thread of its
//! own, beside the other steps.

mod checks;
mod coherence;

use std::sync::Arc;

use weave_core::{
    Batch, CanonicalConfig, Column, ConfValue, Params, Prepare, Prepared, PrimitiveColumn, Shape, StatefulTransform,
    Step, StepContext, StepError, StepInfo, StepKind, Value,
};

use crate::dedup::RecordKeys;

use checks::{Check, DUPLICATE, breakdown, preview, read_check};
pub use coherence::{Coherence, CoherenceScorer};

/// The `validate` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "validate",
        Shape::StatefulTransform,
        "check records (completeness, coherence, length, schema, uniqueness), write their scores, and drop or flag those that fall short, or fail the run",
        ["checks", "on_fail", "prefix", "id_field"],
        build,
    )
});

/// The most checks one step takes (a row's failures are a 64-bit mask).
const MAX_CHECKS: usize = 64;
/// Examples per check in the report of `on_fail = "fail"`.
const EXAMPLES: usize = 3;

/// What happens to a record that fails a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFail {
    /// Dropped, counted by reason (the first check it failed).
    Drop,
    /// Kept; the run fails at the end with a report of every failure.
    Fail,
    /// Kept, with `valid` and `failed_checks` fields.
    Flag,
}

/// Checks records against a list of checks; see the README for the keys.
///
/// Each check judges a whole batch at a time, column by column. A record that fails a
/// check is dropped (`on_fail = "drop"`, the default), kept with `valid = false` and the
/// labels of the checks it failed (`"flag"`), or kept while the run goes on and then
/// reported in the error that fails the run (`"fail"`). Coherence checks write their score
/// to a field in every mode. Dataset-level figures are set in `finish`.
#[derive(Debug)]
pub struct Validate {
    checks: Vec<Check>,
    /// The uniqueness checks' key makers, in check order, with the checks' indices: the
    /// keys are made on the worker pool ahead of the ordered call.
    unique: Arc<UniqueKeys>,
    unique_at: Vec<usize>,
    on_fail: OnFail,
    /// The fields the step adds, which the data must not have already.
    written: Vec<String>,
    valid_field: String,
    failed_field: String,
    /// The field that names a record in the report's examples, when the data has it.
    id_field: String,
    scorer: CoherenceScorer,
    config: CanonicalConfig,
    /// Records seen, and those that failed at least one check.
    records: u64,
    failed: u64,
    /// Per check: records that failed it, and how many failed with each code.
    check_failed: Vec<u64>,
    code_counts: Vec<Vec<u64>>,
    /// Per check, up to [`EXAMPLES`] failing records described for the report.
    examples: Vec<Vec<String>>,
    /// The fields the checks read, and whether any batch had them.
    watched: Vec<(String, bool)>,
    /// Reused per batch: each check's failure codes, each row's failed checks as bits, and
    /// the records dropped per check and code.
    codes: Vec<Vec<u8>>,
    masks: Vec<u64>,
    batch_drops: Vec<Vec<u64>>,
    /// In a shard of a job, with uniqueness checks: the keys exchanged with the other
    /// shards (per record, whether it failed another check, and its key for each
    /// uniqueness check), whether the earlier shards' were taken in, and this shard's
    /// batches (with their keys) held until they are.
    exchange: Option<crate::exchange::Exchange>,
    warmed: bool,
    held: crate::exchange::Held<Vec<Vec<u128>>>,
}

fn build(p: &Params) -> Option<Step> {
    let on_fail = match p.choice("on_fail", &["drop", "fail", "flag"]) {
        Some("fail") => OnFail::Fail,
        Some("flag") => OnFail::Flag,
        _ => OnFail::Drop,
    };
    let prefix = p.str("prefix").unwrap_or_default();
    let id_field = p.str("id_field").unwrap_or_else(|| "id".to_owned());
    let (valid_field, failed_field) = (format!("{prefix}valid"), format!("{prefix}failed_checks"));
    // The fields the step adds, each with what writes it, for the message about a clash.
    let mut written: Vec<(String, String)> = Vec::new();
    if on_fail == OnFail::Flag {
        written.push((valid_field.clone(), "the step".to_owned()));
        written.push((failed_field.clone(), "the step".to_owned()));
    }
    let mut checks: Vec<Check> = Vec::new();
    match p.item("checks") {
        None => p.push(
            weave_core::Diagnostic::error(
                "missing required key `checks` (the checks, such as [{ check = \"completeness\", fields = [\"text\"] }])",
            )
            .with_code("missing-key"),
        ),
        Some(item) => match &item.value {
            ConfValue::Array(items) if items.is_empty() => {
                p.error_at(item, "`checks` is empty: list at least one check");
            }
            ConfValue::Array(items) => {
                if items.len() > MAX_CHECKS {
                    p.error_at(item, format!("a validate step takes at most {MAX_CHECKS} checks: split it in two"));
                }
                for it in items {
                    let Some(check) = read_check(p, it, &prefix) else { continue };
                    if checks.iter().any(|c| c.label == check.label) {
                        p.error_at(
                            it,
                            format!("two checks are called `{}`: give this one a `name` of its own", check.label),
                        );
                    }
                    if let Some(f) = &check.score_field {
                        match written.iter().find(|(w, _)| w == f) {
                            Some((_, by)) => {
                                p.error_at(
                                    it,
                                    format!("field `{f}` is already written by {by}: give this check its own `score_field`"),
                                );
                            }
                            None => written.push((f.clone(), format!("check `{}`", check.label))),
                        }
                    }
                    checks.push(check);
                }
            }
            other => {
                p.error_at(item, format!("`checks` must be a list of checks, not {}", other.type_name()));
            }
        },
    }
    if p.has_errors() {
        return None;
    }
    let mut watched: Vec<(String, bool)> = Vec::new();
    for f in checks.iter().flat_map(Check::fields) {
        if !watched.iter().any(|(w, _)| w == f) {
            watched.push((f.to_owned(), false));
        }
    }
    let n = checks.len();
    let mut unique_at: Vec<usize> = (0..n).filter(|&i| checks[i].record_keys().is_some()).collect();
    // Uniqueness is over the whole dataset: in a shard of a job, the shards exchange keys
    // (the other checks judge each record alone).
    let exchange = if unique_at.is_empty() {
        None
    } else {
        crate::exchange::Exchange::of(p).unwrap_or_else(|e| {
            p.push(weave_core::Diagnostic::error(e).with_code("no-exchange"));
            unique_at.clear();
            None
        })
    };
    if p.has_errors() {
        return None;
    }
    if let Some(x) = &exchange {
        for &i in &unique_at {
            checks[i].share_secret(x.secret());
        }
    }
    let unique = Arc::new(UniqueKeys(unique_at.iter().filter_map(|&i| checks[i].record_keys().cloned()).collect()));
    Some(Step::StatefulTransform(Box::new(Validate {
        unique,
        unique_at,
        check_failed: vec![0; n],
        code_counts: checks.iter().map(|c| vec![0; c.whys.len()]).collect(),
        batch_drops: checks.iter().map(|c| vec![0; c.whys.len()]).collect(),
        examples: vec![Vec::new(); n],
        codes: vec![Vec::new(); n],
        checks,
        on_fail,
        written: written.into_iter().map(|(f, _)| f).collect(),
        valid_field,
        failed_field,
        id_field,
        scorer: CoherenceScorer::new(),
        config: exchange.as_ref().map_or_else(|| p.canonical(), |x| x.keyed(p.canonical())),
        records: 0,
        failed: 0,
        watched,
        masks: Vec::new(),
        exchange,
        warmed: false,
        held: crate::exchange::Held::default(),
    })))
}

impl StepInfo for Validate {
    fn kind(&self) -> &str {
        &KIND.name
    }

    /// 2 (with a uniqueness check over the whole record only): the fields in name order
    /// and a null field as an absent one, as `dedup`'s.
    fn version(&self) -> u32 {
        if self.unique.0.iter().any(|k| k.whole_record()) { 2 } else { 1 }
    }

    /// Without a uniqueness check, every check judges a record alone: a shard runs it on
    /// its records (its figures are its share's).
    fn runs_per_shard(&self) -> bool {
        self.unique_at.is_empty()
    }

    /// With one, the shards exchange keys, as `dedup` does.
    fn shards_by_exchange(&self) -> bool {
        !self.unique_at.is_empty()
    }

    /// Not when it only publishes its input's keys (`weave run --stage`): it passes
    /// nothing on then, which is not the output its key names.
    fn cacheable(&self) -> bool {
        !self.exchange.as_ref().is_some_and(crate::exchange::Exchange::publish_only)
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }
}

/// The record keys of a step's uniqueness checks, in check order: what the step's
/// preparation makes of a batch (a `Vec<Vec<u128>>`, one list of row keys per check).
#[derive(Debug)]
struct UniqueKeys(Vec<Arc<RecordKeys>>);

impl UniqueKeys {
    fn batch_keys(&self, batch: &Batch) -> Result<Vec<Vec<u128>>, StepError> {
        self.0.iter().map(|k| k.batch_keys(batch)).collect()
    }
}

impl Prepare for UniqueKeys {
    fn prepare(&self, batch: &Batch, _ctx: &StepContext) -> Result<Prepared, StepError> {
        Ok(Box::new(self.batch_keys(batch)?))
    }
}

impl StatefulTransform for Validate {
    fn preparer(&self) -> Option<Arc<dyn Prepare>> {
        (!self.unique.0.is_empty()).then(|| Arc::clone(&self.unique) as Arc<dyn Prepare>)
    }

    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        if self.exchange.is_some() {
            let keys = self.unique.batch_keys(batch)?;
            return self.take(batch, &keys, ctx, out);
        }
        self.judge(batch, None, ctx, out)
    }

    fn process_prepared(
        &mut self,
        batch: &Batch,
        prepared: &Prepared,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let keys = weave_core::prepared_as::<Vec<Vec<u128>>>(prepared, "validate")?;
        if self.exchange.is_some() {
            return self.take(batch, keys, ctx, out);
        }
        self.judge(batch, Some(keys), ctx, out)
    }

    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let _ = out;
        // In a shard: its keys in place for the later shards, then (if it held its batches)
        // the earlier shards' taken in; its own are judged as they are let out (`more`),
        // and the step concludes after the last.
        if let Some(x) = &mut self.exchange {
            x.finish_publishing()?;
            if x.publish_only() {
                return Ok(());
            }
            if !self.warmed {
                self.warm(ctx)?;
            }
        }
        if self.held.is_empty() {
            return self.conclude_run(ctx);
        }
        Ok(())
    }

    /// Judges the held batches, one a call, in order.
    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        let Some((batch, keys)) = self.held.pop()? else { return Ok(false) };
        self.judge(&batch, Some(&keys), ctx, out)?;
        if self.held.is_empty() {
            self.conclude_run(ctx)?;
            return Ok(false);
        }
        Ok(true)
    }
}

impl Validate {
    /// Once every record is judged: the figures, a warning for a field no record had, and
    /// with `on_fail = "fail"` the run's failure when any record failed.
    fn conclude_run(&mut self, ctx: &mut StepContext) -> Result<(), StepError> {
        for (name, value) in self.stats() {
            ctx.set_stat(&name, value);
        }
        let never_seen = self.never_seen();
        if self.records > 0 {
            for f in &never_seen {
                log::warn!(
                    "step {}: field `{f}` never appeared in the data, so the checks on it read it as null in every record",
                    ctx.step_id()
                );
            }
        }
        if self.on_fail == OnFail::Fail && self.failed > 0 {
            return Err(StepError::fatal(self.report(&never_seen)));
        }
        Ok(())
    }
}

impl Validate {
    /// In a shard with uniqueness checks: publishes the batch's keys (with whether each
    /// record failed another check), then judges it at once, or holds it while the earlier
    /// shards' keys are not all there.
    fn take(
        &mut self,
        batch: &Batch,
        keys: &[Vec<u128>],
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        if batch.is_empty() {
            return Ok(());
        }
        let scores = self.evaluate(batch)?;
        let Some(x) = &mut self.exchange else { return Ok(()) };
        // Per record: 1 when it failed a check other than uniqueness, then its keys.
        let mut bytes = Vec::with_capacity(batch.len() * (1 + 16 * keys.len()));
        for (row, &mask) in self.masks.iter().enumerate() {
            bytes.push(u8::from(mask != 0));
            for of_check in keys {
                bytes.extend_from_slice(&of_check[row].to_le_bytes());
            }
        }
        x.publish(&bytes)?;
        if x.publish_only() {
            return Ok(());
        }
        if !self.warmed && self.held.is_empty() && x.earlier_ready() {
            self.warm(ctx)?;
        }
        if self.warmed {
            self.conclude(batch, keys, scores, ctx, out)
        } else {
            self.held.push(batch.clone(), keys.to_vec())
        }
    }

    /// Takes every earlier shard's records into the uniqueness checks, as if they had come
    /// first: a record's keys are remembered when it failed no check, as [`Validate::judge`]
    /// does.
    fn warm(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let Some(x) = self.exchange.take() else { return Ok(()) };
        let width = 1 + 16 * self.unique_at.len();
        let (checks, unique_at) = (&mut self.checks, &self.unique_at);
        let r = x.take_earlier(ctx, |bytes| {
            if bytes.len() % width != 0 {
                return Err(StepError::fatal("a shard's uniqueness keys are damaged or of other settings"));
            }
            for row in bytes.chunks_exact(width) {
                let keys: Vec<u128> =
                    row[1..].chunks_exact(16).map(|k| u128::from_le_bytes(k.try_into().unwrap_or_default())).collect();
                let duplicate = unique_at.iter().zip(&keys).any(|(&i, &k)| checks[i].duplicate(k));
                if row[0] == 0 && !duplicate {
                    for (&i, &k) in unique_at.iter().zip(&keys) {
                        checks[i].remember(k);
                    }
                }
            }
            Ok(())
        });
        self.exchange = Some(x);
        r?;
        self.warmed = true;
        Ok(())
    }

    /// Judges one batch: the checks, then uniqueness by the rows' keys (`prepared`: one list
    /// per uniqueness check, when they were made ahead; made here otherwise).
    fn judge(
        &mut self,
        batch: &Batch,
        prepared: Option<&Vec<Vec<u128>>>,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        if batch.is_empty() {
            return Ok(());
        }
        let made;
        let keys = match prepared {
            Some(keys) => keys,
            None => {
                made = self.unique.batch_keys(batch)?;
                &made
            }
        };
        let scores = self.evaluate(batch)?;
        self.conclude(batch, keys, scores, ctx, out)
    }

    /// Runs every check but uniqueness on a batch: each check's codes and each row's
    /// failed checks (as bits) are left in `codes` and `masks`; the scores written to
    /// fields come back.
    fn evaluate(&mut self, batch: &Batch) -> Result<Vec<(usize, PrimitiveColumn<f64>)>, StepError> {
        let n = batch.len();
        if let Some(f) = self.written.iter().find(|f| batch.schema().index_of(f).is_some()) {
            return Err(StepError::fatal(format!(
                "field `{f}` is already in the data, and this step writes it: set `prefix` (or the check's `score_field`) so that it is not replaced"
            )));
        }
        for (f, seen) in &mut self.watched {
            *seen |= batch.schema().index_of(f).is_some();
        }
        // Every check judges the whole batch; uniqueness comes after the others (in
        // `conclude`), row by row, since only records that pass every check count as seen.
        let mut scores: Vec<(usize, PrimitiveColumn<f64>)> = Vec::new();
        for (i, check) in self.checks.iter_mut().enumerate() {
            let codes = &mut self.codes[i];
            codes.clear();
            codes.resize(n, 0);
            if let Some(col) = check.evaluate(batch, codes, &mut self.scorer)? {
                scores.push((i, col));
            }
        }
        self.masks.clear();
        self.masks.resize(n, 0);
        for (i, codes) in self.codes.iter().enumerate() {
            for (mask, &code) in self.masks.iter_mut().zip(codes) {
                *mask |= u64::from(code != 0) << i;
            }
        }
        Ok(scores)
    }

    /// Judges uniqueness on the batch that [`Validate::evaluate`] just judged, counts the
    /// failures, and passes the batch on as `on_fail` says.
    fn conclude(
        &mut self,
        batch: &Batch,
        keys: &[Vec<u128>],
        scores: Vec<(usize, PrimitiveColumn<f64>)>,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let n = batch.len();
        if !self.unique_at.is_empty() {
            for row in 0..n {
                for (&i, of_check) in self.unique_at.iter().zip(keys) {
                    if self.checks[i].duplicate(of_check[row]) {
                        self.codes[i][row] = DUPLICATE;
                        self.masks[row] |= 1 << i;
                    }
                }
                if self.masks[row] == 0 {
                    for (&i, of_check) in self.unique_at.iter().zip(keys) {
                        self.checks[i].remember(of_check[row]);
                    }
                }
            }
        }

        // The figures, and the examples for a report.
        for (row, &mask) in self.masks.iter().enumerate() {
            if mask == 0 {
                continue;
            }
            self.failed += 1;
            let mut bits = mask;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let code = self.codes[i][row];
                self.check_failed[i] += 1;
                self.code_counts[i][usize::from(code) - 1] += 1;
                if self.on_fail == OnFail::Fail && self.examples[i].len() < EXAMPLES {
                    let score = scores.iter().find(|(c, _)| *c == i).and_then(|(_, col)| col.get(row));
                    let example = self.example(i, batch, row, code, score);
                    self.examples[i].push(example);
                }
            }
        }
        self.records += n as u64;

        let mut result = batch.clone();
        for (i, col) in scores {
            if let Some(name) = &self.checks[i].score_field {
                result = with_column(&result, name, Column::Float(col))?;
            }
        }
        match self.on_fail {
            OnFail::Fail => out.push(result),
            OnFail::Flag => {
                let valid = PrimitiveColumn::from_values(self.masks.iter().map(|m| *m == 0).collect());
                let failed = self.masks.iter().map(|&m| Value::List(self.labels(m))).collect();
                result = with_column(&result, &self.valid_field, Column::Bool(valid))?;
                result = with_column(&result, &self.failed_field, Column::Any(failed))?;
                out.push(result);
            }
            OnFail::Drop => {
                let keep: Vec<bool> = self.masks.iter().map(|m| *m == 0).collect();
                // The reason is the first check failed, in the order written. When nobody
                // keeps the dropped records, they are counted per reason for the whole
                // batch rather than one by one.
                let keeps = ctx.keeps_dropped();
                self.batch_drops.iter_mut().for_each(|c| c.iter_mut().for_each(|n| *n = 0));
                for (row, &mask) in self.masks.iter().enumerate() {
                    if mask != 0 {
                        let i = mask.trailing_zeros() as usize;
                        let code = usize::from(self.codes[i][row]) - 1;
                        if keeps {
                            ctx.drop_record(&self.checks[i].reasons[code], || result.row(row).to_record());
                        } else {
                            self.batch_drops[i][code] += 1;
                        }
                    }
                }
                for (check, counts) in self.checks.iter().zip(&self.batch_drops) {
                    for (reason, &n) in check.reasons.iter().zip(counts) {
                        ctx.count_dropped(reason, n);
                    }
                }
                if keep.iter().any(|k| *k) {
                    out.push(result.filter(&keep));
                }
            }
        }
        Ok(())
    }

    /// The labels of the checks in `mask`, in the order written.
    fn labels(&self, mask: u64) -> Vec<Value> {
        let mut labels = Vec::new();
        let mut bits = mask;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            labels.push(Value::Str(self.checks[i].label.clone()));
        }
        labels
    }

    /// One failing record described for the report: its number in the step's input, its
    /// id when the data has one, why it failed and what it holds.
    fn example(&self, check: usize, batch: &Batch, row: usize, code: u8, score: Option<f64>) -> String {
        let mut s = format!("record {}", self.records + row as u64 + 1);
        if let Some(id) = batch.column(&self.id_field).map(|c| c.get(row)).filter(|v| !v.is_null()) {
            s.push_str(&format!(" ({} {})", self.id_field, preview(id)));
        }
        let c = &self.checks[check];
        s.push_str(&format!(": {}", c.whys[usize::from(code) - 1]));
        let detail = c.detail(batch, row, code, score);
        if !detail.is_empty() {
            s.push_str(&format!(" ({detail})"));
        }
        s
    }

    /// The fields the checks read that no batch had.
    fn never_seen(&self) -> Vec<&str> {
        self.watched.iter().filter(|(_, seen)| !seen).map(|(f, _)| f.as_str()).collect()
    }

    /// The dataset-level figures: totals over every batch so far.
    fn stats(&self) -> Vec<(String, Value)> {
        let rate = |failed: u64| {
            let passed = (self.records - failed) as f64 / self.records as f64;
            Value::Float((passed * 1e4).round() / 1e4)
        };
        let mut s = vec![
            ("records".to_owned(), Value::Int(self.records as i64)),
            ("failed".to_owned(), Value::Int(self.failed as i64)),
        ];
        if self.records > 0 {
            s.push(("pass_rate".to_owned(), rate(self.failed)));
        }
        for (c, &failed) in self.checks.iter().zip(&self.check_failed) {
            s.push((format!("{}.failed", c.label), Value::Int(failed as i64)));
            if self.records > 0 {
                s.push((format!("{}.pass_rate", c.label), rate(failed)));
            }
            c.stats(&mut s);
        }
        s
    }

    /// The report of `on_fail = "fail"`: every check that records failed, with counts by
    /// reason and a few examples.
    fn report(&self, never_seen: &[&str]) -> String {
        let pct = |n: u64| n as f64 * 100.0 / self.records as f64;
        let mut r = format!(
            "validation failed: {} of {} records ({:.1}%) fell short",
            self.failed,
            self.records,
            pct(self.failed)
        );
        for (i, c) in self.checks.iter().enumerate() {
            let n = self.check_failed[i];
            if n == 0 {
                continue;
            }
            let plural = if n == 1 { "record" } else { "records" };
            r.push_str(&format!("\n  {}: {n} {plural} ({})", c.label, breakdown(&self.code_counts[i], &c.whys)));
            for f in c.fields().iter().filter(|f| never_seen.contains(f)) {
                r.push_str(&format!(" - field `{f}` never appeared in the data"));
            }
            for e in &self.examples[i] {
                r.push_str(&format!("\n    {e}"));
            }
        }
        r
    }
}

/// `batch` with column `name` set, as a step error if the column does not fit.
fn with_column(batch: &Batch, name: &str, column: Column) -> Result<Batch, StepError> {
    batch.with_column(name, column).map_err(|e| StepError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::Record;

    /// What a run of the step did.
    #[derive(Debug)]
    struct Outcome {
        /// The records passed on, as JSON.
        rows: Vec<String>,
        /// Drop counts by reason.
        dropped: Vec<(String, u64)>,
        /// The records dropped, with their reasons.
        excluded: Vec<(String, Record)>,
        stats: Vec<(String, Value)>,
        /// The error `finish` returned, if any.
        error: Option<String>,
    }

    impl Outcome {
        fn stat(&self, name: &str) -> Value {
            self.stats.iter().find(|(n, _)| n == name).map_or(Value::Null, |(_, v)| v.clone())
        }
    }

    /// Runs a validate step built from `config` over `batches`, as the executor would.
    fn run(config: &str, batches: &[Vec<Record>]) -> Outcome {
        let Step::StatefulTransform(mut step) = build_step("validate", config) else { panic!("not stateful") };
        let mut ctx = StepContext::new("validate", 0, 0, Default::default()).keeping_dropped(true);
        let mut out = Vec::new();
        for b in batches {
            step.process(&Batch::from_records(b), &mut ctx, &mut out).unwrap_or_else(|e| panic!("{e}"));
        }
        let error = crate::tests::finish(&mut *step, &mut ctx, &mut out).err().map(|e| e.to_string());
        Outcome {
            rows: out.iter().flat_map(Batch::to_records).map(|r| r.to_string()).collect(),
            dropped: ctx.take_dropped(),
            excluded: ctx.take_excluded(),
            stats: ctx.take_stats(),
            error,
        }
    }

    fn text(id: i64, text: &str) -> Record {
        Record::new().with("id", id).with("text", text)
    }

    fn dropped(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect()
    }

    #[test]
    fn completeness_drops_records_with_null_missing_or_empty_fields() {
        let records = vec![
            Record::new().with("text", "fine").with("label", "pos"),
            Record::new().with("text", "   ").with("label", "pos"),
            Record::new().with("text", "no label"),
            Record::new().with("label", Value::Null),
            Record::new().with("text", "empty list").with("label", Value::List(vec![])),
        ];
        let o = run("checks = [{ check = \"completeness\", fields = [\"text\", \"label\"] }]", &[records]);
        assert_eq!(o.rows, [r#"{"text":"fine","label":"pos"}"#]);
        // One reason per record: the first field that falls short.
        assert_eq!(
            o.dropped,
            dropped(&[
                ("completeness: `text` empty", 1),
                ("completeness: `label` null or missing", 1),
                ("completeness: `text` null or missing", 1),
                ("completeness: `label` empty", 1),
            ])
        );
        // The figures count every field that falls short, even past the first.
        assert_eq!(o.stat("completeness.missing.text"), Value::Int(2));
        assert_eq!(o.stat("completeness.missing.label"), Value::Int(3));
        assert_eq!(o.stat("completeness.failed"), Value::Int(4));
        assert_eq!(o.stat("pass_rate"), Value::Float(0.2));
    }

    #[test]
    fn drops_are_counted_alike_whether_or_not_the_records_are_kept() {
        let cfg = r#"checks = [
            { check = "length", field = "text", min_chars = 2 },
            { check = "schema", field = "text", pattern = "^[a-z]+$" },
        ]"#;
        let records = vec![text(1, "a"), text(2, "B"), text(3, "ok"), text(4, "Ok"), text(5, "x")];
        let mut kept = run(cfg, std::slice::from_ref(&records)).dropped;
        let Step::StatefulTransform(mut step) = build_step("validate", cfg) else { panic!() };
        let mut ctx = StepContext::new("validate", 0, 0, Default::default());
        let mut out = Vec::new();
        step.process(&Batch::from_records(&records), &mut ctx, &mut out).unwrap();
        let mut counted = ctx.take_dropped();
        kept.sort();
        counted.sort();
        assert_eq!(counted, kept);
        assert_eq!(counted, dropped(&[("length.text: under min_chars", 3), ("schema.text: no match for pattern", 1)]));
        assert!(ctx.take_excluded().is_empty());
        assert_eq!(out[0].len(), 1);
    }

    #[test]
    fn a_field_absent_from_a_batch_is_missing_in_every_record() {
        let o = run(
            "checks = [{ check = \"completeness\", fields = [\"label\"] }]",
            &[vec![text(1, "a"), text(2, "b")], vec![Record::new().with("label", "x")]],
        );
        assert_eq!(o.rows, [r#"{"label":"x"}"#]);
        assert_eq!(o.dropped, dropped(&[("completeness: `label` null or missing", 2)]));
    }

    #[test]
    fn coherence_writes_its_score_and_drops_below_the_threshold() {
        let o = run(
            "checks = [{ check = \"coherence\", field = \"text\", min_score = 0.6 }]",
            &[vec![
                text(1, "My order arrived broken. Can I get a replacement?"),
                text(2, "buy now buy now buy now buy now buy now"),
                text(3, "$$$ 100% ### !!! 555-1234"),
            ]],
        );
        assert_eq!(
            o.rows,
            [r#"{"id":1,"text":"My order arrived broken. Can I get a replacement?","coherence_score":1.0}"#]
        );
        assert_eq!(o.dropped, dropped(&[("coherence.text: score below min_score", 2)]));
        // The dropped records keep their score, for the exclusion file.
        assert_eq!(o.excluded[0].1.get("coherence_score"), Some(&Value::Float(0.5278)));
        assert_eq!(o.stat("coherence.text.min"), Value::Float(0.5278));
        assert_eq!(o.stat("coherence.text.max"), Value::Float(1.0));
        assert_eq!(o.stat("coherence.text.mean"), Value::Float(0.6945));
        assert_eq!(o.stat("coherence.text.pass_rate"), Value::Float(0.3333));
    }

    #[test]
    fn coherence_fails_null_and_non_string_values_unless_optional() {
        let records = vec![
            text(1, "A sentence that reads well."),
            Record::new().with("id", 2i64).with("text", Value::Null),
            Record::new().with("id", 3i64).with("text", 42i64),
        ];
        let o = run("checks = [{ check = \"coherence\", field = \"text\" }]", std::slice::from_ref(&records));
        assert_eq!(o.rows.len(), 1);
        assert_eq!(o.dropped, dropped(&[("coherence.text: null or missing", 1), ("coherence.text: not a string", 1)]));
        let o = run(
            "checks = [{ check = \"coherence\", field = \"text\", optional = true, score_field = \"quality\" }]",
            &[records],
        );
        assert_eq!(o.rows[1], r#"{"id":2,"text":null,"quality":null}"#);
        assert_eq!(o.dropped, dropped(&[("coherence.text: not a string", 1)]));
        // Unscored records are left out of the figures.
        assert_eq!(o.stat("coherence.text.mean"), Value::Float(1.0));
    }

    #[test]
    fn a_score_field_can_be_turned_off_or_prefixed() {
        let cfg = "checks = [{ check = \"coherence\", field = \"text\", score_field = false }]";
        assert_eq!(
            run(cfg, &[vec![text(1, "Hello there, friend.")]]).rows,
            [r#"{"id":1,"text":"Hello there, friend."}"#]
        );
        let cfg = "prefix = \"qa_\"\nchecks = [{ check = \"coherence\", field = \"text\" }]";
        assert_eq!(
            run(cfg, &[vec![text(1, "Hello there, friend.")]]).rows,
            [r#"{"id":1,"text":"Hello there, friend.","qa_coherence_score":1.0}"#]
        );
    }

    #[test]
    fn length_counts_characters_and_words() {
        let cfg = "checks = [{ check = \"length\", field = \"text\", min_chars = 3, max_chars = 10, max_words = 2 }]";
        let o = run(
            cfg,
            &[vec![text(1, "héé"), text(2, "hé"), text(3, "far too long"), text(4, "a b c"), text(5, "ok ok")]],
        );
        assert_eq!(o.rows, [r#"{"id":1,"text":"héé"}"#, r#"{"id":5,"text":"ok ok"}"#]);
        assert_eq!(
            o.dropped,
            dropped(&[
                ("length.text: under min_chars", 1),
                ("length.text: over max_chars", 1),
                ("length.text: over max_words", 1),
            ])
        );
        let cfg = "checks = [{ check = \"length\", field = \"text\", min_words = 2 }]";
        let o = run(cfg, &[vec![text(1, "one"), Record::new().with("id", 2i64)]]);
        assert_eq!(o.dropped, dropped(&[("length.text: under min_words", 1), ("length.text: null or missing", 1)]));
    }

    #[test]
    fn schema_checks_types_ranges_patterns_and_allowed_values() {
        let rec = |age: Value, label: &str, email: &str| {
            Record::new().with("age", age).with("label", label).with("email", email)
        };
        let cfg = r#"checks = [
            { check = "schema", field = "age", type = "int", min = 0, max = 130 },
            { check = "schema", field = "label", allowed = ["pos", "neg"] },
            { check = "schema", field = "email", pattern = "^[^@]+@[^@]+$" },
        ]"#;
        let o = run(
            cfg,
            &[vec![
                rec(Value::Int(30), "pos", "a@b"),
                rec(Value::Int(-1), "pos", "a@b"),
                rec(Value::Int(131), "pos", "a@b"),
                rec(Value::Str("30".into()), "pos", "a@b"),
                rec(Value::Int(30), "maybe", "a@b"),
                rec(Value::Int(30), "neg", "nobody"),
                rec(Value::Null, "neg", "a@b"),
            ]],
        );
        assert_eq!(o.rows, [r#"{"age":30,"label":"pos","email":"a@b"}"#]);
        assert_eq!(
            o.dropped,
            dropped(&[
                ("schema.age: below min", 1),
                ("schema.age: above max", 1),
                ("schema.age: not an int", 1),
                ("schema.label: not in allowed", 1),
                ("schema.email: no match for pattern", 1),
                ("schema.age: null or missing", 1),
            ])
        );
    }

    #[test]
    fn schema_types_follow_the_data_model() {
        let age = |v: Value| Record::new().with("age", v);
        // Ints and floats in one column keep their kinds; an integral float is still an int
        // (a Parquet double column holds 4 as 4.0).
        let batch = vec![age(Value::Int(3)), age(Value::Float(2.5)), age(Value::Float(4.0))];
        let o = run("checks = [{ check = \"schema\", field = \"age\", type = \"int\" }]", std::slice::from_ref(&batch));
        assert_eq!(o.rows, [r#"{"age":3}"#, r#"{"age":4.0}"#]);
        let o = run("checks = [{ check = \"schema\", field = \"age\", type = \"float\" }]", &[batch]);
        assert_eq!(o.rows.len(), 3, "an int is a float");
        // A range without a type needs a number.
        let o = run(
            "checks = [{ check = \"schema\", field = \"age\", max = 10 }]",
            &[vec![age(Value::Int(3)), age(Value::Str("3".into())), age(Value::Bool(true))]],
        );
        assert_eq!(o.dropped, dropped(&[("schema.age: not a number", 2)]));
        let o = run(
            "checks = [{ check = \"schema\", field = \"tags\", type = \"list\", optional = true }]",
            &[vec![
                Record::new().with("tags", Value::List(vec!["a".into()])),
                Record::new().with("tags", Value::Null),
                Record::new().with("tags", "a"),
            ]],
        );
        assert_eq!(o.dropped, dropped(&[("schema.tags: not a list", 1)]));
    }

    // regression: ranges compared floats, so 2^53 + 1 passed `max = 9007199254740992`, and
    // a u64 read as text was not an int.
    #[test]
    fn schema_ranges_compare_exactly_and_ints_have_any_size() {
        let n = |v: Value| Record::new().with("n", v);
        let batch = vec![
            n(Value::Int(9_007_199_254_740_993)),
            n(Value::Int(9_007_199_254_740_992)),
            n(Value::UInt(u64::MAX)),
            n(Value::BigInt("100000000000000000000000000000".into())),
            n(Value::Float(f64::NAN)),
        ];
        let o =
            run("checks = [{ check = \"schema\", field = \"n\", type = \"int\", max = 9007199254740992 }]", &[batch]);
        assert_eq!(o.rows, [r#"{"n":9007199254740992}"#]);
        assert_eq!(
            o.dropped,
            dropped(&[("schema.n: above max", 3), ("schema.n: not an int", 1)]),
            "NaN is no int, and in no range"
        );
        let text = |s: &str| Record::new().with("n", s);
        let o = run(
            "checks = [{ check = \"schema\", field = \"n\", type = \"int\", parse = true, min = 9223372036854775807 }]",
            &[vec![text("18446744073709551615"), text("-9223372036854775809"), text("9223372036854775806")]],
        );
        assert_eq!(o.rows, [r#"{"n":"18446744073709551615"}"#]);
        assert_eq!(o.dropped, dropped(&[("schema.n: below min", 2)]));
    }

    #[test]
    fn schema_parse_reads_csv_strings_as_their_type() {
        let age = |v: &str| Record::new().with("age", v);
        let cfg = "checks = [{ check = \"schema\", field = \"age\", type = \"int\", parse = true, min = 0, max = 130, allowed = [7, 30] }]";
        let o = run(cfg, &[vec![age(" 30"), age("30.5"), age("x"), age("200"), age("8")]]);
        assert_eq!(o.rows, [r#"{"age":" 30"}"#], "the value passed on is unchanged");
        assert_eq!(
            o.dropped,
            dropped(&[("schema.age: not an int", 2), ("schema.age: above max", 1), ("schema.age: not in allowed", 1),])
        );
    }

    #[test]
    fn uniqueness_keeps_the_first_record_of_a_key_across_batches() {
        let cfg = "checks = [{ check = \"uniqueness\", fields = [\"text\"], normalize = [\"lowercase\"] }]";
        let o = run(cfg, &[vec![text(1, "a"), text(2, "b"), text(3, "A")], vec![text(4, "b"), text(5, "c")]]);
        assert_eq!(o.rows, [r#"{"id":1,"text":"a"}"#, r#"{"id":2,"text":"b"}"#, r#"{"id":5,"text":"c"}"#]);
        assert_eq!(o.dropped, dropped(&[("uniqueness: duplicate", 2)]));
        assert_eq!(o.stat("uniqueness.failed"), Value::Int(2));
    }

    #[test]
    fn a_record_dropped_by_another_check_does_not_make_a_later_one_a_duplicate() {
        let rec = |id: i64, text: &str, label: Option<&str>| {
            Record::new().with("id", id).with("text", text).with("label", label.map(str::to_owned))
        };
        let cfg = r#"checks = [
            { check = "completeness", fields = ["label"] },
            { check = "uniqueness", fields = ["text"] },
        ]"#;
        let o = run(cfg, &[vec![rec(1, "a", None), rec(2, "a", Some("x")), rec(3, "a", Some("y"))]]);
        assert_eq!(o.rows, [r#"{"id":2,"text":"a","label":"x"}"#]);
        assert_eq!(o.dropped, dropped(&[("completeness: `label` null or missing", 1), ("uniqueness: duplicate", 1)]));
    }

    #[test]
    fn uniqueness_needs_its_fields_in_the_data() {
        let Step::StatefulTransform(mut step) =
            build_step("validate", "checks = [{ check = \"uniqueness\", fields = [\"txt\"] }]")
        else {
            panic!()
        };
        let mut ctx = StepContext::new("validate", 0, 0, Default::default());
        let err = step.process(&Batch::from_records(&[text(1, "a")]), &mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "field `txt` is not in the data (fields: id, text)");
    }

    #[test]
    fn flag_keeps_every_record_with_its_verdict() {
        let cfg = r#"on_fail = "flag"
        checks = [
            { check = "length", field = "text", min_chars = 2 },
            { check = "schema", field = "text", pattern = "^[a-z]+$", name = "lowercase" },
        ]"#;
        let o = run(cfg, &[vec![text(1, "ok"), text(2, "X"), text(3, "no!")]]);
        assert_eq!(
            o.rows,
            [
                r#"{"id":1,"text":"ok","valid":true,"failed_checks":[]}"#,
                r#"{"id":2,"text":"X","valid":false,"failed_checks":["length.text","lowercase"]}"#,
                r#"{"id":3,"text":"no!","valid":false,"failed_checks":["lowercase"]}"#,
            ]
        );
        assert!(o.dropped.is_empty());
        assert_eq!(o.stat("failed"), Value::Int(2));
        assert_eq!(o.stat("lowercase.failed"), Value::Int(2));
        assert_eq!(o.stat("length.text.pass_rate"), Value::Float(0.6667));
    }

    #[test]
    fn fail_reports_what_fell_short_with_examples() {
        let cfg = r#"on_fail = "fail"
        checks = [
            { check = "coherence", field = "text", min_score = 0.6 },
            { check = "schema", field = "age", type = "int", min = 0 },
        ]"#;
        let rec = |id: &str, text: &str, age: i64| Record::new().with("id", id).with("text", text).with("age", age);
        let spam = "buy now buy now buy now buy now buy now";
        let o = run(
            cfg,
            &[
                vec![rec("a", "A fine sentence here.", 3), rec("b", spam, 4)],
                vec![rec("c", "Another fine sentence.", -4), rec("d", spam, 5), rec("e", spam, 6), rec("f", spam, 7)],
            ],
        );
        assert_eq!(o.rows.len(), 6, "records pass on until the end, where the run fails");
        assert_eq!(
            o.error.as_deref(),
            Some(
                "validation failed: 5 of 6 records (83.3%) fell short\n  \
                coherence.text: 4 records (coherence of `text` below 0.6: 4)\n    \
                record 2 (id \"b\"): coherence of `text` below 0.6 (score 0.5278, \"buy now buy now buy now buy now buy now\")\n    \
                record 4 (id \"d\"): coherence of `text` below 0.6 (score 0.5278, \"buy now buy now buy now buy now buy now\")\n    \
                record 5 (id \"e\"): coherence of `text` below 0.6 (score 0.5278, \"buy now buy now buy now buy now buy now\")\n  \
                schema.age: 1 record (`age` below 0: 1)\n    \
                record 3 (id \"c\"): `age` below 0 (-4)"
            )
        );
        // The figures are set before the run fails.
        assert_eq!(o.stat("failed"), Value::Int(5));
        assert_eq!(o.stat("coherence.text.failed"), Value::Int(4));
    }

    #[test]
    fn the_report_shows_a_score_that_is_not_written() {
        let cfg = "on_fail = \"fail\"\nchecks = [{ check = \"coherence\", field = \"text\", score_field = false }]";
        let o = run(cfg, &[vec![text(1, "$$$ ###")]]);
        assert_eq!(o.rows, [r#"{"id":1,"text":"$$$ ###"}"#]);
        assert_eq!(
            o.error.as_deref(),
            Some(
                "validation failed: 1 of 1 records (100.0%) fell short\n  \
                coherence.text: 1 record (coherence of `text` below 0.5: 1)\n    \
                record 1 (id 1): coherence of `text` below 0.5 (score 0.3333, \"$$$ ###\")"
            )
        );
    }

    #[test]
    fn fail_passes_when_every_record_passes() {
        let o = run(
            "on_fail = \"fail\"\nchecks = [{ check = \"length\", field = \"text\", min_chars = 1 }]",
            &[vec![text(1, "a")]],
        );
        assert_eq!(o.error, None);
        assert_eq!(o.rows, [r#"{"id":1,"text":"a"}"#]);
        assert_eq!(o.stat("pass_rate"), Value::Float(1.0));
    }

    #[test]
    fn the_report_names_a_field_that_never_appeared() {
        let o = run(
            "on_fail = \"fail\"\nid_field = \"nope\"\nchecks = [{ check = \"schema\", field = \"agee\", type = \"int\" }]",
            &[vec![text(1, "a"), text(2, "b")]],
        );
        assert_eq!(
            o.error.as_deref(),
            Some(
                "validation failed: 2 of 2 records (100.0%) fell short\n  \
                schema.agee: 2 records (`agee` is null or missing: 2) - field `agee` never appeared in the data\n    \
                record 1: `agee` is null or missing\n    \
                record 2: `agee` is null or missing"
            )
        );
    }

    #[test]
    fn the_step_will_not_replace_a_field_of_the_data() {
        let Step::StatefulTransform(mut step) = build_step(
            "validate",
            "on_fail = \"flag\"\nchecks = [{ check = \"length\", field = \"text\", min_chars = 1 }]",
        ) else {
            panic!()
        };
        let mut ctx = StepContext::new("validate", 0, 0, Default::default());
        let batch = Batch::from_records(&[text(1, "a").with("valid", "yes")]);
        let err = step.process(&batch, &mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `valid` is already in the data, and this step writes it: set `prefix` (or the check's `score_field`) so that it is not replaced"
        );
    }

    #[test]
    fn output_and_figures_do_not_depend_on_batch_boundaries() {
        let cfg = r#"on_fail = "flag"
        checks = [
            { check = "coherence", field = "text" },
            { check = "uniqueness", fields = ["text"] },
            { check = "length", field = "text", max_words = 4 },
        ]"#;
        let texts = ["Hello there.", "hello there", "Hello there.", "no no no no no no", "Fine.", "hello there"];
        let records: Vec<Record> = texts.iter().enumerate().map(|(i, t)| text(i as i64, t)).collect();
        let whole = run(cfg, std::slice::from_ref(&records));
        for size in 1..records.len() {
            let split: Vec<Vec<Record>> = records.chunks(size).map(<[Record]>::to_vec).collect();
            let o = run(cfg, &split);
            assert_eq!(o.rows, whole.rows, "batches of {size}");
            assert_eq!(o.stats, whole.stats, "batches of {size}");
        }
        assert_eq!(whole.stat("uniqueness.failed"), Value::Int(2));
    }

    #[test]
    fn bad_step_keys_are_reported_at_their_place() {
        check_build_errors(
            "validate",
            "on_fail = \"dorp\"",
            &[
                "1:11 `on_fail` must be one of \"drop\", \"fail\", \"flag\", not \"dorp\"",
                "- missing required key `checks` (the checks, such as [{ check = \"completeness\", fields = [\"text\"] }])",
            ],
        );
        check_build_errors("validate", "checks = []", &["1:10 `checks` is empty: list at least one check"]);
        check_build_errors(
            "validate",
            "id_fild = \"id\"\nchecks = [{ check = \"length\", field = \"text\", min_chars = 1 }]",
            &["1:1 unknown key `id_fild` in step"],
        );
        check_build_errors(
            "validate",
            "checks = \"coherence\"",
            &["1:10 `checks` must be a list of checks, not a string"],
        );
        check_build_errors(
            "validate",
            "checks = [\"coherence\"]",
            &["1:11 a check is a table such as { check = \"coherence\", field = \"text\" }, not a string"],
        );
    }

    #[test]
    fn an_unknown_check_gets_a_suggestion() {
        let cfg = "checks = [{ check = \"coherense\", field = \"text\" }, { field = \"text\" }]";
        check_build_errors(
            "validate",
            cfg,
            &[
                "1:21 `check` must be one of \"completeness\", \"coherence\", \"length\", \"schema\", \"uniqueness\", not \"coherense\"",
                "1:52 missing required key `check` (which check: completeness, coherence, length, schema or uniqueness)",
            ],
        );
        let k = crate::registry().get("validate").cloned().unwrap();
        let p = crate::tests::params(cfg);
        let _ = (k.build)(&p);
        let d = p.finish(&["checks"]);
        assert_eq!(d.0[0].help.as_deref(), Some("did you mean \"coherence\"?"));
    }

    #[test]
    fn bad_check_keys_are_reported_at_their_place() {
        check_build_errors(
            "validate",
            r#"checks = [
  { check = "coherence", field = "text", min_score = 1.5, min_scor = 1 },
  { check = "length", field = "text" },
  { check = "length", field = "text", min_chars = 10, max_chars = 5 },
  { check = "schema", field = "email", pattern = "([a-z" },
  { check = "schema", field = "age" },
  { check = "schema", field = "age", type = "string", min = 0 },
  { check = "schema", field = "age", type = "int", pattern = "^1", allowed = ["x", 1] },
  { check = "schema", field = "age", parse = true, allowed = [] },
  { check = "completeness", fields = [] },
  { check = "uniqueness", normalize = ["lowercse"] },
  { check = "coherence" },
]"#,
            &[
                "2:54 `min_score` must be from 0 to 1, not 1.5",
                "2:59 unknown key `min_scor` in check `coherence`",
                "3:3 a length check needs at least one of `min_chars`, `max_chars`, `min_words`, `max_words`",
                "4:67 `max_chars` (5) is below `min_chars` (10): no record could pass",
                "5:50 `pattern` is not a valid regular expression: unclosed character class",
                "6:3 a schema check needs at least one of `type`, `min`, `max`, `pattern`, `allowed`",
                "7:61 `min` and `max` bound numbers, and `type` is \"string\"",
                "8:79 `allowed` lists a string, and `type` is \"int\"",
                "8:62 `pattern` matches strings, and `type` is \"int\"",
                "9:62 `allowed` is empty: no record could pass",
                "9:46 `parse` reads strings as `type`, which must then be \"int\", \"float\" or \"bool\"",
                "10:38 `fields` is empty: name the fields every record must have",
                "11:39 unknown normalisation \"lowercse\" (did you mean \"lowercase\"?)",
                "12:3 missing required key `field` (the field to check)",
            ],
        );
    }

    #[test]
    fn checks_must_have_distinct_names_and_score_fields() {
        check_build_errors(
            "validate",
            r#"on_fail = "flag"
checks = [
  { check = "schema", field = "a", type = "int" },
  { check = "schema", field = "a", min = 0 },
  { check = "coherence", field = "a" },
  { check = "coherence", field = "b" },
  { check = "coherence", field = "c", score_field = "valid" },
  { check = "coherence", field = "d", score_field = "" },
]"#,
            &[
                "4:3 two checks are called `schema.a`: give this one a `name` of its own",
                "6:3 field `coherence_score` is already written by check `coherence.a`: give this check its own `score_field`",
                "7:3 field `valid` is already written by the step: give this check its own `score_field`",
                "8:53 `score_field` must be a field name, or false to write no score, not an empty string",
            ],
        );
    }

    #[test]
    fn the_pipeline_file_form_with_tables_of_checks_works_too() {
        let cfg = "on_fail = \"drop\"\n[[checks]]\ncheck = \"length\"\nfield = \"text\"\nmin_chars = 2\n";
        let o = run(cfg, &[vec![text(1, "a"), text(2, "ab")]]);
        assert_eq!(o.rows, [r#"{"id":2,"text":"ab"}"#]);
    }
}
