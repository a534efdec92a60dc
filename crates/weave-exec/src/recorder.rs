//! Storing a step's output in its cache entry as the step makes it.

use std::sync::Arc;

use weave_core::{Batch, StepCache};

use crate::stages::StageStep;

/// failure to store only costs the cache: it is logged once and the step goes on without.
pub(crate) struct Recorder {
    cache: Option<Arc<dyn StepCache>>,
    step: Arc<str>,
    parts: u64,
}

impl Recorder {
    pub(crate) fn new(step: &StageStep, cache: Option<Arc<dyn StepCache>>) -> Self {
        Recorder { cache, step: Arc::clone(&step.id), parts: 0 }
    }

    /// Whether the output is being stored.
    pub(crate) fn active(&self) -> bool {
        self.cache.is_some()
    }

    /// The output stored for input part `part` by an earlier run.
    pub(crate) fn load(&self, part: u64) -> Option<Vec<(u64, Batch)>> {
        self.cache.as_ref()?.load(part)
    }

    /// Stores one part (the output made from one input batch) as part number `part`.
    pub(crate) fn store_at(&mut self, part: u64, out: &[(u64, Batch)]) {
        let Some(c) = &self.cache else { return };
        if let Err(e) = c.store(part, out) {
            log::warn!("step \"{}\": cannot store its output in the cache, going on without: {e}", self.step);
            self.cache = None;
        }
        self.parts = self.parts.max(part + 1);
    }

    /// Stores the next part.
    pub(crate) fn store(&mut self, out: &[(u64, Batch)]) {
        self.store_at(self.parts, out);
    }

    /// Marks the output complete.
    pub(crate) fn finish(&mut self, parts: Option<u64>) {
        let Some(c) = self.cache.take() else { return };
        if let Err(e) = c.finish(parts.unwrap_or(self.parts)) {
            log::warn!("step \"{}\": cannot complete its cache entry: {e}", self.step);
        }
    }
}
