//! Diagnostics: problems found in a pipeline, each with where it is and how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use unicode_width::UnicodeWidthChar;

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

/// `s` cut to its first `max_chars` characters, with `…` when cut: a value quoted in a
/// message, which may be as long as the input.
pub(crate) fn clip(s: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &s[..at]).into(),
        None => s.into(),
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
                // A tab is shown as one space, so that it takes the one column it counts
                // for; other control characters (a NUL, an escape) are not sent to the
                // terminal as they are.
                let chars: Vec<char> = s
                    .text
                    .chars()
                    .map(|c| match c {
                        '\t' => ' ',
                        c if c.is_control() => char::REPLACEMENT_CHARACTER,
                        c => c,
                    })
                    .collect();
                let col = loc.column.saturating_sub(1).min(chars.len());
                let (start, end) = if chars.len() > 160 {
                    (col.saturating_sub(60), (col + 80).min(chars.len()))
                } else {
                    (0, chars.len())
                };
                let mut text: String = chars[start..end].iter().collect();
                // The caret goes under the column by display width: a CJK character takes
                // two columns of the terminal, a combining mark none.
                let columns = |cs: &[char]| cs.iter().map(|c| c.width().unwrap_or(0)).sum::<usize>();
                let mut caret = columns(&chars[start..col]);
                if start > 0 {
                    text.insert(0, '…');
                    caret += 1;
                }
                if end < chars.len() {
                    text.push('…');
                }
                let width = columns(&chars[col..(col + s.width).min(end)]).clamp(1, 80);
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

    /// At most `limit` of them to show, and what is left out. When all fit they come in
    /// the order found; when they do not, errors come first (they are what stops the
    /// run), each kind in the order found. A file with thousands of problems is read one
    /// screen at a time anyway, and its first problems are often the cause of the rest.
    pub fn first(&self, limit: usize) -> (Vec<&Diagnostic>, Omitted) {
        if self.0.len() <= limit {
            return (self.0.iter().collect(), Omitted::default());
        }
        let errors = self.0.iter().filter(|d| d.is_error());
        let shown: Vec<&Diagnostic> = errors.chain(self.warnings()).take(limit).collect();
        let shown_errors = shown.iter().filter(|d| d.is_error()).count();
        let omitted = Omitted {
            errors: self.error_count() - shown_errors,
            warnings: self.0.len() - self.error_count() - (shown.len() - shown_errors),
        };
        (shown, omitted)
    }
}

/// What [`Diagnostics::first`] left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Omitted {
    /// Errors not shown.
    pub errors: usize,
    /// Warnings not shown.
    pub warnings: usize,
}

impl Omitted {
    /// Whether nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.errors == 0 && self.warnings == 0
    }
}

impl fmt::Display for Omitted {
    /// `and 4950 more problems not shown (4950 errors)`; nothing when nothing was left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let parts: Vec<String> = [(self.errors, "error"), (self.warnings, "warning")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, w)| plural(*n, w))
            .collect();
        if parts.is_empty() {
            return Ok(());
        }
        let n = self.errors + self.warnings;
        let noun = if n == 1 { "problem" } else { "problems" };
        write!(f, "and {n} more {noun} not shown ({})", parts.join(", "))
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

/// Words longer than this get no suggestion: comparing two long strings costs the product
/// of their lengths, and a typo is not what makes a word that long.
const SUGGEST_MAX_BYTES: usize = 256;

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.len() > SUGGEST_MAX_BYTES {
        return None;
    }
    candidates
        .into_iter()
        .filter(|c| c.len() <= SUGGEST_MAX_BYTES)
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
    fn the_caret_is_under_the_column_after_wide_and_control_characters() {
        let src = SourceFile::new("p.toml", "id = \"数据\tx\u{1b}\" oops\n");
        let at = src.text().find("oops").unwrap();
        let shown = Diagnostic::error("here").at(Some(src.locate(at..at + 4))).to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[3], "1 | id = \"数据 x\u{fffd}\" oops", "{shown}");
        // `id = "` is 6 columns, 数据 4, then the tab, x, the replacement, `"` and a space.
        assert_eq!(lines[4], format!("  | {}^^^^", " ".repeat(15)), "{shown}");
    }

    #[test]
    fn past_the_limit_errors_come_first_and_the_rest_are_counted() {
        let mut d = Diagnostics::default();
        for i in 0..3 {
            d.push(Diagnostic::warning(format!("w{i}")));
            d.push(Diagnostic::error(format!("e{i}")));
        }
        let (all, none) = d.first(6);
        assert_eq!(all.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["w0", "e0", "w1", "e1", "w2", "e2"]);
        assert!(none.is_empty());
        assert_eq!(none.to_string(), "");
        let (shown, omitted) = d.first(4);
        assert_eq!(shown.iter().map(|d| d.message.as_str()).collect::<Vec<_>>(), ["e0", "e1", "e2", "w0"]);
        assert_eq!(omitted, Omitted { errors: 0, warnings: 2 });
        assert_eq!(omitted.to_string(), "and 2 more problems not shown (2 warnings)");
        let (_, omitted) = d.first(1);
        assert_eq!(omitted.to_string(), "and 5 more problems not shown (2 errors, 3 warnings)");
    }

    #[test]
    fn long_values_are_clipped_in_messages_and_get_no_suggestion() {
        assert_eq!(clip("数据数据", 2), "数据…");
        assert_eq!(clip("abc", 3), "abc");
        let long = "a".repeat(100_000);
        assert_eq!(did_you_mean(&long, [long.as_str(), "rules"]), None);
    }

    #[test]
    fn suggestions_need_to_be_close() {
        assert_eq!(did_you_mean("ruls", ["rules", "path", "retry"]), Some("rules"));
        assert_eq!(did_you_mean("xyz", ["rules", "path"]), None);
    }
}
