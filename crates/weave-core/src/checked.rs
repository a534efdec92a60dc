//! A step with a declared `schema` (see [`crate::declared`]): the step as built, wrapped so
//! that the records it puts out (a sink: the records it is given to write) are checked
//! against the schema, batch by batch, within the same call. A record that does not fit
//! is one of the call's bad records, so it goes where the step's other bad records go and
//! is counted with them; the records that fit flow on.
//!
//! The wrapper is made only for a step that declares a schema, so a step without one runs
//! as it always did, at no cost.

use std::sync::Arc;

use crate::batch::Batch;
use crate::declared::DeclaredSchema;
use crate::params::Params;
use crate::step::{
    CanonicalConfig, FilePattern, Merge, Prepare, Prepared, Sink, Source, StatefulTransform, Step, StepContext,
    StepInfo, Transform,
};
use crate::{Resources, StepError, StepPolicy};

/// `step` as built from `p`, its output checked against the step's declared schema unless
/// its kind took the schema to check itself ([`Params::declared_schema`]).
pub fn with_declared_schema(step: Step, p: &Params) -> Step {
    match p.schema_left() {
        Some(schema) => checked(step, schema),
        None => step,
    }
}

/// `step`, its output checked against `schema`.
pub fn checked(step: Step, schema: Arc<DeclaredSchema>) -> Step {
    match step {
        Step::Source(inner) => Step::Source(Box::new(Checked { inner, schema })),
        Step::Transform(inner) => Step::Transform(Arc::new(Checked { inner, schema })),
        Step::StatefulTransform(inner) => Step::StatefulTransform(Box::new(Checked { inner, schema })),
        Step::Merge(inner) => Step::Merge(Box::new(Checked { inner, schema })),
        Step::Sink(inner) => Step::Sink(Box::new(Checked { inner, schema })),
    }
}

struct Checked<S: ?Sized> {
    schema: Arc<DeclaredSchema>,
    inner: S,
}

/// Calls `f`, which appends a call's output batches to `out`, and checks those batches.
fn checking<T>(
    schema: &DeclaredSchema,
    ctx: &mut StepContext,
    out: &mut Vec<Batch>,
    f: impl FnOnce(&mut StepContext, &mut Vec<Batch>) -> Result<T, StepError>,
) -> Result<T, StepError> {
    let from = out.len();
    let r = f(ctx, out)?;
    for b in out.iter_mut().skip(from) {
        *b = schema.check(b, ctx);
    }
    Ok(r)
}

/// What the wrapped step states about itself is what the step states: the schema is in
/// its cache key as one of the keys the pipeline file writes for it.
impl<S: std::ops::Deref<Target = T> + Send, T: StepInfo + ?Sized + 'static> StepInfo for Checked<S> {
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    fn version(&self) -> u32 {
        self.inner.version()
    }
    fn config(&self) -> CanonicalConfig {
        self.inner.config()
    }
    fn resources(&self) -> Resources {
        self.inner.resources()
    }
    fn policy(&self) -> StepPolicy {
        self.inner.policy()
    }
    fn estimated_cost(&self) -> f64 {
        self.inner.estimated_cost()
    }
    fn files_read(&self) -> Vec<std::path::PathBuf> {
        self.inner.files_read()
    }
    fn files_written(&self) -> Vec<std::path::PathBuf> {
        self.inner.files_written()
    }
    fn written_patterns(&self) -> Vec<FilePattern> {
        self.inner.written_patterns()
    }
    fn runs_per_shard(&self) -> bool {
        self.inner.runs_per_shard()
    }
    fn shards_by_exchange(&self) -> bool {
        self.inner.shards_by_exchange()
    }
    fn waits_for_every_shard(&self) -> bool {
        self.inner.waits_for_every_shard()
    }
    fn shard_role(&self) -> Option<&'static str> {
        self.inner.shard_role()
    }
    fn cacheable(&self) -> bool {
        self.inner.cacheable()
    }
    fn fields_read(&self) -> Vec<String> {
        self.inner.fields_read()
    }
    fn fields_vary(&self, input: bool) -> bool {
        self.inner.fields_vary(input)
    }
    fn parallel(&self) -> bool {
        self.inner.parallel()
    }
}

impl Source for Checked<Box<dyn Source>> {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        Ok(self.inner.next_batch(ctx)?.map(|b| self.schema.check(&b, ctx)))
    }
}

impl Transform for Checked<Arc<dyn Transform>> {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let out = self.inner.apply(batch, ctx)?;
        Ok(self.schema.check(&out, ctx))
    }
}

impl StatefulTransform for Checked<Box<dyn StatefulTransform>> {
    fn preparer(&self) -> Option<Arc<dyn Prepare>> {
        self.inner.preparer()
    }

    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        checking(&self.schema, ctx, out, |ctx, out| self.inner.process(batch, ctx, out))
    }

    fn process_prepared(
        &mut self,
        batch: &Batch,
        prepared: &Prepared,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        checking(&self.schema, ctx, out, |ctx, out| self.inner.process_prepared(batch, prepared, ctx, out))
    }

    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        checking(&self.schema, ctx, out, |ctx, out| self.inner.finish(ctx, out))
    }

    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        checking(&self.schema, ctx, out, |ctx, out| self.inner.more(ctx, out))
    }
}

impl Merge for Checked<Box<dyn Merge>> {
    fn process(
        &mut self,
        input: usize,
        batch: &Batch,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        checking(&self.schema, ctx, out, |ctx, out| self.inner.process(input, batch, ctx, out))
    }

    fn input_done(&mut self, input: usize, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        checking(&self.schema, ctx, out, |ctx, out| self.inner.input_done(input, ctx, out))
    }

    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        checking(&self.schema, ctx, out, |ctx, out| self.inner.finish(ctx, out))
    }

    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        checking(&self.schema, ctx, out, |ctx, out| self.inner.more(ctx, out))
    }
}

/// A sink's records are checked before it writes them: what it writes is what it puts out.
impl Sink for Checked<Box<dyn Sink>> {
    fn write(&mut self, batch: &Batch, ctx: &mut StepContext) -> Result<(), StepError> {
        let fitting = self.schema.check(batch, ctx);
        self.inner.write(&fitting, ctx)
    }

    fn commit(&mut self, ctx: &mut StepContext) -> Result<(), StepError> {
        self.inner.commit(ctx)
    }

    fn abort(&mut self) {
        self.inner.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declared::DeclaredField;
    use crate::record::Record;

    /// Passes each batch on, and the first one again when it finishes.
    struct Echo(Option<Batch>);

    impl StepInfo for Echo {
        fn kind(&self) -> &str {
            "echo"
        }
        fn config(&self) -> CanonicalConfig {
            CanonicalConfig::default()
        }
        fn runs_per_shard(&self) -> bool {
            true
        }
    }

    impl StatefulTransform for Echo {
        fn process(&mut self, batch: &Batch, _: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
            self.0.get_or_insert_with(|| batch.clone());
            out.push(batch.clone());
            Ok(())
        }
        fn finish(&mut self, _: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
            out.extend(self.0.take());
            Ok(())
        }
    }

    #[test]
    fn a_stateful_steps_batches_are_checked_as_they_come_out_and_what_it_states_is_its_own() {
        let schema = DeclaredSchema::new(vec![DeclaredField {
            name: "n".into(),
            ty: crate::cast::CastType::Int,
            nullable: false,
        }]);
        let Step::StatefulTransform(mut st) = checked(Step::StatefulTransform(Box::new(Echo(None))), Arc::new(schema))
        else {
            panic!("the shape is kept")
        };
        assert_eq!(st.kind(), "echo");
        assert!(st.runs_per_shard());
        let batch = Batch::from_records(&[Record::new().with("n", 1i64), Record::new().with("n", "two")]);
        let mut ctx = StepContext::new("echo", 0, 0, Default::default());
        // A batch already in `out` is not the call's, and is left alone.
        let mut out = vec![batch.clone()];
        st.process(&batch, &mut ctx, &mut out).unwrap();
        st.finish(&mut ctx, &mut out).unwrap();
        assert_eq!(out.iter().map(Batch::len).collect::<Vec<_>>(), [2, 1, 1]);
        let reasons: Vec<String> = ctx.take_rejected().into_iter().map(|r| r.reason).collect();
        assert_eq!(reasons, [r#"the schema of step `echo`: `n`: expected int, found string "two""#; 2]);
    }
}
