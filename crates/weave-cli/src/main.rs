//! The `weave` binary: the command is the library's [`weave_cli::run_command`], which the
//! Python package's `weave` command runs too.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(weave_cli::run_command(std::env::args_os()))
}
