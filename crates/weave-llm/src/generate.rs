//! The `llm_generate` step: for each record, a prompt made from its fields, and `n` new
//! records from the answers.

use std::sync::Arc;

use weave_core::{
    Batch, BatchBuilder, CanonicalConfig, ConfValue, Diagnostic, Params, Rejected, Shape, Step, StepContext, StepError,
    StepInfo, StepKind, Transform, Value,
};

use super::prompt::{self, Prompt, Var};
use super::vary::VaryBy;
use super::{LlmCall, Outcome, Request, schema};

/// The `llm_generate` kind.
pub static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "llm_generate",
        Shape::Transform,
        "ask an LLM a prompt made from each record's fields and make `n` new records of the answers (text, or JSON fields checked against a schema)",
        [
            "prompt",
            "n",
            "field",
            "json",
            "json_schema",
            "keep_input",
            "sample_field",
            "llm",
            "concurrency",
            "temperature",
            "top_p",
            "max_tokens",
            "stop",
            "system",
            "vary_by",
        ],
        build,
    )
});

/// How answers are read.
#[derive(Debug, Clone)]
enum Format {
    /// The answer's text, into `field`.
    Text,
    /// A JSON answer (`response_format: json_object`), checked against the schema if any:
    /// an object's keys become fields, anything else goes into `field`.
    Json(Option<serde_json::Value>),
}

/// For each input record, asks `n` answers to a prompt made from its fields, and makes a
/// record of each: the input's fields (unless `keep_input = false`), the answer (its text in
/// `field`, or a JSON object's fields), and the answer's number in `sample_field`.
///
/// A null field in the prompt, and a request that gets no usable answer (after every retry,
/// cut off at `max_tokens`, not JSON, not fitting the schema), are bad records with the
/// reason, one per failed answer; the other answers of the record still make records.
#[derive(Debug)]
pub struct LlmGenerate {
    call: LlmCall,
    system: Option<Prompt>,
    prompt: Prompt,
    n: u64,
    field: String,
    format: Format,
    keep_input: bool,
    sample_field: Option<String>,
    vary_by: VaryBy,
    config: CanonicalConfig,
}

fn build(p: &Params) -> Option<Step> {
    let fields = |name: &str| Ok(Var::Field { name: name.to_owned(), max_chars: None });
    if !p.has("prompt") {
        p.push(
            Diagnostic::error("missing required key `prompt` (the template asked for each record, such as \"Write a question about {topic}.\")")
                .with_code("missing-key"),
        );
    }
    let prompt = prompt::read(p, "prompt", None, &fields);
    let system = p.has("system").then(|| prompt::read(p, "system", None, &fields)).flatten();
    let n = p.u64("n").unwrap_or(1);
    if !(1..=1000).contains(&n)
        && let Some(item) = p.item("n")
    {
        p.error_at(item, "`n` (answers per record) must be from 1 to 1000");
    }
    let field = p.str("field").unwrap_or_else(|| "generated".to_owned());
    let keep_input = p.bool("keep_input").unwrap_or(true);
    let sample_field = match p.item("sample_field") {
        None => Some("sample".to_owned()),
        Some(item) => match &item.value {
            ConfValue::Str(s) if !s.is_empty() => Some(s.clone()),
            ConfValue::Bool(false) => None,
            _ => {
                p.error_at(item, "`sample_field` must be a field name, or false for none");
                None
            }
        },
    };
    let json = p.bool("json").unwrap_or(false);
    let mut format = if json { Format::Json(None) } else { Format::Text };
    if let Some(item) = p.item("json_schema") {
        let s = item.value.to_json();
        let (errors, unchecked) = schema::check_schema(&s);
        for e in &errors {
            p.error_at(item, format!("`json_schema`: {e}"));
        }
        if !unchecked.is_empty() {
            p.push(
                Diagnostic::warning(format!(
                    "`json_schema`: {} not checked by Weave (the server may enforce them): {}",
                    if unchecked.len() == 1 { "this keyword is" } else { "these keywords are" },
                    unchecked.join(", ")
                ))
                .at(Some(p.locate(item.span.clone()))),
            );
        }
        if !json && p.has("json") {
            p.error_at(item, "`json_schema` asks for JSON answers, but `json = false`: remove one of them");
        }
        format = Format::Json(Some(s));
    }
    if let (Format::Json(None), Some(pr)) = (&format, &prompt)
        && !pr.mentions("json")
        && !system.as_ref().is_some_and(|s| s.mentions("json"))
    {
        p.push(Diagnostic::warning(
            "`json = true`, but the prompt never mentions JSON: some providers (OpenAI) refuse JSON mode unless the messages ask for JSON",
        ));
    }
    let response_format = match &format {
        Format::Text => None,
        Format::Json(None) => Some(serde_json::json!({"type": "json_object"})),
        Format::Json(Some(s)) => {
            Some(serde_json::json!({"type": "json_schema", "json_schema": {"name": "record", "schema": s}}))
        }
    };
    let vary_by = VaryBy::read(p, VaryBy::Record);
    let call = LlmCall::read(p, None, 1.0, response_format);
    if p.has_errors() {
        return None;
    }
    let (mut call, prompt) = (call?, prompt?);
    if let Format::Json(schema) = &format {
        call.shape = super::estimate::Shape::of_schema(schema.as_ref(), &field);
    }
    let config = call.config(p);
    Some(Step::Transform(Arc::new(LlmGenerate {
        call,
        system,
        prompt,
        n,
        field,
        format,
        keep_input,
        sample_field,
        vary_by,
        config,
    })))
}

impl StepInfo for LlmGenerate {
    fn fields_read(&self) -> Vec<String> {
        let mut read: Vec<String> =
            self.system.iter().flat_map(Prompt::fields).chain(self.prompt.fields()).map(str::to_owned).collect();
        read.extend(self.vary_by.fields_read());
        read
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    /// 2: a JSON answer's fields in the order the model wrote them (they were sorted), integers exact.
    /// 3: each request salted by the whole record (`vary_by = "record"`) by default, so that
    /// records with one prompt get answers of their own. 4 (`"record"` only): over records
    /// whose fields vary (JSON), the record's own fields in name order.
    fn version(&self) -> u32 {
        if self.vary_by == VaryBy::Record { 4 } else { 3 }
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn resources(&self) -> weave_core::Resources {
        self.call.resources()
    }

    fn estimated_cost(&self) -> f64 {
        super::COST * self.n as f64
    }
}

impl LlmGenerate {
    /// The fields of one answer, or why it cannot be used.
    fn read_answer(&self, a: &super::client::Answer) -> Result<Vec<(String, Value)>, String> {
        if a.truncated() {
            return Err(match self.call.max_tokens() {
                Some(m) => format!("the answer was cut off at max_tokens = {m} (raise `max_tokens`)"),
                None => "the answer was cut off at the server's token limit (set `max_tokens`)".to_owned(),
            });
        }
        match &self.format {
            Format::Text => {
                let t = a.content.trim();
                if t.is_empty() {
                    return Err("the answer is empty".to_owned());
                }
                Ok(vec![(self.field.clone(), Value::Str(t.to_owned()))])
            }
            Format::Json(s) => {
                // Fields in the order the model wrote them, numbers as it wrote them.
                let v = super::answer_value(&a.content)?;
                if let Some(s) = s {
                    let json = serde_json::to_value(&v).map_err(|e| e.to_string())?;
                    schema::validate(s, &json).map_err(|e| format!("the answer does not fit `json_schema`: {e}"))?;
                }
                match v {
                    Value::Map(m) => Ok(m.into_iter().collect()),
                    other => Ok(vec![(self.field.clone(), other)]),
                }
            }
        }
    }
}

impl Transform for LlmGenerate {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let schema = batch.schema();
        if self.keep_input {
            for f in [Some(&self.field).filter(|_| matches!(self.format, Format::Text)), self.sample_field.as_ref()]
                .into_iter()
                .flatten()
            {
                if schema.index_of(f).is_some() {
                    return Err(StepError::fatal(format!(
                        "field `{f}` is already in the data: name another with `field` / `sample_field`, or set `keep_input = false`"
                    )));
                }
            }
        }
        let pcols = self.prompt.columns(batch)?;
        let scols = match &self.system {
            Some(s) => s.columns(batch)?,
            None => Vec::new(),
        };
        let vcols = self.vary_by.columns(batch, ctx)?;
        // Per row: the first request's number, or why the row is bad.
        let mut plans: Vec<Result<usize, String>> = Vec::with_capacity(batch.len());
        let mut requests = Vec::new();
        for row in 0..batch.len() {
            let mut user = String::new();
            let mut system = self.system.as_ref().map(|_| String::new());
            let rendered = match (&self.system, &mut system) {
                (Some(t), Some(s)) => t.render(batch, &scols, row, s),
                _ => Ok(()),
            }
            .and_then(|()| self.prompt.render(batch, &pcols, row, &mut user));
            match rendered {
                Ok(()) => {
                    plans.push(Ok(requests.len()));
                    let salt = self.vary_by.salt(batch, &vcols, row, ctx);
                    for sample in 0..self.n {
                        requests.push(Request::new(system.clone(), user.clone(), ctx.seed(), sample, salt.as_ref()));
                    }
                }
                Err(why) => plans.push(Err(why)),
            }
        }
        let outcomes = self.call.run(requests, ctx)?;
        let mut out = BatchBuilder::new();
        let reject = |ctx: &mut StepContext, row: usize, why: String| {
            ctx.reject(Rejected {
                reason: format!("{}: {why}", KIND.name),
                record: Some(batch.row(row).to_record()),
                origin: None,
            });
        };
        for (row, plan) in plans.into_iter().enumerate() {
            let first = match plan {
                Ok(first) => first,
                Err(why) => {
                    reject(ctx, row, why);
                    continue;
                }
            };
            for sample in 0..self.n {
                let made = match &outcomes[first + sample as usize] {
                    Outcome::Answered(a) => self.read_answer(a),
                    Outcome::Rejected(why) => Err(why.clone()),
                };
                let which = if self.n > 1 { format!("answer {sample}: ") } else { String::new() };
                let fields = match made {
                    Ok(f) => f,
                    Err(why) => {
                        reject(ctx, row, format!("{which}{why}"));
                        continue;
                    }
                };
                let input = batch.row(row);
                let clash = fields
                    .iter()
                    .map(|(k, _)| k)
                    .find(|k| (self.keep_input && input.get(k).is_some()) || self.sample_field.as_ref() == Some(*k));
                if let Some(k) = clash {
                    reject(
                        ctx,
                        row,
                        format!(
                            "{which}the answer's field `{k}` is already a field of the record (set `keep_input = false`, or rename `sample_field`)"
                        ),
                    );
                    continue;
                }
                let sample_value = Value::Int(sample as i64);
                let kept = input.iter().filter(|_| self.keep_input);
                let made = fields.iter().map(|(k, v)| (k.as_str(), v.as_ref()));
                let numbered = self.sample_field.as_deref().map(|f| (f, sample_value.as_ref()));
                out.push_row(kept.chain(made).chain(numbered));
            }
        }
        Ok(out.finish())
    }
}
