//! The `compare` step: how a synthetic set differs from the real one, field by field,
//! written into the run's stats.

use std::collections::{BTreeMap, BinaryHeap, HashMap};

use weave_core::{
    Batch, CanonicalConfig, Merge, Params, Shape, Step, StepContext, StepError, StepInfo, StepKind, Value, ValueRef,
};

use super::{position_key, salt};

mod parts;

/// The `compare` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "compare",
        Shape::Merge,
        "compare synthetic records (second input) with real ones (first) field by field into the run's stats: lengths, values, label balance, vocabulary, Jensen-Shannon divergence, KS; passes the synthetic records on",
        ["fields", "label", "top", "max_categories", "ks_sample", "seed"],
        build,
    )
});

const INPUTS: [&str; 2] = ["real", "synthetic"];

/// Lengths past this count as this in percentiles (the mean stays exact).
const MAX_LENGTH: usize = 1 << 16;

/// Compares the synthetic records (the second input in `after`) with the real ones (the
/// first), and passes the synthetic records on unchanged; the real ones are only the
/// reference, counted as dropped under `real (reference only)`.
///
/// It is a merge because a sink takes one input; placed before an export of the
/// synthetic set, it adds no pass over the data. The figures go to the run's stats
/// (`records`, `fields`, `label_balance`, `schema`), per field:
///
/// - text (string values): length in characters and in words (mean, p50, p95, nearest
///   rank); vocabulary (lowercased runs of letters and digits): sizes, Jaccard index of
///   the two vocabularies, share of synthetic tokens unseen in the real set, and the
///   Jensen-Shannon divergence of the token distributions;
/// - categories (fields with at most `max_categories` distinct values over both sets):
///   the `top` values of each with their shares, and the divergence of the distributions;
/// - numbers (numbers, or strings that all read as numbers, as CSV fields do): mean, min,
///   max, p50, p95 and the two-sample Kolmogorov-Smirnov statistic.
///
/// Jensen-Shannon divergence is in bits (from 0, same distribution, to 1, nothing in
/// common).
///
/// **Memory** does not grow with the data: lengths are counted in histograms (one counter
/// per length, lengths past 65,535 counted as 65,535 in percentiles), category counts stop
/// at `max_categories` values, and the numbers behind KS and the percentiles are a seeded
/// uniform sample of at most `ks_sample` values per field and set (10,000 by default:
/// exact below that, and beyond it the KS statistic is within about 0.014 of the exact
/// one, 95% of the time). The vocabulary is counted exactly, as 64-bit token hashes: it
/// grows with the number of distinct tokens (about 40 bytes each), not with the data.
///
/// **In a shard of a job** (see `compare/parts.rs`), each shard passes its synthetic
/// records on and publishes its part of the comparison; the last shard takes in every
/// shard's part and writes the job's figures, the single process's; the others write
/// their own record counts.
#[derive(Debug)]
pub struct Compare {
    fields: Option<Vec<String>>,
    label: Option<String>,
    top: usize,
    max_categories: usize,
    ks_sample: usize,
    seed: Option<u64>,
    config: CanonicalConfig,
    tally: Tally,
    done: [bool; 2],
    buf: String,
    /// In a shard of a job: its part of the comparison, published for the shard that
    /// writes the job's figures (see [`parts`]).
    sharded: Option<parts::Sharded>,
    /// Whether the tally is a shard's part: its numbers are published rather than
    /// sampled (see [`parts`]).
    part: bool,
}

/// What the records seen say, field by field: a shard's part of the comparison, or the
/// whole of it.
#[derive(Debug, Default)]
struct Tally {
    /// The fields in the order they were first seen.
    state: Vec<FieldState>,
    /// A field's place in `state`, so that every field of a wide record is found at once.
    index: HashMap<String, usize>,
    labels: HashMap<String, [u64; 2]>,
    records: [u64; 2],
}

impl Tally {
    fn field(&mut self, name: &str) -> usize {
        match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.index.insert(name.to_owned(), self.state.len());
                self.state.push(FieldState::new(name));
                self.state.len() - 1
            }
        }
    }
}

fn build(p: &Params) -> Option<Step> {
    let fields = super::field_list(p, "fields", "compare every field");
    let label = p.str("label");
    let top = p.u64("top").unwrap_or(10) as usize;
    let max_categories = p.u64("max_categories").unwrap_or(100) as usize;
    let ks_sample = p.u64("ks_sample").unwrap_or(10_000);
    if ks_sample < 2
        && let Some(item) = p.item("ks_sample")
    {
        p.error_at(item, "`ks_sample` must be at least 2");
    }
    let seed = super::seed_key(p);
    // In a shard of a job, the figures need every shard's records: the shards exchange
    // their parts of the comparison.
    let exchange = crate::exchange::Exchange::of(p).unwrap_or_else(|e| {
        p.push(weave_core::Diagnostic::error(e).with_code("no-exchange"));
        None
    });
    if p.has_errors() {
        return None;
    }
    let config = exchange.as_ref().map_or_else(|| p.canonical(), |x| x.keyed(p.canonical()));
    let shard = p.context().shard();
    Some(Step::Merge(Box::new(Compare {
        fields,
        label,
        top,
        max_categories,
        ks_sample: ks_sample as usize,
        seed,
        config,
        tally: Tally::default(),
        done: [false; 2],
        buf: String::new(),
        part: exchange.is_some(),
        sharded: exchange.zip(shard).map(|(x, shard)| parts::Sharded::new(x, shard)),
    })))
}

impl StepInfo for Compare {
    fn fields_read(&self) -> Vec<String> {
        self.label.iter().cloned().collect()
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    /// The figures are over both sets whole: in a job, each shard publishes its part of
    /// them, and one shard takes in every part and writes the job's figures.
    fn shards_by_exchange(&self) -> bool {
        true
    }

    /// The shard that writes the job's figures (the last) takes in every shard's part.
    fn waits_for_every_shard(&self) -> bool {
        true
    }

    fn shard_role(&self) -> Option<&'static str> {
        Some(
            "passes its synthetic records on; publishes its part of the figures, and the last shard takes in every shard's and writes the job's",
        )
    }

    /// Not when it only publishes (`weave run --stage`): it passes nothing on then, which
    /// is not the output its key names.
    fn cacheable(&self) -> bool {
        !self.sharded.as_ref().is_some_and(parts::Sharded::publish_only)
    }
}

/// Counts of lengths, one counter per length.
#[derive(Debug, Default)]
struct Lengths {
    counts: Vec<u64>,
    n: u64,
    sum: u64,
}

impl Lengths {
    fn add(&mut self, len: usize) {
        let i = len.min(MAX_LENGTH - 1);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.n += 1;
        self.sum += len as u64;
    }

    /// The nearest-rank percentile `q` (0 to 1).
    fn percentile(&self, q: f64) -> u64 {
        let rank = ((q * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (len, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return len as u64;
            }
        }
        0
    }

    fn summary(&self) -> Value {
        let mean = if self.n == 0 { 0.0 } else { self.sum as f64 / self.n as f64 };
        Value::Map(
            BTreeMap::from([
                ("mean".to_owned(), Value::Float(mean)),
                ("p50".to_owned(), Value::Int(self.percentile(0.5) as i64)),
                ("p95".to_owned(), Value::Int(self.percentile(0.95) as i64)),
            ])
            .into(),
        )
    }
}

/// A seeded uniform sample of at most `cap` numbers: the ones with the smallest random
/// keys (a bottom-k sample), so it does not depend on batch sizes.
#[derive(Debug, Default)]
struct NumberSample {
    heap: BinaryHeap<(u64, u64)>,
    seen: u64,
}

impl NumberSample {
    fn add(&mut self, x: f64, key: u64, cap: usize) {
        self.seen += 1;
        if self.heap.len() < cap {
            self.heap.push((key, x.to_bits()));
        } else if self.heap.peek().is_some_and(|top| key < top.0) {
            self.heap.pop();
            self.heap.push((key, x.to_bits()));
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.heap.iter().map(|(_, b)| f64::from_bits(*b)).collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// What one set says about one field.
#[derive(Debug, Default)]
struct Side {
    values: u64,
    /// Whether a record of the set has the field (a batch of the set has it as a column).
    /// Its nulls are then the set's records without a value for it, null or missing,
    /// counted at the end: how the records fell into batches (a batch's columns are the
    /// fields of any of its records) changes nothing.
    present: bool,
    chars: Lengths,
    words: Lengths,
    tokens: u64,
    /// Whether every value so far is a number (or a string that reads as one).
    numeric: bool,
    number_sum: f64,
    min: f64,
    max: f64,
    sample: NumberSample,
}

impl Side {
    /// The set's records without a value for the field (`records` of the set), when any
    /// record of the set has it.
    fn nulls(&self, records: u64) -> u64 {
        if self.present { records.saturating_sub(self.values) } else { 0 }
    }
}

#[derive(Debug)]
struct FieldState {
    name: String,
    sides: [Side; 2],
    vocab: Vocabulary,
    /// Value → count in each set, until there are too many values to be categories.
    categories: Option<HashMap<String, [u64; 2]>>,
}

impl FieldState {
    fn new(name: &str) -> Self {
        let side = || Side { numeric: true, min: f64::INFINITY, max: f64::NEG_INFINITY, ..Side::default() };
        FieldState {
            name: name.to_owned(),
            sides: [side(), side()],
            vocab: Vocabulary::default(),
            categories: Some(HashMap::new()),
        }
    }
}

/// Calls `f` with the 64-bit hash of each token of `s`: maximal runs of letters and
/// digits, lowercased (hashed as they are read, so nothing is allocated; ASCII text takes
/// a byte at a time).
fn for_each_token(s: &str, mut f: impl FnMut(u64)) {
    const FNV: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = FNV;
    let mut in_token = false;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let alnum = if b < 0x80 {
            i += 1;
            if b.is_ascii_alphanumeric() {
                h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(PRIME);
                true
            } else {
                false
            }
        } else {
            let c = s[i..].chars().next().unwrap_or_default();
            i += c.len_utf8();
            if c.is_alphanumeric() {
                for l in c.to_lowercase() {
                    let mut buf = [0u8; 4];
                    for byte in l.encode_utf8(&mut buf).bytes() {
                        h = (h ^ u64::from(byte)).wrapping_mul(PRIME);
                    }
                }
                true
            } else {
                false
            }
        };
        if alnum {
            in_token = true;
        } else if in_token {
            f(weave_core::rng::mix(h));
            h = FNV;
            in_token = false;
        }
    }
    if in_token {
        f(weave_core::rng::mix(h));
    }
}

/// A hasher for keys that are already well-mixed 64-bit hashes: it passes them through,
/// which spares the vocabulary map a second hash per token.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// Token hash → count in each set.
type Vocabulary = HashMap<u64, [u64; 2], std::hash::BuildHasherDefault<PassThrough>>;

/// Jensen-Shannon divergence, in bits, of two distributions given as counts of the same
/// outcomes: 0 for the same distribution, 1 for two with nothing in common.
/// The sum runs in a fixed order (the pairs sorted), so the last bits of the result do not
/// depend on the order a hash map hands the counts over in.
pub(crate) fn js_divergence(pairs: impl Iterator<Item = (u64, u64)>) -> f64 {
    let mut pairs: Vec<(u64, u64)> = pairs.collect();
    pairs.sort_unstable();
    let (ta, tb) = pairs.iter().fold((0u64, 0u64), |(a, b), (x, y)| (a + x, b + y));
    if ta == 0 || tb == 0 {
        return if ta == tb { 0.0 } else { 1.0 };
    }
    let mut js = 0.0;
    for (a, b) in pairs {
        let p = a as f64 / ta as f64;
        let q = b as f64 / tb as f64;
        let m = (p + q) / 2.0;
        if p > 0.0 {
            js += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            js += 0.5 * q * (q / m).log2();
        }
    }
    js.clamp(0.0, 1.0)
}

/// The two-sample Kolmogorov-Smirnov statistic of two sorted samples: the largest gap
/// between their empirical distribution functions.
pub(crate) fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return if a.len() == b.len() { 0.0 } else { 1.0 };
    }
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        // Step past every copy of the next value in both, then compare.
        let x = if a[i] <= b[j] { a[i] } else { b[j] };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// The nearest-rank percentile `q` of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Compare {
    /// Takes `batch` of input `side` into the tally. In a shard of a job it also returns,
    /// by field, the numbers that count in the field's figures, in order (the job's mean
    /// and sample are made from every shard's, in shard order; the shard keeps no sample).
    fn observe(&mut self, side: usize, batch: &Batch, seed: u64) -> Result<Vec<(usize, Vec<f64>)>, StepError> {
        let names: Vec<String> = match &self.fields {
            Some(f) => f.iter().filter(|n| batch.schema().index_of(n).is_some()).cloned().collect(),
            None => batch.schema().names().map(str::to_owned).collect(),
        };
        let sharded = self.part;
        let (cap, max_categories) = (if sharded { 0 } else { self.ks_sample }, self.max_categories);
        let mut numbers = Vec::new();
        for name in names {
            let i = self.tally.field(&name);
            let Some(col) = batch.column(&name) else { continue };
            let st = &mut self.tally.state[i];
            st.sides[side].present |= !batch.is_empty();
            let mut published = Vec::new();
            for row in 0..batch.len() {
                let v = col.get(row);
                let s = &mut st.sides[side];
                if v.is_null() {
                    continue;
                }
                s.values += 1;
                if let ValueRef::Str(text) = v {
                    s.chars.add(text.chars().count());
                    s.words.add(text.split_whitespace().count());
                    let vocab = &mut st.vocab;
                    let mut n = 0;
                    for_each_token(text, |t| {
                        vocab.entry(t).or_default()[side] += 1;
                        n += 1;
                    });
                    s.tokens += n;
                }
                if s.numeric {
                    // Statistics are in floats: an integer past 2^53 counts as the nearest.
                    let x = match v {
                        ValueRef::Str(t) => t.trim().parse::<f64>().ok(),
                        v => v.as_f64(),
                    };
                    match x {
                        // NaN and the infinities (a float, or CSV's `NaN`, `inf`) are numbers
                        // no mean or percentile can hold: left out, as a null is.
                        Some(x) if !x.is_finite() => {}
                        Some(x) => {
                            s.number_sum += x;
                            s.min = s.min.min(x);
                            s.max = s.max.max(x);
                            let key = position_key(seed, salt::COMPARE ^ side as u64, s.sample.seen);
                            s.sample.add(x, key, cap);
                            if sharded {
                                published.push(x);
                            }
                        }
                        None => {
                            s.numeric = false;
                            s.sample = NumberSample::default();
                            // The field is no number field: what this batch had of it
                            // counts for nothing.
                            published.clear();
                        }
                    }
                }
                if let Some(cats) = &mut st.categories {
                    let key: &str = match v {
                        ValueRef::Str(t) => t,
                        other => {
                            use std::fmt::Write;
                            self.buf.clear();
                            // Maps by their entries, whatever their order, as they compare.
                            let _ = write!(self.buf, "{}", other.canonical());
                            &self.buf
                        }
                    };
                    let full = cats.len() >= max_categories;
                    match cats.get_mut(key) {
                        Some(c) => c[side] += 1,
                        None if !full => {
                            let mut c = [0; 2];
                            c[side] = 1;
                            cats.insert(key.to_owned(), c);
                        }
                        None => st.categories = None,
                    }
                }
            }
            if !published.is_empty() {
                numbers.push((i, published));
            }
        }
        if let Some(label) = &self.label {
            let col = super::column(batch, label)?;
            for row in 0..batch.len() {
                let v = col.get(row);
                let key = match v {
                    ValueRef::Str(t) => t.to_owned(),
                    other => other.canonical().to_string(),
                };
                self.tally.labels.entry(key).or_default()[side] += 1;
            }
        }
        Ok(numbers)
    }

    /// The figures for one field.
    fn report(&self, f: &FieldState, records: [u64; 2]) -> Value {
        let mut m = BTreeMap::new();
        let both = f.sides.iter().all(|s| s.values > 0);
        for (side, s) in f.sides.iter().enumerate() {
            let mut sm = BTreeMap::from([
                ("values".to_owned(), Value::Int(s.values as i64)),
                ("nulls".to_owned(), Value::Int(s.nulls(records[side]) as i64)),
            ]);
            if s.chars.n > 0 {
                sm.insert("chars".to_owned(), s.chars.summary());
                sm.insert("words".to_owned(), s.words.summary());
            }
            // Over the numbers seen (NaN and the infinities are left out).
            if s.numeric && s.sample.seen > 0 {
                let sorted = s.sample.sorted();
                sm.insert(
                    "number".to_owned(),
                    Value::Map(
                        BTreeMap::from([
                            ("mean".to_owned(), Value::Float(s.number_sum / s.sample.seen as f64)),
                            ("min".to_owned(), Value::Float(s.min)),
                            ("max".to_owned(), Value::Float(s.max)),
                            ("p50".to_owned(), Value::Float(percentile(&sorted, 0.5))),
                            ("p95".to_owned(), Value::Float(percentile(&sorted, 0.95))),
                        ])
                        .into(),
                    ),
                );
            }
            m.insert(INPUTS[side].to_owned(), Value::Map(sm.into()));
        }
        if both && f.sides.iter().all(|s| s.tokens > 0) {
            let types = |side: usize| f.vocab.values().filter(|c| c[side] > 0).count() as u64;
            let shared = f.vocab.values().filter(|c| c[0] > 0 && c[1] > 0).count() as u64;
            let (tr, ts) = (types(0), types(1));
            let unseen: u64 = f.vocab.values().filter(|c| c[0] == 0).map(|c| c[1]).sum();
            m.insert(
                "vocabulary".to_owned(),
                Value::Map(
                    BTreeMap::from([
                        ("real".to_owned(), Value::Int(tr as i64)),
                        ("synthetic".to_owned(), Value::Int(ts as i64)),
                        ("jaccard".to_owned(), Value::Float(shared as f64 / (tr + ts - shared) as f64)),
                        ("unseen_token_share".to_owned(), Value::Float(unseen as f64 / f.sides[1].tokens as f64)),
                        (
                            "js_divergence".to_owned(),
                            Value::Float(js_divergence(f.vocab.values().map(|c| (c[0], c[1])))),
                        ),
                    ])
                    .into(),
                ),
            );
        }
        if let Some(cats) = &f.categories
            && both
        {
            let top = |side: usize| {
                let total = f.sides[side].values as f64;
                let mut v: Vec<(&String, u64)> =
                    cats.iter().map(|(k, c)| (k, c[side])).filter(|(_, c)| *c > 0).collect();
                v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                Value::List(
                    v.into_iter()
                        .take(self.top)
                        .map(|(k, c)| Value::List(vec![Value::Str(k.clone()), Value::Float(c as f64 / total)]))
                        .collect(),
                )
            };
            m.insert(
                "categories".to_owned(),
                Value::Map(
                    BTreeMap::from([
                        ("distinct".to_owned(), Value::Int(cats.len() as i64)),
                        ("real_top".to_owned(), top(0)),
                        ("synthetic_top".to_owned(), top(1)),
                        ("js_divergence".to_owned(), Value::Float(js_divergence(cats.values().map(|c| (c[0], c[1]))))),
                    ])
                    .into(),
                ),
            );
        }
        if both && f.sides.iter().all(|s| s.numeric) {
            let (a, b) = (f.sides[0].sample.sorted(), f.sides[1].sample.sorted());
            m.insert(
                "ks".to_owned(),
                Value::Map(
                    BTreeMap::from([
                        ("statistic".to_owned(), Value::Float(ks_statistic(&a, &b))),
                        ("real_sample".to_owned(), Value::Int(a.len() as i64)),
                        ("synthetic_sample".to_owned(), Value::Int(b.len() as i64)),
                    ])
                    .into(),
                ),
            );
        }
        Value::Map(m.into())
    }
}

impl Compare {
    /// Fails when a field named in `fields` is in neither set (over the whole job, in a
    /// shard of one).
    fn check_fields(&self, tally: &Tally) -> Result<(), StepError> {
        if let Some(fields) = &self.fields {
            let missing: Vec<&String> = fields.iter().filter(|f| !tally.index.contains_key(f.as_str())).collect();
            if !missing.is_empty() {
                let names: Vec<String> = missing.iter().map(|f| format!("`{f}`")).collect();
                return Err(StepError::fatal(format!("{} not in the real or the synthetic records", names.join(", "))));
            }
        }
        Ok(())
    }

    /// Writes the figures of `tally` into the run's stats.
    fn figures(&self, tally: &Tally, ctx: &mut StepContext) {
        ctx.set_stat("records", records_figure(tally.records));
        let fields: BTreeMap<String, Value> =
            tally.state.iter().map(|f| (f.name.clone(), self.report(f, tally.records))).collect();
        ctx.set_stat("fields", Value::Map(fields.into()));
        let only = |side: usize| {
            Value::List(
                tally
                    .state
                    .iter()
                    .filter(|f| f.sides[side].present && !f.sides[1 - side].present)
                    .map(|f| Value::Str(f.name.clone()))
                    .collect(),
            )
        };
        ctx.set_stat(
            "schema",
            Value::Map(
                BTreeMap::from([("only_in_real".to_owned(), only(0)), ("only_in_synthetic".to_owned(), only(1))])
                    .into(),
            ),
        );
        if self.label.is_some() {
            let labels = &tally.labels;
            let mut names: Vec<&String> = labels.keys().collect();
            names.sort();
            let share = |side: usize| {
                super::shares(names.iter().map(|n| ((*n).clone(), labels[*n][side])), tally.records[side])
            };
            let missing: Vec<Value> =
                names.iter().filter(|n| labels[**n][1] == 0).map(|n| Value::Str((*n).clone())).collect();
            ctx.set_stat(
                "label_balance",
                Value::Map(
                    BTreeMap::from([
                        ("real".to_owned(), share(0)),
                        ("synthetic".to_owned(), share(1)),
                        ("missing_in_synthetic".to_owned(), Value::List(missing)),
                        (
                            "js_divergence".to_owned(),
                            Value::Float(js_divergence(labels.values().map(|c| (c[0], c[1])))),
                        ),
                    ])
                    .into(),
                ),
            );
        }
    }
}

/// The `records` figure: how many records of each set.
fn records_figure(records: [u64; 2]) -> Value {
    Value::Map(
        BTreeMap::from([
            ("real".to_owned(), Value::Int(records[0] as i64)),
            ("synthetic".to_owned(), Value::Int(records[1] as i64)),
        ])
        .into(),
    )
}

impl Merge for Compare {
    fn process(
        &mut self,
        input: usize,
        batch: &Batch,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        if input >= 2 {
            return Err(StepError::fatal(
                "compare takes two inputs, the real records then the synthetic ones (after = [\"real\", \"synthetic\"]), but this one has more",
            ));
        }
        let seed = self.seed.unwrap_or(ctx.seed());
        // A shard whose part a run before this one published (the stage before, an
        // earlier attempt) has its figures there already: it only counts its records, to
        // check them against the part's.
        let before = match &mut self.sharded {
            Some(s) => s.published_before()?,
            None => false,
        };
        if !before {
            let numbers = self.observe(input, batch, seed)?;
            if let Some(s) = &mut self.sharded {
                s.publish_numbers(input, &numbers, &self.tally)?;
            }
        }
        self.tally.records[input] += batch.len() as u64;
        if self.sharded.as_ref().is_some_and(parts::Sharded::publish_only) {
            return Ok(());
        }
        if input == 1 {
            out.push(batch.clone());
        } else {
            ctx.count_dropped("real (reference only)", batch.len() as u64);
        }
        Ok(())
    }

    fn input_done(&mut self, input: usize, _ctx: &mut StepContext, _out: &mut Vec<Batch>) -> Result<(), StepError> {
        if let Some(d) = self.done.get_mut(input) {
            *d = true;
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &mut StepContext, _out: &mut Vec<Batch>) -> Result<(), StepError> {
        if !self.done[1] {
            return Err(StepError::fatal(
                "compare takes two inputs, the real records then the synthetic ones (after = [\"real\", \"synthetic\"]), but this one has one",
            ));
        }
        let Some(sharded) = &mut self.sharded else {
            self.check_fields(&self.tally)?;
            self.figures(&self.tally, ctx);
            return Ok(());
        };
        let seed = self.seed.unwrap_or(ctx.seed());
        let tally = std::mem::take(&mut self.tally);
        let job = sharded.finish(tally, ctx, seed, self.ks_sample, self.max_categories)?;
        if let Some(job) = job {
            self.check_fields(&job)?;
            self.figures(&job, ctx);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::Record;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn js_divergence_known_answers() {
        // Disjoint: 1 bit. Same: 0.
        assert!(close(js_divergence([(1, 0), (0, 1)].into_iter()), 1.0));
        assert!(close(js_divergence([(3, 6), (1, 2)].into_iter()), 0.0));
        // P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
        // KL(P‖M) = ½·log2(2/3) + ½·log2(2) = 0.2075187496...
        // KL(Q‖M) = log2(4/3) = 0.4150374992...
        // JS = ½(0.2075187496 + 0.4150374992) = 0.3112781244...
        assert!(close(js_divergence([(1, 2), (1, 0)].into_iter()), 0.311_278_124_459_132_8));
        assert!(close(js_divergence(std::iter::empty()), 0.0));
    }

    #[test]
    fn ks_statistic_known_answers() {
        // F_a − F_b is 1/2 from 2 to 5.
        assert!(close(ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]), 0.5));
        assert!(close(ks_statistic(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 1.0));
        assert!(close(ks_statistic(&[1.0, 2.0], &[1.0, 2.0]), 0.0));
        // Ties across the samples: at 1, F_a = 2/3 and F_b = 1/3.
        assert!(close(ks_statistic(&[1.0, 1.0, 2.0], &[1.0, 2.0, 2.0]), 1.0 / 3.0));
    }

    #[test]
    fn tokens_are_lowercased_runs_of_letters_and_digits() {
        let mut a = Vec::new();
        for_each_token("Hello, HELLO wörld-42!", |t| a.push(t));
        assert_eq!(a.len(), 4);
        assert_eq!(a[0], a[1]);
        assert_ne!(a[2], a[3]);
        let mut b = Vec::new();
        for_each_token("  ", |t| b.push(t));
        assert!(b.is_empty());
        // The ASCII path and the Unicode one agree on what a token is.
        let mut c = Vec::new();
        for_each_token("ÉTÉ été Été", |t| c.push(t));
        assert!(c.len() == 3 && c.iter().all(|t| *t == c[0]));
        let mut d = Vec::new();
        for_each_token("hello", |t| d.push(t));
        assert_eq!(d, a[..1]);
    }

    /// Compares `real` with `synthetic` in batches of `batch_size`; returns the stats and
    /// the records passed on.
    fn run(config: &str, real: &[Record], synthetic: &[Record], batch_size: usize) -> (BTreeMap<String, Value>, usize) {
        let Step::Merge(mut m) = build_step("compare", config) else { panic!("compare is a merge") };
        let mut ctx = StepContext::new("compare", 0, 0, Default::default());
        let mut out = Vec::new();
        for (i, records) in [real, synthetic].into_iter().enumerate() {
            for c in records.chunks(batch_size) {
                m.process(i, &Batch::from_records(c), &mut ctx, &mut out).unwrap();
            }
            m.input_done(i, &mut ctx, &mut out).unwrap();
        }
        m.finish(&mut ctx, &mut out).unwrap();
        assert_eq!(ctx.take_dropped(), [("real (reference only)".to_owned(), real.len() as u64)]);
        (ctx.take_stats().into_iter().collect(), out.iter().map(Batch::len).sum())
    }

    fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
        path.iter().fold(v, |v, k| match v {
            Value::Map(m) => m.get(k).unwrap_or_else(|| panic!("no `{k}` in {v}")),
            other => panic!("not a map: {other}"),
        })
    }

    fn float(v: &Value) -> f64 {
        match v {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            other => panic!("not a number: {other}"),
        }
    }

    #[test]
    fn fields_are_compared_by_what_they_hold() {
        let real: Vec<Record> =
            [("the cat sat", "a", 1i64), ("the dog", "a", 2), ("a cat", "b", 3), ("dogs run fast", "b", 4)]
                .into_iter()
                .map(|(t, l, n)| Record::new().with("text", t).with("label", l).with("n", n))
                .collect();
        let synthetic: Vec<Record> =
            [("the cat", "a", 3i64), ("a bird flew", "a", 4), ("the cat", "a", 5), ("x", "a", 6)]
                .into_iter()
                .map(|(t, l, n)| Record::new().with("text", t).with("label", l).with("n", n))
                .collect();
        let (stats, passed) = run("label = \"label\"", &real, &synthetic, 3);
        assert_eq!(passed, 4, "the synthetic records pass on");
        assert_eq!(stats["records"].to_string(), r#"{"real":4,"synthetic":4}"#);
        let text = get(&stats["fields"], &["text"]);
        // Real lengths in words 3, 2, 2, 3: mean 2.5, p50 2, p95 3.
        assert_eq!(get(text, &["real", "words"]).to_string(), r#"{"mean":2.5,"p50":2,"p95":3}"#);
        assert_eq!(get(text, &["synthetic", "chars"]).to_string(), r#"{"mean":6.5,"p50":7,"p95":11}"#);
        // Vocabularies: real {the, cat, sat, dog, a, dogs, run, fast} (8), synthetic
        // {the, cat, a, bird, flew, x} (6); shared {the, cat, a}: Jaccard 3 / 11.
        // Synthetic tokens: 8, of which bird, flew, x (3) are unseen in the real set.
        let vocab = get(text, &["vocabulary"]);
        assert_eq!(get(vocab, &["real"]), &Value::Int(8));
        assert_eq!(get(vocab, &["synthetic"]), &Value::Int(6));
        assert!(close(float(get(vocab, &["jaccard"])), 3.0 / 11.0));
        assert!(close(float(get(vocab, &["unseen_token_share"])), 3.0 / 8.0));
        // Numbers: real 1..4, synthetic 3..6: F_real − F_synth reaches 1/2 at 2.
        let n = get(&stats["fields"], &["n"]);
        assert!(close(float(get(n, &["ks", "statistic"])), 0.5));
        assert_eq!(get(n, &["real", "number", "mean"]), &Value::Float(2.5));
        assert_eq!(get(n, &["synthetic", "number", "p95"]), &Value::Float(6.0));
        // Labels: real half a, half b; synthetic all a: JS = 0.3112781244591328.
        let labels = &stats["label_balance"];
        assert_eq!(get(labels, &["real"]).to_string(), r#"{"a":0.5,"b":0.5}"#);
        assert_eq!(get(labels, &["missing_in_synthetic"]).to_string(), r#"["b"]"#);
        assert!(close(float(get(labels, &["js_divergence"])), 0.311_278_124_459_132_8));
        let cats = get(&stats["fields"], &["label", "categories"]);
        assert_eq!(get(cats, &["synthetic_top"]).to_string(), r#"[["a",1.0]]"#);
        assert_eq!(get(cats, &["real_top"]).to_string(), r#"[["a",0.5],["b",0.5]]"#);
        // Batch size changes nothing.
        assert_eq!(run("label = \"label\"", &real, &synthetic, 1).0, stats);
    }

    #[test]
    fn csv_numbers_are_numbers_and_many_values_are_not_categories() {
        let real: Vec<Record> = (0..300).map(|i| Record::new().with("score", format!("{i}.5"))).collect();
        let synthetic: Vec<Record> = (0..300).map(|i| Record::new().with("score", format!("{}", i + 150))).collect();
        let (stats, _) = run("", &real, &synthetic, 64);
        let score = get(&stats["fields"], &["score"]);
        let Value::Map(m) = score else { panic!() };
        assert!(!m.contains_key("categories"), "300 distinct values: not categories");
        // Real 0.5..299.5, synthetic 150..449: at 149.5 half the real values and none of
        // the synthetic ones are passed.
        assert!(close(float(get(score, &["ks", "statistic"])), 0.5), "{score}");
        let (stats, _) = run("ks_sample = 50", &real, &synthetic, 64);
        let ks = get(&stats["fields"], &["score", "ks"]);
        assert_eq!(get(ks, &["real_sample"]), &Value::Int(50));
        assert!((float(get(ks, &["statistic"])) - 0.5).abs() < 0.3, "a sample of 50 is rough, not wrong: {ks}");
    }

    // regression: a field some records lack counted them as nulls only in the batches where
    // another record had it, so its nulls changed with the batch size (and in a job, with
    // where the shards' batches fell).
    #[test]
    fn nulls_are_the_records_without_a_value_whatever_the_batches() {
        let real: Vec<Record> = (0..10)
            .map(|i| {
                let r = Record::new().with("a", i as i64);
                if i == 4 {
                    r.with("rare", "x")
                } else if i == 7 {
                    r.with("rare", Value::Null)
                } else {
                    r
                }
            })
            .collect();
        let synthetic = vec![Record::new().with("a", 1i64)];
        let (stats, _) = run("", &real, &synthetic, 3);
        let rare = get(&stats["fields"], &["rare"]);
        assert_eq!(get(rare, &["real", "values"]), &Value::Int(1));
        assert_eq!(get(rare, &["real", "nulls"]), &Value::Int(9), "{rare}");
        assert_eq!(get(rare, &["synthetic", "nulls"]), &Value::Int(0), "the synthetic set has no `rare`");
        assert_eq!(stats["schema"].to_string(), r#"{"only_in_real":["rare"],"only_in_synthetic":[]}"#);
        for batch in [1, 2, 10] {
            assert_eq!(run("", &real, &synthetic, batch).0, stats, "batches of {batch}");
        }
    }

    // NaN made every statistic of a field NaN (and CSV's `NaN` made it no number field).
    #[test]
    fn nan_and_infinities_are_left_out_of_the_numbers() {
        let real: Vec<Record> =
            [Value::Float(1.0), Value::Float(f64::NAN), Value::Float(3.0), Value::Float(f64::INFINITY)]
                .into_iter()
                .map(|v| Record::new().with("n", v))
                .collect();
        let synthetic: Vec<Record> =
            ["2", "NaN", "-inf", "4"].into_iter().map(|t| Record::new().with("n", t)).collect();
        let (stats, _) = run("", &real, &synthetic, 2);
        let n = get(&stats["fields"], &["n"]);
        assert_eq!(get(n, &["real", "number", "mean"]), &Value::Float(2.0), "{n}");
        assert_eq!(get(n, &["synthetic", "number", "mean"]), &Value::Float(3.0), "{n}");
        assert!(close(float(get(n, &["ks", "statistic"])), 0.5), "{n}");
    }

    #[test]
    fn schema_differences_are_reported_and_bad_config_is_named() {
        let real = vec![Record::new().with("a", "x").with("b", 1i64)];
        let synthetic = vec![Record::new().with("a", "y").with("c", true)];
        let (stats, _) = run("", &real, &synthetic, 1);
        assert_eq!(stats["schema"].to_string(), r#"{"only_in_real":["b"],"only_in_synthetic":["c"]}"#);

        check_build_errors(
            "compare",
            "fields = []\nks_sample = 1",
            &[
                "1:10 `fields` is empty: name the fields, or leave `fields` out to compare every field",
                "2:13 `ks_sample` must be at least 2",
            ],
        );
        let Step::Merge(mut m) = build_step("compare", "label = \"lbl\"") else { panic!() };
        let mut ctx = StepContext::new("compare", 0, 0, Default::default());
        let err = m.process(0, &Batch::from_records(&real), &mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "field `lbl` is not in the data (fields: a, b)");
        let Step::Merge(mut m) = build_step("compare", "fields = [\"a\", \"zz\"]") else { panic!() };
        for i in 0..2 {
            m.process(i, &Batch::from_records(&real), &mut ctx, &mut Vec::new()).unwrap();
            m.input_done(i, &mut ctx, &mut Vec::new()).unwrap();
        }
        let err = m.finish(&mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "`zz` not in the real or the synthetic records");
        let Step::Merge(mut m) = build_step("compare", "") else { panic!() };
        m.input_done(0, &mut ctx, &mut Vec::new()).unwrap();
        assert!(m.finish(&mut ctx, &mut Vec::new()).unwrap_err().to_string().ends_with("but this one has one"));
    }
}
