//! A run of a pipeline, composed once for every front end.
//!
//! A [`Session`] takes a checked [`Pipeline`] (and the [`PipelineFile`] it was read from,
//! when there is one) and the caller's [`RunOptions`], and does everything a run does:
//! it checks the files the run will write before anything is touched, clears the old
//! quarantine file, plans the run against the cache (keys, pins, `--refresh`), starts the
//! run record, runs the pipeline with the metrics collector, the `[[alert]]` rules and the
//! caller's own subscribers, then keeps the set-aside records of the steps taken from the
//! cache, remembers the steps' keys, writes the lineage of the files read and written into
//! `report.json`, and writes the metrics file. [`Session::start`] returns a [`RunHandle`]:
//! cancel the run, read its live [`MetricsCollector`], and [`wait`](RunHandle::wait) for
//! the [`RunOutcome`].
//!
//! The `weave` command is one front end of it (terminal rendering and Ctrl-C); the facade's
//! `Orchestrator` is another, so that a run from Rust writes the same run record, metrics
//! and alerts as one from the command line.
//!
//! ```no_run
//! use weave_session::{PipelineFile, RunOptions, Session};
//! # fn registry() -> weave_core::Registry { weave_core::Registry::new() }
//! let file = PipelineFile::read("pipeline.toml").unwrap();
//! let options = RunOptions::default();
//! let pipeline = file.build(&registry(), &options.build_options()).unwrap();
//! let handle = Session::new(pipeline, Some(file), options).unwrap().start().unwrap();
//! let outcome = handle.wait();
//! assert!(outcome.result.is_ok());
//! ```
#![deny(missing_docs)]

mod cost;
mod files;
mod lineage;
mod memory;
mod plan;
mod session;

pub use cost::{AnswerBasis, CostError, CostPlan, StepCost, cost_plan};
pub use files::{CACHE_DIR_ENV, PipelineFile, cache_dir_for, default_quarantine, runs_dir};
pub use memory::{MemorySink, MemorySinkHandle, MemorySource};
pub use plan::{cache_status_text, plan_json};
pub use session::{
    Labels, RunFailure, RunHandle, RunOptions, RunOutcome, Session, SessionError, cache_plan, exchange_dirs,
    planned_roles,
};
