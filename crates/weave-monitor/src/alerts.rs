//! Alerts: rules from the pipeline file, evaluated on run events, sent to the log, a
//! JSONL file, or a user command.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use weave_core::{AlertSink, AlertSpec, Comparison, Event, RunStatus, StepCounts, Subscriber};

/// One alert that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The rule's condition as written (`error_rate > 0.05`).
    pub rule: String,
    /// The metric.
    pub metric: String,
    /// Its value when the alert fired.
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// The step it concerns, for per-step metrics.
    pub step: Option<String>,
    /// The pipeline.
    pub pipeline: String,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// A sentence for people.
    pub message: String,
}

/// Per-step state the rules read.
#[derive(Debug, Default)]
struct StepState {
    started: Option<Instant>,
    /// The step's counts, as the metrics count them.
    counts: StepCounts,
    /// (when, attempts, failed attempts) of recent events, for windowed error rates.
    attempts: VecDeque<(Instant, u64, u64)>,
}

#[derive(Debug, Default)]
struct State {
    pipeline: String,
    max_memory: u64,
    steps: HashMap<Arc<str>, StepState>,
    /// (rule index, step) pairs that have fired: an alert that stays true fires once.
    fired: HashSet<(usize, Option<String>)>,
    alerts: Vec<Alert>,
}

/// Evaluates `[[alert]]` rules on run events. Alerts go to their sinks on a thread of
/// their own, so a slow or hanging sink (a command past its timeout is killed) never
/// slows the run. Call [`AlertManager::finish`] after the run to wait for them.
#[derive(Debug)]
pub struct AlertManager {
    rules: Vec<AlertSpec>,
    state: Mutex<State>,
    tx: Mutex<Option<Sender<(Alert, usize)>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl AlertManager {
    /// A manager for these rules (usually `pipeline.alerts`).
    pub fn new(rules: Vec<AlertSpec>) -> Self {
        let (tx, rx) = channel::<(Alert, usize)>();
        let sinks: Vec<(AlertSink, Duration)> = rules.iter().map(|r| (r.sink.clone(), r.timeout)).collect();
        let worker = std::thread::Builder::new()
            .name("weave-alerts".to_owned())
            .spawn(move || deliver(&rx, &sinks))
            .map_err(|e| log::warn!("cannot start the alert thread ({e}); alerts go to the log only"))
            .ok();
        AlertManager { rules, state: Mutex::default(), tx: Mutex::new(Some(tx)), worker: Mutex::new(worker) }
    }

    /// The alerts that fired so far.
    pub fn fired(&self) -> Vec<Alert> {
        self.lock().alerts.clone()
    }

    /// Waits until every alert has been delivered (each command within its timeout).
    pub fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        if let Some(w) = self.worker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = w.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks rule `i` against `value` for `step`, and fires it the first time it holds.
    fn check(&self, st: &mut State, i: usize, step: Option<&str>, value: f64) {
        let rule = &self.rules[i];
        if rule.step.as_deref().is_some_and(|s| Some(s) != step) {
            return;
        }
        let holds = match rule.comparison {
            Comparison::Greater => value > rule.threshold,
            Comparison::GreaterOrEqual => value >= rule.threshold,
            Comparison::Less => value < rule.threshold,
            Comparison::LessOrEqual => value <= rule.threshold,
        };
        if !holds || !st.fired.insert((i, step.map(str::to_owned))) {
            return;
        }
        let on = step.map_or(String::new(), |s| format!(" on step \"{s}\""));
        let alert = Alert {
            rule: rule.when.clone(),
            metric: rule.metric.clone(),
            value,
            threshold: rule.threshold,
            step: step.map(str::to_owned),
            pipeline: st.pipeline.clone(),
            time_ms: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            message: format!("alert `{}`{on}: {} is {}", rule.when, rule.metric, round(value)),
        };
        st.alerts.push(alert.clone());
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|tx| tx.send((alert.clone(), i)).is_ok());
        if !sent {
            log::warn!("{}", alert.message);
        }
    }
}

fn round(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Subscriber for AlertManager {
    fn on_event(&self, event: &Event) {
        if self.rules.is_empty() {
            return;
        }
        let mut st = self.lock();
        let now = Instant::now();
        match event {
            Event::RunStarted { pipeline, max_memory, .. } => {
                st.pipeline.clone_from(pipeline);
                st.max_memory = *max_memory;
            }
            Event::StepStarted { step } => st.steps.entry(Arc::clone(step)).or_default().started = Some(now),
            // Requests a call made of its own count with the call; the rules are judged
            // when the call's end is known, so that a call and its requests are seen whole.
            Event::RequestsMade { step, requests, failed, .. } => {
                let s = st.steps.entry(Arc::clone(step)).or_default();
                s.counts.apply(event);
                s.attempts.push_back((now, *requests, *failed));
            }
            Event::BatchFinished { step, .. } | Event::BatchRetried { step, .. } | Event::BatchFailed { step, .. } => {
                let failed = !matches!(event, Event::BatchFinished { .. });
                let s = st.steps.entry(Arc::clone(step)).or_default();
                s.counts.apply(event);
                s.attempts.push_back((now, 1, u64::from(failed)));
                let (retries, started) = (s.counts.retries, s.started);
                for i in 0..self.rules.len() {
                    let value = match self.rules[i].metric.as_str() {
                        "error_rate" => {
                            let window = self.rules[i].window;
                            let recent =
                                st.steps[step].attempts.iter().filter(|(t, ..)| now.duration_since(*t) <= window);
                            let (n, bad) = recent.fold((0u64, 0u64), |(n, b), (_, a, f)| (n + a, b + f));
                            bad as f64 / n.max(1) as f64
                        }
                        "retries" => retries as f64,
                        "step_duration" => started.map_or(0.0, |s| now.duration_since(s).as_secs_f64()),
                        _ => continue,
                    };
                    self.check(&mut st, i, Some(step), value);
                }
                // Keep only what the longest window can still see.
                let longest = self.rules.iter().map(|r| r.window).max().unwrap_or_default();
                if let Some(s) = st.steps.get_mut(step) {
                    while s.attempts.front().is_some_and(|(t, ..)| now.duration_since(*t) > longest) {
                        s.attempts.pop_front();
                    }
                }
            }
            Event::StepFinished { step, elapsed } => {
                for i in 0..self.rules.len() {
                    if self.rules[i].metric == "step_duration" {
                        self.check(&mut st, i, Some(step), elapsed.as_secs_f64());
                    }
                }
            }
            Event::WaitedForMemory { .. } => {
                // A source had to wait: the budget was full.
                for i in 0..self.rules.len() {
                    if self.rules[i].metric == "memory_share" {
                        self.check(&mut st, i, None, 1.0);
                    }
                }
            }
            Event::RunFinished { status, peak_memory, .. } => {
                for i in 0..self.rules.len() {
                    match self.rules[i].metric.as_str() {
                        "run_failed" => {
                            let failed = if *status == RunStatus::Succeeded { 0.0 } else { 1.0 };
                            self.check(&mut st, i, None, failed);
                        }
                        "memory_share" if st.max_memory > 0 => {
                            let share = *peak_memory as f64 / st.max_memory as f64;
                            self.check(&mut st, i, None, share);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// Delivers alerts to their rules' sinks, one at a time, until the manager finishes.
fn deliver(rx: &Receiver<(Alert, usize)>, sinks: &[(AlertSink, Duration)]) {
    while let Ok((alert, i)) = rx.recv() {
        let Some((sink, timeout)) = sinks.get(i) else { continue };
        let json = serde_json::to_string(&alert).unwrap_or_default();
        match sink {
            AlertSink::Log => log::warn!("{}", alert.message),
            AlertSink::File(path) => {
                // Without blocking: a FIFO that no process reads would otherwise hold the
                // open (and a full one the write) for ever, and with it the end of the run.
                // On a regular file the flag changes nothing.
                use std::os::unix::fs::OpenOptionsExt as _;
                let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
                let written = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        std::fs::OpenOptions::new().create(true).append(true).custom_flags(nonblock).open(path)
                    })
                    .and_then(|mut f| writeln!(f, "{json}"));
                if let Err(e) = written {
                    let why = if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) {
                        "it is a FIFO that no process reads".to_owned()
                    } else {
                        e.to_string()
                    };
                    log::warn!("{} (and it could not be written to {}: {why})", alert.message, path.display());
                }
            }
            AlertSink::Command(cmd) => run_command(cmd, &json, *timeout, &alert.message),
        }
    }
}

/// The process groups of the alert commands under way, for [`kill_alert_commands`].
fn live_groups() -> &'static Mutex<HashSet<i32>> {
    static LIVE: std::sync::OnceLock<Mutex<HashSet<i32>>> = std::sync::OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// Kills every alert command under way, with everything it started (its process group),
/// for a process about to exit at once (the forced stop of a second Ctrl-C): a command runs
/// in a process group of its own, which the terminal's Ctrl-C does not reach, so it would
/// outlive Weave. Returns how many commands were killed.
pub fn kill_alert_commands() -> usize {
    use rustix::process::{Pid, Signal, kill_process_group};
    let groups = live_groups().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for group in groups.iter().filter_map(|&g| Pid::from_raw(g)) {
        let _ = kill_process_group(group, Signal::KILL);
    }
    groups.len()
}

/// A command's process group, listed in [`live_groups`] while it lives.
struct Listed(i32);

impl Listed {
    fn new(group: i32) -> Listed {
        live_groups().lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(group);
        Listed(group)
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        live_groups().lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.0);
    }
}

/// Runs `sh -c cmd` with the alert as JSON on stdin; stops it, and everything it started,
/// at `timeout`.
///
/// The command is the leader of a process group of its own, and the whole group is killed
/// at the timeout: killing `sh` alone would leave what it started (`sh -c 'sleep 1000' &`)
/// running, holding Weave's stderr open, so that `weave run … | cat` waited for it. What
/// the command leaves running when it exits gets the rest of the timeout, then goes too.
fn run_command(cmd: &str, json: &str, timeout: Duration, message: &str) {
    use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
    use std::os::unix::process::CommandExt;

    let child =
        Command::new("sh").arg("-c").arg(cmd).stdin(Stdio::piped()).stdout(Stdio::null()).process_group(0).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            log::warn!("{message} (the alert command could not start: {e})");
            return;
        }
    };
    let group = Pid::from_child(&child);
    // Listed until the group is found empty or killed (dropped on every return below): a
    // group's id is not given to another while a process of it lives.
    let _listed = Listed::new(group.as_raw_nonzero().get());
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input must not block the delivery.
        let _ = stdin.write_all(json.as_bytes()).and_then(|()| stdin.write_all(b"\n"));
    }
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= timeout => {
                // `sh` is not reaped yet, so the group's id cannot name another group.
                let _ = kill_process_group(group, Signal::KILL);
                let _ = child.kill();
                let _ = child.wait();
                log::warn!("{message} (the alert command took longer than {timeout:?} and was stopped)");
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = kill_process_group(group, Signal::KILL);
                log::warn!("{message} (cannot wait for the alert command: {e})");
                return;
            }
        }
    };
    // While a process of the group lives, the group's id stays taken (no new process gets
    // it), so the test and the kill below reach that group only.
    while test_kill_process_group(group).is_ok() {
        if start.elapsed() >= timeout {
            let _ = kill_process_group(group, Signal::KILL);
            log::warn!(
                "{message} (the alert command left processes running past its timeout of {timeout:?}; they were stopped)"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if !status.success() {
        log::warn!("{message} (the alert command exited with {status})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::PipelineSpec;

    fn rules(toml: &str) -> Vec<AlertSpec> {
        let text = format!("{toml}\n[[step]]\nid = \"a\"\nkind = \"k\"\n");
        PipelineSpec::parse("p.toml", &text).map(|(s, _)| s.alerts).unwrap_or_else(|d| panic!("{d}"))
    }

    fn call(step: &str, ok: bool) -> Event {
        if ok {
            Event::BatchFinished { step: step.into(), seq: 0, records_in: 1, records_out: 1, elapsed: Duration::ZERO }
        } else {
            Event::BatchRetried { step: step.into(), seq: 0, attempt: 1, delay: Duration::ZERO, error: "x".into() }
        }
    }

    #[test]
    fn an_error_rate_alert_fires_once_when_crossed_and_the_command_gets_json() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("got.json");
        let m = AlertManager::new(rules(&format!(
            "[[alert]]\nwhen = \"error_rate > 0.25\"\nnotify = \"command\"\ncommand = \"cat >> '{}'\"",
            out.display()
        )));
        m.on_event(&Event::RunStarted { pipeline: "p".into(), steps: 1, threads: 1, max_memory: 1 });
        // 1 failure in 5 calls (20%): below; then 2 in 6 (33%): crossed; more failures: still one alert.
        for ok in [true, true, true, true, false, false, false, false, true] {
            m.on_event(&call("clean", ok));
        }
        m.on_event(&call("other", true));
        m.finish();
        let fired = m.fired();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].step.as_deref(), Some("clean"));
        assert!((fired[0].value - 2.0 / 6.0).abs() < 1e-9);
        let got = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("the command got valid JSON");
        assert_eq!(v["metric"], "error_rate");
        assert_eq!(v["pipeline"], "p");
        assert_eq!(v["rule"], "error_rate > 0.25");
    }

    #[test]
    fn a_command_that_hangs_is_stopped_at_its_timeout_without_slowing_events() {
        let m = AlertManager::new(rules(
            "[[alert]]\nwhen = \"retries > 0\"\nnotify = \"command\"\ncommand = \"sleep 100\"\ntimeout = \"2s\"",
        ));
        let t0 = Instant::now();
        for _ in 0..1000 {
            m.on_event(&call("s", false));
        }
        // Well under the command's 2 s: the events did not wait for it.
        assert!(t0.elapsed() < Duration::from_secs(1), "events are not held up by the sink");
        m.finish();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "the command was stopped at its timeout: {took:?}"
        );
        assert_eq!(m.fired().len(), 1);
    }

    /// Whether the process `pid` has ended (gone, or a zombie waiting for its parent).
    fn ended(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with(['Z', 'X'])),
        }
    }

    // regression: at its timeout only `sh` was killed; what it had started lived on,
    // holding Weave's stderr, and `weave run … | cat` waited until it ended.
    #[test]
    fn a_command_is_stopped_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            // Still running at the timeout (as `sleep`), with a child in the background.
            ("running", "sh -c 'echo $$ >> {pids}; exec sleep 1000' & echo $$ >> {pids}; exec sleep 1000"),
            // Gone at once, its child left running in the background.
            ("left", "sh -c 'echo $$ >> {pids}; exec sleep 1000' &"),
        ];
        for (name, command) in cases {
            let pid_file = dir.path().join(name);
            let command = command.replace("{pids}", &pid_file.display().to_string());
            let m = AlertManager::new(rules(&format!(
                "[[alert]]\nwhen = \"retries > 0\"\nnotify = \"command\"\ncommand = \"{command}\"\ntimeout = \"500ms\""
            )));
            m.on_event(&call("s", false));
            m.finish();
            let pids = std::fs::read_to_string(&pid_file).unwrap();
            for pid in pids.split_whitespace() {
                // The kill is sent before `finish` returns; the kernel takes a moment to end it.
                let gone = (0..500).any(|_| {
                    std::thread::sleep(Duration::from_millis(10));
                    ended(pid)
                });
                if !gone {
                    let _ = std::process::Command::new("kill").arg("-9").arg(pid).status();
                }
                assert!(gone, "{name}: process {pid} of the command outlived its timeout");
            }
        }
    }

    // regression: an alert file that is a FIFO no process reads blocked the opening of it
    // for ever, and with it the end of the run (a SIGTERM did not help).
    #[test]
    fn an_alert_file_that_is_a_fifo_without_a_reader_does_not_hold_up_the_run() {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("alerts.fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let failed = Event::RunFinished { status: RunStatus::Failed, elapsed: Duration::ZERO, peak_memory: 0 };
        let manager = || {
            let text =
                format!("[[alert]]\nwhen = \"run_failed > 0\"\nnotify = \"file\"\npath = \"{}\"", fifo.display());
            AlertManager::new(rules(&text))
        };
        let m = manager();
        m.on_event(&failed);
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            m.finish();
            let _ = done.send(m.fired().len());
        });
        let delivered = finished.recv_timeout(Duration::from_secs(60));
        if delivered.is_err() {
            // Let the blocked open go, so that the test ends.
            let _ = std::fs::File::open(&fifo);
        }
        assert_eq!(delivered, Ok(1), "the delivery ended, the alert counted as fired");
        // With a process reading the FIFO, the alert reaches it.
        let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
        let mut reader = std::fs::OpenOptions::new().read(true).custom_flags(nonblock).open(&fifo).unwrap();
        let m = manager();
        m.on_event(&failed);
        m.finish();
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        assert!(got.contains("\"rule\":\"run_failed > 0\""), "{got:?}");
    }

    #[test]
    fn file_sink_run_failure_step_filter_and_durations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/alerts.jsonl");
        let m = AlertManager::new(rules(&format!(
            "[[alert]]\nwhen = \"run_failed > 0\"\nnotify = \"file\"\npath = \"{0}\"\n\
             [[alert]]\nwhen = \"step_duration > 1s\"\nstep = \"slow\"\nnotify = \"file\"\npath = \"{0}\"\n\
             [[alert]]\nwhen = \"memory_share >= 0.9\"\nnotify = \"file\"\npath = \"{0}\"",
            path.display()
        )));
        m.on_event(&Event::RunStarted { pipeline: "p".into(), steps: 2, threads: 1, max_memory: 100 });
        m.on_event(&Event::StepFinished { step: "fast".into(), elapsed: Duration::from_secs(5) });
        m.on_event(&Event::StepFinished { step: "slow".into(), elapsed: Duration::from_secs(2) });
        m.on_event(&Event::RunFinished { status: RunStatus::Failed, elapsed: Duration::ZERO, peak_memory: 95 });
        m.finish();
        let rules: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["rule"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(rules, ["step_duration > 1s", "run_failed > 0", "memory_share >= 0.9"]);
    }
}
