//! Dataset operations: mixing real and synthetic records (`mix`), assigning splits
//! (`split`), keeping records by a condition (`filter`), sampling (`sample`), generating
//! records from templates (`generate`) and comparing a synthetic set with a real one
//! (`compare`).
//!
//! Every random choice here derives from the seed (the step's `seed` key, or the
//! pipeline's) and from something that does not depend on how the data was cut into
//! batches or how many threads ran: a record's content (or key fields) for the stateless
//! steps, a record's position in its input for the stateful ones. The streams are
//! `weave_core::rng`'s, where the output stability contract is written.

use std::collections::HashMap;

use weave_core::rng::{GAMMA, Rng, mix, unit};
use weave_core::{Batch, BatchBuilder, Column, Params, StepError, StrColumn, ValueRef};

mod compare;
mod fields;
mod filter;
mod generate;
mod mix;
mod sample;
mod shards;
mod split;

pub use compare::Compare;
pub use fields::Fields;
pub use filter::Filter;
pub use generate::Generate;
pub use mix::Mix;
pub use sample::Sample;
pub use split::Split;

pub(crate) use compare::KIND as COMPARE_KIND;
pub(crate) use fields::KIND as FIELDS_KIND;
pub(crate) use filter::KIND as FILTER_KIND;
pub(crate) use generate::KIND as GENERATE_KIND;
pub(crate) use mix::KIND as MIX_KIND;
pub(crate) use sample::KIND as SAMPLE_KIND;
pub(crate) use split::KIND as SPLIT_KIND;

/// Salts that keep the random streams of different uses apart under one seed, so that
/// (say) the records a sample keeps are not the ones a split sends to `train`.
mod salt {
    pub(super) const SPLIT: u64 = 0x7370_6c69_7400_0001;
    pub(super) const SAMPLE: u64 = 0x7361_6d70_6c00_0002;
    pub(super) const MIX_REAL: u64 = 0x6d69_7872_6561_0003;
    pub(super) const MIX_SYNTHETIC: u64 = 0x6d69_7873_796e_0004;
    pub(super) const GENERATE: u64 = 0x6765_6e65_7200_0005;
    pub(super) const COMPARE: u64 = 0x636f_6d70_6172_0006;
}

/// The random key of position `index` in a stream: a pure function of seed, salt and
/// position, so that it does not depend on batch boundaries.
#[inline]
fn position_key(seed: u64, salt: u64, index: u64) -> u64 {
    mix(mix(seed ^ salt).wrapping_add(index.wrapping_mul(GAMMA)))
}

/// The optional `seed` key: a step's own seed in place of the pipeline's.
fn seed_key(p: &Params) -> Option<u64> {
    p.u64("seed")
}

/// A list of field names (one name is a list of one). An empty list is an error, which
/// says what leaving the key out means (`absent`).
fn field_list(p: &Params, key: &str, absent: &str) -> Option<Vec<String>> {
    let list = p.str_list(key)?;
    if list.is_empty() {
        if let Some(item) = p.item(key) {
            p.error_at(item, format!("`{key}` is empty: name the fields, or leave `{key}` out to {absent}"));
        }
        return None;
    }
    Some(list)
}

/// The column `name` of `batch`, or the error that names the fields the data has.
fn column<'a>(batch: &'a Batch, name: &str) -> Result<&'a Column, StepError> {
    batch.column(name).ok_or_else(|| crate::missing_field(batch, name))
}

/// The fields a record's content key covers, for one batch.
#[derive(Debug)]
struct KeyColumns<'a> {
    columns: Vec<(&'a str, &'a Column)>,
    /// Whether the key is the whole record: names are hashed with the values, and null
    /// values are left out (a field that is null and a field that is absent are the same
    /// record, whatever other records shared the batch).
    whole: bool,
}

impl<'a> KeyColumns<'a> {
    /// The named fields in the order given, or every field but `except` in name order when
    /// `fields` is `None` (so that the order the fields arrived in does not matter).
    fn new(batch: &'a Batch, fields: Option<&'a [String]>, except: &str) -> Result<Self, StepError> {
        Ok(match fields {
            Some(f) => KeyColumns {
                columns: f.iter().map(|name| Ok((name.as_str(), column(batch, name)?))).collect::<Result<_, _>>()?,
                whole: false,
            },
            None => {
                let mut columns: Vec<(&str, &Column)> = batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(batch.columns())
                    .filter(|(f, _)| f.name != except)
                    .map(|(f, c)| (f.name.as_str(), &**c))
                    .collect();
                columns.sort_unstable_by_key(|(n, _)| *n);
                KeyColumns { columns, whole: true }
            }
        })
    }

    /// A 64-bit blake3 of `seed`, `salt` and the record at `row`: the same content gives
    /// the same number whatever batch or thread the record is in. Numbers are hashed by
    /// value (an integer column and a float column holding 3 give the same key, since a
    /// batch's column type depends on its other records).
    fn key(&self, seed: u64, salt: u64, row: usize) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&salt.to_le_bytes());
        for (name, c) in &self.columns {
            let v = c.get(row);
            if self.whole {
                if v.is_null() {
                    continue;
                }
                h.update(&(name.len() as u64).to_le_bytes());
                h.update(name.as_bytes());
            }
            hash_value(&mut h, v);
        }
        let mut k = [0u8; 8];
        k.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_le_bytes(k)
    }
}

/// Feeds one value to a hasher, tagged by kind and length-framed, numbers by value.
fn hash_value(h: &mut blake3::Hasher, v: ValueRef<'_>) {
    let int = |h: &mut blake3::Hasher, i: i64| {
        h.update(&[2]);
        h.update(&i.to_le_bytes());
    };
    match v {
        ValueRef::Null => {
            h.update(&[0]);
        }
        ValueRef::Bool(b) => {
            h.update(&[1, u8::from(b)]);
        }
        ValueRef::Int(i) => int(h, i),
        ValueRef::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => int(h, f as i64),
        ValueRef::Float(f) => {
            h.update(&[3]);
            h.update(&f.to_bits().to_le_bytes());
        }
        ValueRef::Str(s) => {
            h.update(&[4]);
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        // Lists and maps by their JSON text, maps' keys in name order (their entries, as
        // they compare); integers past i64 by their digits.
        other => {
            let text = other.canonical().to_string();
            h.update(&[5]);
            h.update(&(text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
    }
}

/// Class names (the values of a field such as `label`) numbered in order of first
/// appearance. A string is its own name; any other value is named by its JSON text
/// (`null`, `3`, `true`).
#[derive(Debug, Default)]
struct Classes {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    buf: String,
}

impl Classes {
    /// The number of `v`'s class, added if new. Allocates only for a new class (and for
    /// values that are not strings, which are written into a reused buffer).
    fn id(&mut self, v: ValueRef<'_>) -> u32 {
        let name: &str = match v {
            ValueRef::Str(s) => s,
            other => {
                use std::fmt::Write;
                self.buf.clear();
                // Maps by their entries, whatever their order, as they compare.
                let _ = write!(self.buf, "{}", other.canonical());
                &self.buf
            }
        };
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    fn len(&self) -> usize {
        self.names.len()
    }
}

/// The rows of `batches` in order, cut into batches of at most `max_rows` (fields are the
/// union, in order of first appearance; a batch without a field gives nulls there).
fn rebatch(batches: &[Batch], max_rows: usize) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut b = BatchBuilder::new();
    for batch in batches {
        for row in batch.rows() {
            b.push_row(row.iter());
            if b.len() >= max_rows {
                out.push(std::mem::take(&mut b).finish());
            }
        }
    }
    if !b.is_empty() {
        out.push(b.finish());
    }
    out
}

/// A column of `n` copies of `value`.
fn constant_column(value: &str, n: usize) -> Column {
    let mut c = StrColumn::with_capacity(n, value.len() * n);
    for _ in 0..n {
        c.push(value);
    }
    Column::Str(c)
}

/// Fractions that must add up to 1 (± 1e-9), read from a table `{ name = fraction }`
/// in the order written. Records an error at the table and returns `None` when they do
/// not, or when a value is not a number from 0 to 1.
fn read_fractions(p: &Params, key: &str) -> Option<Vec<(String, f64)>> {
    use weave_core::ConfValue;
    let item = p.item(key)?;
    let ConfValue::Table(t) = &item.value else {
        p.error_at(
            item,
            format!("`{key}` must be a table of names and fractions, such as {{ train = 0.8, test = 0.2 }}"),
        );
        return None;
    };
    if t.entries.is_empty() {
        p.error_at(item, format!("`{key}` is empty: give at least one name and its fraction"));
        return None;
    }
    let mut out = Vec::with_capacity(t.entries.len());
    let mut ok = true;
    for (name, _, v) in &t.entries {
        let x = match &v.value {
            ConfValue::Int(i) => *i as f64,
            ConfValue::Float(f) => *f,
            other => {
                p.error_at(v, format!("fraction `{name}` must be a number, not {}", other.type_name()));
                ok = false;
                continue;
            }
        };
        if !(0.0..=1.0).contains(&x) {
            p.error_at(v, format!("fraction `{name}` must be from 0 to 1, not {x}"));
            ok = false;
        }
        out.push((name.clone(), x));
    }
    if !ok {
        return None;
    }
    let sum: f64 = out.iter().map(|(_, x)| x).sum();
    if (sum - 1.0).abs() > 1e-9 {
        let parts: Vec<String> = out.iter().map(|(n, x)| format!("{n} {x}")).collect();
        p.error_at(item, format!("the fractions add up to {sum}, not 1 ({})", parts.join(" + ")));
        return None;
    }
    Some(out)
}

/// Assigns records to groups (splits, or kept / dropped) so that each class's counts
/// track the exact fractions as records arrive: after `n` records of a class, group `j`
/// holds more than `n·f_j − (k−1)` and less than `n·f_j + 1` of them (`k` groups).
///
/// Each record goes to a group whose count is below its share ("deficit" > 0), chosen at
/// random with probability proportional to the deficit, using the record's own random
/// number. The chosen group's deficit was positive, so it stays above −1; deficits sum to
/// 0, so none exceeds k−1. Memory: one counter per class and group.
#[derive(Debug)]
struct Stratifier {
    fractions: Vec<f64>,
    /// Per class: records seen, then the count per group.
    counts: Vec<(u64, Vec<u64>)>,
}

impl Stratifier {
    fn new(fractions: Vec<f64>) -> Self {
        Stratifier { fractions, counts: Vec::new() }
    }

    /// The group for the next record of `class`, given its random number `u` in [0, 1).
    fn assign(&mut self, class: u32, u: f64) -> usize {
        let k = self.fractions.len();
        let c = class as usize;
        if self.counts.len() <= c {
            self.counts.resize_with(c + 1, || (0, vec![0; k]));
        }
        let (n, counts) = &mut self.counts[c];
        *n += 1;
        let deficit = |j: usize| *n as f64 * self.fractions[j] - counts[j] as f64;
        let total: f64 = (0..k).map(deficit).filter(|d| *d > 0.0).sum();
        let mut chosen = None;
        if total > 0.0 {
            let mut x = u * total;
            for j in 0..k {
                let d = deficit(j);
                if d > 0.0 {
                    chosen = Some(j);
                    if x < d {
                        break;
                    }
                    x -= d;
                }
            }
        }
        // Rounding can leave no positive deficit only when the fractions are off by a
        // hair; the largest deficit is then the fair choice.
        let j = chosen.unwrap_or_else(|| (0..k).max_by(|&a, &b| deficit(a).total_cmp(&deficit(b))).unwrap_or_default());
        counts[j] += 1;
        j
    }
}

/// How many of each class to take so that the classes end as even as possible: `base`
/// is what each class already has, `avail` what can be added to it, `budget` how many to
/// add in all. The lowest classes are raised first ("water filling"); what cannot be
/// spread evenly goes one each to the classes at the top level, in the given order.
fn water_fill(base: &[u64], avail: &[u64], budget: u64) -> Vec<u64> {
    let budget = budget.min(avail.iter().sum());
    let fill = |level: u64| -> u64 { base.iter().zip(avail).map(|(b, a)| (*a).min(level.saturating_sub(*b))).sum() };
    // The highest level whose fill fits the budget.
    let (mut lo, mut hi) = (0u64, base.iter().zip(avail).map(|(b, a)| b + a).max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fill(mid) <= budget { lo = mid } else { hi = mid - 1 }
    }
    let mut take: Vec<u64> = base.iter().zip(avail).map(|(b, a)| (*a).min(lo.saturating_sub(*b))).collect();
    let mut rest = budget - take.iter().sum::<u64>();
    for i in 0..take.len() {
        if rest == 0 {
            break;
        }
        if take[i] < avail[i] && base[i] + take[i] == lo {
            take[i] += 1;
            rest -= 1;
        }
    }
    take
}

/// Shares as a map of name to fraction, for stats.
fn shares(names: impl Iterator<Item = (String, u64)>, total: u64) -> weave_core::Value {
    let map = names.map(|(n, c)| (n, weave_core::Value::Float(if total == 0 { 0.0 } else { c as f64 / total as f64 })));
    weave_core::Value::Map(map.collect::<std::collections::BTreeMap<_, _>>().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_filling_raises_the_smallest_classes_first() {
        // Real counts 10, 2, 5; up to 100 synthetic each; 8 to add: class 1 rises to 5
        // (3), then classes 1 and 2 rise together to 7 (4 more), and the one left over
        // goes to the first class at that level.
        assert_eq!(water_fill(&[10, 2, 5], &[100, 100, 100], 8), [0, 6, 2]);
        assert_eq!(water_fill(&[10, 2, 5], &[100, 100, 100], 7), [0, 5, 2]);
        // A class with too few to give is filled as far as it goes; the others rise on,
        // past the largest class once they reach it.
        assert_eq!(water_fill(&[10, 2, 5], &[100, 1, 100], 8), [1, 1, 6]);
        // More budget than can be given: everything.
        assert_eq!(water_fill(&[1, 1], &[2, 3], 100), [2, 3]);
        assert_eq!(water_fill(&[], &[], 5), Vec::<u64>::new());
        assert_eq!(water_fill(&[3, 3], &[5, 5], 0), [0, 0]);
    }

    #[test]
    fn stratified_counts_stay_within_a_record_of_their_share() {
        let mut s = Stratifier::new(vec![0.8, 0.1, 0.1]);
        let mut counts = [0u64; 3];
        for i in 0..10_000u64 {
            let j = s.assign(0, unit(mix(i)));
            counts[j] += 1;
            let n = (i + 1) as f64;
            for (j, f) in [0.8, 0.1, 0.1].iter().enumerate() {
                let c = counts[j] as f64;
                assert!(c < n * f + 1.0 && c > n * f - 2.0, "after {n}: group {j} has {c}");
            }
        }
        assert_eq!(counts, [8000, 1000, 1000]);
    }

    #[test]
    fn positions_give_unrelated_keys() {
        let a: Vec<u64> = (0..4).map(|i| position_key(1, salt::SAMPLE, i)).collect();
        let b: Vec<u64> = (0..4).map(|i| position_key(2, salt::SAMPLE, i)).collect();
        assert_ne!(a, b);
        assert!(a.windows(2).all(|w| w[0] != w[1]));
        let mut r = Rng::new(7);
        assert!((0..1000).all(|_| r.below(3) < 3));
    }
}
