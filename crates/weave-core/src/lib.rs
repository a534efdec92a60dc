//! The core of Weave: the data model, the step traits, the DAG and the pipeline file.
//! No I/O, no threads: the executor, cache and steps are built on top of this crate.
#![deny(missing_docs)]

mod batch;
pub mod cast;
pub mod checked;
mod column;
mod conf;
mod context;
mod dag;
pub mod declared;
mod diagnostic;
mod error;
mod event;
mod json;
mod keys;
mod map;
mod params;
mod pipeline;
mod policy;
mod record;
pub mod rng;
mod scalar;
mod schema;
mod shard;
mod spec;
mod step;
pub mod swar;
mod template;
mod units;
mod value;

pub use batch::{Batch, BatchBuilder, RowRef};
pub use column::{Appender, Column, PrimitiveColumn, StrColumn};
pub use conf::{ConfItem, ConfTable, ConfValue};
pub use context::BuildContext;
pub use dag::{CriticalPath, Dag, Dep, Node, NodeSpec};
pub use diagnostic::{Diagnostic, Diagnostics, Location, Omitted, Severity, Snippet, SourceFile, did_you_mean};
pub use error::{BoxError, Error, ErrorClass, ErrorOrigin, StepError, error_line, missing_field};
pub use event::{Event, EventLine, RunStatus, StepCounts, Subscriber};
pub use json::JsonText;
pub use keys::{KeyScope, NeutralKey, OUTPUT_NEUTRAL, is_output_neutral, is_output_neutral_for_kind};
pub use map::{Map, MapIntoIter, MapIter};
pub use params::{Params, resolve};
pub use pipeline::{BuildFn, BuildOptions, Pipeline, PipelineBuilder, PipelineStep, Registry, StepKind};
pub use policy::{Backoff, BadRecordLimit, BadRecordPolicy, Resources, RetryPolicy, StepPolicy};
pub use record::Record;
pub use scalar::{Decimal, MAX_DECIMAL_PRECISION, TimeUnit, Timestamp, date_of_days, days_of_date};
pub use schema::{DataType, Field, Schema};
pub use shard::{MAX_SHARDS, Shard, ShardError};
pub use spec::{
    ALERT_KEYS, ALERT_METRICS, AlertSink, AlertSpec, CACHE_KEYS, Comparison, DEFAULT_MAX_MEMORY, LLM_KEYS, LlmProvider,
    MAX_CONCURRENT, MAX_GPUS, MAX_ID_CHARS, PIPELINE_KEYS, PipelineSpec, RESOURCES_KEYS, RETRY_KEYS, ResourceLimits,
    ResourceOverride, RetryOverride, STEP_COMMON_KEYS, STEP_RESOURCES_KEYS, STORAGE_KEYS, StepSpec, StorageSettings,
    TOP_LEVEL_KEYS, default_cache_dir,
};
pub use step::{
    CacheMode, CanonicalConfig, FilePattern, Merge, Prepare, Prepared, Rejected, RequestCounts, Shape, Sink, Source,
    StatefulTransform, Step, StepCache, StepContext, StepInfo, Transform, prepared_as, sum_figures,
};
pub use template::{TemplateError, TemplatePart, parse_template};
pub use units::{format_bytes, format_count, format_duration, format_percent, parse_bytes, parse_duration};
pub use value::{Canonical, MAX_DEPTH, TextForm, Value, ValueRef};
