//! Weave's monitoring: the executor's run events turned into metrics.
//!
//! [`MetricsCollector`] is a [`Subscriber`](weave_core::Subscriber): subscribe it to a
//! run and read, while the run goes or afterwards, each step's counters (calls, records
//! in and out, retries, failures by class, drops by reason, quarantined records, time
//! waiting for memory), call latency quantiles from a [`Histogram`], the write-up's
//! [`PipelineStats`] (success rate, average durations, resource usage, error rates), and
//! the same as Prometheus text.
//!
//! ```
//! use weave_core::{Event, Subscriber};
//! let metrics = weave_monitor::MetricsCollector::new();
//! metrics.on_event(&Event::BatchFinished {
//!     step: "clean".into(), seq: 0, records_in: 10, records_out: 8,
//!     elapsed: std::time::Duration::from_millis(3),
//! });
//! assert_eq!(metrics.step("clean").unwrap().records_out, 8);
//! assert_eq!(metrics.pipeline_stats().success_rate, 1.0);
//! ```
//!
//! [`AlertManager`] evaluates the pipeline file's `[[alert]]` rules on the same events
//! (error rate over a window, step duration, retries, memory pressure, run failure) and
//! sends each alert once to the log, a JSONL file, or a command with a timeout.
//!
//! [`RunRecorder`] keeps the run record, `.weave/runs/<run-id>/events.jsonl` and
//! `report.json`, written as the run goes; [`list_runs`] reads them back, marking a run
//! whose process died as interrupted.
//!
//! [`report_html`] renders a run record as one self-contained HTML page.
#![deny(missing_docs)]

mod alerts;
mod collector;
mod histogram;
mod html;
mod record;

pub use alerts::{Alert, AlertManager, kill_alert_commands};
pub use collector::{MetricsCollector, PipelineStats, ResourceUsage, StepMetrics};
pub use histogram::{Histogram, PROMETHEUS_BOUNDS};
pub use html::report_html;
pub use record::{RunEntry, RunInfo, RunRecorder, list_runs, read_events};
