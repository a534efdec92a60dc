//! The `near_dedup` step: drops records whose text is a near duplicate of an earlier
//! kept record's, by MinHash signatures, an LSH band index, and a check of each candidate
//! against its signature.
//!
//! # What it computes
//!
//! A record's text (its `fields`, joined by a line break) is normalised (lowercased,
//! punctuation read as a word break, whitespace collapsed: each optional) and cut into
//! shingles: runs of `shingle_size` consecutive words, or characters. The Jaccard
//! similarity of two records is that of their shingle sets. A record is dropped when its
//! estimated similarity to a record kept earlier is at least `threshold`; otherwise it is
//! kept and indexed. So the first record of each cluster is kept, in input order, and only
//! kept records are compared against (a record near a dropped one, but not near the kept
//! one, is kept: as `datasketch`-style pipelines do).
//!
//! # Design
//!
//! - **Signature.** `bands × rows` (P) min-hashes per record. Each shingle is hashed once
//!   to 32 bits without allocating (words are hashed in place, 8 bytes at a time; a rolling
//!   polynomial hash combines the `shingle_size` words or characters in O(1) per shingle).
//!   Permutation `i` is the multiply-add-shift hash `(a_i·x + b_i) >> 32` (mod 2^64; a
//!   strongly universal family), computed in 32-bit lanes so that the loop over the P
//!   permutations vectorises; it is compiled for AVX2 and SSE4.1 as well as the x86-64
//!   baseline and the best one is chosen at run time (`multiversion`), which makes it
//!   several times faster than the baseline's SSE2 alone. The `a_i, b_i` come from a fixed
//!   seed, so a configuration always gives the same output.
//! - **Index.** One table per band, open addressing with linear probing: a slot is one
//!   `u64`, the band's 32-bit fingerprint and the 32-bit id of a kept record. The home slot
//!   comes from the fingerprint (`fp · capacity >> 32`), so growing (×1.5 when 80% full)
//!   needs nothing but the slots. A fingerprint shared by two different band values only
//!   costs one extra candidate check.
//! - **Check.** Candidates (the kept records that share a band) are compared with the
//!   record's signature: the share of equal min-hashes estimates the Jaccard similarity.
//!   Signatures are kept as the low 16 bits of each min-hash (two different min-hashes
//!   agree by chance 1 time in 65,536: negligible next to the estimate's own spread).
//! - **Per batch**, in four passes: signatures, in parallel over chunks of 256 records;
//!   look-ups in the index of earlier batches, in parallel over bands (within a band no
//!   look-up depends on another, so their cache misses overlap: a table is tens of
//!   megabytes and each look-up a miss); the decisions, in input order, against those
//!   candidates and against a small index of the batch's own kept records; and the kept
//!   records added to the index, in parallel over bands. The parallel passes are rayon
//!   iterators, and the step says so (`StepInfo::parallel`): the executor makes its calls
//!   on the run's worker pool, so they use `max_concurrent` threads, as the rest of the run
//!   does. Only the decisions depend on order, and they are made in order, so the output
//!   is the same whatever the thread count or batch boundaries.
//! - **Memory.** The index lives in memory: 8 bytes per slot at a load of 53–80%, so
//!   10–15 bytes per band per kept record (160–240 bytes with the default 16 bands).
//!   Signatures (2·P bytes: 224 bytes by default) are appended to an unnamed temporary file
//!   (in the system's temporary folder, `TMPDIR`) once 1 MiB of them has gathered, and read
//!   back with a positioned read for each candidate checked; only the last ≤ 1 MiB stays in
//!   memory. Per batch, the step holds (2·P + 4·bands) bytes per record of the batch.
//!
//! Measured by `cargo xtask bench near_dedup` (1,000,000 generated records of about 450
//! bytes, 10% of them planted near duplicates, default keys; release build on a 2-core VM
//! shared with other builds, load 3–11, three runs of three children each): 5.9–6.3 µs of
//! CPU time per record, all threads (the exact `dedup` step: 0.8–0.9 µs); 49,000–118,000
//! records/s from generator to sink as the load varied (167,000–219,000 in single runs at
//! quieter moments); peak RSS 343–354 MB (the generator and sink alone: 28–30 MB). Of
//! that, the index is 207 MB: 16 tables of 1,614,250 slots for 902,114 kept records, 229
//! bytes per kept record; the rest is the generator, the batches in flight, old tables
//! while they are regrown, and memory the allocator then used (mimalloc) kept once they were
//! freed (with `MIMALLOC_PURGE_DELAY=0` the peak was 286 MB; the binary has used the
//! system allocator since, which returns it). Recall 97.6% on the 100,284 plants
//! (all at similarity ≥ 0.8 by exact Jaccard), and no other record dropped.
//!
//! # Accuracy
//!
//! With 16 bands of 7 rows, a pair at similarity 0.8 shares a band with probability 0.98,
//! at 0.7 with 0.75, at 0.5 with 0.12; the check then keeps the decision close to the
//! threshold: the estimate from 112 min-hashes has a standard deviation of about 0.04 near
//! 0.8, so pairs just above the threshold are found about half of the time, pairs at 0.85
//! 93% of the time, pairs at 0.9 or more almost always, and pairs at 0.7 pass less than 1% of
//! the time. The quality test below measures recall and precision on a generated corpus
//! against the exact Jaccard similarities.
//!
//! A corpus of many records that are all similar to one another without being near
//! duplicates (templated text at similarity 0.7–0.8) makes every pair a candidate: the
//! work then grows with the square of the records kept.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use rayon::prelude::*;
use weave_core::rng::murmur_mix;
use weave_core::{
    Batch, CanonicalConfig, Column, Diagnostic, Params, Prepare, Prepared, Rejected, Shape, StatefulTransform, Step,
    StepContext, StepError, StepInfo, StepKind, StrColumn, ValueRef,
};

use crate::text::lowercase_into;

/// The `near_dedup` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "near_dedup",
        Shape::StatefulTransform,
        "drop records whose text is a near duplicate (MinHash + LSH, Jaccard similarity ≥ threshold) of an earlier record's",
        ["fields", "shingle", "shingle_size", "bands", "rows", "threshold", "normalize"],
        build,
    )
});

const NORMALIZE: &[&str] = &["lowercase", "strip_punctuation", "collapse_whitespace"];
const DEFAULT_BANDS: u64 = 16;
const DEFAULT_ROWS: u64 = 7;
const DEFAULT_THRESHOLD: f64 = 0.8;
const DEFAULT_SHINGLE_SIZE: u64 = 5;
/// A longer shingle makes nearly every edit a different document; the cap also bounds the
/// rolling hash's ring buffer.
const MAX_SHINGLE_SIZE: u64 = 100;
/// The signature is computed per record and held per batch record: 1,024 permutations is
/// 4 KiB per record in flight and far more accuracy than any threshold needs.
const MAX_PERMUTATIONS: u64 = 1024;
/// How many records ahead a band's home slots are read, so that its cache misses overlap.
const LOOK_AHEAD: usize = 8;
/// Records per parallel task when signing a batch.
const TASK_RECORDS: usize = 256;
/// Signature bytes gathered in memory before they are appended to the spill file.
const SPILL_BYTES: usize = 1 << 20;
/// The seed of the permutations: fixed, so that the output depends on the keys only.
const PERMUTATION_SEED: u64 = 0x6e65_6172_5f64_6564;
/// Slot ids are stored plus one (0 marks an empty slot), so the last id is `u32::MAX - 1`.
const MAX_KEPT: usize = u32::MAX as usize - 1;

/// How a text is cut into shingles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Word,
    Char,
}

/// Drops records whose text is a near duplicate of an earlier kept record's (estimated
/// Jaccard similarity of their shingle sets at least the threshold), counting them as
/// `near duplicate`. See the module documentation for the design and its memory use.
#[derive(Debug)]
pub struct NearDedup {
    /// The fields and the signer: the step's preparation, run ahead on the worker pool.
    signing: Arc<Signing>,
    /// Equal min-hashes needed to call a pair near duplicates: `ceil(threshold · P)`.
    min_matches: usize,
    config: CanonicalConfig,
    /// The kept records of earlier batches, by band.
    index: Vec<BandTable>,
    /// The kept records of the current batch, by band (small, so it stays in the cache).
    recent: Vec<BandTable>,
    store: SignatureStore,
    /// Per band: (record of the batch, id of a kept record) sharing that band, by record.
    found: Vec<Vec<(u32, u32)>>,
    /// Rows of the batch kept (and given ids), in order.
    kept_rows: Vec<usize>,
    candidates: Vec<u32>,
    totals: Totals,
    /// In a shard of a job: the signatures exchanged with the other shards, whether the
    /// earlier shards' were taken in, and this shard's batches held until they are.
    exchange: Option<crate::exchange::Exchange>,
    warmed: bool,
    held: crate::exchange::Held<Signed>,
}

/// Running totals, reported as the step's stats.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    records: u64,
    near_duplicates: u64,
    unsigned: u64,
    candidates_checked: u64,
    candidates_rejected: u64,
}

fn build(p: &Params) -> Option<Step> {
    let fields = p.str_list("fields").unwrap_or_else(|| vec!["text".to_owned()]);
    if fields.is_empty()
        && let Some(item) = p.item("fields")
    {
        p.error_at(item, "`fields` is empty: name the text field(s) to compare, or leave `fields` out to use `text`");
    }
    let unit = match p.choice("shingle", &["word", "char"]) {
        Some("char") => Unit::Char,
        _ => Unit::Word,
    };
    let size = p.u64("shingle_size").unwrap_or(DEFAULT_SHINGLE_SIZE);
    if !(1..=MAX_SHINGLE_SIZE).contains(&size)
        && let Some(item) = p.item("shingle_size")
    {
        p.error_at(item, format!("`shingle_size` must be from 1 to {MAX_SHINGLE_SIZE}, not {size}"));
    }
    let at_least_one = |key: &str, default: u64| {
        let n = p.u64(key).unwrap_or(default);
        if n == 0
            && let Some(item) = p.item(key)
        {
            p.error_at(item, format!("`{key}` must be at least 1"));
        }
        n
    };
    let bands = at_least_one("bands", DEFAULT_BANDS);
    let rows = at_least_one("rows", DEFAULT_ROWS);
    let perms = bands.saturating_mul(rows);
    if perms > MAX_PERMUTATIONS
        && let Some(item) = p.item("rows").or_else(|| p.item("bands"))
    {
        p.error_at(
            item,
            format!("`bands` × `rows` is {perms} min-hashes per record; at most {MAX_PERMUTATIONS} are allowed"),
        );
    }
    let threshold = p.f64("threshold").unwrap_or(DEFAULT_THRESHOLD);
    if !(threshold > 0.0 && threshold <= 1.0)
        && let Some(item) = p.item("threshold")
    {
        p.error_at(item, format!("`threshold` is a Jaccard similarity: above 0 and at most 1, not {threshold}"));
    }
    let mut norm: Vec<&str> = NORMALIZE.to_vec();
    if let Some(list) = p.str_list("normalize") {
        norm.clear();
        for n in list {
            match NORMALIZE.iter().find(|k| **k == n) {
                Some(k) => norm.push(k),
                None => {
                    let msg = match weave_core::did_you_mean(&n, NORMALIZE.iter().copied()) {
                        Some(m) => format!("unknown normalisation \"{n}\" (did you mean \"{m}\"?)"),
                        None => format!("unknown normalisation \"{n}\" (known: {})", NORMALIZE.join(", ")),
                    };
                    if let Some(item) = p.item("normalize") {
                        p.error_at(item, msg);
                    }
                }
            }
        }
    }
    let exchange = crate::exchange::Exchange::of(p).unwrap_or_else(|e| {
        p.push(weave_core::Diagnostic::error(e).with_code("no-exchange"));
        None
    });
    if p.has_errors() {
        return None;
    }
    let (bands, rows) = (bands as usize, rows as usize);
    warn_if_blind(p, bands, rows, threshold);
    let signer = Signer::new(
        unit,
        size as usize,
        bands,
        rows,
        Normalize {
            lowercase: norm.contains(&"lowercase"),
            strip_punctuation: norm.contains(&"strip_punctuation"),
            collapse_whitespace: norm.contains(&"collapse_whitespace"),
        },
    );
    let p_count = bands * rows;
    // The smallest number of equal min-hashes whose share reaches the threshold (the small
    // epsilon keeps a product such as 0.14 × 100 = 14.000000000000002 from rounding up to 15).
    let min_matches = ((threshold * p_count as f64) - 1e-9).ceil().max(1.0) as usize;
    Some(Step::StatefulTransform(Box::new(NearDedup {
        signing: Arc::new(Signing { fields, signer }),
        min_matches,
        config: exchange.as_ref().map_or_else(|| p.canonical(), |x| x.keyed(p.canonical())),
        index: (0..bands).map(|_| BandTable::default()).collect(),
        recent: (0..bands).map(|_| BandTable::default()).collect(),
        store: SignatureStore::new(p_count, SPILL_BYTES),
        found: vec![Vec::new(); bands],
        kept_rows: Vec::new(),
        candidates: Vec::new(),
        totals: Totals::default(),
        exchange,
        warmed: false,
        held: crate::exchange::Held::default(),
    })))
}

/// The probability that a pair at similarity `s` shares at least one band.
fn candidate_probability(bands: usize, rows: usize, s: f64) -> f64 {
    1.0 - (1.0 - s.powi(rows as i32)).powi(bands as i32)
}

/// Warns when the bands let most pairs at the threshold go unseen, with a setting that
/// would find them at the same number of min-hashes or more.
fn warn_if_blind(p: &Params, bands: usize, rows: usize, threshold: f64) {
    let found = candidate_probability(bands, rows, threshold);
    if found >= 0.9 {
        return;
    }
    let perms = bands * rows;
    let better = (1..rows)
        .rev()
        .map(|r| (perms.div_ceil(r).max(bands), r))
        .find(|&(b, r)| candidate_probability(b, r, threshold) >= 0.95 && (b * r) as u64 <= MAX_PERMUTATIONS);
    let mut d = Diagnostic::warning(format!(
        "with {bands} bands of {rows} rows, a pair at similarity {threshold} shares a band with probability {found:.2}, and pairs that share none are never compared: {:.0}% of such near duplicates would be kept unseen",
        (1.0 - found) * 100.0
    ))
    .with_code("weak-index");
    if let Some((b, r)) = better {
        d = d.with_help(format!(
            "more bands of fewer rows find more: bands = {b}, rows = {r} find such a pair with probability {:.2}",
            candidate_probability(b, r, threshold)
        ));
    }
    let place = p.item("threshold").or_else(|| p.item("rows")).or_else(|| p.item("bands"));
    p.push(d.at(place.map(|i| p.locate(i.span.clone()))));
}

impl StepInfo for NearDedup {
    fn fields_read(&self) -> Vec<String> {
        self.signing.fields.clone()
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    /// Its passes over a batch are rayon parallel iterators.
    fn parallel(&self) -> bool {
        true
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn shards_by_exchange(&self) -> bool {
        true
    }

    /// Not when it only publishes its input's signatures (`weave run --stage`): it passes
    /// nothing on then, which is not the output its key names.
    fn cacheable(&self) -> bool {
        !self.exchange.as_ref().is_some_and(crate::exchange::Exchange::publish_only)
    }

    fn estimated_cost(&self) -> f64 {
        // A signature takes a few microseconds a record (`cargo xtask bench near_dedup`),
        // some twenty times a cleaning pass.
        20.0
    }
}

/// What became of one record of the batch when it was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// It has shingles and a signature.
    Signed,
    /// Its text has no word (or character) after normalisation: it is kept, unindexed.
    Empty,
    /// Field number `.0` holds a value that is not text.
    NotText(usize),
}

/// A text field of the batch, as read for signing.
#[derive(Debug, Clone, Copy)]
enum TextColumn<'a> {
    Str(&'a StrColumn),
    /// Every value null (read as the empty text).
    Null,
    /// Values of another or of mixed type: strings and nulls are read, anything else is
    /// not text.
    Any(&'a Column),
}

impl<'a> TextColumn<'a> {
    /// Row `i`'s text (`None` for null), or `Err` with the value when it is not text.
    fn get(self, i: usize) -> Result<Option<&'a str>, ValueRef<'a>> {
        match self {
            TextColumn::Str(c) => Ok(c.get(i)),
            TextColumn::Null => Ok(None),
            TextColumn::Any(c) => match c.get(i) {
                ValueRef::Str(s) => Ok(Some(s)),
                ValueRef::Null => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// What the step reads of a record and how it signs it: its preparation, which makes a
/// batch's signatures on the worker pool ahead of the ordered decisions.
#[derive(Debug)]
struct Signing {
    fields: Vec<String>,
    signer: Signer,
}

/// A batch's signatures: per record, its 16-bit min-hashes, its band fingerprints and
/// what became of it.
#[derive(Debug, Clone)]
struct Signed {
    sigs: Vec<u16>,
    fps: Vec<u32>,
    status: Vec<Status>,
}

impl Signed {
    /// The form the shards of a job exchange (see `exchange.rs`): the record count (u32),
    /// the min-hashes (u16 each), the band fingerprints (u32 each), then a byte per record,
    /// 1 when it was signed (an unsigned one, empty or not text, is never indexed). Little
    /// endian.
    fn encode(&self) -> Vec<u8> {
        let n = self.status.len();
        let mut out = Vec::with_capacity(4 + self.sigs.len() * 2 + self.fps.len() * 4 + n);
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend(self.sigs.iter().flat_map(|x| x.to_le_bytes()));
        out.extend(self.fps.iter().flat_map(|x| x.to_le_bytes()));
        out.extend(self.status.iter().map(|s| u8::from(*s == Status::Signed)));
        out
    }

    /// Reads [`Signed::encode`]'s form, for `bands` bands of `perms` min-hashes.
    fn decode(bytes: &[u8], bands: usize, perms: usize) -> Result<Signed, StepError> {
        let damaged = || StepError::fatal("a shard's near_dedup signatures are damaged or of other settings");
        let n = u32::from_le_bytes(bytes.get(..4).ok_or_else(damaged)?.try_into().map_err(|_| damaged())?) as usize;
        let (sig_end, fp_end) = (4 + n * perms * 2, 4 + n * perms * 2 + n * bands * 4);
        if bytes.len() != fp_end + n {
            return Err(damaged());
        }
        let sigs = bytes[4..sig_end].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let fps =
            bytes[sig_end..fp_end].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let status = bytes[fp_end..].iter().map(|&b| if b == 1 { Status::Signed } else { Status::Empty }).collect();
        Ok(Signed { sigs, fps, status })
    }
}

impl Signing {
    /// The batch's text fields, or a fatal error for a missing field. A value that is not
    /// text is a bad record, whatever the rest of its column holds (so that whether a
    /// record is refused never depends on the batch it came in).
    fn text_columns<'b>(&self, batch: &'b Batch) -> Result<Vec<TextColumn<'b>>, StepError> {
        self.fields
            .iter()
            .map(|name| match batch.column(name) {
                Some(Column::Str(c)) => Ok(TextColumn::Str(c)),
                Some(Column::Null(_)) => Ok(TextColumn::Null),
                Some(other) => Ok(TextColumn::Any(other)),
                None => Err(crate::missing_field(batch, name)),
            })
            .collect()
    }

    /// Signs every record of `batch`, in parallel over chunks of records.
    fn sign_batch(&self, batch: &Batch) -> Result<Signed, StepError> {
        let n = batch.len();
        if n == 0 {
            // An empty batch is passed over whatever its fields, as it always was.
            return Ok(Signed { sigs: Vec::new(), fps: Vec::new(), status: Vec::new() });
        }
        let columns = self.text_columns(batch)?;
        let signer = &self.signer;
        let (b, p) = (signer.bands, signer.perms());
        let mut signed = Signed { sigs: vec![0; n * p], fps: vec![0; n * b], status: vec![Status::Empty; n] };
        signed
            .sigs
            .par_chunks_mut(TASK_RECORDS * p)
            .zip(signed.fps.par_chunks_mut(TASK_RECORDS * b))
            .zip(signed.status.par_chunks_mut(TASK_RECORDS))
            .enumerate()
            .for_each(|(t, ((sigs, fps), status))| {
                let mut scratch = Scratch::new(signer);
                for (k, st) in status.iter_mut().enumerate() {
                    let row = t * TASK_RECORDS + k;
                    *st = signer.sign(
                        &columns,
                        row,
                        &mut scratch,
                        &mut sigs[k * p..(k + 1) * p],
                        &mut fps[k * b..(k + 1) * b],
                    );
                }
            });
        Ok(signed)
    }
}

impl Prepare for Signing {
    /// The batch's signatures (a [`Signed`]).
    fn prepare(&self, batch: &Batch, _ctx: &StepContext) -> Result<Prepared, StepError> {
        Ok(Box::new(self.sign_batch(batch)?))
    }
}

impl NearDedup {
    /// Whether signed record `i` of the batch is a near duplicate of a kept record: one of
    /// earlier batches that shares a band with it (`found`, read from `cursors` on), or one
    /// of this batch (`recent`).
    fn is_near_duplicate(&mut self, s: &Signed, i: usize, cursors: &mut [usize]) -> Result<bool, StepError> {
        let (b, p) = (self.signing.signer.bands, self.signing.signer.perms());
        self.candidates.clear();
        for ((found, c), (recent, &fp)) in
            self.found.iter().zip(cursors.iter_mut()).zip(self.recent.iter().zip(&s.fps[i * b..(i + 1) * b]))
        {
            while let Some(&(_, id)) = found.get(*c).filter(|(row, _)| *row as usize == i) {
                self.candidates.push(id);
                *c += 1;
            }
            recent.find(fp, &mut self.candidates);
        }
        if self.candidates.is_empty() {
            return Ok(false);
        }
        // Oldest first, each once, so that the decision never depends on the band order.
        self.candidates.sort_unstable();
        self.candidates.dedup();
        let query = &s.sigs[i * p..(i + 1) * p];
        for &id in &self.candidates {
            self.totals.candidates_checked += 1;
            if self.store.matches(id as usize, query)? >= self.min_matches {
                return Ok(true);
            }
            self.totals.candidates_rejected += 1;
        }
        Ok(false)
    }

    /// Keeps signed record `i` of the batch: gives it the next id, stores its signature and
    /// indexes its bands among the batch's (the index of earlier batches takes them when
    /// the batch is done).
    fn keep(&mut self, s: &Signed, i: usize) -> Result<(), StepError> {
        let (b, p) = (self.signing.signer.bands, self.signing.signer.perms());
        let id = self.store.len();
        if id >= MAX_KEPT {
            return Err(StepError::fatal(format!(
                "`near_dedup` can keep at most {MAX_KEPT} distinct records; split the input and run it on each part"
            )));
        }
        self.store.push(&s.sigs[i * p..(i + 1) * p])?;
        for (table, &fp) in self.recent.iter_mut().zip(&s.fps[i * b..(i + 1) * b]) {
            table.insert(fp, id as u32);
        }
        self.kept_rows.push(i);
        Ok(())
    }

    /// Looks every signed record of the batch up in the index of earlier batches, one band
    /// per task: within a band the look-ups do not depend on one another, so their cache
    /// misses overlap.
    fn look_up(&mut self, s: &Signed, n: usize) {
        let b = self.signing.signer.bands;
        let (fps, status) = (&s.fps, &s.status);
        self.index.par_iter().zip(self.found.par_iter_mut()).enumerate().for_each(|(j, (table, found))| {
            found.clear();
            for i in 0..n {
                if let Some(&fp) = fps.get((i + LOOK_AHEAD) * b + j) {
                    std::hint::black_box(table.touch(fp));
                }
                if status[i] == Status::Signed {
                    table.find_each(fps[i * b + j], |id| found.push((i as u32, id)));
                }
            }
        });
    }

    /// Adds the batch's kept records to the index of earlier batches, one band per task.
    fn index_kept(&mut self, s: &Signed, first_id: usize) {
        let b = self.signing.signer.bands;
        let (fps, rows) = (&s.fps, &self.kept_rows);
        self.index.par_iter_mut().enumerate().for_each(|(j, table)| {
            for (k, &i) in rows.iter().enumerate() {
                if let Some(&ahead) = rows.get(k + LOOK_AHEAD) {
                    std::hint::black_box(table.touch(fps[ahead * b + j]));
                }
                table.insert(fps[i * b + j], (first_id + k) as u32);
            }
        });
        for t in &mut self.recent {
            t.clear();
        }
        self.kept_rows.clear();
    }

    /// Takes the signed records of a batch into the index in order: each is kept (given
    /// an id and indexed) unless it is a near duplicate of a kept one. Returns, per record,
    /// whether it is a near duplicate.
    fn take_in(&mut self, s: &Signed, n: usize) -> Result<Vec<bool>, StepError> {
        let b = self.signing.signer.bands;
        self.look_up(s, n);
        let first_id = self.store.len();
        let mut cursors = vec![0usize; b];
        let mut near = vec![false; n];
        for (i, is_near) in near.iter_mut().enumerate() {
            if s.status[i] == Status::Signed {
                if self.is_near_duplicate(s, i, &mut cursors)? {
                    *is_near = true;
                } else {
                    self.keep(s, i)?;
                }
            }
        }
        self.index_kept(s, first_id);
        Ok(near)
    }

    /// Decides on each record of `batch` in order, from its signatures `s`: kept (and
    /// indexed), dropped as a near duplicate, or refused (not text).
    fn decide(
        &mut self,
        batch: &Batch,
        s: &Signed,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let n = batch.len();
        if n == 0 {
            return Ok(());
        }
        let columns = self.signing.text_columns(batch)?;
        let near = self.take_in(s, n)?;
        let mut keep = vec![true; n];
        for (i, k) in keep.iter_mut().enumerate() {
            match s.status[i] {
                Status::Empty => self.totals.unsigned += 1,
                Status::NotText(f) => {
                    *k = false;
                    let value = columns[f].get(i).err().unwrap_or(ValueRef::Null);
                    ctx.reject(Rejected {
                        reason: format!(
                            "field `{}` holds {} {value}, not text; `near_dedup` compares text",
                            self.signing.fields[f],
                            value.type_name()
                        ),
                        record: Some(batch.row(i).to_record()),
                        origin: None,
                    });
                }
                Status::Signed if near[i] => {
                    *k = false;
                    self.totals.near_duplicates += 1;
                    ctx.drop_record("near duplicate", || batch.row(i).to_record());
                }
                Status::Signed => {}
            }
        }
        self.totals.records += n as u64;
        let kept = keep.iter().filter(|k| **k).count();
        if kept == n {
            out.push(batch.clone());
        } else if kept > 0 {
            out.push(batch.filter(&keep));
        }
        Ok(())
    }

    /// Takes a batch with its signatures: decides at once, or, in a shard whose earlier
    /// shards' signatures are not all there yet, holds it (publishing its own either way).
    fn take(
        &mut self,
        batch: &Batch,
        s: &Signed,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let Some(x) = &mut self.exchange else { return self.decide(batch, s, ctx, out) };
        x.publish(&s.encode())?;
        if x.publish_only() {
            return Ok(());
        }
        if !self.warmed && self.held.is_empty() && x.earlier_ready() {
            self.warm(ctx)?;
        }
        if self.warmed {
            self.decide(batch, s, ctx, out)
        } else {
            // Held: copied, since the executor keeps the preparation for a retried call.
            self.held.push(batch.clone(), s.clone())
        }
    }

    /// Takes every earlier shard's signed records into the index, as if they had come
    /// first (this shard's figures count its own records only).
    fn warm(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let Some(x) = self.exchange.take() else { return Ok(()) };
        let totals = self.totals;
        let (b, p) = (self.signing.signer.bands, self.signing.signer.perms());
        let r = x.take_earlier(ctx, |bytes| {
            let s = Signed::decode(bytes, b, p)?;
            self.take_in(&s, s.status.len()).map(|_| ())
        });
        self.exchange = Some(x);
        self.totals = totals;
        r?;
        self.warmed = true;
        Ok(())
    }

    /// Bytes the index holds.
    fn index_bytes(&self) -> usize {
        self.index.iter().map(BandTable::heap_size).sum()
    }
}

impl StatefulTransform for NearDedup {
    fn preparer(&self) -> Option<Arc<dyn Prepare>> {
        Some(Arc::clone(&self.signing) as Arc<dyn Prepare>)
    }

    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let signed = self.signing.sign_batch(batch)?;
        self.take(batch, &signed, ctx, out)
    }

    fn process_prepared(
        &mut self,
        batch: &Batch,
        prepared: &Prepared,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let signed = weave_core::prepared_as::<Signed>(prepared, "near_dedup")?;
        self.take(batch, signed, ctx, out)
    }

    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let _ = out;
        // In a shard: its signatures in place for the later shards, then (if it held its
        // batches) the earlier shards' taken in; its own are decided as they are let out
        // (`more`), and the figures said after the last.
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
            self.report(ctx);
        }
        Ok(())
    }

    /// Decides on the held batches, one a call, in order.
    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        let Some((batch, s)) = self.held.pop()? else { return Ok(false) };
        self.decide(&batch, &s, ctx, out)?;
        if self.held.is_empty() {
            self.report(ctx);
            return Ok(false);
        }
        Ok(true)
    }
}

impl NearDedup {
    /// The step's figures, once every record is decided.
    fn report(&self, ctx: &mut StepContext) {
        let t = &self.totals;
        let index_bytes = self.index_bytes();
        log::debug!(
            "near_dedup: {} records, {} near duplicates, {} without text, {} candidates checked ({} not near), index {} bytes, {} signatures ({} bytes) spilled",
            t.records,
            t.near_duplicates,
            t.unsigned,
            t.candidates_checked,
            t.candidates_rejected,
            index_bytes,
            self.store.on_disk,
            self.store.on_disk * self.store.width * 2
        );
        let int = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        ctx.set_stat("records", int(t.records));
        ctx.set_stat("near_duplicates", int(t.near_duplicates));
        ctx.set_stat("records_without_text", int(t.unsigned));
        ctx.set_stat("candidates_checked", int(t.candidates_checked));
        ctx.set_stat("candidates_not_near", int(t.candidates_rejected));
        ctx.set_stat("index_bytes", int(index_bytes as u64));
        ctx.set_stat("signatures_kept", int(self.store.len() as u64));
    }
}

/// Which normalisations apply before shingling.
#[derive(Debug, Clone, Copy)]
struct Normalize {
    lowercase: bool,
    strip_punctuation: bool,
    collapse_whitespace: bool,
}

/// Computes signatures: the shingling, the permutations and the band fingerprints.
#[derive(Debug)]
struct Signer {
    unit: Unit,
    size: usize,
    bands: usize,
    rows: usize,
    norm: Normalize,
    /// Permutation `i` maps a shingle hash `x` to `(a·x + b[i]) >> 32` (mod 2^64), where
    /// `a = a_hi[i]·2^32 + a_lo[i]` (see [`min_hash`]).
    a_lo: Vec<u32>,
    a_hi: Vec<u32>,
    b: Vec<u32>,
    /// `ROLL_BASE^size`, to take the oldest element out of the rolling hash.
    base_pow: u64,
}

/// Per-task buffers, so that signing allocates per task, not per record.
struct Scratch {
    /// Lowercased (and joined) texts, one row per record; replaced when it grows large.
    text: StrColumn,
    mins: Vec<u32>,
    ring: Vec<u64>,
    /// The record's shingle hashes.
    shingles: Vec<u32>,
}

impl Scratch {
    fn new(signer: &Signer) -> Self {
        Scratch {
            text: StrColumn::new(),
            mins: vec![u32::MAX; signer.perms()],
            ring: vec![0; signer.size],
            shingles: Vec::new(),
        }
    }
}

/// The odd multiplier of the rolling hash over the shingle's elements.
const ROLL_BASE: u64 = 0x9e37_79b9_7f4a_7c15;

impl Signer {
    fn new(unit: Unit, size: usize, bands: usize, rows: usize, norm: Normalize) -> Self {
        let mut state = PERMUTATION_SEED;
        let mut next = || {
            // A splitmix64 counter under the murmur3 finaliser.
            state = state.wrapping_add(weave_core::rng::GAMMA);
            murmur_mix(state)
        };
        let perms = bands * rows;
        let a: Vec<u64> = (0..perms).map(|_| next()).collect();
        let b = (0..perms).map(|_| next() as u32).collect();
        Signer {
            unit,
            size,
            bands,
            rows,
            norm,
            a_lo: a.iter().map(|&a| a as u32).collect(),
            a_hi: a.iter().map(|&a| (a >> 32) as u32).collect(),
            b,
            base_pow: ROLL_BASE.wrapping_pow(size as u32),
        }
    }

    fn perms(&self) -> usize {
        self.bands * self.rows
    }

    /// Signs row `row`: writes its 16-bit signature and band fingerprints.
    fn sign(
        &self,
        columns: &[TextColumn<'_>],
        row: usize,
        scratch: &mut Scratch,
        sig: &mut [u16],
        fps: &mut [u32],
    ) -> Status {
        for (f, c) in columns.iter().enumerate() {
            if c.get(row).is_err() {
                return Status::NotText(f);
            }
        }
        let Scratch { text: buf, mins, ring, shingles } = scratch;
        if buf.data().len() > SPILL_BYTES {
            *buf = StrColumn::new();
        }
        let text = if columns.len() == 1 && !self.norm.lowercase {
            columns[0].get(row).ok().flatten().unwrap_or("")
        } else {
            buf.push_with(|a| {
                for (f, c) in columns.iter().enumerate() {
                    if f > 0 {
                        a.push('\n');
                    }
                    let t = c.get(row).ok().flatten().unwrap_or("");
                    if self.norm.lowercase {
                        lowercase_into(t, a);
                    } else {
                        a.push_str(t);
                    }
                }
            });
            buf.get(buf.len() - 1).unwrap_or("")
        };

        shingles.clear();
        let mut roll = Rolling { ring, pos: 0, count: 0, h: 0, base_pow: self.base_pow };
        let mut add = |e: u64| {
            if let Some(h) = roll.push(e) {
                shingles.push(shingle_value(h));
            }
        };
        match self.unit {
            Unit::Word => for_each_word(text, self.norm.strip_punctuation, |w| add(hash_bytes(w))),
            Unit::Char => for_each_char(text, self.norm.strip_punctuation, self.norm.collapse_whitespace, |c| {
                add(murmur_mix(u64::from(c) ^ CHAR_SALT))
            }),
        }
        match roll.short() {
            Some(h) => shingles.push(shingle_value(h)),
            None if roll.count == 0 => return Status::Empty,
            None => {}
        }
        mins.fill(u32::MAX);
        min_hash(mins, &self.a_lo, &self.a_hi, &self.b, shingles);
        for (s, &m) in sig.iter_mut().zip(mins.iter()) {
            // The low bits: a minimum is a small number, so its high bits are mostly zero.
            *s = m as u16;
        }
        for (j, (band, fp)) in mins.chunks_exact(self.rows).zip(fps.iter_mut()).enumerate() {
            let mut h = (j as u64 + 1).wrapping_mul(ROLL_BASE);
            for &v in band {
                h = (h ^ u64::from(v)).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29);
            }
            *fp = (murmur_mix(h) >> 32) as u32;
        }
        Status::Signed
    }
}

/// Folds the shingle hashes `xs` into the minima, one permutation per lane: permutation
/// `i` maps `x` to the high half of `a·x + b` (mod 2^64), with `a = a_hi·2^32 + a_lo`
/// and `b < 2^32`, written in 32-bit lanes: `((a_lo·x + b) >> 32) + a_hi·x` (mod 2^32).
/// Compiled for AVX2 and SSE4.1 too and chosen at run time: the x86-64 baseline (SSE2)
/// has no 32-bit multiply or unsigned minimum, and runs this loop several times slower.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn min_hash(mins: &mut [u32], a_lo: &[u32], a_hi: &[u32], b: &[u32], xs: &[u32]) {
    for &x in xs {
        for (((m, &lo), &hi), &b) in mins.iter_mut().zip(a_lo).zip(a_hi).zip(b) {
            let low = u64::from(lo) * u64::from(x) + u64::from(b);
            let v = ((low >> 32) as u32).wrapping_add(hi.wrapping_mul(x));
            *m = (*m).min(v);
        }
    }
}

/// The 32-bit value a shingle's rolling hash stands for.
#[inline]
fn shingle_value(h: u64) -> u32 {
    (murmur_mix(h) >> 32) as u32
}

/// A polynomial hash over the last `ring.len()` elements, updated in O(1) per element.
struct Rolling<'a> {
    ring: &'a mut [u64],
    pos: usize,
    count: usize,
    h: u64,
    base_pow: u64,
}

impl Rolling<'_> {
    /// Adds an element; returns the hash of the full shingle that ends with it, if any.
    #[inline]
    fn push(&mut self, e: u64) -> Option<u64> {
        let k = self.ring.len();
        let old = std::mem::replace(&mut self.ring[self.pos], e);
        self.pos = if self.pos + 1 == k { 0 } else { self.pos + 1 };
        self.h = self.h.wrapping_mul(ROLL_BASE).wrapping_add(e);
        if self.count >= k {
            self.h = self.h.wrapping_sub(old.wrapping_mul(self.base_pow));
        }
        self.count += 1;
        (self.count >= k).then_some(self.h)
    }

    /// For a text shorter than one shingle: the hash of all of it (`None` when the text was
    /// empty or had a full shingle).
    fn short(&self) -> Option<u64> {
        (self.count > 0 && self.count < self.ring.len()).then_some(self.h)
    }
}

const CHAR_SALT: u64 = 0x6368_6172_735f_5f5f;

/// A 64-bit hash of a word's bytes, 8 at a time, without allocating. A tail shorter than 8
/// bytes is read as overlapping fixed-size loads (as wyhash does), never byte by byte.
#[inline]
fn hash_bytes(bytes: &[u8]) -> u64 {
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let len = bytes.len();
    let word = |w: u64, h: u64| (h ^ w).wrapping_mul(M).rotate_left(31);
    let mut h = (len as u64).wrapping_mul(M);
    if len >= 8 {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            h = word(read_u64(c), h);
        }
        if !chunks.remainder().is_empty() {
            h = word(read_u64(&bytes[len - 8..]), h);
        }
    } else if len >= 4 {
        h = word((read_u32(bytes) << 32) | read_u32(&bytes[len - 4..]), h);
    } else if len > 0 {
        let w = (u64::from(bytes[0]) << 16) | (u64::from(bytes[len / 2]) << 8) | u64::from(bytes[len - 1]);
        h = word(w, h);
    }
    murmur_mix(h)
}

/// The first 8 bytes of `b` as a little-endian number (`b` has at least 8).
#[inline]
fn read_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// The first 4 bytes of `b` as a little-endian number (`b` has at least 4).
#[inline]
fn read_u32(b: &[u8]) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u64::from(u32::from_le_bytes(w))
}

/// Whether an ASCII byte separates words: whitespace as `char::is_whitespace` has it (as
/// the `collapse_whitespace` cleaning rule does), and with `strip_punctuation` anything
/// that is not a letter or digit.
#[inline]
fn ascii_separates(b: u8, strip_punctuation: bool) -> bool {
    matches!(b, b' ' | b'\t'..=b'\r') || (strip_punctuation && !b.is_ascii_alphanumeric())
}

/// Whether a character separates words (see [`ascii_separates`]).
#[inline]
fn separates(c: char, strip_punctuation: bool) -> bool {
    c.is_whitespace() || (strip_punctuation && !c.is_alphanumeric())
}

/// Calls `f` with each word of `text`, in order.
fn for_each_word(text: &str, strip_punctuation: bool, mut f: impl FnMut(&[u8])) {
    let bytes = text.as_bytes();
    let mut start = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (sep, len) = if b < 0x80 {
            (ascii_separates(b, strip_punctuation), 1)
        } else {
            let c = text[i..].chars().next().unwrap_or(' ');
            (separates(c, strip_punctuation), c.len_utf8())
        };
        if sep {
            if let Some(s) = start.take() {
                f(&bytes[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
        i += len;
    }
    if let Some(s) = start {
        f(&bytes[s..]);
    }
}

/// Calls `f` with each character of `text` as shingles see it: punctuation (with
/// `strip_punctuation`) read as a space, and with `collapse_whitespace` each run of spaces
/// read as one space and none at the ends.
fn for_each_char(text: &str, strip_punctuation: bool, collapse_whitespace: bool, mut f: impl FnMut(char)) {
    let mut pending_space = false;
    let mut started = false;
    for c in text.chars() {
        if !separates(c, strip_punctuation) {
            if pending_space {
                f(' ');
                pending_space = false;
            }
            f(c);
            started = true;
        } else if collapse_whitespace {
            pending_space = started;
        } else {
            f(if c.is_whitespace() { c } else { ' ' });
        }
    }
}

/// One band's index: kept records by band fingerprint, in open addressing with linear
/// probing. A slot is `fingerprint << 32 | (id + 1)`, 0 when empty.
#[derive(Debug, Default)]
struct BandTable {
    slots: Vec<u64>,
    len: usize,
}

impl BandTable {
    /// The home slot of a fingerprint in a table of `cap` slots.
    #[inline]
    fn home(fp: u32, cap: usize) -> usize {
        ((u64::from(fp) * cap as u64) >> 32) as usize
    }

    /// Reads the home slot of `fp`, so that it is in the cache when [`BandTable::find`]
    /// or [`BandTable::insert`] needs it.
    #[inline]
    fn touch(&self, fp: u32) -> u64 {
        self.slots.get(Self::home(fp, self.slots.len())).copied().unwrap_or(0)
    }

    /// Appends the ids stored under `fp` to `out`.
    #[inline]
    fn find(&self, fp: u32, out: &mut Vec<u32>) {
        self.find_each(fp, |id| out.push(id));
    }

    /// Calls `f` with each id stored under `fp`.
    #[inline]
    fn find_each(&self, fp: u32, mut f: impl FnMut(u32)) {
        let cap = self.slots.len();
        if cap == 0 {
            return;
        }
        let mut i = Self::home(fp, cap);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return;
            }
            if (s >> 32) as u32 == fp {
                f(s as u32 - 1);
            }
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
    }

    /// Empties the table, keeping its room.
    fn clear(&mut self) {
        if self.len > 0 {
            self.slots.fill(0);
            self.len = 0;
        }
    }

    /// Stores `id` under `fp`. `id` is below `u32::MAX`.
    fn insert(&mut self, fp: u32, id: u32) {
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        Self::place(&mut self.slots, (u64::from(fp) << 32) | u64::from(id + 1));
        self.len += 1;
    }

    fn place(slots: &mut [u64], slot: u64) {
        let cap = slots.len();
        let mut i = Self::home((slot >> 32) as u32, cap);
        while slots[i] != 0 {
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        slots[i] = slot;
    }

    /// Grows by half (to at least 64 slots) and puts every slot back.
    fn grow(&mut self) {
        let cap = (self.slots.len() * 3 / 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![0; cap]);
        for s in old.into_iter().filter(|&s| s != 0) {
            Self::place(&mut self.slots, s);
        }
    }

    fn heap_size(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

/// The 16-bit signatures of kept records, by id: the older ones in an unnamed temporary
/// file, the last ones (up to `spill_bytes`) in memory.
#[derive(Debug)]
struct SignatureStore {
    /// Min-hashes per signature.
    width: usize,
    spill_bytes: usize,
    file: Option<File>,
    /// Signatures written to the file (ids `0..on_disk`).
    on_disk: usize,
    /// Signatures `on_disk..`, end to end.
    buffer: Vec<u16>,
    /// Bytes read from or written to the file.
    bytes: Vec<u8>,
}

impl SignatureStore {
    fn new(width: usize, spill_bytes: usize) -> Self {
        SignatureStore { width, spill_bytes, file: None, on_disk: 0, buffer: Vec::new(), bytes: Vec::new() }
    }

    /// Signatures stored.
    fn len(&self) -> usize {
        self.on_disk + self.buffer.len() / self.width
    }

    /// Stores the next signature (its id is the former [`SignatureStore::len`]).
    fn push(&mut self, sig: &[u16]) -> Result<(), StepError> {
        self.buffer.extend_from_slice(sig);
        if self.buffer.len() * 2 >= self.spill_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Appends the buffered signatures to the file.
    fn spill(&mut self) -> Result<(), StepError> {
        let err = |e: std::io::Error| {
            StepError::environment(
                format!(
                    "cannot write near_dedup's signatures to a temporary file in {}",
                    std::env::temp_dir().display()
                ),
                e,
            )
        };
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(tempfile::tempfile().map_err(err)?),
        };
        self.bytes.clear();
        self.bytes.extend(self.buffer.iter().flat_map(|v| v.to_le_bytes()));
        // Reads are positioned, so the cursor is at the end already on Unix; elsewhere a
        // read may have moved it.
        file.seek(SeekFrom::End(0)).map_err(err)?;
        file.write_all(&self.bytes).map_err(err)?;
        self.on_disk += self.buffer.len() / self.width;
        self.buffer.clear();
        Ok(())
    }

    /// How many min-hashes of signature `id` equal `query`'s.
    fn matches(&mut self, id: usize, query: &[u16]) -> Result<usize, StepError> {
        let w = self.width;
        if id >= self.on_disk {
            let k = id - self.on_disk;
            return Ok(self.buffer[k * w..(k + 1) * w].iter().zip(query).filter(|(a, b)| a == b).count());
        }
        let Some(file) = &self.file else {
            return Err(StepError::internal(format!("near_dedup: signature {id} is on disk, but there is no file")));
        };
        self.bytes.resize(2 * w, 0);
        read_at(file, &mut self.bytes, (id * 2 * w) as u64).map_err(|e| {
            StepError::environment("cannot read near_dedup's signatures back from their temporary file", e)
        })?;
        Ok(self.bytes.chunks_exact(2).zip(query).filter(|(c, q)| **c == q.to_le_bytes()).count())
    }
}

/// Reads exactly `buf.len()` bytes at `offset`.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Reads exactly `buf.len()` bytes at `offset`.
#[cfg(not(unix))]
fn read_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::Read;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::{Record, Value};

    fn step(config: &str) -> Box<dyn StatefulTransform> {
        let Step::StatefulTransform(s) = build_step("near_dedup", config) else { panic!("not stateful") };
        s
    }

    /// What a run gave: the ids of the records kept, the drops by reason, and the context
    /// of the last call (for rejects, excluded records and stats).
    struct Outcome {
        kept: Vec<i64>,
        dropped: Vec<(String, u64)>,
        ctx: StepContext,
    }

    fn run_with(mut s: Box<dyn StatefulTransform>, batches: &[Vec<Record>], keep_dropped: bool) -> Outcome {
        let mut ctx = StepContext::new("near", 0, 0, Default::default()).keeping_dropped(keep_dropped);
        let mut out = Vec::new();
        for b in batches {
            s.process(&Batch::from_records(b), &mut ctx, &mut out).unwrap();
        }
        crate::tests::finish(&mut *s, &mut ctx, &mut out).unwrap();
        let kept = out
            .iter()
            .flat_map(|b| b.to_records())
            .map(|r| r.get("id").and_then(|v| v.as_ref().as_int()).unwrap_or(-1))
            .collect();
        Outcome { kept, dropped: ctx.take_dropped(), ctx }
    }

    fn run(config: &str, batches: &[Vec<Record>]) -> Outcome {
        run_with(step(config), batches, false)
    }

    fn rec(id: i64, text: &str) -> Record {
        Record::new().with("id", id).with("text", text)
    }

    fn recs(texts: &[&str]) -> Vec<Record> {
        texts.iter().enumerate().map(|(i, t)| rec(i as i64, t)).collect()
    }

    const BASE: &str = "the quick brown fox jumps over the lazy dog while the farmer watches from the porch and drinks his morning coffee before the long day of work in the fields begins under a bright summer sky";
    const OTHER: &str = "a completely different text about trains leaving the station at dawn with passengers reading newspapers and drinking tea as the countryside slowly wakes up outside the windows";

    /// The exact word shingles of a text, normalised as the default normalisation does.
    fn shingles(text: &str, k: usize) -> HashSet<String> {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        if words.len() < k {
            return if words.is_empty() { HashSet::new() } else { HashSet::from([words.join(" ")]) };
        }
        words.windows(k).map(|w| w.join(" ")).collect()
    }

    fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
        let inter = a.intersection(b).count();
        inter as f64 / (a.len() + b.len() - inter) as f64
    }

    #[test]
    fn near_duplicates_across_batches_are_dropped_keeping_the_first() {
        let near = BASE.replace("summer sky", "summer day");
        assert!(jaccard(&shingles(BASE, 5), &shingles(&near, 5)) > 0.9);
        let o = run(
            "",
            &[
                vec![rec(1, BASE), rec(2, OTHER), rec(3, &near)],
                vec![rec(4, BASE), rec(5, "short and unrelated"), rec(6, &OTHER.replace("windows", "window"))],
            ],
        );
        assert_eq!(o.kept, [1, 2, 5]);
        assert_eq!(o.dropped, [("near duplicate".to_owned(), 3)]);
    }

    #[test]
    fn dropped_records_are_kept_for_the_exclusion_file_and_counted_in_the_stats() {
        let mut o = run_with(step(""), &[vec![rec(1, BASE), rec(2, &BASE.to_uppercase()), rec(3, OTHER)]], true);
        let excluded = o.ctx.take_excluded();
        assert_eq!(excluded.len(), 1);
        assert_eq!(excluded[0].0, "near duplicate");
        assert_eq!(excluded[0].1.get("id"), Some(&Value::Int(2)));
        let stats: HashMap<String, Value> = o.ctx.take_stats().into_iter().collect();
        assert_eq!(stats["records"], Value::Int(3));
        assert_eq!(stats["near_duplicates"], Value::Int(1));
        assert_eq!(stats["signatures_kept"], Value::Int(2));
        assert_eq!(stats["candidates_checked"], Value::Int(1));
    }

    #[test]
    fn normalisation_decides_what_counts_as_the_same() {
        let shouted = "THE QUICK, BROWN FOX... jumps over THE LAZY DOG; while the farmer watches from the porch and drinks his morning coffee before the long day of work in the fields begins under a bright summer sky!";
        assert_eq!(run("", &[recs(&[BASE, shouted])]).kept, [0], "lowercase and punctuation by default");
        let o = run("normalize = [\"lowercase\"]", &[recs(&[BASE, shouted])]);
        assert_eq!(o.kept, [0, 1], "`quick,` is not `quick` when punctuation is part of the word");
        let o = run("normalize = []", &[recs(&[BASE, &BASE.to_uppercase()])]);
        assert_eq!(o.kept, [0, 1]);
    }

    #[test]
    fn character_shingles_catch_typos_and_see_whitespace_as_normalised() {
        let a = "Near duplicate detection with character shingles catches small typos in long product descriptions.";
        let typo = "Near duplicate detecton with character shingles catches small typos in long product descriptions.";
        let spaced =
            "  Near duplicate  detection with character shingles\tcatches small typos in long product descriptions. ";
        let cfg = "shingle = \"char\"\nshingle_size = 5";
        assert_eq!(run(cfg, &[recs(&[a, typo, spaced, OTHER])]).kept, [0, 3]);
        let raw = format!("{cfg}\nnormalize = [\"lowercase\", \"strip_punctuation\"]");
        // Without collapsing, the doubled and leading spaces make shingles of their own.
        let o = run(&raw, &[recs(&[a, "near duplicate detection", "near  duplicate   detection"])]);
        assert_eq!(o.kept, [0, 1, 2]);
        // Word shingles split at any whitespace, so a word-level run treats both the same.
        let o = run("shingle_size = 2", &[recs(&["near duplicate detection", "near  duplicate   detection"])]);
        assert_eq!(o.kept, [0]);
    }

    #[test]
    fn the_threshold_and_the_bands_decide_how_near_is_near() {
        // Every tenth word changed: far from a near duplicate at 0.8, near at 0.3.
        let far: String =
            BASE.split(' ').enumerate().map(|(i, w)| if i % 10 == 3 { "zzz" } else { w }).collect::<Vec<_>>().join(" ");
        let j = jaccard(&shingles(BASE, 3), &shingles(&far, 3));
        assert!((0.4..0.6).contains(&j), "{j}");
        assert_eq!(run("shingle_size = 3", &[recs(&[BASE, &far])]).kept, [0, 1]);
        let loose = "shingle_size = 3\nthreshold = 0.3\nbands = 40\nrows = 2";
        assert_eq!(run(loose, &[recs(&[BASE, &far])]).kept, [0]);
    }

    #[test]
    fn short_empty_and_null_texts() {
        // Shorter than a shingle: the whole text is one shingle, so only an equal text matches.
        let o = run("", &[recs(&["hello world", "Hello, world!", "hello there"])]);
        assert_eq!(o.kept, [0, 2]);
        // No words: kept, never compared, and counted in the stats.
        let null = Record::new().with("id", 3i64).with("text", Value::Null);
        let mut o = run("", &[vec![rec(1, ""), rec(2, " ... "), null.clone(), null]]);
        assert_eq!(o.kept, [1, 2, 3, 3]);
        let stats: HashMap<String, Value> = o.ctx.take_stats().into_iter().collect();
        assert_eq!(stats["records_without_text"], Value::Int(4));
    }

    #[test]
    fn several_fields_are_read_as_one_text() {
        let r = |id: i64, title: &str, body: &str| Record::new().with("id", id).with("title", title).with("body", body);
        let o = run(
            "fields = [\"title\", \"body\"]",
            &[vec![
                r(1, "Fox report", BASE),
                r(2, "fox REPORT", BASE),
                r(3, "A different title that is long enough to change the shingles a lot", BASE),
            ]],
        );
        assert_eq!(o.kept, [1, 3]);
    }

    #[test]
    fn values_that_are_not_text_are_rejected_with_their_record() {
        let mixed = vec![rec(1, BASE), Record::new().with("id", 2i64).with("text", 42i64), rec(3, OTHER)];
        let mut o = run("", &[mixed]);
        assert_eq!(o.kept, [1, 3]);
        let rejected = o.ctx.take_rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].reason, "field `text` holds int 42, not text; `near_dedup` compares text");
        assert_eq!(rejected[0].record.as_ref().and_then(|r| r.get("id")), Some(&Value::Int(2)));

        // A column of numbers gives the same answer per record as a mixed one.
        let mut o = run("fields = \"id\"", &[vec![rec(1, BASE), rec(2, OTHER)]]);
        assert_eq!(o.kept, Vec::<i64>::new());
        let reasons: Vec<String> = o.ctx.take_rejected().into_iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            [
                "field `id` holds int 1, not text; `near_dedup` compares text",
                "field `id` holds int 2, not text; `near_dedup` compares text"
            ]
        );
        let mut ctx = StepContext::new("near", 0, 0, Default::default());
        let mut s = step("fields = [\"txt\"]");
        let err = s.process(&Batch::from_records(&[rec(1, BASE)]), &mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "field `txt` is not in the data (fields: id, text)");
    }

    #[test]
    fn bad_keys_are_reported_at_their_place() {
        check_build_errors(
            "near_dedup",
            "fields = []\nshingle = \"token\"\nshingle_size = 0\nbands = 0\nthreshold = 1.5\nnormalize = [\"lowercse\"]\nband = 3",
            &[
                "1:10 `fields` is empty: name the text field(s) to compare, or leave `fields` out to use `text`",
                "2:11 `shingle` must be one of \"word\", \"char\", not \"token\"",
                "3:16 `shingle_size` must be from 1 to 100, not 0",
                "4:9 `bands` must be at least 1",
                "5:13 `threshold` is a Jaccard similarity: above 0 and at most 1, not 1.5",
                "6:13 unknown normalisation \"lowercse\" (did you mean \"lowercase\"?)",
                "7:1 unknown key `band` in step",
            ],
        );
        check_build_errors(
            "near_dedup",
            "bands = 64\nrows = 32\nthreshold = 0\nshingle_size = -3",
            &[
                "4:16 `shingle_size` must not be negative",
                "2:8 `bands` × `rows` is 2048 min-hashes per record; at most 1024 are allowed",
                "3:13 `threshold` is a Jaccard similarity: above 0 and at most 1, not 0",
            ],
        );
        check_build_errors(
            "near_dedup",
            "rows = 0\nthreshold = \"high\"",
            &["1:8 `rows` must be at least 1", "2:13 `threshold` must be a number, not a string"],
        );
    }

    #[test]
    fn bands_that_miss_most_pairs_at_the_threshold_are_warned_about() {
        check_build_errors(
            "near_dedup",
            "bands = 2\nrows = 20",
            &[
                "2:8 with 2 bands of 20 rows, a pair at similarity 0.8 shares a band with probability 0.02, and pairs that share none are never compared: 98% of such near duplicates would be kept unseen",
            ],
        );
        let p = crate::tests::params("threshold = 0.5");
        assert!(build(&p).is_some(), "a warning does not stop the step");
        let d = p.finish(&KIND.all_keys());
        assert!(!d.has_errors());
        assert_eq!(
            d.0[0].message,
            "with 16 bands of 7 rows, a pair at similarity 0.5 shares a band with probability 0.12, and pairs that share none are never compared: 88% of such near duplicates would be kept unseen"
        );
        assert_eq!(
            d.0[0].help.as_deref(),
            Some("more bands of fewer rows find more: bands = 38, rows = 3 find such a pair with probability 0.99")
        );
        // The defaults find pairs at 0.8 almost always: no warning.
        check_build_errors("near_dedup", "", &[]);
    }

    #[test]
    fn the_index_finds_every_id_and_stays_compact() {
        let mut t = BandTable::default();
        let mut rng = Rng(7);
        let fps: Vec<u32> = (0..20_000).map(|i| if i % 10 == 0 { 12_345 } else { rng.next() as u32 }).collect();
        for (id, &fp) in fps.iter().enumerate() {
            t.insert(fp, id as u32);
        }
        let mut found = Vec::new();
        for (id, &fp) in fps.iter().enumerate() {
            found.clear();
            t.find(fp, &mut found);
            assert!(found.contains(&(id as u32)), "id {id} lost");
        }
        found.clear();
        t.find(12_345, &mut found);
        assert_eq!(found.len(), 2_000, "every id under a shared fingerprint");
        // 8 bytes a slot, at least 53% full once grown.
        let per_id = t.heap_size() as f64 / fps.len() as f64;
        assert!((8.0..=15.1).contains(&per_id), "{per_id} bytes per id");
    }

    #[test]
    fn signatures_spill_to_disk_and_read_back() {
        let mut s = SignatureStore::new(4, 16);
        let sig = |i: u16| [i, i.wrapping_mul(7), 3, i ^ 0xffff];
        for i in 0..10 {
            s.push(&sig(i)).unwrap();
        }
        assert_eq!(s.len(), 10);
        assert_eq!(s.on_disk, 10, "spilled every 8 bytes");
        s.push(&sig(10)).unwrap();
        assert_eq!((s.on_disk, s.len()), (10, 11));
        for i in 0..11 {
            assert_eq!(s.matches(i as usize, &sig(i)).unwrap(), 4, "signature {i}");
            assert_eq!(s.matches(i as usize, &[i, 0, 3, 0]).unwrap(), if i == 0 { 3 } else { 2 }, "signature {i}");
        }
    }

    /// xorshift64*, so that the generated corpus is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            ((u128::from(self.next()) * n as u128) >> 64) as usize
        }

        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + self.below(hi - lo + 1)
        }
    }

    /// Word `n` of a made-up vocabulary: syllables spelling `n` in base 16.
    fn word(n: usize) -> String {
        const SYLLABLES: [&str; 16] =
            ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "je", "ko", "pa"];
        let mut x = n + 16;
        let mut w = String::new();
        while x > 0 {
            w.push_str(SYLLABLES[x % 16]);
            x /= 16;
        }
        w
    }

    /// Writes words as sentences; `style` decides the capitals, punctuation and spacing,
    /// which the default normalisation removes.
    fn render(words: &[usize], style: u64) -> String {
        let mut rng = Rng(style | 1);
        let mut s = String::new();
        let mut capital = true;
        for (i, &w) in words.iter().enumerate() {
            if i > 0 {
                s.push_str(if rng.below(20) == 0 { "  " } else { " " });
            }
            let w = word(w);
            if capital {
                let mut c = w.chars();
                s.extend(c.next().map(|c| c.to_ascii_uppercase()));
                s.push_str(c.as_str());
            } else {
                s.push_str(&w);
            }
            capital = false;
            match rng.below(14) {
                0 => {
                    s.push('.');
                    capital = true;
                }
                1 => s.push(','),
                _ => {}
            }
        }
        s.push('.');
        s
    }

    const VOCABULARY: usize = 4000;

    /// `m` random edits (a word replaced, inserted or removed) of `words`.
    fn edit(words: &[usize], m: usize, rng: &mut Rng) -> Vec<usize> {
        let mut w = words.to_vec();
        for _ in 0..m {
            let at = rng.below(w.len());
            match rng.below(3) {
                0 => w[at] = rng.below(VOCABULARY),
                1 => w.insert(at, rng.below(VOCABULARY)),
                _ if w.len() > 10 => {
                    w.remove(at);
                }
                _ => w[at] = rng.below(VOCABULARY),
            }
        }
        w
    }

    /// What each generated document is.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        Original,
        /// A planted near duplicate: similarity to its original at least 0.8.
        Plant,
        /// Similar to its original, but from 0.5 to 0.7: must be kept.
        Decoy,
    }

    /// A seeded corpus: distinct documents of 60–140 words, with planted near duplicates
    /// (the same words restyled, or up to 3 edits, exact similarity ≥ 0.8 to an earlier
    /// document) and decoys (more edits, exact similarity 0.5–0.7), in a random order in
    /// which each copy comes after its original.
    fn corpus(n: usize, seed: u64) -> Vec<(String, Kind)> {
        let mut rng = Rng(seed);
        let mut originals: Vec<Vec<usize>> = Vec::new();
        let mut docs = Vec::with_capacity(n);
        while docs.len() < n {
            let roll = rng.below(100);
            if originals.is_empty() || roll < 70 {
                let len = rng.range(60, 140);
                let words: Vec<usize> = (0..len).map(|_| rng.below(VOCABULARY)).collect();
                docs.push((render(&words, rng.next()), Kind::Original));
                originals.push(words);
                continue;
            }
            let src = &originals[rng.below(originals.len())];
            let base = shingles(&render(src, 1), 5);
            let (kind, range) = if roll < 88 { (Kind::Plant, 0.8..=1.0) } else { (Kind::Decoy, 0.5..=0.7) };
            for _ in 0..50 {
                let m = match kind {
                    Kind::Plant => rng.below(4),
                    _ => rng.range(src.len() / 30, src.len() / 12),
                };
                let copy = edit(src, m, &mut rng);
                if range.contains(&jaccard(&base, &shingles(&render(&copy, 1), 5))) {
                    docs.push((render(&copy, rng.next()), kind));
                    break;
                }
            }
        }
        docs
    }

    /// The exact answer: greedily in order, a document is a near duplicate when its exact
    /// Jaccard similarity to a document kept before it is at least `threshold`.
    fn exact_near_duplicates(texts: &[&str], threshold: f64) -> Vec<bool> {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let sets: Vec<Vec<usize>> = texts
            .iter()
            .map(|t| {
                let mut v: Vec<usize> = shingles(t, 5)
                    .into_iter()
                    .map(|s| {
                        let n = ids.len();
                        *ids.entry(s).or_insert(n)
                    })
                    .collect();
                v.sort_unstable();
                v
            })
            .collect();
        let mut kept_with: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
        let mut dup = vec![false; texts.len()];
        for (j, set) in sets.iter().enumerate() {
            let mut shared: HashMap<usize, usize> = HashMap::new();
            for &s in set {
                for &i in &kept_with[s] {
                    *shared.entry(i).or_default() += 1;
                }
            }
            dup[j] = shared.iter().any(|(&i, &n)| n as f64 / (set.len() + sets[i].len() - n) as f64 >= threshold);
            if !dup[j] {
                for &s in set {
                    kept_with[s].push(j);
                }
            }
        }
        dup
    }

    #[test]
    fn recall_and_precision_against_exact_jaccard_on_a_planted_corpus() {
        let docs = corpus(3000, 0x5eed_0001);
        let texts: Vec<&str> = docs.iter().map(|(t, _)| t.as_str()).collect();
        let count = |k: Kind| docs.iter().filter(|d| d.1 == k).count();
        let (plants, decoys) = (count(Kind::Plant), count(Kind::Decoy));
        assert!(plants >= 400 && decoys >= 250, "{plants} plants, {decoys} decoys");
        let truth = exact_near_duplicates(&texts, 0.8);
        let batches: Vec<Vec<Record>> = texts
            .chunks(500)
            .enumerate()
            .map(|(b, c)| c.iter().enumerate().map(|(i, t)| rec((b * 500 + i) as i64, t)).collect())
            .collect();
        let kept: HashSet<i64> = run("", &batches).kept.into_iter().collect();
        let dropped: Vec<bool> = (0..texts.len()).map(|i| !kept.contains(&(i as i64))).collect();
        let true_pos = dropped.iter().zip(&truth).filter(|(d, t)| **d && **t).count();
        let (n_dropped, n_true) = (dropped.iter().filter(|d| **d).count(), truth.iter().filter(|t| **t).count());
        let recall = true_pos as f64 / n_true as f64;
        let precision = true_pos as f64 / n_dropped as f64;
        let summary = format!(
            "{} documents ({plants} planted near duplicates, {decoys} decoys): {n_true} near duplicates by exact Jaccard, {n_dropped} dropped, {true_pos} rightly: recall {recall:.3}, precision {precision:.3}",
            texts.len()
        );
        assert!(n_true >= plants, "{summary}");
        assert!(recall >= 0.9, "{summary}");
        assert!(precision >= 0.95, "{summary}");
        // Every decoy is kept, or the test would not be testing precision.
        let decoys_dropped = docs.iter().zip(&dropped).filter(|((_, k), d)| *k == Kind::Decoy && **d).count();
        assert!(decoys_dropped * 20 <= decoys, "{decoys_dropped} decoys dropped; {summary}");
    }

    #[test]
    fn the_output_does_not_depend_on_batch_boundaries_or_threads() {
        let docs = corpus(600, 0x5eed_0002);
        let records: Vec<Record> = docs.iter().enumerate().map(|(i, (t, _))| rec(i as i64, t)).collect();
        let in_one = run("", std::slice::from_ref(&records)).kept;
        assert!(in_one.len() < records.len() * 9 / 10, "the corpus has near duplicates to drop");
        let small: Vec<Vec<Record>> = records.chunks(7).map(<[Record]>::to_vec).collect();
        assert_eq!(run("", &small).kept, in_one);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(pool.install(|| run("", std::slice::from_ref(&records)).kept), in_one, "{threads} threads");
        }
    }

    #[test]
    fn tokenisers_follow_their_definitions() {
        let words = |t: &str, strip: bool| {
            let mut v = Vec::new();
            for_each_word(t, strip, |w| v.push(String::from_utf8_lossy(w).into_owned()));
            v
        };
        assert_eq!(words(" don't\u{a0}stop—now ", true), ["don", "t", "stop", "now"]);
        assert_eq!(words(" don't\u{a0}stop—now ", false), ["don't", "stop—now"]);
        assert_eq!(words("", true), Vec::<String>::new());
        let chars = |t: &str, strip: bool, collapse: bool| {
            let mut s = String::new();
            for_each_char(t, strip, collapse, |c| s.push(c));
            s
        };
        assert_eq!(chars("  a,  b\t\n", true, true), "a b");
        assert_eq!(chars("  a,  b\t\n", false, true), "a, b");
        assert_eq!(chars("a, b\t", true, false), "a  b\t");
        // Equal words hash equal wherever they are; every byte and the length count.
        assert_eq!(hash_bytes(b"abcdefghij"), hash_bytes(&b"xabcdefghij"[1..]));
        assert_ne!(hash_bytes(b"abc"), hash_bytes(b"abc\0"));
        let words: Vec<&[u8]> = vec![
            b"",
            b"a",
            b"b",
            b"ab",
            b"ba",
            b"abc",
            b"acb",
            b"abcd",
            b"abce",
            b"abcde",
            b"bbcde",
            b"abcdefgh",
            b"abcdefgi",
            b"abcdefghi",
            b"bbcdefghi",
            b"abcdefghijklmnopq",
            b"abcdefghijklmnopr",
        ];
        let hashes: HashSet<u64> = words.iter().map(|w| hash_bytes(w)).collect();
        assert_eq!(hashes.len(), words.len());
    }
}
