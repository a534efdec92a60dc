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
