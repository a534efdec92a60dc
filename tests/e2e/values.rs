//! Values arrive as they left: field order and numbers through every loader and exporter,
//! and NaN and the infinities written as each format can hold them.

use std::path::Path;

use crate::cli::{check_in, data};

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The issue's record, and integers past 64 bits, next to floats, in a second record.
const LINES: [&str; 2] = [
    r#"{"zeta":1,"alpha":{"y":1,"b":2},"mid":3,"id":18446744073709551615,"big":1000000000000000000000000000000,"neg":-9223372036854775809,"x":12345678901234567}"#,
    r#"{"zeta":2,"alpha":{"y":3,"b":4},"mid":4,"id":7,"big":5,"neg":-1,"x":0.5}"#,
];

// regression: `{"zeta":1,"alpha":{"y":1,"b":2},"mid":3}` came out as
// `{"alpha":{"b":2,"y":1},"mid":3,"zeta":1}` (CSV columns and Parquet struct fields sorted
// too), 18446744073709551615 as 1.8446744073709552e19, and 12345678901234567 next to a
// float as 12345678901234568.
#[test]
fn records_come_out_of_every_exporter_as_they_went_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = format!("{}\n{}\n", LINES[0], LINES[1]);
    std::fs::write(dir.path().join("in.jsonl"), &input).expect("input");
    std::fs::write(
        dir.path().join("out.toml"),
        r#"
[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"

[[step]]
id = "jsonl"
kind = "export_jsonl"
after = "load"
path = "out.jsonl"

[[step]]
id = "json"
kind = "export_json"
after = "load"
path = "out.json"

[[step]]
id = "csv"
kind = "export_csv"
after = "load"
path = "out.csv"

[[step]]
id = "parquet"
kind = "export_parquet"
after = "load"
path = "out.parquet"
"#,
    )
    .expect("pipeline");
    check_in(dir.path(), &["run", "out.toml"], 0, &["run succeeded"], &[]);
    assert_eq!(read(dir.path(), "out.jsonl"), input, "JSON Lines, byte for byte");
    assert_eq!(read(dir.path(), "out.json"), format!("[\n{},\n{}\n]\n", LINES[0], LINES[1]));
    assert_eq!(
        read(dir.path(), "out.csv"),
        concat!(
            "zeta,alpha,mid,id,big,neg,x\n",
            "1,\"{\"\"y\"\":1,\"\"b\"\":2}\",3,18446744073709551615,1000000000000000000000000000000,-9223372036854775809,12345678901234567\n",
            "2,\"{\"\"y\"\":3,\"\"b\"\":4}\",4,7,5,-1,0.5\n",
        )
    );

    // Parquet and back: uint64, a struct in its order, JSON text for what no Parquet type
    // holds exactly.
    std::fs::write(
        dir.path().join("back.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_parquet\"\npath = \"out.parquet\"\n\n\
         [[step]]\nid = \"out\"\nkind = \"export_jsonl\"\npath = \"back.jsonl\"\n",
    )
    .expect("pipeline");
    check_in(dir.path(), &["run", "back.toml"], 0, &["run succeeded"], &[]);
    assert_eq!(read(dir.path(), "back.jsonl"), input, "through Parquet, byte for byte");
}

// regression: CSV wrote a NaN as the text `null`, while a real null is an empty cell.
#[test]
fn nan_and_infinities_are_written_as_each_format_can_hold_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Written by pyarrow: ids 0 to 4, f = NaN, inf, -inf, 1.5, null.
    std::fs::copy(data("values/floats.parquet"), dir.path().join("floats.parquet")).expect("fixture");
    std::fs::write(
        dir.path().join("out.toml"),
        r#"
[[step]]
id = "load"
kind = "load_parquet"
path = "floats.parquet"

[[step]]
id = "csv"
kind = "export_csv"
after = "load"
path = "out.csv"

[[step]]
id = "jsonl"
kind = "export_jsonl"
after = "load"
path = "out.jsonl"

[[step]]
id = "parquet"
kind = "export_parquet"
after = "load"
path = "out.parquet"
"#,
    )
    .expect("pipeline");
    let out = check_in(
        dir.path(),
        &["run", "out.toml"],
        0,
        &["run succeeded"],
        &["jsonl: field `f` holds NaN or an infinite float, which JSON cannot hold: written as null"],
    );
    // CSV: what pandas, polars and Python's float read back; null is an empty cell.
    assert_eq!(read(dir.path(), "out.csv"), "id,f\n0,NaN\n1,inf\n2,-inf\n3,1.5\n4,\n");
    // JSON has none of them: null, and the export says how many.
    assert_eq!(
        read(dir.path(), "out.jsonl"),
        "{\"id\":0,\"f\":null}\n{\"id\":1,\"f\":null}\n{\"id\":2,\"f\":null}\n{\"id\":3,\"f\":1.5}\n{\"id\":4,\"f\":null}\n"
    );
    let runs: Vec<_> = std::fs::read_dir(dir.path().join(".weave/runs")).expect("runs").flatten().collect();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].path().join("report.json")).expect("report")).expect("JSON");
    let step = |id: &str| report["steps"].as_array().expect("steps").iter().find(|s| s["step"] == id).cloned();
    assert_eq!(step("jsonl").expect("jsonl")["figures"]["non_finite_as_null"], 3, "{}", out.stderr);
    assert!(step("csv").expect("csv")["figures"].is_null(), "CSV changed nothing");

    // Parquet holds them: read back and written as CSV, they are what they were.
    std::fs::write(
        dir.path().join("back.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_parquet\"\npath = \"out.parquet\"\n\n\
         [[step]]\nid = \"out\"\nkind = \"export_csv\"\npath = \"back.csv\"\n",
    )
    .expect("pipeline");
    check_in(dir.path(), &["run", "back.toml"], 0, &["run succeeded"], &[]);
    assert_eq!(read(dir.path(), "back.csv"), read(dir.path(), "out.csv"));
}
