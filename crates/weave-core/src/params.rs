//! Reading a table of the pipeline file with every problem reported at its place.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::conf::{ConfItem, ConfTable, ConfValue};
use crate::context::BuildContext;
use crate::diagnostic::{Diagnostic, Diagnostics, Location, SourceFile, did_you_mean};
use crate::policy::RetryPolicy;
use crate::spec::LlmProvider;
use crate::step::CanonicalConfig;
use crate::units::{parse_bytes, parse_duration};
use crate::value::Value;

/// A table of the pipeline file (a step's own keys, or a top-level table) being read by
/// its owner.
///
/// Each getter returns `None` when the key is absent or wrong, and records a diagnostic
/// that names the file, line, column and step when it is wrong, so that a constructor can
/// read every key and report every problem at once. Keys that nobody read are reported by
/// [`Params::finish`] as unknown, with a "did you mean" hint.
#[derive(Debug)]
pub struct Params {
    table: ConfTable,
    file: SourceFile,
    step: Option<String>,
    context: String,
    span: Option<std::ops::Range<usize>>,
    read: RefCell<Vec<bool>>,
    diags: RefCell<Diagnostics>,
    pipeline: Option<Arc<BuildContext>>,
    retry: Option<RetryPolicy>,
    kind: Option<String>,
    /// The step's declared `schema`, and whether its kind took it to check itself.
    schema: Option<Arc<crate::declared::DeclaredSchema>>,
    schema_taken: Cell<bool>,
}

impl Params {
    /// Reads `table` from `file`; `context` names it in messages (`"step"`, `"[retry]"`)
    /// and `step` is the step id it belongs to, if any.
    pub fn new(table: ConfTable, file: SourceFile, context: impl Into<String>, step: Option<String>) -> Self {
        let n = table.entries.len();
        Params {
            table,
            file,
            step,
            context: context.into(),
            span: None,
            read: RefCell::new(vec![false; n]),
            diags: RefCell::default(),
            pipeline: None,
            retry: None,
            kind: None,
            schema: None,
            schema_taken: Cell::new(false),
        }
    }

    /// Gives the step its declared `schema`, read with the keys every step takes.
    pub fn with_schema(mut self, schema: Option<Arc<crate::declared::DeclaredSchema>>) -> Self {
        self.schema = schema;
        self
    }

    /// Reads the table's own `schema` key as the step's declared schema: for a step built
    /// from its keys alone ([`Registry::build`](crate::Registry::build)), where the keys
    /// every step takes are not read apart from the kind's.
    pub fn reading_schema(mut self) -> Self {
        self.schema = crate::declared::DeclaredSchema::read(&self, "schema").map(Arc::new);
        self
    }

    /// The step's declared schema, taken by a kind that checks its records against it
    /// itself (`export_parquet`, whose file's columns it fixes): the step is then not
    /// wrapped in the check every other step with a schema gets
    /// ([`crate::checked::with_declared_schema`]).
    pub fn declared_schema(&self) -> Option<Arc<crate::declared::DeclaredSchema>> {
        self.schema_taken.set(true);
        self.schema.clone()
    }

    /// The declared schema its kind left to the builder to check, if any.
    pub(crate) fn schema_left(&self) -> Option<Arc<crate::declared::DeclaredSchema>> {
        self.schema.clone().filter(|_| !self.schema_taken.get())
    }

    /// Says which kind the table is a step of, for [`Params::canonical`]: keys declared
    /// output-neutral for that kind stay out of its cache key.
    pub fn of_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Gives the table its pipeline: the LLM providers a step may name, the cache folder,
    /// shared state (see [`BuildContext`]). Tables read with [`Params::table`] inherit it.
    pub fn with_context(mut self, context: Arc<BuildContext>) -> Self {
        self.pipeline = Some(context);
        self
    }

    /// Sets the step's retry policy as the pipeline file resolves it (`[retry]` under the
    /// step's own `retry`), for steps that retry inside a call.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The pipeline around the table; a table read on its own (a test) has an empty one.
    pub fn context(&self) -> Arc<BuildContext> {
        self.pipeline.clone().unwrap_or_default()
    }

    /// The step's retry policy as the pipeline file resolves it (the default policy for a
    /// table read on its own). The executor retries a failed call with it; a step that
    /// makes several requests in one call (one per record, to an LLM) retries each request
    /// with it instead, so that one flaky request does not repeat the others.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.unwrap_or_default()
    }

    /// Sets where the table itself was written, which messages about a missing key point at.
    pub fn spanning(mut self, span: std::ops::Range<usize>) -> Self {
        self.span = Some(span);
        self
    }

    /// The step id, if this table belongs to a step.
    pub fn step_id(&self) -> Option<&str> {
        self.step.as_deref()
    }

    /// The pipeline file.
    pub fn file(&self) -> &SourceFile {
        &self.file
    }

    /// The raw item for `key`, marked as read. For values with structure of their own (a
    /// list of rules); report problems in it with [`Params::error_at`].
    pub fn item(&self, key: &str) -> Option<&ConfItem> {
        let i = self.table.entries.iter().position(|(k, _, _)| k == key)?;
        self.read.borrow_mut()[i] = true;
        Some(&self.table.entries[i].2)
    }

    /// Whether the table has `key` (does not mark it read).
    pub fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    /// The location of a span, for diagnostics.
    pub fn locate(&self, span: std::ops::Range<usize>) -> Location {
        self.file.locate(span)
    }

    /// Records an error about `item`.
    pub fn error_at(&self, item: &ConfItem, message: impl Into<String>) -> &Self {
        self.push(Diagnostic::error(message).with_code("invalid-value").at(Some(self.file.locate(item.span.clone()))));
        self
    }

    /// Records a diagnostic, naming this table's step.
    pub fn push(&self, mut d: Diagnostic) {
        if d.step.is_none() {
            d.step.clone_from(&self.step);
        }
        self.diags.borrow_mut().push(d);
    }

    /// Whether any error has been recorded.
    pub fn has_errors(&self) -> bool {
        self.diags.borrow().has_errors()
    }

    fn wrong_type(&self, key: &str, item: &ConfItem, want: &str) {
        self.push(
            Diagnostic::error(format!("`{key}` must be {want}, not {}", item.value.type_name()))
                .with_code("invalid-type")
                .at(Some(self.file.locate(item.span.clone()))),
        );
    }

    fn missing(&self, key: &str, what: &str) {
        let span = self.span.clone().or_else(|| self.table.entries.first().map(|(_, s, _)| s.clone()));
        let loc = span.map(|s| self.file.locate(s));
        self.push(Diagnostic::error(format!("missing required key `{key}` ({what})")).with_code("missing-key").at(loc));
    }

    /// A string.
    pub fn str(&self, key: &str) -> Option<String> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(key, item, "a string");
                None
            }
        }
    }

    /// A string that must be there; `what` says what it is for the message.
    pub fn required_str(&self, key: &str, what: &str) -> Option<String> {
        if !self.has(key) {
            self.missing(key, what);
            return None;
        }
        self.str(key)
    }

    /// One of a fixed set of words.
    pub fn choice(&self, key: &str, choices: &[&'static str]) -> Option<&'static str> {
        let item = self.item(key)?;
        let ConfValue::Str(s) = &item.value else {
            self.wrong_type(key, item, &format!("one of {}", quote_list(choices)));
            return None;
        };
        if let Some(c) = choices.iter().find(|c| **c == s) {
            return Some(c);
        }
        let mut d = Diagnostic::error(format!("`{key}` must be one of {}, not \"{s}\"", quote_list(choices)))
            .with_code("invalid-value")
            .at(Some(self.file.locate(item.span.clone())));
        if let Some(m) = did_you_mean(s, choices.iter().copied()) {
            d = d.with_help(format!("did you mean \"{m}\"?"));
        }
        self.push(d);
        None
    }

    /// A non-negative integer.
    pub fn u64(&self, key: &str) -> Option<u64> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Int(i) if *i >= 0 => Some(*i as u64),
            ConfValue::Int(_) => {
                self.error_at(item, format!("`{key}` must not be negative"));
                None
            }
            _ => {
                self.wrong_type(key, item, "a non-negative integer");
                None
            }
        }
    }

    /// A non-negative integer from `min` to `max`; a value outside is an error at its
    /// place that gives the range. For settings that make threads, memory or work in
    /// proportion (`max_concurrent`, `batch_size`), so that an absurd value is refused
    /// before it is acted on.
    pub fn u64_in(&self, key: &str, min: u64, max: u64) -> Option<u64> {
        let n = self.u64(key)?;
        if (min..=max).contains(&n) {
            return Some(n);
        }
        if let Some(item) = self.item(key) {
            let range = if max == u64::MAX { format!("at least {min}") } else { format!("from {min} to {max}") };
            self.error_at(item, format!("`{key}` must be {range}, not {n}"));
        }
        None
    }

    /// A number (integers are accepted).
    pub fn f64(&self, key: &str) -> Option<f64> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Int(i) => Some(*i as f64),
            ConfValue::Float(f) => Some(*f),
            _ => {
                self.wrong_type(key, item, "a number");
                None
            }
        }
    }

    /// A number as written: an int stays a [`Value::Int`] (a float would round one past
    /// 2^53), a float is a [`Value::Float`]; for bounds compared exactly
    /// ([`ValueRef::cmp_number`](crate::ValueRef::cmp_number)).
    pub fn number(&self, key: &str) -> Option<Value> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Int(i) => Some(Value::Int(*i)),
            ConfValue::Float(f) => Some(Value::Float(*f)),
            _ => {
                self.wrong_type(key, item, "a number");
                None
            }
        }
    }

    /// A boolean.
    pub fn bool(&self, key: &str) -> Option<bool> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(key, item, "true or false");
                None
            }
        }
    }

    /// A size: `"4GB"`, `"512MiB"`, or an integer number of bytes.
    pub fn bytes(&self, key: &str) -> Option<u64> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Int(i) if *i >= 0 => Some(*i as u64),
            ConfValue::Str(s) => parse_bytes(s).map_err(|e| self.error_at(item, e)).ok(),
            _ => {
                self.wrong_type(key, item, "a size such as \"4GB\" or \"512MiB\"");
                None
            }
        }
    }

    /// A duration: `"5s"`, `"250ms"`.
    pub fn duration(&self, key: &str) -> Option<Duration> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Str(s) => parse_duration(s).map_err(|e| self.error_at(item, e)).ok(),
            ConfValue::Int(i) => {
                self.error_at(item, format!("`{key}` needs a unit"))
                    .push_help(format!("write \"{i}s\" for seconds or \"{i}ms\" for milliseconds"));
                None
            }
            _ => {
                self.wrong_type(key, item, "a duration such as \"5s\" or \"250ms\"");
                None
            }
        }
    }

    /// A duration that must be more than zero: a timeout, a window. (`"0s"` would stop a
    /// call before it starts, or judge a rate over no time at all.)
    pub fn positive_duration(&self, key: &str) -> Option<Duration> {
        let d = self.duration(key)?;
        if d.is_zero() {
            if let Some(item) = self.item(key) {
                self.error_at(item, format!("`{key}` must be more than zero"));
            }
            return None;
        }
        Some(d)
    }

    /// A path, resolved against the pipeline file's folder (no I/O: it is not checked to
    /// exist here).
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        let s = self.str(key)?;
        Some(resolve(self.file.path(), &s))
    }

    /// A path that must be there.
    pub fn required_path(&self, key: &str, what: &str) -> Option<PathBuf> {
        if !self.has(key) {
            self.missing(key, what);
            return None;
        }
        self.path(key)
    }

    /// The LLM provider that `key` names (`llm = "local"` for `[llm.local]`). When the key
    /// is absent and the pipeline declares exactly one provider, that one. A name that
    /// matches no provider, or no provider at all, is an error with a hint.
    pub fn llm(&self, key: &str) -> Option<Arc<LlmProvider>> {
        let ctx = self.context();
        let names: Vec<&str> = ctx.llm_providers().map(|p| p.name.as_str()).collect();
        let Some(item) = self.item(key) else {
            let mut all = ctx.llm_providers();
            return match (all.next(), all.next()) {
                (Some(only), None) => Some(Arc::clone(only)),
                (None, _) => {
                    let span = self.span.clone().or_else(|| self.table.entries.first().map(|(_, s, _)| s.clone()));
                    self.push(
                        Diagnostic::error("the pipeline declares no LLM provider for this step to call")
                            .with_code("missing-key")
                            .at(span.map(|s| self.file.locate(s)))
                            .with_help("add an `[llm.NAME]` table with `base_url` and `model`, and name it with `llm = \"NAME\"`"),
                    );
                    None
                }
                _ => {
                    self.missing(key, &format!("the LLM provider to call: {}", quote_list(&names)));
                    None
                }
            };
        };
        let ConfValue::Str(name) = &item.value else {
            self.wrong_type(key, item, "the name of an `[llm.NAME]` provider");
            return None;
        };
        if let Some(p) = ctx.llm(name) {
            return Some(Arc::clone(p));
        }
        let mut d = Diagnostic::error(format!("no LLM provider `{name}`: the pipeline has no `[llm.{name}]` table"))
            .with_code("invalid-value")
            .at(Some(self.file.locate(item.span.clone())));
        d = match did_you_mean(name, names.iter().copied()) {
            Some(m) => d.with_help(format!("did you mean \"{m}\"?")),
            None if names.is_empty() => d.with_help(format!("declare it: `[llm.{name}]` with `base_url` and `model`")),
            None => d.with_help(format!("the providers are {}", quote_list(&names))),
        };
        self.push(d);
        None
    }

    /// A list of strings; a single string is taken as a list of one.
    pub fn str_list(&self, key: &str) -> Option<Vec<String>> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Str(s) => Some(vec![s.clone()]),
            ConfValue::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for i in a {
                    match &i.value {
                        ConfValue::Str(s) => out.push(s.clone()),
                        other => {
                            self.error_at(i, format!("`{key}` must list strings, not {}", other.type_name()));
                            return None;
                        }
                    }
                }
                Some(out)
            }
            _ => {
                self.wrong_type(key, item, "a string or a list of strings");
                None
            }
        }
    }

    /// A nested table, to read with its own [`Params`].
    pub fn table(&self, key: &str) -> Option<Params> {
        let item = self.item(key)?;
        match &item.value {
            ConfValue::Table(t) => {
                let context = if self.step.is_some() { format!("`{key}`") } else { format!("[{key}]") };
                let mut nested =
                    Params::new(t.clone(), self.file.clone(), context, self.step.clone()).spanning(item.span.clone());
                nested.pipeline.clone_from(&self.pipeline);
                nested.retry = self.retry;
                Some(nested)
            }
            _ => {
                self.wrong_type(key, item, "a table");
                None
            }
        }
    }

    /// Takes in the diagnostics of a nested table read with [`Params::table`].
    pub fn absorb(&self, nested: Params, known: &[&str]) {
        let d = nested.finish(known);
        self.diags.borrow_mut().extend(d);
    }

    /// The canonical bytes of the table's keys, for the cache key: every key as written
    /// (keys sorted), but those declared output-neutral for the table's kind in
    /// [`OUTPUT_NEUTRAL`](crate::OUTPUT_NEUTRAL). A step's configuration is this, plus
    /// what it adds from elsewhere (an LLM provider's model).
    pub fn canonical(&self) -> CanonicalConfig {
        crate::keys::kind_config(&self.table, self.kind.as_deref())
    }

    /// Reports every key not read as unknown, with a suggestion from `known`, and returns
    /// all diagnostics recorded. A key in `known` that was not read after an error is left
    /// alone: its builder stopped at the error, and the key is not unknown.
    pub fn finish<K: AsRef<str>>(self, known: &[K]) -> Diagnostics {
        let known: Vec<&str> = known.iter().map(AsRef::as_ref).collect();
        let read = self.read.into_inner();
        let mut diags = self.diags.into_inner();
        let stopped = diags.has_errors();
        for ((key, span, _), read) in self.table.entries.iter().zip(read) {
            if read || (stopped && known.contains(&key.as_str())) {
                continue;
            }
            let mut d = Diagnostic::error(format!("unknown key `{key}` in {}", self.context))
                .with_code("unknown-key")
                .at(Some(self.file.locate(span.clone())));
            d.step.clone_from(&self.step);
            d = match did_you_mean(key, known.iter().copied()) {
                Some(m) => d.with_help(format!("did you mean `{m}`?")),
                None if known.is_empty() => d.with_help("this table takes no keys"),
                None => d.with_help(format!("known keys: {}", known.join(", "))),
            };
            diags.push(d);
        }
        diags
    }

    fn push_help(&self, help: String) {
        if let Some(d) = self.diags.borrow_mut().0.last_mut() {
            d.help = Some(help);
        }
    }
}

/// `path` as written in the pipeline file at `file`, resolved against its folder.
pub fn resolve(file: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn quote_list(words: &[&str]) -> String {
    let q: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    q.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Params {
        let file = SourceFile::new("dir/p.toml", text);
        Params::new(crate::conf::parse(text).unwrap(), file, "step", Some("s".into()))
    }

    fn messages(d: &Diagnostics) -> Vec<String> {
        d.0.iter()
            .map(|d| {
                format!("{}:{} {}", d.location.as_ref().unwrap().line, d.location.as_ref().unwrap().column, d.message)
            })
            .collect()
    }

    #[test]
    fn typed_getters_report_at_the_value() {
        let p = params("size = \"4GB\"\nwait = 5\nmode = \"fats\"\npath = \"data.csv\"\nn = -1\nrulz = 1\n");
        assert_eq!(p.bytes("size"), Some(4_000_000_000));
        assert_eq!(p.duration("wait"), None);
        assert_eq!(p.choice("mode", &["fast", "slow"]), None);
        assert_eq!(p.path("path"), Some(PathBuf::from("dir/data.csv")));
        assert_eq!(p.u64("n"), None);
        assert_eq!(p.str("absent"), None);
        let d = p.finish(&["size", "wait", "mode", "path", "n", "rules"]);
        assert_eq!(
            messages(&d),
            [
                "2:8 `wait` needs a unit",
                "3:8 `mode` must be one of \"fast\", \"slow\", not \"fats\"",
                "5:5 `n` must not be negative",
                "6:1 unknown key `rulz` in step"
            ]
        );
        assert_eq!(d.0[0].help.as_deref(), Some("write \"5s\" for seconds or \"5ms\" for milliseconds"));
        assert_eq!(d.0[1].help.as_deref(), Some("did you mean \"fast\"?"));
        assert_eq!(d.0[3].help.as_deref(), Some("did you mean `rules`?"));
        assert!(d.0.iter().all(|d| d.step.as_deref() == Some("s")));
    }

    // regression: a builder that stopped at an error left its later keys unread, and they
    // were reported as unknown with a did-you-mean naming themselves
    // ("unknown key `max_record_bytes` ... did you mean `max_record_bytes`?").
    #[test]
    fn a_known_key_left_unread_after_an_error_is_not_called_unknown() {
        let p = params(
            "n = -1
later = 2
latre = 3
",
        );
        assert_eq!(p.u64("n"), None);
        let d = p.finish(&["n", "later"]);
        assert_eq!(messages(&d), ["1:5 `n` must not be negative", "3:1 unknown key `latre` in step"]);
        assert_eq!(d.0[1].help.as_deref(), Some("did you mean `later`?"));
    }

    fn provider(name: &str) -> crate::spec::LlmProvider {
        crate::spec::LlmProvider {
            name: name.into(),
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "m".into(),
            api_key_env: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            timeout: None,
            prompt_price_per_million: None,
            completion_price_per_million: None,
            batch: false,
            batch_discount: None,
            batch_poll_interval: None,
            config: Default::default(),
        }
    }

    #[test]
    fn llm_providers_are_checked_by_name() {
        let two = Arc::new(BuildContext::new([provider("local"), provider("openai")], None));
        let p = params("llm = \"locl\"\n").with_context(Arc::clone(&two));
        assert!(p.llm("llm").is_none());
        let p2 = params("llm = \"openai\"\nx = 1\n").with_context(Arc::clone(&two));
        assert_eq!(p2.llm("llm").map(|p| p.name.clone()).as_deref(), Some("openai"));
        let p3 = params("x = 1\n").with_context(Arc::clone(&two));
        assert!(p3.llm("llm").is_none(), "two providers: the step must say which");
        let one = Arc::new(BuildContext::new([provider("local")], None));
        let p4 = params("x = 1\n").with_context(one);
        assert_eq!(p4.llm("llm").map(|p| p.name.clone()).as_deref(), Some("local"), "the only provider");
        let p5 = params("x = 1\n");
        assert!(p5.llm("llm").is_none());

        let d = p.finish(&["llm"]);
        assert_eq!(messages(&d), ["1:7 no LLM provider `locl`: the pipeline has no `[llm.locl]` table"]);
        assert_eq!(d.0[0].help.as_deref(), Some("did you mean \"local\"?"));
        let _ = (p3.u64("x"), p5.u64("x"));
        let d = p3.finish(&["llm", "x"]);
        assert_eq!(messages(&d), ["1:1 missing required key `llm` (the LLM provider to call: \"local\", \"openai\")"]);
        let d = p5.finish(&["llm", "x"]);
        assert_eq!(messages(&d), ["1:1 the pipeline declares no LLM provider for this step to call"]);
    }

    #[test]
    fn nested_tables_inherit_the_context_and_retry_policy() {
        let ctx = Arc::new(BuildContext::new([provider("local")], Some(PathBuf::from("/c"))));
        let retry = RetryPolicy { max_retries: 9, ..RetryPolicy::default() };
        let p = params("noiser = { llm = \"local\" }\n").with_context(ctx).with_retry(retry);
        let nested = p.table("noiser").unwrap();
        assert_eq!(nested.retry_policy().max_retries, 9);
        assert_eq!(nested.context().cache_dir(), Some(Path::new("/c")));
        assert!(nested.llm("llm").is_some());
        assert_eq!(params("").retry_policy(), RetryPolicy::default());
    }

    #[test]
    fn canonical_bytes_ignore_order_and_neutral_keys() {
        let a = params("b = 1\na = { y = 2, x = [1, \"s\"] }\nconcurrency = 4\n").of_kind("llm_generate");
        let b = params("[a]\nx = [1, \"s\"]\ny = 2\n").of_kind("llm_generate");
        let b2 = params("b = 1\nconcurrency = 8\n[a]\nx = [1, \"s\"]\ny = 2\n").of_kind("llm_generate");
        assert_ne!(a.canonical(), b.canonical());
        assert_eq!(a.canonical(), b2.canonical());
        assert_eq!(a.canonical().to_string(), r#"{"a":{"x":[1,"s"],"y":2},"b":1}"#);
        // Another kind's `concurrency` is not declared neutral.
        assert_ne!(params("concurrency = 4\n").of_kind("clean").canonical(), params("").of_kind("clean").canonical());
    }
}
