//! The dry run of an LLM step (`weave plan --cost`, `BuildOptions::dry_run`): the requests
//! a call would send are looked up in the answer cache as a run looks them up, and those
//! the cache lacks are counted, with their prompt tokens estimated, instead of sent.
//!
//! The estimate of a prompt: a quarter of each message's bytes (rounded up), plus three
//! tokens per message and three for the reply's start, as OpenAI counts chat messages;
//! about right for English under the GPT tokenizers, high for code, low for languages
//! written without spaces. The answer's tokens are the caller's to estimate (the mean of
//! the answers the cache had, of the step's last run, or `max_tokens`): the step reports
//! what it saw in the figures `planned_*`.
//!
//! So that the steps after it see records, a request without an answer gets a stand-in
//! answer of the expected length (the mean of this call's cached answers, `max_tokens`,
//! or 256 tokens), shaped as the step reads answers: text, or a JSON object with the
//! fields its schema names.

use weave_core::StepContext;

use super::client::Answer;
use super::{ASSUMED_ANSWER_TOKENS, LlmCall, Lookup, Outcome, Request};

/// The tokens of a request's messages, estimated (see the module's documentation).
pub(crate) fn prompt_tokens(r: &Request) -> u64 {
    let message = |text: &str| (text.len() as u64).div_ceil(4) + 3;
    r.system.as_deref().map_or(0, message) + message(&r.user) + 3
}

/// How a stand-in answer is shaped: plain text, or a JSON object (its fields as the step's
/// schema names them: text where a string goes).
#[derive(Debug, Clone, Default)]
pub(crate) enum Shape {
    /// The text itself.
    #[default]
    Text,
    /// A JSON object like this one, each string in it replaced by the text.
    Json(serde_json::Value),
}

impl Shape {
    /// A JSON object that fits `schema` where it can: each property of an object schema
    /// by its type (a string for strings, the minimum or 0 for numbers, `true`, an empty
    /// list), the text under `field` when the schema says nothing.
    pub(crate) fn of_schema(schema: Option<&serde_json::Value>, field: &str) -> Shape {
        let mut object = serde_json::Map::new();
        if let Some(props) = schema.and_then(|s| s["properties"].as_object()) {
            for (name, p) in props {
                let v = match p["type"].as_str() {
                    Some("number" | "integer") => p["minimum"].as_f64().map_or(0.into(), |m| m.into()),
                    Some("boolean") => true.into(),
                    Some("array") => serde_json::Value::Array(Vec::new()),
                    Some("object") => serde_json::Value::Object(serde_json::Map::new()),
                    _ => "".into(),
                };
                object.insert(name.clone(), v);
            }
        }
        if object.is_empty() {
            object.insert(field.to_owned(), "".into());
        }
        Shape::Json(serde_json::Value::Object(object))
    }

    /// The stand-in answer's text: `tokens` tokens of filler, shaped.
    fn render(&self, tokens: u64) -> String {
        let text = "lorem ipsum ".repeat((tokens as usize).div_ceil(3).max(1));
        let text = text.trim_end();
        match self {
            Shape::Text => text.to_owned(),
            Shape::Json(v) => {
                let mut v = v.clone();
                let mut first = true;
                fill(&mut v, text, &mut first);
                v.to_string()
            }
        }
    }
}

/// Puts `text` in the first string of `v` (the others stay empty), so that the answer is
/// about as long as expected however many string fields the schema has.
fn fill(v: &mut serde_json::Value, text: &str, first: &mut bool) {
    match v {
        serde_json::Value::String(s) if *first => {
            *s = text.to_owned();
            *first = false;
        }
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| fill(x, text, first)),
        _ => {}
    }
}

impl LlmCall {
    /// The dry run of [`LlmCall::run`]'s requests (already told apart): the cache's
    /// answers, and a stand-in for each request it lacks, counted in the step's `planned_*`
    /// figures. Nothing is sent.
    pub(crate) fn estimate(&self, unique: Vec<Request>, ctx: &mut StepContext) -> Vec<Outcome> {
        let mut found: Vec<Option<Answer>> = Vec::with_capacity(unique.len());
        let (mut new, mut hits, mut prompt, mut hit_completion) = (0u64, 0u64, 0u64, 0u64);
        for r in &unique {
            match self.worker.look_up(r) {
                Lookup::Hit(a) => {
                    hits += 1;
                    hit_completion += a.completion_tokens;
                    found.push(Some(a));
                }
                Lookup::Miss(_) => {
                    new += 1;
                    prompt += prompt_tokens(r);
                    found.push(None);
                }
            }
        }
        let expected =
            if hits > 0 { hit_completion.div_ceil(hits) } else { self.max_tokens().unwrap_or(ASSUMED_ANSWER_TOKENS) };
        let stand_in = self.shape.render(expected);
        ctx.add_stat("planned_requests", new as i64);
        ctx.add_stat("planned_cache_hits", hits as i64);
        ctx.add_stat("planned_prompt_tokens", prompt as i64);
        ctx.add_stat("planned_hit_completion_tokens", hit_completion as i64);
        ctx.add_stat("planned_provider", self.provider().name.as_str());
        if let Some(m) = self.max_tokens() {
            ctx.add_stat("planned_max_tokens", weave_core::Value::Str(m.to_string()));
        }
        unique
            .iter()
            .zip(found)
            .map(|(r, a)| {
                Outcome::Answered(a.unwrap_or_else(|| Answer {
                    content: stand_in.clone(),
                    finish_reason: Some("stop".to_owned()),
                    prompt_tokens: prompt_tokens(r),
                    completion_tokens: expected,
                    model: None,
                }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_a_quarter_of_their_bytes_plus_the_messages_framing() {
        let r = Request::new(Some("Be brief.".into()), "Write about cats.".into(), 0, 0, None);
        // 9 bytes: 3 tokens; 17 bytes: 5 tokens; 3 per message and 3 for the reply.
        assert_eq!(prompt_tokens(&r), (3 + 3) + (5 + 3) + 3);
    }

    #[test]
    fn stand_ins_are_shaped_as_the_step_reads_answers() {
        assert_eq!(Shape::Text.render(3), "lorem ipsum");
        let schema = serde_json::json!({"type": "object", "properties": {
            "question": {"type": "string"}, "answer": {"type": "string"}, "level": {"type": "integer", "minimum": 1}}});
        let v: serde_json::Value = serde_json::from_str(&Shape::of_schema(Some(&schema), "f").render(3)).unwrap();
        assert_eq!(v["level"], 1.0);
        let mut texts = [v["question"].as_str().unwrap(), v["answer"].as_str().unwrap()];
        texts.sort_unstable();
        assert_eq!(texts, ["", "lorem ipsum"], "the text once, in one of the strings");
        let v: serde_json::Value = serde_json::from_str(&Shape::of_schema(None, "f").render(6)).unwrap();
        assert_eq!(v, serde_json::json!({"f": "lorem ipsum lorem ipsum"}));
    }
}
