//! Cache entries as the executor uses them: replay of a complete step, skipping what no
//! step needs, resuming a stateless step from an interrupted run's parts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weave_core::{Batch, StepCache};
use weave_exec::{CacheUse, ExecOptions, RunSummary, run};

use crate::steps::*;

/// An entry in memory.
#[derive(Default)]
struct Mem {
    parts: Mutex<BTreeMap<u64, Vec<(u64, Batch)>>>,
    finished: Mutex<Option<u64>>,
    loads: AtomicU64,
}

impl StepCache for Mem {
    fn complete(&self) -> bool {
        self.finished.lock().unwrap().is_some()
    }
    fn replay(&self, f: &mut dyn FnMut(u64, Batch) -> bool) -> Result<(), String> {
        for part in self.parts.lock().unwrap().values() {
            for (seq, b) in part {
                if !f(*seq, b.clone()) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    fn load(&self, part: u64) -> Option<Vec<(u64, Batch)>> {
        let got = self.parts.lock().unwrap().get(&part).cloned();
        if got.is_some() {
            self.loads.fetch_add(1, Ordering::Relaxed);
        }
        got
    }
    fn store(&self, part: u64, out: &[(u64, Batch)]) -> Result<(), String> {
        self.parts.lock().unwrap().insert(part, out.to_vec());
        Ok(())
    }
    fn finish(&self, parts: u64) -> Result<(), String> {
        *self.finished.lock().unwrap() = Some(parts);
        Ok(())
    }
}

/// gen → a (fused with b) → b → [left (slow, cached), right] → join (cached) → out.
fn diamond(caches: &[(&str, Arc<Mem>)], calls: Arc<AtomicU64>) -> (RunSummary, Vec<u8>) {
    let (out, bytes) = collect();
    let left = map(move |b, ctx| {
        calls.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_micros(100 * (ctx.sequence() % 3)));
        Ok(b.clone())
    });
    let p = builder(2)
        .step("gen", src(gen_(30, 5)))
        .step("a", tf(tag("a")))
        .step("b", tf(tag("b")))
        .step_after("left", ["b"], tf(left))
        .step_after("right", ["b"], tf(tag("r")))
        .step_after("join", ["left", "right"], merge(concat()))
        .step("out", sink(out))
        .build()
        .expect("valid DAG");
    let caches: HashMap<String, Arc<dyn StepCache>> =
        caches.iter().map(|(id, c)| (id.to_string(), Arc::clone(c) as Arc<dyn StepCache>)).collect();
    let summary = run(p, ExecOptions { caches, ..ExecOptions::default() }).expect("run succeeds");
    let bytes = bytes.lock().unwrap().take().expect("committed");
    (summary, bytes)
}

#[test]
fn a_complete_entry_is_replayed_and_what_only_feeds_it_is_skipped() {
    let (join, left) = (Arc::new(Mem::default()), Arc::new(Mem::default()));
    let calls = Arc::new(AtomicU64::new(0));
    let (first, want) = diamond(&[("join", Arc::clone(&join)), ("left", Arc::clone(&left))], Arc::clone(&calls));
    assert_eq!(calls.load(Ordering::Relaxed), 30);
    assert_eq!(*join.finished.lock().unwrap(), Some(60), "one part per input batch (30 from each side)");
    assert_eq!(*left.finished.lock().unwrap(), Some(30));
    assert_eq!(first.step("left").unwrap().cache, CacheUse::Ran);

    let (second, got) = diamond(&[("join", Arc::clone(&join)), ("left", Arc::clone(&left))], Arc::clone(&calls));
    assert_eq!(got, want, "the replayed output is the computed one");
    assert_eq!(calls.load(Ordering::Relaxed), 30, "left was not called again");
    let s = |id: &str| second.step(id).unwrap().clone();
    assert_eq!(s("join").cache, CacheUse::Replayed);
    assert_eq!(s("join").records_out, 300);
    for id in ["gen", "a", "b", "left", "right"] {
        assert_eq!(s(id).cache, CacheUse::Skipped, "{id}");
        assert_eq!(s(id).records_out, 0, "{id}");
    }
    assert_eq!(s("out").cache, CacheUse::Ran);
    assert_eq!(s("out").records_in, 300);
}

#[test]
fn a_stateless_step_resumes_from_an_interrupted_runs_parts() {
    let left = Arc::new(Mem::default());
    let calls = Arc::new(AtomicU64::new(0));
    let (_, want) = diamond(&[("left", Arc::clone(&left))], Arc::clone(&calls));
    // As if the run had been killed after 12 batches of `left`.
    *left.finished.lock().unwrap() = None;
    left.parts.lock().unwrap().retain(|&part, _| part < 12);
    calls.store(0, Ordering::Relaxed);

    let (second, got) = diamond(&[("left", Arc::clone(&left))], Arc::clone(&calls));
    assert_eq!(got, want);
    assert_eq!(calls.load(Ordering::Relaxed), 18, "only the batches not stored were computed");
    assert_eq!(left.loads.load(Ordering::Relaxed), 12);
    let l = second.step("left").unwrap();
    assert_eq!((l.cache, l.cached_batches, l.batches_out), (CacheUse::Ran, 12, 30));
    assert_eq!(*left.finished.lock().unwrap(), Some(30), "complete again");
    assert_eq!(left.parts.lock().unwrap().len(), 30);
}

#[test]
fn a_sink_with_a_complete_entry_is_skipped_with_everything_before_it() {
    let out = Arc::new(Mem::default());
    *out.finished.lock().unwrap() = Some(0);
    let (out_sink, bytes) = collect();
    let p = builder(2)
        .step("gen", src(gen_(3, 5)))
        .step("a", tf(tag("a")))
        .step("out", sink(out_sink))
        .build()
        .expect("valid DAG");
    let caches = HashMap::from([("out".to_owned(), out as Arc<dyn StepCache>)]);
    let s = run(p, ExecOptions { caches, ..ExecOptions::default() }).expect("run succeeds");
    assert!(s.steps.iter().all(|st| st.cache == CacheUse::Skipped), "{:?}", s.steps);
    assert!(bytes.lock().unwrap().is_none(), "the sink did not run, so it committed nothing");
}

// regression (issue 13, item 4): a stateless step that sets bad records aside resumed from
// an interrupted run's parts, and the records it had set aside in them were missing from
// this run's quarantine file (which each run starts anew).
#[test]
fn a_step_that_sets_records_aside_does_not_resume_from_parts_that_lack_them() {
    use weave_core::{BadRecordPolicy, Rejected, StepPolicy};
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("quarantine.jsonl");
    let entry = Arc::new(Mem::default());
    let calls = Arc::new(AtomicU64::new(0));
    let go = |calls: Arc<AtomicU64>| {
        let mut check = map(move |b, ctx| {
            calls.fetch_add(1, Ordering::Relaxed);
            let bad = |r: &weave_core::RowRef<'_>| r.get("i").and_then(|v| v.as_int()).unwrap_or(0) % 4 == 0;
            for r in b.rows().filter(bad) {
                ctx.reject(Rejected { reason: "divisible by 4".into(), record: Some(r.to_record()), origin: None });
            }
            let keep: Vec<bool> = b.rows().map(|r| !bad(&r)).collect();
            Ok(b.filter(&keep))
        });
        check.policy = StepPolicy { on_bad_record: Some(BadRecordPolicy::Skip), ..StepPolicy::default() };
        let (out, bytes) = collect();
        let p = builder(2)
            .step("gen", src(gen_(10, 4)))
            .step("check", tf(check))
            .step("out", sink(out))
            .build()
            .expect("valid DAG");
        let caches = HashMap::from([("check".to_owned(), Arc::clone(&entry) as Arc<dyn StepCache>)]);
        let s = run(p, ExecOptions { caches, quarantine: Some(q.clone()), ..ExecOptions::default() })
            .expect("run succeeds");
        (s, bytes.lock().unwrap().take().expect("committed"))
    };
    let (_, want) = go(Arc::clone(&calls));
    // As if the run had been killed after 6 batches of `check`.
    *entry.finished.lock().unwrap() = None;
    entry.parts.lock().unwrap().retain(|&part, _| part < 6);
    calls.store(0, Ordering::Relaxed);

    let (second, got) = go(Arc::clone(&calls));
    assert_eq!(got, want);
    assert_eq!(calls.load(Ordering::Relaxed), 10, "every batch computed again, none taken from the parts");
    assert_eq!(second.step("check").unwrap().cached_batches, 0);
    assert_eq!(second.step("check").unwrap().quarantined, 10, "every bad record set aside by this run");
    assert_eq!(std::fs::read_to_string(&q).unwrap().lines().count(), 10);
}
