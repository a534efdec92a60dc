//! The `quality` step through the binary (issue 19, item 4): pages dropped by the Gopher,
//! C4 and FineWeb rules, each named with its measure in the exclusion file; C4's lines
//! taken out of the pages it keeps; the per-rule figures in the run record.

use crate::cli::check_in;

/// Eight lines of varied prose that every filter keeps (datatrove's too).
const GOOD: [&str; 8] = [
    "The river that runs past the old mill has been a source of pride for the town.",
    "In spring the water rises, and the meadows on either side turn a deep green.",
    "Farmers have grazed their sheep there since long before anyone kept records.",
    "A stone bridge, built with local granite, links the two halves of the village.",
    "Children learn to swim in the shallow pool below the weir each summer.",
    "The parish council meets once a month to discuss repairs to the banks.",
    "Visitors often stop at the bakery to buy bread and walk along the towpath.",
    "Nobody can say for certain how many mills once stood along this stretch.",
];

fn write_docs(dir: &std::path::Path, docs: &[String]) {
    let lines: Vec<String> =
        docs.iter().enumerate().map(|(i, t)| serde_json::json!({ "id": i, "text": t }).to_string()).collect();
    std::fs::write(dir.join("in.jsonl"), lines.join("\n") + "\n").expect("input");
}

#[test]
fn quality_drops_pages_by_rule_and_the_exclusion_file_names_the_rule_and_its_measure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = GOOD.join("\n");
    let hashtags: Vec<String> = (0..30).map(|i| format!("#tag{i}")).collect();
    let docs = [
        good.clone(),
        format!("{good}\nPlease enable JavaScript to see the comments."),
        format!("{good}\n{}", "Buy cheap shoes now and save more money today!\n".repeat(12)),
        format!("{good}\n{}", hashtags.join(" ")),
        format!(
            "{}\nLorem ipsum dolor sit amet, consectetur adipiscing elit.\n{}",
            GOOD[..4].join("\n"),
            GOOD[4..].join("\n")
        ),
    ];
    write_docs(dir.path(), &docs);
    std::fs::write(
        dir.path().join("p.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n\
         [[step]]\nid = \"quality\"\nkind = \"quality\"\nexclusions = \"dropped.jsonl\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    )
    .expect("pipeline");
    check_in(dir.path(), &["run", "p.toml"], 0, &["gopher_repetition: dup_line_frac 1"], &[]);
    // The good page as it was; the page with a javascript line without that line (C4 keeps
    // only the lines it passes).
    let out: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(out, [serde_json::json!({ "id": 0, "text": good }), serde_json::json!({ "id": 1, "text": good })]);
    let dropped: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("dropped.jsonl"))
        .expect("exclusion file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let reasons: Vec<(&str, i64)> = dropped
        .iter()
        .map(|d| (d["reason"].as_str().expect("reason"), d["record"]["id"].as_i64().expect("id")))
        .collect();
    // 11 of the 21 pieces `re.split("\n+")` makes repeat one before them; 30 hashes over 182
    // words (as datatrove counts them); "lorem ipsum" on the page's fifth line.
    assert_eq!(
        reasons,
        [
            ("gopher_repetition: dup_line_frac 0.524 > 0.3", 2),
            ("gopher_quality: hash_ratio 0.165 > 0.1", 3),
            ("c4: lorem_ipsum \"lorem ipsum\" on line 5", 4),
        ]
    );
    assert!(dropped.iter().all(|d| d["step"] == "quality"), "{dropped:?}");
    let runs: Vec<_> = std::fs::read_dir(dir.path().join(".weave/runs")).expect("runs").flatten().collect();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].path().join("report.json")).expect("report")).expect("JSON");
    let step = report["steps"].as_array().expect("steps").iter().find(|s| s["step"] == "quality").expect("quality");
    let figures = &step["figures"];
    for (figure, n) in [
        ("gopher_repetition.dup_line_frac", 1),
        ("gopher_quality.hash_ratio", 1),
        ("c4.lorem_ipsum", 1),
        ("c4.lines_javascript", 1),
    ] {
        assert_eq!(figures[figure], n, "{figure}: {figures}");
    }
}

#[test]
fn a_bad_quality_key_is_named_with_its_place_and_nothing_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_docs(dir.path(), &[GOOD.join("\n")]);
    std::fs::write(
        dir.path().join("p.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n\
         [[step]]\nid = \"quality\"\nkind = \"quality\"\nfilters = [\"gopher\"]\nc4 = { min_num_sentences = -2 }\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    )
    .expect("pipeline");
    check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &[
            "unknown filter `gopher` (did you mean `gopher_quality`?)",
            "p.toml:9:11",
            "`c4` sets thresholds, but `filters` does not run `c4`",
        ],
    );
    assert!(!dir.path().join("out.jsonl").exists());
}
