//! Accounting a call: what it reported besides its output (drops, exclusions, figures,
//! requests, bad records), counted into the step's stats and checked against the policies.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use weave_core::{BadRecordLimit, BadRecordPolicy, Event, Record, Rejected, RequestCounts, StepContext, Value};

use crate::error::Error;
use crate::shared::{Shared, Stopped};
use crate::stages::StageStep;
use crate::summary::StepStats;

/// What a call reported besides its output, taken out of its context.
#[derive(Default)]
pub(crate) struct CallReport {
    pub(crate) seq: u64,
    pub(crate) dropped: Vec<(String, u64)>,
    pub(crate) excluded: Vec<(String, Record)>,
    pub(crate) figures: Vec<(String, Value)>,
    pub(crate) added: Vec<(String, Value)>,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) requests: RequestCounts,
}

impl CallReport {
    pub(crate) fn take(ctx: &mut StepContext) -> Self {
        CallReport {
            seq: ctx.sequence(),
            dropped: ctx.take_dropped(),
            excluded: ctx.take_excluded(),
            figures: ctx.take_stats(),
            added: ctx.take_added_stats(),
            rejected: ctx.take_rejected(),
            requests: ctx.take_requests(),
        }
    }

    /// What a call that failed spent, which counts although the call will be made again
    /// (or the run stops): the requests it made and the amounts it added to its figures
    /// (tokens and cost are paid for). What it produced (drops, bad records, set
    /// figures) does not count: the retry produces it again.
    pub(crate) fn spent(ctx: &mut StepContext) -> Self {
        CallReport {
            seq: ctx.sequence(),
            added: ctx.take_added_stats(),
            requests: ctx.take_requests(),
            ..CallReport::default()
        }
    }
}

impl Shared {
    /// The error for `bad` bad records past `limit`, in a step or (`step` `None`) the run.
    pub(crate) fn too_many_bad(
        &self,
        step: Option<&str>,
        bad: u64,
        handled: Option<u64>,
        limit: BadRecordLimit,
    ) -> Error {
        Error::TooManyBadRecords {
            step: step.map(str::to_owned),
            bad,
            handled,
            limit,
            quarantine: self.quarantine_path.clone(),
        }
    }

    /// Accounts what a call reported besides its output: dropped records (counted, and
    /// written to the exclusion file), figures, and rejected records (the bad-record policy).
    pub(crate) fn settle(&self, step: &StageStep, stats: &mut StepStats, ctx: &mut StepContext) -> Result<(), Stopped> {
        self.settle_parts(step, stats, CallReport::take(ctx))
    }

    pub(crate) fn settle_parts(&self, step: &StageStep, stats: &mut StepStats, rep: CallReport) -> Result<(), Stopped> {
        let seq = rep.seq;
        let RequestCounts { requests, failed, retries } = rep.requests;
        if requests > 0 {
            self.count(stats, Event::RequestsMade { step: Arc::clone(&step.id), seq, requests, failed, retries });
        }
        for (reason, n) in rep.dropped {
            self.count(stats, Event::RecordsDropped { step: Arc::clone(&step.id), reason, count: n });
        }
        if let Some(ex) = &step.exclusions
            && !rep.excluded.is_empty()
        {
            if let Err(e) = ex.write(&rep.excluded) {
                self.fail(e);
                return Err(Stopped);
            }
            stats.excluded += rep.excluded.len() as u64;
        }
        let changed = !(rep.figures.is_empty() && rep.added.is_empty());
        for (name, value) in rep.figures {
            stats.set_figure(name, value);
        }
        for (name, amount) in rep.added {
            stats.add_figure(name, amount);
        }
        if changed {
            let figures: Vec<(String, f64)> = stats
                .figures
                .iter()
                .filter_map(|(n, v)| match v {
                    Value::Int(i) => Some((n.clone(), *i as f64)),
                    Value::Float(x) => Some((n.clone(), *x)),
                    _ => None,
                })
                .collect();
            if !figures.is_empty() {
                let s = Arc::clone(&step.id);
                self.emit(|| Event::StepFigures { step: s, figures });
            }
        }
        self.reject(step, stats, seq, rep.rejected)
    }

    pub(crate) fn reject(
        &self,
        step: &StageStep,
        stats: &mut StepStats,
        seq: u64,
        rejected: Vec<Rejected>,
    ) -> Result<(), Stopped> {
        let Some(first) = rejected.first() else { return Ok(()) };
        let n = rejected.len() as u64;
        match step.on_bad_record {
            BadRecordPolicy::Fail => {
                let error = Error::BadRecord {
                    step: step.id.to_string(),
                    reason: first.reason.clone(),
                    origin: first.origin.clone(),
                };
                self.count(stats, Event::RecordsFailed { step: Arc::clone(&step.id), seq, count: n });
                self.fail(error);
                Err(Stopped)
            }
            BadRecordPolicy::Skip => match self.quarantine.write(&step.id, &rejected) {
                Ok(()) => {
                    self.count(stats, Event::RecordsQuarantined { step: Arc::clone(&step.id), count: n });
                    // A count is checked at once, so that the run stops without reading
                    // the rest; a share waits for the step's end.
                    let bad = stats.counts.bad_records();
                    if matches!(step.max_bad_records, BadRecordLimit::Count(_)) && step.max_bad_records.exceeded(bad, 0)
                    {
                        self.fail(self.too_many_bad(Some(&step.id), bad, None, step.max_bad_records));
                        return Err(Stopped);
                    }
                    let total = self.bad_records.fetch_add(n, Ordering::Relaxed) + n;
                    if matches!(self.max_bad_records, BadRecordLimit::Count(_))
                        && self.max_bad_records.exceeded(total, 0)
                    {
                        self.fail(self.too_many_bad(None, total, None, self.max_bad_records));
                        return Err(Stopped);
                    }
                    Ok(())
                }
                Err(e) => {
                    self.fail(e);
                    Err(Stopped)
                }
            },
        }
    }

    /// Checks a step that ended against its `max_bad_records`.
    pub(crate) fn check_bad_records(&self, step: &StageStep, stats: &StepStats) {
        let (bad, handled) = (stats.counts.bad_records(), stats.handled(step.source));
        if step.max_bad_records.exceeded(bad, handled) {
            let handled = matches!(step.max_bad_records, BadRecordLimit::Share(_)).then_some(handled);
            self.fail(self.too_many_bad(Some(&step.id), bad, handled, step.max_bad_records));
        }
    }
}
