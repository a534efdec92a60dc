//! What goes into a step's cache key: every key the pipeline file writes for the step,
//! and every pipeline-level setting, but the ones declared output-neutral in
//! [`OUTPUT_NEUTRAL`], each with its reason.
//!
//! The cache must never serve a result the current pipeline would not produce, so
//! inclusion is the default: a key added to a kind, to every step (`STEP_COMMON_KEYS`),
//! to an `[llm.NAME]` provider or to a pipeline-level table is in the cache keys of the
//! steps it bears on until someone declares it neutral here. `crates/weave/tests/keys.rs`
//! changes every key of every kind and every pipeline-level key in turn, and checks that
//! a step's cache key changes exactly when the key is not declared neutral; a key without
//! a sample there fails that test, so the list cannot rot.
//!
//! Keys are taken as written (canonical JSON, keys sorted), so the same pipeline has the
//! same keys wherever it is run from: a path is the text the file holds, relative to the
//! pipeline file's folder when it is relative.

use crate::conf::{ConfTable, ConfValue};
use crate::step::CanonicalConfig;

/// Where a key declared output-neutral is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// A key of a pipeline-level table (`"resources"` for `[resources] max_memory`, or
    /// `"alert"` for the keys of each `[[alert]]`).
    Table(&'static str),
    /// A key of an `[llm.NAME]` provider (in the keys of the steps that call it).
    Provider,
    /// A key every step takes, whatever its kind (one of `STEP_COMMON_KEYS`).
    Step,
    /// A key of the steps of these kinds.
    Kinds(&'static [&'static str]),
}

/// A key left out of cache keys, and why it cannot change what a run writes, nor whether
/// it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeutralKey {
    /// Where it is written.
    pub scope: KeyScope,
    /// The key.
    pub key: &'static str,
    /// Why changing it changes neither a step's output nor the run's outcome.
    pub reason: &'static str,
}

const fn neutral(scope: KeyScope, key: &'static str, reason: &'static str) -> NeutralKey {
    NeutralKey { scope, key, reason }
}

const RETRY_DEFAULTS: &str = "the default of every step's `retry`, which is neutral";
const ALERTS: &str = "alerts watch a run and report on it; they change neither its data nor its exit code";
const GPUS: &str = "whether and how many GPUs there are to share: a step that needs one is refused before the run starts when there is none, and a step's output does not depend on the device it ran on";

/// The keys that are not part of any cache key, each with its reason. Everything else a
/// pipeline file writes is.
///
/// Not here on purpose, because they can change an output or the run's outcome: a step's
/// `id` (the noisers' randomness and the lines of the exclusion and quarantine files
/// derive from it), `on_bad_record` and `exclusions`, a loader's `batch_size` and
/// `batch_bytes` (they draw the batch boundaries, which the stored parts of the steps
/// after it are numbered by, so an interrupted run resumes only on the same boundaries),
/// an export's `max_partitions` (past it, the run fails), `[pipeline] seed`, and an LLM
/// provider's `base_url` and `model`.
pub const OUTPUT_NEUTRAL: &[NeutralKey] = &[
    neutral(
        KeyScope::Step,
        "after",
        "it names the step's inputs, and their ids and cache keys are in the step's key, in order",
    ),
    neutral(
        KeyScope::Step,
        "retry",
        "how often a failed call is tried again: a call that succeeds returns the same output after any number of tries",
    ),
    neutral(
        KeyScope::Step,
        "timeout",
        "how long a call may take before it is abandoned and tried again: it bounds the time, not what a call returns",
    ),
    neutral(
        KeyScope::Step,
        "resources",
        "the memory, threads and GPUs a step is given: its output is put back in input order whatever the parallelism",
    ),
    neutral(KeyScope::Step, "cache", "whether the step's output is kept in the cache, not what it is"),
    neutral(
        KeyScope::Kinds(&["llm_generate", "llm_judge", "augment"]),
        "concurrency",
        "LLM requests in flight at once: answers are put back in input order, and each request's seed comes from the pipeline's seed and the record",
    ),
    neutral(KeyScope::Table("pipeline"), "name", "it names the pipeline in messages and reports; no step reads it"),
    neutral(KeyScope::Table("pipeline"), "description", "a description for people"),
    neutral(
        KeyScope::Table("resources"),
        "max_memory",
        "the budget for batches in flight paces the sources: it changes when batches move, not what they hold",
    ),
    neutral(
        KeyScope::Table("resources"),
        "max_concurrent",
        "worker threads: outputs are put back in input order whatever the thread count",
    ),
    neutral(KeyScope::Table("resources"), "gpu_enabled", GPUS),
    neutral(KeyScope::Table("resources"), "gpus", GPUS),
    neutral(KeyScope::Table("retry"), "max_retries", RETRY_DEFAULTS),
    neutral(KeyScope::Table("retry"), "retry_delay", RETRY_DEFAULTS),
    neutral(KeyScope::Table("retry"), "backoff", RETRY_DEFAULTS),
    neutral(KeyScope::Table("retry"), "max_delay", RETRY_DEFAULTS),
    neutral(KeyScope::Table("retry"), "jitter", RETRY_DEFAULTS),
    neutral(KeyScope::Table("cache"), "dir", "where the cache is, not what it holds"),
    neutral(KeyScope::Table("alert"), "when", ALERTS),
    neutral(KeyScope::Table("alert"), "notify", ALERTS),
    neutral(KeyScope::Table("alert"), "command", ALERTS),
    neutral(KeyScope::Table("alert"), "path", ALERTS),
    neutral(KeyScope::Table("alert"), "timeout", ALERTS),
    neutral(KeyScope::Table("alert"), "step", ALERTS),
    neutral(KeyScope::Table("alert"), "window", ALERTS),
    neutral(
        KeyScope::Provider,
        "api_key_env",
        "the environment variable the API key is read from: whose account pays, not which model answers",
    ),
    neutral(KeyScope::Provider, "requests_per_minute", "the pace of requests, not their answers"),
    neutral(KeyScope::Provider, "tokens_per_minute", "the pace of requests, not their answers"),
    neutral(
        KeyScope::Provider,
        "timeout",
        "how long one request may take before it is tried again: it bounds the time, not the answer",
    ),
    neutral(KeyScope::Provider, "prompt_price_per_million", "a price for the cost figures, never sent"),
    neutral(KeyScope::Provider, "completion_price_per_million", "a price for the cost figures, never sent"),
    neutral(
        KeyScope::Provider,
        "batch",
        "the same requests, sent in a Batch API file rather than one by one: their answers are cached under the same keys",
    ),
    neutral(KeyScope::Provider, "batch_discount", "a price for the cost figures, never sent"),
    neutral(KeyScope::Provider, "batch_poll_interval", "how often a batch is polled, not what it answers"),
];

/// The top-level tables whose keys are not read as pipeline-level settings: each step's
/// table is in that step's key, and an `[llm.NAME]` provider is in the keys of the steps
/// that call it.
const PER_STEP_TABLES: &[&str] = &["step", "llm"];

/// Pipeline-level keys that are in every step's key in another form: `[pipeline] seed` as
/// the resolved number (`Pipeline::seed`), so that no seed and `seed = 0` agree.
const KEYED_APART: &[(&str, &str)] = &[("pipeline", "seed")];

/// Whether `key`, written where `scope` says, is declared output-neutral (for a
/// [`KeyScope::Kinds`] scope: for one of its kinds).
pub fn is_output_neutral(scope: KeyScope, key: &str) -> bool {
    OUTPUT_NEUTRAL.iter().any(|n| {
        n.key == key
            && match (n.scope, scope) {
                (KeyScope::Kinds(declared), KeyScope::Kinds(asked)) => asked.iter().any(|k| declared.contains(k)),
                (a, b) => a == b,
            }
    })
}

/// Whether `key` of a step of kind `kind` is declared output-neutral for its kind.
pub fn is_output_neutral_for_kind(kind: &str, key: &str) -> bool {
    OUTPUT_NEUTRAL.iter().any(|n| n.key == key && matches!(n.scope, KeyScope::Kinds(kinds) if kinds.contains(&kind)))
}

/// The entries of `table` that are not declared neutral in `scope`, as a JSON object.
fn keyed(table: &ConfTable, scope: KeyScope) -> serde_json::Map<String, serde_json::Value> {
    keyed_by(table, |k| is_output_neutral(scope, k))
}

fn keyed_by(table: &ConfTable, neutral: impl Fn(&str) -> bool) -> serde_json::Map<String, serde_json::Value> {
    table.entries.iter().filter(|(k, _, _)| !neutral(k)).map(|(k, _, v)| (k.clone(), v.value.to_json())).collect()
}

/// The canonical bytes of a kind's own keys, written in `table`, for the steps of kind
/// `kind` (`None`: a table read on its own, whose kind is not known).
pub(crate) fn kind_config(table: &ConfTable, kind: Option<&str>) -> CanonicalConfig {
    let map = keyed_by(table, |key| kind.is_some_and(|k| is_output_neutral_for_kind(k, key)));
    CanonicalConfig::from_bytes(serde_json::Value::Object(map).to_string().into_bytes())
}

/// The canonical bytes of an `[llm.NAME]` provider's keys that are in the keys of the
/// steps calling it.
pub(crate) fn provider_config(table: &ConfTable) -> CanonicalConfig {
    CanonicalConfig::from_bytes(serde_json::Value::Object(keyed(table, KeyScope::Provider)).to_string().into_bytes())
}

/// A step's configuration for its cache key: what the step states (`own`: its kind's keys
/// and what it adds, such as its provider's model) together with the keys every step
/// takes (`common`, as written), but the neutral ones. The common keys are merged into
/// `own` when it is a JSON object without them, so that `weave plan --explain` names a
/// changed `on_bad_record` like any other key; otherwise `own` goes under `"config"`.
pub(crate) fn step_config(common: &ConfTable, own: &CanonicalConfig) -> CanonicalConfig {
    let mut map = keyed(common, KeyScope::Step);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(own.as_bytes()).ok();
    match parsed {
        Some(serde_json::Value::Object(o)) if o.keys().all(|k| !map.contains_key(k)) => map.extend(o),
        Some(v) => {
            map.insert("config".to_owned(), v);
        }
        None => {
            map.insert("config".to_owned(), own.to_string().into());
        }
    }
    CanonicalConfig::from_bytes(serde_json::Value::Object(map).to_string().into_bytes())
}

/// The pipeline-level settings in every step's cache key: each top-level table's keys
/// (each element's, for an array of tables such as `[[alert]]`) but the neutral ones and
/// the per-step tables. A table left empty is left out, so that an `[[alert]]` or a
/// `[resources]` table added or removed leaves the keys as they were.
pub(crate) fn pipeline_config(root: &ConfTable) -> CanonicalConfig {
    let mut out = serde_json::Map::new();
    for (name, _, item) in &root.entries {
        if PER_STEP_TABLES.contains(&name.as_str()) {
            continue;
        }
        let scope = KeyScope::Table(crate::spec::TOP_LEVEL_KEYS.iter().find(|k| *k == name).copied().unwrap_or(""));
        let value = match &item.value {
            ConfValue::Table(t) => {
                let mut m = keyed(t, scope);
                m.retain(|k, _| !KEYED_APART.contains(&(name.as_str(), k.as_str())));
                (!m.is_empty()).then_some(serde_json::Value::Object(m))
            }
            ConfValue::Array(items) => {
                let kept: Vec<serde_json::Value> = items
                    .iter()
                    .map(|i| match &i.value {
                        ConfValue::Table(t) => serde_json::Value::Object(keyed(t, scope)),
                        other => other.to_json(),
                    })
                    .filter(|v| !v.as_object().is_some_and(serde_json::Map::is_empty))
                    .collect();
                (!kept.is_empty()).then_some(serde_json::Value::Array(kept))
            }
            other => Some(other.to_json()),
        };
        if let Some(v) = value {
            out.insert(name.clone(), v);
        }
    }
    CanonicalConfig::from_bytes(serde_json::Value::Object(out).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> ConfTable {
        crate::conf::parse(text).unwrap()
    }

    #[test]
    fn every_neutral_key_is_a_key_of_its_scope() {
        use crate::spec::*;
        for n in OUTPUT_NEUTRAL {
            let known: &[&str] = match n.scope {
                KeyScope::Step => STEP_COMMON_KEYS,
                KeyScope::Provider => LLM_KEYS,
                KeyScope::Table("pipeline") => PIPELINE_KEYS,
                KeyScope::Table("resources") => RESOURCES_KEYS,
                KeyScope::Table("retry") => RETRY_KEYS,
                KeyScope::Table("cache") => CACHE_KEYS,
                KeyScope::Table("alert") => ALERT_KEYS,
                // The kinds' keys are checked against the registry in crates/weave/tests/keys.rs.
                KeyScope::Kinds(_) => continue,
                KeyScope::Table(t) => panic!("no pipeline-level table `{t}`"),
            };
            assert!(known.contains(&n.key), "`{}` declared neutral in {:?}, which has no such key", n.key, n.scope);
            assert!(!n.reason.is_empty());
        }
    }

    #[test]
    fn pipeline_settings_keep_what_is_not_neutral() {
        let root = table(
            "[pipeline]\nname = \"a\"\nseed = 3\n[resources]\nmax_memory = \"1GB\"\n[[alert]]\nwhen = \"x > 1\"\n[future]\nmax_bad = 0.1\n[llm.x]\nmodel = \"m\"\n[[step]]\nid = \"s\"\n",
        );
        assert_eq!(pipeline_config(&root).to_string(), r#"{"future":{"max_bad":0.1}}"#);
        assert_eq!(pipeline_config(&table("[pipeline]\nname = \"b\"\n")).to_string(), "{}");
    }

    #[test]
    fn step_config_merges_the_common_keys_but_the_neutral_ones() {
        let common = table(
            "id = \"s\"\nkind = \"clean\"\nafter = \"load\"\nretry = { max_retries = 2 }\non_bad_record = \"skip\"\n",
        );
        let own = CanonicalConfig::from_bytes(br#"{"rules":["trim"]}"#.to_vec());
        assert_eq!(
            step_config(&common, &own).to_string(),
            r#"{"id":"s","kind":"clean","on_bad_record":"skip","rules":["trim"]}"#
        );
        let odd = CanonicalConfig::from_bytes(b"not json".to_vec());
        assert_eq!(
            step_config(&common, &odd).to_string(),
            r#"{"config":"not json","id":"s","kind":"clean","on_bad_record":"skip"}"#
        );
        let clash = CanonicalConfig::from_bytes(br#"{"id":1}"#.to_vec());
        assert_eq!(
            step_config(&common, &clash).to_string(),
            r#"{"config":{"id":1},"id":"s","kind":"clean","on_bad_record":"skip"}"#
        );
    }

    #[test]
    fn kind_scopes_name_their_kinds() {
        assert!(is_output_neutral(KeyScope::Kinds(&["llm_judge"]), "concurrency"));
        assert!(!is_output_neutral(KeyScope::Kinds(&["clean"]), "concurrency"));
        assert!(!is_output_neutral(KeyScope::Step, "on_bad_record"));
        assert!(!is_output_neutral(KeyScope::Step, "id"));
        let t = table("concurrency = 4\nprompt = \"p\"\n");
        assert_eq!(kind_config(&t, Some("llm_generate")).to_string(), r#"{"prompt":"p"}"#);
        assert_eq!(kind_config(&t, None).to_string(), r#"{"concurrency":4,"prompt":"p"}"#);
    }
}
