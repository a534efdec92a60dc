//! `Orchestrator::cache`: the Rust API takes unchanged work from the cache, as `weave run` does.

use weave::{CacheUse, Orchestrator, Pipeline};

#[test]
fn an_orchestrator_with_a_cache_does_not_redo_unchanged_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.csv"), "id,text\n1,  hello   there friend \n2,hi\n3,another fine line of text\n")
        .unwrap();
    let text = r#"
[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"

[[step]]
id = "clean"
kind = "clean"
fields = ["text"]
rules = ["trim", "collapse_whitespace", { min_chars = 5 }]
cache = true

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#;
    let file = d.join("p.toml");
    let orchestrator = Orchestrator::new().monitoring(false).cache(d.join("cache"));
    let run = || {
        let p = Pipeline::from_file_text(&file, text, &weave::registry()).unwrap();
        orchestrator.run(p).unwrap()
    };
    let first = run();
    assert!(first.steps.iter().all(|s| s.cache == CacheUse::Ran));
    let out = std::fs::read_to_string(d.join("out.jsonl")).unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");

    let second = run();
    assert!(second.steps.iter().all(|s| s.cache == CacheUse::Skipped), "{:?}", second.steps);

    std::fs::remove_file(d.join("out.jsonl")).unwrap();
    let third = run();
    let uses: Vec<CacheUse> = third.steps.iter().map(|s| s.cache).collect();
    assert_eq!(uses, [CacheUse::Skipped, CacheUse::Replayed, CacheUse::Ran]);
    assert_eq!(std::fs::read_to_string(d.join("out.jsonl")).unwrap(), out);
}

/// A transform that also writes a file of its own (the texts it saw), and says so.
struct Notes {
    path: std::path::PathBuf,
}

impl weave::StepInfo for Notes {
    fn kind(&self) -> &str {
        "notes"
    }
    fn config(&self) -> weave::CanonicalConfig {
        weave::CanonicalConfig::default()
    }
    fn files_written(&self) -> Vec<std::path::PathBuf> {
        vec![self.path.clone()]
    }
}

impl weave::Transform for Notes {
    fn apply(&self, batch: &weave::Batch, _ctx: &mut weave::StepContext) -> Result<weave::Batch, weave::StepError> {
        std::fs::write(&self.path, format!("{} records\n", batch.len()))
            .map_err(|e| weave::StepError::fatal(e.to_string()))?;
        Ok(batch.clone())
    }
}

// regression (issue 13, sibling of item 1): a step that is not a sink but writes a file of
// its own was skipped when the steps after it were up to date, so its file, once removed,
// never came back.
#[test]
fn a_step_whose_own_file_is_missing_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.csv"), "id,text\n1,hello\n2,there\n").unwrap();
    let notes = d.join("notes.txt");
    let orchestrator = Orchestrator::new().monitoring(false).cache(d.join("cache"));
    let registry = weave::registry();
    let run = || {
        let load = registry.build("load_csv", &format!("path = {:?}", d.join("in.csv"))).unwrap();
        let export = registry.build("export_jsonl", &format!("path = {:?}", d.join("out.jsonl"))).unwrap();
        let notes = weave::Step::Transform(std::sync::Arc::new(Notes { path: notes.clone() }));
        let p = orchestrator.build_pipeline("notes", [("load", load), ("notes", notes), ("export", export)]).unwrap();
        orchestrator.run(p).unwrap()
    };
    run();
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "2 records\n");
    let second = run();
    assert!(second.steps.iter().all(|s| s.cache == CacheUse::Skipped), "{:?}", second.steps);

    std::fs::remove_file(&notes).unwrap();
    let third = run();
    let uses: Vec<CacheUse> = third.steps.iter().map(|s| s.cache).collect();
    assert_eq!(uses, [CacheUse::Ran, CacheUse::Ran, CacheUse::Ran]);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "2 records\n");
}
