//! Structured output: the JSON-schema subset an answer is checked against.
//!
//! Servers that support `response_format: json_schema` (OpenAI, vLLM, llama.cpp) constrain
//! the model to the schema; others may not, and a constrained model can still be cut off.
//! So every answer is checked here too, against the keywords that decide the data's shape:
//! `type` (a name or a list), `properties`, `required`, `additionalProperties` (a boolean
//! or a schema), `items`, `enum`, `const`, `anyOf`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `minItems`,
//! `maxItems`. Other keywords are sent to the server but not checked here, and the step
//! says so when it is built.

use serde_json::Value;

/// The keywords checked here; `title`, `description`, `default` and `examples` carry no
/// constraint.
const CHECKED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "title",
    "description",
    "default",
    "examples",
];

const TYPES: &[&str] = &["object", "array", "string", "number", "integer", "boolean", "null"];

/// Checks a schema itself: errors (a keyword of the wrong form) and the keywords that
/// are not checked here (by JSON path), for a warning.
pub(crate) fn check_schema(schema: &Value) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut unchecked = Vec::new();
    walk(schema, "", &mut errors, &mut unchecked);
    (errors, unchecked)
}

fn walk(s: &Value, path: &str, errors: &mut Vec<String>, unchecked: &mut Vec<String>) {
    let Some(obj) = s.as_object() else {
        errors.push(format!("{}: a schema must be a table", at(path)));
        return;
    };
    for (k, v) in obj {
        let here = format!("{path}/{k}");
        match k.as_str() {
            "type" => {
                let names: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    other => vec![other],
                };
                for n in names {
                    if !n.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        errors.push(format!(
                            "{}: `type` must be one of {} (or a list of them)",
                            at(&here),
                            TYPES.join(", ")
                        ));
                    }
                }
            }
            "properties" => match v.as_object() {
                Some(props) => {
                    for (name, sub) in props {
                        walk(sub, &format!("{here}/{name}"), errors, unchecked);
                    }
                }
                None => errors.push(format!("{}: `properties` must be a table of schemas", at(&here))),
            },
            "required" => {
                if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                    errors.push(format!("{}: `required` must be a list of property names", at(&here)));
                }
            }
            "additionalProperties" => {
                if !v.is_boolean() {
                    walk(v, &here, errors, unchecked);
                }
            }
            "items" => walk(v, &here, errors, unchecked),
            "anyOf" => match v.as_array() {
                Some(a) if !a.is_empty() => {
                    for (i, sub) in a.iter().enumerate() {
                        walk(sub, &format!("{here}/{i}"), errors, unchecked);
                    }
                }
                _ => errors.push(format!("{}: `anyOf` must be a list of schemas", at(&here))),
            },
            "enum" => {
                if !v.is_array() {
                    errors.push(format!("{}: `enum` must be a list of values", at(&here)));
                }
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                if !v.is_number() {
                    errors.push(format!("{}: `{k}` must be a number", at(&here)));
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                if !v.is_u64() {
                    errors.push(format!("{}: `{k}` must be a non-negative integer", at(&here)));
                }
            }
            k if CHECKED.contains(&k) => {}
            _ => unchecked.push(here),
        }
    }
}

fn at(path: &str) -> String {
    if path.is_empty() { "the schema".to_owned() } else { format!("`{path}`") }
}

/// Checks `value` against `schema`; the error names the first place that does not fit,
/// as a JSON pointer (`/items/2/score`).
pub(crate) fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn check(s: &Value, v: &Value, path: &str) -> Result<(), String> {
    let here = || if path.is_empty() { "the answer".to_owned() } else { format!("`{path}`") };
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        if !types.is_empty() && !types.iter().any(|t| is_type(v, t)) {
            return Err(format!("{} must be {}, not {}", here(), types.join(" or "), type_name(v)));
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|a| same(a, v))
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!("{} must be one of {}, not {v}", here(), list.join(", ")));
    }
    if let Some(c) = s.get("const")
        && !same(c, v)
    {
        return Err(format!("{} must be {c}, not {v}", here()));
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|sub| check(sub, v, path).is_ok())
    {
        return Err(format!("{} fits none of the `anyOf` schemas", here()));
    }
    if let Some(x) = v.as_f64() {
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        if let Some(m) = num("minimum").filter(|m| x < *m) {
            return Err(format!("{} must be at least {m}, not {x}", here()));
        }
        if let Some(m) = num("maximum").filter(|m| x > *m) {
            return Err(format!("{} must be at most {m}, not {x}", here()));
        }
        if let Some(m) = num("exclusiveMinimum").filter(|m| x <= *m) {
            return Err(format!("{} must be more than {m}, not {x}", here()));
        }
        if let Some(m) = num("exclusiveMaximum").filter(|m| x >= *m) {
            return Err(format!("{} must be less than {m}, not {x}", here()));
        }
    }
    let count = |k: &str| s.get(k).and_then(Value::as_u64);
    if let Some(text) = v.as_str() {
        let n = text.chars().count() as u64;
        if let Some(m) = count("minLength").filter(|m| n < *m) {
            return Err(format!("{} must have at least {m} characters, not {n}", here()));
        }
        if let Some(m) = count("maxLength").filter(|m| n > *m) {
            return Err(format!("{} must have at most {m} characters, not {n}", here()));
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if let Some(m) = count("minItems").filter(|m| n < *m) {
            return Err(format!("{} must have at least {m} items, not {n}", here()));
        }
        if let Some(m) = count("maxItems").filter(|m| n > *m) {
            return Err(format!("{} must have at most {m} items, not {n}", here()));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}/{i}"))?;
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{} lacks the required `{r}`", here()));
                }
            }
        }
        for (k, x) in obj {
            let sub = format!("{path}/{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(ps, x, &sub)?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{} has `{k}`, which the schema does not allow", here()));
                    }
                    Some(extra @ Value::Object(_)) => check(extra, x, &sub)?,
                    _ => {}
                },
            }
        }
    }
    Ok(())
}

/// JSON equality with numbers compared by value (`1` is `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn judge() -> Value {
        json!({
            "type": "object",
            "properties": {
                "score": {"type": "number", "minimum": 1, "maximum": 10},
                "reason": {"type": "string", "minLength": 1},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
            },
            "required": ["score", "reason"],
            "additionalProperties": false,
        })
    }

    #[test]
    fn answers_that_fit_pass_and_others_say_where_they_fail() {
        let s = judge();
        assert_eq!(validate(&s, &json!({"score": 7, "reason": "fine"})), Ok(()));
        assert_eq!(validate(&s, &json!({"score": 7.5, "reason": "fine", "tags": ["a", "b"]})), Ok(()));
        let cases = [
            (json!([1]), "the answer must be object, not a list"),
            (json!({"score": 7}), "the answer lacks the required `reason`"),
            (json!({"score": "7", "reason": "x"}), "`/score` must be number, not a string"),
            (json!({"score": 11, "reason": "x"}), "`/score` must be at most 10, not 11"),
            (json!({"score": 5, "reason": ""}), "`/reason` must have at least 1 characters, not 0"),
            (
                json!({"score": 5, "reason": "x", "tags": ["a", "c"]}),
                "`/tags/1` must be one of \"a\", \"b\", not \"c\"",
            ),
            (json!({"score": 5, "reason": "x", "tags": ["a", "a", "b"]}), "`/tags` must have at most 2 items, not 3"),
            (json!({"score": 5, "reason": "x", "mood": 1}), "the answer has `mood`, which the schema does not allow"),
        ];
        for (v, want) in cases {
            assert_eq!(validate(&s, &v), Err(want.to_owned()), "{v}");
        }
    }

    #[test]
    fn integers_types_lists_and_any_of() {
        let s = json!({"type": ["integer", "null"]});
        assert!(validate(&s, &json!(3)).is_ok());
        assert!(validate(&s, &json!(3.0)).is_ok(), "a float without a fraction is an integer");
        assert!(validate(&s, &json!(null)).is_ok());
        assert_eq!(validate(&s, &json!(3.5)), Err("the answer must be integer or null, not a number".into()));
        let any = json!({"anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}]});
        assert!(validate(&any, &json!("x")).is_ok());
        assert_eq!(validate(&any, &json!(-1)), Err("the answer fits none of the `anyOf` schemas".into()));
    }

    #[test]
    fn schemas_are_checked_and_unchecked_keywords_listed() {
        let (errors, unchecked) = check_schema(&judge());
        assert!(errors.is_empty() && unchecked.is_empty(), "{errors:?} {unchecked:?}");
        let bad = json!({
            "type": "obj",
            "properties": {"a": {"type": "string", "pattern": "^x"}, "b": 3},
            "required": "a",
            "minItems": -1,
        });
        let (errors, unchecked) = check_schema(&bad);
        assert_eq!(
            errors,
            [
                "`/minItems`: `minItems` must be a non-negative integer",
                "`/properties/b`: a schema must be a table",
                "`/required`: `required` must be a list of property names",
                "`/type`: `type` must be one of object, array, string, number, integer, boolean, null (or a list of them)",
            ]
        );
        assert_eq!(unchecked, ["/properties/a/pattern"]);
    }
}
