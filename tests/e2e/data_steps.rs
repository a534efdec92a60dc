//! load_csv → clean → dedup → export_jsonl through the real binary, on a generated file
//! with messy text, checked row for row against a computation that shares no code with
//! the steps.

use std::collections::HashSet;

use crate::cli::check_in;

/// A deterministic generator (xorshift), so the file is the same on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Rows of (id, raw text); about a fifth repeat an earlier text with other case and
/// spacing, some are too short, some carry quotes, commas, tabs, newlines and non-ASCII.
fn generate(n: usize) -> Vec<(usize, String)> {
    let words = ["order", "refund", "Crashes", "login", "café", "naïve", "\"quoted\"", "a,b", "screen", "app", "ok"];
    let spaces = [" ", "  ", "\t", " \n ", "\u{a0}"];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rows: Vec<(usize, String)> = Vec::with_capacity(n);
    for id in 0..n {
        let text = if id > 10 && rng.next().is_multiple_of(5) {
            // A near-copy of an earlier text: same words, other case and spacing.
            let (_, earlier) = &rows[(rng.next() % id as u64) as usize];
            let words: Vec<&str> = earlier.split_whitespace().collect();
            let mut t = String::from("  ");
            for w in words {
                t.push_str(&w.to_uppercase());
                t.push_str(rng.pick(&spaces));
            }
            t
        } else {
            let mut t = String::from(rng.pick(&["", " ", "\t"]));
            for _ in 0..(rng.next() % 9) {
                t.push_str(rng.pick(&words));
                t.push_str(rng.pick(&spaces));
            }
            t
        };
        rows.push((id, text));
    }
    rows
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// What the pipeline should output, computed directly.
fn expected(rows: &[(usize, String)]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (id, raw) in rows {
        let clean = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if clean.chars().count() < 20 {
            continue;
        }
        if !seen.insert(clean.to_lowercase()) {
            continue;
        }
        out.push(serde_json::json!({ "id": id.to_string(), "text": clean }).to_string());
    }
    out
}

#[test]
fn load_clean_dedup_export_matches_an_independent_computation() {
    let rows = generate(20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut csv = String::from("id,text\r\n");
    for (id, text) in &rows {
        csv.push_str(&format!("{id},{}\r\n", csv_field(text)));
    }
    std::fs::write(dir.path().join("raw.csv"), csv).expect("write the input");
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
[[step]]
id = "load"
kind = "load_csv"
path = "raw.csv"
batch_size = 1000

[[step]]
id = "clean"
kind = "clean"
fields = ["text"]
rules = ["trim", "collapse_whitespace", { min_chars = 20 }]

[[step]]
id = "dedup"
kind = "dedup"
fields = ["text"]
normalize = ["lowercase"]

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#,
    )
    .expect("write the pipeline");
    let want = expected(&rows);
    assert!(want.len() > 5_000 && want.len() < 15_000, "the generator makes a useful mix: {}", want.len());
    for threads in ["1", "2"] {
        let out = check_in(
            dir.path(),
            &["run", "p.toml", "--max-concurrent", threads, "--no-cache"],
            0,
            &["run succeeded"],
            &[],
        );
        let dropped_dups = out.stdout.lines().find(|l| l.starts_with("dedup")).unwrap_or_default().to_owned();
        assert!(dropped_dups.contains("duplicate"), "{}", out.stdout);
        let got = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
        let got: Vec<String> =
            got.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line").to_string()).collect();
        assert_eq!(got.len(), want.len(), "row count with {threads} threads");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "row {i} with {threads} threads");
        }
    }
}

#[test]
fn a_partitioned_split_export_appears_whole_with_its_manifest_in_the_lineage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut csv = String::from("id,split,text\n");
    for id in 0..50 {
        csv.push_str(&format!("{id},{},text number {id}\n", ["train", "test"][id % 2]));
    }
    std::fs::write(dir.path().join("in.csv"), csv).expect("write the input");
    let pipeline = |max_rows: usize| {
        format!(
            "[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\nbatch_size = 7\n\n\
             [[step]]\nid = \"export\"\nkind = \"export_json\"\npath = \"out/{{split}}/part-{{index:03}}.json.zst\"\nmax_rows = {max_rows}\n"
        )
    };
    std::fs::write(dir.path().join("p.toml"), pipeline(10)).expect("write the pipeline");
    check_in(dir.path(), &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let manifest_path = dir.path().join("out/.part.manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("JSON");
    assert_eq!(manifest["records"], 50);
    let parts = manifest["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 6, "25 records a split in parts of 10: 3 each");
    assert_eq!(parts[0]["path"], "test/part-000.json.zst");
    assert_eq!(parts[5]["partition"], serde_json::json!({"split": "train"}));
    let last = zstd::decode_all(&std::fs::read(dir.path().join("out/train/part-002.json.zst")).expect("part")[..])
        .expect("zstd");
    let records: serde_json::Value = serde_json::from_slice(&last).expect("a JSON array");
    assert_eq!(records.as_array().map(Vec::len), Some(5));

    // The lineage lists the manifest, whose hash covers the parts'.
    let out = check_in(dir.path(), &["report", "--format", "json"], 0, &[], &[]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    let bytes = std::fs::read(&manifest_path).expect("manifest");
    assert_eq!(report["outputs"][0]["path"], "out/.part.manifest.json");
    assert_eq!(report["outputs"][0]["blake3"], weave::cache::Key::of_content(&bytes).to_hex());

    // A smaller run replaces the set: the parts it does not write are gone.
    std::fs::write(dir.path().join("p.toml"), pipeline(30)).expect("write the pipeline");
    check_in(dir.path(), &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let mut left: Vec<String> = Vec::new();
    for split in ["test", "train"] {
        for e in std::fs::read_dir(dir.path().join("out").join(split)).expect("partition folder") {
            left.push(format!("{split}/{}", e.expect("entry").file_name().to_string_lossy()));
        }
    }
    left.sort();
    assert_eq!(left, ["test/part-000.json.zst", "train/part-000.json.zst"]);
}

/// Texts of 40 words from a small vocabulary, distinct from one another.
fn paragraphs(n: usize) -> Vec<String> {
    let words = [
        "river", "stone", "quiet", "market", "lantern", "harbor", "velvet", "orchard", "signal", "copper", "meadow",
        "thunder", "glass", "garden", "winter", "silver", "anchor", "forest", "candle", "mirror", "valley", "ember",
        "falcon", "island", "marble", "shadow", "timber", "violet", "whisper", "canyon",
    ];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    (0..n).map(|_| (0..40).map(|_| rng.pick(&words)).collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn near_dedup_drops_near_copies_through_the_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let originals = paragraphs(20);
    let mut lines = Vec::new();
    for (i, t) in originals.iter().enumerate() {
        lines.push(serde_json::json!({ "id": i, "text": t }));
    }
    // Near copies, later in the file: capitals and punctuation, and the last word changed.
    for (i, t) in originals.iter().enumerate().step_by(2) {
        let mut words: Vec<String> = t.split(' ').map(str::to_owned).collect();
        words[0] = words[0].to_uppercase();
        *words.last_mut().expect("40 words") = "changed!".to_owned();
        lines.push(serde_json::json!({ "id": 100 + i, "text": words.join(", ") }));
    }
    lines.push(serde_json::json!({ "id": 999, "text": 42 }));
    let jsonl: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), jsonl).expect("write the input");
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"
batch_size = 7

[[step]]
id = "near"
kind = "near_dedup"
on_bad_record = "skip"

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#,
    )
    .expect("write the pipeline");
    for threads in ["1", "2"] {
        let args = ["run", "p.toml", "--max-concurrent", threads, "--no-cache"];
        let out = check_in(dir.path(), &args, 0, &["run succeeded"], &[]);
        let line = out.stdout.lines().find(|l| l.starts_with("near")).unwrap_or_default().to_owned();
        assert!(line.contains("10 (near duplicate 10)"), "{}", out.stdout);
        let got = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
        let ids: Vec<u64> = got
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line")["id"].as_u64().expect("id"))
            .collect();
        assert_eq!(ids, (0..20).collect::<Vec<u64>>(), "with {threads} threads");
        let q = std::fs::read_to_string(dir.path().join(".weave/quarantine.jsonl")).expect("quarantine file");
        assert!(q.contains("field `text` holds int 42, not text"), "{q}");
    }

    // A threshold the default bands cannot see is a warning, at its place.
    std::fs::write(
        dir.path().join("loose.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n[[step]]\nid = \"near\"\nkind = \"near_dedup\"\nthreshold = 0.5\n",
    )
    .expect("write the pipeline");
    check_in(
        dir.path(),
        &["validate", "loose.toml"],
        0,
        &[],
        &[
            "a pair at similarity 0.5 shares a band with probability 0.12",
            "--> loose.toml:9:13",
            "bands = 38, rows = 3",
        ],
    );
}

/// The report.json of the only run recorded in `dir`.
fn only_report(dir: &std::path::Path) -> serde_json::Value {
    let runs: Vec<_> = std::fs::read_dir(dir.join(".weave/runs")).expect("runs").flatten().collect();
    assert_eq!(runs.len(), 1);
    serde_json::from_slice(&std::fs::read(runs[0].path().join("report.json")).expect("report")).expect("JSON")
}

#[test]
fn json_shards_through_parquet_and_back_with_every_shard_in_the_lineage() {
    let rows = generate(3_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let shards = dir.path().join("in/shards");
    std::fs::create_dir_all(&shards).expect("shards dir");
    let mut want = Vec::new();
    for (k, chunk) in rows.chunks(1_000).enumerate() {
        let objects: Vec<String> = chunk
            .iter()
            .map(|(id, text)| {
                let tags: Vec<&str> = text.split_whitespace().take(2).collect();
                serde_json::json!({ "id": id, "text": text, "tags": tags, "meta": { "shard": k } }).to_string()
            })
            .collect();
        want.extend(chunk.iter().map(|(id, text)| serde_json::json!({ "text": text, "id": id })));
        std::fs::write(shards.join(format!("part-{k}.json")), format!("[\n{}\n]\n", objects.join(",\n")))
            .expect("write a shard");
    }
    // Not matched: a hidden file and another name.
    std::fs::write(shards.join(".part-9.json"), "[{\"id\": -1}]").expect("hidden");
    std::fs::write(shards.join("notes.json"), "[]").expect("other");
    std::fs::write(
        dir.path().join("to_parquet.toml"),
        r#"
[[step]]
id = "load"
kind = "load_json"
path = "in/*/part-*.json"
batch_size = 700

[[step]]
id = "export"
kind = "export_parquet"
path = "data.parquet"
compression = "zstd"
"#,
    )
    .expect("write the pipeline");
    check_in(dir.path(), &["run", "to_parquet.toml"], 0, &["run succeeded"], &[]);
    let report = only_report(dir.path());
    let inputs: Vec<&str> =
        report["inputs"].as_array().expect("inputs").iter().map(|i| i["path"].as_str().expect("path")).collect();
    assert_eq!(inputs.len(), 3, "{inputs:?}");
    for (k, path) in inputs.iter().enumerate() {
        assert!(path.ends_with(&format!("in/shards/part-{k}.json")), "{path}");
    }
    std::fs::remove_dir_all(dir.path().join(".weave")).expect("clear the records");

    std::fs::write(
        dir.path().join("from_parquet.toml"),
        r#"
[[step]]
id = "load"
kind = "load_parquet"
path = "*.parquet"
columns = ["text", "id"]

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#,
    )
    .expect("write the pipeline");
    check_in(dir.path(), &["run", "from_parquet.toml"], 0, &["run succeeded"], &[]);
    let got = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
    assert!(got.starts_with("{\"text\":"), "the columns come in the order asked for: {:?}", got.lines().next());
    let got: Vec<serde_json::Value> = got.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "row {i}");
    }

    // A pattern that matches nothing is found before anything runs.
    std::fs::write(
        dir.path().join("none.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_json\"\npath = \"in/*/nothing-*.json\"\n\n[[step]]\nid = \"out\"\nkind = \"export_jsonl\"\npath = \"x.jsonl\"\n",
    )
    .expect("write the pipeline");
    check_in(
        dir.path(),
        &["validate", "none.toml"],
        1,
        &[],
        &["no file matches the pattern `in/*/nothing-*.json`", "--> none.toml:4:8"],
    );
}

/// A CSV file whose third row opens a quote that is never closed, followed by megabytes:
/// the loader names the row and holds none of what follows (`max_record_bytes`), the run
/// fails by default and, with `on_bad_record = "skip"`, keeps the rows before it.
#[test]
fn a_quote_never_closed_in_a_large_csv_is_a_bad_record_named_by_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut csv = String::from("id,text\r\n1,first\r\n2,\"second, quoted\"\r\n3,\"opens here\r\n");
    for i in 4..200_000 {
        csv.push_str(&format!("{i},row number {i} with some words\r\n"));
    }
    std::fs::write(dir.path().join("big.csv"), &csv).expect("write the input");
    let pipeline = |policy: &str| {
        format!(
            "[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"big.csv\"\nmax_record_bytes = \"1MiB\"\n{policy}\n\n\
             [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n"
        )
    };
    std::fs::write(dir.path().join("fail.toml"), pipeline("")).expect("write the pipeline");
    check_in(
        dir.path(),
        &["run", "fail.toml", "--no-cache"],
        1,
        &[],
        &["big.csv:4", "a quoted field in the record that starts on line 4 is never closed"],
    );
    assert!(!dir.path().join("out.jsonl").exists(), "a failed run leaves no output");

    std::fs::write(dir.path().join("skip.toml"), pipeline("on_bad_record = \"skip\"")).expect("write the pipeline");
    check_in(dir.path(), &["run", "skip.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
    assert_eq!(out, "{\"id\":\"1\",\"text\":\"first\"}\n{\"id\":\"2\",\"text\":\"second, quoted\"}\n");
    let q = std::fs::read_to_string(dir.path().join(".weave/quarantine.jsonl")).expect("quarantine file");
    assert!(q.contains("big.csv:4") && q.contains("never closed"), "{q}");
    assert!(q.len() < 4096, "the quarantined record holds none of the megabytes after the quote: {} bytes", q.len());
}

// Issue 18, item 3: `fields` through the binary, from a CSV (every field a string) to
// typed JSON Lines, with a value that does not cast set aside in the quarantine file.
#[test]
fn fields_reshape_csv_rows_into_typed_records_and_set_bad_casts_aside() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("in.csv"),
        "id,first,last,score,meta_flag\n1,Ada,Lovelace, 3.5 ,yes\n2,Alan,Turing,,no\n3,Grace,Hopper,n/a,1\n",
    )
    .expect("input");
    std::fs::write(
        dir.path().join("p.toml"),
        r#"[pipeline]
name = "shape"

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"

[[step]]
id = "shape"
kind = "fields"
rename = { meta_flag = "flag" }
cast = { id = "int", score = "float", flag = "bool" }
fill = { score = 0 }
template = { name = "{first} {last}" }
drop = ["first", "last"]
nest = { person = ["name", "id"] }
on_bad_record = "skip"

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#,
    )
    .expect("pipeline");
    check_in(dir.path(), &["run", "p.toml", "--quarantine", "bad.jsonl"], 0, &[], &[]);
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
    assert_eq!(
        out,
        "{\"person\":{\"name\":\"Ada Lovelace\",\"id\":1},\"score\":3.5,\"flag\":true}\n\
         {\"person\":{\"name\":\"Alan Turing\",\"id\":2},\"score\":0.0,\"flag\":false}\n"
    );
    let bad = std::fs::read_to_string(dir.path().join("bad.jsonl")).expect("quarantine");
    assert!(bad.contains(r#"`score` cannot be cast to float: \"n/a\" is not a number"#), "{bad}");
    assert!(bad.contains(r#""last":"Hopper""#), "the record as it came in: {bad}");
}

// Issue 19, item 2: `pii` through the binary: redacted text in the output, and the counts
// by kind among the step's figures in the run record.
#[test]
fn pii_redacts_personal_data_and_counts_it_by_kind() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("in.jsonl"),
        concat!(
            "{\"text\":\"Mail ana@example.com or call +44 20 7946 0958.\"}\n",
            "{\"text\":\"Card 4111 1111 1111 1111 from 192.168.1.20.\"}\n",
            "{\"text\":\"Order 20240115 shipped at 10:30:00, v1.2.3.\"}\n",
        ),
    )
    .expect("input");
    std::fs::write(
        dir.path().join("p.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n\
         [[step]]\nid = \"scrub\"\nkind = \"pii\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    )
    .expect("pipeline");
    check_in(dir.path(), &["run", "p.toml"], 0, &[], &[]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output"),
        "{\"text\":\"Mail [EMAIL] or call [PHONE].\"}\n\
         {\"text\":\"Card [CREDIT_CARD] from [IP].\"}\n\
         {\"text\":\"Order 20240115 shipped at 10:30:00, v1.2.3.\"}\n"
    );
    let report = only_report(dir.path());
    let figures =
        &report["steps"].as_array().expect("steps").iter().find(|s| s["step"] == "scrub").expect("scrub")["figures"];
    for (kind, n) in [("email", 1), ("phone", 1), ("credit_card", 1), ("ip", 1), ("records_with_pii", 2)] {
        assert_eq!(figures[kind], n, "{kind}: {figures}");
    }
}

// Typed CSV fields went to Parquet as strings; a declared schema fixes the file's types.
#[test]
fn typed_csv_goes_to_parquet_with_its_types_and_comes_back_as_their_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("in.csv"),
        "id,day,at,price,blob\n\
         1,2024-05-01,2024-05-01T12:30:00.250Z,12.5,aGk=\n\
         ,2024-02-29,2024-05-01 14:30:00+02:00,-0.05,\n\
         3,2024-03-01,2024-05-01T00:00:00Z,1.25,\n",
    )
    .expect("input");
    std::fs::write(
        dir.path().join("to_parquet.toml"),
        r#"[pipeline]
name = "to_parquet"

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
types = { id = "int", day = "date", at = "timestamp(ms)", price = "decimal(6, 2)" }

[[step]]
id = "export"
kind = "export_parquet"
path = "typed.parquet"
schema = { id = { type = "int", nullable = false }, day = "date", at = "timestamp(ms, UTC)", price = "decimal(6, 2)", blob = "string" }
on_bad_record = "skip"
"#,
    )
    .expect("pipeline");
    check_in(dir.path(), &["run", "to_parquet.toml", "--quarantine", "bad.jsonl"], 0, &[], &[]);
    let bad = std::fs::read_to_string(dir.path().join("bad.jsonl")).expect("quarantine");
    assert!(bad.contains("`id`: expected int (not null), found null"), "{bad}");
    std::fs::write(
        dir.path().join("back.toml"),
        r#"[pipeline]
name = "back"

[[step]]
id = "load"
kind = "load_parquet"
path = "typed.parquet"

[[step]]
id = "out"
kind = "export_csv"
path = "back.csv"

[[step]]
id = "lines"
kind = "export_jsonl"
path = "back.jsonl"
after = ["load"]
"#,
    )
    .expect("pipeline");
    check_in(dir.path(), &["run", "back.toml"], 0, &[], &[]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("back.csv")).expect("csv"),
        "id,day,at,price,blob\n1,2024-05-01,2024-05-01T12:30:00.250Z,12.50,aGk=\n3,2024-03-01,2024-05-01T00:00:00.000Z,1.25,\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("back.jsonl")).expect("jsonl"),
        "{\"id\":1,\"day\":\"2024-05-01\",\"at\":\"2024-05-01T12:30:00.250Z\",\"price\":\"12.50\",\"blob\":\"aGk=\"}\n\
         {\"id\":3,\"day\":\"2024-03-01\",\"at\":\"2024-05-01T00:00:00.000Z\",\"price\":\"1.25\",\"blob\":\"\"}\n"
    );
}
