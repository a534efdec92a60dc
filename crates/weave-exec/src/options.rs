//! What a run is given besides the pipeline: the options, and the bounds they are held to.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use weave_core::{StepCache, Subscriber};

/// How often blocked threads look at the cancel flag, and the coordinator at deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// The most batches an edge may hold: a channel's slots are allocated when it is made, and
/// the memory budget, not the channels, is what bounds the data in flight.
pub const MAX_CHANNEL_CAPACITY: usize = 1024;

/// Settings of one run that are not in the pipeline file.
#[derive(Clone)]
pub struct ExecOptions {
    /// Batches an edge holds before its producer waits (default 4; from 1 to
    /// [`MAX_CHANNEL_CAPACITY`], a value outside is taken to the nearer bound with a
    /// warning).
    pub channel_capacity: usize,
    /// Who hears the run's events.
    pub subscribers: Vec<Arc<dyn Subscriber>>,
    /// Set it to stop the run (Ctrl-C); every thread notices within a few milliseconds.
    pub cancel: Arc<AtomicBool>,
    /// Where records set aside by `on_bad_record = "skip"` go. Without it, a step with that
    /// policy that rejects a record fails the run rather than lose the record.
    pub quarantine: Option<PathBuf>,
    /// How long the run may go with no batch moving and no step working before it is
    /// stopped as stalled (default 10 s): a deadlock is an error, never a hang.
    pub stall_timeout: Duration,
    /// The cache entries of steps, by step id. A step whose entry is complete is not run:
    /// its output is replayed, or, for a sink, it is skipped; a step that nothing needs
    /// any more (every step after it is served by the cache) is skipped. Other steps with
    /// an entry store their output as they go, and a stateless one skips the input
    /// batches an interrupted run already stored.
    pub caches: HashMap<String, Arc<dyn StepCache>>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            channel_capacity: 4,
            subscribers: Vec::new(),
            cancel: Arc::default(),
            quarantine: None,
            stall_timeout: Duration::from_secs(10),
            caches: HashMap::new(),
        }
    }
}

impl std::fmt::Debug for ExecOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOptions")
            .field("channel_capacity", &self.channel_capacity)
            .field("subscribers", &self.subscribers.len())
            .field("quarantine", &self.quarantine)
            .field("caches", &self.caches.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `n` taken into `1..=max`, with a warning when it was outside.
pub(crate) fn within(what: &str, n: usize, max: usize) -> usize {
    let b = n.clamp(1, max);
    if b != n {
        log::warn!("{what} is {n}; the run uses {b} (it must be from 1 to {max})");
    }
    b
}
