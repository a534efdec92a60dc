//! A fixed pipeline with injected failures: the collector's counts are the known ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weave::{
    Backoff, Batch, CanonicalConfig, ExecOptions, MetricsCollector, PipelineBuilder, Record, Rejected, ResourceLimits,
    RetryPolicy, Sink, Source, Step, StepContext, StepError, StepInfo, StepPolicy, Transform,
};

struct Numbers(u64);
impl StepInfo for Numbers {
    fn kind(&self) -> &str {
        "numbers"
    }
    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
}
impl Source for Numbers {
    fn next_batch(&mut self, _: &mut StepContext) -> Result<Option<Batch>, StepError> {
        if self.0 == 10 {
            return Ok(None);
        }
        let b = self.0;
        self.0 += 1;
        let recs: Vec<Record> = (0..10).map(|i| Record::new().with("n", (b * 10 + i) as i64)).collect();
        Ok(Some(Batch::from_records(&recs)))
    }
}

/// Three retries, a millisecond apart.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        retry_delay: Duration::from_millis(1),
        backoff: Backoff::Fixed,
        max_delay: Duration::from_millis(1),
        jitter: false,
    }
}

/// Fails transiently twice on batch 4, drops multiples of 5, quarantines multiples of 7.
struct Check(Arc<AtomicU32>);
impl StepInfo for Check {
    fn kind(&self) -> &str {
        "check"
    }
    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
    fn policy(&self) -> StepPolicy {
        StepPolicy {
            retry: Some(quick_retries()),
            on_bad_record: Some(weave::BadRecordPolicy::Skip),
            ..StepPolicy::default()
        }
    }
}
impl Transform for Check {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        if ctx.sequence() == 4 && self.0.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(StepError::transient("flaky upstream"));
        }
        let n = |r: &weave::RowRef<'_>| r.get("n").and_then(|v| v.as_int()).unwrap_or(0);
        let mut keep = Vec::with_capacity(batch.len());
        let mut dropped = 0;
        for r in batch.rows() {
            let v = n(&r);
            if v % 7 == 0 {
                ctx.reject(Rejected { reason: "multiple of 7".into(), record: Some(r.to_record()), origin: None });
                keep.push(false);
            } else if v % 5 == 0 {
                dropped += 1;
                keep.push(false);
            } else {
                keep.push(true);
            }
        }
        ctx.count_dropped("multiple of 5", dropped);
        Ok(batch.filter(&keep))
    }
}

struct Discard;
impl StepInfo for Discard {
    fn kind(&self) -> &str {
        "discard"
    }
    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
}
impl Sink for Discard {
    fn write(&mut self, _: &Batch, _: &mut StepContext) -> Result<(), StepError> {
        Ok(())
    }
    fn commit(&mut self, _: &mut StepContext) -> Result<(), StepError> {
        Ok(())
    }
}

#[test]
fn collected_metrics_equal_the_known_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Arc::new(MetricsCollector::new());
    let p = PipelineBuilder::new("counts")
        .resources(ResourceLimits { max_concurrent: Some(2), ..ResourceLimits::default() })
        .step("numbers", Step::Source(Box::new(Numbers(0))))
        .step("check", Step::Transform(Arc::new(Check(Arc::default()))))
        .step("out", Step::Sink(Box::new(Discard)))
        .build()
        .expect("valid");
    let opts = ExecOptions {
        subscribers: vec![metrics.clone()],
        quarantine: Some(dir.path().join("q.jsonl")),
        ..ExecOptions::default()
    };
    let summary = weave::run(p, opts).expect("run succeeds");

    // 0..100: multiples of 7 (15 of them, 0 included) are quarantined; of the rest,
    // multiples of 5 (20 minus the 3 that are also multiples of 7: 0, 35, 70) are dropped.
    let check = metrics.step("check").expect("check has metrics");
    assert_eq!(check.calls, 10);
    assert_eq!(check.records_in, 100);
    assert_eq!(check.quarantined, 15);
    assert_eq!(check.dropped.get("multiple of 5"), Some(&17));
    assert_eq!(check.records_out, 68);
    assert_eq!(check.retries, 2);
    assert_eq!(check.failures.get("transient"), Some(&2));
    assert_eq!(check.failures.get("fatal"), None);
    assert_eq!(check.latency.count(), 10);
    assert_eq!(metrics.step("numbers").expect("source").records_out, 100);
    assert_eq!(metrics.step("out").expect("sink").records_in, 68);

    // The executor's own summary agrees.
    let s = summary.step("check").expect("summary");
    assert_eq!((s.records_in, s.records_out, s.retries, s.quarantined), (100, 68, 2, 15));

    let stats = metrics.pipeline_stats();
    // 30 successful calls (10 per step), 2 failed ones.
    assert_eq!(stats.success_rate, 30.0 / 32.0);
    assert_eq!(stats.error_rates["check"], 2.0 / 12.0);
    assert_eq!(stats.resource_usage.threads, 2);
    let text = metrics.prometheus();
    assert!(text.contains("weave_step_retries_total{pipeline=\"counts\",step=\"check\"} 2"), "{text}");
    assert!(text.contains("weave_run_status{pipeline=\"counts\",status=\"succeeded\"} 1"), "{text}");
}

/// Reports requests it made of its own (as an LLM step does: 3 sent, 2 failed and retried),
/// and fails transiently once on batch 0 after one failed request.
struct Requests(Arc<AtomicU32>);
impl StepInfo for Requests {
    fn kind(&self) -> &str {
        "requests"
    }
    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
    fn policy(&self) -> StepPolicy {
        StepPolicy { retry: Some(quick_retries()), ..StepPolicy::default() }
    }
}
impl Transform for Requests {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        if ctx.sequence() == 0 && self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            ctx.count_requests(weave::RequestCounts { requests: 1, failed: 1, retries: 0 });
            return Err(StepError::transient("the provider is down"));
        }
        ctx.count_requests(weave::RequestCounts { requests: 3, failed: 2, retries: 2 });
        Ok(batch.clone())
    }
}

/// Regression: retries made inside a call (an LLM step's 429s and 5xx) were counted
/// nowhere. They count with the executor's retries of calls, once each, in the summary,
/// the metrics and the error rate; a failed attempt's requests count too.
#[test]
fn requests_retried_inside_calls_count_once_with_the_executors_retries() {
    let metrics = Arc::new(MetricsCollector::new());
    let p = PipelineBuilder::new("requests")
        .step("numbers", Step::Source(Box::new(Numbers(0))))
        .step("ask", Step::Transform(Arc::new(Requests(Arc::default()))))
        .step("out", Step::Sink(Box::new(Discard)))
        .build()
        .expect("valid");
    let opts = ExecOptions { subscribers: vec![metrics.clone()], ..ExecOptions::default() };
    let summary = weave::run(p, opts).expect("run succeeds");
    // One retry of a call, and 2 retried requests in each of the 10 calls.
    assert_eq!(summary.step("ask").expect("ask").retries, 21);
    let ask = metrics.step("ask").expect("ask");
    assert_eq!((ask.retries, ask.requests, ask.failed_requests), (21, 31, 21));
    // Failed attempts (1 call, 21 requests) over attempts (11 calls, 31 requests).
    assert_eq!(metrics.pipeline_stats().error_rates["ask"], 22.0 / 42.0);
    let text = metrics.prometheus();
    assert!(text.contains("weave_step_retries_total{pipeline=\"requests\",step=\"ask\"} 21\n"), "{text}");
    assert!(text.contains("weave_step_requests_total{pipeline=\"requests\",step=\"ask\"} 31\n"), "{text}");
}

/// Passes batches on, and fails at its end (as `validate` with `on_fail = "fail"`).
struct FailAtEnd;
impl StepInfo for FailAtEnd {
    fn kind(&self) -> &str {
        "fail_at_end"
    }
    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
}
impl weave::StatefulTransform for FailAtEnd {
    fn process(&mut self, batch: &Batch, _: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        out.push(batch.clone());
        Ok(())
    }
    fn finish(&mut self, _: &mut StepContext, _: &mut Vec<Batch>) -> Result<(), StepError> {
        Err(StepError::fatal("the records fell short"))
    }
}

/// Regression: the summary counted a sink's records as batches arrived, the metrics as
/// calls finished, so a run that failed while batches were in flight showed two numbers.
/// Both are now the fold of the same events.
#[test]
fn the_summary_and_the_metrics_agree_on_a_failed_run() {
    for threads in [1, 2, 4] {
        let metrics = Arc::new(MetricsCollector::new());
        let dir = tempfile::tempdir().expect("temp dir");
        let p = PipelineBuilder::new("fails")
            .resources(ResourceLimits { max_concurrent: Some(threads), ..ResourceLimits::default() })
            .step("numbers", Step::Source(Box::new(Numbers(0))))
            .step("check", Step::Transform(Arc::new(Check(Arc::default()))))
            .step("end", Step::StatefulTransform(Box::new(FailAtEnd)))
            .step("out", Step::Sink(Box::new(Discard)))
            .build()
            .expect("valid");
        let opts = ExecOptions {
            subscribers: vec![metrics.clone()],
            quarantine: Some(dir.path().join("q.jsonl")),
            ..ExecOptions::default()
        };
        let failed = weave::run(p, opts).expect_err("the run fails");
        for s in &failed.summary.steps {
            let m = metrics.step(&s.id).unwrap_or_default();
            let dropped: Vec<(String, u64)> = m.dropped.into_iter().collect();
            let mut ours = s.dropped.clone();
            ours.sort();
            assert_eq!(
                (s.records_in, s.records_out, s.retries, s.quarantined, s.bad_records, ours),
                (m.records_in, m.records_out, m.retries, m.quarantined, m.bad_records, dropped),
                "step {} with {threads} threads",
                s.id
            );
        }
        assert!(metrics.pipeline_stats().success_rate < 1.0);
    }
}
