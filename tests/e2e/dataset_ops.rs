//! generate → compare → mix → split → filter → export through the real binary: the
//! dataset operations wired together by the executor, checked for counts, proportions,
//! markers, the schema check's message, and the same output on 1 and 2 threads.

use std::collections::HashMap;

use crate::cli::check_in;

const PIPELINE: &str = r#"
[pipeline]
seed = 7

[[step]]
id = "real"
kind = "load_jsonl"
path = "real.jsonl"
batch_size = 100

[[step]]
id = "synthetic"
kind = "generate"
templates = [
    { text = "My {device} won't {problem}.", label = "hardware" },
    { text = "I was charged twice for the {plan} plan.", label = "billing" },
]
slots = { device = ["phone", "laptop"], problem = ["charge", "boot"], plan = ["pro", "basic"] }
count = 2000
batch_size = 128

[[step]]
id = "compare"
kind = "compare"
after = ["real", "synthetic"]
label = "label"

[[step]]
id = "mix"
kind = "mix"
after = ["real", "compare"]
ratio = 0.25
balance_by = "label"
source = "origin"
CHECK

[[step]]
id = "split"
kind = "split"
fractions = { train = 0.8, test = 0.2 }
stratify_by = "label"

[[step]]
id = "train"
kind = "filter"
field = "split"
equals = "train"

[[step]]
id = "export"
kind = "export_jsonl"
path = "train.jsonl"
"#;

/// 600 real records: 450 hardware, 100 billing, 50 account.
fn real() -> String {
    let mut s = String::new();
    for i in 0..600 {
        let label = if i < 450 {
            "hardware"
        } else if i < 550 {
            "billing"
        } else {
            "account"
        };
        s.push_str(
            &serde_json::json!({ "id": format!("r{i}"), "text": format!("ticket {i} about {label}"), "label": label })
                .to_string(),
        );
        s.push('\n');
    }
    s
}

#[test]
fn mix_split_and_filter_a_real_and_a_generated_set() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("real.jsonl"), real()).expect("write the real set");

    // The generated records have fields the real ones lack: the schema check says which.
    std::fs::write(dir.path().join("p.toml"), PIPELINE.replace("CHECK", "")).expect("write the pipeline");
    check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &[
            "mix",
            "only the real records have `id`; only the synthetic records have `template`, `device`, `problem`, `plan`",
        ],
    );
    assert!(!dir.path().join("train.jsonl").exists(), "a failed run writes nothing");

    std::fs::write(dir.path().join("p.toml"), PIPELINE.replace("CHECK", "check_schema = false"))
        .expect("write the pipeline");
    let mut outputs = Vec::new();
    for threads in ["1", "2"] {
        // --no-cache: the second run must compute again, not find its outputs up to date.
        let out = check_in(
            dir.path(),
            &["run", "p.toml", "--max-concurrent", threads, "--no-cache"],
            0,
            &["run succeeded"],
            &[],
        );
        let train_line = out.stdout.lines().find(|l| l.starts_with("train")).unwrap_or_default().to_owned();
        assert!(train_line.contains("split != \"train\""), "{}", out.stdout);
        outputs.push(std::fs::read_to_string(dir.path().join("train.jsonl")).expect("the output"));
    }
    assert_eq!(outputs[0], outputs[1], "the same output on 1 and 2 threads");

    // The mix: 600 real records and a synthetic share of 0.25, so 200 synthetic ones, all
    // spent raising billing (100 real) toward hardware (450): 300 billing in all. Account
    // has no synthetic records. The split then keeps 80% of each class, to a record.
    let mut by: HashMap<(String, String), usize> = HashMap::new();
    for line in outputs[0].lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(v["split"], "train");
        let key = (v["label"].as_str().unwrap_or("?").to_owned(), v["origin"].as_str().unwrap_or("?").to_owned());
        *by.entry(key).or_default() += 1;
    }
    let count = |label: &str, origin: &str| by.get(&(label.to_owned(), origin.to_owned())).copied().unwrap_or(0);
    assert_eq!(count("hardware", "real") + count("hardware", "synthetic"), 360, "{by:?}");
    assert_eq!(count("hardware", "synthetic"), 0, "{by:?}");
    assert_eq!(count("billing", "real") + count("billing", "synthetic"), 240, "{by:?}");
    assert!(count("billing", "synthetic").abs_diff(160) <= 20, "{by:?}");
    assert_eq!(count("account", "real"), 40, "{by:?}");
    assert_eq!(by.values().sum::<usize>(), 640);
}

/// One source split in two and joined again, one branch holding its records back until
/// its end (`sample` with `n`): the merge keeps the other branch's batches meanwhile, so
/// the run goes through (it used to stall), with the same output on 1 and 2 threads.
#[test]
fn a_split_that_rejoins_after_a_sample_runs_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lines: String = (0..20_000).map(|i| format!("{{\"id\":{i},\"text\":\"record {i}\"}}\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), lines).expect("write the input");
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
[pipeline]
seed = 3

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"
batch_size = 100

[[step]]
id = "few"
kind = "sample"
after = ["load"]
n = 50

[[step]]
id = "even"
kind = "filter"
after = ["load"]
field = "id"
max = 9999

[[step]]
id = "join"
kind = "concat"
after = ["few", "even"]

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#,
    )
    .expect("write the pipeline");
    let mut outputs = Vec::new();
    for threads in ["1", "2"] {
        check_in(dir.path(), &["run", "p.toml", "--no-cache", "--max-concurrent", threads], 0, &["run succeeded"], &[]);
        outputs.push(std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output"));
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0].lines().count(), 50 + 10_000);
}
