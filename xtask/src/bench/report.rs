//! What scenarios report, and how it is shown and kept: a table on stdout and JSON files
//! under `target/bench/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The figures one scenario reports.
#[derive(Debug)]
pub(crate) struct Report {
    scenario: &'static str,
    rows: Vec<Row>,
}

impl Report {
    /// An empty report for `scenario`.
    pub(crate) fn new(scenario: &'static str) -> Self {
        Report { scenario, rows: Vec::new() }
    }

    /// Adds a figure, checking it against its target.
    pub(crate) fn add(&mut self, f: Figure) {
        let ok = f.target.map(|t| t.met(f.value, f.ratio));
        self.rows.push(Row {
            scenario: self.scenario.to_owned(),
            figure: f.name,
            value: f.value,
            unit: f.unit.to_owned(),
            baseline_ratio: f.ratio,
            target: f.target,
            ok,
        });
    }

    /// Tells the user what is happening during a long scenario (on stderr, so that stdout
    /// holds only the results).
    pub(crate) fn progress(&self, message: impl std::fmt::Display) {
        eprintln!("[{}] {message}", self.scenario);
    }

    pub(super) fn into_rows(self) -> Vec<Row> {
        self.rows
    }
}

/// One measured figure, as a scenario hands it to [`Report::add`].
#[derive(Debug)]
pub(crate) struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    ratio: Option<f64>,
    target: Option<Target>,
}

impl Figure {
    /// A figure called `name`: `value` in `unit`.
    pub(crate) fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Figure { name: name.into(), value, unit, ratio: None, target: None }
    }

    /// Sets the speed relative to the scenario's baseline: above 1 is faster than the
    /// baseline, below 1 slower (for a time, baseline time / this time; for a throughput,
    /// this throughput / the baseline's).
    pub(crate) fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = Some(ratio);
        self
    }

    /// Sets the target the figure should meet.
    pub(crate) fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }
}

/// What a figure should achieve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Target {
    /// The value is below this (times).
    Below(f64),
    /// The value is at most this (a bound that may be reached, as a budget).
    AtMost(f64),
    /// The value is at least this (a share, a rate).
    AtLeast(f64),
    /// The ratio to the baseline is at least this.
    RatioAtLeast(f64),
}

impl Target {
    fn met(self, value: f64, ratio: Option<f64>) -> bool {
        match self {
            Target::Below(t) => value < t,
            Target::AtMost(t) => value <= t,
            Target::AtLeast(t) => value >= t,
            Target::RatioAtLeast(t) => ratio.is_some_and(|r| r >= t),
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::Below(t) => format!("< {t} {unit}"),
            Target::AtMost(t) => format!("≤ {t} {unit}"),
            Target::AtLeast(t) => format!("≥ {t} {unit}"),
            Target::RatioAtLeast(t) => format!("≥ {t:.2}×"),
        }
    }
}

/// One row of the table and of the JSON file.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) figure: String,
    pub(crate) value: f64,
    pub(crate) unit: String,
    pub(crate) baseline_ratio: Option<f64>,
    pub(crate) target: Option<Target>,
    /// Whether the target was met; `None` when the figure has no target.
    pub(crate) ok: Option<bool>,
}

/// The rows as an aligned text table, with a line on how to read the ratio.
pub(super) fn table(rows: &[Row]) -> String {
    let header = ["scenario", "figure", "value", "unit", "baseline ratio", "target", "ok"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.figure.clone(),
                format_value(r.value),
                r.unit.clone(),
                r.baseline_ratio.map_or_else(String::new, |x| format!("{x:.2}×")),
                r.target.map_or_else(String::new, |t| t.describe(&r.unit)),
                match r.ok {
                    Some(true) => "ok".to_owned(),
                    Some(false) => "MISSED".to_owned(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    // Numbers are right-aligned so that their digits line up.
    let right = [false, false, true, false, true, false, false];
    let line = |out: &mut String, row: &[String]| {
        let mut s = String::new();
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                s.push_str(" | ");
            }
            let pad = " ".repeat(widths[i] - c.chars().count());
            if right[i] {
                s.push_str(&pad);
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&pad);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    let mut out = String::new();
    line(&mut out, &header.map(str::to_owned));
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&rule.join("-|-"));
    out.push('\n');
    for row in &cells {
        line(&mut out, row);
    }
    out.push_str("baseline ratio: speed relative to the scenario's baseline in the same run (above 1.00× is faster)\n");
    out
}

/// A number as people read it: thousands separated, about four significant digits.
fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() < 1000.0 {
        let decimals = if v.abs() >= 100.0 {
            1
        } else if v.abs() >= 10.0 {
            2
        } else {
            3
        };
        return format!("{v:.decimals$}");
    }
    let sign = if v < 0.0 { "-" } else { "" };
    format!("{sign}{}", thousands(v.abs().round() as u64))
}

/// `n` with thousands separated by commas: `1,000,000`.
pub(crate) fn thousands(n: u64) -> String {
    weave_core::format_count(n)
}

/// The JSON file's content.
#[derive(Serialize)]
struct BenchFile<'a> {
    /// When the run finished, UTC, RFC 3339.
    timestamp: String,
    /// The same instant in seconds since the Unix epoch.
    unix_time: u64,
    /// The scenarios run.
    scenarios: &'a [&'a str],
    /// The CPU threads available, which the numbers depend on.
    threads: usize,
    rows: &'a [Row],
}

/// Writes the rows to `bench-<UTC time>.json` and `latest.json` in the bench directory
/// and returns both paths.
pub(super) fn save(scenarios: &[&str], rows: &[Row]) -> Result<Vec<PathBuf>, String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let file = BenchFile {
        timestamp: utc_timestamp(now, true),
        unix_time: now,
        scenarios,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        rows,
    };
    let mut json = serde_json::to_string_pretty(&file).map_err(|e| format!("cannot encode the results: {e}"))?;
    json.push('\n');
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dated = dir.join(format!("bench-{}.json", utc_timestamp(now, false)));
    let latest = dir.join("latest.json");
    for p in [&dated, &latest] {
        std::fs::write(p, &json).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(vec![dated, latest])
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` in the workspace
/// root (the parent of this crate's directory).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().unwrap_or(Path::new(".")).join("target")
}

/// `secs` since the Unix epoch as UTC: `2026-04-26T14:31:02Z` when `extended`, else the
/// basic form `20260426T143102Z` that is safe in file names everywhere.
fn utc_timestamp(secs: u64, extended: bool) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let (year, month, day) = civil_from_days(days);
    let mut out = String::new();
    if extended {
        let _ = write!(out, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z");
    } else {
        let _ = write!(out, "{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}Z");
    }
    out
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0, true), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400, true), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000, true), "2023-11-14T22:13:20Z");
        assert_eq!(utc_timestamp(4_107_542_399, false), "21000228T235959Z");
        assert_eq!(utc_timestamp(4_107_542_400, false), "21000301T000000Z");
    }

    #[test]
    fn values_read_like_numbers() {
        assert_eq!(format_value(2_345_678.4), "2,345,678");
        assert_eq!(format_value(123.45), "123.5");
        assert_eq!(format_value(4.2), "4.200");
        assert_eq!(format_value(-1234.0), "-1,234");
    }

    #[test]
    fn a_missed_target_shows_in_the_table() {
        let mut r = Report::new("demo");
        r.add(Figure::new("fast", 5.0, "ms").target(Target::Below(20.0)));
        r.add(Figure::new("slow", 0.5, "x").ratio(0.5).target(Target::RatioAtLeast(0.8)));
        r.add(Figure::new("plain", 1.0, "ms"));
        let rows = r.into_rows();
        assert_eq!(rows.iter().map(|r| r.ok).collect::<Vec<_>>(), [Some(true), Some(false), None]);
        let t = table(&rows);
        assert!(t.contains("< 20 ms | ok"), "{t}");
        assert!(t.contains("≥ 0.80× | MISSED"), "{t}");
    }

    #[test]
    fn bounds_that_may_be_reached_are_met_when_reached() {
        let mut r = Report::new("demo");
        r.add(Figure::new("budget", 64.0, "MiB").target(Target::AtMost(64.0)));
        r.add(Figure::new("over", 64.01, "MiB").target(Target::AtMost(64.0)));
        r.add(Figure::new("share", 99.9, "%").target(Target::AtLeast(99.9)));
        r.add(Figure::new("short", 99.8, "%").target(Target::AtLeast(99.9)));
        let rows = r.into_rows();
        assert_eq!(rows.iter().map(|r| r.ok).collect::<Vec<_>>(), [Some(true), Some(false), Some(true), Some(false)]);
        let t = table(&rows);
        assert!(t.contains("≤ 64 MiB | ok"), "{t}");
        assert!(t.contains("≥ 99.9 % | MISSED"), "{t}");
    }
}
