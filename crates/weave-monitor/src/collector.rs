//! The metrics collector: run events in, per-step metrics, pipeline stats and Prometheus
//! text out.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use weave_core::{Event, RunStatus, StepCounts, Subscriber};

use crate::histogram::Histogram;

/// What one step did, as the events told it. The counts are the fold of the step's events
/// by [`StepCounts::apply`], as in the executor's run summary.
#[derive(Debug, Clone, Default)]
pub struct StepMetrics {
    /// The step's id.
    pub step: String,
    /// Calls that succeeded (one per batch for most steps).
    pub calls: u64,
    /// Records taken in.
    pub records_in: u64,
    /// Records passed on (those taken from the cache included).
    pub records_out: u64,
    /// Calls tried again after a transient failure, and requests that calls retried
    /// themselves (an LLM step's).
    pub retries: u64,
    /// Failed calls by class (`transient` counts the retried ones too; `bad_record` a call
    /// that stopped the run on a bad record).
    pub failures: BTreeMap<String, u64>,
    /// Requests that calls made of their own (an LLM step's HTTP requests), retries
    /// included.
    pub requests: u64,
    /// Those that failed (retried, or given up on).
    pub failed_requests: u64,
    /// Records dropped on purpose, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Records set aside into the quarantine file.
    pub quarantined: u64,
    /// Bad records: set aside, or failing the run.
    pub bad_records: u64,
    /// Time spent waiting for the memory budget.
    pub waited_for_memory: Duration,
    /// Batches whose output came from the cache (a replayed step counts every batch).
    pub cache_hits: u64,
    /// Records taken from the cache.
    pub cache_hit_records: u64,
    /// Input batches of a cached step that had to be computed.
    pub cache_misses: u64,
    /// `"replayed"` (whole output from the cache), `"skipped"` (not needed), or empty
    /// when the step ran.
    pub cache_use: &'static str,
    /// How long each successful call took.
    pub latency: Histogram,
    /// The step's numeric figures as they last stood (an LLM step's tokens and cost).
    pub figures: BTreeMap<String, f64>,
    started: Option<Instant>,
    /// From the step's start to its end.
    pub wall: Option<Duration>,
    counts: StepCounts,
}

impl StepMetrics {
    /// Records passed on per second of the step's wall time (or of the time so far).
    pub fn records_per_second(&self) -> f64 {
        let wall = self.wall.or_else(|| self.started.map(|s| s.elapsed())).unwrap_or_default();
        if wall.is_zero() { 0.0 } else { self.records_out.max(self.records_in) as f64 / wall.as_secs_f64() }
    }

    /// Failed attempts over all attempts: an attempt is a call (retried ones included), or
    /// a request that a call made of its own ([`StepCounts::error_rate`]).
    pub fn error_rate(&self) -> f64 {
        self.counts.error_rate()
    }

    /// The public counts, filled from the events counted.
    fn with_counts(mut self) -> Self {
        let c = &self.counts;
        self.calls = c.calls;
        self.records_in = c.records_in;
        self.records_out = c.records_out;
        self.retries = c.retries;
        self.failures.clone_from(&c.failures);
        self.requests = c.requests;
        self.failed_requests = c.failed_requests;
        self.dropped = c.dropped.iter().cloned().collect();
        self.quarantined = c.quarantined;
        self.bad_records = c.bad_records();
        self.cache_hits = c.cache_hit_batches;
        self.cache_hit_records = c.cache_hit_records;
        self.cache_misses = c.cache_misses;
        self
    }
}

/// The run as a whole.
#[derive(Debug, Clone, Default)]
struct RunMetrics {
    pipeline: String,
    threads: usize,
    max_memory: u64,
    peak_memory: u64,
    started: Option<Instant>,
    elapsed: Option<Duration>,
    status: Option<RunStatus>,
}

#[derive(Debug, Default)]
struct State {
    run: RunMetrics,
    steps: Vec<StepMetrics>,
    index: HashMap<Arc<str>, usize>,
}

impl State {
    fn step(&mut self, id: &str) -> &mut StepMetrics {
        let i = match self.index.get(id) {
            Some(&i) => i,
            None => {
                self.steps.push(StepMetrics { step: id.to_owned(), ..StepMetrics::default() });
                self.index.insert(id.into(), self.steps.len() - 1);
                self.steps.len() - 1
            }
        };
        &mut self.steps[i]
    }
}

/// Collects run events into metrics. Subscribe it to a run; read it while the run goes
/// or afterwards.
#[derive(Debug, Default)]
pub struct MetricsCollector {
    state: Mutex<State>,
}

/// `get_pipeline_stats()` of the original write-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineStats {
    /// The share of attempts that succeeded, over every step: 1 − failed attempts / all
    /// attempts, where an attempt is a step call or a request a call makes of its own (an
    /// LLM step's), and a failed one is a call or request that failed (retried or not) or
    /// a call that stopped the run on a bad record (1.0 with no attempt).
    pub success_rate: f64,
    /// Bad records over every step: set aside into the quarantine file, or failing the run.
    pub bad_records: u64,
    /// The mean duration of a successful call, over every step.
    pub avg_call_duration: Duration,
    /// Each step's mean call duration.
    pub avg_durations: BTreeMap<String, Duration>,
    /// Memory and threads.
    pub resource_usage: ResourceUsage,
    /// Each step's failed attempts over all its attempts.
    pub error_rates: BTreeMap<String, f64>,
}

/// How much of the limits the run used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceUsage {
    /// The most bytes in flight at once.
    pub peak_memory: u64,
    /// The budget.
    pub max_memory: u64,
    /// `peak_memory / max_memory`.
    pub memory_share: f64,
    /// CPU worker threads.
    pub threads: usize,
    /// Time steps spent waiting for the memory budget, summed.
    pub waited_for_memory: Duration,
}

impl MetricsCollector {
    /// An empty collector.
    pub fn new() -> Self {
        MetricsCollector::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Each step's metrics, in the order the steps first appeared.
    pub fn steps(&self) -> Vec<StepMetrics> {
        self.lock().steps.iter().cloned().map(StepMetrics::with_counts).collect()
    }

    /// The metrics of step `id`.
    pub fn step(&self, id: &str) -> Option<StepMetrics> {
        self.lock().steps.iter().find(|s| s.step == id).cloned().map(StepMetrics::with_counts)
    }

    /// Success rate, average durations, resource usage and error rates.
    pub fn pipeline_stats(&self) -> PipelineStats {
        let st = self.lock();
        let calls: u64 = st.steps.iter().map(|s| s.counts.calls).sum();
        let attempts: u64 = st.steps.iter().map(|s| s.counts.attempts()).sum();
        let failed: u64 = st.steps.iter().map(|s| s.counts.failed_attempts()).sum();
        let total: Duration = st.steps.iter().map(|s| s.latency.sum()).sum();
        let waited = st.steps.iter().map(|s| s.waited_for_memory).sum();
        PipelineStats {
            success_rate: if attempts == 0 { 1.0 } else { 1.0 - failed as f64 / attempts as f64 },
            bad_records: st.steps.iter().map(|s| s.counts.bad_records()).sum(),
            avg_call_duration: if calls == 0 { Duration::ZERO } else { total / calls as u32 },
            avg_durations: st.steps.iter().map(|s| (s.step.clone(), s.latency.mean())).collect(),
            resource_usage: ResourceUsage {
                peak_memory: st.run.peak_memory,
                max_memory: st.run.max_memory,
                memory_share: if st.run.max_memory == 0 {
                    0.0
                } else {
                    st.run.peak_memory as f64 / st.run.max_memory as f64
                },
                threads: st.run.threads,
                waited_for_memory: waited,
            },
            error_rates: st.steps.iter().map(|s| (s.step.clone(), s.error_rate())).collect(),
        }
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4): a `# HELP`
    /// and `# TYPE` line for each family, counters named `_total`, call durations as a
    /// histogram (`_bucket{le}`, `_sum`, `_count`), as `promtool check metrics` wants.
    /// Steps come in order of their ids, so that two runs of one pipeline write their
    /// series in the same order whichever step's thread started first.
    pub fn prometheus(&self) -> String {
        let st = self.lock();
        let p = escape(&st.run.pipeline);
        let mut steps: Vec<StepMetrics> = st.steps.iter().cloned().map(StepMetrics::with_counts).collect();
        steps.sort_by(|a, b| a.step.cmp(&b.step));
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{{pipeline=\"{p}\"{labels}}} {value}");
            }
        };
        let per_step = |f: &dyn Fn(&StepMetrics) -> String| -> Vec<(String, String)> {
            steps.iter().map(|s| (format!(",step=\"{}\"", escape(&s.step)), f(s))).collect()
        };
        family("weave_step_calls_total", "counter", "Step calls that succeeded.", per_step(&|s| s.calls.to_string()));
        family(
            "weave_step_records_in_total",
            "counter",
            "Records a step took in.",
            per_step(&|s| s.records_in.to_string()),
        );
        family(
            "weave_step_records_out_total",
            "counter",
            "Records a step passed on, those taken from the cache included.",
            per_step(&|s| s.records_out.to_string()),
        );
        family(
            "weave_step_retries_total",
            "counter",
            "Calls retried after a transient failure, and requests that calls retried themselves (an LLM step's).",
            per_step(&|s| s.retries.to_string()),
        );
        family(
            "weave_step_requests_total",
            "counter",
            "Requests that calls made of their own (an LLM step's HTTP requests), retries included.",
            per_step(&|s| s.requests.to_string()),
        );
        family(
            "weave_step_failed_requests_total",
            "counter",
            "Requests made inside calls that failed (retried, or given up on).",
            per_step(&|s| s.failed_requests.to_string()),
        );
        family(
            "weave_step_quarantined_records_total",
            "counter",
            "Records set aside into the quarantine file.",
            per_step(&|s| s.quarantined.to_string()),
        );
        family(
            "weave_step_bad_records_total",
            "counter",
            "Bad records: set aside into the quarantine file, or failing the run.",
            per_step(&|s| s.bad_records.to_string()),
        );
        family(
            "weave_step_cache_hit_batches_total",
            "counter",
            "Batches whose output came from the cache instead of the step.",
            per_step(&|s| s.cache_hits.to_string()),
        );
        family(
            "weave_step_cache_hit_records_total",
            "counter",
            "Records taken from the cache instead of computed.",
            per_step(&|s| s.cache_hit_records.to_string()),
        );
        family(
            "weave_step_records_per_second",
            "gauge",
            "Records per second of the step's wall time.",
            per_step(&|s| format!("{:.3}", s.records_per_second())),
        );
        family(
            "weave_step_memory_wait_seconds_total",
            "counter",
            "Time spent waiting for the memory budget.",
            per_step(&|s| format!("{:.6}", s.waited_for_memory.as_secs_f64())),
        );
        let mut failures = Vec::new();
        let mut dropped = Vec::new();
        let mut figures = Vec::new();
        for s in &steps {
            let step = escape(&s.step);
            for (name, v) in &s.figures {
                figures.push((format!(",step=\"{step}\",figure=\"{}\"", escape(name)), number(*v)));
            }
            for (class, n) in &s.failures {
                failures.push((format!(",step=\"{step}\",class=\"{}\"", escape(class)), n.to_string()));
            }
            for (reason, n) in &s.dropped {
                dropped.push((format!(",step=\"{step}\",reason=\"{}\"", escape(reason)), n.to_string()));
            }
        }
        family("weave_step_failures_total", "counter", "Failed step calls by class.", failures);
        family("weave_step_dropped_records_total", "counter", "Records dropped on purpose, by reason.", dropped);
        // A histogram is three series under one family name: cumulative buckets, the sum
        // and the count.
        let name = "weave_step_call_duration_seconds";
        let _ =
            writeln!(out, "# HELP {name} How long a step call took (calls that succeeded).\n# TYPE {name} histogram");
        for s in &steps {
            let step = escape(&s.step);
            let labels = format!("pipeline=\"{p}\",step=\"{step}\"");
            for (le, n) in s.latency.cumulative() {
                let le = if le.is_finite() { number(le) } else { "+Inf".to_owned() };
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_sum{{{labels}}} {:.6}", s.latency.sum().as_secs_f64());
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.latency.count());
        }
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{{pipeline=\"{p}\"{labels}}} {value}");
            }
        };
        family(
            "weave_step_figure",
            "gauge",
            "A step's numeric figures as they stand (an LLM step's requests, tokens and cost).",
            figures,
        );
        let run = &st.run;
        family(
            "weave_run_peak_memory_bytes",
            "gauge",
            "The most bytes in flight at once.",
            vec![(String::new(), run.peak_memory.to_string())],
        );
        family(
            "weave_run_max_memory_bytes",
            "gauge",
            "The memory budget.",
            vec![(String::new(), run.max_memory.to_string())],
        );
        let elapsed = run.elapsed.or_else(|| run.started.map(|s| s.elapsed())).unwrap_or_default();
        family(
            "weave_run_elapsed_seconds",
            "gauge",
            "Wall time of the run so far.",
            vec![(String::new(), format!("{:.3}", elapsed.as_secs_f64()))],
        );
        let status = match run.status {
            None => "running",
            Some(RunStatus::Succeeded) => "succeeded",
            Some(RunStatus::Failed) => "failed",
            Some(RunStatus::Cancelled) => "cancelled",
        };
        family(
            "weave_run_status",
            "gauge",
            "1 for the run's current status.",
            vec![(format!(",status=\"{status}\""), "1".to_owned())],
        );
        out
    }
}

/// A number as Prometheus reads it: `NaN`, `+Inf` and `-Inf` spelled its way.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() }
    } else {
        format!("{v}")
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Subscriber for MetricsCollector {
    fn on_event(&self, event: &Event) {
        let mut st = self.lock();
        match event {
            Event::RunStarted { pipeline, threads, max_memory, .. } => {
                st.run = RunMetrics {
                    pipeline: pipeline.clone(),
                    threads: *threads,
                    max_memory: *max_memory,
                    started: Some(Instant::now()),
                    ..RunMetrics::default()
                };
            }
            Event::RunFinished { status, elapsed, peak_memory } => {
                st.run.status = Some(*status);
                st.run.elapsed = Some(*elapsed);
                st.run.peak_memory = *peak_memory;
            }
            Event::StepStarted { step } => st.step(step).started = Some(Instant::now()),
            Event::StepFinished { step, elapsed } => st.step(step).wall = Some(*elapsed),
            Event::StepFailed { .. } => {}
            Event::WaitedForMemory { step, waited, .. } => st.step(step).waited_for_memory += *waited,
            Event::StepSkipped { step } => st.step(step).cache_use = "skipped",
            Event::StepFigures { step, figures } => st.step(step).figures = figures.iter().cloned().collect(),
            other => {
                let Some(step) = other.step() else { return };
                let s = st.step(step);
                s.counts.apply(other);
                match other {
                    Event::BatchFinished { elapsed, .. } => s.latency.record(*elapsed),
                    Event::CacheHit { seq: None, .. } => s.cache_use = "replayed",
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::ErrorClass;

    fn id(s: &str) -> Arc<str> {
        s.into()
    }

    fn feed(c: &MetricsCollector) {
        let e = [
            Event::RunStarted { pipeline: "p \"q\"".into(), steps: 2, threads: 2, max_memory: 1000 },
            Event::StepStarted { step: id("load") },
            Event::BatchFinished {
                step: id("load"),
                seq: 0,
                records_in: 0,
                records_out: 10,
                elapsed: Duration::from_millis(2),
            },
            Event::BatchRetried { step: id("clean"), seq: 0, attempt: 1, delay: Duration::ZERO, error: "x".into() },
            Event::BatchFinished {
                step: id("clean"),
                seq: 0,
                records_in: 10,
                records_out: 7,
                elapsed: Duration::from_millis(4),
            },
            Event::RecordsDropped { step: id("clean"), reason: "min_chars".into(), count: 3 },
            Event::BatchFailed { step: id("clean"), seq: 1, error: "boom".into(), class: ErrorClass::Fatal },
            Event::StepFigures { step: id("clean"), figures: vec![("prompt_tokens".into(), 120.0)] },
            Event::StepFigures {
                step: id("clean"),
                figures: vec![("prompt_tokens".into(), 250.0), ("cost".into(), 0.0125)],
            },
            Event::RunFinished { status: RunStatus::Failed, elapsed: Duration::from_millis(9), peak_memory: 250 },
        ];
        for ev in &e {
            c.on_event(ev);
        }
    }

    #[test]
    fn counts_follow_the_events() {
        let c = MetricsCollector::new();
        feed(&c);
        let clean = c.step("clean").unwrap();
        assert_eq!((clean.calls, clean.records_in, clean.records_out, clean.retries), (1, 10, 7, 1));
        assert_eq!(clean.failures, BTreeMap::from([("fatal".to_owned(), 1), ("transient".to_owned(), 1)]));
        assert_eq!(clean.dropped, BTreeMap::from([("min_chars".to_owned(), 3)]));
        let stats = c.pipeline_stats();
        assert_eq!(stats.success_rate, 0.5);
        assert_eq!(stats.error_rates["clean"], 2.0 / 3.0);
        assert_eq!(stats.avg_call_duration, Duration::from_millis(3));
        assert_eq!(stats.resource_usage.memory_share, 0.25);
    }

    /// Regression: series came in the order the steps' threads first reported, so two
    /// runs of one pipeline wrote their metrics files in different orders.
    #[test]
    fn steps_are_written_in_one_order_whichever_started_first() {
        let text = |order: [&str; 3]| {
            let c = MetricsCollector::new();
            c.on_event(&Event::RunStarted { pipeline: "p".into(), steps: 3, threads: 2, max_memory: 1000 });
            for step in order {
                c.on_event(&Event::StepStarted { step: id(step) });
            }
            c.prometheus()
        };
        let a = text(["load", "clean", "export"]);
        assert_eq!(a, text(["export", "load", "clean"]));
        let clean = a.find("step=\"clean\"").expect("clean is there");
        let load = a.find("step=\"load\"").expect("load is there");
        assert!(clean < load, "{a}");
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let c = MetricsCollector::new();
        feed(&c);
        let text = c.prometheus();
        assert!(text.contains("weave_step_records_out_total{pipeline=\"p \\\"q\\\"\",step=\"clean\"} 7\n"), "{text}");
        assert!(
            text.contains("weave_step_failures_total{pipeline=\"p \\\"q\\\"\",step=\"clean\",class=\"fatal\"} 1\n")
        );
        assert!(text.contains("weave_run_status{pipeline=\"p \\\"q\\\"\",status=\"failed\"} 1\n"));
        // The figures as they last stood.
        assert!(
            text.contains("weave_step_figure{pipeline=\"p \\\"q\\\"\",step=\"clean\",figure=\"prompt_tokens\"} 250\n"),
            "{text}"
        );
        assert!(text.contains("figure=\"cost\"} 0.0125\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "not a number in {line:?}");
        }
    }
}
