//! A subscriber that turns run events into log lines.

use weave_core::{Event, RunStatus, Subscriber, format_bytes, format_duration};

/// Logs run events through the `log` crate: the run and each step at `info`, retries,
/// drops and quarantined records at `warn` or `info`, each batch at `trace`. A step's
/// failure is logged at `debug` without its message: the run's error carries it, and the
/// caller reports it.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSubscriber;

impl Subscriber for LogSubscriber {
    fn on_event(&self, event: &Event) {
        match event {
            Event::RunStarted { pipeline, steps, threads, max_memory } => log::info!(
                "run of \"{pipeline}\" started: {steps} steps, {threads} worker threads, memory budget {}",
                format_bytes(*max_memory)
            ),
            Event::RunFinished { status, elapsed, peak_memory } => {
                let how = match status {
                    RunStatus::Succeeded => "succeeded",
                    RunStatus::Failed => "failed",
                    RunStatus::Cancelled => "was cancelled",
                };
                log::info!(
                    "run {how} in {}, peak memory in flight {}",
                    format_duration(*elapsed),
                    format_bytes(*peak_memory)
                );
            }
            Event::StepStarted { step } => log::debug!("step \"{step}\" started"),
            Event::StepFinished { step, elapsed } => {
                log::info!("step \"{step}\" finished in {}", format_duration(*elapsed));
            }
            // The run's error says why, once: whoever runs the pipeline reports it (the CLI
            // prints it); a log line repeating it would print it twice.
            Event::StepFailed { step, class, .. } => log::debug!("step \"{step}\" failed ({class}); the run stops"),
            Event::BatchFinished { step, seq, records_in, records_out, elapsed } => log::trace!(
                "step \"{step}\" batch {seq}: {records_in} records in, {records_out} out, {}",
                format_duration(*elapsed)
            ),
            Event::BatchRetried { step, seq, attempt, delay, error } => {
                log::warn!("step \"{step}\" batch {seq}: {error}; retry {attempt} in {}", format_duration(*delay))
            }
            Event::BatchFailed { step, seq, error, class } => {
                log::debug!("step \"{step}\" batch {seq} failed ({class}): {error}");
            }
            Event::RecordsDropped { step, reason, count } => {
                log::debug!("step \"{step}\" dropped {count} records: {reason}");
            }
            Event::RecordsQuarantined { step, count } => {
                log::warn!("step \"{step}\" set {count} bad records aside in the quarantine file");
            }
            Event::WaitedForMemory { step, bytes, waited } => log::debug!(
                "step \"{step}\" waited {} for {} of memory budget",
                format_duration(*waited),
                format_bytes(*bytes)
            ),
            _ => log::trace!("{event:?}"),
        }
    }
}
