//! `shards_mix`: what a `mix` costs when a run is split into shards. The release `weave`
//! binary runs load_jsonl → fields (a template makes a variant of each record: the
//! synthetic side) → sample (a fraction of 0.3 of the variants, per shard) → mix (a
//! synthetic share of 0.2, balanced by a label of 5 uneven classes: each shard publishes
//! its counts and its synthetic records, every shard reads every part, the last one passes
//! on the chosen synthetic records) → export_jsonl over 1,000,000 generated rows, the
//! cache on and cold: as one process, as 1, 2 and 4 shards started together, and as 4
//! shards run stage by stage (each stage's 4 shards together, as `weave slurm submit` runs
//! them). Figures: the wall time of the whole job and the CPU time of all its processes
//! together, against the single process's. Each is the median of 3 runs. The input and the
//! measuring are `shards_sample`'s.

use super::Report;

const PIPELINE: &str = r#"
[pipeline]
name = "shards-mix-bench"
seed = 7

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"

[[step]]
id = "variants"
kind = "fields"
after = ["load"]
template = { text = "variant: {text}" }

[[step]]
id = "some"
kind = "sample"
after = ["variants"]
fraction = 0.3

[[step]]
id = "mix"
kind = "mix"
after = ["load", "some"]
ratio = 0.2
balance_by = "label"

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/mixed.jsonl"
"#;

/// Over `shards_sample`'s input (the same rows and labels), as that scenario measures.
pub(super) fn run(report: &mut Report) {
    super::shards_sample::run_pipeline(report, PIPELINE, 2);
}
