//! The dataset steps that need the whole dataset, run as shards of a job: a stratified
//! `split` or `sample` (`fraction`), and a sample of `n` records. They exchange what they
//! need through the step's exchange folder (see `crate::exchange`), so that each shard
//! decides on its own records exactly as the single process would.
//!
//! - A **stratified assignment** (a stratified split, a stratified fraction) gives a record
//!   a group from its class's counts so far and its own random number: a shard publishes,
//!   per record, its class and its random key; before deciding on its own records it
//!   replays every earlier shard's through the same [`Stratifier`], as the single process
//!   would have assigned them by then ([`Replay`]).
//! - A **sample of `n`** keeps the `n` smallest keys of the job, a key being a function of
//!   the seed and the record's position in the whole input: a shard publishes how many
//!   records it has (and, stratified, each one's class), and, once every shard's part is
//!   there, works out the job's winners from the positions alone ([`select`]).
//!
//! The published frames: a shard's classes are numbered in its own order of first
//! appearance, and each frame names the classes new in it, so a reader maps them onto its
//! own numbering (the job's order of first appearance, read shard by shard).

use std::collections::{BinaryHeap, HashSet};

use weave_core::{Batch, Column, StepContext, StepError, ValueRef};

use super::{Classes, Stratifier, position_key, salt, unit};
use crate::exchange::Exchange;

/// Appends `v` as an unsigned LEB128 varint (one byte for a class id under 128).
pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A published frame that cannot be read: what is wrong with it. The caller names the file
/// ([`Exchange::damaged`]).
#[derive(Debug)]
pub(super) struct Damaged(pub(super) &'static str);

/// Reads a frame's bytes.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes` from their start.
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// Whether every byte has been read.
    pub(super) fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub(super) fn varint(&mut self) -> Result<u64, Damaged> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at).ok_or(Damaged("a frame ends early"))?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Damaged("a number runs on"))
    }

    pub(super) fn size(&mut self) -> Result<usize, Damaged> {
        usize::try_from(self.varint()?).map_err(|_| Damaged("a size is out of range"))
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(Damaged("a frame ends early"))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
}

/// One batch's classes (and, for a stratified assignment, its random keys) as a shard
/// publishes them.
#[derive(Debug, Default)]
pub(super) struct ClassFrames {
    /// The shard's own numbering of the classes it has published.
    classes: Classes,
}

impl ClassFrames {
    /// The frame of one batch: the classes new in it (a count, then each name's length
    /// and bytes), the row count, each row's class (varints), then, with `keys`, each
    /// row's key (8 bytes, little-endian).
    pub(super) fn frame(&mut self, col: &Column, keys: Option<&[u64]>) -> Vec<u8> {
        let known = self.classes.len();
        let ids: Vec<u32> = (0..col.len()).map(|row| self.classes.id(col.get(row))).collect();
        let mut out = Vec::with_capacity(ids.len() * 9 + 16);
        put_varint(&mut out, (self.classes.len() - known) as u64);
        for id in known..self.classes.len() {
            let name = self.classes.name(id as u32);
            put_varint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
        }
        put_varint(&mut out, ids.len() as u64);
        for id in &ids {
            put_varint(&mut out, u64::from(*id));
        }
        for k in keys.into_iter().flatten() {
            out.extend_from_slice(&k.to_le_bytes());
        }
        out
    }
}

/// Reads one shard's frames back, its classes mapped onto the reader's numbering.
#[derive(Debug, Default)]
pub(super) struct ShardClasses {
    /// The reader's id of each of the shard's classes, by the shard's id.
    map: Vec<u32>,
}

impl ShardClasses {
    /// Hands `row(class, key)` each row of a frame in order (the key is 0 without
    /// `keys`); the classes new in it are added to `classes` first, in the shard's order.
    pub(super) fn read(
        &mut self,
        bytes: &[u8],
        keys: bool,
        classes: &mut Classes,
        mut row: impl FnMut(u32, u64),
    ) -> Result<(), Damaged> {
        let mut r = Reader { bytes, at: 0 };
        let new = r.varint()?;
        for _ in 0..new {
            let len = r.size()?;
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| Damaged("a class name is not UTF-8"))?;
            self.map.push(classes.id(ValueRef::Str(name)));
        }
        let rows = r.size()?;
        let mut ids = Vec::with_capacity(rows.min(bytes.len()));
        for _ in 0..rows {
            let local = r.size()?;
            ids.push(*self.map.get(local).ok_or(Damaged("a record's class was never named"))?);
        }
        let key_bytes = if keys { r.take(rows.checked_mul(8).ok_or(Damaged("a size is out of range"))?)? } else { &[] };
        if r.at != bytes.len() {
            return Err(Damaged("a frame runs on past its records"));
        }
        for (i, id) in ids.into_iter().enumerate() {
            let key =
                if keys { u64::from_le_bytes(key_bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default()) } else { 0 };
            row(id, key);
        }
        Ok(())
    }
}

/// A stratified assignment's side of a sharded run: publishes each batch's classes and
/// keys, replays the earlier shards' through the step's [`Stratifier`] before the shard
/// decides, and holds the shard's batches until it can.
#[derive(Debug)]
pub(super) struct Replay {
    exchange: Exchange,
    frames: ClassFrames,
    warmed: bool,
    held: crate::exchange::Held<Vec<u64>>,
    /// The stratifier's counts once the earlier shards were replayed, so that the step's
    /// figures can be the shard's own.
    before: Vec<(u64, Vec<u64>)>,
}

/// What [`Replay::admit`] did with a batch.
pub(super) enum Admit {
    /// Decide on it now: the earlier shards are replayed.
    Decide,
    /// It is held (the earlier shards' parts are not all there yet), or this run only
    /// publishes.
    Wait,
}

impl Replay {
    pub(super) fn new(exchange: Exchange) -> Replay {
        Replay {
            exchange,
            frames: ClassFrames::default(),
            warmed: false,
            held: crate::exchange::Held::default(),
            before: Vec::new(),
        }
    }

    pub(super) fn exchange(&self) -> &Exchange {
        &self.exchange
    }

    /// Publishes `batch`'s classes (`col`) and keys, then says whether the step decides
    /// on it now; when not, it is held (but in a run that only publishes).
    pub(super) fn admit(
        &mut self,
        batch: &Batch,
        col: &Column,
        keys: &[u64],
        ctx: &StepContext,
        classes: &mut Classes,
        stratifier: &mut Stratifier,
    ) -> Result<Admit, StepError> {
        self.exchange.publish(&self.frames.frame(col, Some(keys)))?;
        if self.exchange.publish_only() {
            return Ok(Admit::Wait);
        }
        if !self.warmed && self.held.is_empty() && self.exchange.earlier_ready() {
            self.warm(ctx, classes, stratifier)?;
        }
        if self.warmed {
            return Ok(Admit::Decide);
        }
        self.held.push(batch.clone(), keys.to_vec())?;
        Ok(Admit::Wait)
    }

    /// The shard's input has ended: puts its part in place, and waits for the earlier
    /// shards' (when it held its batches) and replays them. The held batches are then
    /// decided on in order, as [`Replay::next_held`] lets them out (none in a run that
    /// only publishes).
    pub(super) fn finish(
        &mut self,
        ctx: &StepContext,
        classes: &mut Classes,
        stratifier: &mut Stratifier,
    ) -> Result<(), StepError> {
        self.exchange.finish_publishing()?;
        if self.exchange.publish_only() {
            return Ok(());
        }
        if !self.warmed {
            self.warm(ctx, classes, stratifier)?;
        }
        Ok(())
    }

    /// Whether batches are held, to decide on after [`Replay::finish`].
    pub(super) fn holds(&self) -> bool {
        !self.held.is_empty() && !self.exchange.publish_only()
    }

    /// The next held batch, with its keys, once [`Replay::finish`] has replayed the
    /// earlier shards.
    pub(super) fn next_held(&mut self) -> Result<Option<(Batch, Vec<u64>)>, StepError> {
        if self.exchange.publish_only() {
            return Ok(None);
        }
        self.held.pop()
    }

    /// Assigns every earlier shard's records, in order, as the single process would have
    /// before this shard's first.
    fn warm(&mut self, ctx: &StepContext, classes: &mut Classes, stratifier: &mut Stratifier) -> Result<(), StepError> {
        let mut shard = None;
        let mut reader = ShardClasses::default();
        let x = &self.exchange;
        x.take_earlier_each(ctx, |j, bytes| {
            if shard != Some(j) {
                shard = Some(j);
                reader = ShardClasses::default();
            }
            reader
                .read(bytes, true, classes, |class, key| {
                    stratifier.assign(class, unit(key));
                })
                .map_err(|Damaged(why)| x.damaged(j, why))
        })?;
        self.before = stratifier.counts.clone();
        self.warmed = true;
        Ok(())
    }

    /// The stratifier's counts of this shard's records alone, by class (classes the shard
    /// has no record of are left out): its figures.
    pub(super) fn own_counts<'a>(&'a self, stratifier: &'a Stratifier) -> impl Iterator<Item = (u32, Vec<u64>)> + 'a {
        stratifier.counts.iter().enumerate().filter_map(|(c, (n, counts))| {
            let (n0, c0) = self.before.get(c).map_or((0, &[][..]), |(n, c)| (*n, c.as_slice()));
            (*n > n0).then(|| {
                let own = counts.iter().enumerate().map(|(j, v)| v - c0.get(j).copied().unwrap_or(0)).collect();
                (c as u32, own)
            })
        })
    }
}

/// What a shard of a sample of `n` keeps: the job's winners among its positions.
#[derive(Debug)]
pub(super) struct Selection {
    /// The global position of the shard's first record.
    pub(super) offset: u64,
    /// The winners' global positions that are this shard's.
    pub(super) chosen: HashSet<u64>,
    /// Every class, numbered in the job's order of first appearance (stratified only).
    pub(super) classes: Classes,
}

/// What a shard of a sample of `n` publishes for one batch: its row count (8 bytes), or,
/// stratified, its classes ([`ClassFrames`]).
pub(super) fn count_frame(rows: usize) -> [u8; 8] {
    (rows as u64).to_le_bytes()
}

/// Works out, once every shard's part is there, the job's sample of `n`: the `n` smallest
/// keys of all the positions (per class the share [`super::sample`] gives it, when
/// `stratified`), as the single process's reservoir chooses them, and returns the
/// winners that are this shard's. Costs a key per record of the job (no input is read
/// again: a key is the seed and the position); stratified, it reads every shard's classes
/// (about a byte a record).
pub(super) fn select(
    x: &Exchange,
    ctx: &StepContext,
    n: usize,
    stratified: bool,
    seed: u64,
    quotas: impl FnOnce(&[u64], u64) -> Vec<u64>,
) -> Result<Selection, StepError> {
    let me = x.shard_index();
    let mut classes = Classes::default();
    let mut heaps: Vec<BinaryHeap<(u64, u64)>> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let (mut offset, mut own) = (0u64, 0u64);
    let mut position = 0u64;
    let push = |heaps: &mut Vec<BinaryHeap<(u64, u64)>>, counts: &mut Vec<u64>, class: usize, p: u64| {
        if heaps.len() <= class {
            heaps.resize_with(class + 1, BinaryHeap::new);
            counts.resize(class + 1, 0);
        }
        counts[class] += 1;
        let key = position_key(seed, salt::SAMPLE, p);
        let heap = &mut heaps[class];
        // The single process's rule: a later position with an equal key does not enter.
        if heap.len() < n {
            heap.push((key, p));
        } else if heap.peek().is_some_and(|top| key < top.0) {
            heap.pop();
            heap.push((key, p));
        }
    };
    let mut shard = None;
    let mut reader = ShardClasses::default();
    x.take_every(ctx, |j, bytes| {
        if shard != Some(j) {
            shard = Some(j);
            reader = ShardClasses::default();
            if j == me {
                offset = position;
            }
        }
        let start = position;
        if stratified {
            reader
                .read(bytes, false, &mut classes, |class, _| {
                    push(&mut heaps, &mut counts, class as usize, position);
                    position += 1;
                })
                .map_err(|Damaged(why)| x.damaged(j, why))?;
        } else {
            let rows: [u8; 8] = bytes.try_into().map_err(|_| x.damaged(j, "a record count is not 8 bytes"))?;
            for p in position..position + u64::from_le_bytes(rows) {
                push(&mut heaps, &mut counts, 0, p);
            }
            position += u64::from_le_bytes(rows);
        }
        if j == me {
            own += position - start;
        }
        Ok(())
    })?;
    let total: u64 = counts.iter().sum();
    let quotas = if stratified { quotas(&counts, (n as u64).min(total)) } else { vec![n as u64; heaps.len()] };
    let mine = offset..offset + own;
    let mut chosen = HashSet::new();
    for (heap, quota) in heaps.into_iter().zip(&quotas) {
        let mut entries = heap.into_sorted_vec();
        entries.truncate(*quota as usize);
        chosen.extend(entries.into_iter().map(|(_, p)| p).filter(|p| mine.contains(p)));
    }
    Ok(Selection { offset, chosen, classes })
}

impl<'a> Reader<'a> {
    /// The bytes not read yet (a frame's last part, whose length is the frame's rest).
    pub(super) fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::Record;

    #[test]
    fn class_frames_come_back_in_the_readers_numbering() {
        let batch = |labels: &[&str]| {
            Batch::from_records(&labels.iter().map(|l| Record::new().with("label", *l)).collect::<Vec<_>>())
        };
        let mut frames = ClassFrames::default();
        let one = frames.frame(batch(&["b", "a", "b"]).column("label").unwrap(), Some(&[1, 2, 3]));
        let two = frames.frame(batch(&["c", "a"]).column("label").unwrap(), Some(&[4, u64::MAX]));
        // The reader met `a` first (another shard's record).
        let mut classes = Classes::default();
        classes.id(ValueRef::Str("a"));
        let mut reader = ShardClasses::default();
        let mut rows = Vec::new();
        for f in [&one, &two] {
            reader.read(f, true, &mut classes, |c, k| rows.push((c, k))).unwrap();
        }
        assert_eq!(rows, [(1, 1), (0, 2), (1, 3), (2, 4), (0, u64::MAX)]);
        assert_eq!((classes.name(1), classes.name(2)), ("b", "c"));
        // A frame cut short, or with bytes left over, is damaged, not misread.
        for bad in [&one[..one.len() - 1], &[one.as_slice(), &[0]].concat()[..]] {
            let Damaged(why) = ShardClasses::default().read(bad, true, &mut Classes::default(), |_, _| {}).unwrap_err();
            assert!(why.contains("early") || why.contains("runs on"), "{why}");
        }
    }

    /// Builds step `kind` (`config`) as shard `shard` of `count` exchanging in `folder`,
    /// or for the whole input without `count`; `publish` builds it for a stage that only
    /// publishes.
    fn build(
        kind: &str,
        config: &str,
        shard: Option<(u32, u32)>,
        folder: &std::path::Path,
        publish: bool,
    ) -> weave_core::Step {
        let k = crate::registry().get(kind).cloned().unwrap();
        let table = weave_core::ConfTable::parse(config).unwrap();
        let mut bc = weave_core::BuildContext::new([], None);
        if let Some((i, n)) = shard {
            bc = bc
                .with_shard(Some(weave_core::Shard::new(i, n).unwrap()))
                .with_exchange([("s".to_owned(), folder.to_path_buf())].into())
                .publishing_only(if publish { ["s".to_owned()].into() } else { Default::default() });
        }
        let p = weave_core::Params::new(table, weave_core::SourceFile::new("t.toml", config), "step", Some("s".into()))
            .with_context(std::sync::Arc::new(bc));
        let step = (k.build)(&p);
        assert!(!p.finish(&k.all_keys()).has_errors());
        step.unwrap()
    }

    /// Runs a stateful step over `records` in batches of `batch` and returns its output as
    /// JSON lines, and its stats.
    fn run(step: weave_core::Step, records: &[Record], batch: usize) -> (Vec<String>, String) {
        let weave_core::Step::StatefulTransform(mut t) = step else { panic!("stateful") };
        let mut ctx = StepContext::new("s", 5, 0, Default::default());
        let mut out = Vec::new();
        for chunk in records.chunks(batch.max(1)) {
            t.process(&Batch::from_records(chunk), &mut ctx, &mut out).unwrap();
        }
        crate::tests::finish(&mut *t, &mut ctx, &mut out).unwrap();
        let rows = out.iter().flat_map(Batch::to_records).map(|r| r.to_string()).collect();
        (rows, format!("{:?}", ctx.take_stats()))
    }

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let label = match (i * 7919) % 13 {
                    0 => "rare",
                    1..=4 => "middle",
                    _ => "common",
                };
                Record::new().with("id", i as i64).with("label", label).with("text", format!("text {}", i * 31 % 97))
            })
            .collect()
    }

    /// Every mode that exchanges, cut into 1 to 4 shards unevenly (one of them empty),
    /// run all at once and stage by stage: the shards' outputs in order are the whole
    /// run's.
    #[test]
    fn shards_give_the_whole_runs_output_in_every_mode() {
        let input = records(2000);
        let cases = [
            ("sample", "n = 150"),
            ("sample", "n = 5000"),
            ("sample", "n = 101\nstratify_by = \"label\"\nseed = 4"),
            ("sample", "fraction = 0.3\nstratify_by = \"label\""),
            ("sample", "fraction = 0.3\nstratify_by = \"label\"\nkey = [\"text\"]"),
            ("split", "fractions = { train = 0.7, dev = 0.2, test = 0.1 }\nstratify_by = \"label\""),
        ];
        for (kind, config) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (whole, _) = run(build(kind, config, None, dir.path(), false), &input, 64);
            assert!(!whole.is_empty());
            for count in 1..=4u32 {
                // Uneven cuts; with 3 and 4 shards, one shard has no input.
                let cuts: Vec<usize> = match count {
                    1 => vec![0, 2000],
                    2 => vec![0, 1500, 2000],
                    3 => vec![0, 700, 700, 2000],
                    _ => vec![0, 10, 1200, 2000, 2000],
                };
                // One shard of one is the whole run, with nothing to exchange.
                for staged in [false, true].into_iter().filter(|s| !s || count > 1) {
                    let folder = dir.path().join(format!("x-{count}-{staged}"));
                    if staged {
                        for i in 0..count {
                            let part = &input[cuts[i as usize]..cuts[i as usize + 1]];
                            let (out, _) = run(build(kind, config, Some((i, count)), &folder, true), part, 33);
                            assert!(out.is_empty(), "a stage that publishes passes nothing on");
                        }
                    }
                    let threads: Vec<_> = (0..count)
                        .map(|i| {
                            let step = build(kind, config, Some((i, count)), &folder, false);
                            let part = input[cuts[i as usize]..cuts[i as usize + 1]].to_vec();
                            std::thread::spawn(move || run(step, &part, 17 + i as usize * 40).0)
                        })
                        .collect();
                    let joined: Vec<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
                    assert_eq!(joined, whole, "{kind} `{config}` as {count} shards (staged: {staged})");
                }
            }
        }
    }

    /// A shard that held its batches (started before the earlier shard's keys were out)
    /// lets them out one a call after its input ends, not all at once: what it held need
    /// never be in memory whole.
    #[test]
    fn a_shard_that_held_its_batches_lets_them_out_one_a_call() {
        let input = records(400);
        let cases = [
            ("dedup", "fields = [\"text\"]"),
            ("near_dedup", "fields = [\"text\"]"),
            ("validate", "checks = [{ check = \"uniqueness\", fields = [\"text\"] }]"),
            ("split", "fractions = { train = 0.7, test = 0.3 }\nstratify_by = \"label\""),
            ("sample", "fraction = 0.3\nstratify_by = \"label\""),
        ];
        for (kind, config) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (whole, _) = run(build(kind, config, None, dir.path(), false), &input, 40);
            let folder = dir.path().join("x");
            let weave_core::Step::StatefulTransform(mut one) = build(kind, config, Some((1, 2)), &folder, false) else {
                panic!("stateful")
            };
            let mut ctx = StepContext::new("s", 5, 0, Default::default());
            let mut out = Vec::new();
            for chunk in input[100..].chunks(40) {
                one.process(&Batch::from_records(chunk), &mut ctx, &mut out).unwrap();
            }
            assert!(out.is_empty(), "{kind}: shard 1 holds its batches while shard 0's keys are not out");
            let (first, _) = run(build(kind, config, Some((0, 2)), &folder, false), &input[..100], 40);
            one.finish(&mut ctx, &mut out).unwrap();
            assert!(out.is_empty(), "{kind}: nothing let out at once");
            let mut calls = 0;
            loop {
                let before = out.len();
                let again = one.more(&mut ctx, &mut out).unwrap();
                assert!(out.len() - before <= 1, "{kind}: one batch a call");
                calls += 1;
                if !again {
                    break;
                }
            }
            assert_eq!(calls, 8, "{kind}: a call per held batch");
            let rows: Vec<String> = out.iter().flat_map(Batch::to_records).map(|r| r.to_string()).collect();
            let joined: Vec<String> = first.into_iter().chain(rows).collect();
            assert_eq!(joined, whole, "{kind}: the shards' output is the whole run's");
        }
    }

    #[test]
    fn a_shards_figures_are_its_own() {
        let input = records(600);
        let dir = tempfile::tempdir().unwrap();
        let config = "n = 60\nstratify_by = \"label\"";
        let (_, whole) = run(build("sample", config, None, dir.path(), false), &input, 50);
        assert!(whole.contains("\"seen\", Int(600)") && whole.contains("\"kept\", Int(60)"), "{whole}");
        let folder = dir.path().join("f");
        let threads: Vec<_> = [(0, &input[..200]), (1, &input[200..])]
            .into_iter()
            .map(|(i, part)| {
                let step = build("sample", config, Some((i, 2)), &folder, false);
                let part = part.to_vec();
                std::thread::spawn(move || run(step, &part, 50).1)
            })
            .collect();
        let stats: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(stats[0].contains("\"seen\", Int(200)"), "{}", stats[0]);
        assert!(stats[1].contains("\"seen\", Int(400)"), "{}", stats[1]);
        let kept = |s: &str| -> i64 {
            let at = s.find("\"kept\", Int(").unwrap() + "\"kept\", Int(".len();
            s[at..].split(')').next().unwrap().parse().unwrap()
        };
        assert_eq!(kept(&stats[0]) + kept(&stats[1]), 60, "{stats:?}");
    }
}
