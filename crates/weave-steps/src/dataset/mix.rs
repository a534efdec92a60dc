//! The `mix` step: real and synthetic records merged into one dataset.

use std::collections::{BTreeMap, HashMap};

use weave_core::{
    Batch, CanonicalConfig, DataType, Merge, Params, Shape, Step, StepContext, StepError, StepInfo, StepKind, Value,
    ValueRef, did_you_mean,
};

use super::{Classes, column, constant_column, position_key, salt, water_fill};
use crate::exchange::Exchange;

mod sharded;

/// The `mix` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "mix",
        Shape::Merge,
        "merge real records (first input) with synthetic ones (second): append, a target synthetic share, or replace; capped, class-balanced, schema-checked",
        ["mode", "ratio", "max_synthetic_share", "balance_by", "source", "check_schema", "seed"],
        build,
    )
});

/// The two inputs, in the order of `after`.
const INPUTS: [&str; 2] = ["real", "synthetic"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Every real record, then the synthetic ones (all, or as a cap or balancing allow).
    Append,
    /// Every real record, and synthetic ones chosen to make this share of the output.
    Ratio(f64),
    /// As many records as the real input has, this share of them synthetic.
    Replace(f64),
}

/// Merges real records (the first input in `after`) with synthetic ones (the second).
///
/// The output is every real record (in `replace` mode, the ones kept), in input order,
/// then the synthetic records passed on, in input order: whatever batches the inputs came
/// in, and however many shards run the step.
///
/// - `append` (the default): every real record, then every synthetic one, unless
///   `max_synthetic_share` or `balance_by` asks for a choice. The synthetic batches that
///   come while the real input has not ended are held until it has (in memory up to
///   64 MiB, past that in a temporary file), then let out one at a time
///   ([`Merge::more`]); after that they pass straight on.
/// - `ratio = r`: every real record, plus synthetic records chosen at random so that they
///   make a share `r` of the output (`R·r/(1−r)` of them, rounded); if there are too few,
///   all of them (the stats say so, and a warning is logged).
/// - `replace` with `ratio = r`: as many records as the real input has, a share `r` of
///   them synthetic; the real records kept are chosen at random.
///
/// `max_synthetic_share` caps the synthetic share of the output. `balance_by = "label"`
/// adds synthetic records to the classes with the fewest real records first: in `append`
/// mode until every class has as many as the largest real class (within the cap), in
/// `ratio` mode spreading the synthetic budget so the classes end as even as possible
/// (what cannot be spread evenly goes to the classes in the order they first appear in
/// the real records, then in the synthetic ones).
/// `source = "origin"` writes `"real"` or `"synthetic"` into that field.
///
/// **Memory.** Hitting a ratio, a cap or a balance exactly needs the counts of both
/// inputs, so in those modes the synthetic input is held (as the batches it arrived in,
/// shared, not copied) until both inputs have ended, and chosen then; in `replace` mode
/// the real input is held too. A streaming choice (keeping each synthetic record with a
/// fixed probability) would need both counts in advance, and would hit the ratio only
/// roughly. The real input always streams through except in `replace`. For a synthetic
/// set larger than memory, `sample` it (`fraction` streams) before the mix.
///
/// **Sharded** (`weave run --shard I/N`): each shard writes its synthetic records, and
/// its real input's counts, to the step's exchange folder, and every shard reads every
/// shard's part to make the job's choice. Each shard passes on its own real records (in
/// `replace`, the ones kept); the LAST shard then passes on the chosen synthetic records
/// of every shard, in shard order, so that the parts joined in shard order are the single
/// process's output. The last shard lets them out as a plain append does the synthetic
/// batches it holds: 64 MiB in memory, the rest through a temporary file. Each shard's figures are its own records' (what it kept and
/// dropped of its inputs), so that they add up to the single run's; the job's share and
/// target are the last shard's figures.
///
/// **Schema check** (`check_schema`, on by default): a field whose types differ between
/// the inputs (a string in one, a number in the other), or that only one input has, fails
/// the step once both inputs have ended (over every record, so the verdict does not depend
/// on the order batches come in, nor on the shards); the message names every such field.
/// Integers and floats fit together, and a field that is null throughout, or of mixed
/// type, fits anything.
///
/// Random choices use the seed and each record's position in its input (in the whole
/// job's input, when sharded), so they do not depend on batch sizes or shards.
#[derive(Debug)]
pub struct Mix {
    mode: Mode,
    cap: Option<f64>,
    balance_by: Option<String>,
    source: Option<String>,
    check_schema: bool,
    seed: Option<u64>,
    config: CanonicalConfig,
    /// Per input: every field seen and its (widened) type.
    types: [Types; 2],
    done: [bool; 2],
    counts: [u64; 2],
    /// The real records' classes (when balancing), in order of first appearance, and how
    /// many real records each has.
    real_classes: Classes,
    real_by_class: Vec<u64>,
    /// The synthetic records' classes, in order of first appearance among them.
    synthetic_classes: Classes,
    held: [Vec<Held>; 2],
    /// A plain append's synthetic batches (marked), held while the real input runs, let
    /// out after it ([`Merge::more`]).
    waiting: crate::spill::Queue,
    /// In a shard of a job of several: the exchange with the other shards.
    shard: Option<sharded::MixShard>,
}

/// A batch held until the end.
#[derive(Debug)]
struct Held {
    batch: Batch,
    /// Each row's class, when balancing (the input's own numbering).
    classes: Vec<u32>,
}

/// The fields of one input and their (widened) types, in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Types {
    pub(super) list: Vec<(String, DataType)>,
    /// A field's place in `list`, so that a wide record's fields are each found at once,
    /// not by a scan.
    index: HashMap<String, usize>,
}

impl Types {
    /// Widens field `name`'s type by `ty` (adding the field if new).
    pub(super) fn fold(&mut self, name: &str, ty: DataType) {
        match self.index.get(name) {
            Some(&k) => self.list[k].1 = widen(self.list[k].1, ty),
            None => {
                self.index.insert(name.to_owned(), self.list.len());
                self.list.push((name.to_owned(), ty));
            }
        }
    }

    /// Folds in the types of a batch's columns.
    pub(super) fn fold_batch(&mut self, batch: &Batch) {
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            self.fold(&f.name, checked_type(c));
        }
    }

    fn get(&self, name: &str) -> Option<DataType> {
        self.index.get(name).map(|&k| self.list[k].1)
    }
}

fn ratio_key(p: &Params, inclusive_one: bool) -> Option<f64> {
    let r = p.f64("ratio")?;
    let ok = if inclusive_one { (0.0..=1.0).contains(&r) } else { (0.0..1.0).contains(&r) };
    if !ok && let Some(item) = p.item("ratio") {
        let range = if inclusive_one { "from 0 to 1" } else { "from 0 up to (not including) 1" };
        p.error_at(item, format!("`ratio` (the synthetic share) must be {range}, not {r}"));
        return None;
    }
    Some(r)
}

fn build(p: &Params) -> Option<Step> {
    let written = p.choice("mode", &["append", "ratio", "replace"]);
    let mode_name = written.unwrap_or(if p.has("ratio") { "ratio" } else { "append" });
    let mode = match mode_name {
        "ratio" | "replace" => {
            let r = ratio_key(p, mode_name == "replace");
            if !p.has("ratio") {
                p.push(
                    weave_core::Diagnostic::error(format!(
                        "missing required key `ratio` (the synthetic share of the output) for mode \"{mode_name}\""
                    ))
                    .with_help("for example ratio = 0.3"),
                );
            }
            r.map(|r| if mode_name == "ratio" { Mode::Ratio(r) } else { Mode::Replace(r) })
        }
        _ => {
            if let Some(item) = p.item("ratio") {
                p.error_at(item, "`ratio` applies to mode \"ratio\" or \"replace\", not \"append\"");
            }
            Some(Mode::Append)
        }
    };
    let cap = p.f64("max_synthetic_share");
    if let (Some(c), Some(item)) = (cap, p.item("max_synthetic_share"))
        && !(c > 0.0 && c <= 1.0)
    {
        p.error_at(item, format!("`max_synthetic_share` must be above 0 and at most 1, not {c}"));
    }
    if let (Some(Mode::Ratio(r) | Mode::Replace(r)), Some(c), Some(item)) = (mode, cap, p.item("ratio"))
        && r > c
    {
        p.error_at(item, format!("`ratio` ({r}) is above `max_synthetic_share` ({c})"));
    }
    let balance_by = p.str("balance_by");
    if let (Some(Mode::Replace(_)), Some(item)) = (mode, p.item("balance_by")) {
        p.error_at(
            item,
            "`balance_by` works with mode \"append\" or \"ratio\", which add synthetic records to the real ones",
        );
    }
    let source = p.str("source");
    if let (Some(""), Some(item)) = (source.as_deref(), p.item("source")) {
        p.error_at(item, "`source` names the field that marks each record real or synthetic; it cannot be empty");
    }
    let check_schema = p.bool("check_schema").unwrap_or(true);
    let seed = super::seed_key(p);
    if p.has_errors() {
        return None;
    }
    // In a shard of a job of several, the choice is the whole job's: the shards exchange.
    let exchange = Exchange::of(p).unwrap_or_else(|e| {
        p.push(weave_core::Diagnostic::error(e).with_code("no-exchange"));
        None
    });
    if p.has_errors() {
        return None;
    }
    let config = exchange.as_ref().map_or_else(|| p.canonical(), |x| x.keyed(p.canonical()));
    Some(Step::Merge(Box::new(Mix {
        mode: mode?,
        cap,
        balance_by,
        source,
        check_schema,
        seed,
        config,
        types: Default::default(),
        done: [false; 2],
        counts: [0; 2],
        real_classes: Classes::default(),
        real_by_class: Vec::new(),
        synthetic_classes: Classes::default(),
        held: Default::default(),
        waiting: crate::spill::Queue::new("the synthetic records held for after the real ones"),
        shard: exchange.map(sharded::MixShard::new),
    })))
}

impl StepInfo for Mix {
    fn fields_vary(&self, _input: bool) -> bool {
        // Real and synthetic records may have different fields (an augment adds some).
        true
    }

    fn fields_read(&self) -> Vec<String> {
        self.balance_by.iter().cloned().collect()
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

    /// Every mode: even a plain append puts every synthetic record after every real one,
    /// which only the last shard's part can hold.
    fn shards_by_exchange(&self) -> bool {
        true
    }

    /// The choice is made over both whole inputs, the later shards' too.
    fn waits_for_every_shard(&self) -> bool {
        true
    }

    /// Not when it only publishes (`weave run --stage`): it passes nothing on then, which
    /// is not the output its key names.
    fn cacheable(&self) -> bool {
        !self.shard.as_ref().is_some_and(sharded::MixShard::publish_only)
    }
}

/// `batch` with the `source` field (when there is one) saying input `input`.
fn marked(source: Option<&str>, batch: &Batch, input: usize) -> Result<Batch, StepError> {
    match source {
        Some(name) => batch
            .with_column(name, constant_column(INPUTS[input], batch.len()))
            .map_err(|e| StepError::internal(e.to_string())),
        None => Ok(batch.clone()),
    }
}

/// Whether two types of one field can be mixed.
fn compatible(a: DataType, b: DataType) -> bool {
    use DataType::{Any, Float, Int, Null, UInt};
    a == b
        || matches!(a, Null | Any)
        || matches!(b, Null | Any)
        || matches!((a, b), (Int | UInt | Float, Int | UInt | Float))
}

/// A column's type for the schema check: a column of mixed values that are all numbers
/// (ints next to floats, each kept as it came) is a float field, as it was before they kept
/// their kinds, so that the check still tells numbers from text.
fn checked_type(c: &weave_core::Column) -> DataType {
    match c {
        weave_core::Column::Any(values)
            if values.iter().any(|v| !v.is_null()) && values.iter().all(|v| v.is_null() || v.as_ref().is_number()) =>
        {
            DataType::Float
        }
        c => c.data_type(),
    }
}

/// The type that holds values of both types (a join: the order values come in does not
/// change the result).
fn widen(a: DataType, b: DataType) -> DataType {
    use DataType::{Any, Float, Int, Null, UInt};
    match (a, b) {
        (Null, t) | (t, Null) => t,
        (a, b) if a == b => a,
        (Int, UInt) | (UInt, Int) => UInt,
        (Int | UInt | Float, Int | UInt | Float) => Float,
        _ => Any,
    }
}

/// What the schema check finds wrong with inputs of these types and record counts, as
/// one message: the fields whose types do not fit together, else (when neither input is
/// empty: an empty input has no fields to compare) the fields only one input has.
fn schema_problem(types: &[Types; 2], counts: [u64; 2]) -> Option<String> {
    let conflicts: Vec<String> = types[0]
        .list
        .iter()
        .filter_map(|(name, real)| {
            let synth = types[1].get(name)?;
            (!compatible(*real, synth))
                .then(|| format!("`{name}` is {real} in the real records and {synth} in the synthetic ones"))
        })
        .collect();
    if !conflicts.is_empty() {
        return Some(conflicts.join("; "));
    }
    if counts.contains(&0) {
        return None;
    }
    let only: [Vec<&str>; 2] = [0, 1].map(|i| {
        types[i].list.iter().map(|(n, _)| n.as_str()).filter(|n| types[1 - i].get(n).is_none()).collect::<Vec<_>>()
    });
    if only[0].is_empty() && only[1].is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for (i, names) in only.iter().enumerate() {
        if !names.is_empty() {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            parts.push(format!("only the {} records have {}", INPUTS[i], list.join(", ")));
        }
    }
    let mut msg = parts.join("; ");
    for n in &only[1] {
        if let Some(m) = did_you_mean(n, only[0].iter().copied()) {
            msg.push_str(&format!(" (`{n}` looks like `{m}`)"));
        }
    }
    Some(msg)
}

/// The message for inputs that do not fit together.
fn mismatch(what: &str) -> StepError {
    StepError::fatal(format!(
        "the real and synthetic inputs do not fit together: {what} (set check_schema = false to mix them anyway)"
    ))
}

/// The job's classes: the real records' in their order of first appearance, then those of
/// the synthetic records that no real record has, in theirs (an order that does not depend
/// on how the two inputs' batches interleave); with each synthetic class's number among
/// them, by its number in `synthetic`.
fn job_classes(real: &Classes, synthetic: &Classes) -> (Classes, Vec<u32>) {
    let mut all = Classes::default();
    for c in 0..real.len() {
        all.id(ValueRef::Str(real.name(c as u32)));
    }
    let map = (0..synthetic.len()).map(|c| all.id(ValueRef::Str(synthetic.name(c as u32)))).collect();
    (all, map)
}

/// What the step passes on, decided from the job's counts.
#[derive(Debug)]
struct Choice {
    /// Per class: how many synthetic records to pass on, and up to how many the drops past
    /// that are "over the cap" rather than for the mode's own reason.
    keep: Vec<u64>,
    cap_tier: Vec<u64>,
    /// The mode's own reason for dropping a synthetic record.
    reason: String,
    /// How many synthetic records the ratio asks for (ratio and replace modes).
    target: Option<u64>,
    /// How many the ratio and the cap together ask for.
    wanted: Option<u64>,
    real_out: u64,
    synthetic_out: u64,
}

const OVER_CAP: &str = "over max_synthetic_share";

impl Choice {
    /// Why synthetic records of tier `t` (see [`tiers`]) are dropped.
    fn why(&self, t: u8) -> &str {
        if t == 1 { OVER_CAP } else { &self.reason }
    }

    /// The synthetic share of the output.
    fn share(&self) -> f64 {
        let total = self.real_out + self.synthetic_out;
        if total == 0 { 0.0 } else { self.synthetic_out as f64 / total as f64 }
    }
}

/// Each synthetic record's fate, by its position in the (job's) synthetic input: 0 passed
/// on, 1 dropped over the cap, 2 dropped for the mode's own reason. Per class, the records
/// with the smallest keys go first. `classes` holds each position's class, or is empty when
/// not balancing (one class).
fn tiers(seed: u64, n: u64, classes: &[u32], choice: &Choice) -> Vec<u8> {
    let mut by_class: Vec<Vec<(u64, u64)>> = vec![Vec::new(); choice.keep.len()];
    for pos in 0..n {
        let c = classes.get(pos as usize).copied().unwrap_or(0) as usize;
        by_class[c].push((position_key(seed, salt::MIX_SYNTHETIC, pos), pos));
    }
    let mut tier = vec![2u8; n as usize];
    for (c, mut entries) in by_class.into_iter().enumerate() {
        entries.sort_unstable();
        for (rank, (_, p)) in entries.into_iter().enumerate() {
            let rank = rank as u64;
            tier[p as usize] = if rank < choice.keep[c] {
                0
            } else if rank < choice.cap_tier[c] {
                1
            } else {
                2
            };
        }
    }
    tier
}

/// In `replace` mode: the positions, among `range`, of the real records replaced: of the
/// `real` records, the `n` whose keys are the largest (those kept have the smallest). Keys
/// of distinct positions differ, so the set does not depend on the order they are met in.
fn replaced(seed: u64, real: u64, n: u64, range: std::ops::Range<u64>) -> std::collections::HashSet<u64> {
    use std::cmp::Reverse;
    let mut heap = std::collections::BinaryHeap::with_capacity(n.min(real) as usize + 1);
    if n > 0 {
        for p in 0..real {
            let key = position_key(seed, salt::MIX_REAL, p);
            if (heap.len() as u64) < n {
                heap.push(Reverse((key, p)));
            } else if heap.peek().is_some_and(|Reverse(top)| key > top.0) {
                heap.pop();
                heap.push(Reverse((key, p)));
            }
        }
    }
    heap.into_iter().map(|Reverse((_, p))| p).filter(|p| range.contains(p)).collect()
}

/// The step's figures: its own records' (real and synthetic, in and out), the job's
/// share and target (`job`), and per class the real records and the synthetic ones passed
/// on (`classes`, when balancing).
struct Figures {
    real: (u64, u64),
    synthetic: (u64, u64),
    job: Option<(f64, Option<u64>)>,
    classes: Option<BTreeMap<String, (u64, u64)>>,
}

impl Figures {
    fn set(self, ctx: &mut StepContext) {
        let counts = |(i, o): (u64, u64)| {
            Value::Map(
                BTreeMap::from([("in".to_owned(), Value::Int(i as i64)), ("out".to_owned(), Value::Int(o as i64))])
                    .into(),
            )
        };
        ctx.set_stat("real", counts(self.real));
        ctx.set_stat("synthetic", counts(self.synthetic));
        if let Some((share, target)) = self.job {
            ctx.set_stat("synthetic_share", Value::Float(share));
            if let Some(t) = target {
                ctx.set_stat("synthetic_target", Value::Int(t as i64));
            }
        }
        if let Some(classes) = self.classes {
            let classes: BTreeMap<String, Value> = classes
                .into_iter()
                .map(|(name, (real, synthetic))| {
                    let m = BTreeMap::from([
                        ("real".to_owned(), Value::Int(real as i64)),
                        ("synthetic".to_owned(), Value::Int(synthetic as i64)),
                    ]);
                    (name, Value::Map(m.into()))
                })
                .collect();
            ctx.set_stat("classes", Value::Map(classes.into()));
        }
    }
}

impl Mix {
    /// Whether input `i`'s batches are held to the end rather than passed on (a plain
    /// append's synthetic batches are held only until the real input ends).
    fn holds(&self, i: usize) -> bool {
        match i {
            0 => matches!(self.mode, Mode::Replace(_)),
            _ => self.mode != Mode::Append || self.cap.is_some() || self.balance_by.is_some(),
        }
    }

    /// `batch` with the source field, if asked for.
    fn mark(&self, batch: &Batch, input: usize) -> Result<Batch, StepError> {
        marked(self.source.as_deref(), batch, input)
    }

    /// The most synthetic records the cap allows next to `real` real ones.
    fn cap_limit(&self, real: u64) -> u64 {
        match self.cap {
            Some(c) if c < 1.0 => (real as f64 * c / (1.0 - c) + 1e-9).floor() as u64,
            _ => u64::MAX,
        }
    }

    /// The choice over inputs of `real` real records, `base` of them per class, and
    /// `avail` synthetic records per class (one class when not balancing).
    fn choose(&self, real: u64, base: &[u64], avail: &[u64]) -> Choice {
        let (keep, cap_tier, reason, target): (Vec<u64>, Vec<u64>, String, Option<u64>) = match self.mode {
            Mode::Append if self.balance_by.is_some() => {
                let top = base.iter().copied().max().unwrap_or(0);
                let need: Vec<u64> = base.iter().zip(avail).map(|(b, a)| (*a).min(top.saturating_sub(*b))).collect();
                let budget = need.iter().sum::<u64>().min(self.cap_limit(real));
                let field = self.balance_by.as_deref().unwrap_or_default();
                (water_fill(base, avail, budget), need, format!("not needed to balance `{field}`"), None)
            }
            Mode::Append => {
                let n = avail[0].min(self.cap_limit(real));
                (vec![n], vec![n], OVER_CAP.to_owned(), None)
            }
            Mode::Ratio(r) => {
                let target = (real as f64 * r / (1.0 - r)).round() as u64;
                let budget = target.min(self.cap_limit(real));
                let keep = if self.balance_by.is_some() {
                    water_fill(base, avail, budget)
                } else {
                    vec![avail[0].min(budget)]
                };
                let tier = keep.clone();
                (keep, tier, "over ratio".to_owned(), Some(target))
            }
            Mode::Replace(r) => {
                let target = (real as f64 * r).round() as u64;
                let n = avail[0].min(target);
                (vec![n], vec![n], "over ratio".to_owned(), Some(target))
            }
        };
        let synthetic_out: u64 = keep.iter().sum();
        // Real records: all, or (replace) all but as many as the synthetic ones kept.
        let real_out = if let Mode::Replace(_) = self.mode { real - synthetic_out } else { real };
        let wanted = target.map(|t| t.min(self.cap_limit(real)));
        Choice { keep, cap_tier, reason, target, wanted, real_out, synthetic_out }
    }

    /// Says so when the ratio asked for more synthetic records than there were.
    fn warn_if_short(&self, choice: &Choice, ctx: &StepContext) {
        if let Some(w) = choice.wanted
            && choice.synthetic_out < w
        {
            log::warn!(
                "step {}: {w} synthetic records were wanted for the ratio, only {} were available",
                ctx.step_id(),
                choice.synthetic_out
            );
        }
    }
}

impl Merge for Mix {
    fn process(
        &mut self,
        input: usize,
        batch: &Batch,
        _ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        if input >= 2 {
            return Err(StepError::fatal(
                "mix takes two inputs, the real records then the synthetic ones (after = [\"real\", \"synthetic\"]), but this one has more",
            ));
        }
        if let Some(name) = &self.source
            && batch.schema().index_of(name).is_some()
        {
            return Err(StepError::fatal(format!(
                "the {} records already have a field `{name}`, which `source` would overwrite: name the marker field otherwise",
                INPUTS[input]
            )));
        }
        if self.check_schema {
            self.types[input].fold_batch(batch);
        }
        let col = match &self.balance_by {
            Some(f) if !batch.is_empty() => Some(column(batch, f)?),
            _ => None,
        };
        let known = if input == 0 { &mut self.real_classes } else { &mut self.synthetic_classes };
        let classes: Vec<u32> =
            col.map(|col| (0..batch.len()).map(|r| known.id(col.get(r))).collect()).unwrap_or_default();
        self.counts[input] += batch.len() as u64;
        if input == 0 {
            for &c in &classes {
                if self.real_by_class.len() <= c as usize {
                    self.real_by_class.resize(c as usize + 1, 0);
                }
                self.real_by_class[c as usize] += 1;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(s) = &mut self.shard {
            // A shard writes its synthetic records to its part, for the last shard to pass
            // on those chosen; it holds none of them.
            if input == 1 {
                return s.publish_synthetic(batch, col);
            }
            if s.publish_only() {
                return Ok(());
            }
        }
        if self.holds(input) {
            self.held[input].push(Held { batch: batch.clone(), classes });
        } else if input == 1 && (!self.done[0] || !self.waiting.is_empty()) {
            // After every real record, and after those held before it.
            self.waiting.push(self.mark(batch, 1)?)?;
        } else {
            out.push(self.mark(batch, input)?);
        }
        Ok(())
    }

    /// (A plain append's synthetic batches held while the real input ran follow it, let out
    /// one at a time by `more`.)
    fn input_done(&mut self, input: usize, _ctx: &mut StepContext, _out: &mut Vec<Batch>) -> Result<(), StepError> {
        if let Some(d) = self.done.get_mut(input) {
            *d = true;
        }
        Ok(())
    }

    /// A plain append's synthetic batches held while the real input ran, once it has
    /// ended: one a call, each passed on before the next is read back.
    fn more(&mut self, _ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        if !self.done[0] {
            return Ok(false);
        }
        if let Some(b) = self.waiting.pop()? {
            out.push(b);
        }
        Ok(!self.waiting.is_empty())
    }

    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        if !self.done[1] {
            return Err(StepError::fatal(
                "mix takes two inputs, the real records then the synthetic ones (after = [\"real\", \"synthetic\"]), but this one has one",
            ));
        }
        if self.shard.is_some() {
            return self.finish_shard(ctx, out);
        }
        if self.check_schema
            && let Some(problem) = schema_problem(&self.types, self.counts)
        {
            return Err(mismatch(&problem));
        }
        let seed = self.seed.unwrap_or(ctx.seed());
        let (real, synthetic) = (self.counts[0], self.counts[1]);
        let (classes, map) = job_classes(&self.real_classes, &self.synthetic_classes);
        let held_synth = std::mem::take(&mut self.held[1]);
        let held_rows: u64 = held_synth.iter().map(|h| h.batch.len() as u64).sum();
        // Each held synthetic record's class, in the job's numbering (when balancing).
        let of: Vec<u32> = held_synth.iter().flat_map(|h| h.classes.iter().map(|c| map[*c as usize])).collect();
        let mut avail = vec![0u64; classes.len().max(1)];
        if self.balance_by.is_some() {
            for &c in &of {
                avail[c as usize] += 1;
            }
        } else {
            // Passed on as they came when not held.
            avail[0] = if self.holds(1) { held_rows } else { synthetic };
        }
        let mut base = self.real_by_class.clone();
        base.resize(avail.len(), 0);
        let choice = self.choose(real, &base, &avail);

        let held_real = std::mem::take(&mut self.held[0]);
        if !held_real.is_empty() {
            let gone = replaced(seed, real, choice.synthetic_out, 0..real);
            let chosen: Vec<bool> = (0..real).map(|p| !gone.contains(&p)).collect();
            self.emit(&held_real, 0, &chosen, &|_| "replaced by synthetic", ctx, out)?;
        }
        let tier = tiers(seed, held_rows, &of, &choice);
        let chosen: Vec<bool> = tier.iter().map(|t| *t == 0).collect();
        self.emit(&held_synth, 1, &chosen, &|p| choice.why(tier[p]), ctx, out)?;
        self.warn_if_short(&choice, ctx);
        let figures = Figures {
            real: (real, choice.real_out),
            synthetic: (synthetic, choice.synthetic_out),
            job: Some((choice.share(), choice.target)),
            classes: self.balance_by.as_ref().map(|_| {
                (0..classes.len()).map(|c| (classes.name(c as u32).to_owned(), (base[c], choice.keep[c]))).collect()
            }),
        };
        figures.set(ctx);
        Ok(())
    }
}

impl Mix {
    /// Passes on the chosen rows of held batches (rows numbered across the batches), and
    /// drops the others with the reason `why` gives for their number.
    fn emit<'r>(
        &self,
        held: &[Held],
        input: usize,
        chosen: &[bool],
        why: &dyn Fn(usize) -> &'r str,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let mut start = 0;
        for h in held {
            let n = h.batch.len();
            let keep = &chosen[start..start + n];
            for (row, k) in keep.iter().enumerate() {
                if !k {
                    ctx.drop_record(why(start + row), || h.batch.row(row).to_record());
                }
            }
            if keep.iter().any(|k| *k) {
                out.push(self.mark(&h.batch.filter(keep), input)?);
            }
            start += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use std::collections::HashMap;
    use weave_core::Record;

    fn rec(id: &str, label: &str) -> Record {
        Record::new().with("id", id).with("label", label)
    }

    /// `n` records with ids `{prefix}{i}`, labels given by `label(i)`.
    fn data(prefix: &str, n: usize, label: impl Fn(usize) -> &'static str) -> Vec<Record> {
        (0..n).map(|i| rec(&format!("{prefix}{i}"), label(i))).collect()
    }

    struct Outcome {
        ids: Vec<String>,
        dropped: Vec<(String, u64)>,
        stats: HashMap<String, Value>,
    }

    /// Runs a mix over real and synthetic records, cut into batches of `batch_size` and
    /// fed alternately as the executor does (by batch number, then input).
    fn run(config: &str, real: &[Record], synthetic: &[Record], batch_size: usize, seed: u64) -> Outcome {
        try_run(config, real, synthetic, batch_size, seed).unwrap()
    }

    /// Feeds real and synthetic records to a mix, cut into batches of `batch_size` and
    /// alternately as the executor does (by batch number, then input, asking for what it
    /// holds back after an input ends and after `finish`), and returns what it passed on.
    pub(super) fn feed(
        m: &mut dyn Merge,
        real: &[Record],
        synthetic: &[Record],
        batch_size: usize,
        ctx: &mut StepContext,
    ) -> Result<Vec<Batch>, StepError> {
        let mut out = Vec::new();
        let inputs: [Vec<&[Record]>; 2] = [real.chunks(batch_size).collect(), synthetic.chunks(batch_size).collect()];
        for seq in 0..inputs[0].len().max(inputs[1].len()).max(1) {
            for (i, chunks) in inputs.iter().enumerate() {
                if let Some(c) = chunks.get(seq) {
                    m.process(i, &Batch::from_records(*c), ctx, &mut out)?;
                }
                if seq + 1 == chunks.len().max(1) {
                    m.input_done(i, ctx, &mut out)?;
                    while m.more(ctx, &mut out)? {}
                }
            }
        }
        m.finish(ctx, &mut out)?;
        while m.more(ctx, &mut out)? {}
        Ok(out)
    }

    fn try_run(
        config: &str,
        real: &[Record],
        synthetic: &[Record],
        batch_size: usize,
        seed: u64,
    ) -> Result<Outcome, StepError> {
        let Step::Merge(mut m) = build_step("mix", config) else { panic!("mix is a merge") };
        let mut ctx = StepContext::new("mix", seed, 0, Default::default()).keeping_dropped(true);
        let out = feed(&mut *m, real, synthetic, batch_size, &mut ctx)?;
        let ids: Vec<String> = out
            .iter()
            .flat_map(|b| b.to_records())
            .map(|r| {
                let id = r.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                match r.get("source").and_then(Value::as_str) {
                    Some(s) => format!("{id}:{s}"),
                    None => id,
                }
            })
            .collect();
        let excluded = ctx.take_excluded();
        let dropped = ctx.take_dropped();
        assert_eq!(excluded.len() as u64, dropped.iter().map(|(_, n)| n).sum::<u64>());
        assert_eq!(ids.len() + excluded.len(), real.len() + synthetic.len(), "every record is passed on or dropped");
        Ok(Outcome { ids, dropped, stats: ctx.take_stats().into_iter().collect() })
    }

    fn synthetic_ids(o: &Outcome) -> Vec<&String> {
        o.ids.iter().filter(|i| i.starts_with('s')).collect()
    }

    #[test]
    fn append_passes_everything_on_and_marks_the_source() {
        let real = data("r", 3, |_| "a");
        let synth = data("s", 2, |_| "b");
        // Every real record, then every synthetic one, whatever the batch size (batches of
        // 2 interleave the inputs: the synthetic ones wait for the real input's end).
        for batch_size in [1, 2, 5] {
            let o = run("source = \"source\"", &real, &synth, batch_size, 0);
            assert_eq!(o.ids, ["r0:real", "r1:real", "r2:real", "s0:synthetic", "s1:synthetic"], "{batch_size}");
            assert!(o.dropped.is_empty());
            assert_eq!(o.stats["synthetic_share"], Value::Float(0.4));
        }
    }

    #[test]
    fn append_passes_synthetic_batches_straight_on_once_the_real_input_has_ended() {
        let Step::Merge(mut m) = build_step("mix", "") else { panic!("mix is a merge") };
        let mut ctx = StepContext::new("mix", 0, 0, Default::default());
        let ids = |out: &[Batch]| -> Vec<String> {
            out.iter().flat_map(Batch::to_records).map(|r| r.get("id").unwrap().to_string()).collect()
        };
        let mut out = Vec::new();
        m.process(1, &Batch::from_records(&data("s", 2, |_| "a")), &mut ctx, &mut out).unwrap();
        assert!(out.is_empty(), "held while the real input runs");
        m.process(0, &Batch::from_records(&data("r", 1, |_| "a")), &mut ctx, &mut out).unwrap();
        assert_eq!(ids(&out), ["\"r0\""]);
        out.clear();
        m.input_done(0, &mut ctx, &mut out).unwrap();
        assert!(out.is_empty(), "let out a batch at a time, by `more`");
        assert!(!m.more(&mut ctx, &mut out).unwrap(), "one batch held: the last let out");
        assert_eq!(ids(&out), ["\"s0\"", "\"s1\""], "let out when the real input ends");
        out.clear();
        m.process(1, &Batch::from_records(&data("t", 1, |_| "a")), &mut ctx, &mut out).unwrap();
        assert_eq!(ids(&out), ["\"t0\""], "then passed straight on");
    }

    #[test]
    fn ratio_adds_the_synthetic_share_chosen_by_seed() {
        let real = data("r", 700, |_| "a");
        let synth = data("s", 1000, |_| "a");
        let o = run("ratio = 0.3", &real, &synth, 64, 1);
        // 700 real records and a synthetic share of 0.3: 300 synthetic.
        assert_eq!(o.ids.len(), 1000);
        assert_eq!(synthetic_ids(&o).len(), 300);
        assert_eq!(o.dropped, [("over ratio".to_owned(), 700)]);
        assert_eq!(o.stats["synthetic_share"], Value::Float(0.3));
        // The same choice whatever the batch size; another with another seed.
        let again = run("ratio = 0.3", &real, &synth, 1000, 1);
        let mut a = synthetic_ids(&o);
        let mut b = synthetic_ids(&again);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let other = run("mode = \"ratio\"\nratio = 0.3\nseed = 2", &real, &synth, 64, 1);
        assert_ne!(synthetic_ids(&other), synthetic_ids(&o));
        // Chosen from the whole synthetic input, not its first records.
        assert!(a.iter().any(|id| id[1..].parse::<usize>().unwrap() > 900));
    }

    #[test]
    fn ratio_with_too_few_synthetic_records_takes_them_all_and_says_so() {
        let o = run("ratio = 0.5", &data("r", 10, |_| "a"), &data("s", 4, |_| "a"), 3, 0);
        assert_eq!(synthetic_ids(&o).len(), 4);
        assert_eq!(o.stats["synthetic_target"], Value::Int(10));
        assert!(o.dropped.is_empty());
    }

    #[test]
    fn replace_keeps_the_real_size() {
        let real = data("r", 100, |_| "a");
        let synth = data("s", 500, |_| "a");
        let o = run("mode = \"replace\"\nratio = 0.25", &real, &synth, 32, 0);
        assert_eq!(o.ids.len(), 100);
        assert_eq!(synthetic_ids(&o).len(), 25);
        assert_eq!(
            o.dropped,
            [("replaced by synthetic".to_owned(), 25), ("over ratio".to_owned(), 475)],
            "real first, in input order, then synthetic"
        );
        assert!(o.ids[..75].iter().all(|i| i.starts_with('r')));
    }

    #[test]
    fn the_cap_limits_the_synthetic_share() {
        let o = run("max_synthetic_share = 0.2", &data("r", 80, |_| "a"), &data("s", 100, |_| "a"), 16, 0);
        assert_eq!(synthetic_ids(&o).len(), 20);
        assert_eq!(o.dropped, [("over max_synthetic_share".to_owned(), 80)]);
    }

    #[test]
    fn balancing_fills_the_smallest_classes_first() {
        // Real: 60 a, 30 b, 10 c. Synthetic: 50 of each.
        let real = data("r", 100, |i| {
            if i < 60 {
                "a"
            } else if i < 90 {
                "b"
            } else {
                "c"
            }
        });
        let synth = data("s", 150, |i| ["a", "b", "c"][i % 3]);
        let o = run("balance_by = \"label\"", &real, &synth, 20, 0);
        // Every class up to 60: none for a, 30 for b, 50 (all there are) for c.
        assert_eq!(
            o.stats["classes"].to_string(),
            r#"{"a":{"real":60,"synthetic":0},"b":{"real":30,"synthetic":30},"c":{"real":10,"synthetic":50}}"#
        );
        assert_eq!(o.dropped, [("not needed to balance `label`".to_owned(), 70)]);
        // With a cap of 0.2 (25 synthetic next to 100 real), c goes first, from 10 to 30,
        // then b and c rise together to 32, and the one left goes to b.
        let o = run("balance_by = \"label\"\nmax_synthetic_share = 0.2", &real, &synth, 20, 0);
        assert_eq!(
            o.stats["classes"].to_string(),
            r#"{"a":{"real":60,"synthetic":0},"b":{"real":30,"synthetic":3},"c":{"real":10,"synthetic":22}}"#
        );
        let mut dropped = o.dropped.clone();
        dropped.sort();
        assert_eq!(
            dropped,
            [("not needed to balance `label`".to_owned(), 70), ("over max_synthetic_share".to_owned(), 55)]
        );
        // In ratio mode the budget (100 × 0.5 / 0.5 = 100) is spread to even the classes.
        let o = run("ratio = 0.5\nbalance_by = \"label\"", &real, &synth, 20, 0);
        assert_eq!(
            o.stats["classes"].to_string(),
            r#"{"a":{"real":60,"synthetic":10},"b":{"real":30,"synthetic":40},"c":{"real":10,"synthetic":50}}"#
        );
    }

    #[test]
    fn balanced_choices_do_not_depend_on_batch_size() {
        let real = data("r", 300, |i| if i < 200 { "a" } else { "b" });
        let synth = data("s", 500, |i| ["a", "b"][i % 2]);
        let ids = |bs: usize, seed: u64| {
            let mut v: Vec<String> = run("ratio = 0.4\nbalance_by = \"label\"", &real, &synth, bs, seed).ids;
            v.sort();
            v
        };
        let a = ids(64, 5);
        assert_eq!(a, ids(1, 5));
        assert_eq!(a, ids(500, 5));
        assert_ne!(a, ids(64, 6));
    }

    #[test]
    fn schema_mismatches_name_the_fields_and_types() {
        let real = vec![Record::new().with("id", "r0").with("label", "a").with("score", 1i64)];
        let synth = vec![Record::new().with("id", "s0").with("lable", "a").with("score", "high")];
        let err = try_run("", &real, &synth, 10, 0).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the real and synthetic inputs do not fit together: `score` is int in the real records and string in the synthetic ones (set check_schema = false to mix them anyway)"
        );
        let synth = vec![Record::new().with("id", "s0").with("lable", "a").with("score", 2.5)];
        let err = try_run("", &real, &synth, 10, 0).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the real and synthetic inputs do not fit together: only the real records have `label`; only the synthetic records have `lable` (`lable` looks like `label`) (set check_schema = false to mix them anyway)"
        );
        assert_eq!(run("check_schema = false", &real, &synth, 10, 0).ids.len(), 2);
        // An empty synthetic input has no fields to compare.
        assert_eq!(run("", &real, &[], 10, 0).ids, ["r0"]);
    }

    #[test]
    fn wrong_inputs_and_keys_are_named() {
        let Step::Merge(mut m) = build_step("mix", "") else { panic!() };
        let mut ctx = StepContext::new("mix", 0, 0, Default::default());
        m.input_done(0, &mut ctx, &mut Vec::new()).unwrap();
        let err = m.finish(&mut ctx, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().ends_with("but this one has one"), "{err}");
        let err = m.process(2, &Batch::from_records(&[rec("x", "a")]), &mut ctx, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().ends_with("but this one has more"), "{err}");
        let err = try_run("source = \"label\"", &[rec("r", "a")], &[], 1, 0).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the real records already have a field `label`, which `source` would overwrite: name the marker field otherwise"
        );

        check_build_errors(
            "mix",
            "mode = \"ratio\"\nmax_synthetic_share = 0.2",
            &["- missing required key `ratio` (the synthetic share of the output) for mode \"ratio\""],
        );
        check_build_errors(
            "mix",
            "mode = \"append\"\nratio = 0.3",
            &["2:9 `ratio` applies to mode \"ratio\" or \"replace\", not \"append\""],
        );
        check_build_errors(
            "mix",
            "ratio = 0.5\nmax_synthetic_share = 0.2",
            &["1:9 `ratio` (0.5) is above `max_synthetic_share` (0.2)"],
        );
        check_build_errors(
            "mix",
            "ratio = 1.0\nmax_synthetic_share = 0",
            &[
                "1:9 `ratio` (the synthetic share) must be from 0 up to (not including) 1, not 1",
                "2:23 `max_synthetic_share` must be above 0 and at most 1, not 0",
            ],
        );
        check_build_errors(
            "mix",
            "mode = \"replace\"\nratio = 0.5\nbalance_by = \"label\"\nmode_ = 1",
            &[
                "3:14 `balance_by` works with mode \"append\" or \"ratio\", which add synthetic records to the real ones",
                "4:1 unknown key `mode_` in step",
            ],
        );
        check_build_errors(
            "mix",
            "mode = \"mixed\"",
            &["1:8 `mode` must be one of \"append\", \"ratio\", \"replace\", not \"mixed\""],
        );
    }
}
