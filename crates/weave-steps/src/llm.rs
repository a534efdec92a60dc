//! The LLM noisers as `augment` sees them: weave-llm's, with the `llm` feature; without
//! it, a noiser named `llm_…` is refused, naming the feature to turn on.

use weave_core::{ConfItem, ConfValue};

#[cfg(feature = "llm")]
pub(crate) use weave_llm::{build_augment, noiser_names};

/// Whether a noiser entry of `augment` (a name, or a table with `kind`) names an LLM noiser
/// (or means to: its name starts with `llm_`).
pub(crate) fn is_llm_noiser(item: &ConfItem) -> bool {
    let name = match &item.value {
        ConfValue::Str(s) => s.as_str(),
        ConfValue::Table(t) => match t.get("kind").map(|k| &k.value) {
            Some(ConfValue::Str(s)) => s.as_str(),
            _ => return false,
        },
        _ => return false,
    };
    name.starts_with("llm_")
}

/// The names of the LLM noisers: none in a build without them.
#[cfg(not(feature = "llm"))]
pub(crate) fn noiser_names() -> impl Iterator<Item = &'static str> {
    std::iter::empty()
}

/// Refuses an LLM noiser, in a build without them.
#[cfg(not(feature = "llm"))]
pub(crate) fn build_augment(p: &weave_core::Params, noiser: &ConfItem) -> Option<weave_core::Step> {
    p.error_at(noiser, "the LLM noisers are not in this build of Weave: it was made without the `llm` feature");
    None
}
