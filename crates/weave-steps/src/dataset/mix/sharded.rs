//! `mix` in a shard of a job of several (`weave run --shard I/N`).
//!
//! Each shard writes its part to the step's exchange folder (see `crate::exchange`): a
//! header (this format's version and the codec of the records in it), one frame per
//! synthetic batch (its row count, its classes when balancing, and the records, encoded
//! with `weave_cache::codec`), and at its end a summary: how many real and synthetic
//! records it had, its real records' classes and their counts, and each input's fields
//! and types. Then every shard reads every shard's part, in shard order (the synthetic
//! records' bytes are skipped, not decoded), works out the job's counts, budgets and
//! choice as the single process would (positions are the job's: shard `j`'s first record
//! is at the sum of the earlier shards' counts), passes on its own real records (the
//! ones kept, in `replace` mode) and drops its own synthetic records that were not chosen.
//! The last shard reads the parts again and passes on the chosen synthetic records of
//! every shard, in shard order: the parts joined in shard order are the single process's
//! output.

use std::collections::BTreeMap;

use weave_cache::codec;
use weave_core::{Batch, Column, DataType, StepContext, StepError, ValueRef};

use super::super::shards::{ClassFrames, Damaged, Reader, ShardClasses, put_varint};
use super::{Classes, Figures, Mix, Types, job_classes, mismatch, replaced, schema_problem, tiers};
use crate::exchange::Exchange;

/// The version of the part's layout; a part of another version is refused, not misread.
const FORMAT: u8 = 1;

/// The frames' first byte.
const HEADER: u8 = b'H';
const SYNTHETIC: u8 = b'S';
const END: u8 = b'E';

/// A shard's summary of its inputs: real and synthetic record counts, the real records'
/// classes (in order of first appearance) with their counts, and each input's fields with
/// their types.
type Summary = (u64, u64, Vec<(String, u64)>, Vec<(String, DataType)>, Vec<(String, DataType)>);

/// One shard's side of a sharded mix.
#[derive(Debug)]
pub(super) struct MixShard {
    exchange: Exchange,
    /// The synthetic records' classes, numbered in the shard's order.
    frames: ClassFrames,
    started: bool,
    /// The shard's part was in place before this run (a stage before published it): its
    /// frames are not made again.
    in_place: bool,
}

/// The job's inputs, from every shard's part.
#[derive(Debug, Default)]
struct Job {
    real: u64,
    synthetic: u64,
    /// This shard's first position and number of records, in the job's real input and in
    /// its synthetic input, as its part says.
    own_real: (u64, u64),
    own_synthetic: (u64, u64),
    real_classes: Classes,
    real_by_class: Vec<u64>,
    synthetic_classes: Classes,
    /// Each synthetic record's class (`synthetic_classes`' numbering), when balancing.
    synthetic_of: Vec<u32>,
    types: [Types; 2],
}

/// A synthetic frame's parts: its row count, its classes' frame and its records' bytes.
fn synthetic_frame(bytes: &[u8]) -> Result<(u64, &[u8], &[u8]), Damaged> {
    let mut r = Reader::new(bytes);
    let rows = r.varint()?;
    let n = r.size()?;
    let classes = r.take(n)?;
    Ok((rows, classes, r.rest()))
}

/// The format and codec numbers of a header frame (`tag`, then `rest`), or `None` when it is
/// not one.
fn read_header(tag: u8, rest: &[u8]) -> Option<(u8, u32)> {
    let mut r = Reader::new(rest);
    let format = r.take(1).ok()?[0];
    let codec_used = u32::from_le_bytes(r.take(4).ok()?.try_into().ok()?);
    (tag == HEADER && r.at_end()).then_some((format, codec_used))
}

impl MixShard {
    pub(super) fn new(exchange: Exchange) -> MixShard {
        MixShard { exchange, frames: ClassFrames::default(), started: false, in_place: false }
    }

    /// Whether this run only publishes the shard's part (`weave run --stage`, a stage
    /// before the one that decides): it passes nothing on.
    pub(super) fn publish_only(&self) -> bool {
        self.exchange.publish_only()
    }

    fn start(&mut self) -> Result<(), StepError> {
        if !self.started {
            self.started = true;
            self.in_place = self.exchange.own_published();
            let mut header = vec![HEADER, FORMAT];
            header.extend_from_slice(&codec::BINCODE2.to_le_bytes());
            self.exchange.publish(&header)?;
        }
        Ok(())
    }

    /// Writes a synthetic batch to the shard's part, with each row's class (`col`) when
    /// balancing.
    pub(super) fn publish_synthetic(&mut self, batch: &Batch, col: Option<&Column>) -> Result<(), StepError> {
        self.start()?;
        if self.in_place {
            return Ok(());
        }
        let classes = col.map(|c| self.frames.frame(c, None)).unwrap_or_default();
        let records = codec::encode(batch)
            .map_err(|e| StepError::internal(format!("cannot encode synthetic records for the other shards: {e}")))?;
        let mut frame = Vec::with_capacity(records.len() + classes.len() + 21);
        frame.push(SYNTHETIC);
        put_varint(&mut frame, batch.len() as u64);
        put_varint(&mut frame, classes.len() as u64);
        frame.extend_from_slice(&classes);
        frame.extend_from_slice(&records);
        self.exchange.publish(&frame)
    }

    /// Writes the shard's summary and puts its part in place.
    fn publish_end(&mut self, summary: &Summary) -> Result<(), StepError> {
        self.start()?;
        let bytes = codec::encode(summary)
            .map_err(|e| StepError::internal(format!("cannot encode the shard's summary for the other shards: {e}")))?;
        let mut frame = Vec::with_capacity(bytes.len() + 1);
        frame.push(END);
        frame.extend_from_slice(&bytes);
        self.exchange.publish(&frame)?;
        self.exchange.finish_publishing()
    }

    /// Reads every shard's part (waiting for those not there yet) into the job's figures,
    /// without decoding any record.
    fn read_job(&self, ctx: &StepContext, balancing: bool) -> Result<Job, StepError> {
        let x = &self.exchange;
        let me = x.shard_index();
        let mut job = Job::default();
        // The shard being read: its number, its classes' reader, whether its header and
        // its summary were met, and its synthetic rows so far.
        let mut shard: Option<u32> = None;
        let mut reader = ShardClasses::default();
        let (mut header, mut end, mut rows) = (false, false, 0u64);
        let mut ended = Vec::new();
        x.take_every(ctx, |j, bytes| {
            if shard != Some(j) {
                if let Some(k) = shard {
                    ended.push((k, end));
                }
                shard = Some(j);
                reader = ShardClasses::default();
                (header, end, rows) = (false, false, 0);
            }
            let damaged = |why: &str| x.damaged(j, why);
            let (&tag, rest) = bytes.split_first().ok_or_else(|| damaged("an empty frame"))?;
            if !header {
                let (format, codec_used) = read_header(tag, rest).ok_or_else(|| damaged("it does not begin with mix's header"))?;
                if format != FORMAT || codec_used != codec::BINCODE2 {
                    return Err(damaged(&format!(
                        "it was written by another version of weave (mix part format {format}, codec {codec_used}; this one reads format {FORMAT}, codec {})",
                        codec::BINCODE2
                    )));
                }
                header = true;
                return Ok(());
            }
            if end {
                return Err(damaged("a frame follows the shard's summary"));
            }
            match tag {
                SYNTHETIC => {
                    let (n, classes, _) = synthetic_frame(rest).map_err(|Damaged(why)| damaged(why))?;
                    if balancing {
                        let before = job.synthetic_of.len();
                        reader
                            .read(classes, false, &mut job.synthetic_classes, |c, _| job.synthetic_of.push(c))
                            .map_err(|Damaged(why)| damaged(why))?;
                        if (job.synthetic_of.len() - before) as u64 != n {
                            return Err(damaged("a synthetic batch's classes are not one per record"));
                        }
                    }
                    rows += n;
                    job.synthetic += n;
                }
                END => {
                    let (real, synthetic, classes, real_types, synthetic_types): Summary =
                        codec::decode(rest).ok_or_else(|| damaged("its summary cannot be read"))?;
                    if synthetic != rows {
                        return Err(damaged(&format!(
                            "its summary counts {synthetic} synthetic records, its frames hold {rows}"
                        )));
                    }
                    if j == me {
                        job.own_real = (job.real, real);
                        job.own_synthetic = (job.synthetic - rows, rows);
                    }
                    job.real += real;
                    for (name, count) in classes {
                        let c = job.real_classes.id(ValueRef::Str(&name)) as usize;
                        if job.real_by_class.len() <= c {
                            job.real_by_class.resize(c + 1, 0);
                        }
                        job.real_by_class[c] += count;
                    }
                    for (i, list) in [real_types, synthetic_types].into_iter().enumerate() {
                        for (name, ty) in list {
                            job.types[i].fold(&name, ty);
                        }
                    }
                    end = true;
                }
                _ => return Err(damaged(&format!("a frame of unknown kind {tag}"))),
            }
            Ok(())
        })?;
        if let Some(k) = shard {
            ended.push((k, end));
        }
        // Every shard's part holds a summary (a part with no frame at all is refused too).
        for j in 0..self.exchange_count() {
            if !ended.iter().any(|(k, e)| *k == j && *e) {
                return Err(x.damaged(j, "it ends without the shard's summary"));
            }
        }
        Ok(job)
    }

    fn exchange_count(&self) -> u32 {
        self.exchange.shard_count()
    }

    /// Drops this shard's own synthetic records that were not chosen (`tier` by job
    /// position, [`tiers`]; its own are at `own` in the job's synthetic input), and, in the
    /// last shard, passes on every shard's chosen ones, in shard order, through `pass`.
    /// The last shard reads every part again; another reads its own part again only when
    /// its drops are kept (an exclusion file), and otherwise only counts them. Decodes only
    /// the records it drops or passes on.
    fn replay_synthetic(
        &self,
        ctx: &mut StepContext,
        tier: &[u8],
        own: std::ops::Range<u64>,
        why: &dyn Fn(u8) -> String,
        pass: &mut dyn FnMut(Batch) -> Result<(), StepError>,
    ) -> Result<(), StepError> {
        let x = &self.exchange;
        let me = x.shard_index();
        let last = me + 1 == self.exchange_count();
        if !last && !ctx.keeps_dropped() {
            // Counted in the order their reasons first come, as the records would be.
            let fates = tier.get(own.start as usize..own.end as usize).unwrap_or_default();
            let mut counts: Vec<(u8, u64)> = Vec::new();
            for &t in fates.iter().filter(|t| **t != 0) {
                match counts.iter_mut().find(|(k, _)| *k == t) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((t, 1)),
                }
            }
            for (t, n) in counts {
                ctx.count_dropped(&why(t), n);
            }
            return Ok(());
        }
        // Waiting needs only the run's cancel flag: every part is there by now.
        let waiter = StepContext::new(ctx.step_id().to_owned(), 0, 0, ctx.cancel_flag());
        let mut pos = if last { 0 } else { own.start };
        let mut handle = |j: u32, bytes: &[u8]| -> Result<(), StepError> {
            let Some((&SYNTHETIC, rest)) = bytes.split_first() else { return Ok(()) };
            let (rows, _, records) = synthetic_frame(rest).map_err(|Damaged(why)| x.damaged(j, why))?;
            let start = pos;
            pos += rows;
            if j != me && !last {
                return Ok(());
            }
            let batch: Batch = codec::decode(records)
                .filter(|b: &Batch| b.len() as u64 == rows)
                .ok_or_else(|| x.damaged(j, "a batch of synthetic records cannot be decoded"))?;
            let fate = tier
                .get(start as usize..pos as usize)
                .ok_or_else(|| x.damaged(j, "it holds more records than its summary"))?;
            let keep: Vec<bool> = fate.iter().map(|t| *t == 0).collect();
            if j == me {
                for (row, t) in fate.iter().enumerate().filter(|(_, t)| **t != 0) {
                    ctx.drop_record(&why(*t), || batch.row(row).to_record());
                }
            }
            if last && keep.iter().any(|k| *k) {
                pass(batch.filter(&keep))?;
            }
            Ok(())
        };
        if last { x.take_every(&waiter, &mut handle) } else { x.take_own(|bytes| handle(me, bytes)).map(|_| ()) }
    }
}

impl Mix {
    /// The end of a shard's inputs: publishes its summary, then (unless it only publishes)
    /// makes the job's choice from every shard's part, passes on its own real records kept,
    /// and, in the last shard, every shard's chosen synthetic records.
    pub(super) fn finish_shard(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let Some(mut s) = self.shard.take() else { return Err(StepError::internal("mix: not a shard")) };
        let classes: Vec<(String, u64)> = (0..self.real_classes.len())
            .map(|c| (self.real_classes.name(c as u32).to_owned(), self.real_by_class.get(c).copied().unwrap_or(0)))
            .collect();
        let summary: Summary =
            (self.counts[0], self.counts[1], classes, self.types[0].list.clone(), self.types[1].list.clone());
        s.publish_end(&summary)?;
        if s.publish_only() {
            return Ok(());
        }
        let balancing = self.balance_by.is_some();
        let job = s.read_job(ctx, balancing)?;
        // The part in place may be an earlier run's (a stage that only published): it
        // must be of these records.
        if (job.own_real.1, job.own_synthetic.1) != (self.counts[0], self.counts[1]) {
            return Err(s.exchange.damaged(
                s.exchange.shard_index(),
                &format!(
                    "it counts {} real and {} synthetic records for this shard, whose inputs have {} and {}",
                    job.own_real.1, job.own_synthetic.1, self.counts[0], self.counts[1]
                ),
            ));
        }
        if self.check_schema
            && let Some(problem) = schema_problem(&job.types, [job.real, job.synthetic])
        {
            return Err(mismatch(&problem));
        }
        let seed = self.seed.unwrap_or(ctx.seed());
        let (all, map) = job_classes(&job.real_classes, &job.synthetic_classes);
        let of: Vec<u32> = job.synthetic_of.iter().map(|c| map[*c as usize]).collect();
        let mut avail = vec![0u64; all.len().max(1)];
        if balancing {
            for &c in &of {
                avail[c as usize] += 1;
            }
        } else {
            avail[0] = job.synthetic;
        }
        let mut base = job.real_by_class.clone();
        base.resize(avail.len(), 0);
        let choice = self.choose(job.real, &base, &avail);

        // This shard's real records: all (passed on as they came), or the ones kept.
        let (offset, own) = job.own_real;
        let held_real = std::mem::take(&mut self.held[0]);
        let mut real_out = own;
        if let super::Mode::Replace(_) = self.mode {
            let gone = replaced(seed, job.real, choice.synthetic_out, offset..offset + own);
            let chosen: Vec<bool> = (offset..offset + own).map(|p| !gone.contains(&p)).collect();
            real_out = own - gone.len() as u64;
            self.emit(&held_real, 0, &chosen, &|_| "replaced by synthetic", ctx, out)?;
        }
        let tier = tiers(seed, job.synthetic, &of, &choice);
        let why = |t: u8| choice.why(t).to_owned();
        // The last shard's chosen synthetic records wait (in memory up to a size, then in a
        // temporary file) to be let out one batch at a time by `more`, after this call's
        // output: never the job's chosen records in memory at once.
        let own = job.own_synthetic.0..job.own_synthetic.0 + job.own_synthetic.1;
        let (waiting, source) = (&mut self.waiting, self.source.as_deref());
        s.replay_synthetic(ctx, &tier, own, &why, &mut |b| waiting.push(super::marked(source, &b, 1)?))?;

        let (first, mine) = job.own_synthetic;
        let own_tiers = &tier[first as usize..(first + mine) as usize];
        let last = s.exchange.shard_index() + 1 == s.exchange_count();
        if last {
            self.warn_if_short(&choice, ctx);
        }
        let classes = balancing.then(|| {
            let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for (c, n) in self.real_by_class.iter().enumerate().filter(|(_, n)| **n > 0) {
                by_name.entry(self.real_classes.name(c as u32).to_owned()).or_default().0 += n;
            }
            for (t, c) in own_tiers.iter().zip(&of[first as usize..(first + mine) as usize]) {
                let entry = by_name.entry(all.name(*c).to_owned()).or_default();
                entry.1 += u64::from(*t == 0);
            }
            by_name
        });
        Figures {
            real: (self.counts[0], real_out),
            synthetic: (self.counts[1], own_tiers.iter().filter(|t| **t == 0).count() as u64),
            job: last.then(|| (choice.share(), choice.target)),
            classes,
        }
        .set(ctx);
        self.shard = Some(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use weave_core::{Record, Step, Value};

    /// Builds a mix (`config`) as shard `shard` of a job exchanging in `folder`, or for the
    /// whole input without it; `publish` builds it for a stage that only publishes.
    fn build(config: &str, shard: Option<(u32, u32)>, folder: &std::path::Path, publish: bool) -> Step {
        let k = crate::registry().get("mix").cloned().unwrap();
        let table = weave_core::ConfTable::parse(config).unwrap();
        let mut bc = weave_core::BuildContext::new([], None);
        if let Some((i, n)) = shard {
            bc = bc
                .with_shard(Some(weave_core::Shard::new(i, n).unwrap()))
                .with_exchange([("m".to_owned(), folder.to_path_buf())].into())
                .publishing_only(if publish { ["m".to_owned()].into() } else { Default::default() });
        }
        let p = weave_core::Params::new(table, weave_core::SourceFile::new("t.toml", config), "step", Some("m".into()))
            .with_context(std::sync::Arc::new(bc));
        let step = (k.build)(&p);
        assert!(!p.finish(&k.all_keys()).has_errors());
        step.unwrap()
    }

    /// What a run gave: its output as JSON lines, its drops by reason, and its figures.
    #[derive(Debug)]
    struct Ran {
        rows: Vec<String>,
        dropped: HashMap<String, u64>,
        excluded: Vec<String>,
        stats: HashMap<String, Value>,
    }

    /// Runs a mix over real and synthetic records in batches of `batch` (see the mix tests'
    /// `feed`), keeping its dropped records (as for an exclusion file).
    fn run(step: Step, real: &[Record], synthetic: &[Record], batch: usize) -> Result<Ran, StepError> {
        run_keeping(step, real, synthetic, batch, true)
    }

    /// [`run`], keeping the dropped records or only counting them.
    fn run_keeping(
        step: Step,
        real: &[Record],
        synthetic: &[Record],
        batch: usize,
        keep: bool,
    ) -> Result<Ran, StepError> {
        let Step::Merge(mut m) = step else { panic!("mix is a merge") };
        let mut ctx = StepContext::new("m", 9, 0, Default::default()).keeping_dropped(keep);
        let out = super::super::tests::feed(&mut *m, real, synthetic, batch, &mut ctx)?;
        let rows = out.iter().flat_map(Batch::to_records).map(|r| r.to_string()).collect();
        let excluded = ctx.take_excluded().into_iter().map(|(why, r)| format!("{why}: {r}")).collect();
        Ok(Ran {
            rows,
            dropped: ctx.take_dropped().into_iter().collect(),
            excluded,
            stats: ctx.take_stats().into_iter().collect(),
        })
    }

    /// Real records (labels uneven, one class rare) and synthetic ones (another mix of
    /// labels, and a class no real record has), `n` of each kind.
    fn records(prefix: &str, n: usize, labels: &[&'static str]) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let label = labels[(i * 7919 + i / 3) % labels.len()];
                Record::new().with("id", format!("{prefix}{i}")).with("label", label).with("score", (i % 17) as i64)
            })
            .collect()
    }

    fn int(v: &Value, path: &[&str]) -> u64 {
        let mut v = v;
        for p in path {
            let Value::Map(m) = v else { panic!("{v:?}") };
            v = m.get(p).unwrap();
        }
        let Value::Int(n) = v else { panic!("{v:?}") };
        *n as u64
    }

    /// Every mode, cut into 1 to 4 shards unevenly (a shard without real records, one
    /// without synthetic ones, one with neither), run all at once and stage by stage: the
    /// shards' outputs joined in order are the whole run's, and their drops and figures add
    /// up to its.
    #[test]
    fn shards_give_the_whole_runs_output_in_every_mode() {
        let real = records("r", 500, &["a", "a", "a", "b", "b", "c"]);
        let synthetic = records("s", 800, &["a", "b", "c", "c", "d"]);
        let cases = [
            "source = \"origin\"",
            "max_synthetic_share = 0.3",
            "balance_by = \"label\"",
            "balance_by = \"label\"\nmax_synthetic_share = 0.2",
            "ratio = 0.25",
            "ratio = 0.7",
            "ratio = 0.4\nmax_synthetic_share = 0.5\nbalance_by = \"label\"\nseed = 3",
            "ratio = 0.6\nbalance_by = \"label\"",
            "mode = \"replace\"\nratio = 0.3\nsource = \"origin\"",
        ];
        for config in cases {
            let dir = tempfile::tempdir().unwrap();
            let whole = run(build(config, None, dir.path(), false), &real, &synthetic, 64).unwrap();
            assert!(!whole.rows.is_empty());
            for count in 1..=4u32 {
                let (rc, sc): (Vec<usize>, Vec<usize>) = match count {
                    1 => (vec![0, 500], vec![0, 800]),
                    2 => (vec![0, 120, 500], vec![0, 700, 800]),
                    3 => (vec![0, 0, 300, 500], vec![0, 200, 800, 800]),
                    _ => (vec![0, 10, 10, 400, 500], vec![0, 300, 300, 300, 800]),
                };
                for staged in [false, true].into_iter().filter(|s| !s || count > 1) {
                    let folder = dir.path().join(format!("x-{count}-{staged}"));
                    let part = |i: u32| {
                        let i = i as usize;
                        (real[rc[i]..rc[i + 1]].to_vec(), synthetic[sc[i]..sc[i + 1]].to_vec())
                    };
                    if staged {
                        for i in 0..count {
                            let (r, s) = part(i);
                            let ran = run(build(config, Some((i, count)), &folder, true), &r, &s, 33).unwrap();
                            assert!(
                                ran.rows.is_empty() && ran.dropped.is_empty(),
                                "a stage that publishes passes nothing on"
                            );
                        }
                    }
                    let threads: Vec<_> = (0..count)
                        .map(|i| {
                            let step = build(config, Some((i, count)), &folder, false);
                            let (r, s) = part(i);
                            // Staged, the shards only count their drops (no exclusion file).
                            let keep = !staged;
                            std::thread::spawn(move || run_keeping(step, &r, &s, 17 + i as usize * 40, keep).unwrap())
                        })
                        .collect();
                    let ran: Vec<Ran> = threads.into_iter().map(|t| t.join().unwrap()).collect();
                    let what = format!("`{config}` as {count} shards (staged: {staged})");
                    let joined: Vec<String> = ran.iter().flat_map(|r| r.rows.clone()).collect();
                    assert_eq!(joined, whole.rows, "{what}");
                    let mut dropped: HashMap<String, u64> = HashMap::new();
                    for r in &ran {
                        for (why, n) in &r.dropped {
                            *dropped.entry(why.clone()).or_default() += n;
                        }
                    }
                    assert_eq!(dropped, whole.dropped, "{what}");
                    let mut excluded: Vec<String> = ran.iter().flat_map(|r| r.excluded.clone()).collect();
                    let mut want = if staged { Vec::new() } else { whole.excluded.clone() };
                    excluded.sort();
                    want.sort();
                    assert_eq!(excluded, want, "{what}");
                    for path in [["real", "in"], ["real", "out"], ["synthetic", "in"], ["synthetic", "out"]] {
                        let sum: u64 = ran.iter().map(|r| int(&r.stats[path[0]], &path[1..])).sum();
                        assert_eq!(sum, int(&whole.stats[path[0]], &path[1..]), "{what}: {path:?}");
                    }
                    if let Some(classes) = whole.stats.get("classes") {
                        let Value::Map(m) = classes else { panic!() };
                        for (name, _) in m.iter() {
                            for side in ["real", "synthetic"] {
                                let sum: u64 = ran
                                    .iter()
                                    .filter_map(|r| match r.stats.get("classes") {
                                        Some(Value::Map(c)) => c.get(name.as_str()).map(|v| int(v, &[side])),
                                        _ => None,
                                    })
                                    .sum();
                                assert_eq!(sum, int(classes, &[name.as_str(), side]), "{what}: {name} {side}");
                            }
                        }
                    }
                    // The job's share is the last shard's figure, and only its.
                    let last = ran.last().unwrap();
                    assert_eq!(last.stats.get("synthetic_share"), whole.stats.get("synthetic_share"), "{what}");
                    if count > 1 {
                        assert!(!ran[0].stats.contains_key("synthetic_share"), "{what}");
                    }
                }
            }
        }
    }

    /// The inputs' types and fields are checked over the whole job: a conflict that only
    /// a later shard's records show fails every shard, with the single run's message.
    #[test]
    fn a_schema_mismatch_in_a_later_shard_fails_every_shard_as_the_whole_run() {
        let real = records("r", 40, &["a", "b"]);
        let dir = tempfile::tempdir().unwrap();
        // Each of 2 shards (20 records of each input) fails with the whole run's error.
        let fails_as_the_whole_run = |synthetic: &[Record], folder: &str, says: &str| {
            let whole = run(build("", None, dir.path(), false), &real, synthetic, 8).unwrap_err().to_string();
            assert!(whole.contains(says), "{whole}");
            let folder = dir.path().join(folder);
            let threads: Vec<_> = (0..2usize)
                .map(|i| {
                    let step = build("", Some((i as u32, 2)), &folder, false);
                    let (r, s) = (real[i * 20..][..20].to_vec(), synthetic[i * 20..][..20].to_vec());
                    std::thread::spawn(move || run(step, &r, &s, 8).unwrap_err().to_string())
                })
                .collect();
            for t in threads {
                assert_eq!(t.join().unwrap(), whole);
            }
        };
        // The synthetic records of shard 0 have no score; shard 1's have scores in words.
        let synthetic: Vec<Record> = (0..40)
            .map(|i| {
                let r = Record::new().with("id", format!("s{i}")).with("label", "a");
                if i < 20 { r } else { r.with("score", "high") }
            })
            .collect();
        fails_as_the_whole_run(&synthetic, "x", "`score` is int in the real records and string in the synthetic ones");
        // A field only the later shard's synthetic records have.
        let mut synthetic = records("s", 40, &["a"]);
        synthetic[30] = synthetic[30].clone().with("lable", "x");
        fails_as_the_whole_run(&synthetic, "y", "only the synthetic records have `lable`");
    }

    /// A shard's cache key covers the exchange folder (a key over the whole job's input):
    /// its output depends on the other shards' records.
    #[test]
    fn a_shards_key_names_its_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("0123abcd-of-2");
        let config = |step: Step| match step {
            Step::Merge(m) => String::from_utf8(m.config().as_bytes().to_vec()).unwrap(),
            _ => panic!("mix is a merge"),
        };
        let whole = config(build("ratio = 0.3", None, &folder, false));
        let shard = config(build("ratio = 0.3", Some((1, 2)), &folder, false));
        assert!(!whole.contains("0123abcd-of-2") && shard.contains("0123abcd-of-2"), "{whole} / {shard}");
        assert!(shard.contains(&whole), "{whole} / {shard}");
    }

    /// A part's frames come back as they were written: the header with the format and the
    /// codec, each synthetic batch's classes and records, the summary.
    #[test]
    fn published_frames_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("f");
        let x = Exchange::for_tests(&folder, 0, 2);
        let mut s = MixShard::new(x);
        let batch = Batch::from_records(&[
            Record::new().with("id", "s0").with("label", "b").with("x", 1.5),
            Record::new().with("id", "s1").with("label", "a").with("x", Value::Null),
        ]);
        s.publish_synthetic(&batch, batch.column("label")).unwrap();
        let summary: Summary = (
            3,
            2,
            vec![("a".into(), 2), ("b".into(), 1)],
            vec![("id".into(), DataType::Str)],
            vec![("x".into(), DataType::Float)],
        );
        s.publish_end(&summary).unwrap();
        let mut frames = Vec::new();
        s.exchange
            .take_own(|b| {
                frames.push(b.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0][..2], [HEADER, FORMAT]);
        assert_eq!(u32::from_le_bytes(frames[0][2..6].try_into().unwrap()), codec::BINCODE2);
        assert_eq!(frames[1][0], SYNTHETIC);
        let (rows, classes, records) = synthetic_frame(&frames[1][1..]).unwrap();
        assert_eq!(rows, 2);
        let mut known = Classes::default();
        let mut got = Vec::new();
        ShardClasses::default().read(classes, false, &mut known, |c, _| got.push(c)).unwrap();
        assert_eq!((got, known.name(0), known.name(1)), (vec![0, 1], "b", "a"));
        assert_eq!(codec::decode::<Batch>(records), Some(batch));
        assert_eq!(frames[2][0], END);
        assert_eq!(codec::decode::<Summary>(&frames[2][1..]), Some(summary));
    }

    /// A part that cannot be read is named, with what is wrong with it.
    #[test]
    fn a_damaged_part_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("d");
        let real = records("r", 10, &["a"]);
        let synthetic = records("s", 10, &["a"]);
        for i in 0..2u32 {
            run(build("", Some((i, 2)), &folder, true), &real, &synthetic, 4).unwrap();
        }
        let part = folder.join("part-00001-of-00002.keys");
        let good = std::fs::read(&part).unwrap();
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: [(Damage, &str); 3] = [
            // The header's format number.
            (Box::new(|b: &mut Vec<u8>| b[13] = 9), "another version of weave (mix part format 9"),
            // A synthetic frame's records (past its tag, counts and no classes).
            (
                Box::new(|b: &mut Vec<u8>| {
                    let len = u64::from_le_bytes(b[18..26].try_into().unwrap()) as usize;
                    b[29..26 + len].fill(0xff);
                }),
                "cannot be decoded",
            ),
            // The summary's tag.
            (
                Box::new(|b: &mut Vec<u8>| {
                    let at = b.iter().rposition(|x| *x == END).unwrap();
                    b[at] = b'Z';
                }),
                "a frame of unknown kind",
            ),
        ];
        for (damage, says) in cases {
            let mut bytes = good.clone();
            damage(&mut bytes);
            std::fs::write(&part, &bytes).unwrap();
            // The last shard reads every part's records.
            let err = run(build("", Some((1, 2)), &folder, false), &real, &synthetic, 4).unwrap_err().to_string();
            assert!(err.contains(&*part.to_string_lossy()) && err.contains(says), "{err}");
        }
        // A part whose counts are not its shard's records.
        std::fs::write(&part, &good).unwrap();
        let err = run(build("", Some((1, 2)), &folder, false), &real[..9], &synthetic, 4).unwrap_err().to_string();
        assert!(
            err.contains("it counts 10 real and 10 synthetic records for this shard, whose inputs have 9 and 10"),
            "{err}"
        );
    }
}
