//! Pattern noisers: replacement tables and named rules, grouped in categories, applied at a
//! rate. The `language`, `domain`, `style` and `synonyms` noisers are all this one engine
//! with different built-in tables; users add tables of their own in the same format.
//!
//! The format, for built-in tables and users' files alike (one pattern a line):
//!
//! ```text
//! # a comment
//! [spelling]                  # the category of the lines that follow
//! receive -> recieve          # a word or phrase, and what it becomes
//! their -> there | they're    # several choices: one is picked at random
//! @strip_accent               # a built-in rule
//! ```
//!
//! A pattern written in lower case matches its lower-case, capitalised and upper-case
//! forms, and the replacement takes the case of the text (`Their` → `There`); a pattern
//! with an upper-case letter, or one whose choice changes only the case (`true -> True`),
//! matches exactly and is replaced as written. A word of the
//! text matches with or without its surrounding punctuation (`statute,` → `statue,`).

use std::fmt::Write;

use super::{Case, Noiser, Rng, Scratch, Tok, WordMap, affixes, case_of, lower_into, push_cased, tokenize, trailing};

/// The built-in languages of the `language` noiser.
pub(crate) const BUILT_IN_LANGUAGES: &[&str] = &["en", "es"];
/// The built-in domains of the `domain` noiser.
pub(crate) const BUILT_IN_DOMAINS: &[&str] = &["programming", "medical", "legal", "scientific"];
/// The built-in styles of the `style` noiser.
pub(crate) const BUILT_IN_STYLES: &[&str] = &["technical", "casual", "academic", "business"];

/// The built-in table `name` of the noiser `noiser`, as text in the pattern format.
pub(crate) fn built_in(noiser: &str, name: &str) -> Option<String> {
    let contractions = include_str!("data/contractions.txt");
    Some(match (noiser, name) {
        ("language", "en") => include_str!("data/en.txt").to_owned(),
        ("language", "es") => include_str!("data/es.txt").to_owned(),
        ("domain", "programming") => include_str!("data/programming.txt").to_owned(),
        ("domain", "medical") => include_str!("data/medical.txt").to_owned(),
        ("domain", "legal") => include_str!("data/legal.txt").to_owned(),
        ("domain", "scientific") => include_str!("data/scientific.txt").to_owned(),
        ("style", "technical") => format!("{}\n{contractions}", include_str!("data/technical.txt")),
        ("style", "casual") => include_str!("data/casual.txt").to_owned(),
        ("style", "academic") => format!("{}\n{contractions}", include_str!("data/academic.txt")),
        ("style", "business") => format!("{}\n{contractions}", include_str!("data/business.txt")),
        ("synonyms", "en") => include_str!("data/synonyms.txt").to_owned(),
        _ => return None,
    })
}

/// A problem in a pattern table: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError {
    /// The line, from 1.
    pub(crate) line: usize,
    /// The column in characters, from 1.
    pub(crate) column: usize,
    /// What is wrong.
    pub(crate) message: String,
    /// The line's text.
    pub(crate) text: String,
}

/// One line of a pattern table, read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Line {
    /// Nothing (blank or a comment).
    Blank,
    /// `[category]`.
    Section(String),
    /// `from -> to | to`.
    Pattern(Pattern),
    /// `@rule`.
    Rule(Rule),
}

/// A replacement: the words it matches and what they can become.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pattern {
    /// The words matched, as written.
    words: Vec<String>,
    /// Matched whatever the case (the pattern is written in lower case).
    fold: bool,
    /// The choices, each with how many of the matched words it changes.
    to: Vec<(String, usize)>,
}

/// Reads one line of a pattern table; an error comes with the column it points at.
pub(crate) fn parse_line(line: &str) -> Result<Line, (usize, String)> {
    let text = line.trim();
    let col0 = line[..line.len() - line.trim_start().len()].chars().count() + 1;
    if text.is_empty() || text.starts_with('#') {
        return Ok(Line::Blank);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some(name) = rest.strip_suffix(']') else {
            return Err((col0, "a category is written `[name]`".into()));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err((col0, "a category name is one word, such as `[spelling]`".into()));
        }
        return Ok(Line::Section(name.to_owned()));
    }
    if let Some(name) = text.strip_prefix('@') {
        return match Rule::from_name(name) {
            Some(r) => Ok(Line::Rule(r)),
            None => {
                let mut msg = format!("unknown rule `@{name}`");
                match weave_core::did_you_mean(name, RULES.iter().map(|(n, _)| *n)) {
                    Some(m) => msg.push_str(&format!(" (did you mean `@{m}`?)")),
                    None => msg.push_str(&format!(
                        " (rules: {})",
                        RULES.iter().map(|(n, _)| format!("@{n}")).collect::<Vec<_>>().join(", ")
                    )),
                }
                Err((col0, msg))
            }
        };
    }
    let Some((from, to)) = text.split_once(" -> ") else {
        let msg = if text.ends_with(" ->") {
            "nothing after `->` (write the words it becomes)"
        } else if text.contains("->") {
            "write the arrow with a space on each side: `from -> to`"
        } else {
            "expected `from -> to`, `@rule` or `[category]`"
        };
        return Err((col0, msg.into()));
    };
    let words: Vec<String> = from.split_whitespace().map(str::to_owned).collect();
    if words.is_empty() {
        return Err((col0, "nothing before `->`".into()));
    }
    // A lower-case pattern matches every case of its words, unless a choice only changes
    // their case (`true -> True`): then case is what it is about, and it matches exactly.
    let fold = !from.chars().any(char::is_uppercase)
        && !to
            .split(" | ")
            .any(|alt| alt.trim().to_lowercase().split_whitespace().eq(words.iter().map(String::as_str)));
    let mut choices = Vec::new();
    let to_col = col0 + text[..text.len() - to.len()].chars().count();
    for alt in to.split(" | ") {
        let alt = alt.trim();
        if alt.is_empty() {
            return Err((to_col, "an empty choice after `->` (write the words it becomes)".into()));
        }
        let alt_words: Vec<&str> = alt.split_whitespace().collect();
        let same = alt_words.len() == words.len()
            && alt_words.iter().zip(&words).all(|(a, w)| if fold { a.to_lowercase() == **w } else { a == w });
        if same {
            return Err((to_col, format!("`{alt}` is what the pattern matches: a choice must change the text")));
        }
        // Words kept at either end do not count as changed.
        let eq = |a: &str, w: &str| if fold { a.to_lowercase() == w } else { a == w };
        let pre = alt_words.iter().zip(&words).take_while(|(a, w)| eq(a, w)).count();
        let suf = alt_words[pre..].iter().rev().zip(words[pre..].iter().rev()).take_while(|(a, w)| eq(a, w)).count();
        choices.push((alt_words.join(" "), (words.len() - pre - suf).max(1)));
    }
    Ok(Line::Pattern(Pattern { words, fold, to: choices }))
}

/// Patterns and rules by category: what a pattern noiser may do.
#[derive(Debug, Clone, Default)]
pub struct PatternSet {
    categories: Vec<String>,
    patterns: Vec<(Pattern, usize)>,
    rules: Vec<(Rule, usize)>,
}

impl PatternSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a table in the pattern format (see the module's documentation). Every
    /// problem is reported, each with its line.
    pub(crate) fn parse(text: &str) -> Result<PatternSet, Vec<PatternError>> {
        let mut set = PatternSet::new();
        let mut errors = Vec::new();
        let mut category: Option<usize> = None;
        for (n, line) in text.lines().enumerate() {
            let err = |column, message| PatternError { line: n + 1, column, message, text: line.to_owned() };
            match parse_line(line) {
                Ok(Line::Blank) => {}
                Ok(Line::Section(name)) => category = Some(set.category(&name)),
                Ok(l @ (Line::Pattern(_) | Line::Rule(_))) => match category {
                    Some(c) => set.push(l, c),
                    None => errors.push(err(1, "a pattern before any `[category]` line".into())),
                },
                Err((column, message)) => errors.push(err(column, message)),
            }
        }
        if errors.is_empty() { Ok(set) } else { Err(errors) }
    }

    /// Adds one line (a pattern or a rule) to `category`.
    pub(crate) fn add(&mut self, category: &str, line: &str) -> Result<(), (usize, String)> {
        match parse_line(line)? {
            Line::Blank => Err((1, "an empty pattern".into())),
            Line::Section(_) => Err((1, "a `[category]` line inside a category's list".into())),
            l => {
                let c = self.category(category);
                self.push(l, c);
                Ok(())
            }
        }
    }

    /// Adds everything in `other`.
    pub fn extend(&mut self, other: PatternSet) {
        let map: Vec<usize> = other.categories.iter().map(|c| self.category(c)).collect();
        self.patterns.extend(other.patterns.into_iter().map(|(p, c)| (p, map[c])));
        self.rules.extend(other.rules.into_iter().map(|(r, c)| (r, map[c])));
    }

    /// The categories, in the order they first appeared.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.categories.iter().map(String::as_str)
    }

    /// The number of patterns and rules.
    pub fn len(&self) -> usize {
        self.patterns.len() + self.rules.len()
    }

    /// Whether the set has no pattern and no rule.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn category(&mut self, name: &str) -> usize {
        match self.categories.iter().position(|c| c == name) {
            Some(i) => i,
            None => {
                self.categories.push(name.to_owned());
                self.categories.len() - 1
            }
        }
    }

    fn push(&mut self, line: Line, category: usize) {
        match line {
            Line::Pattern(p) => self.patterns.push((p, category)),
            Line::Rule(r) if !self.rules.contains(&(r, category)) => self.rules.push((r, category)),
            _ => {}
        }
    }
}

/// A place where a pattern or rule applies, found while noising.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    /// A pattern (its index) or a rule (its index, plus `RULE`).
    what: u32,
    /// Words of the text it covers.
    len: u16,
    /// The first word matched without its leading punctuation, which is kept.
    first_core: bool,
    /// The last word matched without its trailing punctuation, which is kept.
    last_core: bool,
}

const RULE: u32 = 1 << 31;

/// A noiser that applies a [`PatternSet`]: at each place of the text where a pattern or
/// rule of the chosen categories applies, with probability `rate`, one of them (picked at
/// random) is applied.
#[derive(Debug, Clone)]
pub struct PatternNoiser {
    name: &'static str,
    settings: String,
    rate: f64,
    patterns: Vec<Pattern>,
    rules: Vec<Rule>,
    /// First word (exact) → patterns.
    exact: WordMap<String, Vec<u32>>,
    /// First word (lower case) → patterns written in lower case.
    folded: WordMap<String, Vec<u32>>,
    /// The first words of every pattern, for a quick "no" before the maps.
    filter: Filter,
}

/// A bitmap of (length, first and last letter) of a set of words, in ASCII lower case:
/// most words of a text are in no table, and this tells most of them so for the price of
/// three bytes read, where a map lookup hashes the whole word.
#[derive(Debug, Clone)]
struct Filter(Vec<u64>);

impl Filter {
    fn new() -> Self {
        Filter(vec![0; 256])
    }

    /// The bit for `w`, or `None` for a word that is not ASCII (always looked up).
    fn slot(w: &str) -> Option<usize> {
        let b = w.as_bytes();
        let (&first, &last) = (b.first()?, b.last()?);
        if !w.is_ascii() {
            return None;
        }
        let low = |x: u8| usize::from(x.to_ascii_lowercase() & 31);
        Some(b.len().min(15) << 10 | low(first) << 5 | low(last))
    }

    fn insert(&mut self, w: &str) {
        match Filter::slot(w) {
            Some(i) => self.0[i / 64] |= 1 << (i % 64),
            // A word that is not ASCII may be looked up in another case: let all through.
            None => self.0.iter_mut().for_each(|x| *x = u64::MAX),
        }
    }

    fn may_hold(&self, w: &str) -> bool {
        Filter::slot(w).is_none_or(|i| self.0[i / 64] & (1 << (i % 64)) != 0)
    }
}

impl PatternNoiser {
    /// A noiser named `name` (`"language"`) that applies the patterns and rules of `set`
    /// in `categories` (all when empty) at `rate`; `settings` describes it in the record
    /// of what produced each text.
    pub fn new(
        name: &'static str,
        settings: String,
        set: &PatternSet,
        categories: &[String],
        rate: f64,
    ) -> PatternNoiser {
        let wanted: Vec<bool> =
            set.categories.iter().map(|c| categories.is_empty() || categories.contains(c)).collect();
        let patterns: Vec<Pattern> = set.patterns.iter().filter(|(_, c)| wanted[*c]).map(|(p, _)| p.clone()).collect();
        let mut rules: Vec<Rule> = Vec::new();
        for (r, c) in &set.rules {
            if wanted[*c] && !rules.contains(r) {
                rules.push(*r);
            }
        }
        let (mut exact, mut folded) = (WordMap::<String, Vec<u32>>::default(), WordMap::<String, Vec<u32>>::default());
        let mut filter = Filter::new();
        for (i, p) in patterns.iter().enumerate() {
            let map = if p.fold { &mut folded } else { &mut exact };
            map.entry(p.words[0].clone()).or_default().push(i as u32);
            filter.insert(&p.words[0]);
        }
        PatternNoiser { name, settings, rate, patterns, rules, exact, folded, filter }
    }

    /// Fills `cands` with what applies at word `i`.
    fn find(&self, text: &str, toks: &[Tok], i: usize, lower: &mut String, cands: &mut Vec<Cand>) {
        cands.clear();
        let word = &text[toks[i].start..toks[i].end];
        let (pre, core, suf) = affixes(word);
        let keys: &[(&str, bool)] =
            if core.is_empty() || core.len() == word.len() { &[(word, false)] } else { &[(word, false), (core, true)] };
        for &(key, by_core) in keys {
            if !self.filter.may_hold(key) {
                continue;
            }
            let mut try_ids = |ids: Option<&Vec<u32>>| {
                for &id in ids.into_iter().flatten() {
                    let p = &self.patterns[id as usize];
                    // A phrase that starts inside punctuation ("a, lot") does not match.
                    if p.words.len() > 1 && by_core && !suf.is_empty() {
                        continue;
                    }
                    if let Some(last_core) = match_rest(p, text, toks, i) {
                        let last_core = if p.words.len() == 1 { by_core && !suf.is_empty() } else { last_core };
                        let first_core = by_core && !pre.is_empty();
                        cands.push(Cand { what: id, len: p.words.len() as u16, first_core, last_core });
                    }
                }
            };
            if !self.exact.is_empty() {
                try_ids(self.exact.get(key));
            }
            // Most words are in lower case already: look them up as they are.
            if key.bytes().all(|b| !b.is_ascii_uppercase() && b < 0x80) {
                try_ids(self.folded.get(key));
            } else if case_of(key) != Case::Mixed {
                lower_into(key, lower);
                try_ids(self.folded.get(lower.as_str()));
            }
        }
        let next = toks.get(i + 1).map(|t| &text[t.start..t.end]);
        for (r, rule) in self.rules.iter().enumerate() {
            if rule.applies(word, (pre, core, suf), next) {
                cands.push(Cand { what: RULE | r as u32, len: 1, first_core: false, last_core: false });
            }
        }
    }

    /// A text for each of its patterns and rules, where it applies (for tests of the rate).
    #[cfg(test)]
    pub(crate) fn examples(&self) -> Vec<String> {
        let mut out: Vec<String> = self.patterns.iter().map(|p| p.words.join(" ")).collect();
        out.extend(self.rules.iter().map(|r| r.example().to_owned()));
        out
    }

    /// How many places of `text` some pattern or rule applies to (for tests of the rate).
    #[cfg(test)]
    pub(crate) fn sites(&self, text: &str) -> usize {
        let (mut toks, mut lower, mut cands) = (Vec::new(), String::new(), Vec::new());
        tokenize(text, &mut toks);
        (0..toks.len())
            .filter(|&i| {
                self.find(text, &toks, i, &mut lower, &mut cands);
                !cands.is_empty()
            })
            .count()
    }
}

/// Whether the words after the first of `p` follow word `i` of the text; if they do,
/// whether the last one matched without its trailing punctuation.
fn match_rest(p: &Pattern, text: &str, toks: &[Tok], i: usize) -> Option<bool> {
    let eq = |w: &str, pw: &str| {
        if p.fold {
            case_of(w) != Case::Mixed && w.chars().flat_map(char::to_lowercase).eq(pw.chars())
        } else {
            w == pw
        }
    };
    let mut last_core = false;
    for (k, pw) in p.words.iter().enumerate().skip(1) {
        let t = toks.get(i + k)?;
        let w = &text[t.start..t.end];
        if eq(w, pw) {
            continue;
        }
        let (pre, core, suf) = affixes(w);
        if k + 1 == p.words.len() && pre.is_empty() && !suf.is_empty() && eq(core, pw) {
            last_core = true;
            continue;
        }
        return None;
    }
    Some(last_core)
}

impl Noiser for PatternNoiser {
    fn name(&self) -> &'static str {
        self.name
    }

    fn settings(&self) -> String {
        self.settings.clone()
    }

    fn apply(&self, text: &str, rng: &mut Rng, scratch: &mut Scratch, out: &mut String) -> usize {
        let Scratch { toks, lower, cands, .. } = scratch;
        tokenize(text, toks);
        let mut changed = 0;
        let mut i = 0;
        while i < toks.len() {
            let t = toks[i];
            out.push_str(&text[t.ws..t.start]);
            let word = &text[t.start..t.end];
            self.find(text, toks, i, lower, cands);
            if cands.is_empty() || !rng.chance(self.rate) {
                out.push_str(word);
                i += 1;
                continue;
            }
            let c = *rng.pick(cands);
            if c.what & RULE != 0 {
                let rule = self.rules[(c.what & !RULE) as usize];
                let (used, n) = rule.apply(text, toks, i, rng, out);
                changed += n;
                i += used;
                continue;
            }
            let p = &self.patterns[c.what as usize];
            let last = &text[toks[i + usize::from(c.len) - 1].start..toks[i + usize::from(c.len) - 1].end];
            let (pre, core, _) = affixes(word);
            if c.first_core {
                out.push_str(pre);
            }
            let (alt, n) = rng.pick(&p.to);
            if p.fold {
                let matched = if c.first_core || c.last_core { core } else { word };
                // "I" is upper case wherever it stands, so it says nothing about the case
                // the replacement should take.
                let case = if matched == "I" || matched.starts_with("I'") { Case::Lower } else { case_of(matched) };
                push_cased(out, alt, case);
            } else {
                out.push_str(alt);
            }
            if c.last_core {
                out.push_str(affixes(last).2);
            }
            changed += n;
            i += usize::from(c.len);
        }
        out.push_str(trailing(text, toks));
        changed
    }
}

/// The rules a table can name with `@name`.
const RULES: &[(&str, Rule)] = &[
    ("strip_accent", Rule::StripAccent),
    ("drop_initial_h", Rule::DropInitialH),
    ("drop_inverted_mark", Rule::DropInvertedMark),
    ("swap_quotes", Rule::SwapQuotes),
    ("plural_apostrophe", Rule::PluralApostrophe),
    ("drop_comma", Rule::DropComma),
    ("comma_splice", Rule::CommaSplice),
    ("drop_apostrophe", Rule::DropApostrophe),
    ("case_style", Rule::CaseStyle),
    ("drop_semicolon", Rule::DropSemicolon),
    ("bracket_mismatch", Rule::BracketMismatch),
    ("off_by_one", Rule::OffByOne),
    ("operator_swap", Rule::OperatorSwap),
    ("decimal_shift", Rule::DecimalShift),
    ("digit_change", Rule::DigitChange),
    ("sig_figs", Rule::SigFigs),
    ("clause_label", Rule::ClauseLabel),
    ("drop_caret", Rule::DropCaret),
];

/// A built-in rule: a change that a table of words cannot express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// One accented letter loses its accent (`también` → `tambien`).
    StripAccent,
    /// A word starting with a silent `h` before a vowel loses it (`hacer` → `acer`).
    DropInitialH,
    /// An opening `¿` or `¡` is dropped.
    DropInvertedMark,
    /// `«` and `»` become `"`.
    SwapQuotes,
    /// A plural gets an apostrophe (`apples` → `apple's`).
    PluralApostrophe,
    /// A comma after a word is dropped.
    DropComma,
    /// A full stop between two sentences becomes a comma (`end. Then` → `end, then`).
    CommaSplice,
    /// An apostrophe inside a word is dropped (`don't` → `dont`).
    DropApostrophe,
    /// `snake_case` becomes `camelCase` and the other way round.
    CaseStyle,
    /// A `;` after a word is dropped.
    DropSemicolon,
    /// A bracket becomes another kind, or a closing one is dropped.
    BracketMismatch,
    /// An integer is one more or one less.
    OffByOne,
    /// A comparison or logical operator is swapped for its neighbour (`<` → `<=`, `&&` → `||`).
    OperatorSwap,
    /// A number's decimal point moves or is dropped, a leading zero is dropped, or a
    /// trailing `.0` is added (`0.5` → `.5`, `2.5` → `25`, `5` → `5.0`).
    DecimalShift,
    /// One digit of a number changes.
    DigitChange,
    /// A decimal number loses its last digit or gains a trailing zero (`3.14` → `3.1`).
    SigFigs,
    /// A clause label is the next one (`(a)` → `(b)`, `(iv)` → `(v)`, `(2)` → `(3)`).
    ClauseLabel,
    /// A `^` is dropped (`x^2` → `x2`).
    DropCaret,
}

const ACCENTS: &[(char, char)] = &[
    ('á', 'a'),
    ('é', 'e'),
    ('í', 'i'),
    ('ó', 'o'),
    ('ú', 'u'),
    ('ü', 'u'),
    ('ñ', 'n'),
    ('à', 'a'),
    ('è', 'e'),
    ('ì', 'i'),
    ('ò', 'o'),
    ('ù', 'u'),
    ('â', 'a'),
    ('ê', 'e'),
    ('î', 'i'),
    ('ô', 'o'),
    ('û', 'u'),
    ('ç', 'c'),
    ('Á', 'A'),
    ('É', 'E'),
    ('Í', 'I'),
    ('Ó', 'O'),
    ('Ú', 'U'),
    ('Ü', 'U'),
    ('Ñ', 'N'),
    ('À', 'A'),
    ('È', 'E'),
    ('Ç', 'C'),
];

fn unaccent(c: char) -> Option<char> {
    ACCENTS.iter().find(|(a, _)| *a == c).map(|(_, b)| *b)
}

const ROMAN: &[&str] = &["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii"];

/// Operators, longest first, and what each can become.
const OPERATORS: &[(&str, &[&str])] = &[
    ("<=", &["<"]),
    (">=", &[">"]),
    ("==", &["=", "!="]),
    ("!=", &["=="]),
    ("&&", &["||"]),
    ("||", &["&&"]),
    ("<", &["<="]),
    (">", &[">="]),
];

/// The first operator in `w` (an arrow such as `->` or `=>` is not a comparison).
fn find_operator(w: &str) -> Option<(usize, &'static str, &'static [&'static str])> {
    let mut best: Option<(usize, &str, &[&str])> = None;
    for (op, to) in OPERATORS {
        let mut from = 0;
        while let Some(i) = w[from..].find(op).map(|i| i + from) {
            let arrow = *op == ">" && i > 0 && matches!(w.as_bytes()[i - 1], b'-' | b'=');
            if !arrow {
                if best.is_none_or(|(b, bop, _)| i < b || (i == b && op.len() > bop.len())) {
                    best = Some((i, op, to));
                }
                break;
            }
            from = i + 1;
        }
    }
    best
}

/// Whether `core` is a number: digits with at most one decimal point.
fn is_number(core: &str) -> bool {
    let digits = core.bytes().filter(u8::is_ascii_digit).count();
    let points = core.bytes().filter(|&b| b == b'.').count();
    digits > 0 && points <= 1 && digits + points == core.len()
}

impl Rule {
    /// A word the rule applies to.
    #[cfg(test)]
    fn example(self) -> &'static str {
        match self {
            Rule::StripAccent => "también",
            Rule::DropInitialH => "hacer",
            Rule::DropInvertedMark => "¿Vienes?",
            Rule::SwapQuotes => "«hola»",
            Rule::PluralApostrophe => "apples",
            Rule::DropComma => "well,",
            Rule::CommaSplice => "done. Then",
            Rule::DropApostrophe => "don't",
            Rule::CaseStyle => "user_id",
            Rule::DropSemicolon => "x;",
            Rule::BracketMismatch => "f(x)",
            Rule::OffByOne => "10",
            Rule::OperatorSwap => "i<n",
            Rule::DecimalShift => "0.5",
            Rule::DigitChange => "1983",
            Rule::SigFigs => "3.14",
            Rule::ClauseLabel => "(a)",
            Rule::DropCaret => "x^2",
        }
    }

    fn from_name(name: &str) -> Option<Rule> {
        RULES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
    }

    /// Whether the rule applies to `word` (split as `pre`, `core`, `suf` by [`affixes`]),
    /// followed by `next`.
    fn applies(self, word: &str, (pre, core, suf): (&str, &str, &str), next: Option<&str>) -> bool {
        match self {
            Rule::StripAccent => word.chars().any(|c| unaccent(c).is_some()),
            Rule::DropInitialH => {
                let mut c = core.chars();
                matches!(c.next(), Some('h' | 'H')) && c.next().is_some_and(|v| "aeiouáéíóúAEIOU".contains(v))
            }
            Rule::DropInvertedMark => word.starts_with(['¿', '¡']),
            Rule::SwapQuotes => word.contains(['«', '»']),
            Rule::PluralApostrophe => {
                core.len() >= 4
                    && core.bytes().all(|b| b.is_ascii_lowercase())
                    && core.ends_with('s')
                    && !core.ends_with("ss")
                    && !core.ends_with("us")
                    && !core.ends_with("is")
            }
            Rule::DropComma => word.len() > 1 && word.ends_with(','),
            Rule::CommaSplice => {
                suf == "."
                    && core.chars().nth(1).is_some()
                    && case_of(core) != Case::Upper
                    && next.is_some_and(|n| {
                        let (npre, ncore, _) = affixes(n);
                        npre.is_empty() && case_of(ncore) == Case::Title && ncore != "I"
                    })
            }
            Rule::DropApostrophe => core.contains(['\'', '\u{2019}']) && !core.starts_with(['\'', '\u{2019}']),
            Rule::CaseStyle => snake(core) || camel(core),
            Rule::DropSemicolon => word.len() > 1 && word.ends_with(';'),
            Rule::BracketMismatch => word.contains(['(', ')', '[', ']', '{', '}']),
            Rule::OffByOne => {
                !core.is_empty() && core.len() <= 18 && core.bytes().all(|b| b.is_ascii_digit()) && pre != "."
            }
            Rule::OperatorSwap => find_operator(word).is_some(),
            Rule::DecimalShift => is_number(core) && !core.ends_with('.') && !pre.ends_with('.'),
            Rule::DigitChange => core.bytes().any(|b| b.is_ascii_digit()),
            Rule::SigFigs => is_number(core) && core.split_once('.').is_some_and(|(_, f)| !f.is_empty()),
            Rule::ClauseLabel => clause(word).is_some(),
            Rule::DropCaret => word.contains('^'),
        }
    }

    /// Writes word `i` (and the next one, for a rule that spans two) changed; returns how
    /// many words it used and how many it changed.
    fn apply(self, text: &str, toks: &[Tok], i: usize, rng: &mut Rng, out: &mut String) -> (usize, usize) {
        let word = &text[toks[i].start..toks[i].end];
        let (pre, core, suf) = affixes(word);
        match self {
            Rule::StripAccent => {
                let n = word.chars().filter(|c| unaccent(*c).is_some()).count();
                let k = rng.below(n);
                let mut seen = 0;
                for c in word.chars() {
                    match unaccent(c) {
                        Some(b) if seen == k => {
                            out.push(b);
                            seen += 1;
                        }
                        Some(_) => {
                            out.push(c);
                            seen += 1;
                        }
                        None => out.push(c),
                    }
                }
            }
            Rule::DropInitialH => {
                out.push_str(pre);
                let mut rest = core[1..].chars();
                if core.starts_with('H') {
                    out.extend(rest.next().into_iter().flat_map(char::to_uppercase));
                }
                out.push_str(rest.as_str());
                out.push_str(suf);
            }
            Rule::DropInvertedMark => {
                let mut c = word.chars();
                c.next();
                out.push_str(c.as_str());
            }
            Rule::SwapQuotes => out.extend(word.chars().map(|c| if matches!(c, '«' | '»') { '"' } else { c })),
            Rule::PluralApostrophe => {
                out.push_str(pre);
                out.push_str(&core[..core.len() - 1]);
                out.push_str("'s");
                out.push_str(suf);
            }
            Rule::DropComma => out.push_str(&word[..word.len() - 1]),
            Rule::DropSemicolon => out.push_str(&word[..word.len() - 1]),
            Rule::CommaSplice => {
                let next = toks[i + 1];
                out.push_str(&word[..word.len() - 1]);
                out.push(',');
                out.push_str(&text[next.ws..next.start]);
                let n = &text[next.start..next.end];
                let mut c = n.chars();
                out.extend(c.next().into_iter().flat_map(char::to_lowercase));
                out.push_str(c.as_str());
                return (2, 2);
            }
            Rule::DropApostrophe => {
                out.push_str(pre);
                let at = core.find(['\'', '\u{2019}']).unwrap_or(core.len());
                out.push_str(&core[..at]);
                out.push_str(core[at..].trim_start_matches(['\'', '\u{2019}']));
                out.push_str(suf);
            }
            Rule::CaseStyle => {
                out.push_str(pre);
                if snake(core) {
                    let mut up = false;
                    for c in core.chars() {
                        match c {
                            '_' => up = true,
                            c if up => {
                                out.extend(c.to_uppercase());
                                up = false;
                            }
                            c => out.push(c),
                        }
                    }
                } else {
                    for c in core.chars() {
                        if c.is_uppercase() {
                            out.push('_');
                            out.extend(c.to_lowercase());
                        } else {
                            out.push(c);
                        }
                    }
                }
                out.push_str(suf);
            }
            Rule::BracketMismatch => {
                let n = word.chars().filter(|c| "()[]{}".contains(*c)).count();
                let k = rng.below(n);
                let mut seen = 0;
                for c in word.chars() {
                    if !"()[]{}".contains(c) {
                        out.push(c);
                        continue;
                    }
                    if seen == k {
                        let (others, closing): (&[char], bool) = match c {
                            '(' => (&['[', '{'], false),
                            '[' => (&['(', '{'], false),
                            '{' => (&['(', '['], false),
                            ')' => (&[']', '}'], true),
                            ']' => (&[')', '}'], true),
                            _ => (&[')', ']'], true),
                        };
                        // A closing bracket is forgotten as often as it is mistyped.
                        if !(closing && rng.below(2) == 0) {
                            out.push(*rng.pick(others));
                        }
                    } else {
                        out.push(c);
                    }
                    seen += 1;
                }
            }
            Rule::OffByOne => {
                let n: u64 = core.parse().unwrap_or(0);
                let m = if n == 0 || rng.below(2) == 0 { n + 1 } else { n - 1 };
                out.push_str(pre);
                // Keep the width of a number written with leading zeros (`007`).
                let width = if core.starts_with('0') { core.len() } else { 0 };
                let _ = write!(out, "{m:0width$}");
                out.push_str(suf);
            }
            Rule::OperatorSwap => {
                if let Some((at, op, to)) = find_operator(word) {
                    out.push_str(&word[..at]);
                    out.push_str(to[rng.below(to.len())]);
                    out.push_str(&word[at + op.len()..]);
                }
            }
            Rule::DecimalShift => {
                out.push_str(pre);
                decimal_shift(core, rng, out);
                out.push_str(suf);
            }
            Rule::DigitChange => {
                let n = core.bytes().filter(u8::is_ascii_digit).count();
                let k = rng.below(n);
                out.push_str(pre);
                let mut seen = 0;
                for c in core.chars() {
                    if c.is_ascii_digit() {
                        if seen == k {
                            let d = c as u8 - b'0';
                            out.push(char::from(b'0' + ((d + 1 + rng.below(9) as u8) % 10)));
                        } else {
                            out.push(c);
                        }
                        seen += 1;
                    } else {
                        out.push(c);
                    }
                }
                out.push_str(suf);
            }
            Rule::SigFigs => {
                out.push_str(pre);
                let frac = core.split_once('.').map_or(0, |(_, f)| f.len());
                if rng.below(2) == 0 && frac > 1 {
                    out.push_str(&core[..core.len() - 1]);
                } else if rng.below(2) == 0 && frac == 1 {
                    out.push_str(&core[..core.len() - 2]);
                } else {
                    out.push_str(core);
                    out.push('0');
                }
                out.push_str(suf);
            }
            Rule::ClauseLabel => {
                if let Some((open, label, rest)) = clause(word) {
                    out.push_str(open);
                    if let Some(r) = ROMAN.iter().position(|r| *r == label) {
                        out.push_str(ROMAN[(r + 1) % ROMAN.len()]);
                    } else if let Ok(n) = label.parse::<u64>() {
                        let _ = write!(out, "{}", n + 1);
                    } else {
                        let c = label.as_bytes()[0];
                        let next = match c {
                            b'z' => b'y',
                            b'Z' => b'Y',
                            c => c + 1,
                        };
                        out.push(char::from(next));
                    }
                    out.push_str(rest);
                }
            }
            Rule::DropCaret => {
                let at = word.find('^').unwrap_or(0);
                out.push_str(&word[..at]);
                out.push_str(&word[at + 1..]);
            }
        }
        (1, 1)
    }
}

/// `snake_case`: lower-case letters and digits with an underscore between two of them.
fn snake(core: &str) -> bool {
    core.contains('_')
        && !core.starts_with('_')
        && !core.ends_with('_')
        && !core.contains("__")
        && core.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && core.bytes().any(|b| b.is_ascii_lowercase())
}

/// `camelCase`: starts with a lower-case letter, has an upper-case one later, and only
/// ASCII letters and digits.
fn camel(core: &str) -> bool {
    core.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && core.bytes().any(|b| b.is_ascii_uppercase())
        && core.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A clause label `(a)`, `(iv)`, `(12)`, `a)`: the opening part, the label and the rest.
fn clause(word: &str) -> Option<(&str, &str, &str)> {
    let (open, body) = match word.strip_prefix('(') {
        Some(b) => ("(", b),
        None => ("", word),
    };
    let close = body.find(')')?;
    let (label, rest) = (&body[..close], &body[close..]);
    if rest.len() > 2 {
        return None;
    }
    let ok = ROMAN.contains(&label)
        || (label.len() == 1 && label.as_bytes()[0].is_ascii_alphabetic())
        || (!label.is_empty() && label.len() <= 3 && label.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some((open, label, rest))
}

/// Writes `core` (a number) with its decimal point moved, dropped or added.
fn decimal_shift(core: &str, rng: &mut Rng, out: &mut String) {
    let (int, frac) = core.split_once('.').unwrap_or((core, ""));
    let has_point = core.contains('.');
    // A leading zero dropped: `0.5` → `.5`, the error that hides a decimal point.
    if int == "0" && has_point && rng.below(2) == 0 {
        out.push('.');
        out.push_str(frac);
        return;
    }
    // A trailing zero added: `5` → `5.0`, read as 50.
    if !has_point && rng.below(2) == 0 {
        out.push_str(core);
        out.push_str(".0");
        return;
    }
    // Otherwise the point moves: dropped (`2.5` → `25`), one place left (`2.5` → `0.25`)
    // or one place right (`2.55` → `25.5`). Rare enough (a chosen place) to allocate.
    let mut digits = format!("{int}{frac}");
    let p = int.len();
    let q = match (has_point, rng.below(3)) {
        (true, 0) => digits.len(),
        (true, 2) if p < digits.len() => p + 1,
        (true, 2) => digits.len(),
        _ if p == 0 => {
            digits.insert(0, '0');
            0
        }
        _ => p - 1,
    };
    let start = out.len();
    let whole = digits[..q].trim_start_matches('0');
    out.push_str(if whole.is_empty() { "0" } else { whole });
    if q < digits.len() {
        out.push('.');
        out.push_str(&digits[q..]);
    }
    if out[start..] == *core {
        out.push_str(if q < digits.len() { "0" } else { ".0" });
    }
}

#[cfg(test)]
mod tests {
    use super::super::changed_words;
    use super::*;

    fn noiser(noiser: &'static str, name: &str, categories: &[&str], rate: f64) -> PatternNoiser {
        let set = PatternSet::parse(&built_in(noiser, name).unwrap()).unwrap();
        let cats: Vec<String> = categories.iter().map(|c| (*c).to_owned()).collect();
        PatternNoiser::new(noiser, String::new(), &set, &cats, rate)
    }

    fn run(n: &PatternNoiser, text: &str, seed: u64) -> (String, usize) {
        let mut out = String::new();
        let c = n.apply(text, &mut Rng::new(seed), &mut Scratch::default(), &mut out);
        (out, c)
    }

    /// Every output `n` gives for `text` over many seeds.
    fn outputs(n: &PatternNoiser, text: &str) -> Vec<String> {
        let mut all: Vec<String> = (0..400).map(|s| run(n, text, s).0).collect();
        all.sort();
        all.dedup();
        all
    }

    #[test]
    fn every_built_in_table_parses_and_has_what_the_readme_lists() {
        let tables: &[(&str, &[&str], &[&str])] = &[
            ("language", BUILT_IN_LANGUAGES, &["grammar", "spelling", "punctuation"]),
            ("domain", &["programming"], &["syntax", "naming", "logic"]),
            ("domain", &["medical"], &["terminology", "abbreviations", "dosage"]),
            ("domain", &["legal"], &["terminology", "formatting", "references"]),
            ("domain", &["scientific"], &["notation", "formatting", "terminology"]),
            ("style", BUILT_IN_STYLES, &["lexical", "phrasing"]),
            ("synonyms", &["en"], &["synonyms"]),
        ];
        for (noiser, names, cats) in tables {
            for name in *names {
                let text = built_in(noiser, name).unwrap();
                let set = PatternSet::parse(&text).unwrap_or_else(|e| panic!("{noiser} {name}: {e:#?}"));
                assert_eq!(set.categories().collect::<Vec<_>>(), *cats, "{noiser} {name}");
                assert!(set.len() > 10, "{noiser} {name}");
            }
        }
        assert_eq!(BUILT_IN_DOMAINS.len(), 4);
        assert!(built_in("domain", "cooking").is_none());
    }

    #[test]
    fn replacements_follow_the_case_and_keep_punctuation() {
        let n = noiser("language", "en", &["spelling"], 1.0);
        assert_eq!(run(&n, "I receive it.", 1).0, "I recieve it.");
        assert_eq!(run(&n, "Receive, RECEIVE", 1).0, "Recieve, RECIEVE");
        // Mixed case is not a form of the lower-case pattern.
        assert_eq!(run(&n, "ReCeive", 1).0, "ReCeive");
        let t = noiser("style", "casual", &[], 1.0);
        assert_eq!(outputs(&t, "Thank you, I do not know."), ["Thanks, dunno.", "Thx, dunno."]);
        // Patterns with capitals match exactly and are written as they are.
        let legal = noiser("domain", "legal", &["terminology"], 1.0);
        assert_eq!(run(&legal, "the Supreme Court held", 1).0, "the Superior Court held");
        assert_eq!(run(&legal, "the supreme court held", 1).0, "the supreme court held");
    }

    #[test]
    fn phrases_match_across_words_and_count_what_changed() {
        let n = noiser("language", "en", &["grammar"], 1.0);
        let (out, c) = run(&n, "He doesn't know.", 3);
        assert_eq!(out, "He don't know.");
        assert_eq!(c, 1);
        assert_eq!(c, changed_words("He doesn't know.", &out));
        let (out, c) = run(&n, "We ate a lot today", 3);
        assert_eq!((out.as_str(), c), ("We ate alot today", 2));
        // A comma between the words of a phrase stops the match.
        assert_eq!(run(&n, "he, doesn't", 3).0, "he, doesn't");
    }

    #[test]
    fn rules_do_what_they_say() {
        // (noiser, table, categories, text, every output it can give)
        type Case<'a> = (&'a str, &'a str, &'a [&'a str], &'a str, &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            ("language", "es", &["spelling"], "también", &["tambien"]),
            ("language", "es", &["spelling"], "Hola", &["Ola"]),
            ("language", "es", &["punctuation"], "¿Qué?", &["Qué?"]),
            ("language", "es", &["punctuation"], "«hola»", &["\"hola\""]),
            ("language", "en", &["punctuation"], "The end. Then", &["The end, then"]),
            ("language", "en", &["punctuation"], "apples", &["apple's"]),
            ("domain", "programming", &["naming"], "user_name", &["userName"]),
            ("domain", "programming", &["naming"], "userName", &["user_name"]),
            ("domain", "programming", &["syntax"], "x;", &["x"]),
            ("domain", "programming", &["syntax"], "f(x)", &["f[x)", "f{x)", "f(x", "f(x]", "f(x}"]),
            ("domain", "programming", &["logic"], "i<=n", &["i<n"]),
            ("domain", "programming", &["logic"], "i->next", &["i->next"]),
            ("domain", "programming", &["logic"], "10", &["11", "9"]),
            ("domain", "programming", &["logic"], "007", &["006", "008"]),
            ("domain", "medical", &["dosage"], "0.5", &[".5", "0.05", "5"]),
            ("domain", "medical", &["dosage"], "5", &["0.5", "5.0"]),
            ("domain", "medical", &["dosage"], "2.5", &["0.25", "25"]),
            ("domain", "legal", &["formatting"], "(a)", &["(b)"]),
            ("domain", "legal", &["formatting"], "(iv),", &["(v),"]),
            ("domain", "scientific", &["notation"], "3.14", &["3.1", "3.140"]),
            ("domain", "scientific", &["notation"], "2.5", &["2", "2.50"]),
            ("domain", "scientific", &["notation"], "(0.25),", &["(0.2),", "(0.250),"]),
            // A number written without its leading zero is left alone by the rules
            // that move decimal points (its point reads as punctuation).
            ("domain", "medical", &["dosage"], ".5", &[".5"]),
            ("domain", "scientific", &["formatting"], "x^2", &["x2"]),
        ];
        for (noiser_name, name, cats, text, want) in cases {
            let n = noiser(noiser_name, name, cats, 1.0);
            let got = outputs(&n, text);
            let mut want: Vec<String> = want.iter().map(|w| (*w).to_owned()).collect();
            want.sort();
            assert_eq!(got, want, "{noiser_name} {name} {cats:?} on {text:?}");
        }
        let legal = noiser("domain", "legal", &["references"], 1.0);
        for out in outputs(&legal, "42 U.S.C. § 1983") {
            // Both numbers change, one digit each; the words between stay.
            assert_eq!(changed_words("42 U.S.C. § 1983", &out), 2, "{out}");
            assert!(out.contains(" U.S.C. § "), "{out}");
        }
    }

    #[test]
    fn rate_zero_changes_nothing_and_unicode_is_safe() {
        let n = noiser("language", "es", &[], 0.0);
        assert_eq!(run(&n, "¿Qué hay? «Él» está también", 5), ("¿Qué hay? «Él» está también".to_owned(), 0));
        let all = noiser("language", "es", &[], 1.0);
        for seed in 0..300 {
            let text = "¿Qué hay? «Él» está aquí, también ÑANDÚ 日本 🙂";
            let (out, c) = run(&all, text, seed);
            assert_eq!(c, changed_words(text, &out), "{out}");
        }
    }

    #[test]
    fn bad_lines_say_where_and_why() {
        let text =
            "reveive -> receive\n[spelling]\nok -> fine\nnope\n@strip_acent\n  a->b\nsame -> same\nx -> \n[bad name]\n";
        let errors = PatternSet::parse(text).unwrap_err();
        let got: Vec<String> = errors.iter().map(|e| format!("{}:{} {}", e.line, e.column, e.message)).collect();
        assert_eq!(
            got,
            [
                "1:1 a pattern before any `[category]` line",
                "4:1 expected `from -> to`, `@rule` or `[category]`",
                "5:1 unknown rule `@strip_acent` (did you mean `@strip_accent`?)",
                "6:3 write the arrow with a space on each side: `from -> to`",
                "7:9 `same` is what the pattern matches: a choice must change the text",
                "8:1 nothing after `->` (write the words it becomes)",
                "9:1 a category name is one word, such as `[spelling]`",
            ]
        );
    }
}
