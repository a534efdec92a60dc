//! `llm`: an LLM step at high concurrency against the OpenAI-compatible test server (the
//! one the tests use, `weave-testkit`), on 127.0.0.1 with 100 ms of latency per request.
//!
//! A pipeline file (load_jsonl → `augment` with an LLM noiser → export_jsonl) is built and
//! run through the executor, as `weave run` does, at `concurrency` 64 (2,000 records),
//! 256 and 1,024 (10,000 records each). The baseline is the ideal wall time: records ×
//! 0.1 s / concurrency (target: at most 1.15× that, where the server keeps up).
//!
//! - **cold**: an empty cache of answers, so each answer is also stored (durably) in the
//!   run's cache folder;
//! - **all cached**: the cold run again in the same folder: the executor keeps no step
//!   outputs here (that is `weave run`'s cache plan), so the step runs, and takes every
//!   answer from the cache of answers, sending no request;
//! - **no cache**: as `weave run --no-cache`.
//!
//! Three processes take part, so that each one's figures are its own: this one only
//! starts the others and waits; the server runs in a process of its own (this binary
//! again, as `__bench-child llm-server`, a fresh one per concurrency, event-driven on one
//! thread); each run of Weave happens in a child process (`__bench-child llm`). The
//! server and the client still share the machine's cores: on 2 cores, what the server
//! spends is not there for the client.
//!
//! Figures per concurrency: the wall time over the ideal (median of 3 runs), the peak RSS
//! of the client (the highest of the cold and no-cache runs; targets: at most 100 MB at
//! 64, 150 MB at 1,024), the server's peak of requests in flight (at most the
//! concurrency, and near it when the client keeps the slots full), the connections
//! opened per run, the CPU time of the server per run and of the client, and whether the
//! server kept up. Two things say it: its own mean time per request, from its read of the
//! request to its answer written, over the runs that sent requests (the 100 ms of
//! latency, and more when its threads wait for a core; a request waiting to be read is
//! not seen there), and the cores the server and the client together need at the ideal
//! pace (their CPU times over the ideal wall time), against the machine's: when they need
//! more than it can give, the wall time cannot reach the ideal whatever the client does.
//! Two more say where the rest of the wall time goes: the server's window (from the first
//! request's arrival to the last answer written; the client's start and end fall outside
//! it) over the ideal, and the ramp (from the first request's arrival to the one that
//! first made `concurrency` requests in flight: the client opening its connections).
//! Note that `records / concurrency` rounds of the latency is below what any client can
//! do when it is not a whole number: 10,000 requests at 1,024 take 10 rounds, 1.024× it.
//!
//! The cold runs can be bound by the disk rather than the client: each answer is stored
//! durably before its request's slot is free again, so the figure "answers stored per
//! second" is also given.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use weave_testkit::{Reply, TestServer};

use super::{Figure, Report, Target, cpu_time, median, peak_rss, thousands};

const LATENCY: Duration = Duration::from_millis(100);
const REPS: usize = 3;
/// The server keeps up when its mean time per request is within this share over the
/// latency it adds (the time it spends on a request is then small against the wait), and
/// it and the client fit in the machine's cores at the ideal pace (see [`measure`]).
const KEEPS_UP: f64 = 1.05;

/// Each level of the scenario: requests in flight, records (one request each), and the
/// peak RSS target of the child (MB), where the issue sets one.
const LEVELS: [(usize, usize, Option<f64>); 3] =
    [(64, 2_000, Some(100.0)), (256, 10_000, None), (1_024, 10_000, Some(150.0))];

fn pipeline(url: &str, concurrency: usize) -> String {
    format!(
        r#"
[pipeline]
name = "llm-bench"

[llm.local]
base_url = "{url}"
model = "bench"

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"

[[step]]
id = "restyle"
kind = "augment"
noiser = {{ kind = "llm_style_transfer", style = "casual" }}
concurrency = {concurrency}

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#
    )
}

pub(super) fn run(report: &mut Report) {
    for (concurrency, records, rss_target) in LEVELS {
        if let Err(e) = measure(report, concurrency, records, rss_target) {
            report.progress(format!("llm at concurrency {concurrency}: {e}"));
        }
    }
}

fn measure(report: &mut Report, concurrency: usize, records: usize, rss_target: Option<f64>) -> Result<(), String> {
    let mut server = ServerProcess::start(LATENCY)?;
    let ideal = records as f64 * LATENCY.as_secs_f64() / concurrency as f64;
    report.progress(format!(
        "{} requests, {} ms latency, concurrency {concurrency}: ideal {ideal:.3} s; {REPS} runs of each, each in a child process, the server in a process of its own",
        thousands(records as u64),
        LATENCY.as_millis()
    ));
    let mut input = String::new();
    for i in 0..records {
        input.push_str(&format!("{{\"id\":{i},\"text\":\"ticket number {i}: my order arrived late\"}}\n"));
    }

    let (mut cold, mut uncached, mut cached) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu_uncached = Vec::new();
    let mut rss: Vec<u64> = Vec::new();
    let mut rss_cached: Vec<u64> = Vec::new();
    // The server's side of the runs that sent requests: its time per request, its CPU
    // time per run and the share of a core that is over the run's wall time.
    let (mut served, mut server_cpu, mut server_cores) = (Served::default(), Vec::new(), Vec::new());
    let (mut windows, mut ramps) = (Vec::new(), Vec::new());
    let mut before = server.report(concurrency)?;
    for rep in 0..REPS {
        // Each repetition in a fresh folder: a cold cache, then the same file again.
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("in.jsonl"), &input).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("p.toml"), pipeline(&server.url, concurrency)).map_err(|e| e.to_string())?;
        let mut timed = |no_cache: bool, expected_sent: usize| -> Result<ChildRun, String> {
            let run = child_run(dir.path(), no_cache)?;
            let after = server.report(concurrency)?;
            check(run.records, records, after.total - before.total, expected_sent)?;
            if expected_sent > 0 {
                served.add(&after.served);
                let cpu = after.cpu.saturating_sub(before.cpu);
                server_cpu.push(cpu);
                server_cores.push(cpu.as_secs_f64() / run.elapsed.as_secs_f64());
                windows.push(after.window);
                ramps.push(after.ramp);
            }
            before = after;
            Ok(run)
        };
        let c = timed(false, records)?;
        let h = timed(false, 0)?;
        let u = timed(true, records)?;
        report.progress(format!(
            "run {}: cold {:.3} s ({}), all cached {:.3} s ({}), no cache {:.3} s ({})",
            rep + 1,
            c.elapsed.as_secs_f64(),
            mb(c.peak_rss),
            h.elapsed.as_secs_f64(),
            mb(h.peak_rss),
            u.elapsed.as_secs_f64(),
            mb(u.peak_rss)
        ));
        rss.extend(c.peak_rss.into_iter().chain(u.peak_rss));
        rss_cached.extend(h.peak_rss);
        cold.push(c.elapsed);
        cached.push(h.elapsed);
        uncached.push(u.elapsed);
        cpu_uncached.extend(u.cpu);
    }
    let at = format!("concurrency {concurrency}, {} requests", thousands(records as u64));
    report.add(Figure::new(format!("{at}: ideal wall time, records × 0.1 s / concurrency (baseline)"), ideal, "s"));
    let stored = records as f64 / median(cold.clone()).as_secs_f64();
    for (name, times) in [("cold cache (each answer stored)", cold), ("no cache (--no-cache)", uncached)] {
        let t = median(times).as_secs_f64();
        report.add(
            Figure::new(format!("{at}: {name}: wall time over the ideal"), t / ideal, "×")
                .ratio(ideal / t)
                .target(Target::AtMost(1.15)),
        );
    }
    report.add(Figure::new(format!("{at}: cold cache: answers stored per second (records / wall time; the disk bounds it when below concurrency / 0.1 s)"), stored, "/s"));
    let t = median(cached).as_secs_f64();
    report.add(Figure::new(format!("{at}: every answer from the cache: wall time"), t * 1e3, "ms").ratio(ideal / t));
    match rss.iter().max() {
        Some(&peak) => {
            let figure = Figure::new(
                format!("{at}: peak RSS of the client, requests sent (highest of cold and no cache)"),
                peak as f64 / 1e6,
                "MB",
            );
            report.add(match rss_target {
                Some(t) => figure.target(Target::AtMost(t)),
                None => figure,
            });
        }
        None => report.progress("the peak RSS is not known on this system (no VmHWM in /proc/self/status)"),
    }
    if let Some(&peak) = rss_cached.iter().max() {
        report.add(Figure::new(
            format!("{at}: peak RSS of the client, every answer from the cache"),
            peak as f64 / 1e6,
            "MB",
        ));
    }
    let last = server.report(concurrency)?;
    report.add(
        Figure::new(format!("{at}: requests in flight at the server, at most"), last.max_in_flight as f64, "")
            .target(Target::AtMost(concurrency as f64)),
    );
    report.add(Figure::new(
        format!("{at}: connections opened per run (the client keeps them for the next request)"),
        last.connections as f64 / (2 * REPS) as f64,
        "",
    ));
    if let Some(mean) = served.mean() {
        report.add(Figure::new(
            format!("{at}: the server's own time per request, mean, from its read of the request to its answer written (100 ms of latency; more: it fell behind; the wait before the read is not seen)"),
            mean.as_secs_f64() * 1e3,
            "ms",
        ));
        report.add(Figure::new(
            format!("{at}: the server's slowest request (from its read of the request to its answer written)"),
            served.max.as_secs_f64() * 1e3,
            "ms",
        ));
    }
    if !windows.is_empty() {
        // Where the wall time over the ideal goes: the client's start and end (outside the
        // window), and the ramp: 10,000 requests at 1,024 take at least 10 rounds of the
        // latency, the first of which waits for the client to open 1,024 connections.
        let window = median(windows).as_secs_f64();
        report.add(
            Figure::new(
                format!(
                    "{at}: the server's window (first request's arrival to the last answer written) over the ideal"
                ),
                window / ideal,
                "×",
            )
            .ratio(ideal / window),
        );
        report.add(Figure::new(
            format!("{at}: ramp: the first request's arrival to the {concurrency}th in flight (the client's connections opened)"),
            median(ramps).as_secs_f64() * 1e3,
            "ms",
        ));
    }
    let server_cpu = (!server_cpu.is_empty()).then(|| median(server_cpu).as_secs_f64());
    if let Some(cpu) = server_cpu {
        report.add(Figure::new(format!("{at}: CPU time of the server per run that sent requests"), cpu, "s"));
        let cores = server_cores.iter().sum::<f64>() / server_cores.len() as f64;
        report.add(Figure::new(
            format!("{at}: cores the server kept busy (its CPU time / the run's wall time)"),
            cores,
            "",
        ));
    }
    let client_cpu = (!cpu_uncached.is_empty()).then(|| median(cpu_uncached).as_secs_f64());
    if let Some(cpu) = client_cpu {
        report.add(Figure::new(format!("{at}: CPU time of the client, no cache (all threads)"), cpu, "s"));
    }
    // Whether the server keeps up: it answers what it has read in about its latency, and
    // the server and the client together need no more of the machine's cores at the
    // ideal pace than it can give them (three quarters, the rest for the kernel's network
    // work and whatever else runs).
    if let (Some(mean), Some(server_cpu), Some(client_cpu)) = (served.mean(), server_cpu, client_cpu) {
        let over = mean.as_secs_f64() / LATENCY.as_secs_f64();
        let (server_cores, client_cores) = (server_cpu / ideal, client_cpu / ideal);
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        report.add(Figure::new(
            format!(
                "{at}: cores the server and the client need at the ideal pace ((their CPU times) / the ideal wall time)"
            ),
            server_cores + client_cores,
            "",
        ));
        let keeps_up = over <= KEEPS_UP && server_cores + client_cores <= 0.75 * cores;
        report.progress(format!(
            "concurrency {concurrency}: the server {}: it answers a request it has read in {:.1} ms ({over:.3}× its latency, within {KEEPS_UP}× is keeping up), and at the ideal pace it needs {server_cores:.2} cores and the client {client_cores:.2}, of this machine's {cores:.0} (three quarters of them at most)",
            if keeps_up { "keeps up" } else { "does not keep up" },
            mean.as_secs_f64() * 1e3,
        ));
    }
    Ok(())
}

/// The server's time per request, over the requests reported.
#[derive(Debug, Default, Clone, Copy)]
struct Served {
    count: u64,
    sum: Duration,
    max: Duration,
}

impl Served {
    fn add(&mut self, other: &Served) {
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| self.sum / self.count as u32)
    }
}

/// What the server process reports: its counts since it started, its time per request
/// for the requests since the report before, and its CPU time since it started.
#[derive(Debug, Default, Clone, Copy)]
struct ServerReport {
    total: usize,
    max_in_flight: usize,
    connections: usize,
    served: Served,
    cpu: Duration,
    /// The requests since the report before, as the server saw them: from the first one's
    /// arrival to the last answer written (the run's time at the server, its client's
    /// start and end left out), and to the arrival of the one that made `concurrency` in
    /// flight for the first time (the ramp: the client opening its connections).
    window: Duration,
    ramp: Duration,
}

/// The test server in a process of its own (`__bench-child llm-server`), asked for its
/// figures over a pipe: a line `report` on its stdin, `key=value` lines and `end` back.
/// It ends when its stdin closes.
struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    url: String,
}

impl ServerProcess {
    fn start(latency: Duration) -> Result<ServerProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut child = Command::new(&exe)
            .args(["__bench-child", "llm-server", &latency.as_millis().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the test server ({}): {e}", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the test server's pipes were not made".to_owned());
        };
        let mut server =
            ServerProcess { child, stdin: Some(stdin), stdout: BufReader::new(stdout), url: String::new() };
        let lines = server.read_until_end()?;
        server.url = lines
            .iter()
            .find_map(|l| l.strip_prefix("url="))
            .ok_or_else(|| format!("the test server did not say its address: {lines:?}"))?
            .to_owned();
        Ok(server)
    }

    /// The lines the server writes up to `end`.
    fn read_until_end(&mut self) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) => return Err(format!("the test server ended early, after {lines:?}")),
                Ok(_) if line.trim_end() == "end" => return Ok(lines),
                Ok(_) => lines.push(line.trim_end().to_owned()),
                Err(e) => return Err(format!("cannot read from the test server: {e}")),
            }
        }
    }

    /// The server's figures; `concurrency` for its ramp.
    fn report(&mut self, concurrency: usize) -> Result<ServerReport, String> {
        let stdin = self.stdin.as_mut().ok_or("the test server's stdin is closed")?;
        stdin
            .write_all(format!("report {concurrency}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot ask the test server: {e}"))?;
        let lines = self.read_until_end()?;
        let values: HashMap<&str, u64> =
            lines.iter().filter_map(|l| l.split_once('=')).filter_map(|(k, v)| Some((k, v.parse().ok()?))).collect();
        let get = |key: &str| {
            values.get(key).copied().ok_or_else(|| format!("the test server did not report `{key}`: {lines:?}"))
        };
        Ok(ServerReport {
            total: get("total")? as usize,
            max_in_flight: get("max_in_flight")? as usize,
            connections: get("connections")? as usize,
            served: Served {
                count: get("served")?,
                sum: Duration::from_nanos(get("served_sum_ns")?),
                max: Duration::from_nanos(get("served_max_ns")?),
            },
            cpu: Duration::from_nanos(get("cpu_ns")?),
            window: Duration::from_nanos(get("window_ns")?),
            ramp: Duration::from_nanos(get("ramp_ns")?),
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Its stdin closed, the server stops.
        self.stdin = None;
        let _ = self.child.wait();
    }
}

/// The server's side: `__bench-child llm-server <latency ms>` starts the test server,
/// writes `url=...` and `end`, then answers each `report` line on stdin with its figures
/// (see [`ServerReport`]) until stdin closes.
pub(super) fn server(args: &[String]) -> Result<(), String> {
    let ms: u64 = args.first().and_then(|a| a.parse().ok()).ok_or("usage: __bench-child llm-server <latency in ms>")?;
    let server = TestServer::builder()
        .latency(Duration::from_millis(ms))
        .start(|r| Reply::text(format!("casual: {}", r.prompt().rsplit("Text:\n").next().unwrap_or_default())))
        .map_err(|e| format!("cannot start the test server: {e}"))?;
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, text: String| {
        out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("cannot write to stdout: {e}"))
    };
    say(&mut out, format!("url={}\nend\n", server.url()))?;
    let mut seen = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
        let concurrency: usize = match line.trim().split_once(' ') {
            Some(("report", n)) => n.parse().map_err(|_| format!("`report` takes a concurrency, not {n:?}"))?,
            _ => return Err(format!("the test server takes `report CONCURRENCY`, not {line:?}")),
        };
        // The log is in arrival order and only grows: the requests since the last report
        // are its tail. A request not answered yet has no time.
        let log = server.requests();
        let times: Vec<Duration> = log[seen.min(log.len())..]
            .iter()
            .filter_map(|l| l.done.map(|d| d.saturating_duration_since(l.at)))
            .collect();
        let run = &log[seen.min(log.len())..];
        let (window, ramp) = match run.first() {
            Some(first) => {
                let last = run.iter().filter_map(|l| l.done).max().unwrap_or(first.at);
                // The one that made `concurrency` in flight: arrivals minus answers done by
                // then (the log is in arrival order).
                let mut done: Vec<Instant> = run.iter().filter_map(|l| l.done).collect();
                done.sort_unstable();
                let mut answered = 0;
                let full = run.iter().enumerate().find_map(|(i, l)| {
                    while answered < done.len() && done[answered] <= l.at {
                        answered += 1;
                    }
                    (i + 1 - answered >= concurrency).then_some(l.at)
                });
                (last.saturating_duration_since(first.at), full.map_or(Duration::ZERO, |t| t - first.at))
            }
            None => (Duration::ZERO, Duration::ZERO),
        };
        seen = log.len();
        let sum: Duration = times.iter().sum();
        let max = times.iter().max().copied().unwrap_or_default();
        say(
            &mut out,
            format!(
                "total={}\nmax_in_flight={}\nconnections={}\nserved={}\nserved_sum_ns={}\nserved_max_ns={}\ncpu_ns={}\nwindow_ns={}\nramp_ns={}\nend\n",
                log.len(),
                server.max_in_flight(),
                server.connections(),
                times.len(),
                sum.as_nanos(),
                max.as_nanos(),
                cpu_time().unwrap_or_default().as_nanos(),
                window.as_nanos(),
                ramp.as_nanos()
            ),
        )?;
    }
    Ok(())
}

/// Megabytes, for the progress lines.
fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "RSS unknown".to_owned(), |b| format!("{:.0} MB", b as f64 / 1e6))
}

/// The run wrote every record and sent the requests it should have.
fn check(records: u64, expected: usize, sent: usize, expected_sent: usize) -> Result<(), String> {
    if records != expected as u64 {
        return Err(format!("the run wrote {records} records, not {expected}"));
    }
    if sent != expected_sent {
        return Err(format!("the run sent {sent} requests, not {expected_sent}"));
    }
    Ok(())
}

/// What one child process reported.
#[derive(Debug)]
struct ChildRun {
    records: u64,
    elapsed: Duration,
    peak_rss: Option<u64>,
    /// CPU time of the whole child process (its start included).
    cpu: Option<Duration>,
}

/// Runs the pipeline `p.toml` in `dir` in a child process and reads its report.
fn child_run(dir: &Path, no_cache: bool) -> Result<ChildRun, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir_arg = dir.to_str().ok_or("the temporary folder's path is not UTF-8")?;
    let out = Command::new(&exe)
        .args(["__bench-child", "llm", dir_arg, if no_cache { "no-cache" } else { "cache" }])
        .output()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "the child process failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let values: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let number = |key: &str| -> Option<u64> { values.get(key).and_then(|v| v.parse().ok()) };
    let required = |key: &str| number(key).ok_or_else(|| format!("the child did not report `{key}`:\n{stdout}"));
    Ok(ChildRun {
        records: required("records")?,
        elapsed: Duration::from_nanos(required("elapsed_ns")?),
        peak_rss: number("peak_rss"),
        cpu: number("cpu_ns").map(Duration::from_nanos),
    })
}

/// The child's side: `__bench-child llm <dir> cache|no-cache` builds `dir/p.toml` and
/// runs it through the executor once, as `weave run` (with `--no-cache`) does, and prints
/// `key=value` lines on stdout: the records written, the wall time, the peak RSS.
pub(super) fn child(args: &[String]) -> Result<(), String> {
    let (Some(dir), Some(mode)) = (args.first(), args.get(1)) else {
        return Err("usage: __bench-child llm <dir> cache|no-cache".to_owned());
    };
    let no_cache = match mode.as_str() {
        "cache" => false,
        "no-cache" => true,
        other => return Err(format!("`{other}` is neither `cache` nor `no-cache`")),
    };
    let dir = Path::new(dir);
    let file = dir.join("p.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let start = Instant::now();
    let options = weave_core::BuildOptions { no_cache, ..weave_core::BuildOptions::default() };
    let pipeline = weave_core::Pipeline::from_file_text_with(&file, &text, &weave_steps::registry(), &options)
        .map_err(|d| d.to_string())?;
    let summary = weave_exec::run(pipeline, weave_exec::ExecOptions::default()).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if let Some(p) = peak_rss() {
        println!("peak_rss={p}");
    }
    if let Some(c) = cpu_time() {
        println!("cpu_ns={}", c.as_nanos());
    }
    println!("records={}", summary.step("export").map_or(0, |s| s.records_in));
    println!("elapsed_ns={}", elapsed.as_nanos());
    Ok(())
}
