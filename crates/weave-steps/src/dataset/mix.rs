//! The `mix` step: real and synthetic records merged into one dataset.

use std::collections::{BTreeMap, HashMap};

use weave_core::{
    Batch, CanonicalConfig, DataType, Merge, Params, Shape, Step, StepContext, StepError, StepInfo, StepKind, Value,
    did_you_mean,
};

use super::{Classes, column, constant_column, position_key, salt, water_fill};

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
/// - `append` (the default): every real record and every synthetic one, passed on as
///   they arrive, unless `max_synthetic_share` or `balance_by` asks for a choice.
/// - `ratio = r`: every real record, plus synthetic records chosen at random so that they
///   make a share `r` of the output (`R·r/(1−r)` of them, rounded); if there are too few,
///   all of them (the stats say so, and a warning is logged).
/// - `replace` with `ratio = r`: as many records as the real input has, a share `r` of
///   them synthetic; the real records kept are chosen at random.
///
/// `max_synthetic_share` caps the synthetic share of the output. `balance_by = "label"`
/// adds synthetic records to the classes with the fewest real records first: in `append`
/// mode until every class has as many as the largest real class (within the cap), in
/// `ratio` mode spreading the synthetic budget so the classes end as even as possible.
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
/// **Schema check** (`check_schema`, on by default): a field whose types differ between
/// the inputs (a string in one, a number in the other) fails the step as soon as it is
/// seen, and a field that only one input has fails it at the end; the message names every
/// such field. Integers and floats fit together, and a field that is null throughout, or
/// of mixed type, fits anything.
///
/// Random choices use the seed and each record's position in its input, so they do not
/// depend on batch sizes.
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
    types: [Vec<(String, DataType)>; 2],
    /// Per input: a field's place in `types`, so that a wide record's fields are each found
    /// at once, not by a scan.
    type_index: [HashMap<String, usize>; 2],
    done: [bool; 2],
    counts: [u64; 2],
    classes: Classes,
    real_by_class: Vec<u64>,
    held: [Vec<Held>; 2],
}

/// A batch held until the end.
#[derive(Debug)]
struct Held {
    batch: Batch,
    /// Each row's class, when balancing.
    classes: Vec<u32>,
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
    Some(Step::Merge(Box::new(Mix {
        mode: mode?,
        cap,
        balance_by,
        source,
        check_schema,
        seed,
        config: p.canonical(),
        types: Default::default(),
        done: [false; 2],
        counts: [0; 2],
        classes: Classes::default(),
        real_by_class: Vec::new(),
        held: Default::default(),
        type_index: Default::default(),
    })))
}

impl StepInfo for Mix {
    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn estimated_cost(&self) -> f64 {
        0.2
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

/// The type that holds values of both types.
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

impl Mix {
    /// Whether input `i`'s batches are held to the end rather than passed on.
    fn holds(&self, i: usize) -> bool {
        match i {
            0 => matches!(self.mode, Mode::Replace(_)),
            _ => self.mode != Mode::Append || self.cap.is_some() || self.balance_by.is_some(),
        }
    }

    /// `batch` with the source field, if asked for.
    fn mark(&self, batch: &Batch, input: usize) -> Result<Batch, StepError> {
        match &self.source {
            Some(name) => batch
                .with_column(name, constant_column(INPUTS[input], batch.len()))
                .map_err(|e| StepError::internal(e.to_string())),
            None => Ok(batch.clone()),
        }
    }

    /// Folds a batch's field types into input `i`'s and returns the fields whose types no
    /// longer fit the other input's.
    fn type_conflicts(&mut self, i: usize, batch: &Batch) -> Vec<String> {
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            let ty = checked_type(c);
            match self.type_index[i].get(&f.name) {
                Some(&k) => self.types[i][k].1 = widen(self.types[i][k].1, ty),
                None => {
                    self.type_index[i].insert(f.name.clone(), self.types[i].len());
                    self.types[i].push((f.name.clone(), ty));
                }
            }
        }
        let mut out = Vec::new();
        for (name, real) in &self.types[0] {
            if let Some(&k) = self.type_index[1].get(name)
                && let synth = self.types[1][k].1
                && !compatible(*real, synth)
            {
                out.push(format!("`{name}` is {real} in the real records and {synth} in the synthetic ones"));
            }
        }
        out
    }

    /// The fields that only one input has, as one message, or `None`.
    fn field_differences(&self) -> Option<String> {
        let has = |i: usize, name: &str| self.type_index[i].contains_key(name);
        let only: [Vec<&str>; 2] = [0, 1]
            .map(|i| self.types[i].iter().map(|(n, _)| n.as_str()).filter(|n| !has(1 - i, n)).collect::<Vec<_>>());
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

    /// The most synthetic records the cap allows next to `real` real ones.
    fn cap_limit(&self, real: u64) -> u64 {
        match self.cap {
            Some(c) if c < 1.0 => (real as f64 * c / (1.0 - c) + 1e-9).floor() as u64,
            _ => u64::MAX,
        }
    }
}

/// The message for inputs that do not fit together.
fn mismatch(what: &str) -> StepError {
    StepError::fatal(format!(
        "the real and synthetic inputs do not fit together: {what} (set check_schema = false to mix them anyway)"
    ))
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
            let conflicts = self.type_conflicts(input, batch);
            if !conflicts.is_empty() {
                return Err(mismatch(&conflicts.join("; ")));
            }
        }
        let classes = match &self.balance_by {
            Some(f) if !batch.is_empty() => {
                let col = column(batch, f)?;
                (0..batch.len()).map(|r| self.classes.id(col.get(r))).collect()
            }
            _ => Vec::new(),
        };
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
        if self.holds(input) {
            self.held[input].push(Held { batch: batch.clone(), classes });
        } else {
            out.push(self.mark(batch, input)?);
        }
        Ok(())
    }

    fn input_done(&mut self, input: usize, _ctx: &mut StepContext, _out: &mut Vec<Batch>) -> Result<(), StepError> {
        if let Some(d) = self.done.get_mut(input) {
            *d = true;
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        if !self.done[1] {
            return Err(StepError::fatal(
                "mix takes two inputs, the real records then the synthetic ones (after = [\"real\", \"synthetic\"]), but this one has one",
            ));
        }
        // An empty input has no fields to compare: nothing of it is mixed in.
        if self.check_schema
            && self.counts.iter().all(|c| *c > 0)
            && let Some(d) = self.field_differences()
        {
            return Err(mismatch(&d));
        }
        let seed = self.seed.unwrap_or(ctx.seed());
        let (real, synthetic) = (self.counts[0], self.counts[1]);
        let n_classes = self.classes.len();
        // Synthetic records available per class (one class when not balancing).
        let mut avail = vec![0u64; n_classes.max(1)];
        for h in &self.held[1] {
            for &c in &h.classes {
                avail[c as usize] += 1;
            }
        }
        if self.balance_by.is_none() {
            // Passed on as they came when not held.
            avail[0] = if self.holds(1) { self.held[1].iter().map(|h| h.batch.len() as u64).sum() } else { synthetic };
        }
        let mut base = self.real_by_class.clone();
        base.resize(avail.len(), 0);

        // Per class: how many to keep, and up to how many the drops past that are "over
        // the cap" rather than for the mode's own reason.
        let over_cap = "over max_synthetic_share";
        let (keep, cap_tier, reason, target): (Vec<u64>, Vec<u64>, String, Option<u64>) = match self.mode {
            Mode::Append if self.balance_by.is_some() => {
                let top = base.iter().copied().max().unwrap_or(0);
                let need: Vec<u64> = base.iter().zip(&avail).map(|(b, a)| (*a).min(top.saturating_sub(*b))).collect();
                let budget = need.iter().sum::<u64>().min(self.cap_limit(real));
                let field = self.balance_by.as_deref().unwrap_or_default();
                (water_fill(&base, &avail, budget), need, format!("not needed to balance `{field}`"), None)
            }
            Mode::Append => {
                let n = avail[0].min(self.cap_limit(real));
                (vec![n], vec![n], over_cap.to_owned(), None)
            }
            Mode::Ratio(r) => {
                let target = (real as f64 * r / (1.0 - r)).round() as u64;
                let budget = target.min(self.cap_limit(real));
                let keep = if self.balance_by.is_some() {
                    water_fill(&base, &avail, budget)
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

        // Real records: all, or (replace) all but as many as the synthetic ones kept.
        let synthetic_out: u64 = keep.iter().sum();
        let real_out = if let Mode::Replace(_) = self.mode { real - synthetic_out } else { real };
        let held_real = std::mem::take(&mut self.held[0]);
        if !held_real.is_empty() {
            let entries: Vec<(u64, usize)> =
                (0..real as usize).map(|pos| (position_key(seed, salt::MIX_REAL, pos as u64), pos)).collect();
            let mut chosen = vec![false; real as usize];
            super::smallest(&entries, real_out as usize, &mut chosen);
            self.emit(&held_real, 0, &chosen, &|_| "replaced by synthetic", ctx, out)?;
        }

        // Synthetic records: per class, the ones with the smallest keys.
        let held_synth = std::mem::take(&mut self.held[1]);
        let mut by_class: Vec<Vec<(u64, usize)>> = vec![Vec::new(); avail.len()];
        let mut pos = 0usize;
        for h in &held_synth {
            for row in 0..h.batch.len() {
                let c = h.classes.get(row).copied().unwrap_or(0) as usize;
                by_class[c].push((position_key(seed, salt::MIX_SYNTHETIC, pos as u64), pos));
                pos += 1;
            }
        }
        // Tier of each row: 0 kept, 1 dropped over the cap, 2 dropped for the mode.
        let mut tier = vec![2u8; pos];
        for (c, mut entries) in by_class.into_iter().enumerate() {
            entries.sort_unstable();
            for (rank, (_, p)) in entries.into_iter().enumerate() {
                let rank = rank as u64;
                tier[p] = if rank < keep[c] {
                    0
                } else if rank < cap_tier[c] {
                    1
                } else {
                    2
                };
            }
        }
        let chosen: Vec<bool> = tier.iter().map(|t| *t == 0).collect();
        let why = |p: usize| if tier[p] == 1 { over_cap } else { reason.as_str() };
        self.emit(&held_synth, 1, &chosen, &why, ctx, out)?;

        if let Some(t) = target
            && synthetic_out < t.min(self.cap_limit(real))
        {
            log::warn!(
                "step {}: {} synthetic records were wanted for the ratio, only {synthetic_out} were available",
                ctx.step_id(),
                t.min(self.cap_limit(real))
            );
        }
        let counts = |i: u64, o: u64| {
            Value::Map(
                BTreeMap::from([("in".to_owned(), Value::Int(i as i64)), ("out".to_owned(), Value::Int(o as i64))])
                    .into(),
            )
        };
        ctx.set_stat("real", counts(real, real_out));
        ctx.set_stat("synthetic", counts(synthetic, synthetic_out));
        let total = real_out + synthetic_out;
        let share = if total == 0 { 0.0 } else { synthetic_out as f64 / total as f64 };
        ctx.set_stat("synthetic_share", Value::Float(share));
        if let Some(t) = target {
            ctx.set_stat("synthetic_target", Value::Int(t as i64));
        }
        if self.balance_by.is_some() {
            let classes: BTreeMap<String, Value> = (0..n_classes)
                .map(|c| {
                    let m = BTreeMap::from([
                        ("real".to_owned(), Value::Int(base[c] as i64)),
                        ("synthetic".to_owned(), Value::Int(keep[c] as i64)),
                    ]);
                    (self.classes.name(c as u32).to_owned(), Value::Map(m.into()))
                })
                .collect();
            ctx.set_stat("classes", Value::Map(classes.into()));
        }
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

    fn try_run(
        config: &str,
        real: &[Record],
        synthetic: &[Record],
        batch_size: usize,
        seed: u64,
    ) -> Result<Outcome, StepError> {
        let Step::Merge(mut m) = build_step("mix", config) else { panic!("mix is a merge") };
        let mut ctx = StepContext::new("mix", seed, 0, Default::default()).keeping_dropped(true);
        let mut out = Vec::new();
        let inputs: [Vec<&[Record]>; 2] = [real.chunks(batch_size).collect(), synthetic.chunks(batch_size).collect()];
        for seq in 0..inputs[0].len().max(inputs[1].len()) {
            for (i, chunks) in inputs.iter().enumerate() {
                if let Some(c) = chunks.get(seq) {
                    m.process(i, &Batch::from_records(*c), &mut ctx, &mut out)?;
                }
                if seq + 1 == chunks.len().max(1) {
                    m.input_done(i, &mut ctx, &mut out)?;
                }
            }
        }
        m.finish(&mut ctx, &mut out)?;
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
        let o = run("source = \"source\"", &real, &synth, 2, 0);
        assert_eq!(o.ids, ["r0:real", "r1:real", "s0:synthetic", "s1:synthetic", "r2:real"]);
        assert!(o.dropped.is_empty());
        assert_eq!(o.stats["synthetic_share"], Value::Float(0.4));
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
