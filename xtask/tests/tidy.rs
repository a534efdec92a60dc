//! Tidy tests: the workspace's rules, checked on every `cargo test` instead of being
//! remembered by reviewers (as rust-analyzer's tidy tests and Buck2's dependency rules do).
//!
//! - Layering: dependencies point downward only
//!   (`weave-core, weave-fs ← weave-exec, weave-cache, weave-monitor, weave-io; weave-cache ←
//!   weave-llm; weave-fs, weave-io, weave-llm ← weave-steps; weave-exec, weave-cache, weave-monitor ←
//!   weave-session; weave-steps, weave-session ← weave ← weave-cli ← weave-py`, and weave-steps does
//!   not depend on weave-exec, nor weave-session on weave-steps),
//!   and `weave-cli` and `weave-py` reach the libraries only through the `weave` facade.
//! - Every member inherits the workspace's lints, and takes every dependency from
//!   `[workspace.dependencies]`, so that versions are set once, in the root `Cargo.toml`.
//! - Every library crate denies missing docs and does not print (libraries log through `log`).
//! - The fuzz targets (`fuzz/`, a workspace of their own, left out of this one) take every
//!   version from the root's `[workspace.dependencies]` and depend only on library crates.
//! - weave-core does no I/O and knows no threads, blake3 or bincode: its manifest names
//!   none of those crates and its sources name no `std::fs`, `std::process`, `std::thread`,
//!   socket or standard stream.
//! - bincode is used only in weave-cache's `codec.rs`; the test kit only in
//!   dev-dependencies (and xtask).
//! - weave-steps without its features, and weave-io without `parquet`, pull no arrow or
//!   parquet crate, no HTTP client and no cache (`cargo tree`).
//!
//! Each rule is a function from a crate's files to a list of problems, reported through
//! [`check`]. Each rule is also run on a small bad example, so that a rule that can no
//! longer fail is caught too.

use std::path::{Path, PathBuf};

/// The weave crates that each crate may depend on (normal, dev and build dependencies alike).
/// A new crate must be added here: the tests fail until someone decides where it sits.
const LAYERS: &[(&str, &[&str])] = &[
    ("weave-core", &[]),
    // The files a run writes and who owns them (temporary files, the liveness of their
    // owners): I/O that weave-core must not do, below every crate that writes.
    ("weave-fs", &[]),
    ("weave-exec", &["weave-core", "weave-fs"]),
    ("weave-cache", &["weave-core", "weave-fs"]),
    ("weave-monitor", &["weave-core", "weave-fs"]),
    // File formats and atomic outputs: what they write goes through weave-fs.
    ("weave-io", &["weave-core", "weave-fs"]),
    // The LLM steps: their answers are kept in the cache's store; the test server in tests.
    ("weave-llm", &["weave-core", "weave-cache", "weave-testkit"]),
    // The pure transforms and the registry, over the two crates whose kinds it adds. The
    // steps know the executor only through weave-core's traits: not weave-exec.
    // weave-cache for its codec: the shards of a `mix` exchange records encoded as the cache
    // keeps them.
    ("weave-steps", &["weave-core", "weave-fs", "weave-cache", "weave-io", "weave-llm", "weave-testkit"]),
    // The run session composes a run from the parts; it takes the registry of kinds as an
    // argument, so it sits beside the steps, not above them.
    ("weave-session", &["weave-core", "weave-fs", "weave-exec", "weave-cache", "weave-monitor"]),
    (
        "weave",
        &[
            "weave-core",
            "weave-fs",
            "weave-exec",
            "weave-cache",
            "weave-monitor",
            "weave-io",
            "weave-llm",
            "weave-steps",
            "weave-session",
        ],
    ),
    // The command line goes through the facade, like any user of the library; its
    // end-to-end tests also start the test server.
    ("weave-cli", &["weave", "weave-testkit"]),
    // The Python bindings are another front end over the facade; the wheel carries the
    // command line too.
    ("weave-py", &["weave", "weave-cli"]),
    // Benchmarks and dev tasks measure the parts directly.
    (
        "xtask",
        &[
            "weave-core",
            "weave-fs",
            "weave-exec",
            "weave-cache",
            "weave-monitor",
            "weave-io",
            "weave-llm",
            "weave-steps",
            "weave",
            "weave-testkit",
        ],
    ),
    // Test support (an OpenAI-compatible test server) for tests and benchmarks: it knows
    // nothing of Weave, and only tests, dev-dependencies and xtask may use it.
    ("weave-testkit", &[]),
];

/// The weave crates the fuzz targets may use: the libraries whose code they fuzz.
const FUZZ_MAY_USE: &[&str] = &["weave-core", "weave-cache", "weave-steps"];

/// Crates that are programs, not libraries: they may print, and need not document items.
const PROGRAMS: &[&str] = &["weave-cli", "xtask"];

/// The dependency tables of a manifest, outside `[target.'cfg(..)'.*]`.
const DEPENDENCY_TABLES: &[&str] = &["dependencies", "dev-dependencies", "build-dependencies"];

/// Fails with every problem that a rule found, one per line, so that one run shows them all.
fn check(rule: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "tidy: {rule}: {} problem(s)\n  {}", problems.len(), problems.join("\n  "));
}

/// A member crate of the workspace.
struct Crate {
    name: String,
    dir: PathBuf,
    manifest: toml::Table,
}

impl Crate {
    /// The crate's library root (`src/lib.rs` or `[lib] path`), if it has a library target.
    fn lib_root(&self) -> Option<PathBuf> {
        let custom = self.manifest.get("lib").and_then(|l| l.get("path")).and_then(toml::Value::as_str);
        let path = self.dir.join(custom.unwrap_or("src/lib.rs"));
        path.is_file().then_some(path)
    }

    /// Whether the rules for libraries apply: it has a library target and is not a program.
    fn is_library(&self) -> bool {
        self.lib_root().is_some() && !PROGRAMS.contains(&self.name.as_str())
    }
}

fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", path.display()))
}

/// The workspace's members, from `[workspace] members` (literal paths and `dir/*` globs).
fn members() -> Vec<Crate> {
    let root = workspace_root();
    let manifest = read_toml(&root.join("Cargo.toml"));
    let patterns = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("the root Cargo.toml has no [workspace] members"));
    let mut dirs = Vec::new();
    for p in patterns {
        let p = p.as_str().unwrap_or_else(|| panic!("a workspace member is not a string: {p}"));
        if let Some(parent) = p.strip_suffix("/*") {
            let entries = std::fs::read_dir(root.join(parent)).unwrap_or_else(|e| panic!("cannot list {parent}: {e}"));
            let mut found: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            found.sort();
            dirs.extend(found.into_iter().filter(|d| d.join("Cargo.toml").is_file()));
        } else {
            assert!(
                !p.contains('*'),
                "workspace member pattern `{p}` is not supported here: extend members() in tidy.rs"
            );
            dirs.push(root.join(p));
        }
    }
    dirs.into_iter()
        .map(|dir| {
            let manifest = read_toml(&dir.join("Cargo.toml"));
            let name = manifest
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(toml::Value::as_str)
                .unwrap_or_else(|| panic!("{}/Cargo.toml has no package name", dir.display()))
                .to_owned();
            Crate { name, dir, manifest }
        })
        .collect()
}

/// A dependency as written in a manifest.
struct Dependency<'a> {
    /// Where it is written, as `[dev-dependencies]`.
    table: String,
    /// The package depended on (the key, or its `package = ...` when renamed).
    package: &'a str,
    /// What is written for it.
    spec: &'a toml::Value,
}

/// Every dependency in a manifest, target-specific ones included.
fn dependencies(manifest: &toml::Table) -> Vec<Dependency<'_>> {
    let mut tables: Vec<(String, &toml::Table)> = Vec::new();
    for kind in DEPENDENCY_TABLES {
        if let Some(t) = manifest.get(*kind).and_then(toml::Value::as_table) {
            tables.push((format!("[{kind}]"), t));
        }
    }
    for (cfg, target) in manifest.get("target").and_then(toml::Value::as_table).into_iter().flatten() {
        for kind in DEPENDENCY_TABLES {
            if let Some(t) = target.get(*kind).and_then(toml::Value::as_table) {
                tables.push((format!("[target.{cfg}.{kind}]"), t));
            }
        }
    }
    let mut out = Vec::new();
    for (table, deps) in tables {
        for (key, spec) in deps {
            let package = spec.get("package").and_then(toml::Value::as_str).unwrap_or(key);
            out.push(Dependency { table: table.clone(), package, spec });
        }
    }
    out
}

fn is_weave_crate(name: &str) -> bool {
    name == "weave" || name.starts_with("weave-")
}

/// Rule: a crate depends only on the weave crates below it (see [`LAYERS`]).
fn layering(name: &str, manifest: &toml::Table) -> Vec<String> {
    let Some((_, allowed)) = LAYERS.iter().find(|(n, _)| *n == name) else {
        if !is_weave_crate(name) && dependencies(manifest).iter().all(|d| !is_weave_crate(d.package)) {
            return Vec::new();
        }
        return vec![format!("crate `{name}` is not in the layering table: add it to LAYERS in xtask/tests/tidy.rs")];
    };
    dependencies(manifest)
        .into_iter()
        .filter(|d| is_weave_crate(d.package) && !allowed.contains(&d.package))
        .map(|d| {
            let may = if allowed.is_empty() { "no weave crate".to_owned() } else { allowed.join(", ") };
            format!(
                "crate `{name}` depends on `{}` (in {}), which it must not: it may depend on {may}",
                d.package, d.table
            )
        })
        .collect()
}

/// Rule: the crate inherits the workspace's lints, and every dependency is
/// `workspace = true` (versions and features are set once, in the root).
fn inherits_workspace(name: &str, manifest: &toml::Table) -> Vec<String> {
    let mut problems = Vec::new();
    let lints = manifest.get("lints").and_then(|l| l.get("workspace")).and_then(toml::Value::as_bool);
    if lints != Some(true) {
        problems.push(format!(
            "crate `{name}` does not inherit the workspace lints: end its Cargo.toml with `[lints] workspace = true`"
        ));
    }
    for d in dependencies(manifest) {
        if d.spec.get("workspace").and_then(toml::Value::as_bool) != Some(true) {
            problems.push(format!(
                "crate `{name}` sets its own version of `{}` (in {}): declare it in the root [workspace.dependencies] and write `{}.workspace = true`",
                d.package, d.table, d.package
            ));
        }
    }
    problems
}

/// Rule: a library's root denies missing docs.
fn denies_missing_docs(name: &str, lib_rs: &str) -> Vec<String> {
    let denied = lib_rs
        .lines()
        .map(str::trim)
        .any(|l| (l.starts_with("#![deny(") || l.starts_with("#![forbid(")) && l.contains("missing_docs"));
    if denied { Vec::new() } else { vec![format!("crate `{name}`: its lib.rs lacks `#![deny(missing_docs)]`")] }
}

/// Rule: library code does not print; it logs through `log`. Comment lines (docs
/// included) are skipped, so examples may show printing.
fn prints(name: &str, file: &str, text: &str) -> Vec<String> {
    const MACROS: &[&str] = &["println!", "eprintln!", "print!", "eprint!", "dbg!"];
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for m in MACROS {
            let called = line
                .match_indices(m)
                .any(|(i, _)| line[..i].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_')));
            if called {
                problems.push(format!(
                    "crate `{name}`: {file}:{} uses `{m}`: libraries log through `log` instead of printing",
                    n + 1
                ));
            }
        }
    }
    problems
}

/// The `.rs` files under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Rule: the fuzz crate, which cannot inherit from a workspace it is not in, is left out of
/// it (`exclude`), writes the root's version of each external crate, and uses weave crates
/// by path, only those in [`FUZZ_MAY_USE`].
fn fuzz_follows_the_workspace(root: &toml::Table, fuzz: &toml::Table) -> Vec<String> {
    let mut problems = Vec::new();
    let workspace = root.get("workspace");
    let excluded = workspace
        .and_then(|w| w.get("exclude"))
        .and_then(toml::Value::as_array)
        .is_some_and(|e| e.iter().any(|x| x.as_str() == Some("fuzz")));
    if !excluded {
        problems.push("fuzz/ is not in the root workspace's `exclude`".to_owned());
    }
    let declared = workspace.and_then(|w| w.get("dependencies")).and_then(toml::Value::as_table);
    // Version, features and default features: the fuzzed code must build as it does here.
    let version = |spec: &toml::Value| -> Option<String> {
        let v = spec.as_str().or_else(|| spec.get("version").and_then(toml::Value::as_str))?;
        let mut features: Vec<&str> = spec
            .get("features")
            .and_then(toml::Value::as_array)
            .map(|f| f.iter().filter_map(toml::Value::as_str).collect())
            .unwrap_or_default();
        features.sort_unstable();
        let defaults = spec.get("default-features").and_then(toml::Value::as_bool).unwrap_or(true);
        Some(match (features.is_empty(), defaults) {
            (true, true) => v.to_owned(),
            _ => format!("{v} (features: {}{})", features.join(", "), if defaults { "" } else { "; no defaults" }),
        })
    };
    for d in dependencies(fuzz) {
        if is_weave_crate(d.package) {
            if !FUZZ_MAY_USE.contains(&d.package) || d.spec.get("path").is_none() {
                problems.push(format!(
                    "fuzz uses `{}` (in {}): it may use {} by path",
                    d.package,
                    d.table,
                    FUZZ_MAY_USE.join(", ")
                ));
            }
            continue;
        }
        let root_version = declared.and_then(|t| t.get(d.package)).and_then(version);
        let own = version(d.spec);
        if root_version.is_none() || root_version != own {
            problems.push(format!(
                "fuzz sets `{}` to {} (in {}), the root [workspace.dependencies] to {}: write the root's version and features, declaring it there first",
                d.package,
                own.as_deref().unwrap_or("no version"),
                d.table,
                root_version.as_deref().unwrap_or("nothing")
            ));
        }
    }
    problems
}

/// What weave-core's sources must not name, with why: it does no I/O (the front ends
/// read and write, and hand it text) and knows no threads (the executor's), nor the
/// cache's hashing and codec.
const CORE_FORBIDDEN_PATHS: &[(&str, &str)] = &[
    ("std::fs", "does file I/O"),
    ("std::process", "runs processes"),
    ("std::net::TcpStream", "opens sockets"),
    ("std::net::TcpListener", "opens sockets"),
    ("std::net::UdpSocket", "opens sockets"),
    ("std::os::unix::net", "opens sockets"),
    ("std::io::stdin", "reads the standard streams"),
    ("std::io::stdout", "writes the standard streams"),
    ("std::io::stderr", "writes the standard streams"),
    ("std::thread", "knows threads"),
    ("rayon", "knows threads"),
    ("crossbeam_channel", "knows threads"),
    ("blake3", "knows the cache's hashing"),
    ("bincode", "knows the cache's codec"),
];

/// The crates weave-core must not depend on (any dependency table).
const CORE_FORBIDDEN_CRATES: &[&str] = &["rayon", "crossbeam-channel", "blake3", "bincode", "tempfile", "rustix"];

/// `text` without its comments and the contents of its string and character literals.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            'r' if matches!(chars.peek(), Some('"' | '#'))
                && !out.ends_with(|c: char| c.is_alphanumeric() || c == '_') =>
            {
                // A raw string: r"...", r#"..."#.
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.next() != Some('"') {
                    continue;
                }
                out.push_str("\"\"");
                'raw: while let Some(c) = chars.next() {
                    if c == '"' {
                        let mut n = 0;
                        while n < hashes && chars.peek() == Some(&'#') {
                            chars.next();
                            n += 1;
                        }
                        if n == hashes {
                            break 'raw;
                        }
                    }
                }
            }
            '"' => {
                out.push_str("\"\"");
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '\'' => {
                // A character literal ('x', '\n', '"'), or a lifetime, which is code.
                let mut ahead = chars.clone();
                let literal = match ahead.next() {
                    Some('\\') => true,
                    Some(_) => ahead.next() == Some('\''),
                    None => false,
                };
                if literal {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                    out.push_str("' '");
                } else {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `text`'s code (see [`code_only`]) with every grouped import written out
/// (`std::{fs::File, io}` as `std::fs::File, std::io`), so that a path is found however
/// it is imported.
fn code_paths(text: &str) -> String {
    expand_groups(&code_only(text))
}

/// `code` with every grouped import written out.
fn expand_groups(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(open) = rest.find("::{") {
        // The path before the brace: back to the last character that is not one of a path.
        let head = &rest[..open];
        let start = head.rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).map_or(0, |i| i + 1);
        let prefix = &head[start..];
        out.push_str(&head[..start]);
        // The items of the group, split at the commas of its own level.
        let body = &rest[open + 3..];
        let (mut depth, mut item, mut end) = (0usize, String::new(), body.len());
        let mut items = Vec::new();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        items.push(item);
        let expanded: Vec<String> = items
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .map(|i| expand_groups(&format!("{prefix}::{i}")))
            .collect();
        out.push_str(&expanded.join(", "));
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Whether `path` occurs in `code` as a whole path (not as part of a longer name).
fn names_path(code: &str, path: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(path).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + path.len()..].chars().next();
        before.is_none_or(|c| !ident(c) && c != ':') && after.is_none_or(|c| !ident(c))
    })
}

/// Rule: weave-core's source `file` names nothing of [`CORE_FORBIDDEN_PATHS`].
fn core_is_pure(file: &str, text: &str) -> Vec<String> {
    let code = code_paths(text);
    CORE_FORBIDDEN_PATHS
        .iter()
        .filter(|(path, _)| names_path(&code, path))
        .map(|(path, why)| format!("weave-core: {file} names `{path}`: weave-core {why}, which it must not"))
        .collect()
}

/// Rule: weave-core's manifest names none of [`CORE_FORBIDDEN_CRATES`].
fn core_depends_on_no_runtime(manifest: &toml::Table) -> Vec<String> {
    dependencies(manifest)
        .into_iter()
        .filter(|d| CORE_FORBIDDEN_CRATES.contains(&d.package))
        .map(|d| {
            format!(
                "weave-core depends on `{}` (in {}): it does no I/O and knows no threads, blake3 or bincode",
                d.package, d.table
            )
        })
        .collect()
}

/// The one file that may use bincode: the cache's codec, behind its entry header's format
/// version and codec number.
const BINCODE_HOME: &str = "crates/weave-cache/src/codec.rs";

/// Rule: only weave-cache depends on bincode, and only [`BINCODE_HOME`] names it (`file` is
/// relative to the workspace root).
fn bincode_only_in_the_codec(name: &str, manifest: &toml::Table, files: &[(String, String)]) -> Vec<String> {
    let mut problems: Vec<String> = dependencies(manifest)
        .into_iter()
        .filter(|d| d.package == "bincode" && name != "weave-cache")
        .map(|d| format!("crate `{name}` depends on bincode (in {}): only weave-cache's codec may", d.table))
        .collect();
    for (file, text) in files {
        // A use in code: comments and string literals do not count.
        if file != BINCODE_HOME && names_path(&code_paths(text), "bincode") {
            problems.push(format!("{file} names bincode: only {BINCODE_HOME} may (the cache's codec)"));
        }
    }
    problems
}

/// Rule: the test kit is a dev-dependency, except for xtask (benchmarks start its server).
fn testkit_only_in_tests(name: &str, manifest: &toml::Table) -> Vec<String> {
    if name == "xtask" {
        return Vec::new();
    }
    dependencies(manifest)
        .into_iter()
        .filter(|d| d.package == "weave-testkit" && !d.table.ends_with("dev-dependencies]"))
        .map(|d| {
            format!("crate `{name}` depends on weave-testkit in {}: only dev-dependencies (and xtask) may", d.table)
        })
        .collect()
}

/// The crates that a lean build must not pull: the arrow and parquet crates, the HTTP
/// client, its runtime and its TLS, the LLM steps. (weave-cache is not among them: the
/// shards of a `mix` exchange records with its codec, the one place values become bytes,
/// and it adds only bincode to a lean weave-steps, which has blake3 and weave-fs anyway.)
fn heavy(package: &str) -> bool {
    package.starts_with("arrow") || ["parquet", "reqwest", "tokio", "rustls", "weave-llm"].contains(&package)
}

/// The packages that `package` builds with `args` (features), from `cargo tree`: normal
/// and build dependencies, as the build of a user who depends on it would have them.
fn tree(package: &str, args: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(["tree", "--offline", "-e", "normal,build", "--prefix", "none", "-f", "{p}", "-p", package])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo tree: {e}"));
    assert!(out.status.success(), "cargo tree -p {package} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Rule: a build of `package` with `args` pulls no [`heavy`] crate.
fn lean(package: &str, args: &[&str], packages: &[String]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| heavy(p))
        .map(|p| format!("`{package}` built with {args:?} pulls `{p}`: it must come only with a feature"))
        .collect()
}

fn manifest_of(text: &str) -> toml::Table {
    toml::from_str(text).unwrap_or_else(|e| panic!("bad example TOML: {e}"))
}

#[test]
fn members_are_found() {
    // Guards against the other rules passing because they looked at nothing.
    let names: Vec<String> = members().into_iter().map(|c| c.name).collect();
    for expected in ["weave-core", "weave-steps", "weave", "weave-cli", "xtask"] {
        assert!(names.iter().any(|n| n == expected), "tidy: member `{expected}` not found among {names:?}");
    }
    let libraries = members().into_iter().filter(Crate::is_library).count();
    assert!(libraries >= 6, "tidy: only {libraries} library crates found");
}

#[test]
fn dependencies_point_downward() {
    check("layering", members().iter().flat_map(|c| layering(&c.name, &c.manifest)).collect());
}

#[test]
fn versions_and_lints_come_from_the_workspace() {
    check("workspace inheritance", members().iter().flat_map(|c| inherits_workspace(&c.name, &c.manifest)).collect());
}

#[test]
fn libraries_deny_missing_docs() {
    let mut problems = Vec::new();
    for c in members().iter().filter(|c| c.is_library()) {
        let Some(root) = c.lib_root() else { continue };
        let text = std::fs::read_to_string(&root).unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()));
        problems.extend(denies_missing_docs(&c.name, &text));
    }
    check("missing docs", problems);
}

#[test]
fn libraries_do_not_print() {
    let root = workspace_root();
    let mut problems = Vec::new();
    for c in members().iter().filter(|c| c.is_library()) {
        for file in rust_files(&c.dir.join("src")) {
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let shown = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
            problems.extend(prints(&c.name, &shown, &text));
        }
    }
    check("printing in libraries", problems);
}

#[test]
fn fuzz_takes_the_workspace_versions() {
    let root = workspace_root();
    let fuzz = read_toml(&root.join("fuzz/Cargo.toml"));
    assert!(!dependencies(&fuzz).is_empty(), "tidy: fuzz/Cargo.toml has no dependencies");
    check("fuzz versions", fuzz_follows_the_workspace(&read_toml(&root.join("Cargo.toml")), &fuzz));
}

#[test]
fn core_does_no_io_and_knows_no_threads() {
    let root = workspace_root();
    let core = members().into_iter().find(|c| c.name == "weave-core").expect("weave-core is a member");
    let mut problems = core_depends_on_no_runtime(&core.manifest);
    let files = rust_files(&core.dir.join("src"));
    assert!(files.len() > 10, "tidy: only {} files in weave-core/src", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        problems.extend(core_is_pure(&file.strip_prefix(&root).unwrap_or(&file).display().to_string(), &text));
    }
    check("weave-core purity", problems);
}

#[test]
fn bincode_is_used_only_in_the_cache_codec() {
    let root = workspace_root();
    let mut problems = Vec::new();
    let mut seen = false;
    for c in members() {
        let mut files = Vec::new();
        for dir in ["src", "tests", "benches", "examples"] {
            if c.dir.join(dir).is_dir() {
                for file in rust_files(&c.dir.join(dir)) {
                    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    let shown = file.strip_prefix(&root).unwrap_or(&file).display().to_string();
                    seen |= shown == BINCODE_HOME;
                    files.push((shown, text));
                }
            }
        }
        problems.extend(bincode_only_in_the_codec(&c.name, &c.manifest, &files));
    }
    assert!(seen, "tidy: {BINCODE_HOME} not found");
    check("bincode", problems);
}

#[test]
fn the_test_kit_is_only_a_dev_dependency() {
    check("test kit", members().iter().flat_map(|c| testkit_only_in_tests(&c.name, &c.manifest)).collect());
}

#[test]
fn steps_without_features_pull_no_formats_or_http() {
    let mut problems = Vec::new();
    for (package, args) in
        [("weave-steps", &["--no-default-features"][..]), ("weave-io", &["--no-default-features"][..])]
    {
        let packages = tree(package, args);
        assert!(
            packages.iter().any(|p| p == "weave-core"),
            "tidy: cargo tree -p {package} found no weave-core: {packages:?}"
        );
        problems.extend(lean(package, args, &packages));
    }
    // Each feature brings its crates (so that this test looks where they would be).
    let full = tree("weave-steps", &["--features", "io,parquet,llm"]);
    for p in ["parquet", "arrow-array", "reqwest", "tokio", "weave-llm", "weave-io"] {
        assert!(full.iter().any(|f| f == p), "tidy: weave-steps with every feature lacks `{p}`: {full:?}");
    }
    check("lean builds", problems);
}

#[test]
fn purity_rules_catch_io_threads_bincode_and_the_test_kit() {
    let bad = "//! Docs naming std::fs in a comment are fine.\nuse std::{collections::HashMap, fs::File, io::{self, stdout}};\n\
               use std::sync::Arc;\nfn f() { std::thread::spawn(|| ()); let _ = blake3::hash(b\"\"); }\n\
               fn g(a: std::net::Ipv6Addr) {}\n";
    let problems = core_is_pure("src/a.rs", bad);
    let named: Vec<&str> = problems.iter().map(|p| p.split('`').nth(1).unwrap_or_default()).collect();
    assert_eq!(named, ["std::fs", "std::io::stdout", "std::thread", "blake3"], "{problems:?}");
    assert!(
        core_is_pure(
            "src/a.rs",
            "use std::sync::Arc;\nfn f(x: std::net::Ipv6Addr, s: &str) -> bool { s.contains(\"fs\") }\n"
        )
        .is_empty()
    );
    assert!(core_is_pure("src/a.rs", "use my_std::fs;\nfn std_fsx() {}\n").is_empty());
    // Text in strings and characters is not code; code after them is.
    let quoted =
        "fn f<'a>(s: &'a str) { let _ = (\"std::fs \\\" std::thread\", '\"', r#\"rayon\"#); std::process::exit(1) }";
    assert_eq!(core_is_pure("src/a.rs", quoted).len(), 1, "{:?}", core_is_pure("src/a.rs", quoted));
    let core = manifest_of(
        "[dependencies]\nrayon.workspace = true\nserde.workspace = true\n[dev-dependencies]\nbincode.workspace = true\n",
    );
    assert_eq!(core_depends_on_no_runtime(&core).len(), 2);

    let files = vec![
        (
            BINCODE_HOME.to_owned(),
            "fn f() { bincode::serde::encode_to_vec(1, bincode::config::standard()); }".to_owned(),
        ),
        ("crates/weave-cache/src/store.rs".to_owned(), "use bincode::config;\n".to_owned()),
        ("crates/weave-cache/src/key.rs".to_owned(), "// not bincode here\nfn bincode_like() {}\n".to_owned()),
    ];
    let problems =
        bincode_only_in_the_codec("weave-cache", &manifest_of("[dependencies]\nbincode.workspace = true\n"), &files);
    assert_eq!(
        problems,
        ["crates/weave-cache/src/store.rs names bincode: only crates/weave-cache/src/codec.rs may (the cache's codec)"]
    );
    let exec = bincode_only_in_the_codec("weave-exec", &manifest_of("[dependencies]\nbincode.workspace = true\n"), &[]);
    assert_eq!(exec.len(), 1, "{exec:?}");

    let kit = manifest_of(
        "[dependencies]\nweave-testkit.workspace = true\n[dev-dependencies]\nweave-testkit.workspace = true\n",
    );
    assert_eq!(
        testkit_only_in_tests("weave-steps", &kit),
        ["crate `weave-steps` depends on weave-testkit in [dependencies]: only dev-dependencies (and xtask) may"]
    );
    assert!(testkit_only_in_tests("xtask", &kit).is_empty());

    let pulled = ["weave-core", "arrow-array", "reqwest", "serde"].map(str::to_owned);
    assert_eq!(lean("weave-steps", &[], &pulled).len(), 2);
}

#[test]
fn layering_rule_catches_upward_dependencies() {
    let core = manifest_of("[package]\nname = \"weave-core\"\n[dev-dependencies]\nweave-steps.workspace = true\n");
    assert_eq!(
        layering("weave-core", &core),
        [
            "crate `weave-core` depends on `weave-steps` (in [dev-dependencies]), which it must not: it may depend on no weave crate"
        ]
    );
    let cli = manifest_of(
        "[dependencies]\nweave.workspace = true\ncore = { workspace = true, package = \"weave-core\" }\nclap.workspace = true\n",
    );
    let problems = layering("weave-cli", &cli);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("crate `weave-cli` depends on `weave-core`"), "{problems:?}");
    assert!(layering("weave-io", &manifest_of("[dependencies]\nweave-fs.workspace = true\n")).is_empty());
    // The steps know no executor internals: the files they write go through weave-fs.
    let steps = layering("weave-steps", &manifest_of("[dependencies]\nweave-exec.workspace = true\n"));
    assert!(steps[0].contains("crate `weave-steps` depends on `weave-exec`"), "{steps:?}");
    // weave-fs stands below every crate that writes files, on no weave crate.
    let fs = layering("weave-fs", &manifest_of("[dependencies]\nweave-core.workspace = true\n"));
    assert!(fs[0].contains("it may depend on no weave crate"), "{fs:?}");
    // weave-io and weave-llm stand below weave-steps, which adds their kinds: never the
    // other way round, and weave-llm knows no file format.
    let io = layering("weave-io", &manifest_of("[dependencies]\nweave-steps.workspace = true\n"));
    assert!(io[0].contains("crate `weave-io` depends on `weave-steps`"), "{io:?}");
    let llm = layering(
        "weave-llm",
        &manifest_of("[dependencies]\nweave-io.workspace = true\nweave-steps.workspace = true\n"),
    );
    assert_eq!(llm.len(), 2, "{llm:?}");
    let new = layering("weave-gpu", &manifest_of("[dependencies]\nweave-core.workspace = true\n"));
    assert!(new[0].contains("`weave-gpu` is not in the layering table"), "{new:?}");
}

#[test]
fn workspace_rule_catches_local_versions_and_missing_lints() {
    let bad = manifest_of(
        "[dependencies]\nserde = \"1.0\"\nlog.workspace = true\n\
         [target.'cfg(unix)'.dev-dependencies]\nlibc = { version = \"0.2\" }\n",
    );
    let problems = inherits_workspace("weave-x", &bad);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("does not inherit the workspace lints"), "{problems:?}");
    assert!(problems[1].contains("its own version of `serde` (in [dependencies])"), "{problems:?}");
    assert!(problems[2].contains("`libc` (in [target.cfg(unix).dev-dependencies])"), "{problems:?}");
    let good = manifest_of("[dependencies]\nlog.workspace = true\n[lints]\nworkspace = true\n");
    assert!(inherits_workspace("weave-x", &good).is_empty());
}

#[test]
fn fuzz_rule_catches_other_versions_and_upper_crates() {
    let root = manifest_of(
        "[workspace]\nexclude = [\"fuzz\"]\n[workspace.dependencies]\nserde_json = \"1.0\"\n\
         log = { version = \"0.4\", features = [\"std\"] }\n",
    );
    let fuzz = manifest_of(
        "[dependencies]\nserde_json = \"1.1\"\nrand = \"0.9\"\nweave-core = { path = \"../crates/weave-core\" }\n\
         weave = { path = \"../crates/weave\" }\nlog = \"0.4\"\n",
    );
    let problems = fuzz_follows_the_workspace(&root, &fuzz);
    assert_eq!(problems.len(), 4, "{problems:?}");
    let found = |what: &[&str]| problems.iter().any(|p| what.iter().all(|w| p.contains(w)));
    assert!(found(&["`serde_json` to 1.1", "to 1.0"]), "{problems:?}");
    assert!(found(&["`log` to 0.4 ", "to 0.4 (features: std)"]), "{problems:?}");
    assert!(found(&["`rand` to 0.9", "to nothing"]), "{problems:?}");
    assert!(found(&["fuzz uses `weave` "]), "{problems:?}");
    let good = manifest_of(
        "[dependencies]\nserde_json = { version = \"1.0\" }\nlog = { version = \"0.4\", features = [\"std\"] }\n\
         weave-core = { path = \"../crates/weave-core\" }\n",
    );
    assert!(fuzz_follows_the_workspace(&root, &good).is_empty());
    assert_eq!(fuzz_follows_the_workspace(&manifest_of("[workspace]\n"), &manifest_of("")).len(), 1);
}

#[test]
fn docs_rule_catches_a_missing_deny() {
    assert_eq!(denies_missing_docs("weave-x", "//! Docs.\n// #![deny(missing_docs)]\nmod a;\n").len(), 1);
    assert!(denies_missing_docs("weave-x", "//! Docs.\n#![deny(missing_docs, unreachable_pub)]\n").is_empty());
}

#[test]
fn print_rule_catches_printing_but_not_comments() {
    let text = "/// println!(\"in a doc example\");\nfn f() {\n    eprintln!(\"x\");\n    let _ = dbg!(1);\n    std::print!(\"y\");\n    writeln!(out, \"z\");\n}\n";
    let problems = prints("weave-x", "src/a.rs", text);
    assert_eq!(
        problems,
        [
            "crate `weave-x`: src/a.rs:3 uses `eprintln!`: libraries log through `log` instead of printing",
            "crate `weave-x`: src/a.rs:4 uses `dbg!`: libraries log through `log` instead of printing",
            "crate `weave-x`: src/a.rs:5 uses `print!`: libraries log through `log` instead of printing",
        ]
    );
}

#[test]
#[should_panic(expected = "tidy: layering: 1 problem(s)")]
fn check_fails_on_a_problem() {
    check("layering", vec!["crate `a` depends on `b`".to_owned()]);
}
