//! Every key a pipeline file can write is in the cache keys of the steps it bears on,
//! unless `weave::OUTPUT_NEUTRAL` declares it output-neutral (with its reason); and a
//! neutral key leaves them as they are.
//!
//! regression (issue 13, item 1): a step's `on_bad_record` and `exclusions` were left out
//! of its key, so a stricter re-run "succeeded" on the output of the laxer one.
//!
//! For every kind in the registry, each of its keys and each key every step takes is
//! changed in turn, from a sample pipeline to another valid one that differs in that key
//! only; the same for every pipeline-level key. A key without a sample here fails the
//! test: add one (an alternative valid value), and declare the key in
//! `weave_core::OUTPUT_NEUTRAL` only if it truly cannot change an output or whether the
//! run succeeds.

use std::path::Path;
use std::sync::Arc;

use weave::cache::{CacheOptions, CachePlan, FileIndex, Key, Store};
use weave::{
    ALERT_KEYS, CACHE_KEYS, KeyScope, LLM_KEYS, PIPELINE_KEYS, Pipeline, RESOURCES_KEYS, RETRY_KEYS, STEP_COMMON_KEYS,
    STORAGE_KEYS, Shape, TOP_LEVEL_KEYS, is_output_neutral, is_output_neutral_for_kind,
};

/// The pipeline-level tables every sample starts with: two LLM providers (so that `llm`
/// can name the other), a seed.
const PREAMBLE: &str = r#"[pipeline]
name = "keys"
seed = 1

[llm.local]
base_url = "http://127.0.0.1:9/v1"
model = "m"

[llm.other]
base_url = "http://127.0.0.1:9/v2"
model = "m2"
"#;

/// Two sources that every step under test can take its input from: `a` (then `b` for a
/// merge's second input).
const SOURCES: &str = r#"
[[step]]
id = "b"
kind = "load_jsonl"
path = "in2.jsonl"

[[step]]
id = "a"
kind = "load_jsonl"
path = "in.jsonl"
"#;

/// A kind's sample: its keys as written in a valid step (one key a line), and for each of
/// its keys, the line that changes it, written into the sample (replacing the key's line)
/// or into another base where the key needs one (`Some(base)`: a noiser's own keys).
struct Sample {
    kind: &'static str,
    base: &'static str,
    changes: &'static [(&'static str, Option<&'static str>, &'static str)],
}

const TYPOS: &str = "noiser = \"typos\"";
const LLM_TYPOS: &str = "noiser = \"llm_typos\"\nllm = \"local\"";

const SAMPLES: &[Sample] = &[
    Sample {
        kind: "load_csv",
        base: "path = \"in.csv\"",
        changes: &[
            ("path", None, "path = \"in3.csv\""),
            ("delimiter", None, "delimiter = \";\""),
            ("quote", None, "quote = \"'\""),
            ("types", None, "types = { text = \"string\" }"),
            ("null_values", None, "null_values = [\"NA\"]"),
            ("infer", None, "infer = true"),
            ("encoding", None, "encoding = \"latin-1\""),
            ("header", Some("path = \"in.csv\"\nnames = [\"id\", \"text\"]"), "header = false"),
            ("names", None, "names = [\"id\", \"body\"]"),
        ],
    },
    Sample { kind: "load_jsonl", base: "path = \"in.jsonl\"", changes: &[("path", None, "path = \"in2.jsonl\"")] },
    Sample { kind: "load_json", base: "path = \"in.json\"", changes: &[("path", None, "path = \"in2.json\"")] },
    Sample {
        kind: "load_text",
        base: "path = \"in.txt\"",
        changes: &[
            ("path", None, "path = \"in2.txt\""),
            ("field", None, "field = \"line\""),
            ("skip_empty", None, "skip_empty = true"),
        ],
    },
    Sample {
        kind: "load_parquet",
        base: "path = \"in.parquet\"",
        changes: &[("path", None, "path = \"in2.parquet\""), ("columns", None, "columns = [\"text\"]")],
    },
    Sample {
        kind: "clean",
        base: "rules = [\"trim\"]",
        changes: &[("rules", None, "rules = [\"lowercase\"]"), ("fields", None, "fields = [\"text\"]")],
    },
    Sample {
        kind: "augment",
        base: TYPOS,
        changes: &[
            ("field", None, "field = \"body\""),
            ("output", None, "output = \"noisy\""),
            ("noiser", None, "noiser = \"case\""),
            ("frequency", None, "frequency = \"high\""),
            ("severity", None, "severity = \"severe\""),
            ("rate", Some("noiser = \"case\""), "rate = 0.5"),
            ("language", Some("noiser = \"language\""), "language = \"es\""),
            ("domain", Some("noiser = \"domain\"\ndomain = \"medical\""), "domain = \"legal\""),
            ("categories", Some("noiser = \"domain\"\ndomain = \"medical\""), "categories = [\"dosage\"]"),
            ("style", Some("noiser = \"style\"\nstyle = \"casual\""), "style = \"academic\""),
            ("window", Some("noiser = \"shuffle\""), "window = 5"),
            ("patterns", Some("noiser = \"synonyms\""), "patterns = { extra = [\"big -> huge\"] }"),
            ("patterns_file", Some("noiser = \"synonyms\""), "patterns_file = \"patterns.txt\""),
            ("llm", Some(LLM_TYPOS), "llm = \"other\""),
            ("concurrency", Some(LLM_TYPOS), "concurrency = 4"),
            ("temperature", Some(LLM_TYPOS), "temperature = 0.2"),
            ("top_p", Some(LLM_TYPOS), "top_p = 0.5"),
            ("max_tokens", Some(LLM_TYPOS), "max_tokens = 100"),
            ("stop", Some(LLM_TYPOS), "stop = [\"END\"]"),
            ("system", Some(LLM_TYPOS), "system = \"Be terse.\""),
            ("vary_by", Some(LLM_TYPOS), "vary_by = \"record\""),
            ("template", Some(LLM_TYPOS), "template = \"Add typos: {text}\""),
            ("instructions", Some(LLM_TYPOS), "instructions = \"Only vowels.\""),
            ("error_types", Some(LLM_TYPOS), "error_types = [\"doubled letters\"]"),
            (
                "styles",
                Some(
                    "noiser = \"llm_style_transfer\"\nllm = \"local\"\nstyle = \"pirate\"\nstyles = { pirate = \"Talk like a pirate.\" }",
                ),
                "styles = { pirate = \"Talk like a parrot.\" }",
            ),
            ("persona", Some("noiser = \"llm_persona\"\nllm = \"local\""), "persona = \"a chef\""),
            ("description", Some("noiser = \"llm_persona\"\nllm = \"local\""), "description = \"Cooks.\""),
            ("traits", Some("noiser = \"llm_persona\"\nllm = \"local\""), "traits = [\"loud\"]"),
            ("examples", Some("noiser = \"llm_persona\"\nllm = \"local\""), "examples = [\"Yes chef.\"]"),
            ("sentiment", Some("noiser = \"llm_sentiment\"\nllm = \"local\""), "sentiment = \"negative\""),
            ("intensity", Some("noiser = \"llm_sentiment\"\nllm = \"local\""), "intensity = 0.9"),
            ("preserve", Some("noiser = \"llm_sentiment\"\nllm = \"local\""), "preserve = [\"order\"]"),
            ("locale", Some("noiser = \"llm_locale\"\nllm = \"local\"\nlocale = \"en-GB\""), "locale = \"pt-BR\""),
            (
                "context_field",
                Some("noiser = \"llm_context\"\nllm = \"local\"\ncontext_field = \"ctx\""),
                "context_field = \"other\"",
            ),
            (
                "context_type",
                Some("noiser = \"llm_context\"\nllm = \"local\"\ncontext_field = \"ctx\""),
                "context_type = \"conversation\"",
            ),
        ],
    },
    Sample {
        kind: "dedup",
        base: "fields = [\"text\"]",
        changes: &[("fields", None, "fields = [\"id\"]"), ("normalize", None, "normalize = [\"lowercase\"]")],
    },
    Sample {
        kind: "validate",
        base: "checks = [{ check = \"completeness\", fields = [\"text\"] }]",
        changes: &[
            ("checks", None, "checks = [{ check = \"completeness\", fields = [\"id\"] }]"),
            ("on_fail", None, "on_fail = \"flag\""),
            ("prefix", None, "prefix = \"v_\""),
            ("id_field", None, "id_field = \"key\""),
        ],
    },
    Sample {
        kind: "near_dedup",
        base: "fields = [\"text\"]",
        changes: &[
            ("fields", None, "fields = [\"body\"]"),
            ("shingle", None, "shingle = \"char\""),
            ("shingle_size", None, "shingle_size = 3"),
            ("bands", None, "bands = 8"),
            ("rows", None, "rows = 4"),
            ("threshold", None, "threshold = 0.9"),
            ("normalize", None, "normalize = []"),
        ],
    },
    Sample { kind: "concat", base: "", changes: &[] },
    Sample {
        kind: "generate",
        base: "templates = [\"My {device} broke.\"]\nslots = { device = [\"phone\", \"laptop\"] }\ncount = 10",
        changes: &[
            ("templates", None, "templates = [\"My {device} is broken.\"]"),
            ("slots", None, "slots = { device = [\"phone\", \"tablet\"] }"),
            ("count", None, "count = 11"),
            ("field", None, "field = \"body\""),
            ("template_field", None, "template_field = \"tpl\""),
        ],
    },
    Sample {
        kind: "mix",
        base: "",
        changes: &[
            ("mode", Some("ratio = 0.5"), "mode = \"replace\""),
            ("ratio", None, "ratio = 0.3"),
            ("max_synthetic_share", None, "max_synthetic_share = 0.4"),
            ("balance_by", None, "balance_by = \"label\""),
            ("source", None, "source = \"origin\""),
            ("check_schema", None, "check_schema = false"),
        ],
    },
    Sample {
        kind: "split",
        base: "fractions = { train = 0.8, test = 0.2 }",
        changes: &[
            ("fractions", None, "fractions = { train = 0.5, test = 0.5 }"),
            ("field", None, "field = \"part\""),
            ("key", None, "key = [\"id\"]"),
            ("stratify_by", None, "stratify_by = \"label\""),
        ],
    },
    Sample {
        kind: "filter",
        base: "field = \"label\"\nequals = \"a\"",
        changes: &[
            ("field", None, "field = \"kind\""),
            ("equals", None, "equals = \"b\""),
            ("in", None, "in = [\"a\", \"b\"]"),
            ("matches", None, "matches = \"^a\""),
            ("min", Some("field = \"score\"\nmin = 0"), "min = 1"),
            ("max", Some("field = \"score\"\nmin = 0"), "max = 5"),
            ("not", None, "not = true"),
        ],
    },
    Sample {
        kind: "fields",
        base: "select = [\"text\", \"label\"]",
        changes: &[
            ("select", None, "select = [\"text\"]"),
            ("drop", None, "drop = [\"label\"]"),
            ("rename", None, "rename = { label = \"class\" }"),
            ("fill", None, "fill = { label = \"none\" }"),
            ("cast", None, "cast = { label = \"int\" }"),
            ("add", None, "add = { source = \"web\" }"),
            ("template", None, "template = { line = \"{label}: {text}\" }"),
            ("flatten", None, "flatten = [\"text\"]"),
            ("nest", None, "nest = { both = [\"text\", \"label\"] }"),
            ("separator", Some("flatten = true"), "separator = \"_\""),
        ],
    },
    Sample {
        kind: "pii",
        base: "fields = [\"text\"]",
        changes: &[
            ("fields", None, "fields = [\"label\"]"),
            ("kinds", None, "kinds = [\"email\"]"),
            ("action", None, "action = \"drop\""),
        ],
    },
    Sample {
        kind: "language",
        base: "field = \"text\"",
        changes: &[
            ("field", None, "field = \"label\""),
            ("language_field", None, "language_field = \"lang\""),
            ("confidence_field", None, "confidence_field = \"p\""),
            ("codes", None, "codes = \"iso_639_3\""),
            ("languages", None, "languages = [\"en\"]"),
            ("min_confidence", None, "min_confidence = 0.5"),
        ],
    },
    Sample {
        kind: "tokens",
        base: "field = \"text\"",
        changes: &[
            ("field", None, "field = \"label\""),
            ("count_field", None, "count_field = \"n\""),
            ("encoding", None, "encoding = \"cl100k_base\""),
            ("min_tokens", None, "min_tokens = 1"),
            ("max_tokens", None, "max_tokens = 100"),
        ],
    },
    Sample {
        kind: "quality",
        base: "",
        changes: &[
            ("field", None, "field = \"label\""),
            ("filters", None, "filters = [\"c4\"]"),
            ("gopher_quality", None, "gopher_quality = { min_doc_words = 20 }"),
            ("gopher_repetition", None, "gopher_repetition = { top_2_gram = 0.3 }"),
            ("c4", None, "c4 = { min_num_sentences = 3 }"),
            ("fineweb", None, "fineweb = { line_punct_thr = 0.2 }"),
        ],
    },
    Sample {
        kind: "sample",
        base: "fraction = 0.5",
        changes: &[
            ("n", Some("n = 3"), "n = 5"),
            ("fraction", None, "fraction = 0.25"),
            ("stratify_by", None, "stratify_by = \"label\""),
            ("key", None, "key = [\"id\"]"),
        ],
    },
    Sample {
        kind: "compare",
        base: "",
        changes: &[
            ("fields", None, "fields = [\"text\"]"),
            ("label", None, "label = \"label\""),
            ("top", None, "top = 5"),
            ("max_categories", None, "max_categories = 50"),
            ("ks_sample", None, "ks_sample = 100"),
        ],
    },
    Sample {
        kind: "llm_generate",
        base: "prompt = \"Write about {text}.\"\nllm = \"local\"",
        changes: &[
            ("prompt", None, "prompt = \"Write more about {text}.\""),
            ("n", None, "n = 2"),
            ("field", None, "field = \"answer\""),
            ("json", Some("prompt = \"Write JSON about {text}.\"\nllm = \"local\""), "json = true"),
            (
                "json_schema",
                Some("prompt = \"Write JSON about {text}.\"\nllm = \"local\""),
                "json_schema = { type = \"object\" }",
            ),
            ("keep_input", None, "keep_input = false"),
            ("sample_field", None, "sample_field = \"k\""),
            ("vary_by", None, "vary_by = \"prompt\""),
        ],
    },
    Sample {
        kind: "llm_judge",
        base: "criteria = \"Is it polite?\"\nllm = \"local\"",
        changes: &[
            ("field", None, "field = \"body\""),
            ("criteria", None, "criteria = \"Is it short?\""),
            ("prompt", None, "prompt = \"Judge {text}: {criteria} From {min} to {max}, as JSON.\""),
            ("scale", None, "scale = [0, 5]"),
            ("threshold", None, "threshold = 7"),
            ("on_fail", Some("criteria = \"Is it polite?\"\nllm = \"local\"\nthreshold = 7"), "on_fail = \"flag\""),
            ("score_field", None, "score_field = \"s\""),
            ("reason_field", None, "reason_field = \"r\""),
            (
                "pass_field",
                Some("criteria = \"Is it polite?\"\nllm = \"local\"\nthreshold = 7\non_fail = \"flag\""),
                "pass_field = \"p\"",
            ),
            ("response_format", None, "response_format = \"json\""),
            ("vary_by", None, "vary_by = \"record\""),
        ],
    },
    Sample {
        kind: "export_jsonl",
        base: "path = \"out/o.jsonl\"",
        changes: &[
            ("path", None, "path = \"out/p.jsonl\""),
            ("compression", Some("path = \"out/o.jsonl.gz\""), "compression = \"gzip\""),
            ("level", Some("path = \"out/o.jsonl.gz\""), "level = 9"),
            ("max_partitions", Some("path = \"out/{label}.jsonl\""), "max_partitions = 3"),
            ("manifest", Some("path = \"out/o.jsonl\"\nmax_rows = 10"), "manifest = \"out/m.json\""),
        ],
    },
    Sample {
        kind: "export_csv",
        base: "path = \"out/o.csv\"",
        changes: &[
            ("path", None, "path = \"out/p.csv\""),
            ("compression", Some("path = \"out/o.csv.gz\""), "compression = \"gzip\""),
            ("level", Some("path = \"out/o.csv.gz\""), "level = 9"),
            ("max_partitions", Some("path = \"out/{label}.csv\""), "max_partitions = 3"),
            ("manifest", Some("path = \"out/o.csv\"\nmax_rows = 10"), "manifest = \"out/m.json\""),
            ("delimiter", None, "delimiter = \";\""),
            ("fields", None, "fields = [\"text\"]"),
        ],
    },
    Sample {
        kind: "export_json",
        base: "path = \"out/o.json\"",
        changes: &[
            ("path", None, "path = \"out/p.json\""),
            ("compression", Some("path = \"out/o.json.gz\""), "compression = \"gzip\""),
            ("level", Some("path = \"out/o.json.gz\""), "level = 9"),
            ("max_partitions", Some("path = \"out/{label}.json\""), "max_partitions = 3"),
            ("manifest", Some("path = \"out/o.json\"\nmax_rows = 10"), "manifest = \"out/m.json\""),
            ("pretty", None, "pretty = true"),
        ],
    },
    Sample {
        kind: "export_parquet",
        base: "path = \"out/o.parquet\"",
        changes: &[("path", None, "path = \"out/p.parquet\""), ("compression", None, "compression = \"zstd\"")],
    },
];

/// The line that changes a key several kinds take, written into the kind's sample; a
/// kind's own line for the key (in `SAMPLES`) comes first.
const SHARED: &[(&str, &str)] = &[
    ("batch_size", "batch_size = 7"),
    ("batch_bytes", "batch_bytes = \"2MiB\""),
    ("max_record_bytes", "max_record_bytes = \"1KiB\""),
    ("max_rows", "max_rows = 10"),
    ("max_bytes", "max_bytes = \"1MiB\""),
    ("llm", "llm = \"other\""),
    ("concurrency", "concurrency = 4"),
    ("temperature", "temperature = 0.2"),
    ("top_p", "top_p = 0.5"),
    ("max_tokens", "max_tokens = 100"),
    ("stop", "stop = [\"END\"]"),
    ("system", "system = \"Be terse.\""),
    ("seed", "seed = 9"),
];

/// The keys every step takes, and the line that changes each (`None`: `kind`, which makes
/// another step altogether, and is in the key as the kind's name). `after` is changed to
/// the same input written out, which must leave the key as it was.
const COMMON: &[(&str, Option<&str>)] = &[
    ("id", Some("id = \"renamed\"")),
    ("kind", None),
    ("after", Some("AFTER")),
    ("retry", Some("retry = { max_retries = 9 }")),
    ("timeout", Some("timeout = \"1h\"")),
    ("on_bad_record", Some("on_bad_record = \"skip\"")),
    ("resources", Some("resources = { threads = 1 }")),
    ("cache", Some("cache = true")),
    ("exclusions", Some("exclusions = \"dropped.jsonl\"")),
    ("max_bad_records", Some("max_bad_records = 5")),
    ("schema", Some("schema = { text = \"string\" }")),
];

/// `base` with the key of `line` set as `line` says: the lines of the key (a key a line)
/// removed, the line added.
fn set(base: &str, line: &str) -> String {
    let keys: Vec<&str> = line.lines().filter_map(|l| l.split('=').next()).map(str::trim).collect();
    let mut out: Vec<&str> =
        base.lines().filter(|l| !keys.contains(&l.split('=').next().unwrap_or("").trim())).collect();
    out.extend(line.lines());
    out.join("\n")
}

/// The folder every sample pipeline runs in, with the input files the loaders read.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let jsonl = "{\"id\":1,\"text\":\"Hello there.\",\"label\":\"a\",\"score\":2}\n";
    for f in ["in.jsonl", "in2.jsonl"] {
        std::fs::write(d.join(f), jsonl).unwrap();
    }
    for f in ["in.csv", "in3.csv"] {
        std::fs::write(d.join(f), "id,text\n1,Hello there.\n").unwrap();
    }
    std::fs::write(d.join("in.json"), format!("[{}]", jsonl.trim())).unwrap();
    std::fs::write(d.join("in2.json"), format!("[{}, {}]", jsonl.trim(), jsonl.trim())).unwrap();
    std::fs::write(d.join("in.txt"), "Hello there.\n").unwrap();
    std::fs::write(d.join("in2.txt"), "Hello there.\n\n").unwrap();
    std::fs::write(d.join("patterns.txt"), "[extra]\nbig -> huge\n").unwrap();
    // Parquet inputs, written by a run of the real exporter.
    for (name, input) in [("in.parquet", "in.jsonl"), ("in2.parquet", "in.json")] {
        let kind = if input.ends_with(".jsonl") { "load_jsonl" } else { "load_json" };
        let text = format!(
            "[[step]]\nid = \"l\"\nkind = \"{kind}\"\npath = \"{input}\"\n\n[[step]]\nid = \"w\"\nkind = \"export_parquet\"\npath = \"{name}\"\n"
        );
        let p = Pipeline::from_file_text(d.join("make.toml"), &text, &weave::registry()).unwrap();
        weave::run(p, weave::ExecOptions::default()).unwrap();
    }
    dir
}

/// Builds the pipeline `text` in `dir`, or panics with its problems, naming `what`.
fn build(dir: &Path, text: &str, what: &str) -> Pipeline {
    Pipeline::from_file_text(dir.join("p.toml"), text, &weave::registry())
        .unwrap_or_else(|d| panic!("{what}: the sample does not build:\n{d}\n{text}"))
}

/// Every step's cache key in `pipeline`, by id.
fn keys(dir: &Path, pipeline: &Pipeline) -> Vec<(String, Key)> {
    let cache = dir.join("cache");
    let plan = CachePlan::new(
        pipeline,
        Store::open(&cache).unwrap(),
        Arc::new(FileIndex::load(&cache)),
        &CacheOptions::default(),
    );
    plan.steps()
        .iter()
        .map(|s| (s.id.clone(), s.key.unwrap_or_else(|| panic!("{}: no key: {:?}", s.id, s.reasons))))
        .collect()
}

/// The step under test (id `t`, kind `kind`, its keys `keys`), after the sources as its
/// shape needs.
fn step_text(kind: &str, shape: Shape, keys: &str) -> String {
    // A merge takes `a` and `b`; a transform or sink the step written before it, `a`.
    let after = if shape == Shape::Merge { "after = [\"a\", \"b\"]\n" } else { "" };
    format!("id = \"t\"\nkind = \"{kind}\"\n{after}{keys}")
}

/// The pipeline holding `step` after the sources.
fn pipeline_text(step: &str) -> String {
    format!("{PREAMBLE}{SOURCES}\n[[step]]\n{step}\n")
}

/// The key of the step under test; `t` unless it was renamed.
fn key_of(keys: &[(String, Key)]) -> Key {
    keys.last().map(|(_, k)| *k).unwrap()
}

#[test]
fn every_key_of_every_kind_is_in_the_key_unless_declared_neutral() {
    let dir = folder();
    let d = dir.path();
    let registry = weave::registry();
    let mut problems = Vec::new();
    for kind in registry.kinds() {
        let Some(sample) = SAMPLES.iter().find(|s| s.kind == kind.name) else {
            problems.push(format!("kind `{}` has no sample: add one to SAMPLES", kind.name));
            continue;
        };
        for (key, _, _) in sample.changes {
            if !kind.keys.contains(&(*key).into()) {
                problems.push(format!("SAMPLES changes `{key}`, which kind `{}` does not take", kind.name));
            }
        }
        let mut cases: Vec<(String, String, String, bool)> = Vec::new();
        for key in &kind.keys {
            let key = key.as_ref();
            let own = sample.changes.iter().find(|(k, _, _)| *k == key).map(|(_, base, line)| (*base, *line));
            let shared = SHARED.iter().find(|(k, _)| *k == key).map(|(_, line)| (None, *line));
            let Some((base, line)) = own.or(shared) else {
                problems.push(format!(
                    "key `{key}` of kind `{}` has no sample: add the line that changes it to SAMPLES",
                    kind.name
                ));
                continue;
            };
            let base = step_text(&kind.name, kind.shape, base.unwrap_or(sample.base));
            let changed = set(&base, line);
            cases.push((key.to_string(), base, changed, !is_output_neutral_for_kind(&kind.name, key)));
        }
        for key in STEP_COMMON_KEYS {
            let Some((_, change)) = COMMON.iter().find(|(k, _)| k == key) else {
                problems.push(format!("the common key `{key}` has no sample: add the line that changes it to COMMON"));
                continue;
            };
            let Some(line) = change else { continue };
            let line = match (*line, kind.shape) {
                ("AFTER", Shape::Source) => "after = []".to_owned(),
                ("AFTER", Shape::Merge) => "after = [\"a\", \"b\"]".to_owned(),
                ("AFTER", _) => "after = \"a\"".to_owned(),
                (l, _) => l.to_owned(),
            };
            let keyed = !is_output_neutral(KeyScope::Step, key);
            let base = step_text(&kind.name, kind.shape, sample.base);
            let changed = set(&base, &line);
            cases.push((key.to_string(), base, changed, keyed));
        }
        for (key, base, changed, keyed) in cases {
            let what = format!("{}.{key}", kind.name);
            let a = pipeline_text(&base);
            let b = pipeline_text(&changed);
            // The two samples differ in that key only.
            let (ta, tb) = (weave::ConfTable::parse(&a).unwrap(), weave::ConfTable::parse(&b).unwrap());
            let step = |t: &weave::ConfTable| match &t.get("step").unwrap().value {
                weave::ConfValue::Array(s) => s.last().unwrap().value.to_json(),
                _ => unreachable!(),
            };
            let (sa, sb) = (step(&ta), step(&tb));
            let differ: Vec<&String> = sa
                .as_object()
                .unwrap()
                .keys()
                .chain(sb.as_object().unwrap().keys())
                .filter(|k| sa.get(k.as_str()) != sb.get(k.as_str()))
                .collect();
            if differ.iter().any(|k| **k != key) {
                problems.push(format!("{what}: the sample changes {differ:?}, not `{key}` alone"));
                continue;
            }
            let built = |t: &str| Pipeline::from_file_text(d.join("p.toml"), t, &weave::registry());
            let (pa, pb) = match (built(&a), built(&b)) {
                (Ok(pa), Ok(pb)) => (pa, pb),
                (Err(e), _) | (_, Err(e)) => {
                    problems.push(format!("{what}: a sample does not build: {}", e.to_string().replace('\n', " | ")));
                    continue;
                }
            };
            let (ka, kb) = (key_of(&keys(d, &pa)), key_of(&keys(d, &pb)));
            if keyed && ka == kb {
                problems.push(format!("{what}: changing it leaves the step's cache key as it was"));
            }
            if !keyed && ka != kb {
                problems.push(format!("{what}: declared output-neutral, yet changing it changes the cache key"));
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// load → clean → llm_generate → export, under every pipeline-level table.
const PIPELINE: &str = r#"[pipeline]
name = "keys"
description = "a pipeline"
seed = 1

[resources]
max_memory = "1GB"
max_concurrent = 2
gpu_enabled = false
gpus = 1

[retry]
max_retries = 1
retry_delay = "1s"
backoff = "fixed"
max_delay = "2s"
jitter = false

[cache]
dir = "cache"

[[alert]]
when = "error_rate > 0.5"
notify = "log"
timeout = "5s"
step = "clean"
window = "1m"

[llm.local]
base_url = "http://127.0.0.1:9/v1"
model = "m"
api_key_env = "WEAVE_TEST_KEY"
requests_per_minute = 60
tokens_per_minute = 1000
timeout = "10s"
prompt_price_per_million = 1.0
completion_price_per_million = 2.0

[storage]
endpoint = "http://127.0.0.1:9"
region = "eu-west-1"

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"

[[step]]
id = "clean"
kind = "clean"
rules = ["trim"]

[[step]]
id = "gen"
kind = "llm_generate"
prompt = "Write about {text}."

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/o.jsonl"
"#;

/// Each pipeline-level key and the line that changes it in its table.
const PIPELINE_LEVEL: &[(&str, &[(&str, &str)])] = &[
    (
        "pipeline",
        &[
            ("name", "name = \"other\""),
            ("description", "description = \"another\""),
            ("seed", "seed = 2"),
            ("max_bad_records", "max_bad_records = \"5%\""),
        ],
    ),
    (
        "resources",
        &[
            ("max_memory", "max_memory = \"2GB\""),
            ("max_concurrent", "max_concurrent = 1"),
            ("gpu_enabled", "gpu_enabled = true"),
            ("gpus", "gpus = 2"),
        ],
    ),
    (
        "retry",
        &[
            ("max_retries", "max_retries = 5"),
            ("retry_delay", "retry_delay = \"2s\""),
            ("backoff", "backoff = \"linear\""),
            ("max_delay", "max_delay = \"9s\""),
            ("jitter", "jitter = true"),
        ],
    ),
    ("cache", &[("dir", "dir = \"cache2\"")]),
    (
        "alert",
        &[
            ("when", "when = \"error_rate > 0.7\""),
            ("notify", "notify = \"file\"\npath = \"alerts.jsonl\""),
            ("command", "command = \"true\""),
            ("path", "path = \"alerts2.jsonl\""),
            ("timeout", "timeout = \"9s\""),
            ("step", "step = \"gen\""),
            ("window", "window = \"5m\""),
        ],
    ),
    (
        "llm",
        &[
            ("base_url", "base_url = \"http://127.0.0.1:9/v3\""),
            ("model", "model = \"m3\""),
            ("api_key_env", "api_key_env = \"WEAVE_OTHER_KEY\""),
            ("requests_per_minute", "requests_per_minute = 61"),
            ("tokens_per_minute", "tokens_per_minute = 1001"),
            ("timeout", "timeout = \"11s\""),
            ("prompt_price_per_million", "prompt_price_per_million = 1.5"),
            ("completion_price_per_million", "completion_price_per_million = 2.5"),
            ("batch", "batch = true"),
            ("batch_discount", "batch_discount = 0.4"),
            ("batch_poll_interval", "batch_poll_interval = \"5s\""),
        ],
    ),
    ("storage", &[("endpoint", "endpoint = \"http://127.0.0.1:10\""), ("region", "region = \"us-west-2\"")]),
];

/// `text` with the line of `key` in the table headed `header` replaced by `line` (or
/// `line` added at its end).
fn set_in_table(text: &str, header: &str, line: &str) -> String {
    let start = text.find(header).unwrap_or_else(|| panic!("no {header}")) + header.len();
    let end = text[start..].find("\n[").map_or(text.len(), |i| start + i + 1);
    let table = set(text[start..end].trim_matches('\n'), line);
    format!("{}\n{table}\n\n{}", &text[..start], &text[end..])
}

#[test]
fn every_pipeline_level_key_is_in_every_key_it_bears_on_unless_declared_neutral() {
    let dir = folder();
    let d = dir.path();
    let mut problems = Vec::new();
    let base = keys(d, &build(d, PIPELINE, "the pipeline"));
    for table in TOP_LEVEL_KEYS.iter().filter(|t| **t != "step") {
        let Some((_, changes)) = PIPELINE_LEVEL.iter().find(|(t, _)| t == table) else {
            problems.push(format!("the pipeline-level table `{table}` has no samples: add its keys to PIPELINE_LEVEL"));
            continue;
        };
        let known: &[&str] = match *table {
            "pipeline" => PIPELINE_KEYS,
            "resources" => RESOURCES_KEYS,
            "retry" => RETRY_KEYS,
            "cache" => CACHE_KEYS,
            "alert" => ALERT_KEYS,
            "llm" => LLM_KEYS,
            "storage" => STORAGE_KEYS,
            other => {
                problems.push(format!("the keys of `{other}` are not known to this test: list them here"));
                continue;
            }
        };
        for key in known {
            let Some((_, line)) = changes.iter().find(|(k, _)| k == key) else {
                problems.push(format!("`{table}.{key}` has no sample: add the line that changes it to PIPELINE_LEVEL"));
                continue;
            };
            let header = match *table {
                "alert" => "[[alert]]".to_owned(),
                "llm" => "[llm.local]".to_owned(),
                t => format!("[{t}]"),
            };
            let text = set_in_table(PIPELINE, &header, line);
            let now = keys(d, &build(d, &text, &format!("{table}.{key}")));
            let scope = if *table == "llm" { KeyScope::Provider } else { KeyScope::Table(table) };
            let keyed = !is_output_neutral(scope, key);
            for ((id, before), (_, after)) in base.iter().zip(&now) {
                // A provider's keys bear on the steps that call it, and on what follows them.
                let bears = *table != "llm" || matches!(id.as_str(), "gen" | "export");
                match (keyed && bears, before == after) {
                    (true, true) => {
                        problems.push(format!("{table}.{key}: changing it leaves the key of \"{id}\" as it was"))
                    }
                    (false, false) => problems.push(format!("{table}.{key}: changing it changes the key of \"{id}\"")),
                    _ => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// The settings that are only keyed as written: a pipeline file without them and one
/// with their default have the same keys, when the default is kept apart (the seed).
#[test]
fn no_seed_and_seed_zero_are_one_key() {
    let dir = folder();
    let d = dir.path();
    let text = PIPELINE.replace("seed = 1", "seed = 0");
    let without = PIPELINE.replace("seed = 1\n", "");
    assert_eq!(keys(d, &build(d, &text, "seed 0")), keys(d, &build(d, &without, "no seed")));
}
