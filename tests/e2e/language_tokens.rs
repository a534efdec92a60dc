//! Issue 19, items 1 and 3: `language` and `tokens` through the real binary: the fields
//! they write in the output, the records their filters drop in the exclusion file with
//! their reasons, and their figures in the run summary and the run record.

use crate::cli::check_in;

fn lines_of(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The figures of step `id` in the only run record under `dir`.
fn figures(dir: &std::path::Path, id: &str) -> serde_json::Value {
    let runs: Vec<_> = std::fs::read_dir(dir.join(".weave/runs")).expect("runs").flatten().collect();
    assert_eq!(runs.len(), 1);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].path().join("report.json")).expect("report")).expect("JSON");
    let steps = report["steps"].as_array().expect("steps");
    steps.iter().find(|s| s["step"] == id).expect("the step")["figures"].clone()
}

/// Writes `records` (JSON lines) and a pipeline load → `step` → export_jsonl under `dir`.
fn setup(dir: &std::path::Path, records: &[&str], step: &str) {
    std::fs::write(dir.join("in.jsonl"), records.join("\n") + "\n").expect("input");
    std::fs::write(
        dir.join("p.toml"),
        format!(
            "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n\
             [[step]]\nid = \"pick\"\n{step}\nexclusions = \"out/dropped.jsonl\"\n\n\
             [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out/kept.jsonl\"\n"
        ),
    )
    .expect("pipeline");
}

#[test]
fn language_writes_code_and_confidence_filters_with_reasons_and_counts_languages() {
    let dir = tempfile::tempdir().expect("temp dir");
    setup(
        dir.path(),
        &[
            r#"{"id":1,"text":"The committee will publish its final report on the new bridge before the end of the month."}"#,
            r#"{"id":2,"text":"Der Ausschuss wird seinen Abschlussbericht über die neue Brücke noch vor Ende des Monats veröffentlichen."}"#,
            r#"{"id":3,"text":"Le comité publiera son rapport final sur le nouveau pont avant la fin du mois."}"#,
            r#"{"id":4,"text":"2024-01-15 12:00"}"#,
            r#"{"id":5,"text":"Most of the students who took the evening course had full-time jobs during the day."}"#,
        ],
        "kind = \"language\"\nlanguages = [\"en\", \"de\"]\nmin_confidence = 0.5\nlanguage_field = \"lang\"",
    );
    let out = check_in(dir.path(), &["run", "p.toml", "--metrics-file", "m.prom"], 0, &[], &[]);
    // The figures in the summary the run prints (one batch: in code order), and in the
    // metrics.
    assert!(out.stdout.contains("pick: language.de 1, language.en 2, language.fr 1, language.und 1"), "{}", out.stdout);
    let metrics = std::fs::read_to_string(dir.path().join("m.prom")).expect("metrics");
    for (code, n) in [("en", 2), ("de", 1), ("fr", 1), ("und", 1)] {
        let line = format!("step=\"pick\",figure=\"language.{code}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    let kept = lines_of(&dir.path().join("out/kept.jsonl"));
    let got: Vec<(i64, &str)> =
        kept.iter().map(|r| (r["id"].as_i64().expect("id"), r["lang"].as_str().expect("lang"))).collect();
    assert_eq!(got, [(1, "en"), (2, "de"), (5, "en")]);
    for r in &kept {
        let c = r["language_confidence"].as_f64().expect("a confidence");
        assert!((0.5..=1.0).contains(&c), "{r}");
    }
    let dropped = lines_of(&dir.path().join("out/dropped.jsonl"));
    let reasons: Vec<(i64, &str)> = dropped
        .iter()
        .map(|d| (d["record"]["id"].as_i64().expect("id"), d["reason"].as_str().expect("reason")))
        .collect();
    assert_eq!(reasons, [(3, "language not in `languages`"), (4, "no language detected")]);
    assert_eq!(dropped[0]["record"]["lang"], "fr", "an excluded record carries what was found");
    assert_eq!(dropped[1]["record"]["lang"], serde_json::Value::Null);
    let f = figures(dir.path(), "pick");
    for (code, n) in [("en", 2), ("de", 1), ("fr", 1), ("und", 1)] {
        assert_eq!(f[format!("language.{code}")], n, "{code}: {f}");
    }
}

#[test]
fn tokens_writes_counts_filters_with_reasons_and_totals_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    // cl100k_base counts, from Python tiktoken 0.14 (see the step's unit tests): 2, 6, 10,
    // 15, and 0 for the empty text.
    setup(
        dir.path(),
        &[
            r#"{"id":1,"text":"hello world"}"#,
            r#"{"id":2,"text":"tiktoken is great!"}"#,
            r#"{"id":3,"text":"The quick brown fox jumps over the lazy dog."}"#,
            r#"{"id":4,"text":"    def f(x):\n        return x ** 2  # square\n"}"#,
            r#"{"id":5,"text":""}"#,
        ],
        "kind = \"tokens\"\nencoding = \"cl100k_base\"\nmin_tokens = 3\nmax_tokens = 12",
    );
    let out = check_in(dir.path(), &["run", "p.toml"], 0, &[], &[]);
    assert!(out.stdout.contains("pick: tokens 16, tokens_dropped 17"), "{}", out.stdout);
    let kept = lines_of(&dir.path().join("out/kept.jsonl"));
    let got: Vec<(i64, i64)> =
        kept.iter().map(|r| (r["id"].as_i64().expect("id"), r["tokens"].as_i64().expect("tokens"))).collect();
    assert_eq!(got, [(2, 6), (3, 10)]);
    let dropped = lines_of(&dir.path().join("out/dropped.jsonl"));
    let reasons: Vec<(i64, &str)> = dropped
        .iter()
        .map(|d| (d["record"]["id"].as_i64().expect("id"), d["reason"].as_str().expect("reason")))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "fewer tokens than `min_tokens`"),
            (4, "more tokens than `max_tokens`"),
            (5, "fewer tokens than `min_tokens`")
        ]
    );
    let f = figures(dir.path(), "pick");
    assert_eq!((f["tokens"].clone(), f["tokens_dropped"].clone()), (16.into(), 17.into()), "{f}");
}

#[test]
fn a_language_filter_naming_an_unknown_code_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    setup(dir.path(), &[r#"{"text":"hello"}"#], "kind = \"language\"\nlanguages = [\"english\"]");
    check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &["`english` is not the ISO 639-1 code of a language the step detects", "p.toml:9:13"],
    );
    assert!(!dir.path().join("out").exists(), "nothing written");
}
