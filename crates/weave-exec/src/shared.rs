//! What every thread of a run shares: the cancel flag, the memory budget, the first
//! failure, the subscribers, and the edges' messages with the ways to send and receive them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use weave_core::{BadRecordLimit, Batch, Event, Subscriber};

use crate::budget::{MemoryBudget, Permit};
use crate::error::Error;
use crate::options::TICK;
use crate::quarantine::Quarantine;
use crate::summary::StepStats;

/// one-to-one steps) and its share of the memory budget.
#[derive(Clone)]
pub(crate) struct Msg {
    pub(crate) seq: u64,
    pub(crate) batch: Batch,
    pub(crate) permit: Arc<Permit>,
}

/// State every thread of a run shares.
pub(crate) struct Shared {
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) budget: MemoryBudget,
    pub(crate) subscribers: Vec<Arc<dyn Subscriber>>,
    pub(crate) seed: u64,
    pub(crate) quarantine: Quarantine,
    /// Where the quarantine file is, for messages.
    pub(crate) quarantine_path: Option<PathBuf>,
    /// `[pipeline] max_bad_records`, and the bad records set aside so far over every step.
    pub(crate) max_bad_records: BadRecordLimit,
    pub(crate) bad_records: AtomicU64,
    pub(crate) failure: Mutex<Option<Error>>,
    pub(crate) gpus: Semaphore,
    /// Counts batches received and sent, for the stall watch.
    pub(crate) progress: AtomicU64,
}

impl Shared {
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if self.subscribers.is_empty() {
            return;
        }
        let e = event();
        for s in &self.subscribers {
            s.on_event(&e);
        }
    }

    /// Counts `event` into the stats of the step it is about, and sends it to the
    /// subscribers: the one way a step's counts change, so that the run summary is the
    /// same fold of the same events as the metrics.
    pub(crate) fn count(&self, stats: &mut StepStats, event: Event) {
        stats.counts.apply(&event);
        for s in &self.subscribers {
            s.on_event(&event);
        }
    }

    /// Records the run's failure (the first one wins) and stops every thread.
    pub(crate) fn fail(&self, err: Error) {
        let mut f = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.is_none() {
            if let Some(step) = err.step() {
                let (step, error, class): (Arc<str>, _, _) = (step.into(), err.to_string(), err.class());
                self.emit(|| Event::StepFailed { step, error, class });
            }
            *f = Some(err);
        }
        drop(f);
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the next message; `None` at the end of the input or when cancelled.
    pub(crate) fn recv(&self, rx: &Receiver<Msg>) -> Option<Msg> {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(m) => {
                    self.progress.fetch_add(1, Ordering::Relaxed);
                    return Some(m);
                }
                Err(RecvTimeoutError::Timeout) if !self.cancelled() => {}
                Err(_) => return None,
            }
        }
    }

    /// The next message on any of `inputs` but those marked `ended`, with the input's
    /// index: `Some((i, None))` when input `i` has ended, `None` when the run is cancelled
    /// (or no input is left).
    pub(crate) fn recv_any(&self, inputs: &[Receiver<Msg>], ended: &[bool]) -> Option<(usize, Option<Msg>)> {
        let open: Vec<usize> = (0..inputs.len()).filter(|&i| !ended[i]).collect();
        if open.is_empty() {
            return None;
        }
        let mut select = crossbeam_channel::Select::new();
        for &i in &open {
            select.recv(&inputs[i]);
        }
        loop {
            match select.select_timeout(TICK) {
                Ok(op) => {
                    let i = open[op.index()];
                    return Some(match op.recv(&inputs[i]) {
                        Ok(m) => {
                            self.progress.fetch_add(1, Ordering::Relaxed);
                            (i, Some(m))
                        }
                        Err(_) => (i, None),
                    });
                }
                Err(_) if self.cancelled() => return None,
                Err(_) => {}
            }
        }
    }

    /// Sends `msg` to every consumer; `Err` when cancelled or a consumer is gone. The last
    /// consumer gets the message itself, so that with one consumer nothing else holds its
    /// share of the memory budget (which the consumer can then hand on to its output).
    pub(crate) fn send(&self, outputs: &[Sender<Msg>], msg: Msg) -> Result<(), Stopped> {
        let mut msg = Some(msg);
        for (i, tx) in outputs.iter().enumerate() {
            let Some(mut m) = (if i + 1 == outputs.len() { msg.take() } else { msg.clone() }) else {
                break;
            };
            loop {
                match tx.send_timeout(m, TICK) {
                    Ok(()) => {
                        self.progress.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(SendTimeoutError::Timeout(back)) if !self.cancelled() => m = back,
                    Err(_) => return Err(Stopped),
                }
            }
        }
        Ok(())
    }

    /// Sleeps for `d`, waking early when cancelled.
    pub(crate) fn sleep(&self, d: Duration) -> Result<(), Stopped> {
        let end = Instant::now() + d;
        while !self.cancelled() {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(TICK));
        }
        Err(Stopped)
    }

    /// The message carrying `batch`, charged to the budget without waiting. When `input`
    /// (the batch it was made from) has no other holder, its share of the budget is handed
    /// over rather than charged anew, so a step that passes data on does not count it twice.
    pub(crate) fn charged(&self, seq: u64, batch: Batch, input: Option<Arc<Permit>>) -> Msg {
        let bytes = batch.memory_size() as u64;
        let permit = match input.map(Arc::try_unwrap) {
            Some(Ok(mut p)) => {
                p.resize(bytes);
                p
            }
            // Shared with other consumers (or none): release ours, then charge.
            other => {
                drop(other);
                self.budget.charge(bytes)
            }
        };
        Msg { seq, batch, permit: Arc::new(permit) }
    }
}

/// The run is stopping (the reason is in `Shared::failure` or the cancel flag).
#[derive(Debug)]
pub(crate) struct Stopped;

/// A counting semaphore for GPUs, held per call.
pub(crate) struct Semaphore {
    free: Mutex<u32>,
    cv: Condvar,
}

impl Semaphore {
    /// A semaphore with `n` slots.
    pub(crate) fn new(n: u32) -> Self {
        Semaphore { free: Mutex::new(n), cv: Condvar::new() }
    }

    pub(crate) fn acquire(&self, n: u32, cancel: &AtomicBool) -> Option<SemaphoreGuard<'_>> {
        if n == 0 {
            return Some(SemaphoreGuard { sem: self, n });
        }
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *free < n {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            free = self.cv.wait_timeout(free, TICK).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        *free -= n;
        Some(SemaphoreGuard { sem: self, n })
    }
}

pub(crate) struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
    n: u32,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            *self.sem.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += self.n;
            self.sem.cv.notify_all();
        }
    }
}
