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
// generate, compare, mix, split and filter wired together on a real and a generated set.
mod dataset_ops;
// LLM steps against an OpenAI-compatible test server: faults, resume after SIGKILL, the API
// key kept out of every output, --no-cache, generate and judge.
mod llm;
// Limits and bad input: absurd settings, long and wide ids, thousands of problems, alert
// commands and what they start, wide files.
mod limits;
