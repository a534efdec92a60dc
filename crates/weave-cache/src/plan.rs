//! The cache in runs: each step's key (a Merkle chain through the DAG), what the store
//! holds for it, why it changed since the last run, and the entries the executor reads
//! and writes through [`StepCache`].
//!
//! Layout of a step's output in the [`Store`]: part `n` (the output made from the step's
//! `n`-th input batch, with the sequence numbers it went out with) lives under the step's
//! key with the last 8 bytes replaced by `n`; the manifest, written when the output is
//! complete, under the same prefix with `u64::MAX`. Entries of one step share a 24-byte
//! prefix, which is what a run pins against `weave cache gc`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use weave_core::{Batch, CacheMode, Pipeline, Shape, StepCache};
use weave_fs::Owner;

use crate::codec;
use crate::error::Error;
use crate::files::FileIndex;
use crate::key::{Key, KeyBuilder};
use crate::store::Store;

/// What the cache holds for a step, before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Its whole output is stored under its key (for a sink: its files are as it wrote them).
    Cached,
    /// An interrupted run stored the output of this many input batches, which this run
    /// takes instead of computing them; the rest is computed. Only a stateless step that
    /// sets no record aside resumes so (see [`CachePlan::new`]).
    Partial(u64),
    /// It ran before with another key (the reasons say what changed).
    Stale,
    /// Its key is the one of the last run, but its output is not stored (`cache = "auto"`
    /// keeps only costly steps), so it runs again if a step after it needs it.
    NotStored,
    /// Never run with this cache.
    New,
    /// It is computed again although unchanged: `--refresh` asked for it (or for a step
    /// before it), or a step before it must run again to rewrite a file of its own.
    Refresh,
    /// Its key cannot be computed, so it is never taken from the cache.
    Uncacheable,
    /// `--no-cache`, or `cache = false`.
    Off,
}

impl Status {
    /// The word `weave plan` shows: `cached`, `partial`, `stale` or `compute`.
    pub fn label(&self) -> &'static str {
        match self {
            Status::Cached => "cached",
            Status::Partial(_) => "partial",
            Status::Stale => "stale",
            _ => "compute",
        }
    }
}

/// One step in a [`CachePlan`].
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// The step's id.
    pub id: String,
    /// Its key; `None` when it cannot be computed (then the step is not cached).
    pub key: Option<Key>,
    /// What the cache holds for it.
    pub status: Status,
    /// Why, in words: what changed since the last run, or why it is not cached.
    pub reasons: Vec<String>,
    /// Whether its output is stored in this run.
    pub stores: bool,
    /// Whether its parts are synced to disk as they are written: for costly steps (an
    /// LLM's answers cost money), not for cheap ones, whose torn parts after a power cut
    /// are caught by their checksum and recomputed.
    durable: bool,
    record: Option<KeyRecord>,
    sink_files: Option<Vec<PathBuf>>,
    /// The files it writes besides a sink's: its exclusion file, and those a step of
    /// another shape declares (`StepInfo::files_written`), each with what it is.
    own_files: Vec<(&'static str, PathBuf)>,
    /// Its bad records are set aside into the quarantine file (`on_bad_record = "skip"`).
    sets_aside: bool,
    /// Computed again although unchanged: nothing stored is used, the output is stored anew.
    fresh: bool,
}

/// What went into a step's key, remembered after a run so that the next plan can say what
/// changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct KeyRecord {
    key: Key,
    kind: String,
    version: u32,
    config: String,
    /// The pipeline-level settings in the key.
    #[serde(default)]
    pipeline: String,
    seed: u64,
    inputs: Vec<(String, Key)>,
    /// Input files, by their path relative to the pipeline file's folder, and their hash.
    files: Vec<(String, Key)>,
    /// The files the step wrote besides a sink's (its exclusion file), by their path
    /// relative to the pipeline file's folder, and their hash when the run ended: a step
    /// whose file is no longer so runs again, even when its output is served by the cache.
    #[serde(default)]
    written: Vec<(String, Key)>,
}

/// The options of a run that bear on the cache.
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// `--no-cache`: nothing is read from or written to the cache.
    pub disabled: bool,
    /// `--refresh STEP`: these steps, and every step after them, are computed again.
    pub refresh: Vec<String>,
}

/// Every step's key and cache status for one pipeline, and the entries a run uses.
#[derive(Debug)]
pub struct CachePlan {
    store: Store,
    files: Arc<FileIndex>,
    pipeline: String,
    /// The folder that paths in keys and manifests are relative to.
    base: PathBuf,
    steps: Vec<StepPlan>,
}

/// A step's stored manifest: written last, so its presence means the output is whole.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    parts: u64,
    /// For a sink: the files it wrote (by their path relative to the pipeline file's
    /// folder) and their content hashes.
    files: Vec<(String, Key)>,
}

/// Why an unchanged step whose output is not stored runs when a step after it needs it.
const NOT_KEPT: &str = "unchanged, but its output is not kept (cache = \"auto\" keeps costly steps only)";

/// How keys, manifests and a run's lineage name `path` (a file a step resolved against
/// the pipeline file's folder `base`): relative to `base` when it is under it, as it is
/// otherwise (an absolute path elsewhere, or one that climbs out with `..`), so that a
/// pipeline names its files alike from whatever folder it is run.
///
/// An absolute path is compared with the folder by the real paths of both (links
/// followed), since `base` is spelt as the pipeline file was given: relative to the
/// working directory, or through a link.
pub fn pipeline_relative(base: &Path, path: &Path) -> String {
    let real;
    let rel = if path.is_absolute() {
        real = (real_path(base), real_path(path));
        path.strip_prefix(base).or_else(|_| real.1.strip_prefix(&real.0)).unwrap_or(path)
    } else {
        path.strip_prefix(base).unwrap_or(path)
    };
    // `./in.csv` and `in.csv` are one file, however the pipeline file was named.
    let plain: PathBuf = rel.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
    plain.display().to_string()
}

/// `path` with links followed: itself when it exists, its folder's and its name when only
/// the folder does (an output not yet written), or as it is.
fn real_path(path: &Path) -> PathBuf {
    let folder = || {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(std::fs::canonicalize(dir).ok()?.join(path.file_name()?))
    };
    std::fs::canonicalize(path).ok().or_else(folder).unwrap_or_else(|| path.to_path_buf())
}

/// Why stored parts of a step's output cannot stand in for computing it, if they cannot:
/// only a stateless step resumes from them (each part is the output of one input batch,
/// whatever came before it), and only when nothing it sets aside would be lost with the
/// computing it skips.
fn cannot_resume(shape: Shape, p: &weave_core::PipelineStep) -> Option<&'static str> {
    match shape {
        Shape::Source => Some("a source cannot start reading part-way"),
        Shape::StatefulTransform | Shape::Merge => Some("its state is not stored with them"),
        Shape::Sink => Some("a sink stores no parts"),
        Shape::Transform if p.exclusions.is_some() => {
            Some("the records it dropped in them are not stored for its exclusion file")
        }
        Shape::Transform if p.on_bad_record != weave_core::BadRecordPolicy::Fail => {
            Some("the bad records it set aside in them are not stored for the quarantine file")
        }
        Shape::Transform => None,
    }
}

fn prefixed(key: &Key, n: u64) -> Key {
    let mut b = *key.as_bytes();
    b[24..].copy_from_slice(&n.to_be_bytes());
    Key::from_bytes(b)
}

/// The largest quarantine file whose records are kept in the cache for the steps that
/// set them aside.
pub const MAX_SET_ASIDE_BYTES: u64 = 256 << 20;

/// Where the records a step set aside under `key` are kept: the lines it wrote to the
/// quarantine file.
fn set_aside_key(key: &Key) -> Key {
    KeyBuilder::new("set-aside").key("step-output", key).finish()
}

fn manifest_key(key: &Key) -> Key {
    prefixed(key, u64::MAX)
}

impl CachePlan {
    /// Computes every step's key and status. Input files are hashed through `files`
    /// (trusted by their stamp when unchanged). Never fails: a key part that cannot be
    /// computed makes that step (and the steps after it) uncacheable, with the reason.
    ///
    /// A step's key covers its kind, version, configuration (every key written for it but
    /// the output-neutral ones: `weave_core::OUTPUT_NEUTRAL`), the pipeline-level settings,
    /// the seed, its inputs' keys, and the content of the files it reads, named relative
    /// to the pipeline file's folder. A step whose exclusion file is not as its last run
    /// left it runs again, and so do the steps after it, down to the sinks that make it
    /// run. Stored parts of an interrupted run are claimed (`Partial`) only for steps that
    /// resume from them.
    pub fn new(pipeline: &Pipeline, store: Store, files: Arc<FileIndex>, options: &CacheOptions) -> CachePlan {
        let dag = pipeline.dag();
        let base = pipeline.base_dir.clone();
        let records = read_records(&store, &pipeline.name);
        let mut steps: Vec<Option<StepPlan>> = (0..dag.len()).map(|_| None).collect();
        // Why a step is computed again although unchanged (`--refresh`, or a step before it
        // that must rewrite its exclusion file), inherited by the steps after it.
        let mut again: Vec<Option<String>> = vec![None; dag.len()];
        for &i in dag.topological_order() {
            let node = dag.node(i);
            let p = &node.payload;
            let info = p.step.info();
            let mut reasons = Vec::new();
            // The key, or why there is none.
            let mut inputs = Vec::new();
            for &j in &node.inputs {
                let up = steps[j].as_ref();
                match up.and_then(|u| u.key) {
                    Some(k) => inputs.push((dag.node(j).id.clone(), k)),
                    None => reasons.push(format!("step \"{}\" before it is not cacheable", dag.node(j).id)),
                }
            }
            let mut file_keys = Vec::new();
            for f in info.files_read() {
                match files.hash(&f) {
                    Ok(k) => file_keys.push((pipeline_relative(&base, &f), k)),
                    Err(e) => reasons.push(format!("cannot hash its input: {e}")),
                }
            }
            if !info.cacheable() {
                reasons.push("the step says its output depends on more than its key covers".to_owned());
            }
            let record = reasons.is_empty().then(|| {
                let mut b = KeyBuilder::new("step-output")
                    .part("kind", p.kind.as_bytes())
                    .number("version", u64::from(p.version))
                    .part("config", p.config.as_bytes())
                    .part("pipeline", pipeline.key_config.as_bytes())
                    .number("seed", pipeline.seed);
                // A shard's steps see its share of the data, not the whole.
                if let Some(s) = pipeline.shard {
                    b = b.part("shard", s.to_string().as_bytes());
                }
                for (id, k) in &inputs {
                    b = b.part("input", id.as_bytes()).key("input-key", k);
                }
                for (path, k) in &file_keys {
                    b = b.part("file", path.as_bytes()).key("file-key", k);
                }
                KeyRecord {
                    key: b.finish(),
                    kind: p.kind.clone(),
                    version: p.version,
                    config: p.config.to_string(),
                    pipeline: pipeline.key_config.to_string(),
                    seed: pipeline.seed,
                    inputs,
                    files: file_keys,
                    written: Vec::new(),
                }
            });
            let previous = records.get(&node.id);
            again[i] = if options.refresh.contains(&node.id) {
                Some("--refresh".to_owned())
            } else {
                node.inputs.iter().find_map(|&j| again[j].as_ref().map(|why| (j, why))).map(|(j, why)| {
                    // `--refresh` reads as itself down the DAG; a step that must rewrite its
                    // exclusion file is named by the steps after it.
                    if why == "--refresh" || why.starts_with("step \"") {
                        why.clone()
                    } else {
                        format!("step \"{}\" before it runs again ({why})", dag.node(j).id)
                    }
                })
            };
            // Its own files (its exclusion file): a run that takes the step's output from the
            // cache, or does not need it, does not write them, so they must be as the last
            // run left them, or the step runs again (and with it the steps after it, down to
            // the sinks that make it run).
            let own_files: Vec<(&'static str, PathBuf)> = p
                .exclusions
                .iter()
                .map(|f| ("exclusion file", f.clone()))
                .chain(
                    (node.shape != Shape::Sink)
                        .then(|| info.files_written())
                        .into_iter()
                        .flatten()
                        .map(|f| ("output file", f)),
                )
                .collect();
            let own_changed = match &record {
                Some(now) if !options.disabled => {
                    own_files_state(&files, &base, &own_files, previous.filter(|prev| prev.key == now.key))
                }
                _ => None,
            };
            // The same for the records it sets aside: this run's quarantine file gets them
            // from the cache when the step does not run, so they must be there.
            let sets_aside = p.on_bad_record != weave_core::BadRecordPolicy::Fail;
            let set_aside_lost = match &record {
                Some(now) if sets_aside && !options.disabled && !store.contains(&set_aside_key(&now.key)) => {
                    Some("the records it set aside are not in the cache".to_owned())
                }
                _ => None,
            };
            let own_changed = own_changed.or(set_aside_lost);
            let stores = !options.disabled && record.is_some() && p.cache.stores(node.shape, node.cost);
            let mut status = match &record {
                _ if options.disabled => {
                    reasons.push("--no-cache".to_owned());
                    Status::Off
                }
                None => Status::Uncacheable,
                Some(_) if p.cache == CacheMode::Off => {
                    reasons.push("cache = false".to_owned());
                    Status::Off
                }
                Some(r) => {
                    let changed = previous.map(|prev| explain(prev, r));
                    match &changed {
                        Some(why) if !why.is_empty() => reasons.extend(why.iter().cloned()),
                        Some(_) => {}
                        None => reasons.push("never run with this cache".to_owned()),
                    }
                    if let Some(why) = &again[i] {
                        // A step that runs anyway (never run, or changed) needs no other reason.
                        if why == "--refresh" || changed.as_ref().is_some_and(Vec::is_empty) {
                            reasons.push(why.clone());
                        }
                        Status::Refresh
                    } else if stores {
                        match stored_state(&store, &files, &base, &r.key, node.shape == Shape::Sink) {
                            Stored::Complete => Status::Cached,
                            Stored::Parts(n) if n > 0 => match cannot_resume(node.shape, p) {
                                None => Status::Partial(n),
                                Some(why) => {
                                    reasons.push(format!(
                                        "an interrupted run stored {n} batches of its output, which it does not resume from: {why}"
                                    ));
                                    if changed.as_ref().is_some_and(|c| !c.is_empty()) {
                                        Status::Stale
                                    } else {
                                        Status::New
                                    }
                                }
                            },
                            Stored::OutputChanged(why) => {
                                reasons.push(why);
                                Status::Stale
                            }
                            Stored::Parts(_) => match changed {
                                Some(why) if !why.is_empty() => Status::Stale,
                                Some(_) => {
                                    reasons.push("its output is no longer in the cache".to_owned());
                                    Status::New
                                }
                                None => Status::New,
                            },
                        }
                    } else {
                        match changed {
                            Some(why) if !why.is_empty() => Status::Stale,
                            Some(_) => {
                                reasons.push(NOT_KEPT.to_owned());
                                Status::NotStored
                            }
                            None => Status::New,
                        }
                    }
                }
            };
            if let Some(why) = own_changed {
                // A step that was never run writes its exclusion file anyway: only a step
                // that would otherwise be taken from the cache (or skipped) is told why.
                if previous.is_some() {
                    reasons.push(why.clone());
                }
                if matches!(status, Status::Cached | Status::NotStored | Status::Partial(_)) {
                    reasons.retain(|r| r != NOT_KEPT);
                    status = Status::Stale;
                }
                again[i].get_or_insert(why);
            }
            let sink_files = (node.shape == Shape::Sink).then(|| info.files_written());
            steps[i] = Some(StepPlan {
                id: node.id.clone(),
                key: record.as_ref().map(|r| r.key),
                status,
                reasons,
                stores,
                durable: node.cost >= CacheMode::AUTO_MIN_COST,
                record,
                sink_files,
                own_files,
                sets_aside,
                fresh: again[i].is_some(),
            });
        }
        let steps = steps.into_iter().flatten().collect();
        CachePlan { store, files, pipeline: pipeline.name.clone(), base, steps }
    }

    /// Opens (creating it if needed) the cache in `dir` and plans `pipeline` against it.
    pub fn open(pipeline: &Pipeline, dir: &Path, options: &CacheOptions) -> Result<CachePlan, Error> {
        let store = Store::open(dir)?;
        let files = Arc::new(FileIndex::load(dir));
        Ok(CachePlan::new(pipeline, store, files, options))
    }

    /// The index of input files' content hashes the plan used (saved by
    /// [`CachePlan::remember`]).
    pub fn files(&self) -> &Arc<FileIndex> {
        &self.files
    }

    /// The steps, in the pipeline's declaration order.
    pub fn steps(&self) -> &[StepPlan] {
        &self.steps
    }

    /// The plan of step `id`.
    pub fn step(&self, id: &str) -> Option<&StepPlan> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The entries the executor uses, by step id: one per step whose output is stored.
    pub fn entries(&self) -> std::collections::HashMap<String, Arc<dyn StepCache>> {
        let mut out = std::collections::HashMap::new();
        for s in &self.steps {
            let (true, Some(key)) = (s.stores, s.key) else { continue };
            let entry = StepEntry {
                store: self.store.clone(),
                files: Arc::clone(&self.files),
                key,
                fresh: s.fresh,
                base: self.base.clone(),
                durable: s.durable,
                sink_files: s.sink_files.clone(),
                complete: OnceLock::new(),
                parts: OnceLock::new(),
            };
            out.insert(s.id.clone(), Arc::new(entry) as Arc<dyn StepCache>);
        }
        out
    }

    /// Remembers every step's key parts, after a run that succeeded, so that the next plan
    /// can say what changed, with the hash of each exclusion file as the run leaves it;
    /// and saves the file index.
    pub fn remember(&self) -> Result<(), Error> {
        let dir = records_dir(&self.store, &self.pipeline);
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let records: BTreeMap<&str, KeyRecord> = self
            .steps
            .iter()
            .filter_map(|s| {
                let mut r = s.record.clone()?;
                for (_, path) in &s.own_files {
                    if let Ok(k) = self.files.hash(path) {
                        r.written.push((pipeline_relative(&self.base, path), k));
                    }
                }
                Some((s.id.as_str(), r))
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&records).map_err(|e| Error::Encode(e.to_string()))?;
        let path = dir.join("keys.json");
        weave_fs::write_atomically(&path, &bytes).map_err(Error::io(&path))?;
        self.files.save()
    }

    /// The 24-byte prefixes of every entry this plan's steps use, for a [`Pin`].
    pub fn prefixes(&self) -> Vec<[u8; 24]> {
        let set_aside = self.steps.iter().filter(|s| s.sets_aside).filter_map(|s| s.key).map(|k| set_aside_key(&k));
        self.steps.iter().filter_map(|s| s.key).chain(set_aside).map(|k| prefix_of(&k)).collect()
    }

    /// Keeps the quarantine file of a run that succeeded as `weave run --no-cache` would
    /// have written it, and returns how many records it added: a step that sets bad records
    /// aside but did not run (`ran` is false: its output was taken from the cache, or no
    /// step needed it) gets the lines it wrote when it last ran appended to `quarantine`;
    /// a step that ran has the lines it wrote kept in the cache under its key, for the next
    /// run that does not run it.
    ///
    /// A quarantine file larger than [`MAX_SET_ASIDE_BYTES`] is not kept (it would be held
    /// in memory): its steps then run again next time, to set their records aside anew.
    pub fn settle_set_aside(&self, quarantine: &Path, ran: &dyn Fn(&str) -> bool) -> Result<u64, Error> {
        let size = std::fs::metadata(quarantine).map_or(0, |m| m.len());
        let read = if size > MAX_SET_ASIDE_BYTES { None } else { Some(std::fs::read_to_string(quarantine)) };
        let text = match read {
            None => {
                log::info!(
                    "the quarantine file {} is too large to keep in the cache; the steps that set records aside run again next time",
                    quarantine.display()
                );
                None
            }
            Some(Ok(t)) => Some(t),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Some(String::new()),
            Some(Err(e)) => return Err(Error::Io { path: quarantine.to_path_buf(), source: e }),
        };
        let step_of = |line: &str| -> Option<String> {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(v.get("step")?.as_str()?.to_owned())
        };
        let mut restored: Vec<String> = Vec::new();
        for s in self.steps.iter().filter(|s| s.sets_aside) {
            let Some(key) = s.key else { continue };
            let k = set_aside_key(&key);
            if ran(&s.id) {
                let Some(text) = &text else {
                    // What an earlier run kept may not be what this one set aside.
                    self.store.remove(&k)?;
                    continue;
                };
                let lines: Vec<&str> = text.lines().filter(|l| step_of(l).as_deref() == Some(s.id.as_str())).collect();
                let bytes = codec::encode(&lines)?;
                self.store.put(&k, codec::BINCODE2, &bytes)?;
            } else {
                match self.store.get_decoded::<Vec<String>>(&k)? {
                    Some(lines) => restored.extend(lines),
                    None => log::warn!(
                        "step \"{}\": the records it set aside when it last ran are no longer in the cache, so the quarantine file {} lacks them; `--refresh {}` sets them aside again",
                        s.id,
                        quarantine.display(),
                        s.id
                    ),
                }
            }
        }
        if !restored.is_empty() {
            if let Some(dir) = quarantine.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(quarantine)
                .map_err(Error::io(quarantine))?;
            let mut buf = restored.join("\n");
            buf.push('\n');
            std::io::Write::write_all(&mut f, buf.as_bytes()).map_err(Error::io(quarantine))?;
        }
        Ok(restored.len() as u64)
    }
}

fn prefix_of(k: &Key) -> [u8; 24] {
    let mut p = [0u8; 24];
    p.copy_from_slice(&k.as_bytes()[..24]);
    p
}

/// Says what differs between the last run's key parts and this one's.
fn explain(prev: &KeyRecord, now: &KeyRecord) -> Vec<String> {
    let mut why = Vec::new();
    if prev.key == now.key {
        return why;
    }
    if prev.kind != now.kind {
        why.push(format!("kind changed: {} → {}", prev.kind, now.kind));
    }
    if prev.version != now.version {
        why.push(format!("step version changed: {} → {}", prev.version, now.version));
    }
    diff_settings(&prev.config, &now.config, "config", "configuration changed", &mut why);
    diff_settings(&prev.pipeline, &now.pipeline, "pipeline setting", "pipeline settings changed", &mut why);
    if prev.seed != now.seed {
        why.push(format!("seed changed: {} → {}", prev.seed, now.seed));
    }
    for (path, k) in &now.files {
        match prev.files.iter().find(|(p, _)| p == path) {
            Some((_, old)) if old != k => why.push(format!("input file {path} changed")),
            Some(_) => {}
            None => why.push(format!("reads a new input file {path}")),
        }
    }
    for (path, _) in &prev.files {
        if !now.files.iter().any(|(p, _)| p == path) {
            why.push(format!("no longer reads {path}"));
        }
    }
    for (id, k) in &now.inputs {
        match prev.inputs.iter().find(|(p, _)| p == id) {
            Some((_, old)) if old != k => why.push(format!("upstream step \"{id}\" changed")),
            Some(_) => {}
            None => why.push(format!("now follows step \"{id}\"")),
        }
    }
    for (id, _) in &prev.inputs {
        if !now.inputs.iter().any(|(p, _)| p == id) {
            why.push(format!("no longer follows step \"{id}\""));
        }
    }
    if why.is_empty() {
        why.push("its key changed".to_owned());
    }
    why
}

/// Says which fields differ between two settings in canonical JSON, each as `what` and
/// its JSON path, or `whole` when they differ in a way no field shows.
fn diff_settings(prev: &str, now: &str, what: &str, whole: &str, why: &mut Vec<String>) {
    if prev == now {
        return;
    }
    let a: serde_json::Value = serde_json::from_str(prev).unwrap_or(serde_json::Value::Null);
    let b: serde_json::Value = serde_json::from_str(now).unwrap_or(serde_json::Value::Null);
    let mut fields = Vec::new();
    diff_json("", &a, &b, &mut fields);
    if fields.is_empty() {
        why.push(whole.to_owned());
    }
    why.extend(fields.into_iter().map(|f| format!("{what} {f}")));
}

/// Lists the fields that differ between two JSON values, as `` `a.b[2]`: x → y ``.
fn diff_json(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value as J;
    let name = |p: &str| if p.is_empty() { "(whole)".to_owned() } else { p.to_owned() };
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff_json(&p, u, v, out),
                    (Some(u), None) => out.push(format!("`{p}` removed (was {u})")),
                    (None, Some(v)) => out.push(format!("`{p}` added: {v}")),
                    (None, None) => {}
                }
            }
        }
        (J::Array(x), J::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                diff_json(&format!("{path}[{i}]"), u, v, out);
            }
        }
        _ if a != b => out.push(format!("`{}` changed: {a} → {b}", name(path))),
        _ => {}
    }
}

fn records_dir(store: &Store, pipeline: &str) -> PathBuf {
    let mut safe: String =
        pipeline.chars().map(|c| if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    // A name of dots only (`.`, `..`) or none would name `keys/` itself or the folder
    // above it: the records of a pipeline named `..` were written into the cache's root.
    if safe.bytes().all(|b| b == b'.') {
        safe.insert(0, '_');
    }
    store.root().join("keys").join(safe)
}

fn read_records(store: &Store, pipeline: &str) -> BTreeMap<String, KeyRecord> {
    let path = records_dir(store, pipeline).join("keys.json");
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

enum Stored {
    Complete,
    /// No manifest; this many consecutive parts from 0 are there.
    Parts(u64),
    /// A sink's manifest is there but its files are not as it wrote them.
    OutputChanged(String),
}

/// Why one of a step's own files (`what`, at a path) is not as the last run with the same
/// key left it (`previous`), if one is not: missing, or changed since.
fn own_files_state(
    files: &FileIndex,
    base: &Path,
    own: &[(&'static str, PathBuf)],
    previous: Option<&KeyRecord>,
) -> Option<String> {
    own.iter().find_map(|(what, path)| {
        let name = pipeline_relative(base, path);
        let Ok(now) = files.hash(path) else { return Some(format!("its {what} {name} is missing")) };
        match previous.and_then(|r| r.written.iter().find(|(n, _)| *n == name)) {
            Some((_, was)) if *was != now => Some(format!("its {what} {name} was changed since it was written")),
            _ => None,
        }
    })
}

/// What the store holds for `key`, from file presence only (nothing is read but a sink's
/// manifest): the plan must stay fast.
fn stored_state(store: &Store, files: &FileIndex, base: &Path, key: &Key, sink: bool) -> Stored {
    if store.contains(&manifest_key(key)) {
        if !sink {
            return Stored::Complete;
        }
        return match read_manifest(store, key) {
            Some(m) => match files_changed(&m, files, base) {
                Some(why) => Stored::OutputChanged(why),
                None => Stored::Complete,
            },
            None => Stored::Parts(0),
        };
    }
    let mut n = 0;
    while store.contains(&prefixed(key, n)) {
        n += 1;
    }
    Stored::Parts(n)
}

fn read_manifest(store: &Store, key: &Key) -> Option<Manifest> {
    store.get_decoded(&manifest_key(key)).ok()?
}

/// Why a sink's files are not as its manifest records them, if they are not. The manifest
/// names them relative to `base`, the pipeline file's folder.
fn files_changed(m: &Manifest, files: &FileIndex, base: &Path) -> Option<String> {
    for (path, k) in &m.files {
        match files.hash(&base.join(path)) {
            Ok(now) if now == *k => {}
            Ok(_) => return Some(format!("output file {path} was changed since it was written")),
            Err(_) => return Some(format!("output file {path} is missing")),
        }
    }
    None
}

/// A step's entry, as the executor sees it.
struct StepEntry {
    store: Store,
    files: Arc<FileIndex>,
    key: Key,
    /// `--refresh`: nothing stored is used, the output is stored anew.
    fresh: bool,
    /// Parts are synced before their rename.
    durable: bool,
    sink_files: Option<Vec<PathBuf>>,
    /// The folder the manifest's file names are relative to.
    base: PathBuf,
    complete: OnceLock<bool>,
    parts: OnceLock<u64>,
}

impl StepEntry {
    fn manifest(&self) -> Option<Manifest> {
        read_manifest(&self.store, &self.key)
    }

    fn read_part(&self, part: u64) -> Result<Vec<(u64, Batch)>, String> {
        self.store
            .get_decoded(&prefixed(&self.key, part))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("part {part} is missing or damaged"))
    }
}

impl StepCache for StepEntry {
    fn complete(&self) -> bool {
        *self.complete.get_or_init(|| {
            if self.fresh {
                return false;
            }
            let Some(m) = self.manifest() else { return false };
            if self.sink_files.is_some() {
                return files_changed(&m, &self.files, &self.base).is_none();
            }
            // Every part is read and checked now, so that a damaged one means computing the
            // step, never a failure half-way through a replay.
            for part in 0..m.parts {
                if self.read_part(part).is_err() {
                    let _ = self.store.remove(&manifest_key(&self.key));
                    return false;
                }
            }
            let _ = self.parts.set(m.parts);
            true
        })
    }

    fn replay(&self, f: &mut dyn FnMut(u64, Batch) -> bool) -> Result<(), String> {
        let parts = match self.parts.get() {
            Some(p) => *p,
            None => self.manifest().ok_or("its manifest is gone")?.parts,
        };
        for part in 0..parts {
            for (seq, batch) in self.read_part(part)? {
                if !f(seq, batch) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn load(&self, part: u64) -> Option<Vec<(u64, Batch)>> {
        if self.fresh {
            return None;
        }
        self.read_part(part).ok()
    }

    fn store(&self, part: u64, out: &[(u64, Batch)]) -> Result<(), String> {
        let bytes = codec::encode(out).map_err(|e| e.to_string())?;
        self.store
            .put_with(&prefixed(&self.key, part), codec::BINCODE2, &bytes, self.durable)
            .map_err(|e| e.to_string())
    }

    fn finish(&self, parts: u64) -> Result<(), String> {
        let mut files = Vec::new();
        for f in self.sink_files.iter().flatten() {
            let k = self.files.hash(f).map_err(|e| e.to_string())?;
            files.push((pipeline_relative(&self.base, f), k));
        }
        let bytes = codec::encode(&Manifest { parts, files }).map_err(|e| e.to_string())?;
        self.store.put(&manifest_key(&self.key), codec::BINCODE2, &bytes).map_err(|e| e.to_string())
    }
}

/// A running run's claim on its entries: `weave cache gc` never removes an entry whose
/// prefix a live run has pinned. Its lease (the pin file's modification time) is renewed
/// while it lives, for runs on other machines that share the cache. Removed when dropped.
#[derive(Debug)]
pub struct Pin {
    path: PathBuf,
    _lease: weave_fs::LeaseGuard,
}

/// A pin on disk, `pins/<pid>-<nanos>.json`: its owner (`pid`, `process_start` and
/// `pid_space` where known: a pin without them is judged by its process id alone, on this
/// machine), the host it runs on (for people: the pid space is what is checked) and the
/// prefixes.
#[derive(Serialize, Deserialize)]
struct PinFile {
    #[serde(flatten)]
    owner: Owner,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    prefixes: Vec<String>,
}

impl Pin {
    /// Pins the entries of `plan` for this process, after removing the pins of runs that
    /// are gone (a killed run cannot remove its own).
    pub fn new(plan: &CachePlan) -> Result<Pin, Error> {
        let dir = plan.store.root().join("pins");
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        live_pins(&dir);
        let owner = Owner::current();
        let file =
            PinFile { owner, host: weave_fs::host_name(), prefixes: plan.prefixes().iter().map(hex24).collect() };
        let bytes = serde_json::to_vec(&file).map_err(|e| Error::Encode(e.to_string()))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("{}-{nanos}.json", owner.pid()));
        weave_fs::write_atomically(&path, &bytes).map_err(Error::io(&path))?;
        let lease = weave_fs::hold_lease(&path);
        Ok(Pin { path, _lease: lease })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn hex24(p: &[u8; 24]) -> String {
    p.iter().map(|b| format!("{b:02x}")).collect()
}

/// Evicts least recently used entries until the store holds at most `max_bytes`, never
/// one pinned by a run that may be alive (pins whose owner is certainly gone are
/// removed: `weave_fs::holder_is_gone`, which a reused process id does not fool, and
/// which judges a run on another machine by its pin's lease).
/// Returns what was removed.
pub fn gc(store: &Store, max_bytes: u64) -> Result<crate::store::Stats, Error> {
    let pinned = live_pins(&store.root().join("pins"));
    store.gc(max_bytes, &|k| pinned.contains(&hex24(&prefix_of(k))))
}

/// The prefixes that the pins in `dir` hold for runs that may be alive; the pins of runs
/// that are certainly gone are removed.
fn live_pins(dir: &Path) -> std::collections::HashSet<String> {
    let mut pinned = std::collections::HashSet::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return pinned };
    for e in rd.flatten() {
        // Pins only: not the temporary file of a pin being written.
        if !e.file_name().to_string_lossy().ends_with(".json") {
            continue;
        }
        let Some(pin) = std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice::<PinFile>(&b).ok()) else {
            continue;
        };
        if weave_fs::holder_is_gone(&pin.owner, &e.path()) {
            let _ = std::fs::remove_file(e.path());
        } else {
            pinned.extend(pin.prefixes);
        }
    }
    pinned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_changes_are_named_by_their_json_path() {
        let a = serde_json::json!({"rules": ["trim", {"min_chars": 20}], "fields": ["text"], "gone": 1});
        let b = serde_json::json!({"rules": ["trim", {"min_chars": 25}], "fields": ["text", "title"], "new": true});
        let mut out = Vec::new();
        diff_json("", &a, &b, &mut out);
        assert_eq!(
            out,
            [
                "`fields` changed: [\"text\"] → [\"text\",\"title\"]",
                "`gone` removed (was 1)",
                "`new` added: true",
                "`rules[1].min_chars` changed: 20 → 25",
            ]
        );
    }

    // regression (issue 13, item 2): keys named files by their path from the working
    // directory; and an absolute path into the folder by itself when the pipeline file was
    // given relative to the working directory, by its name in the folder otherwise.
    #[test]
    fn files_are_named_relative_to_the_pipeline_files_folder_however_it_is_spelt() {
        // (the pipeline file's folder, a file as the steps resolve it)
        let cases = [
            ("", "in.csv"),
            ("", "./in.csv"),
            (".", "./in.csv"),
            (".", "././in.csv"),
            ("proj", "proj/in.csv"),
            ("proj", "proj/./in.csv"),
            ("./proj", "./proj/in.csv"),
            ("/abs/proj", "/abs/proj/in.csv"),
        ];
        for (base, path) in cases {
            assert_eq!(pipeline_relative(Path::new(base), Path::new(path)), "in.csv", "{base} + {path}");
        }
        assert_eq!(pipeline_relative(Path::new("proj"), Path::new("proj/../data/in.csv")), "../data/in.csv");
        assert_eq!(pipeline_relative(Path::new("proj"), Path::new("/data/in.csv")), "/data/in.csv");
        assert_eq!(pipeline_relative(Path::new("proj"), Path::new("proj/sub/in.csv")), "sub/in.csv");
        // An absolute path in the folder, with the pipeline file given relative to the
        // working directory or through a link.
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(real.join("proj/out")).unwrap();
        std::fs::write(real.join("proj/in.csv"), "a\n").unwrap();
        std::os::unix::fs::symlink(real.join("proj"), real.join("link")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(&real.join("proj"), &cwd);
        for (base, path) in [
            (relative.clone(), real.join("proj/in.csv")),
            (real.join("link"), real.join("proj/in.csv")),
            (relative, real.join("link/in.csv")),
            (real.join("proj"), real.join("link/out/new.csv")),
        ] {
            let want = if path.ends_with("new.csv") { "out/new.csv" } else { "in.csv" };
            assert_eq!(pipeline_relative(&base, &path), want, "{} + {}", base.display(), path.display());
        }
    }

    /// `to` spelt relative to `from` (both absolute), with `..` where it climbs.
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let (to, from): (Vec<_>, Vec<_>) = (to.components().collect(), from.components().collect());
        let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
        let mut out: PathBuf = from[common..].iter().map(|_| "..").collect();
        out.extend(&to[common..]);
        out
    }

    #[test]
    fn gc_spares_entries_pinned_by_a_live_process_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let step = KeyBuilder::new("t").part("a", b"1").finish();
        let other = KeyBuilder::new("t").part("a", b"2").finish();
        for k in [prefixed(&step, 0), prefixed(&step, 1), manifest_key(&step), prefixed(&other, 0)] {
            store.put(&k, codec::BINCODE2, b"payload").unwrap();
        }
        let pins = dir.path().join("pins");
        std::fs::create_dir_all(&pins).unwrap();
        let live = PinFile { owner: Owner::current(), host: None, prefixes: vec![hex24(&prefix_of(&step))] };
        std::fs::write(pins.join("live.json"), serde_json::to_vec(&live).unwrap()).unwrap();
        // A pid that cannot be alive (above the kernel's maximum): its pin is stale.
        let dead =
            PinFile { owner: Owner::new(u32::MAX - 1, None), host: None, prefixes: vec![hex24(&prefix_of(&other))] };
        std::fs::write(pins.join("dead.json"), serde_json::to_vec(&dead).unwrap()).unwrap();

        let removed = gc(&store, 0).unwrap();
        assert_eq!(removed.entries, 1, "only the entry of the dead run's step");
        assert!(store.contains(&manifest_key(&step)) && store.contains(&prefixed(&step, 1)));
        assert!(!store.contains(&prefixed(&other, 0)));
        assert!(!pins.join("dead.json").exists(), "a dead run's pin is cleaned up");
        assert!(pins.join("live.json").exists());
    }

    // Issue 17, item 1: on a cache shared by the nodes of a cluster, a pin's process id
    // means nothing to another node; its lease does.
    #[test]
    fn a_pin_of_another_machine_holds_while_its_lease_is_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let step = KeyBuilder::new("t").part("a", b"1").finish();
        store.put(&prefixed(&step, 0), codec::BINCODE2, b"payload").unwrap();
        let pins = dir.path().join("pins");
        std::fs::create_dir_all(&pins).unwrap();
        // A run on a node with a pid that does not exist here (and would be gone if it
        // were judged as this machine's).
        let space = weave_fs::pid_space().map(|s| !s);
        let remote = PinFile {
            owner: Owner::in_space(u32::MAX - 1, Some(1), space),
            host: Some("node7".into()),
            prefixes: vec![hex24(&prefix_of(&step))],
        };
        let path = pins.join("remote.json");
        std::fs::write(&path, serde_json::to_vec(&remote).unwrap()).unwrap();
        assert_eq!(gc(&store, 0).unwrap().entries, 0, "its lease is fresh");
        assert!(path.exists() && store.contains(&prefixed(&step, 0)));
        let expired = std::time::SystemTime::now() - weave_fs::LEASE_EXPIRY - std::time::Duration::from_secs(5);
        std::fs::File::options().append(true).open(&path).unwrap().set_modified(expired).unwrap();
        assert_eq!(gc(&store, 0).unwrap().entries, 1, "the node stopped renewing it");
        assert!(!path.exists());
    }

    // The paths a run refuses to write outputs onto must be all the cache writes: every
    // name in a cache folder that has an entry, a file index, key records and a pin is
    // one of them, and so is the folder of a pipeline whose name is all dots.
    #[test]
    fn the_cache_writes_nothing_but_its_own_paths() {
        for name in ["p", "..", ".", "", "a/../.."] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            store.put(&KeyBuilder::new("t").part("a", b"1").finish(), codec::BINCODE2, b"payload").unwrap();
            std::fs::write(dir.path().join("in.csv"), "a\n").unwrap();
            let plan = CachePlan {
                store: store.clone(),
                files: Arc::new(FileIndex::load(dir.path())),
                pipeline: name.into(),
                base: PathBuf::new(),
                steps: Vec::new(),
            };
            plan.files.hash(&dir.path().join("in.csv")).unwrap();
            plan.remember().unwrap();
            let _pin = Pin::new(&plan).unwrap();
            let own = crate::own_paths(dir.path());
            for e in std::fs::read_dir(dir.path()).unwrap().flatten().filter(|e| e.file_name() != "in.csv") {
                assert!(own.contains(&e.path()), "{name:?}: {} is not among {own:?}", e.path().display());
            }
            assert!(
                records_dir(&store, name).starts_with(dir.path().join("keys"))
                    && records_dir(&store, name) != dir.path().join("keys"),
                "{name:?}"
            );
        }
    }

    // regression: a pin was judged by its process id alone, so a dead run's pin whose id
    // the kernel had given to another process kept the dead run's entries from eviction
    // for as long as that other process lived.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_pin_whose_process_id_was_reused_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (dead, live, old) = (
            KeyBuilder::new("t").part("a", b"1").finish(),
            KeyBuilder::new("t").part("a", b"2").finish(),
            KeyBuilder::new("t").part("a", b"3").finish(),
        );
        for k in [dead, live, old] {
            store.put(&prefixed(&k, 0), codec::BINCODE2, b"payload").unwrap();
        }
        // A live process, and a pin of a dead run that had its id (another start time).
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let start = Owner::of_process(child.id()).unwrap().start().unwrap();
        let pins = dir.path().join("pins");
        std::fs::create_dir_all(&pins).unwrap();
        let pin = |name: &str, text: String| std::fs::write(pins.join(name), text).unwrap();
        let hex = |k: &Key| hex24(&prefix_of(k));
        pin(
            "reused.json",
            format!(r#"{{"pid":{},"process_start":{},"prefixes":["{}"]}}"#, child.id(), start + 1, hex(&dead)),
        );
        pin("live.json", format!(r#"{{"pid":{},"process_start":{start},"prefixes":["{}"]}}"#, child.id(), hex(&live)));
        // Written before pins kept the start time: judged by the process id alone.
        pin("old.json", format!(r#"{{"pid":{},"prefixes":["{}"]}}"#, child.id(), hex(&old)));

        let removed = gc(&store, 0).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(removed.entries, 1, "only the dead run's entry");
        assert!(!store.contains(&prefixed(&dead, 0)));
        assert!(store.contains(&prefixed(&live, 0)) && store.contains(&prefixed(&old, 0)));
        assert!(!pins.join("reused.json").exists(), "the dead run's pin is cleaned up");
        assert!(pins.join("live.json").exists() && pins.join("old.json").exists());
    }

    // regression: a killed run's pin stayed in `pins/` until someone ran `weave cache gc`.
    #[test]
    fn a_pin_lives_as_long_as_its_guard_and_a_killed_runs_goes_with_the_next_pin() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let plan = CachePlan {
            store: store.clone(),
            files: Arc::new(FileIndex::load(dir.path())),
            pipeline: "p".into(),
            base: PathBuf::new(),
            steps: Vec::new(),
        };
        // A killed run's pin: the next run's pin removes it.
        let pins = dir.path().join("pins");
        std::fs::create_dir_all(&pins).unwrap();
        std::fs::write(pins.join("4294967294-1.json"), r#"{"pid":4294967294,"prefixes":[]}"#).unwrap();
        let pin = Pin::new(&plan).unwrap();
        let count = || std::fs::read_dir(&pins).unwrap().count();
        assert_eq!(count(), 1);
        drop(pin);
        assert_eq!(count(), 0);
    }
}
