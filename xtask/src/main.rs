//! Weave's development tasks, run as `cargo xtask <task>` through the alias in
//! `.cargo/config.toml` (always in release mode, so that benchmarks measure optimised code).
//!
//! - `quickstart-data` writes the shipped example's input, `examples/quickstart/raw_data.csv`.
//! - `bench` runs the benchmark scenarios in [`bench`] and keeps the results as dated JSON
//!   files under `target/bench/`.
//! - The workspace's rules (crate layering, workspace-only versions, docs, no printing in
//!   libraries) are checked by the tidy tests in `tests/tidy.rs`, run by `cargo test`.

// xtask is a command-line tool whose job is to print results: stdout and stderr are its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod quickstart;

use std::process::ExitCode;

fn usage() -> String {
    let mut s = String::from(
        "Weave's development tasks.

Usage: cargo xtask <task> [args...]

Tasks:
  bench [NAME...]   run benchmark scenarios (all of them when no NAME is given), print a
                    table and write target/bench/bench-<UTC time>.json and latest.json
  quickstart-data   write examples/quickstart/raw_data.csv, the shipped example's input
                    (3,000 messy support tickets, always the same bytes)
  help              print this message

Scenarios:
",
    );
    for scenario in bench::SCENARIOS {
        s.push_str(&format!("  {:<16}  {}\n", scenario.name, scenario.summary));
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Some("bench") => match bench::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("quickstart-data") => match quickstart::main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        // Not in the usage: a scenario starts this binary again to run part of itself in a
        // process of its own.
        Some("__bench-child") => match bench::child(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(other) => {
            eprintln!("error: unknown task `{other}`\n\n{}", usage());
            ExitCode::from(2)
        }
    }
}
