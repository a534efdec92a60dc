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
    let mut r = Reader { bytes, at: 0 };
    let rows = r.varint()?;
    let n = r.size()?;
    let classes = r.take(n)?;
    Ok((rows, classes, &bytes[r.at..]))
}

impl MixShard {
    pub(super) fn new(exchange: Exchange) -> MixShard {
        MixShard { exchange, frames: ClassFrames::default(), started: false }
    }

    /// Whether this run only publishes the shard's part (`weave run --stage`, a stage
    /// before the one that decides): it passes nothing on.
    pub(super) fn publish_only(&self) -> bool {
        self.exchange.publish_only()
    }

    fn start(&mut self) -> Result<(), StepError> {
        if !self.started {
            self.started = true;
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
                if tag != HEADER || rest.len() != 5 {
                    return Err(damaged("it does not begin with mix's header"));
                }
                let codec_used = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]);
                if rest[0] != FORMAT || codec_used != codec::BINCODE2 {
                    return Err(damaged(&format!(
                        "it was written by another version of weave (mix part format {}, codec {codec_used}; this one reads format {FORMAT}, codec {})",
                        rest[0],
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

    /// Reads every shard's synthetic records again: drops this shard's own that were not
    /// chosen (`tier` by job position, [`tiers`]), and, in the last shard, passes on every
    /// shard's chosen ones, in shard order, through `pass`. Decodes only the records it
    /// drops or passes on.
    fn replay_synthetic(
        &self,
        ctx: &mut StepContext,
        tier: &[u8],
        why: &dyn Fn(u8) -> String,
        pass: &mut dyn FnMut(Batch) -> Result<(), StepError>,
    ) -> Result<(), StepError> {
        let x = &self.exchange;
        let me = x.shard_index();
        let last = me + 1 == self.exchange_count();
        // Waiting needs only the run's cancel flag: every part is there by now.
        let waiter = StepContext::new(ctx.step_id().to_owned(), 0, 0, ctx.cancel_flag());
        let mut pos = 0u64;
        x.take_every(&waiter, |j, bytes| {
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
            let fate = tier.get(start as usize..pos as usize).ok_or_else(|| x.damaged(j, "it holds more records than its summary"))?;
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
        })
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
        let mut passed = Vec::new();
        s.replay_synthetic(ctx, &tier, &why, &mut |b| {
            passed.push(b);
            Ok(())
        })?;
        for b in passed {
            out.push(self.mark(&b, 1)?);
        }

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
