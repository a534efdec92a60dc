//! `weave runs` and `weave report`: past runs, read from their records.

use serde_json::Value;
use weave::RunEntry;

use crate::table::render as table;

/// The run named by `id` (or a unique start of it), or the latest.
pub(crate) fn pick<'a>(runs: &'a [RunEntry], id: Option<&str>) -> Result<&'a RunEntry, String> {
    let Some(id) = id else {
        return runs.last().ok_or_else(|| {
            "no run is recorded here (runs are kept in .weave/runs beside the pipeline file; see --dir)".to_owned()
        });
    };
    let matches: Vec<&RunEntry> = runs.iter().filter(|r| r.id.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("no run `{id}` (`weave runs` lists them)")),
        many => Err(format!("`{id}` names {} runs; give more of the id", many.len())),
    }
}

fn seconds(v: &Value) -> String {
    v.as_f64().map_or("-".to_owned(), |s| weave::format_duration(std::time::Duration::from_secs_f64(s.max(0.0))))
}

fn duration_ms(report: &Value) -> String {
    match (report["started_ms"].as_u64(), report["ended_ms"].as_u64()) {
        (Some(a), Some(b)) => weave::format_duration(std::time::Duration::from_millis(b.saturating_sub(a))),
        _ => "-".to_owned(),
    }
}

pub(crate) fn runs_table(runs: &[RunEntry]) -> String {
    if runs.is_empty() {
        return "no runs recorded here\n".to_owned();
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let rep = &r.report;
            vec![
                r.id.clone(),
                rep["pipeline"].as_str().unwrap_or("?").to_owned(),
                r.status().to_owned(),
                duration_ms(rep),
                rep["alerts"].as_array().map_or(0, Vec::len).to_string(),
                rep["error"].as_str().unwrap_or("").chars().take(80).collect(),
            ]
        })
        .collect();
    table(&["run", "pipeline", "status", "duration", "alerts", "error"], &rows)
}

pub(crate) fn report_table(r: &RunEntry) -> String {
    let rep = &r.report;
    let mut out = format!(
        "run {} of \"{}\" ({}): {} in {}\n",
        r.id,
        rep["pipeline"].as_str().unwrap_or("?"),
        rep["pipeline_file"].as_str().unwrap_or("?"),
        r.status(),
        duration_ms(rep)
    );
    if let Some(e) = rep["error"].as_str() {
        out.push_str(&format!("error: {e}\n"));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = rep["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    let dropped: u64 =
                        s["dropped"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
                    let failures: u64 =
                        s["failures"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
                    vec![
                        s["step"].as_str().unwrap_or("?").to_owned(),
                        s["records_in"].to_string(),
                        s["records_out"].to_string(),
                        format!("{:.0}", s["records_per_second"].as_f64().unwrap_or(0.0)),
                        s["retries"].to_string(),
                        failures.to_string(),
                        dropped.to_string(),
                        s["quarantined"].to_string(),
                        seconds(&s["call_seconds"]["p50"]),
                        seconds(&s["call_seconds"]["p99"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(
        &[
            "step",
            "records in",
            "records out",
            "records/s",
            "retries",
            "failures",
            "dropped",
            "quarantined",
            "p50",
            "p99",
        ],
        &rows,
    ));
    // The figures one shard wrote for the whole job (`weave report JOB`), once.
    for s in rep["steps"].as_array().into_iter().flatten().filter(|s| s["figures"]["scope"] == "job") {
        let parts: Vec<String> = s["figures"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "scope" && *k != "shards")
            .map(|(k, v)| match v.as_f64() {
                Some(x) if v.is_f64() => format!("{k} {x:.4}"),
                _ => format!("{k} {v}"),
            })
            .collect();
        out.push_str(&format!(
            "{}: the job's figures (its last shard's, over all {} shards): {}\n",
            s["step"].as_str().unwrap_or("?"),
            s["figures"]["shards"],
            parts.join(", ")
        ));
    }
    let stats = &rep["stats"];
    let bad = match stats["bad_records"].as_u64().unwrap_or(0) {
        0 => String::new(),
        1 => ", 1 bad record".to_owned(),
        n => format!(", {n} bad records"),
    };
    out.push_str(&format!(
        "\nsuccess rate {:.2}%{bad}, peak memory {} of {}\n",
        stats["success_rate"].as_f64().unwrap_or(0.0) * 100.0,
        weave::format_bytes(stats["resource_usage"]["peak_memory"].as_u64().unwrap_or(0)),
        weave::format_bytes(stats["resource_usage"]["max_memory"].as_u64().unwrap_or(0)),
    ));
    for a in rep["alerts"].as_array().into_iter().flatten() {
        out.push_str(&format!("alert: {}\n", a["message"].as_str().unwrap_or("?")));
    }
    out
}
