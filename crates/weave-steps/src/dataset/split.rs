//! The `split` step: gives every record a split name (train / validation / test, or any
//! names) by seeded fractions.

use std::sync::Arc;

use weave_core::{
    Batch, CanonicalConfig, Column, Diagnostic, Params, Shape, StatefulTransform, Step, StepContext, StepError,
    StepInfo, StepKind, StrColumn, Transform, Value,
};

use super::shards::{Admit, Replay};
use super::{Classes, KeyColumns, Stratifier, column, salt, unit};
use crate::exchange::Exchange;

/// The `split` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "split",
        Shape::Transform,
        "write a split name (train / validation / test...) into a field, by seeded fractions, optionally stratified by a field",
        ["fractions", "field", "key", "stratify_by", "seed"],
        build,
    )
});

/// Writes a split name into a field of every record; exporters can then write one file
/// per split, and `filter` can keep one.
///
/// Without `stratify_by` the split of a record depends only on the seed and the record's
/// content (or its `key` fields): it is a stateless transform, the same whatever the
/// batch size, thread count or the other records, and identical records (or records that
/// share a key) always land in the same split, so duplicates cannot leak from train to
/// test. The proportions are then those of independent draws: within a few standard
/// deviations (√(n·f·(1−f)) records) of the fractions.
///
/// With `stratify_by` every class gets the fractions exactly: after `n` records of a
/// class, a split of fraction `f` holds fewer than `n·f + 1` and more than `n·f − (k−1)`
/// of them (`k` splits). Records are assigned one after the other, in input order, each
/// to a split still short of its share, at random in proportion to the shortfall, so the
/// step is stateful, and a record's split also depends on the records of its class
/// before it. In a shard of a job, a stratified split first replays the earlier shards'
/// records (their classes and random keys, which they publish) through the same
/// assignment, so that it assigns its own as the single process would.
#[derive(Debug)]
pub struct Split {
    names: Vec<String>,
    fractions: Vec<f64>,
    /// The upper end of each split's share of [0, 1).
    bounds: Vec<f64>,
    field: String,
    key: Option<Vec<String>>,
    seed: Option<u64>,
    config: CanonicalConfig,
    stratified: Option<Stratified>,
}

#[derive(Debug)]
struct Stratified {
    field: String,
    classes: Classes,
    stratifier: Stratifier,
    /// In a shard of a job: the earlier shards' records replayed first.
    replay: Option<Replay>,
}

fn build(p: &Params) -> Option<Step> {
    let fractions = if p.has("fractions") {
        super::read_fractions(p, "fractions")
    } else {
        p.push(Diagnostic::error(
            "missing required key `fractions` (the splits and their shares, such as { train = 0.8, validation = 0.1, test = 0.1 })",
        ));
        None
    };
    if let (Some(f), Some(item)) = (&fractions, p.item("fractions"))
        && f.iter().any(|(n, _)| n.is_empty())
    {
        p.error_at(item, "a split name is empty");
    }
    let field = p.str("field").unwrap_or_else(|| "split".to_owned());
    let key = super::field_list(p, "key", "use the whole record");
    let stratify_by = p.str("stratify_by");
    let seed = super::seed_key(p);
    if key.is_some()
        && let (Some(_), Some(item)) = (&stratify_by, p.item("stratify_by"))
    {
        p.error_at(
            item,
            "`key` and `stratify_by` do not go together: a stratified split assigns records one by one, so it cannot keep the records of a key together",
        );
    }
    // A stratified split needs the whole dataset: in a shard of a job, it exchanges.
    let exchange = if stratify_by.is_some() {
        Exchange::of(p).unwrap_or_else(|e| {
            p.push(Diagnostic::error(e).with_code("no-exchange"));
            None
        })
    } else {
        None
    };
    if p.has_errors() {
        return None;
    }
    let config = exchange.as_ref().map_or_else(|| p.canonical(), |x| x.keyed(p.canonical()));
    let (names, fractions): (Vec<String>, Vec<f64>) = fractions?.into_iter().unzip();
    let mut bounds = Vec::with_capacity(fractions.len());
    let mut acc = 0.0;
    for f in &fractions {
        acc += f;
        bounds.push(acc);
    }
    let stratified = stratify_by.map(|field| Stratified {
        field,
        classes: Classes::default(),
        stratifier: Stratifier::new(fractions.clone()),
        replay: exchange.map(Replay::new),
    });
    let split = Split { names, fractions, bounds, field, key, seed, config, stratified };
    Some(if split.stratified.is_some() {
        Step::StatefulTransform(Box::new(split))
    } else {
        Step::Transform(Arc::new(split))
    })
}

impl StepInfo for Split {
    fn fields_read(&self) -> Vec<String> {
        let mut read = self.key.clone().unwrap_or_default();
        read.extend(self.stratified.as_ref().map(|s| s.field.clone()));
        read
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn estimated_cost(&self) -> f64 {
        0.3
    }

    /// A stratified split needs the whole dataset (a plain one, a transform, runs on each
    /// shard's records).
    fn shards_by_exchange(&self) -> bool {
        self.stratified.is_some()
    }

    /// Not when it only publishes (`weave run --stage`): it passes nothing on then, which
    /// is not the output its key names.
    fn cacheable(&self) -> bool {
        let x = self.stratified.as_ref().and_then(|st| st.replay.as_ref()).map(Replay::exchange);
        !x.is_some_and(Exchange::publish_only)
    }
}

impl Split {
    /// The split for a random number `u` in [0, 1).
    fn pick(&self, u: f64) -> usize {
        // A split of fraction 0 is never chosen: its bound equals the one before it.
        self.bounds.iter().position(|b| u < *b).unwrap_or_else(|| {
            // Past the last bound (fractions adding up to a hair under 1): the last split
            // with a share.
            self.fractions.iter().rposition(|f| *f > 0.0).unwrap_or(0)
        })
    }
}

impl Transform for Split {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let seed = self.seed.unwrap_or(ctx.seed());
        let keys = KeyColumns::new(batch, self.key.as_deref(), &self.field)?;
        let mut col = StrColumn::with_capacity(batch.len(), batch.len() * 6);
        for row in 0..batch.len() {
            col.push(&self.names[self.pick(unit(keys.key(seed, salt::SPLIT, row)))]);
        }
        batch.with_column(&self.field, Column::Str(col)).map_err(|e| StepError::internal(e.to_string()))
    }
}

impl StatefulTransform for Split {
    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let seed = self.seed.unwrap_or(ctx.seed());
        let Some(st) = &mut self.stratified else { return Err(StepError::internal("split: not stratified")) };
        let classes = column(batch, &st.field)?;
        let key_columns = KeyColumns::new(batch, None, &self.field)?;
        let keys: Vec<u64> = (0..batch.len()).map(|row| key_columns.key(seed, salt::SPLIT, row)).collect();
        if let Some(r) = &mut st.replay
            && let Admit::Wait = r.admit(batch, classes, &keys, ctx, &mut st.classes, &mut st.stratifier)?
        {
            return Ok(());
        }
        out.push(assign(&self.names, &self.field, st, batch, &keys)?);
        Ok(())
    }

    fn finish(&mut self, ctx: &mut StepContext, _out: &mut Vec<Batch>) -> Result<(), StepError> {
        let Some(st) = &mut self.stratified else { return Ok(()) };
        if let Some(r) = &mut st.replay {
            r.finish(ctx, &mut st.classes, &mut st.stratifier)?;
            if r.exchange().publish_only() || r.holds() {
                // Nothing to count, or the held batches first (`more`).
                return Ok(());
            }
        }
        self.report(ctx);
        Ok(())
    }

    /// Assigns the held batches, one a call, in order; then the figures.
    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        let Some(st) = &mut self.stratified else { return Ok(false) };
        let Some(r) = &mut st.replay else { return Ok(false) };
        let Some((batch, keys)) = r.next_held()? else { return Ok(false) };
        out.push(assign(&self.names, &self.field, st, &batch, &keys)?);
        if st.replay.as_ref().is_some_and(Replay::holds) {
            return Ok(true);
        }
        self.report(ctx);
        Ok(false)
    }
}

impl Split {
    /// The step's figures, once every record is assigned.
    fn report(&self, ctx: &mut StepContext) {
        let Some(st) = &self.stratified else { return };
        // Counts per split, and per class and split: the shard's own in a shard of a job.
        let counts: Vec<(u32, Vec<u64>)> = match &st.replay {
            Some(r) => r.own_counts(&st.stratifier).collect(),
            None => {
                st.stratifier.counts.iter().enumerate().map(|(c, (_, counts))| (c as u32, counts.clone())).collect()
            }
        };
        let mut total = vec![0u64; self.names.len()];
        let mut by_class = std::collections::BTreeMap::new();
        for (class, counts) in counts {
            let mut m = std::collections::BTreeMap::new();
            for (j, c) in counts.iter().enumerate() {
                total[j] += c;
                m.insert(self.names[j].clone(), Value::Int(*c as i64));
            }
            by_class.insert(st.classes.name(class).to_owned(), Value::Map(m.into()));
        }
        let counts: std::collections::BTreeMap<String, Value> =
            self.names.iter().zip(&total).map(|(n, c)| (n.clone(), Value::Int(*c as i64))).collect();
        ctx.set_stat("counts", Value::Map(counts.into()));
        ctx.set_stat("counts_by_class", Value::Map(by_class.into()));
    }
}

/// `batch` with each row's split (from its class's counts and its random key, `keys`) in
/// the field `field`.
fn assign(names: &[String], field: &str, st: &mut Stratified, batch: &Batch, keys: &[u64]) -> Result<Batch, StepError> {
    let classes = column(batch, &st.field)?;
    let mut col = StrColumn::with_capacity(batch.len(), batch.len() * 6);
    for (row, key) in keys.iter().enumerate() {
        let class = st.classes.id(classes.get(row));
        col.push(&names[st.stratifier.assign(class, unit(*key))]);
    }
    batch.with_column(field, Column::Str(col)).map_err(|e| StepError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use std::collections::HashMap;
    use weave_core::Record;

    fn records(n: usize) -> Vec<Record> {
        (0..n).map(|i| Record::new().with("id", i as i64).with("label", ["a", "b", "b", "c"][i % 4])).collect()
    }

    /// Runs a split over `records` cut into batches of `batch_size`, with the pipeline seed
    /// `seed`, and returns the split name of each record in order.
    fn run(config: &str, records: &[Record], batch_size: usize, seed: u64) -> Vec<String> {
        let step = build_step("split", config);
        let mut outs = Vec::new();
        let mut ctx = StepContext::new("split", seed, 0, Default::default());
        match step {
            Step::Transform(t) => {
                for chunk in records.chunks(batch_size) {
                    outs.push(t.apply(&Batch::from_records(chunk), &mut ctx).unwrap());
                }
            }
            Step::StatefulTransform(mut t) => {
                for chunk in records.chunks(batch_size) {
                    t.process(&Batch::from_records(chunk), &mut ctx, &mut outs).unwrap();
                }
                crate::tests::finish(&mut *t, &mut ctx, &mut outs).unwrap();
            }
            _ => panic!("split is a transform"),
        }
        outs.iter()
            .flat_map(|b| b.to_records())
            .map(|r| r.get("split").and_then(|v| v.as_str()).unwrap().to_owned())
            .collect()
    }

    fn counts(names: &[String]) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for n in names {
            *m.entry(n.as_str()).or_default() += 1;
        }
        m
    }

    const FRACTIONS: &str = "fractions = { train = 0.8, validation = 0.1, test = 0.1 }";

    #[test]
    fn every_record_gets_a_split_near_the_fractions() {
        let names = run(FRACTIONS, &records(10_000), 1000, 42);
        let c = counts(&names);
        // Independent draws: 10,000 × 0.1 = 1,000 ± 30 (one standard deviation).
        assert!((7850..=8150).contains(&c["train"]), "{c:?}");
        assert!((880..=1120).contains(&c["validation"]), "{c:?}");
        assert!((880..=1120).contains(&c["test"]), "{c:?}");
        assert_eq!(c.values().sum::<usize>(), 10_000);
    }

    #[test]
    fn the_split_does_not_depend_on_batch_size_and_changes_with_the_seed() {
        let r = records(3000);
        let a = run(FRACTIONS, &r, 3000, 42);
        assert_eq!(a, run(FRACTIONS, &r, 7, 42));
        assert_eq!(a, run(FRACTIONS, &r, 1, 42));
        let b = run(FRACTIONS, &r, 3000, 43);
        assert_ne!(a, b);
        // A step's own seed wins over the pipeline's.
        let own = format!("{FRACTIONS}\nseed = 43");
        assert_eq!(run(&own, &r, 100, 1), b);
        // The record's split depends on the record, not on its neighbours.
        let tail = run(FRACTIONS, &r[1000..], 64, 42);
        assert_eq!(tail, a[1000..]);
    }

    #[test]
    fn records_with_the_same_key_share_a_split() {
        // 50 users with 20 records each: every user's records land in one split.
        let r: Vec<Record> =
            (0..1000).map(|i| Record::new().with("user", (i % 50) as i64).with("text", format!("t{i}"))).collect();
        let names = run(&format!("{FRACTIONS}\nkey = \"user\""), &r, 128, 7);
        let mut by_user: HashMap<i64, &str> = HashMap::new();
        for (rec, name) in r.iter().zip(&names) {
            let Some(Value::Int(u)) = rec.get("user") else { panic!() };
            assert_eq!(*by_user.entry(*u).or_insert(name), name.as_str(), "user {u}");
        }
        // Without a key, identical records share a split too, and a field that arrives
        // as an int in one batch and as a float in another is the same value.
        let dup = vec![Record::new().with("x", 3i64); 5];
        let mut mixed = vec![Record::new().with("x", 3.5)];
        mixed.extend(dup.iter().cloned());
        let a = run(FRACTIONS, &dup, 5, 1);
        let b = run(FRACTIONS, &mixed, 6, 1);
        assert!(a.iter().all(|n| *n == a[0]));
        assert_eq!(b[1..], a[..]);
    }

    #[test]
    fn stratified_split_gives_every_class_its_fractions() {
        let r = records(4000);
        let config = format!("{FRACTIONS}\nstratify_by = \"label\"");
        let names = run(&config, &r, 333, 5);
        for label in ["a", "b", "c"] {
            let of: Vec<String> = r
                .iter()
                .zip(&names)
                .filter(|(rec, _)| rec.get("label").and_then(Value::as_str) == Some(label))
                .map(|(_, n)| n.clone())
                .collect();
            let c = counts(&of);
            let n = of.len() as f64;
            for (split, f) in [("train", 0.8), ("validation", 0.1), ("test", 0.1)] {
                let got = c.get(split).copied().unwrap_or(0) as f64;
                assert!((got - n * f).abs() < 2.0, "{label}/{split}: {got} of {n}");
            }
        }
        assert_eq!(names, run(&config, &r, 17, 5), "batch size does not matter");
        assert_ne!(names, run(&config, &r, 333, 6), "the seed does");
    }

    #[test]
    fn stratified_split_reports_its_counts() {
        let Step::StatefulTransform(mut t) =
            build_step("split", "fractions = { train = 0.5, test = 0.5 }\nstratify_by = \"label\"")
        else {
            panic!()
        };
        let mut ctx = StepContext::new("split", 0, 0, Default::default());
        let mut out = Vec::new();
        t.process(&Batch::from_records(&records(8)), &mut ctx, &mut out).unwrap();
        crate::tests::finish(&mut *t, &mut ctx, &mut out).unwrap();
        let stats: HashMap<String, Value> = ctx.take_stats().into_iter().collect();
        assert_eq!(stats["counts"].to_string(), r#"{"test":4,"train":4}"#);
        assert_eq!(
            stats["counts_by_class"].to_string(),
            r#"{"a":{"test":1,"train":1},"b":{"test":2,"train":2},"c":{"test":1,"train":1}}"#
        );
    }

    #[test]
    fn a_split_of_fraction_zero_is_never_chosen_and_names_are_free() {
        let names = run("fractions = { dev = 0.0, holdout = 0.25, rest = 0.75 }", &records(2000), 100, 3);
        let c = counts(&names);
        assert!(!c.contains_key("dev"));
        assert_eq!(c.len(), 2);
        let Step::Transform(t) = build_step("split", "fractions = { all = 1 }\nfield = \"part\"") else { panic!() };
        let mut ctx = StepContext::new("split", 0, 0, Default::default());
        let out = t.apply(&Batch::from_records(&records(2)), &mut ctx).unwrap();
        assert_eq!(out.to_records()[1].to_string(), r#"{"id":1,"label":"b","part":"all"}"#);
    }

    #[test]
    fn bad_fractions_and_keys_are_named() {
        check_build_errors(
            "split",
            "fractions = { train = 0.8, validation = 0.1, test = 0.2 }",
            &["1:13 the fractions add up to 1.1, not 1 (train 0.8 + validation 0.1 + test 0.2)"],
        );
        check_build_errors(
            "split",
            "fractions = { train = 1.5, test = \"x\" }",
            &[
                "1:23 fraction `train` must be from 0 to 1, not 1.5",
                "1:35 fraction `test` must be a number, not a string",
            ],
        );
        check_build_errors(
            "split",
            "fractions = [0.8, 0.2]",
            &["1:13 `fractions` must be a table of names and fractions, such as { train = 0.8, test = 0.2 }"],
        );
        check_build_errors(
            "split",
            "",
            &[
                "- missing required key `fractions` (the splits and their shares, such as { train = 0.8, validation = 0.1, test = 0.1 })",
            ],
        );
        check_build_errors(
            "split",
            "fractions = { a = 0.5, b = 0.5 }\nkey = []\nstratify_by = \"label\"\nsede = 1",
            &[
                "2:7 `key` is empty: name the fields, or leave `key` out to use the whole record",
                "4:1 unknown key `sede` in step",
            ],
        );
        check_build_errors(
            "split",
            "fractions = { a = 0.5, b = 0.5 }\nkey = \"id\"\nstratify_by = \"label\"",
            &[
                "3:15 `key` and `stratify_by` do not go together: a stratified split assigns records one by one, so it cannot keep the records of a key together",
            ],
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let step = build_step("split", "fractions = { a = 1.0 }\nkey = \"user\"");
        let Step::Transform(t) = step else { panic!() };
        let mut ctx = StepContext::new("split", 0, 0, Default::default());
        let err = t.apply(&Batch::from_records(&records(2)), &mut ctx).unwrap_err();
        assert_eq!(err.to_string(), "field `user` is not in the data (fields: id, label)");
        let Step::StatefulTransform(mut t) = build_step("split", "fractions = { a = 1.0 }\nstratify_by = \"lab\"")
        else {
            panic!()
        };
        let err = t.process(&Batch::from_records(&records(2)), &mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "field `lab` is not in the data (fields: id, label)");
    }
}
