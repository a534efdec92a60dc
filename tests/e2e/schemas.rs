//! Issue 18, item 4: a `schema` on any step, checked as records flow out of it. A record
//! that does not fit is a bad record of that step (quarantined, counted, or failing the
//! run), whose reason names the step, the field, the type expected and the value found.

use std::path::Path;

use crate::cli::{check_in, last_report};

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The steps, reasons and records of the quarantine file's lines (a record's keys sorted).
fn quarantined(dir: &Path) -> Vec<String> {
    read(dir, ".weave/quarantine.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            format!("{} | {} | {}", v["step"].as_str().unwrap_or("?"), v["reason"].as_str().unwrap_or("?"), v["record"])
        })
        .collect()
}

const INPUT: &str = r#"{"id":1,"name":"ada","score":0.5}
{"id":2,"name":"bob","score":3}
{"id":"3","name":"cy","score":1.5}
{"name":"dee","score":2.5}
{"id":5,"name":"eve","score":"high"}
{"id":6,"name":"fay","score":4.5,"note":"extra"}
{"id":7,"name":null,"score":null}
"#;

#[test]
fn records_that_do_not_fit_a_steps_schema_are_quarantined_with_reasons_naming_the_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), INPUT).expect("input");
    // The loader's schema is loose about `score` (JSON: anything); the `fields` step's is
    // not: its output must have float scores, and a name.
    std::fs::write(
        d.join("p.toml"),
        r#"
[pipeline]
max_bad_records = 4

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"
on_bad_record = "skip"
schema = { id = { type = "int", nullable = false }, name = "string", score = "json", note = "string" }

[[step]]
id = "shape"
kind = "fields"
drop = ["note"]
on_bad_record = "skip"
schema = { id = "int", name = { type = "string", nullable = false }, score = "float" }

[[step]]
id = "out"
kind = "export_jsonl"
path = "out.jsonl"
"#,
    )
    .expect("pipeline");
    check_in(d, &["run", "p.toml"], 0, &["run succeeded", "4 bad records set aside"], &[]);
    assert_eq!(
        read(d, "out.jsonl"),
        "{\"id\":1,\"name\":\"ada\",\"score\":0.5}\n{\"id\":2,\"name\":\"bob\",\"score\":3}\n\
         {\"id\":6,\"name\":\"fay\",\"score\":4.5}\n"
    );
    assert_eq!(
        quarantined(d),
        [
            r#"load | the schema of step `load`: `id`: expected int, found string "3" | {"id":"3","name":"cy","note":null,"score":1.5}"#,
            r#"load | the schema of step `load`: `id`: expected int (not null), found null | {"id":null,"name":"dee","note":null,"score":2.5}"#,
            r#"shape | the schema of step `shape`: `score`: expected float, found string "high" | {"id":5,"name":"eve","score":"high"}"#,
            r#"shape | the schema of step `shape`: `name`: expected string (not null), found null | {"id":7,"name":null,"score":null}"#,
        ]
    );
    // The bad records are counted as each step's own.
    let report = last_report(d);
    let steps = report["steps"].as_array().expect("steps");
    let bad = |id: &str| steps.iter().find(|s| s["step"] == id).map(|s| s["bad_records"].clone());
    assert_eq!(bad("load"), Some(serde_json::json!(2)), "{report}");
    assert_eq!(bad("shape"), Some(serde_json::json!(2)), "{report}");
}

#[test]
fn a_record_that_does_not_fit_fails_the_run_naming_the_step_unless_it_may_be_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), INPUT).expect("input");
    // A sink's schema is checked on the records it is given to write; extra fields do not
    // fit a schema that does not name them.
    std::fs::write(
        d.join("p.toml"),
        r#"
[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"

[[step]]
id = "out"
kind = "export_jsonl"
path = "out.jsonl"
schema = { id = "json", name = "string", score = "json" }
"#,
    )
    .expect("pipeline");
    check_in(
        d,
        &["run", "p.toml"],
        1,
        &[],
        &["out", "the schema of step `out`: field `note` is not in the declared schema"],
    );
    assert!(!d.join("out.jsonl").exists(), "nothing half-written");
}

#[test]
fn a_schema_naming_an_unknown_type_is_reported_by_validate_and_plan_at_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), INPUT).expect("input");
    std::fs::write(
        d.join("p.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\
         schema = { id = \"integer\", name = { type = \"string\", nullable = \"no\" } }\n",
    )
    .expect("pipeline");
    for cmd in ["validate", "plan"] {
        check_in(
            d,
            &[cmd, "p.toml"],
            1,
            &[],
            &[
                "`schema.id`: unknown type `integer`; the types are string, int",
                "p.toml:5:",
                "`schema.name`: `nullable` must be true or false, not a string",
            ],
        );
    }
}

#[test]
fn a_typed_csv_checked_by_its_loaders_schema_and_the_schema_in_the_cache_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("in.csv"), "id,day,price\n1,2024-05-01,1.50\n2,,2.25\n3,2024-05-03,\n").expect("input");
    let pipeline = |price: &str| {
        format!(
            r#"
[pipeline]
max_bad_records = 2

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
types = {{ id = "int", day = "date", price = "decimal(6, 2)" }}
null_values = [""]
max_bad_records = 2
on_bad_record = "skip"
schema = {{ id = "int", day = {{ type = "date", nullable = false }}, price = {price} }}

[[step]]
id = "out"
kind = "export_jsonl"
path = "out.jsonl"
"#
        )
    };
    std::fs::write(d.join("p.toml"), pipeline(r#""decimal(6, 2)""#)).expect("pipeline");
    check_in(d, &["run", "p.toml"], 0, &["1 bad records set aside"], &[]);
    assert_eq!(
        read(d, "out.jsonl"),
        "{\"id\":1,\"day\":\"2024-05-01\",\"price\":\"1.50\"}\n{\"id\":3,\"day\":\"2024-05-03\",\"price\":null}\n"
    );
    assert_eq!(
        quarantined(d),
        [
            r#"load | the schema of step `load`: `day`: expected date (not null), found null | {"day":null,"id":2,"price":"2.25"}"#
        ]
    );
    // The same again comes from the cache; a changed schema is another step.
    check_in(d, &["run", "p.toml"], 0, &["skipped"], &[]);
    std::fs::write(d.join("p.toml"), pipeline(r#"{ type = "decimal(6, 2)", nullable = false }"#)).expect("pipeline");
    check_in(d, &["run", "p.toml"], 0, &["2 bad records set aside"], &[]);
    assert_eq!(read(d, "out.jsonl"), "{\"id\":1,\"day\":\"2024-05-01\",\"price\":\"1.50\"}\n");
}
