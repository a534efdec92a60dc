//! The `concat` step: several inputs, one output.

use weave_core::{Batch, CanonicalConfig, Merge, Params, Shape, Step, StepContext, StepError, StepInfo, StepKind};

/// The `concat` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "concat",
        Shape::Merge,
        "pass on the records of every input, input by input in the order of `after`",
        [] as [&str; 0],
        build,
    )
});

/// Passes on every batch of every input unchanged. The executor feeds the inputs in the
/// order of `after`, so the output order does not depend on timing.
#[derive(Debug)]
pub struct Concat {
    config: CanonicalConfig,
}

fn build(p: &Params) -> Option<Step> {
    Some(Step::Merge(Box::new(Concat { config: p.canonical() })))
}

impl StepInfo for Concat {
    fn fields_vary(&self, _input: bool) -> bool {
        // Its inputs are other sources, whose records may have other fields.
        true
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn estimated_cost(&self) -> f64 {
        0.1
    }

    /// A shard's concatenation holds its share of every input: the job's output has every
    /// record (in shard order, then each shard's own order).
    fn runs_per_shard(&self) -> bool {
        true
    }
}

impl Merge for Concat {
    fn process(
        &mut self,
        _input: usize,
        batch: &Batch,
        _ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        out.push(batch.clone());
        Ok(())
    }
}
