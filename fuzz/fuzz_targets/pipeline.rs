//! The pipeline file: any text through `Pipeline::from_file_text` with the built-in
//! registry (parse, build every step, check the DAG), then what `weave validate` and
//! `weave graph` print. A file that names a place outside the scratch folder is skipped
//! (see `weave_fuzz::names_outside`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weave_core::Pipeline;

fuzz_target!(|data: &[u8]| {
    // The command line refuses a file that is not UTF-8 before parsing it.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if weave_fuzz::names_outside(text) {
        return;
    }
    let path = weave_fuzz::scratch().join("pipeline.toml");
    match Pipeline::from_file_text(&path, text, weave_fuzz::registry()) {
        Ok(p) => {
            let _ = format!("{p}");
            for d in &p.warnings().0 {
                let _ = d.to_string();
            }
            let dag = p.dag();
            let label =
                |_: usize, n: &weave_core::Node<weave_core::PipelineStep>| format!("{}\n{}", n.id, n.payload.kind);
            let _ = dag.to_dot(&p.name, label);
            let _ = dag.to_mermaid(label);
            let _ = dag.critical_path();
            for node in dag.nodes() {
                let info = node.payload.step.info();
                let _ = (info.kind(), info.version(), info.config().to_string(), info.estimated_cost());
                let _ = (info.files_read(), info.files_written(), info.resources(), info.cacheable());
            }
        }
        Err(diags) => {
            // `weave validate` prints "has N errors": a refused file must have one.
            assert!(diags.has_errors(), "a pipeline was refused with no error:\n{diags}");
            for d in &diags.0 {
                let _ = d.to_string();
            }
        }
    }
});
