//! In-memory ends: a source of batches the caller gives, and a sink that hands batches
//! back, so that a run can start from and end in memory (a Python caller's data frames).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use weave_core::{Batch, CanonicalConfig, Sink, Source, Step, StepContext, StepError, StepInfo};

/// A source that yields the batches it was given, in order.
///
/// Built from batches held in memory ([`MemorySource::new`]), its cache key covers their
/// content (a blake3 of their columns' bytes), so a later run with other data is never served
/// an earlier run's output. Built from an iterator ([`MemorySource::streamed`],
/// [`MemorySource::try_streamed`]), whose batches are not known before the run, it is
/// never taken from the cache.
pub struct MemorySource {
    batches: Batches,
    /// The blake3 of the batches' content, when they are known up front.
    content: Option<String>,
}

enum Batches {
    Held(VecDeque<Batch>),
    Iter(Box<dyn Iterator<Item = Result<Batch, StepError>> + Send>),
}

impl std::fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySource").field("content", &self.content).finish_non_exhaustive()
    }
}

impl MemorySource {
    /// A source of these batches. Their content is hashed now, for the cache key: their
    /// columns' bytes as they are ([`Batch::content_bytes`]), not an encoding of them (a
    /// million rows from Python took a quarter of a second to encode).
    pub fn new(batches: Vec<Batch>) -> MemorySource {
        let mut hasher = blake3::Hasher::new();
        for b in &batches {
            b.content_bytes(&mut |bytes| {
                hasher.update(bytes);
            });
        }
        let content = weave_cache::KeyBuilder::new("weave-session/memory-source/2")
            .part("batches", hasher.finalize().as_bytes())
            .number("count", batches.len() as u64)
            .finish()
            .to_hex();
        MemorySource { batches: Batches::Held(batches.into()), content: Some(content) }
    }

    /// A source of the batches `iter` yields as the run asks for them (a channel's
    /// receiver, a generator). It is never taken from the cache.
    pub fn streamed(iter: impl IntoIterator<Item = Batch, IntoIter: Send + 'static>) -> MemorySource {
        MemorySource::try_streamed(iter.into_iter().map(Ok))
    }

    /// [`MemorySource::streamed`] from an iterator that may fail (a stream read from another
    /// library as the run goes): an error it yields is the step's, as a loader's would be.
    pub fn try_streamed(
        iter: impl IntoIterator<Item = Result<Batch, StepError>, IntoIter: Send + 'static>,
    ) -> MemorySource {
        MemorySource { batches: Batches::Iter(Box::new(iter.into_iter())), content: None }
    }

    /// The source as a step, for [`PipelineBuilder::step`](weave_core::PipelineBuilder::step).
    pub fn into_step(self) -> Step {
        Step::Source(Box::new(self))
    }
}

impl StepInfo for MemorySource {
    fn kind(&self) -> &str {
        "memory_source"
    }

    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::from_bytes(self.content.clone().unwrap_or_default().into_bytes())
    }

    fn cacheable(&self) -> bool {
        self.content.is_some()
    }

    fn estimated_cost(&self) -> f64 {
        0.1
    }
}

impl Source for MemorySource {
    fn next_batch(&mut self, _ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        Ok(match &mut self.batches {
            Batches::Held(q) => q.pop_front(),
            Batches::Iter(it) => it.next().transpose()?,
        })
    }
}

/// A sink that hands the batches it receives back to the caller, through the
/// [`MemorySinkHandle`] made with it. Like every sink, it shows its output only when the
/// run succeeds: a failed or cancelled run leaves the handle empty.
///
/// It is never taken from the cache: a cached sink is skipped, and this one's output is
/// the batches themselves, which only a run can hand over.
#[derive(Debug)]
pub struct MemorySink {
    pending: Vec<Batch>,
    committed: Arc<Mutex<Vec<Batch>>>,
}

/// The caller's end of a [`MemorySink`].
#[derive(Debug, Clone)]
pub struct MemorySinkHandle {
    committed: Arc<Mutex<Vec<Batch>>>,
}

impl MemorySink {
    /// A sink and the handle that collects what it receives.
    pub fn new() -> (MemorySink, MemorySinkHandle) {
        let committed = Arc::new(Mutex::new(Vec::new()));
        (MemorySink { pending: Vec::new(), committed: Arc::clone(&committed) }, MemorySinkHandle { committed })
    }

    /// The sink as a step, for [`PipelineBuilder::step`](weave_core::PipelineBuilder::step).
    pub fn into_step(self) -> Step {
        Step::Sink(Box::new(self))
    }
}

impl MemorySinkHandle {
    /// Takes the batches of the run that succeeded, in the order of the data, leaving the
    /// handle empty.
    pub fn take(&self) -> Vec<Batch> {
        std::mem::take(&mut *self.committed.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl StepInfo for MemorySink {
    fn kind(&self) -> &str {
        "memory_sink"
    }

    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }

    fn cacheable(&self) -> bool {
        false
    }

    fn estimated_cost(&self) -> f64 {
        0.1
    }
}

impl Sink for MemorySink {
    fn write(&mut self, batch: &Batch, _ctx: &mut StepContext) -> Result<(), StepError> {
        self.pending.push(batch.clone());
        Ok(())
    }

    fn commit(&mut self, _ctx: &mut StepContext) -> Result<(), StepError> {
        self.committed.lock().unwrap_or_else(PoisonError::into_inner).append(&mut self.pending);
        Ok(())
    }

    fn abort(&mut self) {
        self.pending.clear();
    }
}
