//! `weave plan --cost`: the LLM requests a run would send and what they would cost, step
//! by step, before anything is sent.
//!
//! The cache plan says which steps run at all (a step whose output is cached sends
//! nothing). For the others, the requests themselves are needed, and they are made from
//! the records that reach the step: so the pipeline is run dry, in this process, without
//! touching the cache's step outputs — its sinks replaced by a sink that writes nothing,
//! every bad record set aside rather than failing the run, its LLM steps built with
//! `BuildOptions::dry_run`, which render every prompt, look it up in the answer cache as a
//! run does, and count the requests the cache lacks instead of sending them (weave-llm's
//! `estimate.rs`: prompt tokens are a quarter of the messages' bytes plus their framing).
//! The answer's tokens are estimated from, in order: the mean of the step's answers the
//! cache had in the dry run; the mean of the answers of the step's last recorded run
//! that asked for any (`completion_tokens / answers` in its report); `max_tokens`; 256.
//! Prices are the provider's `prompt_price_per_million` and
//! `completion_price_per_million`, less `batch_discount` with `batch = true`.
//!
//! A dry run reads every input and runs every step before the LLM steps, so it takes as
//! long as that part of a run. An LLM step after another sees stand-in answers (of the
//! expected length) for the requests that are not cached, so its own estimate follows
//! the estimate before it.

use std::path::Path;

use weave_core::{
    BadRecordLimit, BadRecordPolicy, Batch, BuildOptions, CacheMode, CanonicalConfig, ConfTable, Diagnostics, Pipeline,
    PipelineSpec, Registry, Shape, Sink, Step, StepContext, StepError, StepInfo, StepKind, Value,
};
use weave_exec::{CacheUse, ExecOptions};

use crate::files::PipelineFile;

/// The kind that takes the place of every sink in a dry run.
const DRY_SINK: &str = "__weave_dry_run_sink";

/// The answer's tokens assumed when nothing better is known (weave-llm's assumption for
/// its rate budget too).
const ASSUMED_ANSWER_TOKENS: u64 = 256;

/// Why a cost plan could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CostError {
    /// The pipeline has errors.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The cache could not be read.
    #[error("cannot read the cache: {0}")]
    Cache(String),
    /// The dry run failed (an input that cannot be read, a step that fails).
    #[error("the dry run failed: {0}")]
    Run(String),
}

/// Where an answer's token estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerBasis {
    /// The mean of the step's answers the cache had.
    CachedAnswers,
    /// The mean of the answers of the step's last recorded run.
    LastRun,
    /// The step's `max_tokens`.
    MaxTokens,
    /// Nothing known: 256 tokens.
    Assumed,
}

impl AnswerBasis {
    /// How a plan names it.
    pub fn label(self) -> &'static str {
        match self {
            AnswerBasis::CachedAnswers => "mean of the cached answers",
            AnswerBasis::LastRun => "mean of the last run's answers",
            AnswerBasis::MaxTokens => "max_tokens",
            AnswerBasis::Assumed => "assumed 256 a request",
        }
    }
}

/// What one LLM step of a run would send and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCost {
    /// The step's id.
    pub step: String,
    /// Its kind.
    pub kind: String,
    /// Its output is in the cache: it does not run, and sends nothing.
    pub output_cached: bool,
    /// Requests the answer cache lacks: what the run would send.
    pub new_requests: u64,
    /// Requests the answer cache answers.
    pub cache_hits: u64,
    /// The new requests' prompt tokens, estimated.
    pub prompt_tokens: u64,
    /// Their answers' tokens, estimated.
    pub completion_tokens: u64,
    /// Where the answers' estimate comes from.
    pub answer_basis: AnswerBasis,
    /// The provider the step calls.
    pub provider: String,
    /// Whether it goes through the Batch API.
    pub batch: bool,
    /// What the new requests would cost, when the provider has prices.
    pub cost: Option<f64>,
}

/// The cost plan of a run: one entry per LLM step, in the order the steps run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostPlan {
    /// The LLM steps.
    pub steps: Vec<StepCost>,
}

impl CostPlan {
    /// The whole run's estimated cost, when any step has prices.
    pub fn total_cost(&self) -> Option<f64> {
        let priced: Vec<f64> = self.steps.iter().filter_map(|s| s.cost).collect();
        (!priced.is_empty()).then(|| priced.iter().sum())
    }

    /// The plan as JSON (for `weave plan --cost --format json`).
    pub fn to_json(&self) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "step": s.step,
                    "kind": s.kind,
                    "output_cached": s.output_cached,
                    "new_requests": s.new_requests,
                    "cache_hits": s.cache_hits,
                    "prompt_tokens": s.prompt_tokens,
                    "completion_tokens": s.completion_tokens,
                    "answer_basis": s.answer_basis.label(),
                    "provider": s.provider,
                    "batch": s.batch,
                    "cost": s.cost,
                })
            })
            .collect();
        serde_json::json!({"steps": steps, "total_cost": self.total_cost()})
    }
}

/// The cost plan of `file`'s pipeline, built through `registry` with `options`, against
/// the cache in `cache_dir`, with the run records in `runs_dir` for the answers' lengths.
pub fn cost_plan(
    file: &PipelineFile,
    registry: &Registry,
    options: &BuildOptions,
    cache_dir: &Path,
    runs_dir: &Path,
) -> Result<CostPlan, CostError> {
    let options = BuildOptions { cache_dir: Some(cache_dir.to_path_buf()), no_cache: false, ..options.clone() };
    let real = file.build(registry, &options).map_err(CostError::Invalid)?;
    let cplan = crate::cache_plan(&real, cache_dir, &weave_cache::CacheOptions::default())
        .map_err(|e| CostError::Cache(e.to_string()))?;
    let roles = crate::planned_roles(&real, &cplan);
    let dag = real.dag();
    let runs = |id: &str| dag.index_of(id).is_none_or(|i| roles[i] == CacheUse::Ran);

    let (mut spec, _) = PipelineSpec::parse(&file.path, &file.text).map_err(CostError::Invalid)?;
    let mut registry = registry.clone();
    for s in &mut spec.steps {
        if registry.get(&s.kind).is_some_and(|k| k.shape == Shape::Sink) {
            s.kind = DRY_SINK.to_owned();
            s.kind_location = None;
            s.params = ConfTable::default();
        }
        // A record the stand-in answers cannot make is set aside, not the end of the plan.
        s.on_bad_record = Some(BadRecordPolicy::Skip);
        s.max_bad_records = None;
        s.exclusions = None;
        s.cache = CacheMode::Off;
    }
    spec.max_bad_records = BadRecordLimit::Share(1.0);
    registry.register(StepKind::new(
        DRY_SINK,
        Shape::Sink,
        "what a dry run writes instead of a sink: nothing",
        Vec::<&str>::new(),
        |_| Some(Step::Sink(Box::new(Nothing))),
    ));
    let dry = Pipeline::from_spec_with(spec, &registry, &BuildOptions { dry_run: true, ..options })
        .map_err(CostError::Invalid)?;
    let summary =
        weave_exec::run(dry, ExecOptions::default()).map_err(|e| CostError::Run(weave_core::error_line(&e.error)))?;
    let last_runs = weave_monitor::list_runs(runs_dir).unwrap_or_default();

    let mut steps = Vec::new();
    for st in &summary.steps {
        let fig = |name: &str| st.figures.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let int = |name: &str| match fig(name) {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        let Some(Value::Str(provider)) = fig("planned_provider") else { continue };
        let p = real.llm.get(provider.as_str());
        let output_cached = !runs(&st.id);
        let (new, hits) = if output_cached { (0, 0) } else { (int("planned_requests"), int("planned_cache_hits")) };
        let max_tokens = match fig("planned_max_tokens") {
            Some(Value::Str(m)) => m.parse::<u64>().ok(),
            _ => None,
        };
        let last_mean = last_runs.iter().rev().find_map(|r| {
            let steps = r.report["steps"].as_array()?;
            let f = &steps.iter().find(|s| s["step"] == st.id.as_str())?["figures"];
            let answers = f["answers"].as_u64().filter(|&a| a > 0)?;
            Some(f["completion_tokens"].as_u64()?.div_ceil(answers))
        });
        let (mean, answer_basis) = if hits > 0 {
            (int("planned_hit_completion_tokens").div_ceil(hits), AnswerBasis::CachedAnswers)
        } else if let Some(m) = last_mean {
            (m, AnswerBasis::LastRun)
        } else if let Some(m) = max_tokens {
            (m, AnswerBasis::MaxTokens)
        } else {
            (ASSUMED_ANSWER_TOKENS, AnswerBasis::Assumed)
        };
        let prompt_tokens = if output_cached { 0 } else { int("planned_prompt_tokens") };
        let completion_tokens = new * mean;
        let batch = p.is_some_and(|p| p.batch);
        let cost =
            p.filter(|p| p.prompt_price_per_million.is_some() || p.completion_price_per_million.is_some()).map(|p| {
                let paid = if p.batch { 1.0 - p.batch_discount.unwrap_or(0.5) } else { 1.0 };
                (prompt_tokens as f64 * p.prompt_price_per_million.unwrap_or(0.0)
                    + completion_tokens as f64 * p.completion_price_per_million.unwrap_or(0.0))
                    / 1e6
                    * paid
            });
        steps.push(StepCost {
            step: st.id.clone(),
            kind: st.kind.clone(),
            output_cached,
            new_requests: new,
            cache_hits: hits,
            prompt_tokens,
            completion_tokens,
            answer_basis,
            provider: provider.clone(),
            batch,
            cost,
        });
    }
    Ok(CostPlan { steps })
}

/// A sink that writes nothing: a dry run's stand-in for every sink.
struct Nothing;

impl StepInfo for Nothing {
    fn kind(&self) -> &str {
        DRY_SINK
    }

    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
}

impl Sink for Nothing {
    fn write(&mut self, _: &Batch, _: &mut StepContext) -> Result<(), StepError> {
        Ok(())
    }

    fn commit(&mut self, _: &mut StepContext) -> Result<(), StepError> {
        Ok(())
    }
}
