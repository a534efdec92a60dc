//! What a step's constructor may know of its pipeline besides its own keys.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::spec::LlmProvider;

/// The pipeline around a step being built: the `[llm.NAME]` providers it may name, where
/// the run's cache is, and state that the steps of one pipeline share.
///
/// One context is made per pipeline and handed to every step's [`Params`](crate::Params),
/// so that, for instance, every step calling one LLM provider shares one rate budget
/// (see [`BuildContext::shared`]). Nothing here does I/O: the cache folder is only a path,
/// which steps open when they first need it.
#[derive(Default)]
pub struct BuildContext {
    llm: BTreeMap<String, Arc<LlmProvider>>,
    cache_dir: Option<PathBuf>,
    dry_run: bool,
    shard: Option<crate::Shard>,
    exchange: BTreeMap<String, PathBuf>,
    publish_only: std::collections::BTreeSet<String>,
    shared: Mutex<BTreeMap<String, Arc<dyn Any + Send + Sync>>>,
    storage: crate::StorageSettings,
    /// Each step's inputs (step ids), once the pipeline's DAG is built.
    inputs: OnceLock<BTreeMap<String, Vec<String>>>,
}

impl BuildContext {
    /// A context with these providers and this cache folder (`None`: the run uses no cache,
    /// as with `weave run --no-cache`, so steps neither read nor write caches of their own).
    pub fn new(llm: impl IntoIterator<Item = LlmProvider>, cache_dir: Option<PathBuf>) -> Self {
        BuildContext {
            llm: llm.into_iter().map(|p| (p.name.clone(), Arc::new(p))).collect(),
            cache_dir,
            dry_run: false,
            shard: None,
            exchange: BTreeMap::new(),
            publish_only: std::collections::BTreeSet::new(),
            shared: Mutex::default(),
            storage: crate::StorageSettings::default(),
            inputs: OnceLock::new(),
        }
    }

    /// This context, with the pipeline's `[storage]` settings.
    pub fn with_storage(mut self, storage: crate::StorageSettings) -> Self {
        self.storage = storage;
        self
    }

    /// The pipeline's `[storage]` settings (where its `s3://` URLs are).
    pub fn storage(&self) -> &crate::StorageSettings {
        &self.storage
    }

    /// This context, for a run that is `shard` of a job.
    pub fn with_shard(mut self, shard: Option<crate::Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// This context, with the folders where the shards of a job exchange the keys of
    /// their whole-dataset steps, by step id.
    pub fn with_exchange(mut self, exchange: BTreeMap<String, PathBuf>) -> Self {
        self.exchange = exchange;
        self
    }

    /// This context, with the whole-dataset steps that only publish their input's keys in
    /// this run (see [`BuildOptions::publish_only`](crate::BuildOptions::publish_only)).
    pub fn publishing_only(mut self, steps: std::collections::BTreeSet<String>) -> Self {
        self.publish_only = steps;
        self
    }

    /// Whether step `id` only publishes its input's keys in this run: it waits for no
    /// other shard and passes nothing on (a stage before the one that decides with them).
    pub fn publishes_only(&self, id: &str) -> bool {
        self.publish_only.contains(id)
    }

    /// The folder where the shards of the job exchange step `id`'s keys, if the run is a
    /// shard that has one.
    pub fn exchange(&self, id: &str) -> Option<&Path> {
        self.exchange.get(id).map(PathBuf::as_path)
    }

    /// The shard of a job the run is, if it is one: sources read their share of the
    /// input, outputs are named for it.
    pub fn shard(&self) -> Option<crate::Shard> {
        self.shard
    }

    /// Builder: a dry run ([`BuildOptions::dry_run`](crate::BuildOptions::dry_run)), in
    /// which steps that pay for their work count it instead.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Whether this is a dry run: an LLM step sends nothing, and reports the requests it
    /// would send (see `weave plan --cost`).
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// The provider declared as `[llm.NAME]`.
    pub fn llm(&self, name: &str) -> Option<&Arc<LlmProvider>> {
        self.llm.get(name)
    }

    /// Every provider, by name.
    pub fn llm_providers(&self) -> impl Iterator<Item = &Arc<LlmProvider>> {
        self.llm.values()
    }

    /// The run's cache folder, or `None` when the run uses no cache.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// The value shared under `key` by the steps of this pipeline: made by `make` for the
    /// first step that asks, the same `Arc` for every later one. Keys are the caller's to
    /// choose (`"llm.local"`); a key already holding a value of another type gets a fresh
    /// value of type `T` (the kinds that use a key agree on its type, so this is a bug
    /// made harmless rather than a panic).
    pub fn shared<T: Any + Send + Sync>(&self, key: &str, make: impl FnOnce() -> T) -> Arc<T> {
        // A poisoned lock only means a `make` panicked elsewhere; the map is still whole.
        let mut map = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = map.get(key)
            && let Ok(v) = Arc::clone(v).downcast::<T>()
        {
            return v;
        }
        let v = Arc::new(make());
        map.insert(key.to_owned(), v.clone() as Arc<dyn Any + Send + Sync>);
        v
    }
}

impl BuildContext {
    /// Records the pipeline's edges once its DAG is built: each step's inputs, by id. The
    /// steps are built before the DAG, so a step reads them when it runs, through
    /// [`BuildContext::upstream`].
    pub fn set_inputs(&self, inputs: BTreeMap<String, Vec<String>>) {
        // A pipeline is built once; a second call would describe the same DAG.
        let _ = self.inputs.set(inputs);
    }

    /// Every step whose output reaches step `id`, nearest first (each once); empty before
    /// the DAG is built, and for a step built on its own.
    pub fn upstream(&self, id: &str) -> Vec<String> {
        let Some(inputs) = self.inputs.get() else { return Vec::new() };
        let mut out: Vec<String> = Vec::new();
        let mut at = id.to_owned();
        // Breadth first: the inputs of each step found, in the order found.
        for next in 0.. {
            for i in inputs.get(&at).into_iter().flatten() {
                if i != id && !out.contains(i) {
                    out.push(i.clone());
                }
            }
            let Some(n) = out.get(next) else { break };
            at = n.clone();
        }
        out
    }
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared: Vec<String> = self.shared.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("BuildContext")
            .field("llm", &self.llm.keys().collect::<Vec<_>>())
            .field("cache_dir", &self.cache_dir)
            .field("dry_run", &self.dry_run)
            .field("shard", &self.shard)
            .field("exchange", &self.exchange)
            .field("publish_only", &self.publish_only)
            .field("shared", &shared)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_values_are_made_once_per_key() {
        let ctx = BuildContext::default();
        let a = ctx.shared("llm.local", || std::sync::atomic::AtomicU64::new(1));
        let b = ctx.shared("llm.local", || std::sync::atomic::AtomicU64::new(2));
        assert!(Arc::ptr_eq(&a, &b), "the second step gets the first one's value");
        let c = ctx.shared("llm.other", || std::sync::atomic::AtomicU64::new(3));
        assert_eq!(c.load(std::sync::atomic::Ordering::Relaxed), 3);
        // Another type under a used key: a fresh value, not a panic.
        let s = ctx.shared("llm.local", || String::from("x"));
        assert_eq!(*s, "x");
    }

    #[test]
    fn upstream_lists_every_step_that_reaches_a_step_nearest_first() {
        let ctx = BuildContext::default();
        assert!(ctx.upstream("out").is_empty(), "no DAG yet");
        let edges = [("a", vec![]), ("b", vec![]), ("m", vec!["a", "b"]), ("f", vec!["m"]), ("out", vec!["f", "a"])];
        ctx.set_inputs(edges.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect());
        assert_eq!(ctx.upstream("out"), ["f", "a", "m", "b"]);
        assert_eq!(ctx.upstream("a"), Vec::<String>::new());
    }
}
