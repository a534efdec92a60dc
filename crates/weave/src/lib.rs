//! Weave builds, runs and watches data-generation pipelines: load → clean → augment →
//! validate → export, as a DAG.
//!
//! This crate is the facade: it re-exports the core model and traits from `weave-core`
//! (data model, step traits, DAG, pipeline file), the executor from `weave-exec`, the
//! built-in steps from `weave-steps`, the files a run writes and who owns them from
//! `weave-fs`, and the run session from `weave-session` ([`Session`]: one run composed
//! as `weave run` composes it), and adds [`Orchestrator`], the one-line way to
//! build and run a pipeline, so that one dependency gives the whole thing. Depend on a `weave-*`
//! crate directly to take only a part.
//!
//! ```
//! let text = r#"
//! [[step]]
//! id = "load"
//! kind = "load_csv"
//! path = "raw.csv"
//!
//! [[step]]
//! id = "clean"
//! kind = "clean"
//! fields = ["text"]
//! rules = ["trim", "collapse_whitespace", { min_chars = 20 }]
//!
//! [[step]]
//! id = "export"
//! kind = "export_jsonl"
//! path = "out.jsonl"
//! "#;
//! let pipeline = weave::Pipeline::from_file_text("pipeline.toml", text, &weave::registry()).unwrap();
//! let dag = pipeline.dag();
//! let order: Vec<&str> = dag.topological_order().iter().map(|&i| dag.node(i).id.as_str()).collect();
//! assert_eq!(order, ["load", "clean", "export"]);
//! ```
#![deny(missing_docs)]

pub use weave_core::*;
pub use weave_exec::{
    CacheUse, ExecOptions, LogSubscriber, MemoryBudget, RunError, RunFiles, RunSummary, StepStats, cache_roles, run,
};
pub use weave_fs::{
    Liveness, Owner, TempFile, host_name, remove_live_temporaries, sweep_dead_temporaries, write_atomically,
};
pub use weave_monitor::{
    Alert, AlertManager, Histogram, MetricsCollector, PipelineStats, ResourceUsage, RunEntry, RunInfo, RunRecorder,
    StepMetrics, kill_alert_commands, list_runs, read_events, report_html,
};
pub use weave_session::{AnswerBasis, CostError, CostPlan, StepCost, cost_plan};
pub use weave_session::{
    CACHE_DIR_ENV, Labels, MemorySink, MemorySinkHandle, MemorySource, PipelineFile, RunFailure, RunHandle, RunOptions,
    RunOutcome, Session, SessionError, cache_dir_for, cache_plan, cache_status_text, default_quarantine, exchange_dirs,
    plan_json, planned_roles, runs_dir,
};
pub use weave_steps::registry;

mod orchestrator;
pub use orchestrator::{LLM_GRACE, Orchestrator, settle_llm_requests};

/// The executor's error type.
pub type ExecError = weave_exec::Error;

/// The content-addressed cache: store, keys, codec, file index.
pub mod cache {
    pub use weave_cache::*;
}

/// The built-in steps and the functions they are made of.
pub mod steps {
    pub use weave_steps::*;
}

/// The README's Rust examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
