//! The bad-input corpus: each folder of `tests/bad-inputs/` is a case (a pipeline file, its
//! inputs, and a `case.toml` saying what must happen), run through the real binary.
//! `tests/bad-inputs/README.md` describes the format.
//!
//! Besides what its case file expects, every case is held to what must hold for any input,
//! however hostile: the command ends on its own within [`TIMEOUT`] (a hang fails, naming
//! the case) and leaves no process behind holding its output; nothing it prints or writes
//! says `panicked`; no input file changes; no temporary file is left; and a command that
//! fails creates nothing outside `.weave/` (outputs appear whole or not at all).
//! One test runs every case and reports every problem of every failing case at once.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long one command may take: far more than any case needs in a debug build on a busy
/// machine, so that only a hang reaches it.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The least number of cases the corpus holds, so that a folder moved away or a listing
/// that finds nothing cannot pass as a corpus that is all fine.
const MIN_CASES: usize = 200;

/// Set to a comma-separated list of case names to run only those (while writing a case).
const ONLY_ENV: &str = "WEAVE_BAD_INPUTS";

/// A case file, `case.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// One line: what the case feeds Weave, and what must happen.
    description: String,
    /// The command line after `weave`.
    #[serde(default = "default_args")]
    args: Vec<String>,
    /// The folder of the case it runs in (default: the case's own).
    cwd: Option<String>,
    /// The exit code the command must end with.
    exit: i32,
    /// Words stderr must contain, each as written.
    #[serde(default)]
    stderr: Vec<String>,
    /// Words stdout must contain, each as written.
    #[serde(default)]
    stdout: Vec<String>,
    /// Words stderr must not contain.
    #[serde(default)]
    stderr_not: Vec<String>,
    /// Words stdout must not contain.
    #[serde(default)]
    stdout_not: Vec<String>,
    /// Words stderr must contain exactly once (an error printed once, not as a log line,
    /// an `error:` and a `caused by:`).
    #[serde(default)]
    stderr_once: Vec<String>,
    /// Words stdout must contain exactly once.
    #[serde(default)]
    stdout_once: Vec<String>,
    /// When given, `weave validate pipeline.toml` is run first and must end with this code.
    validate: Option<i32>,
    /// Files (relative to the case folder) that must exist after the command.
    #[serde(default)]
    exists: Vec<String>,
    /// Files that must not exist after the command.
    #[serde(default)]
    absent: Vec<String>,
    /// Files, and words each must contain after the command.
    #[serde(default)]
    contains: BTreeMap<String, Vec<String>>,
    /// Files the command may create, change or remove even though they are inputs or the
    /// command fails (a metrics file written by a failed run).
    #[serde(default)]
    outputs: Vec<String>,
    /// Inputs made before the run rather than committed (a 100 MB field).
    #[serde(default)]
    generate: Vec<Generate>,
    /// Files made unreadable (mode 000) before the run. Where that does not stop reads
    /// (root), the case is skipped with a note.
    #[serde(default)]
    unreadable: Vec<String>,
    /// FIFOs (named pipes) made before the run, which git cannot hold.
    #[serde(default)]
    fifo: Vec<String>,
    /// Commands run first, in order: a `weave` command line (a first run that fills the
    /// cache), checked as the main one is, or a shell command that sets the next one up
    /// (an edit between two runs), of which only the exit code is checked.
    #[serde(default)]
    before: Vec<Before>,
}

/// A command run before the case's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Before {
    /// A command line after `weave`...
    #[serde(default)]
    args: Vec<String>,
    /// ...or a shell command (`sh -c`).
    sh: Option<String>,
    /// The folder of the case it runs in.
    cwd: Option<String>,
    /// Its exit code.
    #[serde(default)]
    exit: i32,
    #[serde(default)]
    stderr: Vec<String>,
    #[serde(default)]
    stdout: Vec<String>,
    #[serde(default)]
    stderr_not: Vec<String>,
    #[serde(default)]
    stdout_not: Vec<String>,
    #[serde(default)]
    stderr_once: Vec<String>,
    #[serde(default)]
    stdout_once: Vec<String>,
}

/// What one command must give: its exit code, and words its output holds or not.
#[derive(Debug, Clone, Copy)]
struct Expect<'a> {
    code: i32,
    stdout: &'a [String],
    stderr: &'a [String],
    stdout_not: &'a [String],
    stderr_not: &'a [String],
    stdout_once: &'a [String],
    stderr_once: &'a [String],
}

impl Expect<'_> {
    /// Only an exit code.
    fn code(code: i32) -> Expect<'static> {
        Expect { code, stdout: &[], stderr: &[], stdout_not: &[], stderr_not: &[], stdout_once: &[], stderr_once: &[] }
    }
}

impl Case {
    fn expect(&self) -> Expect<'_> {
        let (stdout, stderr, stdout_not, stderr_not) = (&self.stdout, &self.stderr, &self.stdout_not, &self.stderr_not);
        let (stdout_once, stderr_once) = (&self.stdout_once, &self.stderr_once);
        Expect { code: self.exit, stdout, stderr, stdout_not, stderr_not, stdout_once, stderr_once }
    }
}

impl Before {
    fn expect(&self) -> Expect<'_> {
        let (stdout, stderr, stdout_not, stderr_not) = (&self.stdout, &self.stderr, &self.stdout_not, &self.stderr_not);
        let (stdout_once, stderr_once) = (&self.stdout_once, &self.stderr_once);
        Expect { code: self.exit, stdout, stderr, stdout_not, stderr_not, stdout_once, stderr_once }
    }
}

fn default_args() -> Vec<String> {
    vec!["run".to_owned(), "pipeline.toml".to_owned()]
}

/// An input written before the run: `prefix`, then `repeat` `times` times (`{n}` in it
/// replaced by the repeat's number, from 0), then `suffix`. Several entries for one file
/// write it one after the other.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Generate {
    file: String,
    #[serde(default)]
    prefix: String,
    repeat: String,
    times: u64,
    #[serde(default)]
    suffix: String,
}

/// What one command gave.
#[derive(Debug)]
struct Ran {
    /// The exit code, `None` when a signal ended it.
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// What went wrong with the process itself: a hang, a process left holding its output.
    problems: Vec<String>,
}

/// What a file of the case's folder was before the command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    /// A file's blake3.
    File([u8; 32]),
    /// A symbolic link's target.
    Link(PathBuf),
    /// A file that cannot be read: its size and modification time stand for its content.
    Unreadable(u64, Option<std::time::SystemTime>),
    /// A FIFO, a device or a socket, which is never opened (that could block).
    Special,
}

type Snapshot = BTreeMap<PathBuf, Entry>;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/bad-inputs")
}

fn weave_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weave")
}

#[test]
fn every_bad_input_case_does_what_its_case_file_says() {
    let only: Option<Vec<String>> =
        std::env::var(ONLY_ENV).ok().map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/bad-inputs exists")
        .map(|e| e.expect("list tests/bad-inputs").path())
        .filter(|p| p.is_dir())
        .filter(|p| only.as_ref().is_none_or(|o| o.iter().any(|n| p.file_name().is_some_and(|f| f == n.as_str()))))
        .collect();
    cases.sort();
    if only.is_none() {
        assert!(cases.len() >= MIN_CASES, "tests/bad-inputs holds {} cases, fewer than {MIN_CASES}", cases.len());
    }

    // Cases run side by side, a few at a time: each is one short process, most of them
    // waiting on the file system.
    let next = Mutex::new(cases.iter());
    let results = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let Some(dir) = next.lock().expect("lock").next() else { break };
                    let outcome = run_case(dir);
                    results.lock().expect("lock").push((name_of(dir), outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("lock");
    results.sort_by(|a, b| a.0.cmp(&b.0));

    let mut failed = Vec::new();
    for (name, outcome) in &results {
        match outcome {
            Outcome::Passed => {}
            // A case that cannot be set up here is said, not silently passed.
            #[allow(clippy::print_stderr)]
            Outcome::Skipped(why) => eprintln!("bad-inputs/{name}: skipped: {why}"),
            Outcome::Failed(problems) => {
                failed.push(format!("bad-inputs/{name}:\n  - {}", problems.join("\n  - ")));
            }
        }
    }
    assert!(failed.is_empty(), "{} of {} cases failed:\n\n{}", failed.len(), results.len(), failed.join("\n\n"));
}

fn name_of(dir: &Path) -> String {
    dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// How a case went.
#[derive(Debug)]
enum Outcome {
    Passed,
    /// It could not be set up here (why).
    Skipped(String),
    /// Every problem found, each a sentence.
    Failed(Vec<String>),
}

/// Copies the case's folder to a temporary one, runs its command(s) there and checks
/// everything.
fn run_case(case_dir: &Path) -> Outcome {
    let case: Case = match std::fs::read_to_string(case_dir.join("case.toml"))
        .map_err(|e| e.to_string())
        .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(vec![format!("case.toml cannot be read: {e}")]),
    };
    if case.description.trim().is_empty() {
        return Outcome::Failed(vec!["case.toml has an empty description".to_owned()]);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    // The case file is not an input: a glob such as `*.toml` must not see it.
    if let Err(e) = copy_tree(case_dir, dir).and_then(|()| std::fs::remove_file(dir.join("case.toml"))) {
        return Outcome::Failed(vec![format!("cannot copy the case: {e}")]);
    }
    for (i, g) in case.generate.iter().enumerate() {
        let append = case.generate[..i].iter().any(|earlier| earlier.file == g.file);
        if let Err(e) = generate(&dir.join(&g.file), g, append) {
            return Outcome::Failed(vec![format!("cannot generate {}: {e}", g.file)]);
        }
    }
    for f in &case.fifo {
        match Command::new("mkfifo").arg(dir.join(f)).status() {
            Ok(s) if s.success() => {}
            other => return Outcome::Failed(vec![format!("cannot make the FIFO {f}: {other:?}")]),
        }
    }
    for f in &case.unreadable {
        let path = dir.join(f);
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)) {
            return Outcome::Failed(vec![format!("cannot make {f} unreadable: {e}")]);
        }
        if std::fs::File::open(&path).is_ok() {
            return Outcome::Skipped(format!(
                "{f} can still be read with mode 000 here (running as root?), so the case would not test an unreadable file"
            ));
        }
    }
    let outcome = check_case(&case, dir);
    // Give back what was taken away, so that the folder can be removed.
    for f in &case.unreadable {
        let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644));
    }
    match outcome {
        problems if problems.is_empty() => Outcome::Passed,
        problems => Outcome::Failed(problems),
    }
}

/// Runs the case's commands in `dir` (a copy of the case) and returns every problem.
fn check_case(case: &Case, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let at = |cwd: &Option<String>| cwd.as_ref().map_or_else(|| dir.to_path_buf(), |c| dir.join(c));
    for b in &case.before {
        match (&b.sh, b.args.is_empty()) {
            (Some(sh), true) => {
                let ran = run_shell(sh, &at(&b.cwd));
                if ran.code != Some(b.exit) || !ran.problems.is_empty() {
                    problems.push(format!(
                        "sh -c {sh:?}: exit code {:?}, expected {}; {:?}\n{}",
                        ran.code,
                        b.exit,
                        ran.problems,
                        String::from_utf8_lossy(&ran.stderr)
                    ));
                }
            }
            (None, false) => {
                let args: Vec<&str> = b.args.iter().map(String::as_str).collect();
                problems.extend(run_weave(&args, &at(&b.cwd), dir, b.expect(), &case.outputs));
            }
            _ => problems.push("a [[before]] command has either `args` or `sh`, and not both".to_owned()),
        }
    }
    if let Some(code) = case.validate {
        problems.extend(run_weave(
            &["validate", "pipeline.toml"],
            &at(&case.cwd),
            dir,
            Expect::code(code),
            &case.outputs,
        ));
    }
    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
    problems.extend(run_weave(&args, &at(&case.cwd), dir, case.expect(), &case.outputs));
    for f in &case.exists {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            problems.push(format!("{f} should exist after the command, and does not"));
        }
    }
    for f in &case.absent {
        if std::fs::symlink_metadata(dir.join(f)).is_ok() {
            problems.push(format!("{f} should not exist after the command, and does"));
        }
    }
    for (f, words) in &case.contains {
        match std::fs::read(dir.join(f)) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                for w in words {
                    if !text.contains(w.as_str()) {
                        problems.push(format!("{f} lacks {w:?}; it holds:\n{}", excerpt(&text)));
                    }
                }
            }
            Err(e) => problems.push(format!("{f} cannot be read after the command: {e}")),
        }
    }
    problems
}

/// Runs one `weave` command in `cwd` and checks it: its exit code and words, no panic, and
/// what it did to the case's folder `dir`.
fn run_weave(args: &[&str], cwd: &Path, dir: &Path, expect: Expect<'_>, outputs: &[String]) -> Vec<String> {
    let before = snapshot(dir);
    let ran = run_command(weave_bin(), args, cwd, TIMEOUT);
    let mut problems = check_run(&format!("weave {}", args.join(" ")), &ran, expect);
    problems.extend(check_files(&before, dir, outputs, ran.code != Some(0)));
    problems
}

/// Checks one command's exit code, its words, and that it did not panic.
fn check_run(what: &str, ran: &Ran, expect: Expect<'_>) -> Vec<String> {
    let code = expect.code;
    let mut problems: Vec<String> = ran.problems.iter().map(|p| format!("{what}: {p}")).collect();
    let out = String::from_utf8_lossy(&ran.stdout);
    let err = String::from_utf8_lossy(&ran.stderr);
    let shown = || format!("\n    --- stdout\n{}\n    --- stderr\n{}", excerpt(&out), excerpt(&err));
    match ran.code {
        Some(c) if c == code => {}
        Some(c) => problems.push(format!("{what}: exit code {c}, expected {code}{}", shown())),
        None => problems.push(format!("{what}: ended by a signal, expected exit code {code}{}", shown())),
    }
    for (name, text, words, not, once) in [
        ("stdout", &out, expect.stdout, expect.stdout_not, expect.stdout_once),
        ("stderr", &err, expect.stderr, expect.stderr_not, expect.stderr_once),
    ] {
        for w in words.iter().filter(|w| !text.contains(w.as_str())) {
            problems.push(format!("{what}: {name} lacks {w:?}{}", shown()));
        }
        for w in not.iter().filter(|w| text.contains(w.as_str())) {
            problems.push(format!("{what}: {name} holds {w:?}, which it must not{}", shown()));
        }
        for w in once {
            let n = text.matches(w.as_str()).count();
            if n != 1 {
                problems.push(format!("{what}: {name} holds {w:?} {n} times, expected once{}", shown()));
            }
        }
    }
    for (name, bytes) in [("stdout", &ran.stdout), ("stderr", &ran.stderr)] {
        if says_panicked(bytes) {
            problems.push(format!("{what}: {name} says `panicked`{}", shown()));
        }
    }
    problems
}

/// The first and last lines of a long text, each cut to a screen's width or so, enough to
/// see what happened (a generated 100,000-character line would drown the report).
fn excerpt(text: &str) -> String {
    const WIDTH: usize = 400;
    let clip = |l: &&str| match l.char_indices().nth(WIDTH) {
        Some((end, _)) => format!("{}[... {} more characters]", &l[..end], l[end..].chars().count()),
        None => (*l).to_owned(),
    };
    let lines: Vec<String> = text.lines().map(|l| clip(&l)).collect();
    if lines.len() <= 40 {
        return lines.join("\n");
    }
    format!(
        "{}\n[... {} lines ...]\n{}",
        lines[..20].join("\n"),
        lines.len() - 30,
        lines[lines.len() - 10..].join("\n")
    )
}

fn says_panicked(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"panicked").is_some()
}

/// Compares the folder with what it was before the command: inputs unchanged (unless
/// declared as outputs), no file that says `panicked`, no temporary file left, and after a
/// failed command nothing new outside `.weave/`.
fn check_files(before: &Snapshot, dir: &Path, outputs: &[String], failed: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let after = snapshot(dir);
    let declared = |p: &Path| outputs.iter().any(|o| Path::new(o) == p);
    // `.weave/` (the cache, the run records, the quarantine) is Weave's own, to rewrite.
    let own = |p: &Path| p.components().any(|c| c.as_os_str() == ".weave");
    for (path, was) in before.iter().filter(|(p, _)| !own(p)) {
        match after.get(path) {
            Some(now) if now == was => {}
            Some(_) if declared(path) => {}
            Some(_) => problems.push(format!("input {} changed", path.display())),
            None if declared(path) => {}
            None => problems.push(format!("input {} was removed", path.display())),
        }
    }
    for (path, now) in &after {
        let new_or_changed = before.get(path) != Some(now);
        if new_or_changed && matches!(now, Entry::File(_)) {
            match std::fs::read(dir.join(path)) {
                Ok(bytes) if says_panicked(&bytes) => {
                    problems.push(format!(
                        "{} says `panicked`:\n{}",
                        path.display(),
                        excerpt(&String::from_utf8_lossy(&bytes))
                    ));
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{} cannot be read after the command: {e}", path.display())),
            }
        }
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let in_cache_tmp = path.starts_with(".weave/cache/tmp") && path != Path::new(".weave/cache/tmp");
        if !matches!(now, Entry::Dir) && (name.ends_with(".tmp") || in_cache_tmp) {
            problems.push(format!("a temporary file was left behind: {}", path.display()));
        }
        if failed && !before.contains_key(path) && !own(path) && !declared(path) {
            problems.push(format!("the command failed, yet it left {} behind", path.display()));
        }
    }
    problems
}

/// Every file, folder and link under `dir`, by path relative to it.
fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else { continue };
        for e in entries.flatten() {
            let rel = rel.join(e.file_name());
            let path = dir.join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let entry = if meta.is_dir() {
                stack.push(rel.clone());
                Entry::Dir
            } else if meta.file_type().is_symlink() {
                Entry::Link(std::fs::read_link(&path).unwrap_or_default())
            } else if !meta.is_file() {
                Entry::Special
            } else {
                match hash_file(&path) {
                    Ok(h) => Entry::File(h),
                    Err(_) => Entry::Unreadable(meta.len(), meta.modified().ok()),
                }
            };
            out.insert(rel, entry);
        }
    }
    out
}

fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Copies a folder, keeping symbolic links as links.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let meta = std::fs::symlink_metadata(&src)?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if meta.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Writes a generated input (or more of it), a megabyte of repeats at a time.
fn generate(path: &Path, g: &Generate, append: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(path)?;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(g.prefix.as_bytes())?;
    if g.repeat.contains("{n}") {
        // Numbered repeats (unique column names): one at a time.
        for n in 0..g.times {
            out.write_all(g.repeat.replace("{n}", &n.to_string()).as_bytes())?;
        }
    } else if !g.repeat.is_empty() {
        let per_chunk = ((1 << 20) / g.repeat.len()).max(1) as u64;
        let chunk = g.repeat.repeat(per_chunk.min(g.times) as usize);
        let mut left = g.times;
        while left >= per_chunk {
            out.write_all(chunk.as_bytes())?;
            left -= per_chunk;
        }
        out.write_all(g.repeat.repeat(left as usize).as_bytes())?;
    }
    out.write_all(g.suffix.as_bytes())?;
    out.flush()
}

/// Runs a shell command of a case in `dir`, with `$WEAVE` naming the binary (for a setup
/// that runs it, such as a run killed part-way).
fn run_shell(sh: &str, dir: &Path) -> Ran {
    run_command("sh", &["-c", &format!("export WEAVE='{}'; {sh}", weave_bin())], dir, TIMEOUT)
}

/// Runs a command in `dir` in a process group of its own, with its output collected.
/// A command still running at `timeout` is killed with its group and reported; so is a
/// process it started that still holds its output open after it exited.
fn run_command(program: &str, args: &[&str], dir: &Path, timeout: Duration) -> Ran {
    let mut problems = Vec::new();
    let spawned = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("WEAVE_CACHE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return Ran { code: None, stdout: vec![], stderr: vec![], problems: vec![format!("cannot start: {e}")] };
        }
    };
    let (tx, rx) = mpsc::channel();
    for (n, pipe) in [
        (0, child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
        (1, child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send((n, buf));
        });
    }
    let group = child.id();
    let kill_group = || {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
    };
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                problems.push(format!("did not finish within {}s (a hang?); killed", timeout.as_secs()));
                kill_group();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                problems.push(format!("cannot wait for it: {e}"));
                break None;
            }
        }
    };
    let mut outputs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        // Once the command has exited, its output ends at once unless a process it started
        // still holds it (then `weave run ... | cat` would block).
        let grace = timeout.min(Duration::from_secs(5));
        match rx.recv_timeout(grace) {
            Ok((n, buf)) => outputs[n] = buf,
            Err(_) => {
                problems.push("exited, but a process it started still holds its output open; killed".to_owned());
                kill_group();
                if let Ok((n, buf)) = rx.recv_timeout(Duration::from_secs(5)) {
                    outputs[n] = buf;
                }
            }
        }
    }
    let [stdout, stderr] = outputs;
    Ran { code: status.and_then(|s| s.code()), stdout, stderr, problems }
}

// The checks above must be able to fail: each is run here on something that breaks it.

#[test]
fn the_checks_catch_a_wrong_exit_missing_words_a_panic_and_files_out_of_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("pipeline.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_text\"\npath = \"in.txt\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    )
    .expect("write");
    // The run succeeds and copies this line into its output, which the panic check reads.
    std::fs::write(dir.path().join("in.txt"), "thread 'main' panicked at src/main.rs:1:1\n").expect("write");
    let case: Case = toml::from_str(
        "description = \"expects what does not happen\"\nexit = 1\nstderr = [\"no such words\"]\nstdout_not = [\"run succeeded\"]\n\
         absent = [\"out.jsonl\"]\nexists = [\"never.jsonl\"]\ncontains = { \"out.jsonl\" = [\"absent words\"] }\n",
    )
    .expect("case");
    let problems = check_case(&case, dir.path()).join("\n");
    for expected in [
        "exit code 0, expected 1",
        "stderr lacks \"no such words\"",
        "stdout holds \"run succeeded\", which it must not",
        "out.jsonl says `panicked`",
        "out.jsonl should not exist",
        "never.jsonl should exist",
        "out.jsonl lacks \"absent words\"",
    ] {
        assert!(problems.contains(expected), "{expected:?} not reported in:\n{problems}");
    }
}

#[test]
fn a_long_line_is_cut_in_the_report_and_a_short_one_is_whole() {
    let long = format!("start {} end", "n".repeat(100_000));
    let shown = excerpt(&format!("first line\n{long}\nlast line\n"));
    assert!(shown.starts_with("first line\nstart nnn"), "{shown}");
    assert!(shown.contains("[... 99610 more characters]\nlast line"), "{shown}");
    assert!(shown.len() < 500, "{} bytes", shown.len());
    assert_eq!(excerpt("one\ntwo"), "one\ntwo");
}

#[test]
fn words_expected_once_fail_when_printed_twice_or_never() {
    let ran = Ran {
        code: Some(1),
        stdout: b"3 records\n".to_vec(),
        stderr: b"[WARN] cannot open in.csv\nerror: cannot open in.csv\n  caused by: No such file\n".to_vec(),
        problems: Vec::new(),
    };
    let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let (twice, never, one) = (words(&["cannot open in.csv"]), words(&["panicked"]), words(&["No such file"]));
    let expect = Expect { stderr_once: &twice, stdout_once: &never, ..Expect::code(1) };
    let problems = check_run("weave run", &ran, expect).join("\n");
    for expected in [
        "stderr holds \"cannot open in.csv\" 2 times, expected once",
        "stdout holds \"panicked\" 0 times, expected once",
    ] {
        assert!(problems.contains(expected), "{expected:?} not reported in:\n{problems}");
    }
    // Printed once, it passes.
    assert_eq!(check_run("weave run", &ran, Expect { stderr_once: &one, ..Expect::code(1) }), Vec::<String>::new());
}

#[test]
fn the_checks_catch_a_changed_input_debris_and_leftovers_of_a_failed_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.csv"), "id\n1\n").expect("write");
    std::fs::write(dir.path().join("kept.csv"), "id\n1\n").expect("write");
    let before = snapshot(dir.path());
    std::fs::write(dir.path().join("in.csv"), "id\n2\n").expect("write");
    std::fs::remove_file(dir.path().join("kept.csv")).expect("remove");
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    std::fs::write(dir.path().join("out/.weave-x.tmp"), "half").expect("write");
    std::fs::create_dir_all(dir.path().join(".weave/runs")).expect("mkdir");
    let problems = check_files(&before, dir.path(), &[], true).join("\n");
    for expected in [
        "input in.csv changed",
        "input kept.csv was removed",
        "a temporary file was left behind: out/.weave-x.tmp",
        "the command failed, yet it left out behind",
    ] {
        assert!(problems.contains(expected), "{expected:?} not reported in:\n{problems}");
    }
    assert!(!problems.contains(".weave/runs"), "a failed run may leave its record:\n{problems}");
    // Declared outputs may change, and a command that succeeds may create files.
    let problems = check_files(&before, dir.path(), &["in.csv".to_owned(), "kept.csv".to_owned()], false);
    assert_eq!(problems, ["a temporary file was left behind: out/.weave-x.tmp"]);
}

#[test]
fn a_hang_and_a_process_left_holding_the_output_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ran = run_command("sleep", &["30"], dir.path(), Duration::from_millis(300));
    assert!(ran.problems.iter().any(|p| p.contains("did not finish within")), "{:?}", ran.problems);
    // The shell exits at once; the sleep it started keeps its stdout open.
    let ran = run_command("sh", &["-c", "sleep 30 &"], dir.path(), Duration::from_millis(300));
    assert_eq!(ran.code, Some(0));
    assert!(ran.problems.iter().any(|p| p.contains("still holds its output open")), "{:?}", ran.problems);
}
