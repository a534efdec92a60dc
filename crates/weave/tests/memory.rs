//! In-memory ends: a run from batches the caller gives, through a built-in transform, to
//! batches handed back; and the cache never serves such a run stale data.

use weave::cache::{CacheOptions, Status};
use weave::{Batch, MemorySink, MemorySource, Orchestrator, Record, Step, StepError};

/// Batches of `texts`, two records a batch.
fn batches(texts: &[&str]) -> Vec<Batch> {
    texts
        .chunks(2)
        .enumerate()
        .map(|(b, chunk)| {
            let records: Vec<Record> = chunk
                .iter()
                .enumerate()
                .map(|(i, t)| Record::new().with("id", (b * 2 + i) as i64).with("text", *t))
                .collect();
            Batch::from_records(&records)
        })
        .collect()
}

fn clean() -> Step {
    weave::registry()
        .build(
            "clean",
            r#"fields = ["text"]
rules = ["trim", "collapse_whitespace", { min_chars = 5 }]"#,
        )
        .expect("valid keys")
}

/// The texts of the records handed back, in order.
fn texts(batches: &[Batch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.to_records())
        .map(|r| r.get("text").and_then(|v| v.as_str()).unwrap_or_default().to_owned())
        .collect()
}

/// Runs source → clean → sink with the cache in `dir`, and returns the texts handed back.
fn run(orchestrator: &Orchestrator, source: MemorySource) -> Vec<String> {
    let (sink, handle) = MemorySink::new();
    let p = orchestrator
        .build_pipeline("memory", [("in", source.into_step()), ("clean", clean()), ("out", sink.into_step())])
        .expect("a valid pipeline");
    orchestrator.run(p).expect("the run succeeds");
    texts(&handle.take())
}

#[test]
fn a_pipeline_runs_from_memory_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    let orchestrator = Orchestrator::new().monitoring(false).cache(dir.path().join("cache"));
    let first = batches(&["  hello   there friend ", "hi", "another   fine line", " last one  "]);
    assert_eq!(
        run(&orchestrator, MemorySource::new(first.clone())),
        ["hello there friend", "another fine line", "last one"]
    );
    // Other data through the same pipeline and cache: the new records, never the old ones.
    let second = batches(&["a different   text", "and one more"]);
    assert_eq!(run(&orchestrator, MemorySource::new(second)), ["a different text", "and one more"]);
    // The first data again, and from an iterator (a channel's receiver works alike).
    assert_eq!(run(&orchestrator, MemorySource::new(first.clone())).len(), 3);
    let (tx, rx) = std::sync::mpsc::channel();
    for b in batches(&["from a   channel", "x"]) {
        tx.send(b).unwrap();
    }
    drop(tx);
    assert_eq!(run(&orchestrator, MemorySource::streamed(rx)), ["from a channel"]);
}

#[test]
fn a_memory_sources_key_follows_its_content_or_it_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let orchestrator = Orchestrator::new().monitoring(false);
    let plan = |source: MemorySource| {
        let (sink, _) = MemorySink::new();
        let p = orchestrator
            .build_pipeline("memory", [("in", source.into_step()), ("clean", clean()), ("out", sink.into_step())])
            .expect("a valid pipeline");
        let plan = weave::cache_plan(&p, &dir.path().join("cache"), &CacheOptions::default()).expect("a plan");
        let step = |id: &str| plan.step(id).map(|s| (s.key, s.status.clone())).expect("the step is planned");
        (step("in"), step("clean"), step("out"))
    };
    let a = plan(MemorySource::new(batches(&["one text here", "two"])));
    let same = plan(MemorySource::new(batches(&["one text here", "two"])));
    let other = plan(MemorySource::new(batches(&["one text here", "three"])));
    assert!(a.0.0.is_some(), "held batches give a key");
    assert_eq!(a.0.0, same.0.0, "the same batches, the same key");
    assert_eq!(a.1.0, same.1.0);
    assert_ne!(a.0.0, other.0.0, "other batches, another key");
    assert_ne!(a.1.0, other.1.0, "and the steps after it too");
    assert_eq!(a.2.1, Status::Uncacheable, "the sink hands batches over: never skipped");
    let streamed = plan(MemorySource::streamed(batches(&["one text here"])));
    assert_eq!(streamed.0.1, Status::Uncacheable, "batches not known before the run: never cached");
    assert_eq!(streamed.1.1, Status::Uncacheable);
}

#[test]
fn a_streamed_source_that_fails_fails_its_step_with_its_error() {
    let orchestrator = Orchestrator::new().monitoring(false);
    let items = batches(&["a first good text"]).into_iter().map(Ok).chain([Err(StepError::fatal("the stream broke"))]);
    let (sink, handle) = MemorySink::new();
    let p = orchestrator
        .build_pipeline(
            "memory",
            [("in", MemorySource::try_streamed(items).into_step()), ("clean", clean()), ("out", sink.into_step())],
        )
        .expect("a valid pipeline");
    let err = orchestrator.run(p).expect_err("the run fails").to_string();
    assert!(err.contains("the stream broke") && err.contains("\"in\""), "{err}");
    assert!(handle.take().is_empty(), "a failed run hands nothing back");
}
