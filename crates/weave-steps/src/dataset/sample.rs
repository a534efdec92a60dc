//! The `sample` step: a seeded random sample of the records, of a size (`n`) or a
//! fraction, optionally stratified by a field.

use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::sync::Arc;

use weave_core::{
    Batch, CanonicalConfig, Diagnostic, Params, Shape, StatefulTransform, Step, StepContext, StepError, StepInfo,
    StepKind, Transform, Value,
};

use super::shards::{Admit, ClassFrames, Replay, Selection, count_frame, select};
use super::{Classes, KeyColumns, Stratifier, column, position_key, salt, unit};
use crate::exchange::Exchange;

/// The `sample` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "sample",
        Shape::StatefulTransform,
        "keep a seeded random sample: n records (reservoir, input order kept) or a fraction, optionally stratified by a field",
        ["n", "fraction", "stratify_by", "key", "seed"],
        build,
    )
});

/// The drop reason of the records a sample leaves out.
const REASON: &str = "not sampled";

/// Rows per output batch when a reservoir sample is let out at the end.
const OUT_BATCH: usize = 8192;

/// Keeps a seeded random sample of the records.
///
/// - `n`: exactly `n` records (all of them if there are fewer), uniformly at random,
///   let out at the end in input order. Each record gets a random key from the seed and
///   its position in the input, and the `n` smallest keys win (a bottom-k reservoir), so
///   the sample does not depend on batch sizes. Memory: the `n` records kept so far, plus
///   at most as many again between clean-ups. With `stratify_by`, the `n` are shared among
///   the classes in proportion to their counts (largest remainder), which needs up to `n`
///   records per class in memory.
/// - `fraction`: each record is kept with that probability, decided by the seed and the
///   record's content (or its `key` fields), as records stream through: a stateless
///   transform, the same whatever the batch size or thread count. With `stratify_by`,
///   each class keeps the fraction exactly, to within a record or two, deciding record by
///   record in input order (a stateful transform).
///
/// In a shard of a job (see `super::shards`): a plain fraction runs on the shard's records;
/// a stratified fraction replays the earlier shards' classes and keys before deciding; a
/// sample of `n` waits for every shard's record count (and classes, stratified), and keeps
/// the job's winners that are its own.
#[derive(Debug)]
pub struct Sample {
    mode: Mode,
    key: Option<Vec<String>>,
    seed: Option<u64>,
    config: CanonicalConfig,
}

#[derive(Debug)]
enum Mode {
    Fraction(f64),
    StratifiedFraction {
        field: String,
        classes: Classes,
        stratifier: Stratifier,
        kept: u64,
        seen: u64,
        /// In a shard of a job: the earlier shards' records replayed first.
        replay: Option<Replay>,
    },
    Reservoir(Reservoir),
}

fn build(p: &Params) -> Option<Step> {
    let n = p.u64("n");
    let fraction = p.f64("fraction");
    let stratify_by = p.str("stratify_by");
    let key = super::field_list(p, "key", "use the whole record");
    let seed = super::seed_key(p);
    // A sample of nothing can only be a mistake: its output would be empty.
    if let (Some(f), Some(item)) = (fraction, p.item("fraction"))
        && !(f > 0.0 && f <= 1.0)
    {
        let why = if f == 0.0 { ": a share of 0 keeps no record" } else { "" };
        p.error_at(item, format!("`fraction` must be above 0 and at most 1, not {f}{why}"));
    }
    if let (Some(0), Some(item)) = (n, p.item("n")) {
        p.error_at(item, "`n` must be at least 1: a sample of no records leaves nothing to export");
    }
    match (n, fraction) {
        (Some(_), Some(_)) => {
            if let Some(item) = p.item("fraction") {
                p.error_at(item, "give `n` (how many records) or `fraction` (which share), not both");
            }
        }
        (None, None) if !p.has_errors() => p.push(
            Diagnostic::error("missing required key `n` or `fraction` (how many records to keep, or which share)")
                .with_help("for example n = 1000, or fraction = 0.1"),
        ),
        _ => {}
    }
    if let (Some(_), Some(_), Some(item)) = (n, &key, p.item("key")) {
        p.error_at(item, "`key` applies to `fraction`: with `n`, records are drawn by their position");
    }
    if p.has_errors() {
        return None;
    }
    let config = p.canonical();
    if let (Some(f), None) = (fraction, &stratify_by) {
        return Some(Step::Transform(Arc::new(Sample { mode: Mode::Fraction(f), key, seed, config })));
    }
    // The other modes need the whole dataset: in a shard of a job, they exchange.
    let exchange = Exchange::of(p).unwrap_or_else(|e| {
        p.push(Diagnostic::error(e).with_code("no-exchange"));
        None
    });
    if p.has_errors() {
        return None;
    }
    let config = exchange.as_ref().map_or(config, |x| x.keyed(p.canonical()));
    if let (Some(f), Some(field)) = (fraction, stratify_by.clone()) {
        let mode = Mode::StratifiedFraction {
            field,
            classes: Classes::default(),
            stratifier: Stratifier::new(vec![f, 1.0 - f]),
            kept: 0,
            seen: 0,
            replay: exchange.map(Replay::new),
        };
        return Some(Step::StatefulTransform(Box::new(Sample { mode, key, seed, config })));
    }
    let reservoir = Reservoir::new(n? as usize, stratify_by, exchange);
    Some(Step::StatefulTransform(Box::new(Sample { mode: Mode::Reservoir(reservoir), key, seed, config })))
}

impl StepInfo for Sample {
    fn fields_read(&self) -> Vec<String> {
        let mut read = self.key.clone().unwrap_or_default();
        match &self.mode {
            Mode::StratifiedFraction { field, .. } => read.push(field.clone()),
            Mode::Reservoir(r) => read.extend(r.stratify_by.clone()),
            Mode::Fraction(_) => {}
        }
        read
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

    /// A stratified fraction and a sample of `n` need the whole dataset (a plain fraction,
    /// a transform, runs on each shard's records).
    fn shards_by_exchange(&self) -> bool {
        !matches!(self.mode, Mode::Fraction(_))
    }

    /// A sample of `n`: its winners are the job's smallest keys, the later shards' too.
    fn waits_for_every_shard(&self) -> bool {
        matches!(self.mode, Mode::Reservoir(_))
    }

    /// Not when it only publishes (`weave run --stage`): it passes nothing on then, which
    /// is not the output its key names.
    fn cacheable(&self) -> bool {
        let x = match &self.mode {
            Mode::Fraction(_) => None,
            Mode::StratifiedFraction { replay, .. } => replay.as_ref().map(Replay::exchange),
            Mode::Reservoir(r) => r.exchange.as_ref(),
        };
        !x.is_some_and(Exchange::publish_only)
    }
}

impl Transform for Sample {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let Mode::Fraction(f) = self.mode else { return Err(StepError::internal("sample: not a fraction")) };
        let seed = self.seed.unwrap_or(ctx.seed());
        let keys = KeyColumns::new(batch, self.key.as_deref(), "")?;
        let mut keep = vec![false; batch.len()];
        for (row, k) in keep.iter_mut().enumerate() {
            *k = unit(keys.key(seed, salt::SAMPLE, row)) < f;
            if !*k {
                ctx.drop_record(REASON, || batch.row(row).to_record());
            }
        }
        Ok(batch.filter(&keep))
    }
}

impl StatefulTransform for Sample {
    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let seed = self.seed.unwrap_or(ctx.seed());
        match &mut self.mode {
            Mode::Fraction(_) => Err(StepError::internal("sample: a plain fraction is stateless")),
            Mode::StratifiedFraction { field, classes, stratifier, kept, seen, replay } => {
                let col = column(batch, field)?;
                let key_columns = KeyColumns::new(batch, self.key.as_deref(), "")?;
                let keys: Vec<u64> = (0..batch.len()).map(|row| key_columns.key(seed, salt::SAMPLE, row)).collect();
                if let Some(r) = replay
                    && let Admit::Wait = r.admit(batch, col, &keys, ctx, classes, stratifier)?
                {
                    return Ok(());
                }
                let counts = (kept, seen);
                decide_fraction(batch, col, &keys, (classes, stratifier), counts, ctx, out);
                Ok(())
            }
            Mode::Reservoir(r) => r.process(batch, seed, ctx),
        }
    }

    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let seed = self.seed.unwrap_or(ctx.seed());
        match &mut self.mode {
            Mode::Fraction(_) => Ok(()),
            Mode::StratifiedFraction { classes, stratifier, replay, .. } => {
                if let Some(r) = replay {
                    r.finish(ctx, classes, stratifier)?;
                    if r.exchange().publish_only() || r.holds() {
                        // Nothing to count, or the held batches first (`more`).
                        return Ok(());
                    }
                }
                self.report_stratified(ctx);
                Ok(())
            }
            Mode::Reservoir(r) => r.finish(seed, ctx, out),
        }
    }

    /// A stratified fraction in a shard: decides on the held batches, one a call, in
    /// order; then the figures.
    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        let Mode::StratifiedFraction { field, classes, stratifier, kept, seen, replay: Some(r) } = &mut self.mode
        else {
            return Ok(false);
        };
        let Some((batch, keys)) = r.next_held()? else { return Ok(false) };
        let col = column(&batch, field)?;
        decide_fraction(&batch, col, &keys, (classes, stratifier), (kept, seen), ctx, out);
        if r.holds() {
            return Ok(true);
        }
        self.report_stratified(ctx);
        Ok(false)
    }
}

impl Sample {
    /// A stratified fraction's figures, once every record is decided.
    fn report_stratified(&self, ctx: &mut StepContext) {
        match &self.mode {
            Mode::StratifiedFraction { classes, stratifier, kept, seen, replay, .. } => {
                ctx.set_stat("seen", Value::Int(*seen as i64));
                ctx.set_stat("kept", Value::Int(*kept as i64));
                // The shard's own figures in a shard of a job.
                let by_class: BTreeMap<String, Value> = match replay {
                    Some(r) => r
                        .own_counts(stratifier)
                        .map(|(c, counts)| (classes.name(c).to_owned(), Value::Int(counts[0] as i64)))
                        .collect(),
                    None => stratifier
                        .counts
                        .iter()
                        .enumerate()
                        .map(|(c, (_, counts))| (classes.name(c as u32).to_owned(), Value::Int(counts[0] as i64)))
                        .collect(),
                };
                ctx.set_stat("kept_by_class", Value::Map(by_class.into()));
            }
            Mode::Fraction(_) | Mode::Reservoir(_) => {}
        }
    }
}

/// A stratified fraction's decision on `batch`, whose rows' classes are `col` and random
/// keys `keys`: each row is assigned, in order, to kept or dropped by its class's counts.
fn decide_fraction(
    batch: &Batch,
    col: &weave_core::Column,
    keys: &[u64],
    (classes, stratifier): (&mut Classes, &mut Stratifier),
    (kept, seen): (&mut u64, &mut u64),
    ctx: &mut StepContext,
    out: &mut Vec<Batch>,
) {
    let mut keep = vec![false; batch.len()];
    for (row, k) in keep.iter_mut().enumerate() {
        let class = classes.id(col.get(row));
        *k = stratifier.assign(class, unit(keys[row])) == 0;
        if !*k {
            ctx.drop_record(REASON, || batch.row(row).to_record());
        }
    }
    *seen += batch.len() as u64;
    *kept += keep.iter().filter(|k| **k).count() as u64;
    if keep.iter().any(|k| *k) {
        out.push(batch.filter(&keep));
    }
}

/// A bottom-k sample: the rows with the `n` smallest random keys (per class when
/// stratified), held as small batches of the rows that were among them when they came.
#[derive(Debug)]
struct Reservoir {
    n: usize,
    stratify_by: Option<String>,
    classes: Classes,
    /// Per class: the (key, position) of the rows it holds, the largest key on top.
    heaps: Vec<BinaryHeap<(u64, u64)>>,
    /// Per class: the records seen.
    counts: Vec<u64>,
    held: Vec<Held>,
    held_rows: usize,
    seen: u64,
    /// In a shard of a job: its record counts (and classes, stratified) published for the
    /// other shards; the job's winners once every shard's are there; its batches until
    /// then.
    exchange: Option<Exchange>,
    frames: ClassFrames,
    selection: Option<Selection>,
    pending: Vec<Batch>,
}

/// Rows taken in from one input batch.
#[derive(Debug)]
struct Held {
    batch: Batch,
    /// Each row's position in the input.
    positions: Vec<u64>,
    classes: Vec<u32>,
}

impl Reservoir {
    fn new(n: usize, stratify_by: Option<String>, exchange: Option<Exchange>) -> Self {
        Reservoir {
            n,
            stratify_by,
            classes: Classes::default(),
            heaps: Vec::new(),
            counts: Vec::new(),
            held: Vec::new(),
            held_rows: 0,
            seen: 0,
            exchange,
            frames: ClassFrames::default(),
            selection: None,
            pending: Vec::new(),
        }
    }

    /// In a shard of a job: publishes the batch's count (or classes), then keeps its rows
    /// among the job's winners, or holds it until every shard's part is there.
    fn process_shard(&mut self, batch: &Batch, seed: u64, ctx: &mut StepContext) -> Result<(), StepError> {
        let Some(x) = &mut self.exchange else { return Ok(()) };
        let frame = match &self.stratify_by {
            Some(f) => self.frames.frame(column(batch, f)?, None),
            None => count_frame(batch.len()).to_vec(),
        };
        x.publish(&frame)?;
        if x.publish_only() {
            return Ok(());
        }
        // Every part is there at the first batch when the stage before published them
        // (`weave run --stage`): the winners are known at once, and the shard streams.
        if self.selection.is_none() && self.pending.is_empty() && x.all_ready() {
            self.selection = Some(select(x, ctx, self.n, self.stratify_by.is_some(), seed, largest_remainder)?);
        }
        if self.selection.is_none() {
            self.pending.push(batch.clone());
            return Ok(());
        }
        self.take_selected(batch, ctx)
    }

    /// Keeps the rows of `batch` that are among the job's winners (held until the end),
    /// dropping the others.
    fn take_selected(&mut self, batch: &Batch, ctx: &mut StepContext) -> Result<(), StepError> {
        let Some(sel) = &mut self.selection else { return Err(StepError::internal("sample: no selection")) };
        let col = match &self.stratify_by {
            Some(f) => Some(column(batch, f)?),
            None => None,
        };
        let (mut take, mut positions, mut classes) = (Vec::new(), Vec::new(), Vec::new());
        for row in 0..batch.len() {
            let position = sel.offset + self.seen + row as u64;
            if sel.chosen.contains(&position) {
                take.push(row);
                positions.push(position);
                classes.push(col.map_or(0, |c| sel.classes.id(c.get(row))));
            } else {
                ctx.drop_record(REASON, || batch.row(row).to_record());
            }
        }
        self.seen += batch.len() as u64;
        if !take.is_empty() {
            self.held_rows += take.len();
            self.held.push(Held { batch: batch.take(&take), positions, classes });
        }
        Ok(())
    }

    /// In a shard of a job: puts its part in place, waits for every shard's (when it held
    /// its batches), and lets out its winners in input order, with the shard's figures.
    fn finish_shard(&mut self, seed: u64, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let Some(x) = &mut self.exchange else { return Ok(()) };
        x.finish_publishing()?;
        if x.publish_only() {
            return Ok(());
        }
        if self.selection.is_none() {
            self.selection = Some(select(x, ctx, self.n, self.stratify_by.is_some(), seed, largest_remainder)?);
        }
        for batch in std::mem::take(&mut self.pending) {
            self.take_selected(&batch, ctx)?;
        }
        let Some(sel) = self.selection.take() else { return Err(StepError::internal("sample: no selection")) };
        let mut by_class = vec![0u64; sel.classes.len().max(1)];
        for h in &self.held {
            for c in &h.classes {
                by_class[*c as usize] += 1;
            }
        }
        // Every row held is a winner: this only joins them into full batches.
        self.keep_only(&sel.chosen, ctx);
        out.extend(self.held.drain(..).map(|h| h.batch));
        ctx.set_stat("seen", Value::Int(self.seen as i64));
        ctx.set_stat("kept", Value::Int(self.held_rows as i64));
        if self.stratify_by.is_some() {
            let by_class: BTreeMap<String, Value> = by_class
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| (sel.classes.name(c as u32).to_owned(), Value::Int(*n as i64)))
                .collect();
            ctx.set_stat("kept_by_class", Value::Map(by_class.into()));
        }
        Ok(())
    }

    fn process(&mut self, batch: &Batch, seed: u64, ctx: &mut StepContext) -> Result<(), StepError> {
        if self.exchange.is_some() {
            return self.process_shard(batch, seed, ctx);
        }
        let col = match &self.stratify_by {
            Some(f) => Some(column(batch, f)?),
            None => None,
        };
        let mut take = Vec::new();
        let mut classes = Vec::new();
        for row in 0..batch.len() {
            let position = self.seen + row as u64;
            let class = col.map_or(0, |c| self.classes.id(c.get(row))) as usize;
            if self.heaps.len() <= class {
                self.heaps.resize_with(class + 1, BinaryHeap::new);
                self.counts.resize(class + 1, 0);
            }
            self.counts[class] += 1;
            let key = position_key(seed, salt::SAMPLE, position);
            let heap = &mut self.heaps[class];
            if heap.len() < self.n {
                heap.push((key, position));
            } else if heap.peek().is_some_and(|top| key < top.0) {
                // The evicted row is dropped at the next clean-up.
                heap.pop();
                heap.push((key, position));
            } else {
                ctx.drop_record(REASON, || batch.row(row).to_record());
                continue;
            }
            take.push(row);
            classes.push(class as u32);
        }
        self.seen += batch.len() as u64;
        if !take.is_empty() {
            let positions = take.iter().map(|&r| self.seen - batch.len() as u64 + r as u64).collect();
            self.held_rows += take.len();
            self.held.push(Held { batch: batch.take(&take), positions, classes });
        }
        // Clean up when the rows held pass twice what the heaps keep (and at least a few
        // batches' worth, so that a small `n` does not clean up on every batch).
        let kept: usize = self.heaps.iter().map(BinaryHeap::len).sum();
        if self.held_rows > (2 * kept).max(4 * OUT_BATCH) {
            let chosen: HashSet<u64> = self.heaps.iter().flat_map(|h| h.iter().map(|(_, p)| *p)).collect();
            self.keep_only(&chosen, ctx);
        }
        Ok(())
    }

    /// Drops the held rows whose position is not in `chosen`, and joins what is left into
    /// full batches.
    fn keep_only(&mut self, chosen: &HashSet<u64>, ctx: &mut StepContext) {
        let mut kept = Vec::with_capacity(self.held.len());
        let (mut positions, mut classes) = (Vec::new(), Vec::new());
        for h in self.held.drain(..) {
            let keep: Vec<bool> = h.positions.iter().map(|p| chosen.contains(p)).collect();
            for (row, k) in keep.iter().enumerate() {
                if *k {
                    positions.push(h.positions[row]);
                    classes.push(h.classes[row]);
                } else {
                    ctx.drop_record(REASON, || h.batch.row(row).to_record());
                }
            }
            if keep.iter().any(|k| *k) {
                kept.push(h.batch.filter(&keep));
            }
        }
        self.held_rows = positions.len();
        if kept.is_empty() {
            return;
        }
        // One held entry per output batch, rows in input order.
        let mut start = 0;
        for batch in super::rebatch(&kept, OUT_BATCH) {
            let end = start + batch.len();
            self.held.push(Held {
                batch,
                positions: positions[start..end].to_vec(),
                classes: classes[start..end].to_vec(),
            });
            start = end;
        }
    }

    fn finish(&mut self, seed: u64, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        if self.exchange.is_some() {
            return self.finish_shard(seed, ctx, out);
        }
        // How many of each class: all `n` for one class; in proportion to the counts when
        // stratified.
        let total: u64 = self.counts.iter().sum();
        let quotas = if self.stratify_by.is_some() {
            largest_remainder(&self.counts, (self.n as u64).min(total))
        } else {
            vec![self.n as u64; self.heaps.len()]
        };
        let mut chosen = HashSet::new();
        for (heap, quota) in self.heaps.iter().zip(&quotas) {
            let mut entries = heap.clone().into_sorted_vec();
            entries.truncate(*quota as usize);
            chosen.extend(entries.into_iter().map(|(_, p)| p));
        }
        self.keep_only(&chosen, ctx);
        out.extend(self.held.drain(..).map(|h| h.batch));
        ctx.set_stat("seen", Value::Int(total as i64));
        ctx.set_stat("kept", Value::Int(chosen.len() as i64));
        if self.stratify_by.is_some() {
            let by_class: BTreeMap<String, Value> = quotas
                .iter()
                .enumerate()
                .map(|(c, q)| (self.classes.name(c as u32).to_owned(), Value::Int(*q as i64)))
                .collect();
            ctx.set_stat("kept_by_class", Value::Map(by_class.into()));
        }
        Ok(())
    }
}

/// `n` shared among classes in proportion to `counts`: each gets the whole part of its
/// share, and the records left over go to the largest remainders (ties to the first).
fn largest_remainder(counts: &[u64], n: u64) -> Vec<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return vec![0; counts.len()];
    }
    let exact: Vec<u128> = counts.iter().map(|c| u128::from(*c) * u128::from(n)).collect();
    let mut q: Vec<u64> = exact.iter().map(|e| (e / u128::from(total)) as u64).collect();
    let mut rest = n - q.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exact[i] % u128::from(total)));
    for i in order {
        if rest == 0 {
            break;
        }
        q[i] += 1;
        rest -= 1;
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use std::collections::HashMap;
    use weave_core::Record;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record::new().with("id", i as i64).with("label", if i % 10 == 0 { "rare" } else { "common" }))
            .collect()
    }

    /// Samples `records` cut into batches of `batch_size`; returns the kept ids, the
    /// records dropped, and the stats.
    fn run(config: &str, records: &[Record], batch_size: usize, seed: u64) -> (Vec<i64>, u64, HashMap<String, Value>) {
        let mut ctx = StepContext::new("sample", seed, 0, Default::default()).keeping_dropped(true);
        let mut out = Vec::new();
        match build_step("sample", config) {
            Step::Transform(t) => {
                for chunk in records.chunks(batch_size) {
                    out.push(t.apply(&Batch::from_records(chunk), &mut ctx).unwrap());
                }
            }
            Step::StatefulTransform(mut t) => {
                for chunk in records.chunks(batch_size) {
                    t.process(&Batch::from_records(chunk), &mut ctx, &mut out).unwrap();
                }
                crate::tests::finish(&mut *t, &mut ctx, &mut out).unwrap();
            }
            _ => panic!("sample is a transform"),
        }
        let ids: Vec<i64> = out
            .iter()
            .flat_map(|b| b.to_records())
            .map(|r| match r.get("id") {
                Some(Value::Int(i)) => *i,
                other => panic!("id {other:?}"),
            })
            .collect();
        let excluded = ctx.take_excluded();
        let dropped: u64 = ctx.take_dropped().iter().map(|(_, n)| n).sum();
        assert_eq!(excluded.len() as u64, dropped);
        assert_eq!(ids.len() as u64 + dropped, records.len() as u64, "every record is kept or dropped, once");
        (ids, dropped, ctx.take_stats().into_iter().collect())
    }

    #[test]
    fn n_keeps_exactly_n_in_input_order_whatever_the_batch_size() {
        let r = records(50_000);
        let (a, dropped, stats) = run("n = 1000", &r, 8192, 42);
        assert_eq!(a.len(), 1000);
        assert_eq!(dropped, 49_000);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "input order");
        assert_eq!(stats["kept"], Value::Int(1000));
        // Spread over the input, not bunched at either end.
        assert!(a.iter().filter(|i| **i < 25_000).count().abs_diff(500) < 80);
        let (b, _, _) = run("n = 1000", &r, 7, 42);
        assert_eq!(a, b, "batch size does not matter");
        let (c, _, _) = run("n = 1000", &r, 8192, 43);
        assert_ne!(a, c, "the seed does");
        let (all, dropped, _) = run("n = 1000", &r[..300], 64, 1);
        assert_eq!((all.len(), dropped), (300, 0), "fewer records than n: all of them");
    }

    #[test]
    fn stratified_n_keeps_class_proportions() {
        let r = records(10_000);
        let (ids, _, stats) = run("n = 500\nstratify_by = \"label\"", &r, 1000, 3);
        assert_eq!(ids.len(), 500);
        assert_eq!(ids.iter().filter(|i| *i % 10 == 0).count(), 50, "the rare class keeps its 10%");
        assert_eq!(stats["kept_by_class"].to_string(), r#"{"common":450,"rare":50}"#);
        let (again, _, _) = run("n = 500\nstratify_by = \"label\"", &r, 77, 3);
        assert_eq!(ids, again, "batch size does not matter");
    }

    #[test]
    fn fraction_streams_and_depends_on_the_record_only() {
        let r = records(20_000);
        let (a, _, _) = run("fraction = 0.1", &r, 1000, 42);
        assert!(a.len().abs_diff(2000) < 150, "{}", a.len());
        let (b, _, _) = run("fraction = 0.1", &r, 3, 42);
        assert_eq!(a, b);
        let (c, _, _) = run("fraction = 0.1\nseed = 9", &r, 1000, 42);
        assert_ne!(a, c);
        let (tail, _, _) = run("fraction = 0.1", &r[10_000..], 999, 42);
        assert_eq!(tail, a.iter().copied().filter(|i| *i >= 10_000).collect::<Vec<_>>());
        let (all, _, _) = run("fraction = 1", &r, 1000, 42);
        assert_eq!(all.len(), 20_000);
    }

    #[test]
    fn stratified_fraction_is_exact_per_class() {
        let r = records(10_000);
        let (ids, _, stats) = run("fraction = 0.25\nstratify_by = \"label\"", &r, 512, 42);
        let rare = ids.iter().filter(|i| *i % 10 == 0).count();
        assert!(rare.abs_diff(250) <= 1, "{rare}");
        assert!((ids.len() - rare).abs_diff(2250) <= 1);
        assert_eq!(stats["seen"], Value::Int(10_000));
        let (again, _, _) = run("fraction = 0.25\nstratify_by = \"label\"", &r, 100, 42);
        assert_eq!(ids, again);
    }

    #[test]
    fn shares_follow_the_largest_remainder() {
        assert_eq!(largest_remainder(&[90, 10], 5), [5, 0]);
        assert_eq!(largest_remainder(&[1, 1, 1], 2), [1, 1, 0]);
        assert_eq!(largest_remainder(&[3, 7], 10), [3, 7]);
        assert_eq!(largest_remainder(&[0, 0], 4), [0, 0]);
    }

    #[test]
    fn bad_keys_are_named() {
        check_build_errors(
            "sample",
            "",
            &["- missing required key `n` or `fraction` (how many records to keep, or which share)"],
        );
        check_build_errors(
            "sample",
            "n = 10\nfraction = 1.5",
            &[
                "2:12 `fraction` must be above 0 and at most 1, not 1.5",
                "2:12 give `n` (how many records) or `fraction` (which share), not both",
            ],
        );
        check_build_errors("sample", "n = -1", &["1:5 `n` must not be negative"]);
        // regression: a sample of nothing gave an empty output and exit 0, silently.
        check_build_errors(
            "sample",
            "n = 0",
            &["1:5 `n` must be at least 1: a sample of no records leaves nothing to export"],
        );
        for f in ["0", "0.0", "-0.0"] {
            check_build_errors(
                "sample",
                &format!("fraction = {f}"),
                &[&format!(
                    "1:12 `fraction` must be above 0 and at most 1, not {}: a share of 0 keeps no record",
                    f.trim_end_matches(".0")
                )],
            );
        }
        check_build_errors(
            "sample",
            "n = 5\nkey = \"id\"",
            &["2:7 `key` applies to `fraction`: with `n`, records are drawn by their position"],
        );
        let Step::StatefulTransform(mut s) = build_step("sample", "n = 5\nstratify_by = \"lbl\"") else { panic!() };
        let mut ctx = StepContext::new("sample", 0, 0, Default::default());
        let err = s.process(&Batch::from_records(&records(3)), &mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "field `lbl` is not in the data (fields: id, label)");
    }
}
