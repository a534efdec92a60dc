//! The LLM steps against the test server: what they send, what they make of the answers,
//! faults, the cache of answers, concurrency, the shared rate budget, mistakes in the
//! pipeline file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weave_core::{
    Batch, BuildContext, ConfTable, LlmProvider, Params, Record, RetryPolicy, SourceFile, Step, StepContext, StepError,
    Transform, Value,
};
use weave_testkit::{Reply, TestServer};

/// A pipeline's context with one provider, `local`, at `url`, and a cache folder.
struct Env {
    ctx: Arc<BuildContext>,
    _dir: tempfile::TempDir,
}

fn provider(url: &str, rpm: Option<u64>) -> LlmProvider {
    LlmProvider {
        name: "local".into(),
        base_url: url.into(),
        model: "test-model".into(),
        api_key_env: None,
        requests_per_minute: rpm,
        tokens_per_minute: None,
        timeout: Some(Duration::from_secs(10)),
        prompt_price_per_million: Some(1.0),
        completion_price_per_million: Some(2.0),
        batch: false,
        batch_discount: None,
        batch_poll_interval: None,
        config: Default::default(),
    }
}

fn env_with(providers: Vec<LlmProvider>, cache: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = cache.then(|| dir.path().join("cache"));
    Env { ctx: Arc::new(BuildContext::new(providers, cache_dir)), _dir: dir }
}

fn env(server: &TestServer) -> Env {
    env_with(vec![provider(&server.url(), None)], true)
}

/// Retries that do not slow the tests down.
fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        retry_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

fn params(config: &str, ctx: &Arc<BuildContext>) -> Params {
    let table = ConfTable::parse(config).unwrap_or_else(|e| panic!("bad test TOML: {e:?}"));
    Params::new(table, SourceFile::new("t.toml", config), "step", Some("s".into()))
        .with_context(Arc::clone(ctx))
        .with_retry(fast())
}

/// Builds a step of `kind`, panicking with the diagnostics if it fails.
fn build(kind: &str, config: &str, ctx: &Arc<BuildContext>) -> Arc<dyn Transform> {
    let k = crate::registry().get(kind).cloned().unwrap_or_else(|| panic!("no kind {kind}"));
    let p = params(config, ctx);
    let step = (k.build)(&p);
    let diags = p.finish(&k.all_keys());
    assert!(!diags.has_errors(), "{diags}");
    match step {
        Some(Step::Transform(t)) => t,
        other => panic!("{kind} built {other:?}"),
    }
}

/// The diagnostics of building `kind` from `config`, as `line:column message`.
fn diagnostics(kind: &str, config: &str, ctx: &Arc<BuildContext>) -> Vec<String> {
    let k = crate::registry().get(kind).cloned().unwrap_or_else(|| panic!("no kind {kind}"));
    let p = params(config, ctx);
    let _ = (k.build)(&p);
    p.finish(&k.all_keys())
        .0
        .iter()
        .map(|d| {
            let l = d.location.as_ref().map_or("-".into(), |l| format!("{}:{}", l.line, l.column));
            let help = d.help.as_ref().map_or(String::new(), |h| format!(" ({h})"));
            format!("{l} {}{help}", d.message)
        })
        .collect()
}

/// What one call of a step did.
struct Call {
    out: Result<Batch, StepError>,
    rejected: Vec<(String, Record)>,
    dropped: Vec<(String, u64)>,
    stats: HashMap<String, Value>,
}

impl Call {
    fn out(&self) -> &Batch {
        self.out.as_ref().unwrap_or_else(|e| panic!("the call failed: {e}"))
    }

    fn stat(&self, name: &str) -> i64 {
        match self.stats.get(name) {
            Some(Value::Int(n)) => *n,
            None => 0,
            other => panic!("{name}: {other:?}"),
        }
    }

    fn column(&self, name: &str) -> Vec<Value> {
        self.out().rows().map(|r| r.get(name).map_or(Value::Null, |v| v.to_owned())).collect()
    }
}

fn call(step: &dyn Transform, batch: &Batch) -> Call {
    let mut ctx = StepContext::new("s", 42, 0, Arc::default());
    let out = step.apply(batch, &mut ctx);
    Call {
        out,
        rejected: ctx.take_rejected().into_iter().map(|r| (r.reason, r.record.unwrap_or_default())).collect(),
        dropped: ctx.take_dropped(),
        stats: ctx.take_added_stats().into_iter().collect(),
    }
}

fn texts(texts: &[&str]) -> Batch {
    let recs: Vec<Record> =
        texts.iter().enumerate().map(|(i, t)| Record::new().with("id", i as i64).with("text", *t)).collect();
    Batch::from_records(&recs)
}

fn strings(values: &[Value]) -> Vec<&str> {
    values.iter().map(|v| v.as_str().unwrap_or("<null>")).collect()
}

/// The text between "Text:\n" and the end of a noiser's prompt.
fn text_of(prompt: &str) -> &str {
    prompt.rsplit("Text:\n").next().unwrap_or(prompt)
}

#[test]
fn every_llm_kind_takes_the_common_keys() {
    for kind in [&*weave_llm::GENERATE_KIND, &*weave_llm::JUDGE_KIND] {
        for k in weave_llm::COMMON_KEYS {
            assert!(kind.keys.contains(&(*k).into()), "{} lacks `{k}`", kind.name);
        }
    }
    // `augment` lists the keys of its LLM noisers with its own.
    let own = ["noiser", "template"];
    for k in weave_llm::COMMON_KEYS.iter().chain(&own).chain(weave_llm::NOISER_KEYS) {
        assert!(crate::augment::KIND.keys.contains(&(*k).into()), "augment lacks `{k}`");
    }
}

#[test]
fn style_transfer_sends_the_prompt_and_writes_beside_the_original() {
    let server = TestServer::start(|r| Reply::text(format!("  TECH: {}\n", text_of(r.prompt())))).unwrap();
    let env = env(&server);
    let step = build("augment", "noiser = \"llm_style_transfer\"\nstyle = \"technical\"", &env.ctx);
    let c = call(&*step, &texts(&["my phone broke", "the app is slow"]));
    assert_eq!(strings(&c.column("text")), ["my phone broke", "the app is slow"], "the original is kept");
    assert_eq!(strings(&c.column("text_noisy")), ["TECH: my phone broke", "TECH: the app is slow"]);
    assert_eq!(strings(&c.column("text_noisy_noiser")), ["llm_style_transfer(style=technical,model=test-model)"; 2]);
    let seeds = c.column("text_noisy_seed");
    assert!(seeds.iter().all(|s| s.as_str().is_some_and(|s| s.len() == 16)), "{seeds:?}");
    assert_ne!(seeds[0], seeds[1]);

    let log = server.requests();
    assert_eq!(log.len(), 2);
    let r = &log[0].request;
    assert!(r.prompt().starts_with("Rewrite the text in a technical writing style"), "{}", r.prompt());
    assert!(r.system().is_some_and(|s| s.contains("Reply with the rewritten text only")));
    assert_eq!(r.field("model"), "test-model");
    assert_eq!(r.field("temperature"), 0.7);
    assert!(r.field("seed").is_u64());
    assert!(r.field("max_tokens").is_null(), "no limit unless asked");
    // The seed written is the one sent.
    let sent: Vec<String> = log.iter().map(|l| format!("{:016x}", l.request.field("seed").as_u64().unwrap())).collect();
    let mut written: Vec<String> = seeds.iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    written.sort();
    assert_eq!(sent_sorted, written);

    assert_eq!((c.stat("requests"), c.stat("answers"), c.stat("cache_hits")), (2, 2, 0));
    let prompt_tokens: i64 = log
        .iter()
        .map(|l| l.request.messages().iter().map(|(_, m)| m.split_whitespace().count() as i64 + 1).sum::<i64>())
        .sum();
    assert_eq!(c.stat("prompt_tokens"), prompt_tokens, "the usage the server reported");
    assert_eq!(c.stat("completion_tokens"), 4 + 5);
    let cost = match c.stats.get("cost") {
        Some(Value::Float(x)) => *x,
        other => panic!("{other:?}"),
    };
    assert!((cost - (prompt_tokens as f64 * 1.0 + 9.0 * 2.0) / 1e6).abs() < 1e-12, "{cost}");
}

#[test]
fn every_record_is_answered_or_set_aside_with_a_reason_never_both_never_twice() {
    // Faults by prompt: each kind on the first tries, and some that never succeed.
    let server = TestServer::start(|r| {
        let text = text_of(r.prompt()).to_owned();
        let n: usize = text.trim_start_matches("record ").parse().unwrap_or(0);
        let fault = match (n % 10, r.attempt) {
            (1, 1 | 2) => Some(Reply::error(500, "boom")),
            (2, 1) => Some(Reply::too_many_requests("0")),
            (3, 1..=3) => Some(Reply::Malformed),
            (4, 1) => Some(Reply::Drop),
            (5, _) => Some(Reply::error(503, "down for good")),
            (6, _) => Some(Reply::error(400, "context too long")),
            (7, 1) => Some(Reply::error(502, "gateway").after(Duration::from_millis(20))),
            _ => None,
        };
        fault.unwrap_or_else(|| Reply::text(format!("noisy {text}")))
    })
    .unwrap();
    let env = env(&server);
    let step = build("augment", "noiser = \"llm_typos\"\nconcurrency = 8", &env.ctx);
    let names: Vec<String> = (0..60).map(|i| format!("record {i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let c = call(&*step, &texts(&refs));

    let answered: Vec<String> = c.column("text").iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let set_aside: Vec<String> =
        c.rejected.iter().map(|(_, r)| r.get("text").and_then(Value::as_str).unwrap().to_owned()).collect();
    let mut all: Vec<String> = answered.iter().chain(&set_aside).cloned().collect();
    all.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(all, expected, "each record exactly once, in the output or set aside");
    assert_eq!(set_aside.len(), 12, "the 5s and 6s");
    for (reason, r) in &c.rejected {
        let n: usize = r.get("text").and_then(Value::as_str).unwrap().trim_start_matches("record ").parse().unwrap();
        let want = match n % 10 {
            5 => "llm_typos: no answer after 4 attempts: HTTP 503: down for good",
            6 => "llm_typos: the provider refused the request (HTTP 400): context too long",
            _ => panic!("record {n} set aside: {reason}"),
        };
        assert_eq!(reason, want);
    }
    // In input order, each answer its own.
    for (t, noisy) in c.column("text").iter().zip(c.column("text_noisy")) {
        assert_eq!(noisy.as_str().unwrap(), format!("noisy {}", t.as_str().unwrap()));
    }
    // Answered once each: no answer was asked for twice.
    let mut answers = server.answered_prompts();
    let before = answers.len();
    answers.sort();
    answers.dedup();
    assert_eq!(before, answers.len());
    assert_eq!(before, 48);
    assert_eq!(c.stat("answers"), 48);
    assert_eq!(c.stat("failed_requests"), 12);
    assert_eq!(c.stat("requests") as usize, server.total());
    assert!(c.stat("retries") > 0 && c.stat("rate_limited") == 6);
}

#[test]
fn a_rerun_asks_nothing_already_answered_and_settings_that_change_no_answer_keep_their_answers() {
    let server = TestServer::start(|r| {
        if text_of(r.prompt()) == "long one" && r.field("max_tokens").as_u64() == Some(5) {
            Reply::truncated("cut")
        } else {
            Reply::text(format!("v1 {}", text_of(r.prompt())))
        }
    })
    .unwrap();
    let env = env(&server);
    let batch = texts(&["a", "b", "long one"]);
    let first = build("augment", "noiser = \"llm_typos\"\nmax_tokens = 5", &env.ctx);
    let c1 = call(&*first, &batch);
    assert_eq!(c1.rejected.len(), 1);
    assert_eq!(c1.rejected[0].0, "llm_typos: the answer was cut off at max_tokens = 5 (raise `max_tokens`)");
    assert_eq!(server.total(), 3);

    // The same step again (a re-run, a resumed run): nothing is sent.
    let again = build("augment", "noiser = \"llm_typos\"\nmax_tokens = 5\nconcurrency = 3", &env.ctx);
    let c2 = call(&*again, &batch);
    assert_eq!(server.total(), 3, "concurrency changes no answer");
    assert_eq!(c2.column("text_noisy"), c1.column("text_noisy"));
    assert_eq!((c2.stat("requests"), c2.stat("cache_hits")), (0, 3));
    assert!(c2.stat("cached_tokens") > 0);

    // A larger limit: the finished answers still serve; the cut one is asked again.
    let larger = build("augment", "noiser = \"llm_typos\"\nmax_tokens = 500", &env.ctx);
    let c3 = call(&*larger, &batch);
    assert!(c3.rejected.is_empty());
    assert_eq!(server.total(), 4);
    assert_eq!(server.requests()[3].request.field("max_tokens"), 500);
    assert_eq!(strings(&c3.column("text_noisy")), ["v1 a", "v1 b", "v1 long one"]);

    // What changes the answer changes the request: a new temperature is asked again.
    let hotter = build("augment", "noiser = \"llm_typos\"\nmax_tokens = 500\ntemperature = 1.2", &env.ctx);
    call(&*hotter, &batch);
    assert_eq!(server.total(), 7);
}

#[test]
fn the_same_request_twice_in_a_batch_is_sent_once() {
    let server = TestServer::echo().unwrap();
    let env = env_with(vec![provider(&server.url(), None)], false);
    let step = build("augment", "noiser = \"llm_typos\"", &env.ctx);
    let c = call(&*step, &texts(&["same", "other", "same", "same"]));
    assert_eq!(server.total(), 2);
    let noisy = c.column("text_noisy");
    assert_eq!((&noisy[0], &noisy[2], &noisy[3]), (&noisy[0], &noisy[0], &noisy[0]));
    assert_eq!(c.column("text_noisy_seed")[0], c.column("text_noisy_seed")[3]);
    assert_eq!((c.stat("requests"), c.stat("answers")), (2, 2), "paid once");
}

#[test]
fn without_a_cache_every_run_asks_again() {
    let server = TestServer::echo().unwrap();
    let env = env_with(vec![provider(&server.url(), None)], false);
    let step = build("augment", "noiser = \"llm_typos\"", &env.ctx);
    call(&*step, &texts(&["a", "b"]));
    call(&*step, &texts(&["a", "b"]));
    assert_eq!(server.total(), 4);
}

#[test]
fn a_batch_sends_its_requests_at_once_up_to_the_concurrency() {
    let server = TestServer::builder().latency(Duration::from_millis(50)).start(|r| Reply::text(r.prompt())).unwrap();
    let env = env(&server);
    let step = build("augment", "noiser = \"llm_typos\"\nconcurrency = 8", &env.ctx);
    let names: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let c = call(&*step, &texts(&refs));
    assert_eq!(c.out().len(), 40);
    let most = server.max_in_flight();
    assert!((4..=8).contains(&most), "{most} at once: up to eight, never more");
}

#[test]
fn output_is_the_same_whatever_the_concurrency() {
    let server = TestServer::builder()
        .latency(Duration::from_millis(2))
        .start(|r| Reply::text(format!("{} {}", text_of(r.prompt()), r.field("seed"))))
        .unwrap();
    let mut outs = Vec::new();
    for conc in [1, 7] {
        let env = env(&server);
        let step = build("augment", &format!("noiser = \"llm_typos\"\nconcurrency = {conc}"), &env.ctx);
        let names: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        outs.push(call(&*step, &texts(&refs)).out().clone());
    }
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn steps_of_one_provider_share_its_rate_budget() {
    let server = TestServer::echo().unwrap();
    // 600 a minute: 10 a second, a burst of 10.
    let env = env_with(vec![provider(&server.url(), Some(600))], false);
    let a = build("augment", "noiser = \"llm_typos\"\nconcurrency = 16", &env.ctx);
    let b = build("augment", "noiser = \"llm_style_transfer\"\nstyle = \"casual\"\nconcurrency = 16", &env.ctx);
    let names: Vec<String> = (0..15).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let batch = texts(&refs);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| call(&*a, &batch));
        s.spawn(|| call(&*b, &batch));
    });
    // 30 requests at 10 a second after a burst of 10: two seconds at least, which two
    // budgets of their own (15 each: a burst of 10, then 5 more) would not take.
    assert_eq!(server.total(), 30);
    assert!(t0.elapsed() >= Duration::from_millis(1900), "{:?}", t0.elapsed());
}

#[test]
fn a_429_pauses_every_request_to_the_provider() {
    let server = TestServer::start(|r| {
        if text_of(r.prompt()) == "t0" && r.attempt == 1 {
            Reply::too_many_requests("2")
        } else {
            Reply::text("ok").after(Duration::from_millis(30))
        }
    })
    .unwrap();
    let env = env(&server);
    let step = build("augment", "noiser = \"llm_typos\"\nconcurrency = 4", &env.ctx);
    let names: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let c = call(&*step, &texts(&refs));
    assert_eq!(c.out().len(), 12);
    let log = server.requests();
    let limited = log.iter().find(|l| l.reply == "error").expect("the 429").done.unwrap();
    // Requests already on their way when the 429 came may still arrive just after it (a
    // generous 300 ms, for a loaded machine); none is sent during the rest of the two
    // seconds the provider asked for.
    let during: Vec<Duration> = log
        .iter()
        .filter(|l| l.at > limited + Duration::from_millis(300) && l.at < limited + Duration::from_millis(1800))
        .map(|l| l.at - limited)
        .collect();
    assert!(during.is_empty(), "requests sent during the cool-down, after: {during:?}");
    assert!(log.iter().any(|l| l.at >= limited + Duration::from_millis(1800)), "the others went after it");
    assert_eq!(c.stat("rate_limited"), 1);
}

#[test]
fn a_provider_that_refuses_the_key_stops_the_step_without_repeating_the_key() {
    let server = TestServer::builder().api_key("sk-the-right-one").start(|_| Reply::text("ok")).unwrap();
    let env = env(&server);
    let step = build("augment", "noiser = \"llm_typos\"", &env.ctx);
    let c = call(&*step, &texts(&["a"]));
    let err = c.out.unwrap_err();
    assert!(matches!(err.class(), weave_core::ErrorClass::Fatal));
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert_eq!(server.total(), 1, "not retried");
}

#[test]
fn a_missing_key_variable_is_a_warning_when_built_and_an_error_when_run() {
    let mut p = provider("http://127.0.0.1:9/v1", None);
    p.api_key_env = Some("WEAVE_TEST_NO_SUCH_KEY_VAR".into());
    let env = env_with(vec![p], false);
    assert_eq!(
        diagnostics("augment", "noiser = \"llm_typos\"", &env.ctx),
        [
            "- the environment variable `WEAVE_TEST_NO_SUCH_KEY_VAR` (`api_key_env` of [llm.local]) is not set: set it to the API key"
        ]
    );
    let step = build("augment", "noiser = \"llm_typos\"", &env.ctx);
    let err = call(&*step, &texts(&["a"])).out.unwrap_err();
    assert!(err.to_string().starts_with("the environment variable `WEAVE_TEST_NO_SUCH_KEY_VAR`"), "{err}");
}

#[test]
fn nulls_pass_through_and_non_text_is_a_bad_record() {
    let server = TestServer::echo().unwrap();
    let env = env(&server);
    let step = build("augment", "noiser = \"llm_typos\"", &env.ctx);
    let batch = Batch::from_records(&[
        Record::new().with("text", "a"),
        Record::new().with("text", Value::Null),
        Record::new().with("text", 3i64),
    ]);
    let c = call(&*step, &batch);
    assert_eq!(c.column("text_noisy")[1], Value::Null);
    assert_eq!(c.column("text_noisy_seed")[1], Value::Null);
    assert_eq!(c.out().len(), 2);
    assert_eq!(c.rejected[0].0, "llm_typos: `text` is not text (int)");
    assert_eq!(server.total(), 1);
    // A field of the wrong type altogether, or an output field already there, is the
    // pipeline's mistake.
    let numbers = Batch::from_records(&[Record::new().with("text", 1i64)]);
    assert_eq!(
        call(&*step, &numbers).out.unwrap_err().to_string(),
        "field `text` holds int values, not text: name a text field with `field`"
    );
    let taken = Batch::from_records(&[Record::new().with("text", "a").with("text_noisy", "x")]);
    assert!(call(&*step, &taken).out.unwrap_err().to_string().contains("`text_noisy` is already in the data"));
}

#[test]
fn every_noiser_builds_a_prompt_of_its_own_keys() {
    let server = TestServer::start(|r| Reply::text(r.prompt())).unwrap();
    let env = env(&server);
    let cases = [
        (
            "noiser = \"llm_style_transfer\"\nstyle = \"pirate\"\nstyles = { pirate = \"Talk like a pirate.\" }",
            "Talk like a pirate.",
        ),
        (
            "noiser = { kind = \"llm_persona\", persona = \"Ada\", traits = [\"terse\"] }",
            "Persona: Ada.\nTraits: terse.\nKeep the meaning",
        ),
        (
            "noiser = \"llm_sentiment\"\nsentiment = \"negative\"\nintensity = 0.9\npreserve = [\"refund\"]",
            "Keep these words unchanged: refund.",
        ),
        (
            "noiser = \"llm_language\"\nlanguage = \"es\"\nerror_types = [\"gender agreement\"]\nrate = 0.2",
            "write in Spanish: gender agreement. Change about 20%",
        ),
        ("noiser = \"llm_locale\"\nlocale = \"en-GB\"", "readers in the en-GB locale"),
        (
            "noiser = \"llm_context\"\ncontext_field = \"doc\"\nwindow = 4\ncontext_type = \"conversation\"",
            "conversation:\nhist\n\nText:\nhi",
        ),
        (
            "noiser = \"llm_domain\"\ndomain = \"medical\"\ncategories = [\"dosage\"]",
            "medical errors into the text, of these kinds: dosage (unit confusion",
        ),
        (
            "noiser = \"llm_domain\"\ndomain = \"finance\"\ncategories = [\"rounding errors\"]",
            "finance errors into the text, of these kinds: rounding errors.",
        ),
        ("noiser = \"llm_typos\"\nfrequency = \"high\"\nseverity = \"severe\"", "How often: high. How severe: severe."),
        (
            "noiser = \"llm_typos\"\ntemplate = \"Add typos ({frequency}) to: {text}\"\nsystem = \"Be sloppy.\"",
            "Add typos (moderate) to: hi",
        ),
    ];
    let batch = Batch::from_records(&[Record::new().with("text", "hi").with("doc", "history")]);
    for (config, want) in cases {
        let step = build("augment", config, &env.ctx);
        let c = call(&*step, &batch);
        let prompt = c.column("text_noisy")[0].as_str().unwrap().to_owned();
        assert!(prompt.contains(want), "{config}\n---\n{prompt}");
    }
    let last = server.requests().pop().unwrap();
    assert_eq!(last.request.system(), Some("Be sloppy."));
}

// regression: `llm_persona` with a persona of one's own inherited the built-in "Technical
// Expert"'s description, traits, examples and instructions: the prompt sent said "A
// HURRIED CUSTOMER, A KNOWLEDGEABLE AND PRECISE TECHNICAL PROFESSIONAL".
#[test]
fn a_persona_of_ones_own_gets_none_of_the_built_in_personas_defaults() {
    let server = TestServer::echo().unwrap();
    let env = env(&server);
    let batch = Batch::from_records(&[Record::new().with("text", "The app crashes on start.")]);
    let sent = |config: &str| {
        let step = build("augment", config, &env.ctx);
        call(&*step, &batch).out();
        server.requests().pop().unwrap().request.prompt().to_owned()
    };
    let built_in = [
        "a knowledgeable and precise technical professional",
        "precise, knowledgeable",
        "bounded queue",
        "technically accurate manner",
    ];
    let own = sent("noiser = { kind = \"llm_persona\", persona = \"A hurried customer\" }");
    assert_eq!(
        own,
        "Rewrite the text as this persona would write it.\nPersona: A hurried customer.\nKeep the meaning, the technical terms, numbers and references; change only the style and tone.\n\nText:\nThe app crashes on start."
    );
    let described = sent(
        "noiser = { kind = \"llm_persona\", persona = \"A hurried customer\", description = \"short of time\", examples = [\"fix it now\"] }",
    );
    assert!(
        described
            .contains("Persona: A hurried customer, short of time.\nExamples of their writing:\n- fix it now\nKeep")
    );
    for text in [&own, &described] {
        for words in built_in {
            assert!(!text.contains(words), "{words:?} in\n{text}");
        }
    }
    // The built-in persona keeps its defaults and its prompt, byte for byte.
    let default = sent("noiser = \"llm_persona\"");
    assert!(built_in.iter().all(|w| default.contains(w)), "{default}");
    assert!(default.starts_with(
        "Rewrite the text as this persona would write it.\nPersona: Technical Expert, a knowledgeable and precise technical professional.\nTraits: precise, knowledgeable, professional, analytical, detail-oriented.\nExamples of their writing:\n- The implementation"
    ));
    assert_eq!(sent("noiser = { kind = \"llm_persona\", persona = \"technical expert\" }").len(), default.len());
}

#[test]
fn mistakes_in_a_noiser_are_named_where_they_are() {
    let server = TestServer::echo().unwrap();
    let env = env(&server);
    let wrong = std::cell::RefCell::new(Vec::new());
    let check = |config: &str, want: &[&str]| {
        let got = diagnostics("augment", config, &env.ctx);
        if got != want {
            wrong.borrow_mut().push(format!("{config}\n  got:  {got:?}\n  want: {want:?}"));
        }
    };
    check(
        "noiser = \"llm_stye_transfer\"",
        &["1:10 unknown LLM noiser \"llm_stye_transfer\" (did you mean \"llm_style_transfer\"?)"],
    );
    // Without the prefix, the rule-based noisers are searched first.
    check("noiser = \"style_transfer\"", &["1:10 unknown noiser \"style_transfer\" (did you mean \"style\"?)"]);
    check("noiser = \"persona\"", &["1:10 unknown noiser \"persona\" (did you mean \"llm_persona\"?)"]);
    check(
        "noiser = [\"typos\", { kind = \"llm_style_transfer\", style = \"casual\" }]",
        &["1:20 an LLM noiser is not chained with other noisers in one step: give it an `augment` step of its own"],
    );
    check(
        "noiser = [{ kind = \"llm_locale\", locale = \"fr-CA\" }]\noutput = \"text\"",
        &["2:10 `output` must differ from `field`: augment keeps the original text"],
    );
    check(
        "noiser = \"llm_style_transfer\"\nstyle = \"technicl\"",
        &["2:9 unknown style \"technicl\" (did you mean \"technical\"?)"],
    );
    check(
        "noiser = \"llm_style_transfer\"",
        &["1:1 missing required key `style` (technical, casual, academic, creative, business, or one of `styles`)"],
    );
    check(
        "noiser = \"llm_typos\"\ntemplate = \"{frequncy} {txt}\"",
        &[
            "2:12 `template`: unknown variable `{frequncy}` (did you mean `{frequency}`?) (write `{{` and `}}` for braces)",
            "2:12 `template`: unknown variable `{txt}` (did you mean `{text}`?) (write `{{` and `}}` for braces)",
        ],
    );
    check(
        "noiser = \"llm_typos\"\ntemplate = \"Add typos ({severity}).\"",
        &["2:12 the template never uses `{text}`: the model would not see the text to rewrite"],
    );
    check(
        "noiser = \"llm_typos\"\nstyle = \"casual\"",
        &["2:9 `style` is not a key of noiser `llm_typos` (its keys: frequency, severity, error_types, instructions)"],
    );
    check(
        "noiser = { kind = \"llm_style_transfer\", style = \"casual\", temprature = 1 }\nstyle = \"casual\"",
        &[
            "2:9 `style` belongs in the `noiser` table, since the noiser is written as one",
            "1:59 unknown key `temprature` in `noiser` (did you mean `temperature`?)",
        ],
    );
    check(
        "noiser = \"llm_domain\"\ndomain = \"medicl\"",
        &["2:10 unknown domain \"medicl\" (did you mean \"medical\"? or describe its errors in `categories`)"],
    );
    check(
        "noiser = \"llm_domain\"\ndomain = \"legal\"\ncategories = [\"refrences\"]",
        &["3:14 unknown categories \"refrences\" (did you mean \"references\"?)"],
    );
    check(
        "noiser = \"llm_typos\"\nllm = \"locl\"\ntemperature = 3",
        &[
            "2:7 no LLM provider `locl`: the pipeline has no `[llm.locl]` table (did you mean \"local\"?)",
            "3:15 `temperature` must be from 0 to 2, not 3",
        ],
    );
    check(
        "noiser = { kind = \"llm_typos\", llm = \"local\" }\nllm = \"local\"",
        &["2:7 `llm` is given twice: here and in the `noiser` table"],
    );
    check(
        "noiser = \"llm_context\"",
        &["1:1 missing required key `context_field` (the field that holds the text's context)"],
    );
    let wrong = wrong.into_inner();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn generation_makes_n_records_per_input_from_text_or_checked_json() {
    let server = TestServer::start(|r| {
        let p = r.prompt();
        let seed = r.field("seed").as_u64().unwrap();
        if p.contains("json") {
            match p {
                _ if p.contains("broken") => Reply::text("not json at all"),
                _ if p.contains("wrong") => Reply::json(&serde_json::json!({"question": 3})),
                _ => Reply::text(format!(
                    "```json\n{{\"question\": \"Q about {}\", \"difficulty\": {}}}\n```",
                    p.rsplit(' ').next().unwrap(),
                    seed % 3
                )),
            }
        } else {
            Reply::text(format!("sample for {p} / {seed}"))
        }
    })
    .unwrap();
    let env = env(&server);
    let step = build("llm_generate", "prompt = \"Write about {topic}.\"\nn = 3\ntemperature = 0.9", &env.ctx);
    let batch = Batch::from_records(&[Record::new().with("topic", "cats"), Record::new().with("topic", "dogs")]);
    let c = call(&*step, &batch);
    assert_eq!(c.out().len(), 6);
    assert_eq!(strings(&c.column("topic")), ["cats", "cats", "cats", "dogs", "dogs", "dogs"]);
    assert_eq!(c.column("sample"), [0, 1, 2, 0, 1, 2].map(Value::Int));
    let generated = c.column("generated");
    assert!(generated.iter().all(|g| g.as_str().unwrap().starts_with("sample for Write about")));
    let mut distinct = strings(&generated);
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "each answer asked with a seed of its own");

    let json = build(
        "llm_generate",
        "prompt = \"Give json for {topic}\"\nkeep_input = false\nsample_field = false\njson_schema = { type = \"object\", properties = { question = { type = \"string\" }, difficulty = { type = \"integer\", minimum = 0, maximum = 2 } }, required = [\"question\"] }",
        &env.ctx,
    );
    let batch = Batch::from_records(&[
        Record::new().with("topic", "cats"),
        Record::new().with("topic", "broken"),
        Record::new().with("topic", "wrong"),
        Record::new().with("topic", Value::Null),
    ]);
    let c = call(&*json, &batch);
    // The answer's fields in the order the model wrote them.
    assert_eq!(c.out().schema().names().collect::<Vec<_>>(), ["question", "difficulty"]);
    assert_eq!(strings(&c.column("question")), ["Q about cats"]);
    let reasons: Vec<&str> = c.rejected.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "llm_generate: the answer is not JSON (expected ident at line 1 column 2): \"not json at all\"",
            "llm_generate: the answer does not fit `json_schema`: `/question` must be string, not an integer",
            "llm_generate: field `topic` is null",
        ]
    );
    let sent = server.requests().pop().unwrap().request;
    assert_eq!(sent.field("response_format")["type"], "json_schema");
    assert_eq!(sent.field("response_format")["json_schema"]["schema"]["required"][0], "question");
}

#[test]
fn generation_mistakes_are_named() {
    let server = TestServer::echo().unwrap();
    let env = env(&server);
    let check =
        |config: &str, want: &[&str]| assert_eq!(diagnostics("llm_generate", config, &env.ctx), want, "{config}");
    check(
        "n = 2",
        &[
            "- missing required key `prompt` (the template asked for each record, such as \"Write a question about {topic}.\")",
        ],
    );
    check(
        "prompt = \"About {topic\"\nn = 0",
        &[
            "1:10 `prompt`: the `{` at character 7 opens a variable that is not closed (write `{{` for a brace)",
            "2:5 `n` (answers per record) must be from 1 to 1000",
        ],
    );
    check(
        "prompt = \"Write about {topic}\"\njson_schema = { type = \"obj\", properties = { a = { type = \"string\", pattern = \"x\" } } }",
        &[
            "2:15 `json_schema`: `/type`: `type` must be one of object, array, string, number, integer, boolean, null (or a list of them)",
            "2:15 `json_schema`: this keyword is not checked by Weave (the server may enforce them): /properties/a/pattern",
        ],
    );
    check(
        "prompt = \"Write about {topic}\"\njson = true",
        &[
            "- `json = true`, but the prompt never mentions JSON: some providers (OpenAI) refuse JSON mode unless the messages ask for JSON",
        ],
    );
}

#[test]
fn a_judge_scores_and_its_threshold_drops_flags_or_fails() {
    let server = TestServer::start(|r| {
        let text = r.prompt().rsplit("Text:\n").next().unwrap_or_default().to_owned();
        match text.as_str() {
            "garbage" => Reply::json(&serde_json::json!({"score": 2, "reason": "gibberish"})),
            "off scale" => Reply::json(&serde_json::json!({"score": 11, "reason": "too good"})),
            "prose" => Reply::text("I think it is fine."),
            _ => Reply::json(&serde_json::json!({"score": 8.5, "reason": "clear"})),
        }
    })
    .unwrap();
    let env = env(&server);
    let batch = texts(&["good text", "garbage", "off scale", "prose"]);

    let drop = build("llm_judge", "threshold = 7\ncriteria = \"Is it clear?\"", &env.ctx);
    let c = call(&*drop, &batch);
    assert_eq!(strings(&c.column("text")), ["good text"]);
    assert_eq!(c.column("judge_score"), [Value::Float(8.5)]);
    assert_eq!(strings(&c.column("judge_reason")), ["clear"]);
    assert_eq!(c.dropped, [("llm_judge: below threshold".to_owned(), 1)]);
    let reasons: Vec<&str> = c.rejected.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "llm_judge: the judgement does not fit: `/score` must be at most 10, not 11",
            "llm_judge: the answer is not JSON (expected value at line 1 column 1): \"I think it is fine.\"",
        ]
    );
    assert_eq!((c.stat("judged"), c.stat("passed"), c.stat("below_threshold")), (2, 1, 1));
    let sent = &server.requests()[0].request;
    assert!(sent.prompt().contains("Is it clear?") && sent.prompt().contains("from 1 (worst) to 10 (best)"));
    assert_eq!(sent.field("temperature"), 0.0);
    assert_eq!(sent.field("response_format")["json_schema"]["schema"]["properties"]["score"]["maximum"], 10.0);

    let flag = build("llm_judge", "threshold = 7\non_fail = \"flag\"", &env.ctx);
    let c = call(&*flag, &texts(&["good text", "garbage"]));
    assert_eq!(c.column("judge_pass"), [Value::Bool(true), Value::Bool(false)]);

    let fail = build("llm_judge", "threshold = 7\non_fail = \"fail\"\nscale = [0, 10]", &env.ctx);
    let err = call(&*fail, &texts(&["good text", "garbage"])).out.unwrap_err();
    assert_eq!(
        err.to_string(),
        "a record scored 2 (below the threshold 7, on a scale of 0 to 10): gibberish — the record: {id: 1, text: \"garbage\"}"
    );

    // No threshold: every record scored, none dropped.
    let score_only = build("llm_judge", "field = \"text\"", &env.ctx);
    assert_eq!(call(&*score_only, &texts(&["good text", "garbage"])).out().len(), 2);
}

#[test]
fn judge_mistakes_are_named() {
    let server = TestServer::echo().unwrap();
    let env = env(&server);
    let check = |config: &str, want: &[&str]| assert_eq!(diagnostics("llm_judge", config, &env.ctx), want, "{config}");
    check("threshold = 11", &["1:13 `threshold` must be on the scale, from 1 to 10, not 11"]);
    check("on_fail = \"flag\"", &["1:11 `on_fail` needs a `threshold` to compare the scores with"]);
    check("scale = [10, 1]", &["1:9 `scale` must be two numbers, [min, max] with min < max, such as [1, 10]"]);
    check("threshold = 5\npass_field = \"ok\"", &["2:14 `pass_field` is written only with `on_fail = \"flag\"`"]);
    check("prompt = \"Rate {text} on {critera}\"", &[]);
}

#[test]
fn a_cancelled_run_stops_waiting() {
    let server = TestServer::start(|_| Reply::Hold).unwrap();
    let env = env(&server);
    let step = build("augment", "noiser = \"llm_typos\"", &env.ctx);
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut ctx = StepContext::new("s", 0, 0, Arc::clone(&cancel));
    let flag = Arc::clone(&cancel);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let t0 = Instant::now();
    let err = step.apply(&texts(&["a", "b"]), &mut ctx).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(err.to_string(), "the run is being cancelled");
}

#[test]
fn n_answers_and_records_with_one_prompt_get_requests_of_their_own_and_a_rerun_sends_none() {
    // The server answers with the seed it was sent: a model that samples.
    let server = TestServer::start(|r| Reply::text(format!("{} / {}", r.prompt(), r.field("seed")))).unwrap();
    let env = env(&server);
    let config = "prompt = \"Write about {topic}.\"\nn = 5\ntemperature = 0.9";
    // Three records, two of them with one prompt (they differ by `id`).
    let batch = Batch::from_records(&[
        Record::new().with("id", 1i64).with("topic", "cats"),
        Record::new().with("id", 2i64).with("topic", "cats"),
        Record::new().with("id", 3i64).with("topic", "dogs"),
    ]);
    let step = build("llm_generate", config, &env.ctx);
    let c = call(&*step, &batch);
    assert_eq!(c.out().len(), 15);
    // Five requests per input, each sent once, with bodies (seeds) of their own.
    assert_eq!(server.total(), 15);
    let counts = server.counts();
    assert_eq!(counts.len(), 15);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let per_prompt = |p: &str| server.requests().iter().filter(|l| l.request.prompt() == p).count();
    assert_eq!((per_prompt("Write about cats."), per_prompt("Write about dogs.")), (10, 5));
    assert_eq!((c.stat("requests"), c.stat("distinct"), c.stat("shared_requests")), (15, 15, 0));
    let mut generated: Vec<String> = strings(&c.column("generated")).into_iter().map(str::to_owned).collect();
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 15, "every answer differs");

    // The same pipeline again, built anew, on the records in another order: nothing sent.
    let again = build("llm_generate", config, &env.ctx);
    let reordered = batch.take(&[2, 0, 1]);
    let c2 = call(&*again, &reordered);
    assert_eq!(server.total(), 15, "a re-run sends nothing");
    assert_eq!((c2.stat("requests"), c2.stat("cache_hits"), c2.stat("distinct")), (0, 15, 15));
    assert_eq!(strings(&c2.column("generated"))[..5], strings(&c.column("generated"))[10..]);
}

#[test]
fn vary_by_says_which_records_share_a_request_and_sharing_is_counted() {
    let server = TestServer::start(|r| Reply::text(format!("{} / {}", r.prompt(), r.field("seed")))).unwrap();
    let env = env_with(vec![provider(&server.url(), None)], false);
    // Four records with one prompt: two identical, two with other ids.
    let batch = Batch::from_records(&[
        Record::new().with("id", 1i64).with("topic", "cats"),
        Record::new().with("id", 1i64).with("topic", "cats"),
        Record::new().with("id", 2i64).with("topic", "cats"),
        Record::new().with("id", 3i64).with("topic", "cats"),
    ]);
    let run = |vary: &str| {
        let before = server.total();
        let step = build("llm_generate", &format!("prompt = \"About {{topic}}.\"\n{vary}"), &env.ctx);
        let c = call(&*step, &batch);
        (server.total() - before, c.stat("shared_requests"), c.stat("distinct"))
    };
    // The whole record (the default): the identical pair shares.
    assert_eq!(run(""), (3, 1, 3));
    // The prompt alone: one request for all four, counted as shared by three.
    assert_eq!(run("vary_by = \"prompt\""), (1, 3, 1));
    // A field: the records with id 1 share.
    assert_eq!(run("vary_by = [\"id\"]"), (3, 1, 3));
    // The position: every record is asked, the identical ones too.
    assert_eq!(run("vary_by = \"position\""), (4, 0, 4));
    // The judge shares by default (a score belongs to the text), and varies when asked.
    let judge = |vary: &str| {
        let server = TestServer::start(|_| Reply::json(&serde_json::json!({"score": 5, "reason": "ok"}))).unwrap();
        let env = env_with(vec![provider(&server.url(), None)], false);
        let step = build("llm_judge", &format!("field = \"topic\"\n{vary}"), &env.ctx);
        let c = call(&*step, &batch);
        (server.total(), c.stat("shared_requests"))
    };
    assert_eq!(judge(""), (1, 3));
    assert_eq!(judge("vary_by = \"record\""), (3, 1));
    // A field that is not in the data stops the step, naming it.
    let step = build("llm_generate", "prompt = \"About {topic}.\"\nvary_by = [\"lang\"]", &env.ctx);
    let e = call(&*step, &batch).out.unwrap_err().to_string();
    assert!(e.contains("`vary_by`: field `lang` is not in the data"), "{e}");
}

#[test]
fn a_wrong_vary_by_is_refused_where_it_is_written() {
    let server = TestServer::echo().unwrap();
    let env = env(&server);
    assert_eq!(
        diagnostics("llm_generate", "prompt = \"p\"\nvary_by = \"row\"", &env.ctx),
        ["2:11 `vary_by` must be one of \"prompt\", \"record\", \"position\", not \"row\""]
    );
    assert_eq!(
        diagnostics("augment", "noiser = \"llm_typos\"\nvary_by = 1", &env.ctx),
        ["2:11 `vary_by` must be \"prompt\", \"record\", \"position\" or a non-empty list of field names"]
    );
}

/// The provider `local` at `url`, sending through the Batch API, polled every 10 ms.
fn batch_provider(url: &str) -> LlmProvider {
    LlmProvider { batch: true, batch_poll_interval: Some(Duration::from_millis(10)), ..provider(url, None) }
}

/// What a batch test's model answers: the prompt and its seed; `refuse` is refused.
fn batch_answer(r: &weave_testkit::Request) -> Reply {
    if r.prompt().contains("refuse") {
        Reply::error(400, "this prompt is refused")
    } else {
        Reply::text(format!("{} / {}", r.prompt(), r.field("seed"))).with_usage(10, 4)
    }
}

fn topics(names: &[&str]) -> Batch {
    let recs: Vec<Record> = names.iter().map(|t| Record::new().with("topic", *t)).collect();
    Batch::from_records(&recs)
}

#[test]
fn the_batch_api_answers_a_call_in_one_batch_at_the_batch_price() {
    let server = TestServer::start(batch_answer).unwrap();
    let env = env_with(vec![batch_provider(&server.url())], true);
    let config = "prompt = \"About {topic}.\"\nn = 2";
    let step = build("llm_generate", config, &env.ctx);
    let c = call(&*step, &topics(&["cats", "dogs", "refuse"]));
    assert_eq!(server.batches(), 1);
    assert_eq!(server.total(), 6, "each request a line, once");
    assert!(server.counts().values().all(|&n| n == 1));
    let generated = strings(&c.column("generated")).iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(generated.len(), 4);
    assert!(generated[0].starts_with("About cats. / ") && generated[3].starts_with("About dogs. / "), "{generated:?}");
    let reasons: Vec<&str> = c.rejected.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons[0].contains("the provider refused the request in the batch (HTTP 400): this prompt is refused"),
        "{reasons:?}"
    );
    assert_eq!((c.stat("requests"), c.stat("answers"), c.stat("failed_requests"), c.stat("batches")), (6, 4, 2, 1));
    assert_eq!((c.stat("prompt_tokens"), c.stat("completion_tokens")), (40, 16));
    // Half the price: 40 prompt tokens at 1 and 16 completion tokens at 2 a million.
    let cost = match c.stats["cost"] {
        Value::Float(f) => f,
        ref other => panic!("{other:?}"),
    };
    assert!((cost - (40.0 * 1.0 + 16.0 * 2.0) / 1e6 * 0.5).abs() < 1e-12, "{cost}");
    let calls = server.api_calls();
    assert_eq!(calls[..3], ["POST /v1/files", "POST /v1/batches", "GET /v1/batches/batch_0"]);
    assert!(calls.iter().any(|c| c.ends_with("/content")), "{calls:?}");

    // The answers are in the answer cache, for either way of asking.
    let cache = env.ctx.cache_dir().map(std::path::Path::to_path_buf);
    let one_by_one = Arc::new(BuildContext::new(vec![provider(&server.url(), None)], cache));
    let again = build("llm_generate", config, &one_by_one);
    let c2 = call(&*again, &topics(&["cats", "dogs"]));
    assert_eq!((server.total(), c2.stat("cache_hits")), (6, 4), "nothing asked again");
}

#[test]
fn a_batch_left_by_a_stopped_run_is_polled_not_sent_again() {
    // A batch takes a while: the run stops once it exists.
    let server = TestServer::builder().batch_delay(Duration::from_millis(1500)).start(batch_answer).unwrap();
    let env = env_with(vec![batch_provider(&server.url())], true);
    let config = "prompt = \"About {topic}.\"\nn = 3";
    let batch = topics(&["cats", "dogs", "owls", "bats"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = {
        let (step, batch, stop) = (build("llm_generate", config, &env.ctx), batch.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut ctx = StepContext::new("s", 42, 0, stop);
            step.apply(&batch, &mut ctx).map(|b| b.len())
        })
    };
    let start = Instant::now();
    while server.batches() == 0 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The batch is polled (its id kept) before the stop.
    while !server.api_calls().iter().any(|c| c.starts_with("GET /v1/batches/"))
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let err = first.join().unwrap().unwrap_err();
    assert_eq!(err.to_string(), "the run is being cancelled");
    assert_eq!((server.batches(), server.total()), (1, 12));

    // The next run (a new step, the same cache) polls the same batch and sends nothing.
    let step = build("llm_generate", config, &env.ctx);
    let c = call(&*step, &batch);
    assert_eq!(c.out().len(), 12);
    assert_eq!(server.batches(), 1, "no new batch");
    assert_eq!(server.total(), 12);
    assert!(server.counts().values().all(|&n| n == 1), "every request exactly once");
    assert_eq!((c.stat("requests"), c.stat("batches")), (0, 0), "none sent by this run");
    assert_eq!(c.stat("answers"), 12);
    assert_eq!(server.api_calls().iter().filter(|c| *c == "POST /v1/files").count(), 1, "one upload");
}

#[test]
fn a_batch_the_provider_no_longer_has_is_sent_anew() {
    let server = TestServer::builder().batch_delay(Duration::from_secs(3600)).start(batch_answer).unwrap();
    let env = env_with(vec![batch_provider(&server.url())], true);
    let config = "prompt = \"About {topic}.\"";
    let batch = topics(&["cats", "dogs"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = {
        let (step, batch, stop) = (build("llm_generate", config, &env.ctx), batch.clone(), Arc::clone(&stop));
        std::thread::spawn(move || step.apply(&batch, &mut StepContext::new("s", 42, 0, stop)).map(|b| b.len()))
    };
    let start = Instant::now();
    while !server.api_calls().iter().any(|c| c.starts_with("GET /v1/batches/"))
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(first.join().unwrap().is_err());
    // The provider forgets it (and would never finish it): the next run sends the two
    // requests in a batch of its own rather than failing on the 404 for ever.
    server.forget_batches();
    server.finish_batches();
    let step = build("llm_generate", config, &env.ctx);
    let c = call(&*step, &batch);
    assert_eq!(c.out().len(), 2);
    assert_eq!(server.batches(), 2, "a batch of its own");
    assert_eq!(c.stat("requests"), 2);
    // Sent twice in all: the provider lost the first answers (and the test server
    // answered them when the first batch was made).
    assert_eq!(server.total(), 4);
}

#[test]
fn an_expired_batch_sends_the_rest_again_and_a_refused_one_stops_the_step() {
    // The first batch answers two of its lines and expires; the second completes.
    let server = TestServer::builder()
        .batch_end(|n| if n == 0 { weave_testkit::BatchEnd::Expired(2) } else { weave_testkit::BatchEnd::Completed })
        .start(batch_answer)
        .unwrap();
    let env = env_with(vec![batch_provider(&server.url())], true);
    let step = build("llm_generate", "prompt = \"About {topic}.\"", &env.ctx);
    let c = call(&*step, &topics(&["a", "b", "c", "d", "e"]));
    assert_eq!(c.out().len(), 5);
    assert_eq!((server.batches(), server.total()), (2, 5), "the three left, sent once more");
    assert!(server.counts().values().all(|&n| n == 1));
    assert_eq!((c.stat("requests"), c.stat("retries"), c.stat("batches")), (8, 3, 2));

    // Every batch refused: after the retries, the step stops saying why.
    let server = TestServer::builder()
        .batch_end(|_| weave_testkit::BatchEnd::Failed("the model `test-model` does not take batches".into()))
        .start(batch_answer)
        .unwrap();
    let env = env_with(vec![batch_provider(&server.url())], true);
    let step = build("llm_generate", "prompt = \"About {topic}.\"", &env.ctx);
    let e = call(&*step, &topics(&["a"])).out.unwrap_err().to_string();
    assert!(e.contains("the provider refused batch batch_3: the model `test-model` does not take batches"), "{e}");
    assert_eq!((server.batches(), server.total()), (4, 0), "a first try and three retries, nothing answered");

    // A provider without the Batch API: one clear error.
    let plain = TestServer::start(|_| Reply::text("x")).unwrap();
    let mut p = batch_provider(&plain.url());
    p.base_url = format!("{}/nowhere", plain.url());
    let env = env_with(vec![p], true);
    let step = build("llm_generate", "prompt = \"About {topic}.\"", &env.ctx);
    let e = call(&*step, &topics(&["a"])).out.unwrap_err().to_string();
    assert!(e.contains("HTTP 404") && e.contains("does the provider offer the Batch API?"), "{e}");
}

#[test]
fn the_batch_keys_are_checked_where_they_are_written() {
    let text = "[llm.x]\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\nbatch = \"yes\"\nbatch_discount = 1.5\nbatch_poll_interval = \"0s\"\n";
    let Err(diags) = weave_core::PipelineSpec::parse("p.toml", text) else { panic!("no errors") };
    let got: Vec<String> = diags
        .0
        .iter()
        .filter(|d| d.message.contains("batch"))
        .map(|d| {
            let l = d.location.as_ref().map_or("-".into(), |l| format!("{}:{}", l.line, l.column));
            format!("{l} {}", d.message)
        })
        .collect();
    assert_eq!(
        got,
        [
            "4:9 `batch` must be true or false, not a string",
            "5:18 `batch_discount` is the share of the price taken off, from 0 to 1, not 1.5",
            "6:23 `batch_poll_interval` must be more than zero",
        ]
    );
}
