//! A step kind defined here, outside the workspace, registered at run time on top of the
//! built-in ones: checked, cached, measured and listed like a built-in kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use weave::{
    Batch, CacheMode, CacheUse, CanonicalConfig, Orchestrator, Params, Registry, RunFailure, SessionError, Shape, Step,
    StepContext, StepError, StepInfo, StepKind, Transform,
};

/// Upper-cases one field, counting its calls.
struct Shout {
    field: String,
    version: u32,
    calls: Arc<AtomicUsize>,
    config: CanonicalConfig,
}

impl StepInfo for Shout {
    fn kind(&self) -> &str {
        "shout"
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    // Costly enough for `cache = "auto"` to keep its output, as an LLM step's is: the
    // second run must take it from the cache rather than redo it.
    fn estimated_cost(&self) -> f64 {
        CacheMode::AUTO_MIN_COST
    }
}

impl Transform for Shout {
    fn apply(&self, batch: &Batch, _ctx: &mut StepContext) -> Result<Batch, StepError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let records: Vec<_> = batch
            .to_records()
            .into_iter()
            .map(|mut r| {
                if let Some(loud) = r.get(&self.field).and_then(|v| v.as_str()).map(str::to_uppercase) {
                    r.set(self.field.clone(), loud);
                }
                r
            })
            .collect();
        Ok(Batch::from_records(&records))
    }
}

/// The built-in kinds and `shout` at `version`, whose calls go to `calls`. The name,
/// summary and keys are made at run time, as a binding to another language would.
fn registry(version: u32, calls: &Arc<AtomicUsize>) -> Registry {
    let calls = Arc::clone(calls);
    let name = String::from("shout");
    let mut r = weave::registry();
    r.register(StepKind::new(
        name,
        Shape::Transform,
        format!("upper-case one field (a kind of the test's own, version {version})"),
        vec![String::from("field")],
        move |p: &Params| {
            let field = p.required_str("field", "the field to upper-case")?;
            let config = p.canonical();
            Some(Step::Transform(Arc::new(Shout { field, version, calls: Arc::clone(&calls), config })))
        },
    ));
    r
}

const PIPELINE: &str = r#"
[pipeline]
name = "kinds"

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"

[[step]]
id = "loud"
kind = "shout"
after = "load"
field = "text"

[[step]]
id = "out"
kind = "export_jsonl"
after = "loud"
path = "OUT"
"#;

/// Writes the pipeline file with `loud`'s field `field` exporting to `out`, and its input.
fn write(dir: &std::path::Path, field: &str, out: &str) -> std::path::PathBuf {
    let text = PIPELINE.replace("field = \"text\"", &format!("field = \"{field}\"")).replace("OUT", out);
    std::fs::write(dir.join("in.csv"), "id,text,tag\n1,hello there,a\n2,quiet words,b\n3,last one,c\n").unwrap();
    let path = dir.join("p.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// How each step of the run used the cache, by id.
fn uses(summary: &weave::RunSummary) -> Vec<(String, CacheUse)> {
    summary.steps.iter().map(|s| (s.id.clone(), s.cache)).collect()
}

#[test]
fn a_kind_registered_at_run_time_runs_with_the_cache_like_a_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |version: u32, path: &std::path::Path| {
        Orchestrator::new()
            .monitoring(false)
            .registry(registry(version, &calls))
            .cache(d.join("cache"))
            .metrics_file(d.join("metrics.prom"))
            .run_file(path)
            .unwrap_or_else(|e| panic!("{e}"))
    };

    // The first run calls it, and counts it like any step.
    let path = write(d, "text", "out.jsonl");
    let first = run(1, &path);
    let ran = calls.load(Ordering::SeqCst);
    assert!(ran > 0, "the kind was called");
    let out = std::fs::read(d.join("out.jsonl")).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains(r#""text":"HELLO THERE""#) && text.contains(r#""tag":"a""#), "{text}");
    let loud = first.step("loud").unwrap();
    assert_eq!((loud.kind.as_str(), loud.records_in, loud.records_out, loud.cache), ("shout", 3, 3, CacheUse::Ran));
    let metrics = std::fs::read_to_string(d.join("metrics.prom")).unwrap();
    assert!(
        metrics.lines().any(|l| l == r#"weave_step_records_in_total{pipeline="kinds",step="loud"} 3"#),
        "{metrics}"
    );

    // Unchanged: nothing runs, and the output is the same bytes.
    let second = run(1, &path);
    assert_eq!(calls.load(Ordering::SeqCst), ran, "{:?}", uses(&second));
    assert!(second.steps.iter().all(|s| s.cache == CacheUse::Skipped), "{:?}", uses(&second));
    assert_eq!(std::fs::read(d.join("out.jsonl")).unwrap(), out);

    // A new export after it: its output is read back from the cache, not made again.
    let path = write(d, "text", "again.jsonl");
    let third = run(1, &path);
    assert_eq!(calls.load(Ordering::SeqCst), ran, "{:?}", uses(&third));
    assert_eq!(third.step("loud").unwrap().cache, CacheUse::Replayed, "{:?}", uses(&third));
    assert_eq!(std::fs::read(d.join("again.jsonl")).unwrap(), out);

    // A change of its key is in its cache key: it runs again.
    let path = write(d, "tag", "again.jsonl");
    let fourth = run(1, &path);
    let ran_again = calls.load(Ordering::SeqCst);
    assert!(ran_again > ran, "{:?}", uses(&fourth));
    assert_eq!(fourth.step("loud").unwrap().cache, CacheUse::Ran);
    assert!(std::fs::read_to_string(d.join("again.jsonl")).unwrap().contains(r#""tag":"A""#));

    // So is its version.
    let fifth = run(2, &path);
    assert!(calls.load(Ordering::SeqCst) > ran_again, "{:?}", uses(&fifth));
    assert_eq!(fifth.step("loud").unwrap().cache, CacheUse::Ran);
}

#[test]
fn a_kind_registered_at_run_time_has_its_keys_checked_like_a_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let calls = Arc::new(AtomicUsize::new(0));
    let path = write(d, "text", "out.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    // A misspelt key of the user's kind, and one of a built-in kind, in the same file.
    std::fs::write(&path, text.replace("field = ", "feild = ").replace("path = \"in.csv\"", "pth = \"in.csv\""))
        .unwrap();
    let err = Orchestrator::new().monitoring(false).registry(registry(1, &calls)).run_file(&path).unwrap_err();
    let RunFailure::Start(SessionError::Invalid(diags)) = err else { panic!("{err}") };
    // Each as `line step: message (help)`.
    let unknown: Vec<String> = diags
        .0
        .iter()
        .filter(|d| d.code == "unknown-key")
        .map(|d| {
            let line = d.location.as_ref().map_or(0, |l| l.line);
            format!("{line} {}: {} ({})", d.step.as_deref().unwrap_or("-"), d.message, d.help.as_deref().unwrap_or("-"))
        })
        .collect();
    assert_eq!(
        unknown,
        [
            "8 load: unknown key `pth` in step (did you mean `path`?)",
            "14 loud: unknown key `feild` in step (did you mean `field`?)"
        ],
        "{diags}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_kind_registered_at_run_time_is_listed_with_the_built_in_ones() {
    let calls = Arc::new(AtomicUsize::new(0));
    let listing = registry(4, &calls).listing();
    // The same listing `weave kinds` prints, with the user's kind in its place by name.
    let built_in = weave::registry().listing();
    let lines: Vec<&str> = listing.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("shout ")).expect(&listing);
    assert_eq!(
        lines[at],
        "shout          transform           upper-case one field (a kind of the test's own, version 4)"
    );
    assert_eq!(lines[at + 1].trim(), "keys: field");
    let mut without: Vec<&str> = lines.clone();
    without.drain(at..at + 2);
    assert_eq!(without, built_in.lines().collect::<Vec<_>>());
}
