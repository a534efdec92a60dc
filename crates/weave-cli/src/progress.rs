//! Progress while a run goes: a bar per step on a terminal, periodic log lines otherwise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use weave::{Event, MetricsCollector, Subscriber};

/// A progress bar per step, made up front in the DAG's order: records so far, records
/// per second, time, and a word on retries or the end.
pub(crate) struct Bars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl Bars {
    pub(crate) fn new(steps: &[String]) -> Bars {
        let style = ProgressStyle::with_template(
            "{spinner} {prefix:<16} {human_pos:>12} records {rate:>12}  {elapsed:>4} {msg}",
        )
        .map(|s| {
            s.with_key("rate", |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", st.per_sec());
            })
        })
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let bars = steps
            .iter()
            .map(|id| {
                let b = multi.add(ProgressBar::no_length().with_style(style.clone()).with_prefix(id.clone()));
                b.enable_steady_tick(Duration::from_millis(200));
                (id.clone(), b)
            })
            .collect();
        Bars { multi, bars }
    }

    /// Clears the bars, so that the summary table prints cleanly.
    pub(crate) fn finish(&self) {
        for b in self.bars.values() {
            b.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

impl Subscriber for Bars {
    fn on_event(&self, event: &Event) {
        let Some(step) = event.step() else { return };
        let Some(bar) = self.bars.get(step) else { return };
        match event {
            Event::BatchFinished { records_in, records_out, .. } => bar.inc(*records_out.max(records_in)),
            Event::BatchRetried { attempt, .. } => bar.set_message(format!("retry {attempt}")),
            Event::StepFinished { .. } => {
                bar.set_message("done");
                bar.disable_steady_tick();
            }
            Event::StepFailed { .. } => bar.set_message("failed"),
            _ => {}
        }
    }
}

/// When stderr is not a terminal: a log line per unfinished step every `every`, until
/// the returned sender is dropped.
pub(crate) fn log_lines(metrics: Arc<MetricsCollector>, every: Duration) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
            for s in metrics.steps().iter().filter(|s| s.wall.is_none()) {
                log::info!(
                    "progress: step \"{}\": {} records in, {} out, {:.0} records/s, {} retries",
                    s.step,
                    s.records_in,
                    s.records_out,
                    s.records_per_second(),
                    s.retries
                );
            }
        }
    });
    tx
}
