//! Weave's executor: runs a checked [`Pipeline`](weave_core::Pipeline) fast, within a
//! memory budget, through transient failures, and never hanging.
//!
//! Each step (or chain of fused stateless transforms) runs as a stage on a thread of its
//! own, wired to the others with bounded crossbeam channels that carry
//! [`Batch`](weave_core::Batch)es. Stateless transforms process batches in parallel on a
//! rayon pool of `max_concurrent` threads and the stage puts them back in input order, so
//! the output is the same whatever the thread count. Sources wait for room in the
//! [`MemoryBudget`] before passing a batch on. Failed calls are retried per the step's
//! policy; a call past its timeout is abandoned; the first fatal error, or the cancel
//! flag (Ctrl-C), stops every stage. Sinks commit only when every step succeeded.
//!
//! The executor knows no concrete step: only the traits in `weave-core`.
//!
//! ```
//! use weave_core::{Batch, CanonicalConfig, PipelineBuilder, Record, Sink, Source, Step, StepContext, StepError, StepInfo};
//!
//! struct Numbers(u64);
//! impl StepInfo for Numbers {
//!     fn kind(&self) -> &str { "numbers" }
//!     fn config(&self) -> CanonicalConfig { CanonicalConfig::default() }
//! }
//! impl Source for Numbers {
//!     fn next_batch(&mut self, _: &mut StepContext) -> Result<Option<Batch>, StepError> {
//!         if self.0 == 3 { return Ok(None) }
//!         self.0 += 1;
//!         Ok(Some(Batch::from_records(&[Record::new().with("n", self.0 as i64)])))
//!     }
//! }
//! struct Count(std::sync::Arc<std::sync::atomic::AtomicU64>);
//! impl StepInfo for Count {
//!     fn kind(&self) -> &str { "count" }
//!     fn config(&self) -> CanonicalConfig { CanonicalConfig::default() }
//! }
//! impl Sink for Count {
//!     fn write(&mut self, b: &Batch, _: &mut StepContext) -> Result<(), StepError> {
//!         self.0.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
//!         Ok(())
//!     }
//!     fn commit(&mut self, _: &mut StepContext) -> Result<(), StepError> { Ok(()) }
//! }
//! let seen = std::sync::Arc::default();
//! let pipeline = PipelineBuilder::new("demo")
//!     .step("numbers", Step::Source(Box::new(Numbers(0))))
//!     .step("count", Step::Sink(Box::new(Count(std::sync::Arc::clone(&seen)))))
//!     .build()
//!     .unwrap();
//! let summary = weave_exec::run(pipeline, weave_exec::ExecOptions::default()).unwrap();
//! assert_eq!(summary.step("count").unwrap().records_in, 3);
//! ```
#![deny(missing_docs)]

mod account;
mod arenas;
mod budget;
mod caller;
mod cpu;
mod error;
mod fields;
mod files;
mod log;
mod options;
mod quarantine;
mod recorder;
mod run;
mod shared;
mod stage;
mod stages;
mod summary;

pub use budget::{MemoryBudget, Permit};
pub use error::Error;
pub use files::RunFiles;
pub use log::LogSubscriber;
pub use options::{ExecOptions, MAX_CHANNEL_CAPACITY};
pub use run::run;
pub use stage::max_abandoned_calls;
pub use stages::cache_roles;
pub use summary::{CacheUse, RunError, RunSummary, StepStats};
