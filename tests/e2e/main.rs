//! End-to-end tests: the real `weave` binary on real files.

// validate, plan, graph and kinds on the pipeline files in tests/data.
mod cli;
// The cache: re-runs, changed steps, resume after SIGKILL, damage, two runs at once.
mod cache;
// weave run: outputs, failures, bad records, overrides, Ctrl-C.
mod run;
// load → clean → dedup → export on generated data, against an independent computation;
// near_dedup through the binary.
mod data_steps;
// language and tokens: fields written, filters with reasons, figures in the summary.
mod language_tokens;
// generate, compare, mix, split and filter wired together on a real and a generated set.
mod dataset_ops;
// LLM steps against an OpenAI-compatible test server: faults, resume after SIGKILL, the API
// key kept out of every output, --no-cache, generate and judge.
mod llm;
// LLM generation: distinct requests per answer and record, the Batch API resumed after a
// kill, `weave plan --cost` against what the run then reports.
mod llm_gen;
// The monitoring tells the truth: one count everywhere, bad records, LLM retries,
// promtool on a real metrics file, an error printed once.
mod monitor;
// The bad-input corpus (tests/bad-inputs/): every case folder through the real binary, none
// panicking, hanging, changing an input or leaving debris.
mod bad_inputs;
// Outputs: what a run writes checked against what it reads, targets that are not files,
// killed runs' temporary files, split exports killed inside their commit.
mod outputs;
// Values arrive as they left: field order and exact numbers through every format, NaN.
mod values;
// Limits and bad input: absurd settings, long and wide ids, thousands of problems, alert
// commands and what they start, wide files.
mod limits;
// One session behind every front end: the Rust API and `weave run` keep the same run
// record, metrics file and alerts.
mod session;
// Sharded runs: N processes' parts are the single process's output.
mod shards;
// `weave slurm` on a real one-node Slurm (when .ci/run started one).
mod slurm;
// The quality filters through the binary: drops named by rule, C4's kept lines, figures.
mod quality;
// Object storage: s3:// inputs and exports against a local S3 server (moto, when .ci/run
// started one), http:// inputs from a web server in the test.
mod object_storage;
// A `schema` on any step: bad records named by step, field and type; validate and the cache key.
mod schemas;
// Records whose fields vary: the same output at every batch size, misspelt fields named.
mod sparse;
