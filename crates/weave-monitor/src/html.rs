//! A run record as one self-contained HTML page (no scripts, no network) with the run's
//! summary, its DAG, and a chart per step: `weave report --format html`, and any other
//! front end's.

use std::fmt::Write as _;

use crate::record::RunEntry;
use serde_json::Value;

/// Text made safe inside HTML and SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The DAG drawn left to right by level, as inline SVG.
fn dag_svg(dag: &Value) -> String {
    let nodes = dag["nodes"].as_array().cloned().unwrap_or_default();
    let (w, h, gap_x, gap_y) = (150.0, 44.0, 60.0, 24.0);
    let mut rows_in_level: Vec<usize> = Vec::new();
    let mut pos = std::collections::HashMap::new();
    for n in &nodes {
        let level = n["level"].as_u64().unwrap_or(0) as usize;
        if rows_in_level.len() <= level {
            rows_in_level.resize(level + 1, 0);
        }
        let row = rows_in_level[level];
        rows_in_level[level] += 1;
        let x = 10.0 + level as f64 * (w + gap_x);
        let y = 10.0 + row as f64 * (h + gap_y);
        pos.insert(n["id"].as_str().unwrap_or("").to_owned(), (x, y));
    }
    let width = 20.0 + rows_in_level.len() as f64 * (w + gap_x);
    let height = 20.0 + rows_in_level.iter().copied().max().unwrap_or(1) as f64 * (h + gap_y);
    let mut svg = format!(
        "<svg class=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"pipeline DAG\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>"
    );
    for e in dag["edges"].as_array().into_iter().flatten() {
        let (Some(a), Some(b)) = (pos.get(e[0].as_str().unwrap_or("")), pos.get(e[1].as_str().unwrap_or(""))) else {
            continue;
        };
        let _ = write!(
            svg,
            "<path class=\"edge\" d=\"M{:.0},{:.0} C{:.0},{:.0} {:.0},{:.0} {:.0},{:.0}\" fill=\"none\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>",
            a.0 + w,
            a.1 + h / 2.0,
            a.0 + w + gap_x / 2.0,
            a.1 + h / 2.0,
            b.0 - gap_x / 2.0,
            b.1 + h / 2.0,
            b.0,
            b.1 + h / 2.0
        );
    }
    for n in &nodes {
        let id = n["id"].as_str().unwrap_or("");
        let (x, y) = pos[id];
        let fill = match n["shape"].as_str() {
            Some("source") => "#dbeafe",
            Some("sink") => "#dcfce7",
            Some("merge") => "#fef3c7",
            Some("stateful_transform") => "#fce7f3",
            _ => "#f3f4f6",
        };
        let _ = write!(
            svg,
            "<g class=\"node\" data-step=\"{}\"><rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{w:.0}\" height=\"{h:.0}\" rx=\"8\" fill=\"{fill}\" stroke=\"#333\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\
             <text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\" font-size=\"11\">{}</text></g>",
            esc(id),
            x + w / 2.0,
            y + 18.0,
            esc(id),
            x + w / 2.0,
            y + 34.0,
            esc(n["kind"].as_str().unwrap_or(""))
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One step's chart: records in and out, and call-time quantiles, as bars.
fn step_chart(s: &Value, max_records: f64, max_seconds: f64) -> String {
    let bar = |label: &str, value: f64, max: f64, text: String, color: &str, y: f64| {
        let len = if max > 0.0 { 260.0 * value / max } else { 0.0 };
        format!(
            "<text x=\"0\" y=\"{:.0}\" font-size=\"11\">{}</text><rect x=\"90\" y=\"{:.0}\" width=\"{len:.1}\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\">{}</text>",
            y + 10.0,
            esc(label),
            y,
            95.0 + len,
            y + 10.0,
            esc(&text)
        )
    };
    let calls = &s["call_seconds"];
    let secs = |q: &str| num(&calls[q]);
    let dur = |x: f64| weave_core::format_duration(std::time::Duration::from_secs_f64(x.max(0.0)));
    let mut svg = String::from(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"420\" height=\"100\" role=\"img\">",
    );
    svg.push_str(&bar("records in", num(&s["records_in"]), max_records, s["records_in"].to_string(), "#60a5fa", 0.0));
    svg.push_str(&bar(
        "records out",
        num(&s["records_out"]),
        max_records,
        s["records_out"].to_string(),
        "#34d399",
        18.0,
    ));
    svg.push_str(&bar("call p50", secs("p50"), max_seconds, dur(secs("p50")), "#fbbf24", 42.0));
    svg.push_str(&bar("call p95", secs("p95"), max_seconds, dur(secs("p95")), "#f59e0b", 60.0));
    svg.push_str(&bar("call p99", secs("p99"), max_seconds, dur(secs("p99")), "#d97706", 78.0));
    svg.push_str("</svg>");
    svg
}

/// The run record `r` as one HTML page: status, the DAG, each step's counts and call times,
/// the stats and the alerts.
pub fn report_html(r: &RunEntry) -> String {
    let rep = &r.report;
    let steps = rep["steps"].as_array().cloned().unwrap_or_default();
    let max_records = steps.iter().map(|s| num(&s["records_in"]).max(num(&s["records_out"]))).fold(0.0, f64::max);
    let max_seconds = steps.iter().map(|s| num(&s["call_seconds"]["p99"])).fold(0.0, f64::max);
    let mut out = String::new();
    let title = format!("weave run {} of {}", r.id, rep["pipeline"].as_str().unwrap_or("?"));
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#111}} table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}}\
         .status-succeeded{{color:#15803d}} .status-failed,.status-interrupted{{color:#b91c1c}}\
         .steps{{display:flex;flex-wrap:wrap;gap:1.5em;margin-top:1.5em}} .step{{border:1px solid #ddd;border-radius:8px;padding:0.5em 1em}}\
         </style></head><body>",
        esc(&title)
    );
    let status = r.status();
    let _ = write!(
        out,
        "<h1>{}</h1><p>Status: <strong class=\"status-{}\" id=\"status\">{}</strong> · pipeline file {} · config {} · weave {}</p>",
        esc(&title),
        esc(status),
        esc(status),
        esc(rep["pipeline_file"].as_str().unwrap_or("?")),
        // By characters: a record edited by hand may hold anything there.
        esc(&rep["config_hash"].as_str().map_or("?".to_owned(), |h| h.chars().take(12).collect())),
        esc(rep["tool_version"].as_str().unwrap_or("?"))
    );
    if let Some(e) = rep["error"].as_str() {
        let _ = write!(out, "<p class=\"error\">Error: {}</p>", esc(e));
    }
    let _ = write!(out, "<h2>Pipeline</h2>{}", dag_svg(&rep["dag"]));
    out.push_str("<h2>Steps</h2><table id=\"steps\"><tr><th>step</th><th>records in</th><th>records out</th><th>records/s</th><th>retries</th><th>failures</th><th>dropped</th><th>quarantined</th></tr>");
    for s in &steps {
        let sum = |v: &Value| v.as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>());
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(s["step"].as_str().unwrap_or("?")),
            s["records_in"],
            s["records_out"],
            num(&s["records_per_second"]),
            s["retries"],
            sum(&s["failures"]),
            sum(&s["dropped"]),
            s["quarantined"]
        );
    }
    out.push_str("</table><div class=\"steps\">");
    for s in &steps {
        let _ = write!(
            out,
            "<div class=\"step\"><h3>{}</h3>{}</div>",
            esc(s["step"].as_str().unwrap_or("?")),
            step_chart(s, max_records, max_seconds)
        );
    }
    out.push_str("</div>");
    let alerts = rep["alerts"].as_array().cloned().unwrap_or_default();
    if !alerts.is_empty() {
        out.push_str("<h2>Alerts</h2><ul>");
        for a in &alerts {
            let _ = write!(out, "<li>{}</li>", esc(a["message"].as_str().unwrap_or("?")));
        }
        out.push_str("</ul>");
    }
    out.push_str("<h2>Lineage</h2><table><tr><th>step</th><th>file</th><th>bytes</th><th>blake3</th></tr>");
    for (dir, list) in [("in", &rep["inputs"]), ("out", &rep["outputs"])] {
        for f in list.as_array().into_iter().flatten() {
            let _ = write!(
                out,
                "<tr><td>{} ({dir})</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(f["step"].as_str().unwrap_or("?")),
                esc(f["path"].as_str().unwrap_or("?")),
                f["bytes"],
                esc(f["blake3"].as_str().unwrap_or("-"))
            );
        }
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // regression: the config hash was cut at byte 12, which panics inside a character of a
    // report edited by hand.
    #[test]
    fn a_report_with_odd_values_renders() {
        let entry = RunEntry {
            id: "r".to_owned(),
            report: serde_json::json!({
                "status": "succeeded",
                "config_hash": "a数据数据数据数据",
                "dag": { "nodes": [{ "id": "数".repeat(128), "kind": "load_csv", "level": 0 }], "edges": [] },
                "steps": [{ "step": "数".repeat(128), "records_in": 1 }],
            }),
        };
        let html = report_html(&entry);
        assert!(html.contains("config a数据数据数据数据"), "{html}");
        assert!(html.contains(&"数".repeat(128)));
    }
}
