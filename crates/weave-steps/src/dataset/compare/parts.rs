//! `compare` in a shard of a job: each shard publishes its part of the comparison, and
//! the last shard takes in every shard's part, in shard order, and writes the job's
//! figures, equal to the single process's.
//!
//! Every figure but two is over counts that add: lengths (histograms), vocabularies
//! (token hashes), categories, labels, records, values (a field's nulls are the records
//! without a value, when the set has the field), min and max. A field stops being a
//! category field when its distinct values, over both sets, pass `max_categories`: in the
//! job, when the union of the shards' values does (a shard whose own values pass it says
//! so). The two that do not add are the mean of a number field (a sum of floats, whose
//! last bits depend on the order of the additions) and the seeded sample behind the
//! percentiles and KS, whose keys are a function of each number's position among the
//! field's numbers in the whole input. A shard cannot know that position while it runs
//! (the earlier shards' counts come when their input ends), so it publishes the numbers
//! themselves, batch by batch (8 bytes each, and only while the field is a number field
//! in the shard), and the last shard replays them in shard order: the same additions and
//! the same keys as the single process, holding at most `ks_sample` numbers per field and
//! set.
//!
//! A part (frames of the exchange file, `crate::exchange`): `numbers` frames as the
//! shard's batches come, then, when its input has ended, a `field` frame per field (in the
//! order the shard first saw them) and a `totals` frame, always the last.
//!
//! - `numbers`: tag 1, the set (0 real, 1 synthetic), a count of fields, then per field
//!   its name (a varint length and UTF-8 bytes), a count and that many f64 (8 bytes,
//!   little-endian).
//! - `field`: tag 2, the name, then per set: values, whether a record has the field (0 or
//!   1), tokens, whether every value was a number (0 or 1), how many numbers, min and max
//!   (f64), the lengths in characters and in words (a count, a sum, then the number of
//!   lengths seen and each length with its count); then the vocabulary (a count, then
//!   each token hash as 8 bytes with its two counts) and the categories (0 when there were
//!   too many, else 1, a count, and each value with its two counts).
//! - `totals`: tag 3, the records of each set, the labels (a count, each name with its two
//!   counts), and how many `field` frames came before it.
//!
//! Numbers are unsigned LEB128 varints where not said otherwise.

use std::collections::HashMap;

use weave_core::{Shard, StepContext, StepError, Value};

use super::{FieldState, Lengths, NumberSample, Side, Tally};
use crate::dataset::shards::{Damaged, Reader, put_varint};
use crate::dataset::{position_key, salt};
use crate::exchange::Exchange;

const NUMBERS: u8 = 1;
const FIELD: u8 = 2;
const TOTALS: u8 = 3;

/// A shard's side of a comparison in a job.
#[derive(Debug)]
pub(super) struct Sharded {
    exchange: Exchange,
    shard: Shard,
    /// The record counts of this shard's part when a run before this one published it
    /// (`Some(None)`: it is not there), once looked for.
    before: Option<Option<[u64; 2]>>,
}

impl Sharded {
    pub(super) fn new(exchange: Exchange, shard: Shard) -> Sharded {
        Sharded { exchange, shard, before: None }
    }

    /// Whether this run only publishes the shard's part (`weave run --stage`, the stage
    /// before the comparison's): it passes nothing on then.
    pub(super) fn publish_only(&self) -> bool {
        self.exchange.publish_only()
    }

    /// Whether this shard writes the job's figures: the last, so that a job whose shards
    /// run one after another in shard order never waits.
    fn writes_figures(&self) -> bool {
        self.shard.index() + 1 == self.shard.count()
    }

    /// Whether a run before this one published the shard's part (the stage before, an
    /// earlier attempt): its figures are there, and this run only checks its records
    /// against them.
    pub(super) fn published_before(&mut self) -> Result<bool, StepError> {
        if self.before.is_none() {
            let x = &self.exchange;
            let mut records = None;
            let there = x.take_own(|bytes| {
                if let Some(r) = part_records(bytes).map_err(|Damaged(why)| x.damaged(x.shard_index(), why))? {
                    records = Some(r);
                }
                Ok(())
            })?;
            if there && records.is_none() {
                return Err(x.damaged(x.shard_index(), "the part has no totals"));
            }
            self.before = Some(records);
        }
        Ok(matches!(self.before, Some(Some(_))))
    }

    /// Publishes the numbers of one batch of set `side` (from [`super::Compare::observe`]).
    pub(super) fn publish_numbers(
        &mut self,
        side: usize,
        numbers: &[(usize, Vec<f64>)],
        tally: &Tally,
    ) -> Result<(), StepError> {
        if numbers.is_empty() {
            return Ok(());
        }
        self.exchange.publish(&numbers_frame(side, numbers, tally))
    }

    /// The shard's input has ended: publishes the rest of its part (`tally`: what its
    /// records say) and sets its own figures; in the shard that writes the job's figures,
    /// waits for every shard's part and returns the job's tally, made as the single
    /// process makes it.
    pub(super) fn finish(
        &mut self,
        tally: Tally,
        ctx: &mut StepContext,
        seed: u64,
        cap: usize,
        max_categories: usize,
    ) -> Result<Option<Tally>, StepError> {
        self.published_before()?;
        let x = &mut self.exchange;
        match self.before {
            Some(Some(published)) if published != tally.records => {
                return Err(x.damaged(
                    x.shard_index(),
                    &format!(
                        "it counts {} real and {} synthetic records, and this shard has {} and {}: it is not of these records",
                        published[0], published[1], tally.records[0], tally.records[1]
                    ),
                ));
            }
            Some(Some(_)) => {}
            _ => {
                for f in &tally.state {
                    x.publish(&field_frame(f))?;
                }
                x.publish(&totals_frame(&tally))?;
            }
        }
        x.finish_publishing()?;
        if x.publish_only() {
            return Ok(None);
        }
        let records = super::records_figure(tally.records);
        drop(tally);
        if !self.writes_figures() {
            let last = Shard::new(self.shard.count() - 1, self.shard.count()).unwrap_or(self.shard);
            ctx.set_stat("scope", Value::Str("shard".to_owned()));
            ctx.set_stat("records", records);
            ctx.set_stat("job_figures_in", Value::Str(format!("shard {last}")));
            return Ok(None);
        }
        let x = &self.exchange;
        let mut merger = Merger::new(self.shard.count(), seed, cap, max_categories);
        x.take_every(ctx, |j, bytes| merger.take(j, bytes).map_err(|Damaged(why)| x.damaged(j, why)))?;
        if let Some(j) = merger.complete.iter().position(|c| !c) {
            return Err(x.damaged(j as u32, "the part has no totals"));
        }
        ctx.set_stat("scope", Value::Str("job".to_owned()));
        ctx.set_stat("shards", Value::Int(i64::from(self.shard.count())));
        merger.finish().map(Some).map_err(|why| StepError::fatal(format!("the shards' parts of the comparison {why}")))
    }
}

/// The `numbers` frame of one batch of set `side`: by field (its place in `tally`), the
/// numbers that count, in order.
fn numbers_frame(side: usize, numbers: &[(usize, Vec<f64>)], tally: &Tally) -> Vec<u8> {
    let size: usize = numbers.iter().map(|(i, v)| tally.state[*i].name.len() + 8 * v.len() + 20).sum();
    let mut out = Vec::with_capacity(size + 8);
    out.push(NUMBERS);
    put_varint(&mut out, side as u64);
    put_varint(&mut out, numbers.len() as u64);
    for (i, values) in numbers {
        put_str(&mut out, &tally.state[*i].name);
        put_varint(&mut out, values.len() as u64);
        for x in values {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_f64(out: &mut Vec<u8>, x: f64) {
    out.extend_from_slice(&x.to_le_bytes());
}

fn put_lengths(out: &mut Vec<u8>, l: &Lengths) {
    put_varint(out, l.n);
    put_varint(out, l.sum);
    put_varint(out, l.counts.iter().filter(|c| **c > 0).count() as u64);
    for (len, c) in l.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        put_varint(out, len as u64);
        put_varint(out, *c);
    }
}

/// The `field` frame of `f`.
fn field_frame(f: &FieldState) -> Vec<u8> {
    let cats = f.categories.as_ref().map_or(0, |c| c.keys().map(|k| k.len() + 12).sum());
    let mut out = Vec::with_capacity(f.vocab.len() * 12 + cats + 256);
    out.push(FIELD);
    put_str(&mut out, &f.name);
    for s in &f.sides {
        for n in [s.values, u64::from(s.present), s.tokens, u64::from(s.numeric), s.sample.seen] {
            put_varint(&mut out, n);
        }
        put_f64(&mut out, s.min);
        put_f64(&mut out, s.max);
        put_lengths(&mut out, &s.chars);
        put_lengths(&mut out, &s.words);
    }
    put_varint(&mut out, f.vocab.len() as u64);
    for (hash, c) in &f.vocab {
        out.extend_from_slice(&hash.to_le_bytes());
        put_varint(&mut out, c[0]);
        put_varint(&mut out, c[1]);
    }
    match &f.categories {
        None => out.push(0),
        Some(cats) => {
            out.push(1);
            put_varint(&mut out, cats.len() as u64);
            for (k, c) in cats {
                put_str(&mut out, k);
                put_varint(&mut out, c[0]);
                put_varint(&mut out, c[1]);
            }
        }
    }
    out
}

/// The `totals` frame of `tally`.
fn totals_frame(tally: &Tally) -> Vec<u8> {
    let mut out = vec![TOTALS];
    put_varint(&mut out, tally.records[0]);
    put_varint(&mut out, tally.records[1]);
    put_varint(&mut out, tally.labels.len() as u64);
    for (name, c) in &tally.labels {
        put_str(&mut out, name);
        put_varint(&mut out, c[0]);
        put_varint(&mut out, c[1]);
    }
    put_varint(&mut out, tally.state.len() as u64);
    out
}

fn read_str<'a>(r: &mut Reader<'a>) -> Result<&'a str, Damaged> {
    let len = r.size()?;
    std::str::from_utf8(r.take(len)?).map_err(|_| Damaged("a name is not UTF-8"))
}

fn read_f64(r: &mut Reader<'_>) -> Result<f64, Damaged> {
    let b: [u8; 8] = r.take(8)?.try_into().map_err(|_| Damaged("a frame ends early"))?;
    Ok(f64::from_le_bytes(b))
}

fn read_flag(r: &mut Reader<'_>) -> Result<bool, Damaged> {
    match r.varint()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Damaged("a flag is neither 0 nor 1")),
    }
}

fn read_pair(r: &mut Reader<'_>) -> Result<[u64; 2], Damaged> {
    Ok([r.varint()?, r.varint()?])
}

fn read_lengths(r: &mut Reader<'_>) -> Result<Lengths, Damaged> {
    let (n, sum) = (r.varint()?, r.varint()?);
    let mut l = Lengths { counts: Vec::new(), n: 0, sum };
    for _ in 0..r.varint()? {
        let len = r.size()?;
        if len >= super::MAX_LENGTH || len < l.counts.len() {
            return Err(Damaged("a length is out of order or out of range"));
        }
        l.counts.resize(len + 1, 0);
        l.counts[len] = r.varint()?;
        l.n += l.counts[len];
    }
    if l.n != n {
        return Err(Damaged("a field's lengths do not add up to their count"));
    }
    Ok(l)
}

/// Reads a `field` frame (after its tag).
fn read_field(r: &mut Reader<'_>) -> Result<FieldState, Damaged> {
    let mut f = FieldState::new(read_str(r)?);
    for s in &mut f.sides {
        s.values = r.varint()?;
        s.present = read_flag(r)?;
        s.tokens = r.varint()?;
        s.numeric = read_flag(r)?;
        s.sample.seen = r.varint()?;
        s.min = read_f64(r)?;
        s.max = read_f64(r)?;
        s.chars = read_lengths(r)?;
        s.words = read_lengths(r)?;
    }
    for _ in 0..r.varint()? {
        let hash = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| Damaged("a frame ends early"))?);
        f.vocab.insert(hash, read_pair(r)?);
    }
    f.categories = match r.take(1)?[0] {
        0 => None,
        1 => {
            let mut cats = HashMap::new();
            for _ in 0..r.varint()? {
                let k = read_str(r)?.to_owned();
                cats.insert(k, read_pair(r)?);
            }
            Some(cats)
        }
        _ => return Err(Damaged("a flag is neither 0 nor 1")),
    };
    Ok(f)
}

/// The record counts in a part's `totals` frame, if `bytes` is one.
fn part_records(bytes: &[u8]) -> Result<Option<[u64; 2]>, Damaged> {
    let mut r = Reader::new(bytes);
    if r.take(1)?[0] != TOTALS {
        return Ok(None);
    }
    read_pair(&mut r).map(Some)
}

/// A field's numbers in one set, over the shards so far: their sum in input order, and
/// the seeded sample with each number's key from its position in the whole input.
#[derive(Debug, Default)]
struct Numbers {
    sum: f64,
    sample: NumberSample,
}

/// The job's tally, made from the shards' parts in shard order, one frame at a time.
#[derive(Debug)]
pub(super) struct Merger {
    tally: Tally,
    numbers: HashMap<(String, usize), Numbers>,
    seed: u64,
    cap: usize,
    max_categories: usize,
    /// The shard whose part is being read, and its `field` frames so far.
    shard: Option<u32>,
    fields: u64,
    /// Per shard: whether its `totals` came (a part is whole once they have).
    complete: Vec<bool>,
}

impl Merger {
    pub(super) fn new(shards: u32, seed: u64, cap: usize, max_categories: usize) -> Merger {
        Merger {
            tally: Tally::default(),
            numbers: HashMap::new(),
            seed,
            cap,
            max_categories,
            shard: None,
            fields: 0,
            complete: vec![false; shards as usize],
        }
    }

    /// Takes in one frame of shard `j`'s part (every shard's come in shard order).
    pub(super) fn take(&mut self, j: u32, bytes: &[u8]) -> Result<(), Damaged> {
        if self.shard != Some(j) {
            self.shard = Some(j);
            self.fields = 0;
        }
        if self.complete.get(j as usize).is_none_or(|c| *c) {
            return Err(Damaged("a frame follows the part's totals"));
        }
        let mut r = Reader::new(bytes);
        match r.take(1)?[0] {
            NUMBERS => self.numbers(&mut r)?,
            FIELD => {
                let f = read_field(&mut r)?;
                self.field(f);
                self.fields += 1;
            }
            TOTALS => {
                let records = read_pair(&mut r)?;
                for (side, n) in records.into_iter().enumerate() {
                    self.tally.records[side] += n;
                }
                for _ in 0..r.varint()? {
                    let name = read_str(&mut r)?;
                    let c = read_pair(&mut r)?;
                    let l = self.tally.labels.entry(name.to_owned()).or_default();
                    l[0] += c[0];
                    l[1] += c[1];
                }
                if r.varint()? != self.fields {
                    return Err(Damaged("its totals do not name as many fields as it has"));
                }
                self.complete[j as usize] = true;
            }
            _ => return Err(Damaged("a frame of an unknown kind")),
        }
        if !r.at_end() {
            return Err(Damaged("a frame runs on past its end"));
        }
        Ok(())
    }

    /// A `numbers` frame: each number added and offered to the sample in input order, as
    /// the single process does, its key from its position among the field's numbers of the
    /// whole input (the numbers of the earlier shards and frames come first).
    fn numbers(&mut self, r: &mut Reader<'_>) -> Result<(), Damaged> {
        let side = match r.varint()? {
            s @ (0 | 1) => s as usize,
            _ => return Err(Damaged("a set is neither 0 nor 1")),
        };
        for _ in 0..r.varint()? {
            let name = read_str(r)?;
            let count = r.size()?;
            let bytes = r.take(count.checked_mul(8).ok_or(Damaged("a size is out of range"))?)?;
            let n = self.numbers.entry((name.to_owned(), side)).or_default();
            for b in bytes.chunks_exact(8) {
                let x = f64::from_le_bytes(b.try_into().map_err(|_| Damaged("a frame ends early"))?);
                if !x.is_finite() {
                    return Err(Damaged("a number is not finite"));
                }
                n.sum += x;
                let key = position_key(self.seed, salt::COMPARE ^ side as u64, n.sample.seen);
                n.sample.add(x, key, self.cap);
            }
        }
        Ok(())
    }

    /// Adds a shard's figures of a field to the job's (a field new to the job comes after
    /// the ones seen so far, as the single process first sees it).
    fn field(&mut self, f: FieldState) {
        let i = self.tally.field(&f.name);
        let to = &mut self.tally.state[i];
        for (a, b) in to.sides.iter_mut().zip(f.sides) {
            add_side(a, b);
        }
        for (hash, c) in f.vocab {
            let e = to.vocab.entry(hash).or_default();
            e[0] += c[0];
            e[1] += c[1];
        }
        // A field stops being a category field when the job's distinct values pass the
        // limit: when one shard's do, or when their union does.
        to.categories = match (to.categories.take(), f.categories) {
            (Some(mut cats), Some(more)) => {
                for (k, c) in more {
                    let e = cats.entry(k).or_default();
                    e[0] += c[0];
                    e[1] += c[1];
                }
                (cats.len() <= self.max_categories).then_some(cats)
            }
            _ => None,
        };
    }

    /// The job's tally: each number field's sum and sample are the ones made from the
    /// published numbers; an error says how the parts disagree.
    pub(super) fn finish(mut self) -> Result<Tally, String> {
        for f in &mut self.tally.state {
            for (side, s) in f.sides.iter_mut().enumerate() {
                if !s.numeric {
                    continue;
                }
                let n = self.numbers.remove(&(f.name.clone(), side)).unwrap_or_default();
                if n.sample.seen != s.sample.seen {
                    return Err(format!(
                        "disagree: field `{}` has {} numbers in the {} records' counts and {} published",
                        f.name,
                        s.sample.seen,
                        super::INPUTS[side],
                        n.sample.seen
                    ));
                }
                s.number_sum = n.sum;
                s.sample = n.sample;
            }
        }
        Ok(self.tally)
    }
}

/// Adds the counts of `b` to `a`.
fn add_side(a: &mut Side, b: Side) {
    a.values += b.values;
    a.present |= b.present;
    a.tokens += b.tokens;
    a.numeric &= b.numeric;
    a.sample.seen += b.sample.seen;
    a.min = a.min.min(b.min);
    a.max = a.max.max(b.max);
    add_lengths(&mut a.chars, b.chars);
    add_lengths(&mut a.words, b.words);
}

fn add_lengths(a: &mut Lengths, b: Lengths) {
    if a.counts.len() < b.counts.len() {
        a.counts.resize(b.counts.len(), 0);
    }
    for (x, y) in a.counts.iter_mut().zip(b.counts) {
        *x += y;
    }
    a.n += b.n;
    a.sum += b.sum;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use weave_core::{Batch, CanonicalConfig, Record};

    use super::super::Compare;
    use super::*;

    const SEED: u64 = 7;

    fn compare(max_categories: usize, ks_sample: usize, part: bool) -> Compare {
        Compare {
            fields: None,
            label: Some("label".to_owned()),
            top: 3,
            max_categories,
            ks_sample,
            seed: Some(SEED),
            config: CanonicalConfig::default(),
            tally: Tally::default(),
            done: [true; 2],
            buf: String::new(),
            sharded: None,
            part,
        }
    }

    /// The figures `c` writes for `tally`.
    fn figures(c: &Compare, tally: &Tally) -> BTreeMap<String, Value> {
        let mut ctx = StepContext::new("compare", 0, 0, Default::default());
        c.figures(tally, &mut ctx);
        ctx.take_stats().into_iter().collect()
    }

    /// The single process's figures over `real` then `synthetic`, in batches of `batch`.
    fn single(real: &[Record], synthetic: &[Record], batch: usize, cfg: (usize, usize)) -> BTreeMap<String, Value> {
        let mut c = compare(cfg.0, cfg.1, false);
        for (side, records) in [real, synthetic].into_iter().enumerate() {
            for chunk in records.chunks(batch) {
                assert!(c.observe(side, &Batch::from_records(chunk), SEED).unwrap().is_empty());
                c.tally.records[side] += chunk.len() as u64;
            }
        }
        figures(&c, &c.tally)
    }

    /// One shard's part, as its frames: its batches of both sets, interleaved as `order`
    /// says (true: the next real batch), then its fields and totals.
    fn part(real: &[Record], synthetic: &[Record], batch: usize, order: &[bool], cfg: (usize, usize)) -> Vec<Vec<u8>> {
        let mut c = compare(cfg.0, cfg.1, true);
        let mut chunks = [real.chunks(batch), synthetic.chunks(batch)];
        let mut frames = Vec::new();
        let mut take = |c: &mut Compare, side: usize, chunk: &[Record]| {
            let numbers = c.observe(side, &Batch::from_records(chunk), SEED).unwrap();
            c.tally.records[side] += chunk.len() as u64;
            if !numbers.is_empty() {
                frames.push(numbers_frame(side, &numbers, &c.tally));
            }
        };
        let mut order = order.iter().copied();
        loop {
            let want = usize::from(!order.next().unwrap_or(true));
            let (side, chunk) = match chunks[want].next() {
                Some(chunk) => (want, chunk),
                None => match chunks[1 - want].next() {
                    Some(chunk) => (1 - want, chunk),
                    None => break,
                },
            };
            take(&mut c, side, chunk);
        }
        frames.extend(c.tally.state.iter().map(field_frame));
        frames.push(totals_frame(&c.tally));
        frames
    }

    /// The job's figures from the shards' parts, merged in shard order.
    fn merged(parts: &[Vec<Vec<u8>>], cfg: (usize, usize)) -> BTreeMap<String, Value> {
        let mut m = Merger::new(parts.len() as u32, SEED, cfg.1, cfg.0);
        for (j, frames) in parts.iter().enumerate() {
            for f in frames {
                m.take(j as u32, f).unwrap();
            }
        }
        assert!(m.complete.iter().all(|c| *c));
        let tally = m.finish().unwrap();
        figures(&compare(cfg.0, cfg.1, false), &tally)
    }

    fn record(text: Option<&str>, cat: u32, n: Option<f64>, label: &str) -> Record {
        let r = Record::new().with("cat", format!("c{cat}")).with("label", label);
        let r = match text {
            Some(t) => r.with("text", t),
            None => r.with("text", Value::Null),
        };
        match n {
            Some(x) => r.with("n", x),
            None => r.with("n", "not a number"),
        }
    }

    fn records() -> impl Strategy<Value = Vec<Record>> {
        const WORDS: [&str; 10] = ["the", "cat", "sat", "on", "a", "mat", "Dog", "runs", "fast", "été"];
        let text = prop::option::weighted(0.9, prop::collection::vec(prop::sample::select(&WORDS[..]), 0..6));
        // Mostly numbers (NaN now and then); a string that is no number, rarely.
        let n = prop_oneof![
            40 => (-50i32..50).prop_map(|i| Some(f64::from(i) / 10.0)),
            1 => Just(Some(f64::NAN)),
            1 => Just(None),
        ];
        // Now and then a field few records have (the sets' schemas differ, and the order
        // fields are first seen in counts).
        let extra = prop::option::weighted(0.1, prop::sample::select(&["x_a", "x_b", "x_c"][..]));
        let one = (text, 0u32..8, n, prop::sample::select(&["a", "b", "c"][..]), extra);
        prop::collection::vec(one, 0..60).prop_map(|v| {
            v.into_iter()
                .map(|(t, cat, n, l, extra)| {
                    let r = record(t.map(|w| w.join(" ")).as_deref(), cat, n, l);
                    match extra {
                        Some(x) => r.with(x, 1i64),
                        None => r,
                    }
                })
                .collect()
        })
    }

    /// Cuts `records` into `k` pieces at the points `cuts` gives (fractions).
    fn cut<'a>(records: &'a [Record], cuts: &[f64]) -> Vec<&'a [Record]> {
        let mut at: Vec<usize> = cuts.iter().map(|c| (c * records.len() as f64) as usize).collect();
        at.sort_unstable();
        let mut out = Vec::new();
        let mut start = 0;
        for a in at.into_iter().chain([records.len()]) {
            out.push(&records[start..a.max(start)]);
            start = a.max(start);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever the split into shards, the batch sizes and how each shard's two sets
        /// interleave, the parts merged in shard order give the single process's figures.
        #[test]
        fn parts_merged_in_shard_order_are_the_single_process(
            real in records(),
            synthetic in records(),
            cuts in prop::collection::vec(0.0f64..1.0, 0..4),
            batch in 1usize..9,
            order in prop::collection::vec(any::<bool>(), 0..40),
            max_categories in 3usize..10,
            ks_sample in 2usize..30,
        ) {
            let cfg = (max_categories, ks_sample);
            let want = single(&real, &synthetic, 5, cfg);
            let (r, s) = (cut(&real, &cuts), cut(&synthetic, &cuts));
            let parts: Vec<Vec<Vec<u8>>> = r.iter().zip(&s).map(|(r, s)| part(r, s, batch, &order, cfg)).collect();
            prop_assert_eq!(merged(&parts, cfg), want);
        }
    }

    #[test]
    fn the_sample_is_the_job_s_not_each_shard_s() {
        // 200 numbers in each set, a sample of 10: the job's sample is the 10 smallest keys
        // of the positions 0..200, which each shard can only pick once it knows where its
        // numbers start.
        let real: Vec<Record> = (0..200).map(|i| record(Some("x"), 0, Some(f64::from(i)), "a")).collect();
        let synthetic: Vec<Record> = (0..200).map(|i| record(Some("y"), 1, Some(f64::from(i) * 1.5), "a")).collect();
        let cfg = (100, 10);
        let want = single(&real, &synthetic, 16, cfg);
        let parts: Vec<_> = [(0, 37), (37, 150), (150, 150), (150, 200)]
            .into_iter()
            .map(|(a, b)| part(&real[a..b], &synthetic[a..b], 7, &[true, false], cfg))
            .collect();
        assert_eq!(merged(&parts, cfg), want);
        let fields = want["fields"].to_string();
        assert!(fields.contains("\"real_sample\":10,\"statistic\""), "{fields}");
    }

    #[test]
    fn a_field_frame_reads_back_as_it_was_written() {
        let mut c = compare(4, 10, true);
        let rs: Vec<Record> =
            (0..30).map(|i| record(Some(&format!("w{} été word", i % 7)), i % 3, Some(f64::from(i)), "a")).collect();
        c.observe(0, &Batch::from_records(&rs), SEED).unwrap();
        c.observe(1, &Batch::from_records(&rs[..9]), SEED).unwrap();
        for f in &c.tally.state {
            let bytes = field_frame(f);
            let mut r = Reader::new(&bytes[1..]);
            let back = read_field(&mut r).unwrap();
            assert!(r.at_end());
            assert_eq!(back.name, f.name);
            assert_eq!(back.vocab, f.vocab);
            assert_eq!(back.categories, f.categories);
            let key = |s: &Side| {
                let l = |l: &Lengths| (l.n, l.sum, l.counts.clone());
                (s.values, s.present, s.tokens, s.numeric, s.sample.seen, s.min, s.max, l(&s.chars), l(&s.words))
            };
            for (a, b) in back.sides.iter().zip(&f.sides) {
                assert_eq!(key(a), key(b));
            }
            // A frame cut anywhere is damaged, not misread.
            for end in 1..bytes.len() {
                assert!(read_field(&mut Reader::new(&bytes[1..end])).is_err(), "cut at {end}");
            }
        }
        // The categories of `cat` (3 values) are kept; a shard with more than 4 says so.
        assert!(c.tally.state.iter().find(|f| f.name == "cat").unwrap().categories.is_some());
        assert!(c.tally.state.iter().find(|f| f.name == "n").unwrap().categories.is_none());
    }

    #[test]
    fn damaged_parts_are_refused() {
        let cfg = (10, 10);
        let rs = vec![record(Some("a b"), 0, Some(1.0), "a")];
        let frames = part(&rs, &rs, 1, &[], cfg);
        let totals = frames.last().unwrap();
        let take = |frames: &[&[u8]]| {
            let mut m = Merger::new(1, SEED, cfg.1, cfg.0);
            frames.iter().try_for_each(|f| m.take(0, f)).map(|()| m)
        };
        let all: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert!(take(&all).unwrap().complete[0]);
        // A frame after the totals; totals that name fewer fields; an unknown frame; a
        // frame with a byte too many.
        let after = [&all[..], &all[..1]].concat();
        assert_eq!(take(&after).err().map(|Damaged(w)| w), Some("a frame follows the part's totals"));
        assert_eq!(
            take(&[totals.as_slice()]).err().map(|Damaged(w)| w),
            Some("its totals do not name as many fields as it has")
        );
        assert_eq!(take(&[&[9u8][..]]).err().map(|Damaged(w)| w), Some("a frame of an unknown kind"));
        let long = [totals.as_slice(), &[0]].concat();
        let mut with_long: Vec<&[u8]> = all[..all.len() - 1].to_vec();
        with_long.push(&long);
        assert_eq!(take(&with_long).err().map(|Damaged(w)| w), Some("a frame runs on past its end"));
        // Without its totals, a part is not whole.
        assert!(!take(&all[..all.len() - 1]).unwrap().complete[0]);
    }
}
