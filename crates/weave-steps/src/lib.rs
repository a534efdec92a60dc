//! Weave's built-in steps and the [`registry`] that lets pipeline files name them.
#![deny(missing_docs)]

mod json;
mod text;

pub use json::{write_json_str, write_jsonl, write_value};
pub use text::{collapse_into, lowercase_into, trim_collapse_into, trim_into};
