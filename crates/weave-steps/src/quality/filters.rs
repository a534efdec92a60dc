//! The four filters: what each measures of a document and the rule it fails, with
//! datatrove's default thresholds (its `GopherQualityFilter`, `GopherRepetitionFilter`,
//! `C4QualityFilter` and `FineWebQualityFilter`), checked in the same order so that a
//! document fails the same rule first.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use super::words::{chars, is_space, is_symbol, is_terminal, sentences, splitlines, strip, words};

/// A rule a document failed: its name and what was measured against what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fail {
    pub(crate) rule: &'static str,
    pub(crate) detail: String,
}

fn fail(rule: &'static str, detail: String) -> Option<Fail> {
    Some(Fail { rule, detail })
}

/// A ratio for a reason: three decimals, so that `0.231 > 0.2` reads at a glance.
fn ratio(x: f64) -> String {
    format!("{x:.3}")
}

/// The Gopher quality rules (Rae et al. 2021, appendix A1).
#[derive(Debug, Clone)]
pub(crate) struct GopherQuality {
    pub(crate) min_doc_words: Option<f64>,
    pub(crate) max_doc_words: Option<f64>,
    pub(crate) min_avg_word_length: Option<f64>,
    pub(crate) max_avg_word_length: Option<f64>,
    pub(crate) max_symbol_word_ratio: Option<f64>,
    pub(crate) max_bullet_lines_ratio: Option<f64>,
    pub(crate) max_ellipsis_lines_ratio: Option<f64>,
    pub(crate) max_non_alpha_words_ratio: Option<f64>,
    pub(crate) min_stop_words: Option<f64>,
    pub(crate) stop_words: Vec<String>,
}

impl Default for GopherQuality {
    fn default() -> Self {
        GopherQuality {
            min_doc_words: Some(50.0),
            max_doc_words: Some(100_000.0),
            min_avg_word_length: Some(3.0),
            max_avg_word_length: Some(10.0),
            max_symbol_word_ratio: Some(0.1),
            max_bullet_lines_ratio: Some(0.9),
            max_ellipsis_lines_ratio: Some(0.3),
            max_non_alpha_words_ratio: Some(0.8),
            min_stop_words: Some(2.0),
            stop_words: ["the", "be", "to", "of", "and", "that", "have", "with"].map(str::to_owned).to_vec(),
        }
    }
}

impl GopherQuality {
    pub(crate) fn check(&self, text: &str) -> Option<Fail> {
        let mut ws = Vec::new();
        words(text, &mut ws);
        // Ratios over no words are 0 (datatrove divides by zero there, but only when
        // `min_doc_words` is off: an empty document fails it first).
        let n = ws.len().max(1) as f64;
        let (mut kept, mut kept_chars) = (0usize, 0usize);
        for w in ws.iter().filter(|w| !is_symbol(w)) {
            kept += 1;
            kept_chars += chars(w);
        }
        if let Some(min) = self.min_doc_words
            && (kept as f64) < min
        {
            return fail("min_doc_words", format!("{kept} < {min}"));
        }
        if let Some(max) = self.max_doc_words
            && kept as f64 > max
        {
            return fail("max_doc_words", format!("{kept} > {max}"));
        }
        if kept > 0 {
            let mean = kept_chars as f64 / kept as f64;
            if let Some(min) = self.min_avg_word_length
                && mean < min
            {
                return fail("min_avg_word_length", format!("{} < {min}", ratio(mean)));
            }
            if let Some(max) = self.max_avg_word_length
                && mean > max
            {
                return fail("max_avg_word_length", format!("{} > {max}", ratio(mean)));
            }
        }
        if let Some(max) = self.max_symbol_word_ratio {
            let hashes = text.matches('#').count() as f64 / n;
            if hashes > max {
                return fail("hash_ratio", format!("{} > {max}", ratio(hashes)));
            }
            let ellipses = (text.matches("...").count() + text.matches('…').count()) as f64 / n;
            if ellipses > max {
                return fail("ellipsis_ratio", format!("{} > {max}", ratio(ellipses)));
            }
        }
        let lines = splitlines(text);
        let nl = lines.len().max(1) as f64;
        if let Some(max) = self.max_bullet_lines_ratio {
            let bullets = lines
                .iter()
                .filter(|l| {
                    let l = l.trim_start_matches(is_space);
                    l.starts_with('•') || l.starts_with('-')
                })
                .count() as f64
                / nl;
            if bullets > max {
                return fail("bullet_lines_ratio", format!("{} > {max}", ratio(bullets)));
            }
        }
        if let Some(max) = self.max_ellipsis_lines_ratio {
            let ending = lines
                .iter()
                .filter(|l| {
                    let l = l.trim_end_matches(is_space);
                    l.ends_with("...") || l.ends_with('…')
                })
                .count() as f64
                / nl;
            if ending > max {
                return fail("ellipsis_lines_ratio", format!("{} > {max}", ratio(ending)));
            }
        }
        if let Some(min) = self.max_non_alpha_words_ratio {
            let alpha = ws.iter().filter(|w| w.chars().any(is_alpha)).count() as f64 / n;
            if alpha < min {
                return fail("alpha_words_ratio", format!("{} < {min}", ratio(alpha)));
            }
        }
        if let Some(min) = self.min_stop_words {
            let found: HashSet<&str> = ws.iter().copied().filter(|w| self.stop_words.iter().any(|s| s == w)).collect();
            if (found.len() as f64) < min {
                return fail("min_stop_words", format!("{} < {min}", found.len()));
            }
        }
        None
    }
}

/// A letter as Python's `str.isalpha` has it (general categories L*): Rust's
/// `char::is_alphabetic` also takes letter numbers and combining marks.
fn is_alpha(c: char) -> bool {
    static LETTER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\pL$").expect("a valid pattern"));
    if c.is_ascii() { c.is_ascii_alphabetic() } else { LETTER.is_match(c.encode_utf8(&mut [0; 4])) }
}

/// The Gopher repetition rules: duplicated paragraphs and lines, the most frequent 2- to
/// 4-grams, and the duplicated 5- to 10-grams.
#[derive(Debug, Clone)]
pub(crate) struct GopherRepetition {
    pub(crate) dup_line_frac: Option<f64>,
    pub(crate) dup_para_frac: Option<f64>,
    pub(crate) dup_line_char_frac: Option<f64>,
    pub(crate) dup_para_char_frac: Option<f64>,
    /// `(n, largest fraction)` for `top_{n}_gram`.
    pub(crate) top_n_grams: Vec<(usize, f64)>,
    /// `(n, largest fraction)` for `dup_{n}_gram`.
    pub(crate) dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetition {
    fn default() -> Self {
        GopherRepetition {
            dup_line_frac: Some(0.3),
            dup_para_frac: Some(0.3),
            dup_line_char_frac: Some(0.2),
            dup_para_char_frac: Some(0.2),
            top_n_grams: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)],
        }
    }
}

/// The rule names of the n-gram rules, by n.
pub(crate) const TOP_RULES: [&str; 3] = ["top_2_gram", "top_3_gram", "top_4_gram"];
pub(crate) const DUP_RULES: [&str; 6] =
    ["dup_5_gram", "dup_6_gram", "dup_7_gram", "dup_8_gram", "dup_9_gram", "dup_10_gram"];

/// The elements that repeat an earlier one: how many, and their characters.
fn duplicates<'a>(items: impl IntoIterator<Item = &'a str>) -> (usize, usize) {
    let mut seen = HashSet::new();
    let (mut n, mut c) = (0, 0);
    for it in items {
        if !seen.insert(it) {
            n += 1;
            c += chars(it);
        }
    }
    (n, c)
}

/// Paragraphs: `text` stripped, split at runs of two or more line feeds.
fn paragraphs(text: &str) -> Vec<&str> {
    static BREAKS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\n{2,}").expect("a valid pattern"));
    BREAKS.split(strip(text)).collect()
}

impl GopherRepetition {
    pub(crate) fn check(&self, text: &str) -> Option<Fail> {
        let len = chars(text);
        if len == 0 {
            // Nothing repeats in nothing (datatrove divides by zero here).
            return None;
        }
        let total = len as f64;
        let paras = paragraphs(text);
        let (n, c) = duplicates(paras.iter().copied());
        if let Some(max) = self.dup_para_frac {
            let f = n as f64 / paras.len() as f64;
            if f > max {
                return fail("dup_para_frac", format!("{} > {max}", ratio(f)));
            }
        }
        if let Some(max) = self.dup_para_char_frac {
            let f = c as f64 / total;
            if f > max {
                return fail("dup_para_char_frac", format!("{} > {max}", ratio(f)));
            }
        }
        let lines: Vec<&str> = text
            .split('\n')
            .filter({
                // `re.split("\n+")`: a run of line feeds is one break, but an empty piece at
                // either end stays.
                let mut first = true;
                let last_at = text.len();
                let mut at = 0;
                move |piece: &&str| {
                    let keep = first || !piece.is_empty() || at + piece.len() == last_at;
                    at += piece.len() + 1;
                    first = false;
                    keep
                }
            })
            .collect();
        let (n, c) = duplicates(lines.iter().copied());
        if let Some(max) = self.dup_line_frac {
            let f = n as f64 / lines.len() as f64;
            if f > max {
                return fail("dup_line_frac", format!("{} > {max}", ratio(f)));
            }
        }
        if let Some(max) = self.dup_line_char_frac {
            let f = c as f64 / total;
            if f > max {
                return fail("dup_line_char_frac", format!("{} > {max}", ratio(f)));
            }
        }
        let mut ws = Vec::new();
        words(text, &mut ws);
        for &(n, max) in &self.top_n_grams {
            if n == 0 || ws.len() < n {
                continue;
            }
            let f = top_gram_chars(&ws, n) as f64 / total;
            if f > max {
                let rule = TOP_RULES.get(n - 2).copied().unwrap_or("top_n_gram");
                return fail(rule, format!("{} > {max}", ratio(f)));
            }
        }
        if !self.dup_n_grams.is_empty() {
            // The words run together, each n-gram a slice of it: datatrove compares n-grams
            // joined without a space, so `ab c` and `a bc` are the same one.
            let joined: String = ws.concat();
            let mut starts = Vec::with_capacity(ws.len() + 1);
            let mut at = 0;
            for w in &ws {
                starts.push(at);
                at += w.len();
            }
            starts.push(at);
            for &(n, max) in &self.dup_n_grams {
                if n == 0 {
                    continue;
                }
                let f = dup_gram_chars(&joined, &starts, n) as f64 / total;
                if f > max {
                    let rule = DUP_RULES.get(n.wrapping_sub(5)).copied().unwrap_or("dup_n_gram");
                    return fail(rule, format!("{} > {max}", ratio(f)));
                }
            }
        }
        None
    }
}

/// The characters of the most frequent n-gram (its words joined by spaces) times its
/// count; of those equally frequent, the first to appear.
fn top_gram_chars(ws: &[&str], n: usize) -> usize {
    let mut counts: HashMap<&[&str], (usize, usize)> = HashMap::with_capacity(ws.len());
    for (i, g) in ws.windows(n).enumerate() {
        counts.entry(g).or_insert((0, i)).0 += 1;
    }
    let (gram, (count, _)) =
        counts.iter().max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1))).expect("at least one n-gram");
    let len: usize = gram.iter().map(|w| chars(w)).sum::<usize>() + n - 1;
    len * count
}

/// The characters of the n-grams that repeat an earlier one, reading left to right and
/// skipping past each repeat (datatrove's `find_all_duplicate`).
fn dup_gram_chars(joined: &str, starts: &[usize], n: usize) -> usize {
    let words = starts.len() - 1;
    let mut seen: HashSet<&str> = HashSet::with_capacity(words);
    let (mut repeated, mut i) = (0, 0);
    while i + n <= words {
        let gram = &joined[starts[i]..starts[i + n]];
        if seen.contains(gram) {
            repeated += chars(gram);
            i += n;
        } else {
            seen.insert(gram);
            i += 1;
        }
    }
    repeated
}

/// The C4 rules (Raffel et al. 2020): lines are kept only if they end in terminal
/// punctuation, have 3 words or more, have no word over 1,000 characters and mention
/// neither javascript nor a cookie or terms-of-use policy; a page is dropped for "lorem
/// ipsum", a curly bracket in a kept line, or fewer than 5 sentences left.
#[derive(Debug, Clone)]
pub(crate) struct C4 {
    pub(crate) remove_citations: bool,
    pub(crate) filter_no_terminal_punct: bool,
    pub(crate) min_num_sentences: Option<u64>,
    pub(crate) min_words_per_line: Option<u64>,
    pub(crate) max_word_length: Option<u64>,
    pub(crate) filter_lorem_ipsum: bool,
    pub(crate) filter_javascript: bool,
    pub(crate) filter_curly_bracket: bool,
    pub(crate) filter_policy: bool,
}

impl Default for C4 {
    fn default() -> Self {
        C4 {
            remove_citations: true,
            filter_no_terminal_punct: true,
            min_num_sentences: Some(5),
            min_words_per_line: Some(3),
            max_word_length: Some(1000),
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
        }
    }
}

/// The lines C4 removes, by rule (the names its figures take, after `c4.`).
pub(crate) const C4_LINE_RULES: [&str; 5] =
    ["lines_too_long_word", "lines_no_terminal_punct", "lines_too_few_words", "lines_javascript", "lines_policy"];

const POLICY: [&str; 6] =
    ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"];

impl C4 {
    /// The document's kept lines, or the rule it failed; `removed` counts the lines taken
    /// out, by [`C4_LINE_RULES`].
    pub(crate) fn check(&self, text: &str, removed: &mut [u64; 5]) -> Result<String, Fail> {
        static CITATION: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"\[\d*]|\[edit]|\[citation needed]").expect("a valid pattern"));
        let mut sentence_count = 0u64;
        let mut kept: Vec<String> = Vec::new();
        for (i, line) in splitlines(text).into_iter().enumerate() {
            let line = strip(line);
            let n_words = line.split(is_space).filter(|w| !w.is_empty()).count() as u64;
            if let Some(max) = self.max_word_length
                && line.split(is_space).any(|w| chars(w) as u64 > max)
            {
                removed[0] += 1;
                continue;
            }
            let line = if self.remove_citations { CITATION.replace_all(line, "") } else { line.into() };
            if self.filter_no_terminal_punct && (!line.ends_with(['.', '?', '!', '"', '\'']) || line.ends_with("...")) {
                removed[1] += 1;
                continue;
            }
            if self.min_words_per_line.is_some_and(|min| n_words < min) {
                removed[2] += 1;
                continue;
            }
            let lower = line.to_lowercase();
            if self.filter_lorem_ipsum && lower.contains("lorem ipsum") {
                return Err(Fail { rule: "lorem_ipsum", detail: format!("\"lorem ipsum\" on line {}", i + 1) });
            }
            if self.filter_javascript && lower.contains("javascript") {
                removed[3] += 1;
                continue;
            }
            if self.filter_curly_bracket && line.contains('{') {
                return Err(Fail { rule: "curly_bracket", detail: format!("`{{` on line {}", i + 1) });
            }
            if self.filter_policy && POLICY.iter().any(|p| lower.contains(p)) {
                removed[4] += 1;
                continue;
            }
            if self.min_num_sentences.is_some() {
                let mut ws = Vec::new();
                words(&line, &mut ws);
                sentence_count += sentences(&ws) as u64;
            }
            kept.push(line.into_owned());
        }
        if let Some(min) = self.min_num_sentences
            && sentence_count < min
        {
            return Err(Fail { rule: "min_num_sentences", detail: format!("{sentence_count} < {min}") });
        }
        Ok(strip(&kept.join("\n")).to_owned())
    }
}

/// The FineWeb rules (Penedo et al. 2024): lines ending in punctuation, short lines,
/// characters in duplicated lines, and line breaks per word.
#[derive(Debug, Clone)]
pub(crate) struct FineWeb {
    pub(crate) line_punct_thr: f64,
    pub(crate) line_punct_exclude_zero: bool,
    pub(crate) short_line_thr: f64,
    pub(crate) short_line_length: u64,
    pub(crate) char_duplicates_ratio: f64,
    pub(crate) new_line_ratio: f64,
}

impl Default for FineWeb {
    fn default() -> Self {
        FineWeb {
            line_punct_thr: 0.12,
            line_punct_exclude_zero: false,
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.3,
        }
    }
}

impl FineWeb {
    pub(crate) fn check(&self, text: &str) -> Option<Fail> {
        let lines: Vec<&str> = text.split('\n').filter(|l| !strip(l).is_empty()).collect();
        if lines.is_empty() {
            return fail("empty", "no line with text".to_owned());
        }
        let n = lines.len() as f64;
        let punct = lines.iter().filter(|l| l.chars().next_back().is_some_and(is_terminal)).count() as f64 / n;
        if punct < self.line_punct_thr && !(punct == 0.0 && self.line_punct_exclude_zero) {
            return fail("line_punct_ratio", format!("{} < {}", ratio(punct), self.line_punct_thr));
        }
        let short = lines.iter().filter(|l| chars(l) as u64 <= self.short_line_length).count() as f64 / n;
        if short > self.short_line_thr {
            return fail("short_line_ratio", format!("{} > {}", ratio(short), self.short_line_thr));
        }
        let body = chars(text) - text.matches('\n').count();
        let dup = duplicates(lines.iter().copied()).1 as f64 / body.max(1) as f64;
        if dup > self.char_duplicates_ratio {
            return fail("char_dup_ratio", format!("{} > {}", ratio(dup), self.char_duplicates_ratio));
        }
        let mut ws = Vec::new();
        words(text, &mut ws);
        let breaks = text.matches('\n').count() as f64 / ws.len().max(1) as f64;
        if breaks > self.new_line_ratio {
            return fail("list_ratio", format!("{} > {}", ratio(breaks), self.new_line_ratio));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prose(words: usize) -> String {
        let base = "the quick brown fox jumps over a lazy dog and then it runs with speed to the river bank";
        base.split(' ').cycle().take(words).collect::<Vec<_>>().join(" ") + "."
    }

    #[test]
    fn gopher_quality_names_the_rule_and_the_measure() {
        let g = GopherQuality::default();
        assert_eq!(g.check("too short."), Some(Fail { rule: "min_doc_words", detail: "2 < 50".into() }));
        let ok =
            (0..6).map(|i| format!("Sentence {i} is about the fox and the dog with a long tail.")).collect::<Vec<_>>();
        assert_eq!(g.check(&ok.join(" ")), None);
        let hashes = format!("{} {}", ok.join(" "), "#a #b #c #d #e #f #g #h #i #j #k #l #m");
        assert_eq!(g.check(&hashes).map(|f| f.rule), Some("hash_ratio"));
        let no_stop = "alpha bravo charlie delta echo foxtrot golf hotel india juliet ".repeat(6);
        assert_eq!(g.check(&no_stop), Some(Fail { rule: "min_stop_words", detail: "0 < 2".into() }));
    }

    #[test]
    fn gopher_repetition_counts_as_datatrove_does() {
        // `re.split("\n+")` keeps the empty pieces at either end, and they repeat.
        let r = GopherRepetition::default();
        let text = format!("{}\n\n{}", prose(60), prose(60));
        assert_eq!(r.check(&text).map(|f| f.rule), Some("dup_para_frac"));
        assert_eq!(top_gram_chars(&["a", "b", "a", "b", "c"], 2), 6);
        // Ties go to the first n-gram seen: `aaa b` (5 characters), not `b c`.
        assert_eq!(top_gram_chars(&["aaa", "b", "c"], 2), 5);
        let joined = "abcabc";
        assert_eq!(dup_gram_chars(joined, &[0, 1, 2, 3, 4, 5, 6], 3), 3);
        assert_eq!(dup_gram_chars("abcab", &[0, 2, 3, 5], 1), 2);
    }

    #[test]
    fn c4_keeps_lines_and_drops_pages() {
        let c4 = C4::default();
        let mut removed = [0; 5];
        let text = "A first full sentence here. And a second one!\nMenu\nPlease enable JavaScript to view this.\nWe use cookies on this site.\nThree more lines follow here. They count too. So does this one.";
        let kept = c4.check(text, &mut removed).unwrap();
        assert_eq!(
            kept,
            "A first full sentence here. And a second one!\nThree more lines follow here. They count too. So does this one."
        );
        // `Menu` has no terminal punctuation, checked before its single word.
        assert_eq!(removed, [0, 1, 0, 1, 1]);
        let lorem = "Lorem ipsum dolor sit amet.";
        assert_eq!(c4.check(lorem, &mut removed).unwrap_err().rule, "lorem_ipsum");
        assert_eq!(
            c4.check("One two three. Four five six.", &mut removed).unwrap_err(),
            Fail { rule: "min_num_sentences", detail: "2 < 5".into() }
        );
    }

    #[test]
    fn fineweb_rules() {
        let f = FineWeb::default();
        assert_eq!(f.check(" \n\n").map(|f| f.rule), Some("empty"));
        assert_eq!(f.check(&"a line without an end\n".repeat(3)).map(|f| f.rule), Some("line_punct_ratio"));
        let long = "This line is long enough to count as a line of prose.";
        assert_eq!(
            f.check(&format!("{long}\nshort.\nshort too.\nand short.")).map(|f| f.rule),
            Some("short_line_ratio")
        );
        assert_eq!(f.check(&format!("{long}\n{long}")).map(|f| f.rule), Some("char_dup_ratio"));
        assert_eq!(f.check(&prose(40)), None);
    }
}
