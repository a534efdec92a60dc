//! Diagnostics: problems found in a pipeline, each with where it is and how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The pipeline still runs, but probably not as meant.
    Warning,
    /// The pipeline cannot run.
    Error,
}

/// The text of a pipeline file, kept so that byte spans become line, column and snippet.
#[derive(Debug, Clone)]
pub struct SourceFile {
    path: PathBuf,
    text: Arc<str>,
    line_starts: Arc<[usize]>,
}

impl SourceFile {
    /// A file's path (as the user should see it) and its text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        SourceFile { path: path.into(), text, line_starts }
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The location of a byte span (clamped to the text).
    pub fn locate(&self, span: Range<usize>) -> Location {
        let start = floor_char_boundary(&self.text, span.start.min(self.text.len()));
        let line_idx = self.line_starts.partition_point(|&s| s <= start) - 1;
        let line_start = self.line_starts[line_idx];
        let line_end = self.line_starts.get(line_idx + 1).map_or(self.text.len(), |&e| e - 1);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        let column = self.text[line_start..start].chars().count() + 1;
        // The span may start in the `\r`s trimmed off the line's end: the underline then
        // starts after the text, and never ends before it starts.
        let end = floor_char_boundary(&self.text, span.end.min(line_start + line_text.len()).max(start));
        let width = self.text[start..end].chars().count().max(1);
        Location {
            file: self.path.clone(),
            line: line_idx + 1,
            column,
            snippet: Some(Snippet { text: line_text.to_owned(), width }),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where a diagnostic points: a file, line and column (both from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// The line, from 1.
    pub line: usize,
    /// The column in characters, from 1.
    pub column: usize,
    /// The line's text and how many characters to underline, for display.
    pub snippet: Option<Snippet>,
}

/// The source line a diagnostic points into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// The line's text.
    pub text: String,
    /// How many characters from the location's column to underline.
    pub width: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem, with the step it concerns, where it is, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, lowercase, without a final period.
    pub message: String,
    /// The id of the step it concerns.
    pub step: Option<String>,
    /// Where in the pipeline file.
    pub location: Option<Location>,
    /// How to fix it ("did you mean `rules`?").
    pub help: Option<String>,
    /// What kind of problem this is, stable for tests and tooling (`"cycle"`,
    /// `"unknown-key"`, `"shape"`, ...).
    pub code: &'static str,
}

impl Diagnostic {
    /// An error.
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            step: None,
            location: None,
            help: None,
            code: "",
        }
    }

    /// A warning.
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(message) }
    }

    /// Names the step this concerns.
    pub fn with_step(mut self, step: impl Into<String>) -> Self {
        self.step = Some(step.into());
        self
    }

    /// Sets where this is.
    pub fn at(mut self, location: Option<Location>) -> Self {
        if location.is_some() {
            self.location = location;
        }
        self
    }

    /// Sets the kind of problem.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// Renders like a compiler message:
    ///
    /// ```text
    /// error: step "clean": unknown key `ruls`
    ///   --> pipeline.toml:12:1
    ///    |
    /// 12 | ruls = ["trim"]
    ///    | ^^^^
    ///    = help: did you mean `rules`?
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: ")?;
        if let Some(step) = &self.step {
            write!(f, "step \"{step}\": ")?;
        }
        f.write_str(&self.message)?;
        let gutter = self.location.as_ref().map_or(1, |l| l.line.to_string().len());
        let pad = " ".repeat(gutter);
        if let Some(loc) = &self.location {
            write!(f, "\n{pad}--> {loc}")?;
            if let Some(s) = &loc.snippet {
                // A very long line (minified, generated) is shown as a window around the
                // column, so that the message stays readable.
                let chars: Vec<char> = s.text.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
                let col = loc.column - 1;
                let (start, end) = if chars.len() > 160 {
                    (col.saturating_sub(60), (col + 80).min(chars.len()))
                } else {
                    (0, chars.len())
                };
                let mut text: String = chars[start.min(end)..end].iter().collect();
                let mut caret = col - start.min(col);
                if start > 0 {
                    text.insert(0, '…');
                    caret += 1;
                }
                if end < chars.len() {
                    text.push('…');
                }
                let width = s.width.min(80);
                write!(f, "\n{pad} |\n{} | {text}\n{pad} | {}{}", loc.line, " ".repeat(caret), "^".repeat(width))?;
            }
        }
        if let Some(help) = &self.help {
            write!(f, "\n{pad} = help: {help}")?;
        }
        Ok(())
    }
}

/// A list of diagnostics, errors and warnings mixed, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Whether any is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    /// The number of errors.
    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves all of `other` in.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_lines_columns_and_a_snippet() {
        let src = SourceFile::new("p.toml", "[pipeline]\nname = \"é\"\nruls = 1\n");
        let at = src.text().find("ruls").unwrap();
        let loc = src.locate(at..at + 4);
        assert_eq!((loc.line, loc.column), (3, 1));
        let d =
            Diagnostic::error("unknown key `ruls`").with_step("clean").at(Some(loc)).with_help("did you mean `rules`?");
        assert_eq!(
            d.to_string(),
            "error: step \"clean\": unknown key `ruls`\n --> p.toml:3:1\n  |\n3 | ruls = 1\n  | ^^^^\n  = help: did you mean `rules`?"
        );
        // Columns count characters, not bytes.
        let at = src.text().find('"').unwrap() + 3;
        assert_eq!(src.locate(at..at + 1).column, 10);
    }

    #[test]
    fn a_span_in_the_carriage_returns_that_end_a_line_is_located() {
        // regression (found by the `pipeline` fuzz target): a span starting in the `\r`s
        // trimmed off a line's end panicked (`clamp` with its minimum above its maximum),
        // so `weave validate` on a file holding only "\r" crashed.
        let src = SourceFile::new("p.toml", "ab\r\r\nx = 1\n");
        for start in 0..=4 {
            let loc = src.locate(start..6);
            assert_eq!((loc.line, loc.column), (1, start + 1), "span {start}..6");
            assert_eq!(loc.snippet.as_ref().map(|s| s.text.as_str()), Some("ab"));
            let _ = Diagnostic::error("here").at(Some(loc)).to_string();
        }
        let lone = SourceFile::new("p.toml", "\r");
        assert_eq!(lone.locate(1..1).column, 2);
    }

    #[test]
    fn long_lines_are_shown_as_a_window_around_the_column() {
        let text = format!("x = {}oops{}", "a".repeat(300), "b".repeat(300));
        let src = SourceFile::new("p.toml", text.as_str());
        let at = text.find("oops").unwrap();
        let d = Diagnostic::error("here").at(Some(src.locate(at..at + 4)));
        let shown = d.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() < 160), "{shown}");
        let code = lines[3];
        let caret = lines[4];
        let pos = caret.find('^').unwrap();
        assert_eq!(&code[code.char_indices().nth(caret[..pos].chars().count()).unwrap().0..][..4], "oops", "{shown}");
    }

    #[test]
    fn suggestions_need_to_be_close() {
        assert_eq!(did_you_mean("ruls", ["rules", "path", "retry"]), Some("rules"));
        assert_eq!(did_you_mean("xyz", ["rules", "path"]), None);
    }
}
