//! A stateful step whose per-record work is prepared ahead on the worker pool: its output
//! is the same as without, in input order, whatever the thread count and the order in
//! which preparations end; a failed preparation is retried, then fails the run naming the
//! step; a cancelled run stops.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::steps::*;
use weave_core::{Event, RunStatus, StepError, Subscriber};
use weave_exec::{Error, ExecOptions, run};

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);
impl Subscriber for Events {
    fn on_event(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

/// 40 batches of 25 records through `keep`, at `threads`; the sink's bytes and the
/// sequence numbers the ordered call was handed.
fn through(threads: usize, mut keep: KeepNew) -> (Vec<u8>, Vec<u64>) {
    let (out, bytes) = collect();
    let order = Arc::clone(&keep.order);
    keep.policy = fast_retries(3);
    let p = builder(threads).step("gen", src(gen_(40, 25))).step("keep", stateful(keep)).step("out", sink(out)).build();
    let summary = run(p.unwrap(), ExecOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.step("keep").unwrap().records_in, 1000);
    let seen = order.lock().unwrap().clone();
    (bytes.lock().unwrap().take().expect("committed"), seen)
}

#[test]
fn prepared_batches_reach_the_ordered_call_in_input_order_at_any_thread_count() {
    // Without a preparer: the reference output.
    let (reference, none) = through(1, keep_new(613, false));
    assert!(none.is_empty());
    assert_eq!(reference.iter().filter(|&&b| b == b'\n').count(), 613);
    for threads in [1, 2, 8] {
        let mut keep = keep_new(613, true);
        // Earlier batches take longer, so that later ones finish first on several threads.
        keep.before = Arc::new(|ctx| {
            std::thread::sleep(Duration::from_micros(300 * (8 - ctx.sequence() % 8)));
            Ok(())
        });
        let (bytes, order) = through(threads, keep);
        assert_eq!(order, (0..40).collect::<Vec<u64>>(), "{threads} thread(s)");
        assert_eq!(bytes, reference, "{threads} thread(s)");
    }
}

#[test]
fn a_failed_preparation_is_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let mut keep = keep_new(613, true);
    keep.before = Arc::new(move |ctx| {
        if ctx.sequence() == 3 && c.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(StepError::transient("503 from upstream"));
        }
        Ok(())
    });
    keep.policy = fast_retries(3);
    let events = Arc::new(Events::default());
    let (out, bytes) = collect();
    let p = builder(2).step("gen", src(gen_(10, 3))).step("keep", stateful(keep)).step("out", sink(out)).build();
    let opts = ExecOptions { subscribers: vec![events.clone()], ..ExecOptions::default() };
    let summary = run(p.unwrap(), opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary.step("keep").unwrap().retries, 2);
    assert_eq!(bytes.lock().unwrap().as_ref().unwrap().iter().filter(|&&b| b == b'\n').count(), 30);
    let retried: Vec<u32> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::BatchRetried { step, seq: 3, attempt, .. } if &**step == "keep" => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retried, [1, 2]);
}

#[test]
fn a_preparation_that_keeps_failing_fails_the_run_naming_the_step() {
    let mut keep = keep_new(613, true);
    keep.before = Arc::new(|ctx| match ctx.sequence() {
        5 => Err(StepError::transient("connection reset")),
        _ => Ok(()),
    });
    keep.policy = fast_retries(2);
    let (out, bytes) = collect();
    let p = builder(2).step("gen", src(gen_(10, 3))).step("keep", stateful(keep)).step("out", sink(out)).build();
    let err = run(p.unwrap(), ExecOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "step \"keep\" failed: connection reset");
    assert!(matches!(err.error, Error::Step { retries: 2, .. }), "{:?}", err.error);
    assert_eq!(err.summary.status, RunStatus::Failed);
    assert!(bytes.lock().unwrap().is_none(), "nothing is committed after a failure");

    // A panic is a failure of the step too, never retried.
    let mut keep = keep_new(613, true);
    keep.before = Arc::new(|ctx| if ctx.sequence() == 2 { panic!("index out of bounds") } else { Ok(()) });
    let p = builder(2).step("gen", src(gen_(10, 3))).step("keep", stateful(keep)).step("out", sink(collect().0));
    let err = run(p.build().unwrap(), ExecOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "step \"keep\" failed: panicked: index out of bounds");
}

#[test]
fn cancelling_stops_a_stage_with_preparations_under_way() {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut keep = keep_new(613, true);
    keep.before = Arc::new(|_| {
        std::thread::sleep(Duration::from_millis(5));
        Ok(())
    });
    let (out, bytes) = collect();
    let p = builder(2).step("gen", src(gen_(1_000_000, 1))).step("keep", stateful(keep)).step("out", sink(out));
    let c = Arc::clone(&cancel);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        c.store(true, Ordering::Relaxed);
    });
    let t0 = Instant::now();
    let err = run(p.build().unwrap(), ExecOptions { cancel, ..ExecOptions::default() }).unwrap_err();
    t.join().unwrap();
    assert!(matches!(err.error, Error::Cancelled), "{err}");
    assert_eq!(err.summary.status, RunStatus::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(bytes.lock().unwrap().is_none());
}
