//! The `llm_judge` step: an LLM scores each record against criteria, with a reason; a
//! threshold drops, flags or fails the records that score below it.

use std::sync::Arc;

use weave_core::{
    Batch, CanonicalConfig, Column, ConfValue, Params, Rejected, Shape, Step, StepContext, StepError, StepInfo,
    StepKind, Transform, Value,
};

use super::prompt::{self, Prompt, Var};
use super::vary::VaryBy;
use super::{LlmCall, Outcome, Request, schema};

/// The `llm_judge` kind.
pub static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "llm_judge",
        Shape::Transform,
        "have an LLM score each record against criteria, with a reason; a threshold drops, flags or fails the records below it",
        [
            "field",
            "criteria",
            "prompt",
            "scale",
            "threshold",
            "on_fail",
            "score_field",
            "reason_field",
            "pass_field",
            "response_format",
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

const CRITERIA: &str = "Is the text correct, coherent, fluent and useful? Penalise factual errors, contradictions, gibberish and text that does not fit its purpose.";

const SYSTEM: &str = "You are a strict, fair judge of data quality. You reply with a JSON object only.";

/// What happens to a record that scores below the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFail {
    /// Dropped, counted under `llm_judge: below threshold` (and kept in the step's
    /// exclusion file, with its score, when it has one).
    Drop,
    /// Kept, with `pass_field` false.
    Flag,
    /// The run fails, naming the record, its score and the judge's reason.
    Fail,
}

/// Scores each record with an LLM: `score_field` gets the score (a number on `scale`),
/// `reason_field` the judge's reason. With a `threshold`, a record scoring below it is
/// dropped, flagged (`pass_field`) or fails the run, as `on_fail` says.
///
/// The judge is asked for JSON (`{"score": ..., "reason": ...}`, by JSON schema where the
/// server supports it); an answer that is not that JSON, or whose score is off the scale,
/// is a bad record with the reason, as is a request that gets no answer after every retry.
#[derive(Debug)]
pub struct LlmJudge {
    call: LlmCall,
    system: Prompt,
    prompt: Prompt,
    scale: (f64, f64),
    threshold: Option<f64>,
    on_fail: OnFail,
    score_field: String,
    reason_field: String,
    pass_field: String,
    schema: serde_json::Value,
    vary_by: VaryBy,
    config: CanonicalConfig,
}

fn build(p: &Params) -> Option<Step> {
    let field = p.str("field").unwrap_or_else(|| "text".to_owned());
    let criteria = p.str("criteria").unwrap_or_else(|| CRITERIA.to_owned());
    let scale = read_scale(p);
    let threshold = p.f64("threshold");
    if let (Some(t), Some((lo, hi)), Some(item)) = (threshold, scale, p.item("threshold"))
        && !(lo..=hi).contains(&t)
    {
        p.error_at(item, format!("`threshold` must be on the scale, from {lo} to {hi}, not {t}"));
    }
    let on_fail = match p.choice("on_fail", &["drop", "flag", "fail"]) {
        Some("flag") => OnFail::Flag,
        Some("fail") => OnFail::Fail,
        _ => OnFail::Drop,
    };
    if threshold.is_none()
        && let Some(item) = p.item("on_fail")
    {
        p.error_at(item, "`on_fail` needs a `threshold` to compare the scores with");
    }
    let score_field = p.str("score_field").unwrap_or_else(|| "judge_score".to_owned());
    let reason_field = p.str("reason_field").unwrap_or_else(|| "judge_reason".to_owned());
    let pass_field = p.str("pass_field").unwrap_or_else(|| "judge_pass".to_owned());
    if on_fail != OnFail::Flag
        && let Some(item) = p.item("pass_field")
    {
        p.error_at(item, "`pass_field` is written only with `on_fail = \"flag\"`");
    }
    let (lo, hi) = scale.unwrap_or((1.0, 10.0));
    let fixed = |name: &str| -> Option<String> {
        match name {
            "criteria" => Some(criteria.clone()),
            "min" => Some(number(lo)),
            "max" => Some(number(hi)),
            _ => None,
        }
    };
    let resolve = |name: &str| -> Result<Var, String> {
        Ok(match fixed(name) {
            Some(v) => Var::Fixed(v),
            None => Var::Field { name: name.to_owned(), max_chars: None },
        })
    };
    let default = format!(
        "Judge the text below against these criteria:\n{{criteria}}\n\nGive it a score from {{min}} (worst) to {{max}} (best), and a one-sentence reason.\nReply with a JSON object only: {{{{\"score\": <number>, \"reason\": \"<sentence>\"}}}}\n\nText:\n{{{}}}",
        field.replace('{', "{{").replace('}', "}}")
    );
    let prompt = prompt::read(p, "prompt", Some(&default), &resolve);
    let system = prompt::read(p, "system", Some(SYSTEM), &resolve);
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": lo, "maximum": hi},
            "reason": {"type": "string"},
        },
        "required": ["score", "reason"],
    });
    let response_format = match p.choice("response_format", &["json_schema", "json"]) {
        Some("json") => serde_json::json!({"type": "json_object"}),
        _ => serde_json::json!({"type": "json_schema", "json_schema": {"name": "judgement", "schema": schema}}),
    };
    // A score belongs to the text: records with one prompt share a judgement unless asked.
    let vary_by = VaryBy::read(p, VaryBy::Prompt);
    let call = LlmCall::read(p, None, 0.0, Some(response_format));
    if p.has_errors() {
        return None;
    }
    let (mut call, prompt, system) = (call?, prompt?, system?);
    // A dry run's stand-in judgement passes, so that the steps after it see every record.
    call.shape = super::estimate::Shape::Json(serde_json::json!({"score": hi, "reason": ""}));
    let config = call.config(p);
    Some(Step::Transform(Arc::new(LlmJudge {
        call,
        system,
        prompt,
        scale: (lo, hi),
        threshold,
        on_fail,
        score_field,
        reason_field,
        pass_field,
        schema,
        vary_by,
        config,
    })))
}

/// `scale = [min, max]` (default 1 to 10).
fn read_scale(p: &Params) -> Option<(f64, f64)> {
    let Some(item) = p.item("scale") else { return Some((1.0, 10.0)) };
    let bad = || {
        p.error_at(item, "`scale` must be two numbers, [min, max] with min < max, such as [1, 10]");
        None
    };
    let ConfValue::Array(a) = &item.value else { return bad() };
    let nums: Vec<f64> = a
        .iter()
        .filter_map(|i| match &i.value {
            ConfValue::Int(n) => Some(*n as f64),
            ConfValue::Float(f) => Some(*f),
            _ => None,
        })
        .collect();
    match nums[..] {
        [lo, hi] if a.len() == 2 && lo < hi => Some((lo, hi)),
        _ => bad(),
    }
}

/// A number as the prompt shows it (`10`, not `10.0`).
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { x.to_string() }
}

impl StepInfo for LlmJudge {
    /// 2 (`vary_by = "record"` only): over records whose fields vary (JSON), the salt is
    /// the record's own fields in name order.
    fn version(&self) -> u32 {
        if self.vary_by == VaryBy::Record { 2 } else { 1 }
    }

    fn fields_read(&self) -> Vec<String> {
        let mut read: Vec<String> =
            self.system.fields().into_iter().chain(self.prompt.fields()).map(str::to_owned).collect();
        read.extend(self.vary_by.fields_read());
        read
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn resources(&self) -> weave_core::Resources {
        self.call.resources()
    }

    fn estimated_cost(&self) -> f64 {
        super::COST
    }
}

impl LlmJudge {
    /// The score and reason of an answer, or why it cannot be used.
    fn read_answer(&self, a: &super::client::Answer) -> Result<(f64, String), String> {
        let v = super::answer_json(&a.content).map_err(|e| {
            if a.truncated() { format!("{e}; it was cut off at the token limit (raise `max_tokens`)") } else { e }
        })?;
        schema::validate(&self.schema, &v).map_err(|e| format!("the judgement does not fit: {e}"))?;
        let score = v["score"].as_f64().unwrap_or(f64::NAN);
        Ok((score, v["reason"].as_str().unwrap_or_default().to_owned()))
    }
}

impl Transform for LlmJudge {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let schema = batch.schema();
        let mut written = vec![&self.score_field, &self.reason_field];
        if self.on_fail == OnFail::Flag {
            written.push(&self.pass_field);
        }
        for f in written {
            if schema.index_of(f).is_some() {
                return Err(StepError::fatal(format!(
                    "field `{f}` is already in the data: name another with `score_field`, `reason_field` or `pass_field`"
                )));
            }
        }
        let (scols, pcols) = (self.system.columns(batch)?, self.prompt.columns(batch)?);
        let vcols = self.vary_by.columns(batch, ctx)?;
        let mut plans: Vec<Result<usize, String>> = Vec::with_capacity(batch.len());
        let mut requests = Vec::new();
        for row in 0..batch.len() {
            let (mut system, mut user) = (String::new(), String::new());
            match self
                .system
                .render(batch, &scols, row, &mut system)
                .and_then(|()| self.prompt.render(batch, &pcols, row, &mut user))
            {
                Ok(()) => {
                    let salt = self.vary_by.salt(batch, &vcols, row, ctx);
                    requests.push(Request::new(Some(system), user, ctx.seed(), 0, salt.as_ref()));
                    plans.push(Ok(requests.len() - 1));
                }
                Err(why) => plans.push(Err(why)),
            }
        }
        let outcomes = self.call.run(requests, ctx)?;
        let mut keep = vec![true; batch.len()];
        let (mut scores, mut reasons, mut passes) = (Vec::new(), Vec::new(), Vec::new());
        let (mut judged, mut passed, mut below) = (0i64, 0i64, 0i64);
        for (row, plan) in plans.into_iter().enumerate() {
            let judgement = plan.and_then(|i| match &outcomes[i] {
                Outcome::Answered(a) => self.read_answer(a),
                Outcome::Rejected(why) => Err(why.clone()),
            });
            let (score, reason) = match judgement {
                Ok(j) => j,
                Err(why) => {
                    keep[row] = false;
                    ctx.reject(Rejected {
                        reason: format!("{}: {why}", KIND.name),
                        record: Some(batch.row(row).to_record()),
                        origin: None,
                    });
                    continue;
                }
            };
            judged += 1;
            let pass = self.threshold.is_none_or(|t| score >= t);
            if pass {
                passed += 1;
            } else {
                below += 1;
                match self.on_fail {
                    OnFail::Flag => {}
                    OnFail::Drop => {
                        keep[row] = false;
                        ctx.drop_record(&format!("{}: below threshold", KIND.name), || {
                            let mut r = batch.row(row).to_record();
                            r.set(self.score_field.clone(), score);
                            r.set(self.reason_field.clone(), reason.clone());
                            r
                        });
                        continue;
                    }
                    OnFail::Fail => {
                        let shown: String = batch
                            .row(row)
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                            .chars()
                            .take(200)
                            .collect();
                        return Err(StepError::fatal(format!(
                            "a record scored {} (below the threshold {}, on a scale of {} to {}): {reason} — the record: {{{shown}}}",
                            number(score),
                            number(self.threshold.unwrap_or_default()),
                            number(self.scale.0),
                            number(self.scale.1),
                        )));
                    }
                }
            }
            scores.push(Value::Float(score));
            reasons.push(Value::Str(reason));
            passes.push(Value::Bool(pass));
        }
        ctx.add_stat("judged", judged);
        if self.threshold.is_some() {
            ctx.add_stat("passed", passed);
            ctx.add_stat("below_threshold", below);
        }
        let mut out = batch.filter(&keep);
        let mut columns = vec![(&self.score_field, scores), (&self.reason_field, reasons)];
        if self.on_fail == OnFail::Flag {
            columns.push((&self.pass_field, passes));
        }
        for (name, values) in columns {
            out = out.with_column(name, Column::from(values)).map_err(|e| StepError::internal(e.to_string()))?;
        }
        Ok(out)
    }
}
