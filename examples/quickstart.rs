//! The quick-start pipeline in Rust, through the `weave` facade: the same steps as
//! `examples/quickstart/pipeline.toml`, written the way the original write-up writes them,
//!
//! ```text
//! pipeline = Orchestrator().build_pipeline([
//!     LoadDataStep(source="raw_data.csv"), CleaningStep(rules=cleaning_rules),
//!     AugmentationStep(noiser=StyleTransferNoiser(style="technical")),
//!     ValidationStep(metrics=["completeness", "coherence"]),
//!     ExportStep(target="processed_data.jsonl")])
//! results = pipeline.run(monitoring=True, alerts=True, resource_limits={"max_memory": "4GB"})
//! ```
//!
//! Run it from the repository's root: `cargo run --release -p weave --example quickstart`.
//! It reads `examples/quickstart/raw_data.csv` and writes
//! `examples/quickstart/processed_data_rs.jsonl`, with the cache in
//! `examples/quickstart/.weave/cache`, so a second run takes everything from it.
// An example prints its results.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;

use weave::{AlertManager, AlertSpec, MetricsCollector, Orchestrator, ResourceLimits, parse_bytes};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let dir = dir.canonicalize().unwrap_or(dir);
    let path = |name: &str| dir.join(name).display().to_string().replace('\\', "/");
    let registry = weave::registry();

    // Each step is a kind with its keys, as a pipeline file writes them.
    let steps = [
        ("load", "load_csv", format!(r#"path = "{}""#, path("raw_data.csv"))),
        (
            "clean",
            "clean",
            r#"fields = ["text"]
rules = ["strip_html", "nfc", "strip_control", "trim", "collapse_whitespace", { min_chars = 20 }]"#
                .to_owned(),
        ),
        (
            "dedup",
            "dedup",
            r#"fields = ["text"]
normalize = ["lowercase", "collapse_whitespace"]"#
                .to_owned(),
        ),
        (
            "augment",
            "augment",
            r#"output = "text_technical"
noiser = { kind = "style", style = "technical" }"#
                .to_owned(),
        ),
        (
            "validate",
            "validate",
            r#"checks = [
  { check = "completeness", fields = ["text", "label"] },
  { check = "coherence", field = "text", min_score = 0.6 },
]"#
            .to_owned(),
        ),
        ("export", "export_jsonl", format!(r#"path = "{}""#, path("processed_data_rs.jsonl"))),
    ];
    let mut built = Vec::new();
    for (id, kind, keys) in &steps {
        match registry.build(kind, keys) {
            Ok(step) => built.push((*id, step)),
            Err(problems) => {
                eprintln!("step {id}:\n{problems}");
                return ExitCode::FAILURE;
            }
        }
    }

    // run(monitoring=True, alerts=True, resource_limits={"max_memory": "4GB"})
    let metrics = Arc::new(MetricsCollector::new());
    let alerts = Arc::new(AlertManager::new(vec![AlertSpec::log("error_rate > 0.05").expect("a known metric")]));
    let limits = ResourceLimits { max_memory: parse_bytes("4GB").expect("a size"), ..ResourceLimits::default() };
    let orchestrator = Orchestrator::new()
        .resource_limits(limits)
        .seed(42)
        .subscribe(metrics.clone())
        .subscribe(alerts.clone())
        .cache(dir.join(".weave/cache"));
    let pipeline = match orchestrator.build_pipeline("support-tickets", built) {
        Ok(p) => p,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    let result = orchestrator.run(pipeline);
    alerts.finish();
    match result {
        Ok(summary) => {
            for s in &summary.steps {
                println!(
                    "{:<9} {:<9} in {:>5}  out {:>5}  dropped {:>4}",
                    s.id,
                    s.cache.as_str(),
                    s.records_in,
                    s.records_out,
                    s.dropped.iter().map(|(_, n)| n).sum::<u64>()
                );
            }
            let stats = metrics.pipeline_stats();
            println!("success rate {:.2}%, {} alerts fired", stats.success_rate * 100.0, alerts.fired().len());
            println!("wrote {}", path("processed_data_rs.jsonl"));
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}
