//! Run events: what the executor reports as it goes, for the monitor, the progress bars
//! and the logs. Plain data, so that both sides depend only on `weave-core`.
//!
//! An event's serialised form is the run record's: each line of a run's `events.jsonl`
//! is one [`EventLine`], an [`Event`] with the time it came. It is a JSON object whose
//! `event` field names the variant in snake case (`run_started`, `batch_finished`, ...),
//! whose other fields are the variant's, by the same names, and whose `t` is the seconds
//! since the run started. Durations are seconds (a float); a step is its id; `seq` of a
//! cache event is `null` for a whole step; `figures` is an object from figure name to
//! value (`null` for a value that is not finite, read back as NaN); a status or a class
//! is its snake-case name. Keys are written in alphabetical order (the figures' too, so
//! they read back in name order).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ErrorClass;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step finished and the outputs were committed.
    Succeeded,
    /// A step failed; nothing was committed.
    Failed,
    /// The run was cancelled (Ctrl-C); nothing was committed.
    Cancelled,
}

/// One thing that happened during a run. Step ids are shared strings, so events are
/// cheap to make on the per-batch path. Serialised as the module documentation says.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The run started.
    RunStarted {
        /// The pipeline's name.
        pipeline: String,
        /// The number of steps.
        steps: usize,
        /// CPU worker threads.
        threads: usize,
        /// The memory budget in bytes.
        max_memory: u64,
    },
    /// The run ended.
    RunFinished {
        /// How.
        status: RunStatus,
        /// Wall time.
        #[serde(with = "seconds")]
        elapsed: Duration,
        /// The most bytes in flight at once.
        peak_memory: u64,
    },
    /// A step started.
    StepStarted {
        /// The step.
        step: Arc<str>,
    },
    /// A step finished all its work.
    StepFinished {
        /// The step.
        step: Arc<str>,
        /// Wall time from its start.
        #[serde(with = "seconds")]
        elapsed: Duration,
    },
    /// A step failed and the run is stopping.
    StepFailed {
        /// The step.
        step: Arc<str>,
        /// Why.
        error: String,
        /// The failure's class.
        class: ErrorClass,
    },
    /// One call of a step on one batch succeeded.
    BatchFinished {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// Records in (0 for a source).
        records_in: u64,
        /// Records out (0 for a sink).
        records_out: u64,
        /// How long the call took.
        #[serde(with = "seconds")]
        elapsed: Duration,
    },
    /// A call failed transiently and will be tried again.
    BatchRetried {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// The retry about to be made (1 for the first retry).
        attempt: u32,
        /// The wait before it.
        #[serde(with = "seconds")]
        delay: Duration,
        /// Why the call failed.
        error: String,
    },
    /// A call failed for good.
    BatchFailed {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// Why.
        error: String,
        /// The failure's class.
        class: ErrorClass,
    },
    /// A step dropped records on purpose (a filter).
    RecordsDropped {
        /// The step.
        step: Arc<str>,
        /// Why (the rule's name).
        reason: String,
        /// How many.
        count: u64,
    },
    /// A step set bad records aside into the quarantine file.
    RecordsQuarantined {
        /// The step.
        step: Arc<str>,
        /// How many.
        count: u64,
    },
    /// A call rejected bad records and the step's policy is `on_bad_record = "fail"`: the
    /// call failed, and the run stops.
    RecordsFailed {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// How many records the call rejected.
        count: u64,
    },
    /// Requests a call made of its own and retried itself (an LLM step's HTTP requests,
    /// each attempt counted, retries after a 429 or a 5xx included), reported through
    /// `StepContext::count_requests`. Sent once per call that made any, before the call's
    /// `BatchFinished` (or `BatchRetried`, `BatchFailed`).
    RequestsMade {
        /// The step.
        step: Arc<str>,
        /// The batch's sequence number.
        seq: u64,
        /// Attempts sent, retries included.
        requests: u64,
        /// Attempts that failed: those retried, and those given up on.
        failed: u64,
        /// Attempts sent again after a transient failure.
        retries: u64,
    },
    /// A step's output came from the cache instead of the step: the whole output replayed
    /// (`seq` is `None`), or the output of one input batch stored by an earlier run.
    CacheHit {
        /// The step.
        step: Arc<str>,
        /// The input batch's sequence number, for a per-batch hit.
        seq: Option<u64>,
        /// Batches taken from the cache.
        batches: u64,
        /// Records taken from the cache.
        records: u64,
    },
    /// A step whose output the cache keeps had to compute an input batch (or, with `seq`
    /// `None`, had no stored output at all).
    CacheMiss {
        /// The step.
        step: Arc<str>,
        /// The input batch's sequence number, for a per-batch miss.
        seq: Option<u64>,
    },
    /// A step was not run: its output is not needed, because every step after it has its
    /// output in the cache (or its files are up to date, for a sink).
    StepSkipped {
        /// The step.
        step: Arc<str>,
    },
    /// A step's numeric figures changed (`StepContext::set_stat`, `add_stat`): their
    /// values so far (tokens, requests and cost of an LLM step, a validator's pass rate).
    StepFigures {
        /// The step.
        step: Arc<str>,
        /// Every numeric figure of the step, by name, as it stands now.
        #[serde(with = "figures")]
        figures: Vec<(String, f64)>,
    },
    /// A step waited for the memory budget before it could pass a batch on.
    WaitedForMemory {
        /// The step.
        step: Arc<str>,
        /// The bytes it asked for.
        bytes: u64,
        /// How long it waited.
        #[serde(with = "seconds")]
        waited: Duration,
    },
}

impl Event {
    /// The step this event is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::RunStarted { .. } | Event::RunFinished { .. } => None,
            Event::StepStarted { step }
            | Event::StepFinished { step, .. }
            | Event::StepFailed { step, .. }
            | Event::BatchFinished { step, .. }
            | Event::BatchRetried { step, .. }
            | Event::BatchFailed { step, .. }
            | Event::RecordsDropped { step, .. }
            | Event::RecordsQuarantined { step, .. }
            | Event::RecordsFailed { step, .. }
            | Event::RequestsMade { step, .. }
            | Event::CacheHit { step, .. }
            | Event::CacheMiss { step, .. }
            | Event::StepSkipped { step }
            | Event::StepFigures { step, .. }
            | Event::WaitedForMemory { step, .. } => Some(step),
        }
    }
}

/// One line of a run record's `events.jsonl`: an event and when it came.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventLine {
    /// Seconds since the run started.
    pub t: f64,
    /// The event, its fields beside `t`.
    #[serde(flatten)]
    pub event: Event,
}

impl EventLine {
    /// The line, without its newline: the fields in alphabetical order, as records have
    /// always had them.
    pub fn to_line(&self) -> String {
        // Through a `serde_json::Value`, whose objects keep their keys sorted.
        serde_json::to_value(self).map(|v| v.to_string()).unwrap_or_default()
    }

    /// Reads one line of `events.jsonl`.
    pub fn parse(line: &str) -> Result<EventLine, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// A [`Duration`] as seconds, a float.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// A step's figures as an object from name to value, in their order; a value that is not
/// finite is written `null` (JSON has no such numbers) and read back as NaN.
mod figures {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(figures: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(figures.len()))?;
        for (name, value) in figures {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
        struct Figures;
        impl<'de> Visitor<'de> for Figures {
            type Value = Vec<(String, f64)>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object from figure name to number")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Option<f64>>()? {
                    out.push((name, value.unwrap_or(f64::NAN)));
                }
                Ok(out)
            }
        }
        d.deserialize_map(Figures)
    }
}

/// What a step did, counted from its events: the one place where events become the
/// counts that the run summary, the metrics, the run record and the reports show. The
/// executor counts a step's events with it as it sends them, and the monitor counts the
/// events it receives with it, so that no two of them can disagree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepCounts {
    /// Calls that finished (one per batch for most steps).
    pub calls: u64,
    /// Records taken in by the calls that finished.
    pub records_in: u64,
    /// Records passed on, the ones taken from the cache included.
    pub records_out: u64,
    /// Calls tried again after a transient failure, plus the requests that calls retried
    /// themselves.
    pub retries: u64,
    /// Failed call attempts by class (`transient` counts the retried ones; `bad_record`
    /// a call that stopped the run on a bad record).
    pub failures: BTreeMap<String, u64>,
    /// Requests the calls made of their own, retries included.
    pub requests: u64,
    /// Those requests that failed (retried, or given up on).
    pub failed_requests: u64,
    /// Records dropped on purpose, by reason, in the order the reasons first came.
    pub dropped: Vec<(String, u64)>,
    /// Bad records set aside into the quarantine file.
    pub quarantined: u64,
    /// Bad records that failed the run (`on_bad_record = "fail"`, or a call that failed on
    /// a bad record).
    pub failed_records: u64,
    /// Batches whose output came from the cache (a replayed step counts every batch).
    pub cache_hit_batches: u64,
    /// Records taken from the cache.
    pub cache_hit_records: u64,
    /// Input batches of a cached step that had to be computed.
    pub cache_misses: u64,
}

impl StepCounts {
    /// Counts one event (events about other steps are the caller's to filter).
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::BatchFinished { records_in, records_out, .. } => {
                self.calls += 1;
                self.records_in += records_in;
                self.records_out += records_out;
            }
            Event::BatchRetried { .. } => {
                self.retries += 1;
                self.fail(ErrorClass::Transient);
            }
            Event::BatchFailed { class, .. } => {
                self.fail(*class);
                if *class == ErrorClass::BadRecord {
                    self.failed_records += 1;
                }
            }
            Event::RecordsFailed { count, .. } => {
                self.fail(ErrorClass::BadRecord);
                self.failed_records += count;
            }
            Event::RequestsMade { requests, failed, retries, .. } => {
                self.requests += requests;
                self.failed_requests += failed;
                self.retries += retries;
            }
            Event::RecordsDropped { reason, count, .. } => match self.dropped.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += count,
                None => self.dropped.push((reason.clone(), *count)),
            },
            Event::RecordsQuarantined { count, .. } => self.quarantined += count,
            Event::CacheHit { batches, records, .. } => {
                self.cache_hit_batches += batches;
                self.cache_hit_records += records;
                self.records_out += records;
            }
            Event::CacheMiss { .. } => self.cache_misses += 1,
            _ => {}
        }
    }

    fn fail(&mut self, class: ErrorClass) {
        *self.failures.entry(class.name().to_owned()).or_default() += 1;
    }

    /// Bad records: set aside, or failing the run.
    pub fn bad_records(&self) -> u64 {
        self.quarantined + self.failed_records
    }

    /// Records dropped on purpose, over every reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// Attempts: calls that finished, failed call attempts, and requests made inside calls.
    pub fn attempts(&self) -> u64 {
        self.calls + self.failures.values().sum::<u64>() + self.requests
    }

    /// Failed attempts: failed call attempts (retried ones included) and failed requests.
    pub fn failed_attempts(&self) -> u64 {
        self.failures.values().sum::<u64>() + self.failed_requests
    }

    /// Failed attempts over all attempts (0 with none).
    pub fn error_rate(&self) -> f64 {
        match self.attempts() {
            0 => 0.0,
            n => self.failed_attempts() as f64 / n as f64,
        }
    }
}

/// Receives run events. Called from the executor's threads as things happen, so it must
/// be quick and must not block; a subscriber that needs to do slow work hands events to a
/// thread of its own.
pub trait Subscriber: Send + Sync {
    /// One event.
    fn on_event(&self, event: &Event);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event of every variant, with values that read back exactly.
    pub(crate) fn every_variant() -> Vec<Event> {
        let step: Arc<str> = "clean".into();
        let ms = |n: u64| Duration::from_millis(n);
        vec![
            Event::RunStarted { pipeline: "tickets".into(), steps: 4, threads: 2, max_memory: 2_000_000_000 },
            Event::RunFinished {
                status: RunStatus::Cancelled,
                elapsed: Duration::new(3, 250_000_001),
                peak_memory: 1 << 20,
            },
            Event::StepStarted { step: step.clone() },
            Event::StepFinished { step: step.clone(), elapsed: ms(1500) },
            Event::StepFailed { step: step.clone(), error: "no \"such\" file\n".into(), class: ErrorClass::Fatal },
            Event::BatchFinished { step: step.clone(), seq: 7, records_in: 100, records_out: 98, elapsed: ms(3) },
            Event::BatchRetried { step: step.clone(), seq: 7, attempt: 2, delay: ms(250), error: "429".into() },
            Event::BatchFailed { step: step.clone(), seq: 8, error: "bad".into(), class: ErrorClass::BadRecord },
            Event::RecordsDropped { step: step.clone(), reason: "min_chars".into(), count: 2 },
            Event::RecordsQuarantined { step: step.clone(), count: 3 },
            Event::RecordsFailed { step: step.clone(), seq: 9, count: 1 },
            Event::RequestsMade { step: step.clone(), seq: 9, requests: 5, failed: 2, retries: 1 },
            Event::CacheHit { step: step.clone(), seq: None, batches: 4, records: 400 },
            Event::CacheHit { step: step.clone(), seq: Some(2), batches: 1, records: 100 },
            Event::CacheMiss { step: step.clone(), seq: Some(3) },
            Event::CacheMiss { step: step.clone(), seq: None },
            Event::StepSkipped { step: step.clone() },
            Event::StepFigures {
                step: step.clone(),
                figures: vec![("cost_usd".into(), 0.125), ("tokens".into(), 1234.0)],
            },
            Event::WaitedForMemory { step, bytes: 4096, waited: ms(20) },
        ]
    }

    /// The variant's place in the declaration: a new variant must be added here, and to
    /// [`every_variant`].
    fn index(e: &Event) -> usize {
        match e {
            Event::RunStarted { .. } => 0,
            Event::RunFinished { .. } => 1,
            Event::StepStarted { .. } => 2,
            Event::StepFinished { .. } => 3,
            Event::StepFailed { .. } => 4,
            Event::BatchFinished { .. } => 5,
            Event::BatchRetried { .. } => 6,
            Event::BatchFailed { .. } => 7,
            Event::RecordsDropped { .. } => 8,
            Event::RecordsQuarantined { .. } => 9,
            Event::RecordsFailed { .. } => 10,
            Event::RequestsMade { .. } => 11,
            Event::CacheHit { .. } => 12,
            Event::CacheMiss { .. } => 13,
            Event::StepSkipped { .. } => 14,
            Event::StepFigures { .. } => 15,
            Event::WaitedForMemory { .. } => 16,
        }
    }

    #[test]
    fn every_event_reads_back_from_its_record_line_as_it_was_written() {
        let events = every_variant();
        let seen: std::collections::BTreeSet<usize> = events.iter().map(index).collect();
        assert_eq!(seen, (0..17).collect(), "every variant");
        let lines: Vec<String> = events.iter().map(|e| EventLine { t: 0.5, event: e.clone() }.to_line()).collect();
        // The record's line form, as records have always had it: sorted keys, seconds.
        assert_eq!(lines, GOLDEN);
        for (line, event) in lines.iter().zip(events) {
            assert_eq!(EventLine::parse(line).unwrap(), EventLine { t: 0.5, event }, "{line}");
        }
    }

    const GOLDEN: [&str; 19] = [
        r#"{"event":"run_started","max_memory":2000000000,"pipeline":"tickets","steps":4,"t":0.5,"threads":2}"#,
        r#"{"elapsed":3.250000001,"event":"run_finished","peak_memory":1048576,"status":"cancelled","t":0.5}"#,
        r#"{"event":"step_started","step":"clean","t":0.5}"#,
        r#"{"elapsed":1.5,"event":"step_finished","step":"clean","t":0.5}"#,
        r#"{"class":"fatal","error":"no \"such\" file\n","event":"step_failed","step":"clean","t":0.5}"#,
        r#"{"elapsed":0.003,"event":"batch_finished","records_in":100,"records_out":98,"seq":7,"step":"clean","t":0.5}"#,
        r#"{"attempt":2,"delay":0.25,"error":"429","event":"batch_retried","seq":7,"step":"clean","t":0.5}"#,
        r#"{"class":"bad_record","error":"bad","event":"batch_failed","seq":8,"step":"clean","t":0.5}"#,
        r#"{"count":2,"event":"records_dropped","reason":"min_chars","step":"clean","t":0.5}"#,
        r#"{"count":3,"event":"records_quarantined","step":"clean","t":0.5}"#,
        r#"{"count":1,"event":"records_failed","seq":9,"step":"clean","t":0.5}"#,
        r#"{"event":"requests_made","failed":2,"requests":5,"retries":1,"seq":9,"step":"clean","t":0.5}"#,
        r#"{"batches":4,"event":"cache_hit","records":400,"seq":null,"step":"clean","t":0.5}"#,
        r#"{"batches":1,"event":"cache_hit","records":100,"seq":2,"step":"clean","t":0.5}"#,
        r#"{"event":"cache_miss","seq":3,"step":"clean","t":0.5}"#,
        r#"{"event":"cache_miss","seq":null,"step":"clean","t":0.5}"#,
        r#"{"event":"step_skipped","step":"clean","t":0.5}"#,
        r#"{"event":"step_figures","figures":{"cost_usd":0.125,"tokens":1234.0},"step":"clean","t":0.5}"#,
        r#"{"bytes":4096,"event":"waited_for_memory","step":"clean","t":0.5,"waited":0.02}"#,
    ];
}
