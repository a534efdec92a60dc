//! The output is the same, byte for byte, whatever the thread count.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::steps::*;
use weave_exec::{ExecOptions, run};

/// A DAG with fused transforms, a fan-out, two branches of different speed, a merge and a
/// stateful step; returns the sink's bytes.
fn diamond(threads: usize) -> Vec<u8> {
    let (out, bytes) = collect();
    let slow = map(|b, ctx| {
        // Uneven work so that batches finish out of order on several threads.
        std::thread::sleep(Duration::from_micros(200 * (ctx.sequence() % 5)));
        Ok(b.clone())
    });
    let p = builder(threads)
        .step("gen", src(gen_(60, 7)))
        .step("a", tf(tag("a")))
        .step("b", tf(tag("b")))
        .step_after("left", ["b"], tf(slow))
        .step_after("right", ["b"], tf(tag("r")))
        .step_after("join", ["left", "right"], merge(concat()))
        .step("half", stateful(EveryOther { seen: 0, policy: Default::default(), resources: Default::default() }))
        .step("out", sink(out))
        .build()
        .expect("valid DAG");
    let summary = run(p, ExecOptions::default()).expect("run succeeds");
    assert_eq!(summary.step("gen").unwrap().records_out, 420);
    assert_eq!(summary.step("join").unwrap().records_out, 840);
    bytes.lock().unwrap().take().expect("committed")
}

#[test]
fn same_bytes_with_1_2_and_8_threads() {
    let one = diamond(1);
    assert!(one.len() > 10_000, "{}", one.len());
    let text = String::from_utf8(one.clone()).unwrap();
    // Merged by sequence number: batch 0 of the left branch, then batch 0 of the right...
    let first: Vec<&str> = text.lines().take(2).collect();
    assert_eq!(first, [r#"{"i":0,"text":"row 0","tag":"ab"}"#, r#"{"i":1,"text":"row 1","tag":"ab"}"#]);
    assert!(text.lines().last().unwrap().contains("\"seen\":120"), "{}", text.lines().last().unwrap());
    for threads in [2, 8] {
        assert!(diamond(threads) == one, "output with {threads} threads differs from 1 thread");
    }
}

#[test]
fn added_figures_are_summed_over_every_batch_whatever_order_they_end_in() {
    for threads in [1, 4] {
        let (out, _) = collect();
        // Later batches end first, so a running total set by each call would end short.
        let count = map(|b, ctx| {
            std::thread::sleep(Duration::from_micros(300 * (10 - ctx.sequence() % 10)));
            ctx.add_stat("rows", b.len() as i64);
            ctx.add_stat("cost", 0.5);
            ctx.set_stat("last_seq", ctx.sequence() as i64);
            Ok(b.clone())
        });
        let p = builder(threads).step("gen", src(gen_(40, 3))).step("count", tf(count)).step("out", sink(out));
        let summary = run(p.build().expect("valid"), ExecOptions::default()).expect("run succeeds");
        let figures = &summary.step("count").unwrap().figures;
        let get = |n: &str| figures.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("rows"), Some(weave_core::Value::Int(120)), "{threads} threads");
        assert_eq!(get("cost"), Some(weave_core::Value::Float(20.0)));
        // A set figure is replaced in input order: the last batch's.
        assert_eq!(get("last_seq"), Some(weave_core::Value::Int(39)));
    }
}

/// A stateful step that says it runs rayon iterators, and notes how many threads they get.
struct Wide {
    parallel: bool,
    timeout: Option<Duration>,
    seen: Arc<Mutex<Vec<usize>>>,
}

impl weave_core::StepInfo for Wide {
    fn kind(&self) -> &str {
        "wide"
    }
    fn config(&self) -> weave_core::CanonicalConfig {
        weave_core::CanonicalConfig::default()
    }
    fn parallel(&self) -> bool {
        self.parallel
    }
    fn policy(&self) -> weave_core::StepPolicy {
        weave_core::StepPolicy { timeout: self.timeout, ..weave_core::StepPolicy::default() }
    }
}

impl weave_core::StatefulTransform for Wide {
    fn process(
        &mut self,
        b: &weave_core::Batch,
        _ctx: &mut weave_core::StepContext,
        out: &mut Vec<weave_core::Batch>,
    ) -> Result<(), weave_core::StepError> {
        use rayon::prelude::*;
        let widths: Vec<usize> = (0..64).into_par_iter().map(|_| rayon::current_num_threads()).collect();
        self.seen.lock().unwrap().extend(widths);
        out.push(b.clone());
        Ok(())
    }
}

#[test]
fn a_parallel_step_runs_its_iterators_on_max_concurrent_threads() {
    for threads in [1, 3] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let p = builder(threads)
            .step("g", src(gen_(4, 10)))
            .step("wide", stateful(Wide { parallel: true, timeout: None, seen: Arc::clone(&seen) }))
            .step("out", sink(collect().0))
            .build()
            .unwrap();
        run(p, ExecOptions::default()).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4 * 64);
        assert!(seen.iter().all(|&w| w == threads), "max_concurrent {threads}: {seen:?}");
    }
    // A step that does not say so computes on the run's pool too (every call that computes
    // does, so that `max_concurrent` bounds the cores a run keeps busy)...
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = builder(1)
        .step("g", src(gen_(1, 10)))
        .step("wide", stateful(Wide { parallel: false, timeout: None, seen: Arc::clone(&seen) }))
        .step("out", sink(collect().0))
        .build()
        .unwrap();
    run(p, ExecOptions::default()).unwrap();
    assert!(seen.lock().unwrap().iter().all(|&w| w == 1));
    // ... but one with a timeout, whose calls may be abandoned, keeps its stage's thread
    // (and rayon's global pool), where an abandoned call cannot hold a worker.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = builder(1)
        .step("g", src(gen_(1, 10)))
        .step(
            "wide",
            stateful(Wide { parallel: false, timeout: Some(Duration::from_secs(60)), seen: Arc::clone(&seen) }),
        )
        .step("out", sink(collect().0))
        .build()
        .unwrap();
    run(p, ExecOptions::default()).unwrap();
    assert!(seen.lock().unwrap().iter().all(|&w| w == rayon::current_num_threads()));
}
