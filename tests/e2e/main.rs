//! End-to-end tests: the real `weave` binary on real files.

mod cli;
mod run;
