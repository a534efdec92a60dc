//! The check a run makes before it touches anything: no file it writes is a file it reads
//! (an input, the pipeline file), no two of its outputs are one file, and every file it
//! replaces is a regular file.
//!
//! Paths are compared by the file they resolve to, not by how they are spelled: the
//! canonical path of the folder (symbolic links and `..` resolved; for a folder not made
//! yet, that of its deepest existing ancestor with the rest added as written, `..` taking
//! off a name), plus the file's name; and the device and inode of a file that exists (a
//! hard link, a symbolic link). So `in.csv`, `./in.csv`, `sub/../in.csv`, `/abs/in.csv` and
//! a link to it are one file. The parts of a split or partitioned export have names made
//! as the run goes: a file read, or another output, that its pattern can make is refused
//! too.
//!
//! A file replaced by a rename (an export, an exclusion file, the metrics file) or
//! truncated (the quarantine file) must be a regular file, or not exist: a device, a
//! FIFO, a socket or a folder is refused (as root, `path = "/dev/null"` would otherwise
//! replace the system's `/dev/null`), and so is a symbolic link (the rename would replace
//! the link, not the file it points to; naming the file itself says which is meant). A
//! file written into as it is (an alert file, appended to) may be anything that can be
//! opened for writing.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use weave_core::{AlertSink, FilePattern, Pipeline};

use crate::error::Error;

/// How a run uses a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read.
    Read,
    /// Replaced whole (renamed over, or truncated).
    Replace,
    /// Written into as it is (appended to, or truncated and rewritten), not replaced.
    InPlace,
}

/// One use of a file by a run.
#[derive(Debug, Clone)]
struct Use {
    /// Who uses it: `step "load"`, `--metrics-file`.
    who: String,
    /// The file in messages: `a file that step "load" reads`, `the pipeline file`.
    object: String,
    /// The path as given.
    path: PathBuf,
    access: Access,
}

/// Every file a run reads and writes, checked against each other by
/// [`RunFiles::check`] before the run opens anything for writing or deletes anything.
#[derive(Debug, Default)]
pub struct RunFiles {
    uses: Vec<Use>,
    patterns: Vec<(String, FilePattern)>,
    /// Folders whose files Weave writes and removes itself (the cache's), each with how
    /// messages name it.
    kept: Vec<(String, PathBuf)>,
}

impl RunFiles {
    /// The files of `pipeline`'s steps (read, written, and the parts of sets), its
    /// steps' exclusion files, and its alert files.
    pub fn of_pipeline(pipeline: &Pipeline) -> RunFiles {
        let mut files = RunFiles::default();
        for n in pipeline.dag().nodes() {
            let who = format!("step \"{}\"", n.id);
            let info = n.payload.step.info();
            for path in info.files_read() {
                files.uses.push(Use {
                    who: who.clone(),
                    object: format!("a file that {who} reads"),
                    path,
                    access: Access::Read,
                });
            }
            for path in info.files_written() {
                files.push(&who, path, Access::Replace);
            }
            if let Some(path) = &n.payload.exclusions {
                files.push(&format!("step \"{}\"'s `exclusions`", n.id), path.clone(), Access::Replace);
            }
            files.patterns.extend(info.written_patterns().into_iter().map(|p| (who.clone(), p)));
        }
        for alert in &pipeline.alerts {
            if let AlertSink::File(path) = &alert.sink {
                files.push(&format!("alert `{}`", alert.when), path.clone(), Access::InPlace);
            }
        }
        files
    }

    /// Adds a file or folder that Weave writes and removes itself (the cache's index and
    /// its folders of entries; `what` names its owner: `the cache`): no output may be it or
    /// in it, where Weave would write over the output, or the output over Weave's files (an
    /// export to `.weave/cache/files.json` was replaced by the cache's index at the end of
    /// the run). A path given twice is checked once.
    pub fn kept_by_weave(mut self, what: &str, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if !self.kept.iter().any(|(_, p)| *p == path) {
            self.kept.push((what.to_owned(), path));
        }
        self
    }

    /// Adds a file the run reads; `what` names it in messages (`"the pipeline file"`).
    pub fn read(mut self, what: &str, path: impl Into<PathBuf>) -> Self {
        self.uses.push(Use { who: what.to_owned(), object: what.to_owned(), path: path.into(), access: Access::Read });
        self
    }

    /// Adds a file the run replaces (the quarantine file, the metrics file).
    pub fn replaced(mut self, who: &str, path: impl Into<PathBuf>) -> Self {
        self.push(who, path.into(), Access::Replace);
        self
    }

    /// Adds a file the run writes into as it is, which may be something other than a
    /// regular file (`weave graph -o /dev/stdout`).
    pub fn written_in_place(mut self, who: &str, path: impl Into<PathBuf>) -> Self {
        self.push(who, path.into(), Access::InPlace);
        self
    }

    /// Adds a file that `who` writes.
    fn push(&mut self, who: &str, path: PathBuf, access: Access) {
        let object = format!("the file that {who} writes");
        self.uses.push(Use { who: who.to_owned(), object, path, access });
    }

    /// Every problem: a file written that is read, or written twice (two files appended
    /// to are no problem), or that a set's pattern can make; a file replaced that is not
    /// a regular file. Nothing is opened but to look at it.
    pub fn check(&self) -> Result<(), Error> {
        let mut dirs = Dirs::default();
        let resolved: Vec<Resolved> = self.uses.iter().map(|u| dirs.resolve(&u.path)).collect();
        let mut problems = Vec::new();
        for (u, r) in self.uses.iter().zip(&resolved) {
            if u.access == Access::Replace
                && let Some(why) = r.not_replaceable()
            {
                problems.push(format!("{} would replace {}, which {why}", u.who, u.path.display()));
            }
        }
        for (i, j) in same_files(&resolved) {
            let (a, b) = (&self.uses[i], &self.uses[j]);
            let (pa, pb) = (&resolved[i].path, &resolved[j].path);
            // The two spellings, the writer's first, and the file they both name.
            let both = |first: &Use, second: &Use| {
                let (x, y) = (first.path.display(), second.path.display());
                if pa != pb {
                    format!("{x} and {y} are one file (linked)")
                } else if first.path == second.path {
                    format!("{}", pa.display())
                } else {
                    format!("{x} and {y} are both {}", pa.display())
                }
            };
            match (a.access, b.access) {
                (Access::Read, Access::Read) | (Access::InPlace, Access::InPlace) => {}
                // A step that reads and writes its own file does so on purpose.
                (Access::Read, _) | (_, Access::Read) if a.who == b.who => {}
                (Access::Read, _) => problems.push(format!("{} would write over {}: {}", b.who, a.object, both(b, a))),
                (_, Access::Read) => problems.push(format!("{} would write over {}: {}", a.who, b.object, both(a, b))),
                _ if a.path == b.path && a.who == b.who => {}
                _ => problems.push(format!("{} and {} would both write one file: {}", a.who, b.who, both(a, b))),
            }
        }
        for (writer, pattern) in &self.patterns {
            let dir = dirs.canonical_dir(pattern.dir());
            for (u, r) in self.uses.iter().zip(&resolved) {
                if u.who == *writer {
                    continue;
                }
                let Ok(rel) = r.path.strip_prefix(&dir) else { continue };
                let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                if rel.is_empty() || !pattern.matches(&rel.join("/")) {
                    continue;
                }
                problems.push(format!(
                    "{writer} writes its parts as `{}`, which makes {}: {} (as {})",
                    pattern.shown(),
                    r.path.display(),
                    u.object,
                    u.path.display()
                ));
            }
        }
        for (what, kept) in &self.kept {
            let own = dirs.resolve(kept).path;
            let place = |written: &Path| {
                let shown = if written == kept { String::new() } else { format!(" (as {})", written.display()) };
                format!("where {what} keeps its own files: {}{shown}; give it another path", kept.display())
            };
            for (u, r) in self.uses.iter().zip(&resolved) {
                if u.access != Access::Read && r.path.starts_with(&own) {
                    problems.push(format!("{} would write {}", u.who, place(&u.path)));
                }
            }
            for (writer, pattern) in &self.patterns {
                let dir = dirs.canonical_dir(pattern.dir());
                let makes = own.strip_prefix(&dir).is_ok_and(|rel| {
                    let rel: Vec<String> =
                        rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                    !rel.is_empty() && pattern.matches(&rel.join("/"))
                });
                if makes || dir.starts_with(&own) {
                    problems.push(format!("{writer} would write its parts (`{}`) {}", pattern.shown(), place(kept)));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(Error::Files { problems }) }
    }
}

/// The pairs `(i, j)`, `i < j`, of paths that resolve to one file, in order: found through
/// maps rather than by comparing every pair, as a glob can read many thousands of files.
fn same_files(resolved: &[Resolved]) -> Vec<(usize, usize)> {
    let mut by_path: HashMap<&Path, Vec<usize>> = HashMap::new();
    let mut by_id: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, r) in resolved.iter().enumerate() {
        by_path.entry(&r.path).or_default().push(i);
        if let Some(id) = r.id {
            by_id.entry(id).or_default().push(i);
        }
    }
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for group in by_path.values().chain(by_id.values()).filter(|g| g.len() > 1) {
        for (k, &i) in group.iter().enumerate() {
            pairs.extend(group[k + 1..].iter().map(|&j| (i, j)));
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// What a path resolves to.
#[derive(Debug)]
struct Resolved {
    /// The canonical path of its folder, and its name.
    path: PathBuf,
    /// Device and inode of the file it names (through symbolic links), when it exists.
    id: Option<(u64, u64)>,
    /// The file type of the path itself (a symbolic link is not followed), when it exists.
    kind: Option<std::fs::FileType>,
}

impl Resolved {
    /// Why the file cannot be replaced, if it cannot.
    fn not_replaceable(&self) -> Option<String> {
        let kind = self.kind?;
        if kind.is_file() {
            return None;
        }
        if kind.is_symlink() {
            let target = std::fs::read_link(&self.path).map(|t| t.display().to_string()).unwrap_or_default();
            return Some(format!(
                "is a symbolic link (to {target}): an output is replaced whole, which would replace the link and not the file it points to; name that file itself, or remove the link"
            ));
        }
        let what = if kind.is_dir() { "a folder" } else { special_kind(kind) };
        Some(format!("is {what}, not a regular file; name a file to write"))
    }
}

#[cfg(unix)]
fn special_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: std::fs::FileType) -> &'static str {
    "not a file"
}

/// Canonical folders, looked up once each (a glob of many files in one folder).
#[derive(Debug, Default)]
struct Dirs {
    canonical: HashMap<PathBuf, PathBuf>,
}

impl Dirs {
    fn resolve(&mut self, path: &Path) -> Resolved {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let full = match (absolute.parent(), absolute.file_name()) {
            (Some(parent), Some(name)) => self.canonical_dir(parent).join(name),
            // The root, or a path ending in `..`: a folder, resolved whole.
            _ => self.canonical_dir(&absolute),
        };
        let kind = std::fs::symlink_metadata(&full).ok().map(|m| m.file_type());
        Resolved { id: std::fs::metadata(&full).ok().and_then(|m| file_id(&m)), kind, path: full }
    }

    /// `dir` with symbolic links and `..` resolved as far as it exists; what does not
    /// exist yet is added as written (`..` taking off the name before it, as it will once
    /// the folders are made).
    fn canonical_dir(&mut self, dir: &Path) -> PathBuf {
        if let Some(c) = self.canonical.get(dir) {
            return c.clone();
        }
        let resolved = match std::fs::canonicalize(dir) {
            Ok(c) => c,
            Err(_) => {
                let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
                match (absolute.parent(), absolute.components().next_back()) {
                    (Some(parent), Some(last)) => {
                        let mut c = self.canonical_dir(parent);
                        match last {
                            Component::ParentDir => {
                                c.pop();
                            }
                            Component::CurDir => {}
                            other => c.push(other.as_os_str()),
                        }
                        c
                    }
                    _ => absolute,
                }
            }
        };
        self.canonical.insert(dir.to_path_buf(), resolved.clone());
        resolved
    }
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(files: RunFiles) -> Vec<String> {
        match files.check() {
            Ok(()) => Vec::new(),
            Err(Error::Files { problems }) => problems,
            Err(e) => panic!("{e}"),
        }
    }

    #[cfg(unix)]
    #[test]
    fn one_file_by_any_spelling_is_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("in.csv"), "a\n").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("in.csv"), d.join("link.csv")).unwrap();
        std::os::unix::fs::symlink(d, d.join("sub/up")).unwrap();
        std::fs::hard_link(d.join("in.csv"), d.join("hard.csv")).unwrap();
        let input = d.join("in.csv");
        for spelling in [
            d.join("./in.csv"),
            d.join("sub/../in.csv"),
            d.join("missing/../in.csv"),
            d.join("sub/up/in.csv"),
            d.join("link.csv"),
            d.join("hard.csv"),
        ] {
            let found = problems(RunFiles::default().read("the input", &input).replaced("step \"export\"", &spelling));
            assert!(
                found.iter().any(|p| p.starts_with("step \"export\" would write over the input: ")),
                "{}: {found:?}",
                spelling.display()
            );
        }
        // Files that only look alike are different files.
        let found = problems(
            RunFiles::default()
                .read("the input", &input)
                .replaced("step \"export\"", d.join("sub/in.csv"))
                .replaced("--metrics-file", d.join("in.csv.prom")),
        );
        assert_eq!(found, Vec::<String>::new());
    }

    #[cfg(unix)]
    #[test]
    fn targets_that_are_not_regular_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere.jsonl"), dir.path().join("link.jsonl")).unwrap();
        let found = problems(
            RunFiles::default()
                .replaced("step \"a\"", &fifo)
                .replaced("step \"b\"", "/dev/null")
                .replaced("step \"c\"", dir.path().join("folder"))
                .replaced("step \"d\"", dir.path().join("link.jsonl"))
                .replaced("step \"e\"", dir.path().join("new.jsonl")),
        );
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].ends_with("pipe, which is a FIFO (named pipe), not a regular file; name a file to write"));
        assert_eq!(
            found[1],
            "step \"b\" would replace /dev/null, which is a device, not a regular file; name a file to write"
        );
        assert!(found[2].contains("which is a folder, not a regular file"));
        assert!(found[3].contains("is a symbolic link (to ") && found[3].contains("elsewhere.jsonl)"));
        // Appended to (an alert file), a device is fine.
        let files = RunFiles::default().written_in_place("alert `run_failed > 0`", "/dev/null");
        assert_eq!(problems(files), Vec::<String>::new());
    }

    #[test]
    fn a_pattern_refuses_the_files_it_can_make() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::fs::create_dir(d.join("out")).unwrap();
        std::fs::write(d.join("out/data-00003.json"), "[]").unwrap();
        let pattern = FilePattern::new(d.join("./out"), "out/data.json", |rel| {
            rel.strip_prefix("data-").and_then(|r| r.strip_suffix(".json")).is_some_and(|n| n.len() >= 5)
        });
        let mut files = RunFiles::default()
            .read("the input", d.join("out/data-00003.json"))
            .read("the input", d.join("out/notes.json"))
            .replaced("--metrics-file", d.join("out/../out/data-00007.json"));
        files.patterns.push(("step \"export\"".to_owned(), pattern));
        let found = problems(files);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("step \"export\" writes its parts as `out/data.json`, which makes "));
        let as_written = d.join("out/data-00003.json").display().to_string();
        assert!(found[0].ends_with(&format!("out/data-00003.json: the input (as {as_written})")), "{}", found[0]);
        assert!(found[1].contains(": the file that --metrics-file writes (as "), "{}", found[1]);
    }

    // regression (a sibling of issue 13, item 5): an export to `.weave/cache/files.json`
    // succeeded, and the cache then wrote its index over it: the run said it succeeded and
    // its output was gone.
    #[test]
    fn nothing_the_run_writes_may_be_where_the_cache_keeps_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let cache = d.join(".weave/cache");
        let parts = |dir: &str, template: &'static str| {
            FilePattern::new(d.join(dir), template, |rel: &str| rel.starts_with("part-") || rel == "files.json")
        };
        let mut files = RunFiles::default()
            .kept_by_weave("the cache", cache.join("files.json"))
            .kept_by_weave("the cache", cache.join("objects"))
            .kept_by_weave("the cache", cache.join("objects"))
            .read("the input", cache.join("objects/ab/entry"))
            .replaced("step \"export\"", cache.join("files.json"))
            .replaced("--metrics-file", d.join(".weave/x/../cache/objects/m.prom"))
            .written_in_place("alert `failed > 0`", cache.join("objects"))
            // Beside the cache's own files, not among them: fine.
            .replaced("--quarantine", cache.join("quarantine.jsonl"))
            .replaced("step \"other\"", d.join(".weave/cache/objects-copy/files.json"));
        files.patterns.push(("step \"parts\"".to_owned(), parts(".weave/cache/objects/x", "objects/x/part.json")));
        files.patterns.push(("step \"index\"".to_owned(), parts(".weave/cache", "cache/part.json")));
        files.patterns.push(("step \"beside\"".to_owned(), parts(".weave", "part.json")));
        let found = problems(files);
        let index = cache.join("files.json").display().to_string();
        let objects = cache.join("objects").display().to_string();
        let own = "where the cache keeps its own files: ";
        for expected in [
            format!("step \"export\" would write {own}{index}; give it another path"),
            format!(
                "--metrics-file would write {own}{objects} (as {}); give it another path",
                d.join(".weave/x/../cache/objects/m.prom").display()
            ),
            format!("alert `failed > 0` would write {own}{objects}; give it another path"),
            format!("step \"index\" would write its parts (`cache/part.json`) {own}{index}; give it another path"),
            format!(
                "step \"parts\" would write its parts (`objects/x/part.json`) {own}{objects}; give it another path"
            ),
        ] {
            assert!(found.contains(&expected), "{expected}\nnot in {found:#?}");
        }
        // And the index's pattern makes the export's file, which is said as ever: six in all.
        assert_eq!(found.len(), 6, "{found:#?}");
    }
}
