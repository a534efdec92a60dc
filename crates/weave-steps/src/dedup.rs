//! The `dedup` step: drops records whose chosen fields repeat an earlier record's.

use std::sync::Arc;

use weave_core::{
    Batch, CanonicalConfig, Params, Prepare, Prepared, Shape, StatefulTransform, Step, StepContext, StepError,
    StepInfo, StepKind, ValueRef,
};

/// The `dedup` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "dedup",
        Shape::StatefulTransform,
        "drop records whose fields (after an optional normalisation) repeat an earlier record's",
        ["fields", "normalize"],
        build,
    )
});

const NORMALIZE: &[&str] = &["lowercase", "trim", "collapse_whitespace"];

/// Keeps the first record of each distinct key and drops the rest, counting them as
/// `duplicate`. A key is a 128-bit keyed hash of the chosen fields (normalised as asked;
/// see [`RecordKeys`]), so memory grows by 16 bytes (plus the set's overhead) per distinct
/// record, whatever the text's length. The keys are made on the worker pool, batches at a time (its
/// [`Prepare`] is [`RecordKeys`]); only the look-up in the set of keys seen runs in order.
#[derive(Debug)]
pub struct Dedup {
    keys: Arc<RecordKeys>,
    seen: KeySet,
    config: CanonicalConfig,
    /// In a shard of a job: the keys exchanged with the other shards, whether the earlier
    /// shards' were taken in, and this shard's batches held until they are.
    exchange: Option<crate::exchange::Exchange>,
    warmed: bool,
    held: crate::exchange::Held<Vec<u128>>,
    /// In a shard that held every batch: whether a single process keeps each of their
    /// records, decided at once at the input's end, and how many the batches let out so
    /// far have reached.
    release: Option<(Vec<bool>, usize)>,
    /// In a shard whose keys a run before this one published (the stage before, which only
    /// published them): those keys, in order, whether a single process keeps each, and
    /// how many of them this run's records have reached.
    decided: Option<(Vec<u128>, Vec<bool>, usize)>,
}

fn build(p: &Params) -> Option<Step> {
    let keys = RecordKeys::read(p, "make a record a duplicate");
    let exchange = crate::exchange::Exchange::of(p).unwrap_or_else(|e| {
        p.push(weave_core::Diagnostic::error(e).with_code("no-exchange"));
        None
    });
    if p.has_errors() {
        return None;
    }
    let mut keys = keys?;
    if let Some(x) = &exchange {
        // Every shard hashes keys alike, so that they compare across shards.
        keys.secret = x.secret();
    }
    Some(Step::StatefulTransform(Box::new(Dedup {
        keys: Arc::new(keys),
        seen: KeySet::default(),
        config: exchange.as_ref().map_or_else(|| p.canonical(), |x| x.keyed(p.canonical())),
        exchange,
        warmed: false,
        held: crate::exchange::Held::default(),
        release: None,
        decided: None,
    })))
}

impl StepInfo for Dedup {
    fn fields_read(&self) -> Vec<String> {
        self.keys.fields.clone().unwrap_or_default()
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    /// 2: numbers are keyed by value (an integral float matches the integer). 3 (the whole
    /// record only, no `fields`): the fields in name order and a null field as an absent
    /// one.
    fn version(&self) -> u32 {
        if self.keys.whole_record() { 3 } else { 2 }
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn shards_by_exchange(&self) -> bool {
        true
    }

    /// Not when it only publishes its input's keys (`weave run --stage`): it passes
    /// nothing on then, which is not the output its key names.
    fn cacheable(&self) -> bool {
        !self.exchange.as_ref().is_some_and(crate::exchange::Exchange::publish_only)
    }
}

/// The 128-bit keys of records, from chosen fields normalised as asked: what `dedup` and
/// `validate`'s uniqueness check compare.
#[derive(Debug)]
pub(crate) struct RecordKeys {
    /// The fields the key covers; `None` means every field of the record.
    fields: Option<Vec<String>>,
    lowercase: bool,
    /// Collapse inner whitespace to one space, and trim the ends.
    collapse: bool,
    trim: bool,
    /// The key of the hash, drawn for each step built: see [`RecordKeys::key`].
    pub(crate) secret: (u64, u64),
}

impl RecordKeys {
    /// Reads `fields` and `normalize` from `p`; `purpose` ends the message for an empty
    /// `fields` ("name the fields that {purpose}").
    pub(crate) fn read(p: &Params, purpose: &str) -> Option<RecordKeys> {
        let fields = p.str_list("fields");
        if let (Some(f), Some(item)) = (&fields, p.item("fields"))
            && f.is_empty()
        {
            p.error_at(
                item,
                format!("`fields` is empty: name the fields that {purpose}, or leave `fields` out to use every field"),
            );
        }
        let mut norm = Vec::new();
        let mut ok = true;
        for n in p.str_list("normalize").unwrap_or_default() {
            match NORMALIZE.iter().find(|k| **k == n) {
                Some(k) => norm.push(*k),
                None => {
                    ok = false;
                    let mut msg = format!("unknown normalisation \"{n}\" (known: {})", NORMALIZE.join(", "));
                    if let Some(m) = weave_core::did_you_mean(&n, NORMALIZE.iter().copied()) {
                        msg = format!("unknown normalisation \"{n}\" (did you mean \"{m}\"?)");
                    }
                    if let Some(item) = p.item("normalize") {
                        p.error_at(item, msg);
                    }
                }
            }
        }
        ok.then(|| RecordKeys {
            fields,
            lowercase: norm.contains(&"lowercase"),
            collapse: norm.contains(&"collapse_whitespace"),
            trim: norm.contains(&"trim"),
            secret: random_secret(),
        })
    }

    /// The fields the key covers; `None` means every field.
    pub(crate) fn fields(&self) -> Option<&[String]> {
        self.fields.as_deref()
    }

    /// Whether the key is the whole record (no `fields`).
    pub(crate) fn whole_record(&self) -> bool {
        self.fields.is_none()
    }

    /// The columns of `batch` that the key covers, or an error naming a missing field.
    pub(crate) fn columns(&self, batch: &Batch) -> Result<Vec<usize>, StepError> {
        match &self.fields {
            // Every field, in name order, so that the order in which the batch's records
            // brought their fields in does not matter.
            None => {
                let fields = batch.schema().fields();
                let mut columns: Vec<usize> = (0..fields.len()).collect();
                columns.sort_by(|&a, &b| fields[a].name.cmp(&fields[b].name));
                Ok(columns)
            }
            Some(fields) => fields
                .iter()
                .map(|f| batch.schema().index_of(f).ok_or_else(|| crate::missing_field(batch, f)))
                .collect(),
        }
    }

    /// The keys of every row of `batch`, in row order, or an error naming a missing field.
    pub(crate) fn batch_keys(&self, batch: &Batch) -> Result<Vec<u128>, StepError> {
        let columns = self.columns(batch)?;
        let mut buf = Vec::new();
        Ok((0..batch.len()).map(|row| self.key(batch, &columns, row, &mut buf)).collect())
    }

    /// The key of row `row` of `batch`, over `columns` (from [`RecordKeys::columns`]).
    /// `buf` is reused from row to row.
    ///
    /// The key's bytes ([`RecordKeys::key_bytes`]) hashed by SipHash-1-3 with 128 bits of
    /// output, under a secret drawn when the step is built. Keys are compared within one
    /// run and never stored, so they need not be the same from run to run; a secret keeps
    /// the hash a pseudo-random function that no input can be crafted against (two texts
    /// made to share a key would drop one of them), at a seventh of blake3's cost on texts
    /// of a few hundred bytes, where blake3 was a sixth of a dedup run's CPU. The output
    /// does not depend on the secret: only a collision of 128-bit keys would change it.
    fn key(&self, batch: &Batch, columns: &[usize], row: usize, buf: &mut Vec<u8>) -> u128 {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hasher as _;
        self.key_bytes(batch, columns, row, buf);
        let mut h = siphasher::sip128::SipHasher13::new_with_keys(self.secret.0, self.secret.1);
        h.write(buf);
        h.finish128().as_u128()
    }

    /// The bytes that make the key of row `row`, laid out in `buf` (cleared first): each
    /// field framed (a tag, its length, its normalised form), so that no two different
    /// lists of values lay out alike.
    fn key_bytes(&self, batch: &Batch, columns: &[usize], row: usize, buf: &mut Vec<u8>) {
        let key = buf;
        key.clear();
        for &c in columns {
            // Field names are part of the key when every field is used, so that
            // records with different fields never match; a null field is left out, as
            // the same as an absent one (a record read from JSON has a null for a field
            // it lacks when another record of its batch has it).
            if self.fields.is_none() {
                if batch.columns()[c].get(row).is_null() {
                    continue;
                }
                let name = &batch.schema().fields()[c].name;
                key.extend_from_slice(&(name.len() as u64).to_le_bytes());
                key.extend_from_slice(name.as_bytes());
            }
            match batch.columns()[c].get(row) {
                ValueRef::Null => frame(key, 0, |_| {}),
                ValueRef::Str(s) => frame(key, 1, |k| self.normalise_into(s, k)),
                // Numbers by value: 3 and 3.0 are one key, since a float column (from
                // Parquet, say) holds what an int column holds elsewhere.
                ValueRef::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    frame(key, 3, |k| k.extend_from_slice(&(f as i64).to_le_bytes()));
                }
                ValueRef::Int(i) => frame(key, 3, |k| k.extend_from_slice(&i.to_le_bytes())),
                // Maps by their entries, whatever their order, as they compare.
                other => frame(key, 2, |k| {
                    use std::io::Write as _;
                    // Writing to a Vec cannot fail.
                    let _ = write!(k, "{}", other.canonical());
                }),
            }
        }
    }

    /// The key bytes of every row of `batch` (for the golden test of the normalisation).
    #[cfg(test)]
    pub(crate) fn batch_key_bytes(&self, batch: &Batch) -> Result<Vec<Vec<u8>>, StepError> {
        let columns = self.columns(batch)?;
        Ok((0..batch.len())
            .map(|row| {
                let mut buf = Vec::new();
                self.key_bytes(batch, &columns, row, &mut buf);
                buf
            })
            .collect())
    }

    /// Appends the normalised form of `s` to the key being built.
    fn normalise_into(&self, s: &str, key: &mut Vec<u8>) {
        crate::text::normalise_key_into(s, self.lowercase, self.trim, self.collapse, key);
    }
}

/// Appends one framed part to a key: a tag, then (but for null) the body's length and the
/// body, so that no two different lists of parts lay out alike.
fn frame(key: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    key.push(tag);
    if tag == 0 {
        return;
    }
    let at = key.len();
    key.extend_from_slice(&[0; 8]);
    body(key);
    let len = (key.len() - at - 8) as u64;
    key[at..at + 8].copy_from_slice(&len.to_le_bytes());
}

/// A secret for [`RecordKeys::key`]: two words from the standard library's randomly seeded
/// `RandomState` (seeded from the operating system's random source).
fn random_secret() -> (u64, u64) {
    use std::hash::BuildHasher as _;
    let s = std::hash::RandomState::new();
    (s.hash_one(0x6b65_7973_u64), s.hash_one(0x7365_6372_6574_u64))
}

/// Hashes a 128-bit key for a [`KeySet`] by taking its low 64 bits: keys are the output of
/// a keyed hash, already uniformly spread, so hashing them again would only cost time.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used by the set; any other input is folded in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// A set of 128-bit keys that are hashes already (dedup's keys), hashed by [`KeyHasher`].
pub type KeySet = std::collections::HashSet<u128, std::hash::BuildHasherDefault<KeyHasher>>;

impl Prepare for RecordKeys {
    /// The batch's keys, a `Vec<u128>` in row order.
    fn prepare(&self, batch: &Batch, _ctx: &StepContext) -> Result<Prepared, StepError> {
        Ok(Box::new(self.batch_keys(batch)?))
    }
}

impl Dedup {
    /// Keeps the rows of `batch` whose key (`keys`, one per row) was not seen before.
    fn decide(&mut self, batch: &Batch, keys: &[u128], ctx: &mut StepContext, out: &mut Vec<Batch>) {
        let keep: Vec<bool> = keys.iter().map(|&k| self.seen.insert(k)).collect();
        Self::emit(batch, &keep, ctx, out);
    }

    /// Passes on the rows of `batch` that `keep` says, counting the others as duplicates.
    fn emit(batch: &Batch, keep: &[bool], ctx: &mut StepContext, out: &mut Vec<Batch>) {
        let dropped = keep.iter().filter(|k| !**k).count() as u64;
        if ctx.keeps_dropped() {
            for (i, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
                ctx.drop_record("duplicate", || batch.row(i).to_record());
            }
        } else {
            ctx.count_dropped("duplicate", dropped);
        }
        if dropped < batch.len() as u64 {
            out.push(batch.filter(keep));
        }
    }
}

impl Dedup {
    /// Takes a batch with its keys: decides at once, or, in a shard whose earlier shards'
    /// keys are not all there yet, holds it (publishing its keys either way).
    fn take(
        &mut self,
        batch: &Batch,
        keys: &[u128],
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let Some(x) = &mut self.exchange else {
            self.decide(batch, keys, ctx, out);
            return Ok(());
        };
        x.publish(&keys.iter().flat_map(|k| k.to_le_bytes()).collect::<Vec<u8>>())?;
        if x.publish_only() {
            return Ok(());
        }
        if !self.warmed && self.held.is_empty() && x.earlier_ready() {
            // This shard's keys are known ahead when a run before this one published them
            // (the stage before, which only published): its decisions are then made at
            // once, as for held batches, and its records take them in order.
            let mut own = Vec::new();
            let known = x.take_own(|bytes| {
                own.extend(bytes.chunks_exact(16).map(|k| u128::from_le_bytes(k.try_into().unwrap_or_default())));
                Ok(())
            })?;
            if known {
                let keep = first_unseen(&own, |take| x.take_earlier(ctx, take))?;
                self.decided = Some((own, keep, 0));
                self.warmed = true;
            } else {
                self.warm(ctx)?;
            }
        }
        if let Some((own, keep, at)) = &mut self.decided {
            let end = *at + keys.len();
            if own.get(*at..end) != Some(keys) {
                let x = self.exchange.as_ref().map_or_else(String::new, |x| format!(" (shard {})", x.shard_index()));
                return Err(StepError::fatal(format!(
                    "the records this shard{x} reads differ from the keys it published for them in the stage before: was its input changed between the stages? Run the job again from its first stage"
                )));
            }
            Self::emit(batch, &keep[*at..end], ctx, out);
            *at = end;
        } else if self.warmed {
            self.decide(batch, keys, ctx, out);
        } else {
            self.held.push(batch.clone(), keys.to_vec())?;
        }
        Ok(())
    }

    /// Takes every earlier shard's keys into the set, as if their records had come first
    /// (a shard that finds them there at its first batch, without its own published: the
    /// set then holds the job's keys so far, as the single process's would).
    fn warm(&mut self, ctx: &StepContext) -> Result<(), StepError> {
        let Some(x) = &self.exchange else { return Ok(()) };
        let seen = &mut self.seen;
        let key = |k: &[u8]| u128::from_le_bytes(k.try_into().unwrap_or_default());
        // 16 bytes a key (beside the frames' lengths), and about a shard's worth more of its
        // own: the set is made its size at once rather than grown.
        let earlier = x.wait_for_earlier(ctx)? / 16;
        let more = earlier / u64::from(x.shard_index().max(1));
        seen.reserve(usize::try_from(earlier + more).unwrap_or(0));
        x.take_earlier(ctx, |bytes| {
            seen.extend(bytes.chunks_exact(16).map(key));
            Ok(())
        })?;
        self.warmed = true;
        Ok(())
    }
}

/// Which of `keys` (a shard's, in its order) a single process would keep: the first of
/// each key in the shard, unless an earlier shard had it (its keys come as the frames
/// `earlier` hands to `take`). The same decisions as taking the earlier keys into a set
/// and then each own key in turn, with a table a fraction of that set's size: it holds
/// the position of the first of each own key (4 bytes and a control byte a key, the keys
/// staying in `keys`), so it mostly stays in the core's cache while the earlier keys are
/// looked up in it, and a key is only read from `keys` when its hash's tag matches.
fn first_unseen(
    keys: &[u128],
    earlier: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<(), StepError>) -> Result<(), StepError>,
) -> Result<Vec<bool>, StepError> {
    if keys.is_empty() {
        // Nothing to decide on: the earlier keys need not be read.
        return Ok(Vec::new());
    }
    // The keys are keyed hashes already: their low 64 bits are the table's hash.
    let hash = |k: u128| k as u64;
    let at = |j: &u32| keys[*j as usize];
    let mut keep = vec![false; keys.len()];
    let mut firsts: hashbrown::HashTable<u32> = hashbrown::HashTable::with_capacity(keys.len());
    for (i, &k) in keys.iter().enumerate() {
        if let hashbrown::hash_table::Entry::Vacant(e) = firsts.entry(hash(k), |j| at(j) == k, |j| hash(at(j))) {
            e.insert(i as u32);
            keep[i] = true;
        }
    }
    earlier(&mut |bytes| {
        for k in bytes.chunks_exact(16) {
            let k = u128::from_le_bytes(k.try_into().unwrap_or_default());
            if let Some(&j) = firsts.find(hash(k), |j| at(j) == k) {
                keep[j as usize] = false;
            }
        }
        Ok(())
    })?;
    Ok(keep)
}

impl StatefulTransform for Dedup {
    fn preparer(&self) -> Option<Arc<dyn Prepare>> {
        Some(Arc::clone(&self.keys) as Arc<dyn Prepare>)
    }

    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let keys = self.keys.batch_keys(batch)?;
        self.take(batch, &keys, ctx, out)
    }

    fn process_prepared(
        &mut self,
        batch: &Batch,
        prepared: &Prepared,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let keys = weave_core::prepared_as::<Vec<u128>>(prepared, "dedup")?;
        self.take(batch, keys, ctx, out)
    }

    /// In a shard: puts its keys in place for the later shards, then (if it held its
    /// batches) waits for the earlier shards' keys and decides on its own.
    fn finish(&mut self, ctx: &mut StepContext, _out: &mut Vec<Batch>) -> Result<(), StepError> {
        let Some(x) = &mut self.exchange else { return Ok(()) };
        x.finish_publishing()?;
        if x.publish_only() {
            return Ok(());
        }
        if !self.warmed {
            // It held every batch: their keys are all it will decide on, at once. The
            // batches are let out one at a time (`more`).
            let keys: Vec<u128> = self.held.keys().flat_map(|keys| keys.iter().copied()).collect();
            let keep = first_unseen(&keys, |take| x.take_earlier(ctx, take))?;
            self.release = Some((keep, 0));
        }
        Ok(())
    }

    /// Lets the held batches out, one a call, in order.
    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        let Some((batch, keys)) = self.held.pop()? else { return Ok(false) };
        match &mut self.release {
            Some((keep, at)) => {
                Self::emit(&batch, &keep[*at..*at + keys.len()], ctx, out);
                *at += keys.len();
            }
            None => self.decide(&batch, &keys, ctx, out),
        }
        Ok(!self.held.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use proptest::prelude::*;
    use weave_core::Record;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Deciding on a shard's keys at once keeps what taking the earlier
        /// shards' keys into a set and then each own key in turn keeps: the first of each
        /// key in the shard, unless an earlier shard had it.
        #[test]
        fn deciding_at_once_keeps_what_one_set_keeps(
            own in proptest::collection::vec(0u32..6000, 0..12_000),
            earlier in proptest::collection::vec(proptest::collection::vec(0u32..9000, 0..3000), 0..4),
        ) {
            // Keys spread as hashes are, over every bit.
            let key = |v: u32| u128::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835) ^ u128::from(v);
            let own: Vec<u128> = own.into_iter().map(key).collect();
            let frames: Vec<Vec<u8>> =
                earlier.iter().map(|f| f.iter().flat_map(|&v| key(v).to_le_bytes()).collect()).collect();
            let mut seen: std::collections::HashSet<u128> = earlier.iter().flatten().map(|&v| key(v)).collect();
            let expected: Vec<bool> = own.iter().map(|&k| seen.insert(k)).collect();
            let got = first_unseen(&own, |take| {
                for f in &frames {
                    take(f)?;
                }
                Ok(())
            })
            .unwrap();
            prop_assert_eq!(got, expected);
        }
    }

    fn run(config: &str, batches: &[Vec<Record>]) -> (Vec<String>, u64) {
        let Step::StatefulTransform(mut d) = build_step("dedup", config) else { panic!("not stateful") };
        let mut ctx = StepContext::new("dedup", 0, 0, Default::default());
        let mut out = Vec::new();
        for b in batches {
            d.process(&Batch::from_records(b), &mut ctx, &mut out).unwrap();
        }
        let dropped = ctx.take_dropped().iter().map(|(_, n)| n).sum();
        (out.iter().flat_map(|b| b.to_records()).map(|r| r.to_string()).collect(), dropped)
    }

    fn rec(id: i64, text: &str) -> Record {
        Record::new().with("id", id).with("text", text)
    }

    #[test]
    fn duplicates_across_batches_are_dropped_keeping_the_first() {
        let (rows, dropped) =
            run("fields = [\"text\"]", &[vec![rec(1, "a"), rec(2, "b"), rec(3, "a")], vec![rec(4, "b"), rec(5, "c")]]);
        assert_eq!(rows, [r#"{"id":1,"text":"a"}"#, r#"{"id":2,"text":"b"}"#, r#"{"id":5,"text":"c"}"#]);
        assert_eq!(dropped, 2);
    }

    #[test]
    fn normalisation_decides_what_counts_as_the_same() {
        let batch = vec![rec(1, "Hello  World"), rec(2, " hello world "), rec(3, "HELLO WORLD!")];
        let (rows, _) = run("fields = [\"text\"]", std::slice::from_ref(&batch));
        assert_eq!(rows.len(), 3, "exact by default");
        let (rows, _) = run("fields = [\"text\"]\nnormalize = [\"lowercase\", \"collapse_whitespace\"]", &[batch]);
        assert_eq!(rows, [r#"{"id":1,"text":"Hello  World"}"#, r#"{"id":3,"text":"HELLO WORLD!"}"#]);
    }

    #[test]
    fn numbers_match_by_value_whatever_their_batch_made_them() {
        let n = |v: weave_core::Value| Record::new().with("n", v);
        use weave_core::Value::{Float, Int};
        // In the first batch 3 sits in a column of floats (beside 2.5); in the second, of ints.
        let (rows, dropped) =
            run("fields = [\"n\"]", &[vec![n(Float(3.0)), n(Float(2.5))], vec![n(Int(3)), n(Int(4))]]);
        assert_eq!(dropped, 1, "{rows:?}");
        assert_eq!(rows.len(), 3);
    }

    // JSON objects are unordered: two maps with the same entries are one key, whatever the
    // order their fields were written in (the order is kept in the output).
    #[test]
    fn maps_match_by_their_entries_whatever_their_order() {
        let m = |text: &str| Record::new().with("m", weave_core::Value::from_json(text).unwrap());
        let (rows, dropped) = run(
            "fields = [\"m\"]",
            &[vec![m(r#"{"a":1,"b":{"x":1,"y":2}}"#), m(r#"{"b":{"y":2,"x":1},"a":1}"#), m(r#"{"a":1,"b":{"x":2}}"#)]],
        );
        assert_eq!(dropped, 1);
        assert_eq!(rows.len(), 2);
        let (rows, dropped) = run("fields = [\"m\"]", &[vec![m("18446744073709551615"), m("18446744073709551614")]]);
        assert_eq!((rows.len(), dropped), (2, 0), "u64s told apart by every digit");
    }

    #[test]
    fn without_fields_the_whole_record_is_the_key() {
        let (rows, _) = run("", &[vec![rec(1, "a"), rec(1, "a"), rec(2, "a")]]);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn field_boundaries_and_nulls_are_kept_apart() {
        let r = |a: &str, b: Option<&str>| Record::new().with("a", a).with("b", b.map(str::to_owned));
        let (rows, _) = run(
            "fields = [\"a\", \"b\"]",
            &[vec![r("ab", Some("c")), r("a", Some("bc")), r("x", None), r("x", Some(""))]],
        );
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn bad_config_and_missing_fields_are_named() {
        check_build_errors(
            "dedup",
            "fields = []\nnormalize = [\"lowercse\"]",
            &[
                "1:10 `fields` is empty: name the fields that make a record a duplicate, or leave `fields` out to use every field",
                "2:13 unknown normalisation \"lowercse\" (did you mean \"lowercase\"?)",
            ],
        );
        let Step::StatefulTransform(mut d) = build_step("dedup", "fields = [\"txt\"]") else { panic!() };
        let mut ctx = StepContext::new("dedup", 0, 0, Default::default());
        let err = d.process(&Batch::from_records(&[rec(1, "a")]), &mut ctx, &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "field `txt` is not in the data (fields: id, text)");
    }
}
