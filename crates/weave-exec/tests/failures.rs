//! Retries, fatal errors at every node, timeouts, panics, cancellation and bad records.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::steps::*;
use weave_core::{BadRecordPolicy, Event, Rejected, RunStatus, StepError, StepPolicy, Subscriber};
use weave_exec::{Error, ExecOptions, run};

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);
impl Subscriber for Events {
    fn on_event(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

#[test]
fn two_transient_failures_then_success_records_two_retries() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let mut flaky = map(move |b, ctx| {
        if ctx.sequence() == 3 && c.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(StepError::transient("503 from upstream"));
        }
        Ok(b.clone())
    });
    flaky.policy = fast_retries(3);
    let (out, bytes) = collect();
    let events = Arc::new(Events::default());
    let p = builder(2).step("gen", src(gen_(10, 3))).step("flaky", tf(flaky)).step("out", sink(out)).build().unwrap();
    let opts = ExecOptions { subscribers: vec![events.clone()], ..ExecOptions::default() };
    let summary = run(p, opts).unwrap();
    assert_eq!(summary.step("flaky").unwrap().retries, 2);
    assert_eq!(summary.step("out").unwrap().records_in, 30);
    assert_eq!(bytes.lock().unwrap().as_ref().unwrap().iter().filter(|&&b| b == b'\n').count(), 30);
    let retried: Vec<u32> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::BatchRetried { step, seq: 3, attempt, .. } if &**step == "flaky" => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retried, [1, 2]);
}

#[test]
fn retries_run_out_and_the_error_names_the_step() {
    let mut always = map(|_, _| Err(StepError::transient("connection reset")));
    always.policy = fast_retries(2);
    let (out, bytes) = collect();
    let p = builder(2).step("gen", src(gen_(3, 1))).step("down", tf(always)).step("out", sink(out)).build().unwrap();
    let err = run(p, ExecOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "step \"down\" failed: connection reset");
    assert!(matches!(err.error, Error::Step { retries: 2, .. }));
    assert_eq!(err.summary.status, RunStatus::Failed);
    assert!(bytes.lock().unwrap().is_none(), "nothing is committed after a failure");
}

/// A 20-node DAG (two sources, fused chains, fan-out, merges, a stateful step, two sinks)
/// where node `fail_at` fails fatally on its third batch.
fn twenty(fail_at: Option<&str>) -> weave_core::Pipeline {
    let boom = |id: &'static str| {
        let fails = fail_at == Some(id);
        move |b: &weave_core::Batch, ctx: &mut weave_core::StepContext| {
            if fails && ctx.sequence() == 2 {
                Err(StepError::fatal(format!("injected failure in {id}")))
            } else {
                Ok(b.clone())
            }
        }
    };
    struct FailingGen(Gen, bool);
    impl weave_core::StepInfo for FailingGen {
        fn kind(&self) -> &str {
            "gen"
        }
        fn config(&self) -> weave_core::CanonicalConfig {
            weave_core::CanonicalConfig::default()
        }
    }
    impl weave_core::Source for FailingGen {
        fn next_batch(&mut self, ctx: &mut weave_core::StepContext) -> Result<Option<weave_core::Batch>, StepError> {
            if self.1 && self.0.next == 2 {
                return Err(StepError::fatal("injected failure in source"));
            }
            self.0.next_batch(ctx)
        }
    }
    struct FailingSink(Collect, bool, u32);
    impl weave_core::StepInfo for FailingSink {
        fn kind(&self) -> &str {
            "sink"
        }
        fn config(&self) -> weave_core::CanonicalConfig {
            weave_core::CanonicalConfig::default()
        }
    }
    impl weave_core::Sink for FailingSink {
        fn write(&mut self, b: &weave_core::Batch, ctx: &mut weave_core::StepContext) -> Result<(), StepError> {
            self.2 += 1;
            if self.1 && self.2 == 3 {
                return Err(StepError::fatal("injected failure in sink"));
            }
            self.0.write(b, ctx)
        }
        fn commit(&mut self, ctx: &mut weave_core::StepContext) -> Result<(), StepError> {
            self.0.commit(ctx)
        }
    }
    struct FailingMerge(Concat, bool, u32);
    impl weave_core::StepInfo for FailingMerge {
        fn kind(&self) -> &str {
            "merge"
        }
        fn config(&self) -> weave_core::CanonicalConfig {
            weave_core::CanonicalConfig::default()
        }
    }
    impl weave_core::Merge for FailingMerge {
        fn process(
            &mut self,
            i: usize,
            b: &weave_core::Batch,
            ctx: &mut weave_core::StepContext,
            out: &mut Vec<weave_core::Batch>,
        ) -> Result<(), StepError> {
            self.2 += 1;
            if self.1 && self.2 == 3 {
                return Err(StepError::fatal("injected failure in merge"));
            }
            self.0.process(i, b, ctx, out)
        }
    }
    struct FailingStateful(EveryOther, bool);
    impl weave_core::StepInfo for FailingStateful {
        fn kind(&self) -> &str {
            "stateful"
        }
        fn config(&self) -> weave_core::CanonicalConfig {
            weave_core::CanonicalConfig::default()
        }
    }
    impl weave_core::StatefulTransform for FailingStateful {
        fn process(
            &mut self,
            b: &weave_core::Batch,
            ctx: &mut weave_core::StepContext,
            out: &mut Vec<weave_core::Batch>,
        ) -> Result<(), StepError> {
            if self.1 && self.0.seen == 2 {
                return Err(StepError::fatal("injected failure in stateful"));
            }
            self.0.process(b, ctx, out)
        }
    }
    let f = |id| fail_at == Some(id);
    builder(2)
        .step("s1", src(FailingGen(gen_(50, 4), f("s1"))))
        .step("t1", tf(map(boom("t1"))))
        .step("t2", tf(map(boom("t2"))))
        .step("t3", tf(map(boom("t3"))))
        .step("s2", src(FailingGen(gen_(50, 4), f("s2"))))
        .step("u1", tf(map(boom("u1"))))
        .step_after("fan1", ["t3"], tf(map(boom("fan1"))))
        .step_after("fan2", ["t3"], tf(map(boom("fan2"))))
        .step_after("m1", ["fan1", "fan2"], merge(FailingMerge(concat(), f("m1"), 0)))
        .step("v1", tf(map(boom("v1"))))
        .step_after("m2", ["v1", "u1"], merge(FailingMerge(concat(), f("m2"), 0)))
        .step(
            "st",
            stateful(FailingStateful(
                EveryOther { seen: 0, policy: Default::default(), resources: Default::default() },
                f("st"),
            )),
        )
        .step("w1", tf(map(boom("w1"))))
        .step("w2", tf(map(boom("w2"))))
        .step_after("x1", ["w2"], tf(map(boom("x1"))))
        .step_after("x2", ["w2"], tf(map(boom("x2"))))
        .step_after("k1", ["x1"], sink(FailingSink(collect().0, f("k1"), 0)))
        .step_after("y1", ["x2"], tf(map(boom("y1"))))
        .step("y2", tf(map(boom("y2"))))
        .step("k2", sink(FailingSink(collect().0, f("k2"), 0)))
        .build()
        .unwrap()
}

#[test]
fn a_fatal_failure_at_any_of_20_nodes_stops_the_run_promptly() {
    let ok = run(twenty(None), ExecOptions::default()).expect("the DAG runs without injected failures");
    assert_eq!(ok.steps.len(), 20);
    let ids: Vec<String> = ok.steps.iter().map(|s| s.id.clone()).collect();
    for id in &ids {
        let t0 = Instant::now();
        let err = run(twenty(Some(id)), ExecOptions::default()).expect_err("the injected failure fails the run");
        let took = t0.elapsed();
        assert_eq!(err.error.step(), Some(id.as_str()), "{err}");
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(took < Duration::from_secs(1), "failure at {id} took {took:?} to stop the run");
    }
}

#[test]
fn a_call_that_hangs_is_abandoned_retried_then_fails_the_run() {
    let mut hang = map(|b, _| {
        std::thread::sleep(Duration::from_secs(3600));
        Ok(b.clone())
    });
    hang.policy = StepPolicy { timeout: Some(Duration::from_millis(200)), ..fast_retries(2) };
    let (out, _) = collect();
    let p = builder(2).step("gen", src(gen_(1, 1))).step("hang", tf(hang)).step("out", sink(out)).build().unwrap();
    let t0 = Instant::now();
    let err = run(p, ExecOptions::default()).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(err.to_string(), "step \"hang\" timed out: a call took longer than 200ms on 3 attempts");
    assert_eq!(err.summary.step("hang").unwrap().retries, 2);
}

/// A step whose calls take `each` (or hang until `release` when `hang`), counting the calls
/// under way at once, abandoned ones included: each runs on a thread of its own.
#[derive(Default)]
struct Calls {
    running: AtomicU32,
    peak: AtomicU32,
    started: AtomicU32,
    release: AtomicBool,
}

impl Calls {
    fn step(self: &Arc<Self>, each: Duration, hang: bool, policy: StepPolicy) -> Map {
        let calls = Arc::clone(self);
        let mut m = map(move |b, _| {
            let now = calls.running.fetch_add(1, Ordering::SeqCst) + 1;
            calls.peak.fetch_max(now, Ordering::SeqCst);
            calls.started.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(each);
            while hang && !calls.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            calls.running.fetch_sub(1, Ordering::SeqCst);
            Ok(b.clone())
        });
        m.policy = policy;
        m
    }
}

// regression: a step with a timeout ran each call on a thread of its own, up to 4 ×
// max_concurrent calls at once.
#[test]
fn the_calls_of_a_step_with_a_timeout_stay_within_max_concurrent() {
    let calls = Arc::new(Calls::default());
    let policy = StepPolicy { timeout: Some(Duration::from_secs(60)), ..StepPolicy::default() };
    let step = calls.step(Duration::from_millis(20), false, policy);
    let (out, _) = collect();
    let p = builder(2).step("gen", src(gen_(24, 5))).step("slow", tf(step)).step("out", sink(out)).build().unwrap();
    let summary = run(p, ExecOptions::default()).unwrap();
    assert_eq!(summary.step("out").unwrap().records_in, 120, "every record went through");
    assert_eq!(calls.started.load(Ordering::SeqCst), 24);
    assert_eq!(calls.peak.load(Ordering::SeqCst), 2, "calls under way at once, with max_concurrent = 2");
}

// regression: the threads of calls abandoned past their timeout piled up without bound
// (each retry of a call that hangs left one more behind: 8 at once, then 8 per timeout).
#[test]
fn calls_hung_past_their_timeout_are_bounded_and_then_fail_the_run() {
    let calls = Arc::new(Calls::default());
    let policy = StepPolicy { timeout: Some(Duration::from_millis(100)), ..fast_retries(20) };
    let step = calls.step(Duration::ZERO, true, policy);
    let (out, _) = collect();
    let p = builder(2).step("gen", src(gen_(24, 5))).step("hang", tf(step)).step("out", sink(out)).build().unwrap();
    let err = run(p, ExecOptions::default()).unwrap_err();
    calls.release.store(true, Ordering::SeqCst);
    assert_eq!(
        err.to_string(),
        "step \"hang\": 5 calls hung past the step's timeout of 100ms and still run, more than the 4 a step may leave behind (their threads cannot be stopped); find out why its calls hang, or raise its `timeout`"
    );
    assert!(matches!(err.error, Error::Hung { hung: 5, .. }), "{err:?}");
    // max_concurrent calls under way, and at most 4 abandoned ones beside them.
    let peak = calls.peak.load(Ordering::SeqCst);
    assert!(peak <= 6, "{peak} calls at once");
    // Two at a time: 2 calls, 4 abandoned and retried, and the fifth to hang stops the run
    // (the sixth had started beside it, unless it was slow to start).
    let started = calls.started.load(Ordering::SeqCst);
    assert!((5..=6).contains(&started), "{started} calls started");
}

#[test]
fn a_hung_sink_stops_the_run() {
    let (mut out, _) = collect();
    out.delay = Duration::from_secs(3600);
    out.policy = StepPolicy { timeout: Some(Duration::from_millis(100)), ..StepPolicy::default() };
    let p = builder(2).step("gen", src(gen_(2, 1))).step("out", sink(out)).build().unwrap();
    let err = run(p, ExecOptions::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("step \"out\" timed out: a call took longer than 100ms; the hung call"),
        "{err}"
    );
}

#[test]
fn a_panicking_step_fails_the_run_with_its_name() {
    let p = builder(2)
        .step("gen", src(gen_(5, 1)))
        .step("bug", tf(map(|_, _| panic!("index out of bounds"))))
        .step("out", sink(collect().0))
        .build()
        .unwrap();
    let err = run(p, ExecOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "step \"bug\" failed: panicked: index out of bounds");
}

#[test]
fn cancelling_stops_every_thread() {
    let cancel = Arc::new(AtomicBool::new(false));
    let (mut out, bytes) = collect();
    out.delay = Duration::from_millis(5);
    let p = builder(2)
        .step("gen", src(gen_(1_000_000, 1)))
        .step("id", tf(tag("x")))
        .step("out", sink(out))
        .build()
        .unwrap();
    let c = Arc::clone(&cancel);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        c.store(true, Ordering::Relaxed);
    });
    let t0 = Instant::now();
    let err = run(p, ExecOptions { cancel, ..ExecOptions::default() }).unwrap_err();
    t.join().unwrap();
    assert!(matches!(err.error, Error::Cancelled), "{err}");
    assert_eq!(err.summary.status, RunStatus::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(bytes.lock().unwrap().is_none());
}

#[test]
fn bad_records_go_to_quarantine_or_fail_the_run() {
    let rejecting = |policy: BadRecordPolicy| {
        let mut m = map(|b, ctx| {
            let keep: Vec<bool> = b.rows().map(|r| r.get("i").and_then(|v| v.as_int()).unwrap_or(0) % 4 != 0).collect();
            for r in b.rows().filter(|r| r.get("i").and_then(|v| v.as_int()).unwrap_or(0) % 4 == 0) {
                ctx.reject(Rejected { reason: "divisible by 4".into(), record: Some(r.to_record()), origin: None });
            }
            Ok(b.filter(&keep))
        });
        m.policy = StepPolicy { on_bad_record: Some(policy), ..StepPolicy::default() };
        m
    };
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q/quarantine.jsonl");
    let (out, bytes) = collect();
    let p = builder(2)
        .step("gen", src(gen_(4, 5)))
        .step("check", tf(rejecting(BadRecordPolicy::Skip)))
        .step("out", sink(out))
        .build()
        .unwrap();
    let summary = run(p, ExecOptions { quarantine: Some(q.clone()), ..ExecOptions::default() }).unwrap();
    assert_eq!(summary.step("check").unwrap().quarantined, 5);
    assert_eq!(summary.step("out").unwrap().records_in, 15);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&q).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    // In input order, whatever the order the batches finished in.
    let ids: Vec<i64> = lines.iter().map(|l| l["record"]["i"].as_i64().unwrap()).collect();
    assert_eq!(ids, [0, 4, 8, 12, 16]);
    assert_eq!(lines[1]["reason"], "divisible by 4");
    assert_eq!(lines[1]["step"], "check");
    assert!(bytes.lock().unwrap().is_some());

    let p = builder(2)
        .step("gen", src(gen_(4, 5)))
        .step("check", tf(rejecting(BadRecordPolicy::Fail)))
        .step("out", sink(collect().0))
        .build()
        .unwrap();
    let err = run(p, ExecOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "step \"check\": bad record: divisible by 4");
}

/// Holds every batch back and emits them all at the end, like a sort.
struct HoldAll {
    held: Vec<weave_core::Batch>,
}
impl weave_core::StepInfo for HoldAll {
    fn kind(&self) -> &str {
        "hold_all"
    }
    fn config(&self) -> weave_core::CanonicalConfig {
        weave_core::CanonicalConfig::default()
    }
}
impl weave_core::StatefulTransform for HoldAll {
    fn process(
        &mut self,
        b: &weave_core::Batch,
        _ctx: &mut weave_core::StepContext,
        _out: &mut Vec<weave_core::Batch>,
    ) -> Result<(), StepError> {
        self.held.push(b.clone());
        Ok(())
    }
    fn finish(
        &mut self,
        _ctx: &mut weave_core::StepContext,
        out: &mut Vec<weave_core::Batch>,
    ) -> Result<(), StepError> {
        out.append(&mut self.held);
        Ok(())
    }
}

#[test]
fn a_branch_that_holds_everything_back_before_a_merge_runs_within_the_budget() {
    // a splits into a branch that holds everything back and one that does not; the merge
    // waits on the first while it queues the second's batches, which would otherwise fill
    // their channel and stop `a`. The output is the same whatever the timing.
    let outputs: Vec<Vec<String>> = (0..3)
        .map(|_| {
            let (sink_, got) = collect();
            let p = builder(2)
                .step("a", src(gen_(200, 3)))
                .step_after("hold", ["a"], stateful(HoldAll { held: Vec::new() }))
                .step_after("pass", ["a"], tf(tag("p")))
                .step_after("join", ["hold", "pass"], merge(concat()))
                .step("out", sink(sink_))
                .build()
                .unwrap();
            let opts = ExecOptions { stall_timeout: Duration::from_secs(5), ..ExecOptions::default() };
            run(p, opts).unwrap_or_else(|e| panic!("{e}"));
            let bytes = got.lock().unwrap().clone().expect("committed");
            String::from_utf8(bytes).unwrap().lines().map(str::to_owned).collect()
        })
        .collect();
    assert_eq!(outputs[0].len(), 1200, "every record of both branches");
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

#[test]
fn a_deadlocked_dag_is_stopped_with_an_explanation_not_left_hanging() {
    // The same DAG with a budget too small for what the merge must queue: the source
    // cannot go on, nothing moves, and the stall watch stops the run.
    let mut g = gen_(200, 1);
    g.pad = 64 * 1024;
    let p = builder(2)
        .resources(weave_core::ResourceLimits { max_memory: 4 << 20, max_concurrent: Some(2), ..Default::default() })
        .step("a", src(g))
        .step_after("hold", ["a"], stateful(HoldAll { held: Vec::new() }))
        .step_after("pass", ["a"], tf(tag("p")))
        .step_after("join", ["hold", "pass"], merge(concat()))
        .step("out", sink(collect().0))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let opts = ExecOptions { stall_timeout: Duration::from_millis(300), ..ExecOptions::default() };
    let err = run(p, opts).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(matches!(err.error, Error::Stalled { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("the run stalled: for 300ms no batch moved"), "{msg}");
    assert!(msg.contains("within `max_memory`: raise it, or move that step after the merge"), "{msg}");
}

#[test]
fn a_slow_step_is_not_a_stall() {
    let mut slow = map(|b, _| {
        std::thread::sleep(Duration::from_millis(150));
        Ok(b.clone())
    });
    slow.policy = StepPolicy::default();
    let (mut out, _) = collect();
    out.delay = Duration::from_millis(150);
    let p = builder(2).step("gen", src(gen_(4, 1))).step("slow", tf(slow)).step("out", sink(out)).build().unwrap();
    let opts = ExecOptions { stall_timeout: Duration::from_millis(100), ..ExecOptions::default() };
    run(p, opts).expect("steps that work slowly are not stalled");
}
