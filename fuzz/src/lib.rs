//! What the fuzz targets share: a scratch folder, the built-in registry, a loader run to
//! its end the way a run drives a source, and the checks that every batch a loader reads
//! or the cache decodes must pass.
//!
//! A target may panic only on a real defect. Bad input that ends in an error, a rejected
//! record or a cache miss is the code doing its job; what is checked beyond "no panic" is
//! a property the project promises:
//! - a batch survives the cache's codec unchanged (the cache stores every step's output);
//! - the JSONL exporter writes each record of a batch as one valid JSON object;
//! - `batch_size` and `batch_bytes` do not change what a loader reads, since both are
//!   declared output-neutral (left out of the step's cache key);
//! - records a loader read, written as JSONL and read back by `load_jsonl`, are the same
//!   records.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use weave_core::{Batch, ConfTable, ConfValue, Registry, Step, StepContext};

/// The built-in step kinds, built once per process.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(weave_steps::registry)
}

/// A folder of this process's own, made once, for the files a target writes. It is not
/// removed when libFuzzer exits (statics are not dropped): `run.sh` points `TMPDIR` at a
/// folder it removes afterwards.
pub fn scratch() -> &'static Path {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("weave-fuzz-").tempdir().expect("cannot make a scratch folder");
        let dir = dir.keep();
        // Paths are written into TOML basic strings by `toml_str`, which escapes nothing.
        assert!(dir.to_str().is_some_and(|s| !s.contains(['"', '\\'])), "scratch folder {}", dir.display());
        dir
    })
}

/// `s` as a TOML basic string. Only for paths under [`scratch`], which hold no quote or
/// backslash.
pub fn toml_str(s: &Path) -> String {
    format!("\"{}\"", s.display())
}

/// Writes `data` to `name` in the scratch folder, replacing what was there.
pub fn write_input(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// What a loader read from its input.
#[derive(Debug)]
pub struct Loaded {
    /// What a user would see of it, in a form that batching does not change.
    pub seen: Seen,
    /// The records as the JSONL exporter wrote them, one a line.
    pub jsonl: Vec<u8>,
}

/// What a user sees of a loader's reading: its records, its bad records and its error.
#[derive(Debug, PartialEq)]
pub struct Seen {
    /// Each record as the JSONL exporter writes it, parsed back and normalised by
    /// [`normalise_record`].
    pub records: Vec<serde_json::Value>,
    /// Each rejected record, as `origin: reason`.
    pub rejected: Vec<String>,
    /// The error the source stopped with, if it stopped with one.
    pub error: Option<String>,
}

/// Builds a source of `kind` from its keys (as written in a pipeline file) and reads it to
/// its end, as the executor's source stage does: `next_batch` with a fresh context per
/// call, until `None` or an error. Every batch is checked by [`check_batch`].
pub fn load(kind: &str, keys: &str) -> Loaded {
    let step = registry().build(kind, keys).unwrap_or_else(|d| panic!("the target's own keys do not build:\n{d}"));
    let Step::Source(mut source) = step else { panic!("{kind} is not a source") };
    let cancel = Arc::new(AtomicBool::new(false));
    let mut seen = Seen { records: Vec::new(), rejected: Vec::new(), error: None };
    let mut jsonl = Vec::new();
    for seq in 0.. {
        let mut ctx = StepContext::new("load", 0, seq, Arc::clone(&cancel));
        let next = source.next_batch(&mut ctx);
        for r in ctx.take_rejected() {
            seen.rejected.push(format!("{}: {}", r.origin.unwrap_or_default(), r.reason));
        }
        match next {
            Ok(Some(batch)) => seen.records.extend(check_batch(seq, &batch, &mut jsonl)),
            Ok(None) => break,
            Err(e) => {
                seen.error = Some(e.to_string());
                break;
            }
        }
    }
    Loaded { seen, jsonl }
}

/// Reads the file at `path` with each of `kind`'s batch limits and checks that they read
/// the same; then writes what was read as JSONL and checks that `load_jsonl` reads the
/// same records back. `extra` is more keys for every read (`delimiter = ";"`).
///
/// `seed` picks the small batch limits (a few rows, a few hundred bytes), so that batch
/// boundaries fall in many places over a run.
pub fn load_all_ways(kind: &str, path: &Path, extra: &str, seed: usize) -> Loaded {
    let path_key = format!("path = {}\n{extra}", toml_str(path));
    let whole = load(kind, &path_key);
    let rows = 1 + seed % 3;
    let bytes = 1 + (seed / 3) % 200;
    let small = load(kind, &format!("{path_key}\nbatch_size = {rows}\nbatch_bytes = {bytes}"));
    let differ =
        |what: &str| format!("{kind} {what} with batch_size = {rows}, batch_bytes = {bytes} (both are output-neutral)");
    match (&whole.seen.error, &small.seen.error) {
        // A run that fails commits nothing, so only its error is seen: the records sent on
        // before it depend on where batches end, and are never written.
        (Some(_), _) | (_, Some(_)) => {
            assert_eq!(whole.seen.error, small.seen.error, "{}", differ("failed differently"))
        }
        _ => assert_eq!(whole.seen, small.seen, "{}", differ("read differently")),
    }
    // A small `max_record_bytes` takes the path that reads past a record without holding
    // it; what it reads is not compared (records over the bound are rejected, by design).
    let _ = load(kind, &format!("{path_key}\nmax_record_bytes = {}", 1 + seed % 96));
    if whole.seen.error.is_some() {
        return whole;
    }
    let again = write_input("reread.jsonl", &whole.jsonl);
    let reread = load("load_jsonl", &format!("path = {}", toml_str(&again))).seen;
    assert!(
        reread.rejected.is_empty() && reread.error.is_none(),
        "load_jsonl refused what the exporter wrote: {reread:?}"
    );
    assert_eq!(whole.seen.records, reread.records, "records written as JSONL did not read back the same");
    whole
}

/// The checks every batch must pass; appends the batch as JSONL to `jsonl`, and returns
/// its records as [`Seen::records`] holds them.
///
/// - It goes through the cache's codec (as a step's stored part, `(sequence, batch)`) and
///   comes back the same.
/// - The JSONL exporter writes one line per record, each a JSON object.
pub fn check_batch(seq: u64, batch: &Batch, jsonl: &mut Vec<u8>) -> Vec<serde_json::Value> {
    let part = vec![(seq, batch.clone())];
    let bytes = weave_cache::codec::encode(&part).expect("a batch encodes");
    let back: Option<Vec<(u64, Batch)>> = weave_cache::codec::decode(&bytes);
    // Compared by their encodings, which hold each float's bits: NaN equals no NaN.
    let again = back.map(|b| weave_cache::codec::encode(&b).expect("a decoded batch encodes"));
    assert!(again.as_ref() == Some(&bytes), "a batch did not come back from the cache's codec as it went in");
    let _ = batch.memory_size();
    if batch.columns().is_empty() && batch.len() > 1 << 16 {
        // Records without fields are only a count, so a few bytes of a stored part can hold
        // billions of them; writing each as `{}` is right, and would only take long here.
        return Vec::new();
    }
    let start = jsonl.len();
    weave_steps::write_jsonl(batch, jsonl);
    let lines: Vec<&[u8]> = jsonl[start..].split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), batch.len(), "the JSONL exporter wrote {} lines for {} records", lines.len(), batch.len());
    lines
        .iter()
        .map(|line| match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(v @ serde_json::Value::Object(_)) => normalise_record(v),
            Ok(other) => panic!("the JSONL exporter wrote {other} for a record"),
            // Values nested deeper than serde_json reads (128 levels) come only from a stored
            // part (the loaders read through serde_json): valid JSON that cannot be checked here.
            Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                serde_json::Value::String("(nested too deep to check)".to_owned())
            }
            Err(e) => panic!("the JSONL exporter wrote invalid JSON ({e}): {}", String::from_utf8_lossy(line)),
        })
        .collect()
}

/// A record in the form that batching does not change, and that still shows any change
/// of a value: fields that are null are left out (a batch gives a field that some of its
/// records lack a null in the others, so whether a missing field reads as null depends on
/// which records share a batch), and numbers are compared by their exact value (an int
/// read in a batch with floats becomes a float: `1` and `1.0` are the same number, but
/// `12345678901234567` and `12345678901234568.0` are not).
pub fn normalise_record(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, normalise(v))).collect(),
        ),
        other => normalise(other),
    }
}

fn normalise(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::Value::String(exact_number(&n)),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(normalise).collect()),
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, normalise(v))).collect())
        }
        other => other,
    }
}

/// A number's exact value as text: integers as integers, floats that hold an integer
/// (of any size) as that integer, other floats by their shortest round-trip form.
///
/// With `WEAVE_FUZZ_FLOAT_WIDENING=1` every number is compared as the float nearest to it
/// instead: for a tree without the fix of issue 13's item 11, where an integer of more than
/// 15 digits read in one batch with a float loses digits, so that the targets can look for
/// other defects there. Never set it on a tree that has the fix.
fn exact_number(n: &serde_json::Number) -> String {
    static WIDENING: OnceLock<bool> = OnceLock::new();
    if *WIDENING.get_or_init(|| std::env::var_os("WEAVE_FUZZ_FLOAT_WIDENING").is_some_and(|v| v == "1")) {
        return format!("#{:?}", n.as_f64().unwrap_or(f64::NAN));
    }
    if let Some(i) = n.as_i64() {
        return format!("#{i}");
    }
    if let Some(u) = n.as_u64() {
        return format!("#{u}");
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.is_finite() && f.fract() == 0.0 {
        // Every float of this size is an integer, held exactly in 1024 bits; print it
        // in full so that it equals the integer it came from, digit for digit.
        return format!("#{f:.0}");
    }
    format!("#{f:?}")
}

/// Whether a pipeline file names a place outside the scratch folder: an absolute path,
/// `..`, or a home folder (`~`), in any string of the file. Such a file is skipped: its
/// steps would read the machine's files while the pipeline is built (a patterns file, a
/// glob), so the time it takes, or whether it ends (`/dev/zero`), depends on the machine
/// rather than on the parser.
pub fn names_outside(text: &str) -> bool {
    fn any_string(v: &ConfValue, bad: &dyn Fn(&str) -> bool) -> bool {
        match v {
            ConfValue::Str(s) => bad(s),
            ConfValue::Array(items) => items.iter().any(|i| any_string(&i.value, bad)),
            ConfValue::Table(t) => t.entries.iter().any(|(k, _, i)| bad(k) || any_string(&i.value, bad)),
            _ => false,
        }
    }
    let Ok(table) = ConfTable::parse(text) else { return false };
    let bad = |s: &str| s.starts_with(['/', '~']) || s.contains("..");
    table.entries.iter().any(|(k, _, i)| bad(k) || any_string(&i.value, &bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_exact_value() {
        let n = |s: &str| normalise(serde_json::from_str(s).unwrap());
        assert_eq!(n("1"), n("1.0"));
        assert_eq!(n("-3"), n("-3.0"));
        assert_ne!(n("12345678901234567"), n("12345678901234568.0"));
        assert_ne!(n("1"), n("1.5"));
        assert_eq!(n("18446744073709551615"), n("18446744073709551615"));
    }

    #[test]
    fn outside_paths_are_seen_in_any_string() {
        assert!(names_outside("[[step]]\npath = \"/etc/passwd\""));
        assert!(names_outside("[[step]]\nx = { y = [\"../a\"] }"));
        assert!(names_outside("[[step]]\npath = \"\\u002Fdev/zero\""));
        assert!(!names_outside("[[step]]\npath = \"data/*.csv\""));
    }
}
