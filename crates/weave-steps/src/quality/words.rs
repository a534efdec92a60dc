//! Words, sentences and lines as datatrove splits English text for its quality filters.
//!
//! datatrove's English word tokenizer is spaCy's blank English pipeline (`spacy.blank("en")`,
//! which needs no model download), with whitespace tokens left out. These rules follow what
//! that tokenizer does to the text web pages hold: text splits at whitespace; each piece
//! loses its leading punctuation (prefixes) and trailing punctuation (suffixes) one at a
//! time, unless what is left is a known abbreviation (`Dr.`, `e.g.`) or contraction
//! (`don't` is `do` + `n't`, and so is `dont`: spaCy splits them without the apostrophe
//! too, `id` as `i` + `d`); then hyphens, ellipses and a few other marks inside a word
//! split it (infixes). A sentence ends at a `.`, `!` or `?` token (spaCy's sentencizer),
//! so `Dr. Smith` stays one sentence. Where these rules and spaCy's differ (emoticons,
//! units after numbers, rarer abbreviations), README.md's `quality` section says so.

use std::sync::LazyLock;

use regex::Regex;

/// The characters datatrove counts as punctuation (`PUNCTUATION_SET`): a word made of these
/// only is a symbol, not a word, for the Gopher quality filter. Every ASCII punctuation mark
/// and symbol, the C0 and C1 control characters but tab and line feed, a few CJK and
/// typographic marks, and every sentence terminator ([`is_terminal`]).
fn is_punctuation(c: char) -> bool {
    match c {
        '\t' | '\n' => false,
        c if c.is_ascii_punctuation() => true,
        '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        c if c.is_ascii() => false,
        '—' | '”' | '％' | '１' | '〈' | '、' | '━' | '【' | '「' | '」' | '，' | '】' | '；' | '“' | '《' | '„'
        | '’' | '∶' | '´' | '．' | '（' | '–' | '？' | '！' | '：' | '～' | '«' | '〉' | '》' | '）' | '。' | '…'
        | '►' | '»' => true,
        c => is_terminal(c),
    }
}

/// Unicode's sentence terminators, as datatrove lists them (`TERMINAL_PUNCTUATION`): the
/// `Sentence_Terminal` property of the Unicode version it was written against, with three
/// Khmer signs it adds.
pub(crate) fn is_terminal(c: char) -> bool {
    static NEWER: &[char] = &[
        '\u{2024}',
        '\u{2cf9}',
        '\u{2cfa}',
        '\u{2cfb}',
        '\u{2e60}',
        '\u{2e61}',
        '\u{fe12}',
        '\u{fe15}',
        '\u{fe16}',
        '\u{1b4e}',
        '\u{1b4f}',
        '\u{1b7f}',
        '\u{113d4}',
        '\u{113d5}',
        '\u{16d6e}',
        '\u{16d6f}',
    ];
    static TERMINAL: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\p{Sentence_Terminal}$").expect("a valid pattern"));
    match c {
        '.' | '!' | '?' => true,
        c if c.is_ascii() => false,
        '\u{17d6}' | '\u{17d9}' | '\u{17da}' => true,
        c if NEWER.contains(&c) => false,
        c => TERMINAL.is_match(c.encode_utf8(&mut [0; 4])),
    }
}

/// Whether `c` is whitespace as Python's `str.isspace` has it (Rust's `char::is_whitespace`
/// leaves out the four information separators).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub(crate) fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// The lines of `s` as Python's `str.splitlines()` makes them: split at `\n`, `\r`, `\r\n`,
/// and the other line boundaries; a final line break does not start an empty line.
pub(crate) fn splitlines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let brk = matches!(c, '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}')
            || c == '\u{2028}'
            || c == '\u{2029}';
        if !brk {
            continue;
        }
        lines.push(&s[start..i]);
        let mut end = i + c.len_utf8();
        if c == '\r' && it.peek().is_some_and(|&(_, n)| n == '\n') {
            it.next();
            end += 1;
        }
        start = end;
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// The length of `s` in characters, as Python's `len` counts a string.
pub(crate) fn chars(s: &str) -> usize {
    if s.is_ascii() { s.len() } else { s.chars().count() }
}

/// Abbreviations that keep their period (the tokenizer's exceptions); one-letter ones are
/// handled apart: a lowercase letter and a period is one word.
const ABBREVIATIONS: &[&str] = &[
    "Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Mt.", "Jr.", "Prof.", "Gen.", "Gov.", "Sen.", "Rep.", "Rev.", "e.g.", "i.e.",
    "a.m.", "p.m.", "vs.", "v.", "Inc.", "Ltd.", "Co.", "Corp.", "Ph.D.", "N.Y.", "Jan.", "Feb.", "Mar.", "Apr.",
    "Jun.", "Jul.", "Aug.", "Sep.", "Sept.", "Oct.", "Nov.", "Dec.", "Ala.", "Ariz.", "Calif.", "Conn.", "Fla.", "Ga.",
    "Ill.", "Kan.", "Ky.", "La.", "Md.", "Mass.", "Mich.", "Minn.", "Miss.", "Mo.", "Neb.", "Nev.", "N.J.", "N.M.",
    "N.C.", "N.D.", "Okla.", "Ore.", "Pa.", "S.C.", "Tenn.", "Va.", "Wash.", "Wis.", "D.C.", "Ak.", "Adm.", "Ark.",
    "Bros.", "Colo.", "Del.", "E.G.", "E.g.", "I.E.", "I.e.", "Ia.", "Id.", "Ind.", "Kans.", "Messrs.", "Mont.",
    "N.H.", "Nebr.", "co.", "v.s.", "._.", "and/or",
];

/// Emoticons, kept whole although made of punctuation.
const EMOTICONS: &[&str] = &[
    ":)", ":(", ":-)", ":-(", ";)", ";-)", ":D", ":-D", ":P", ":-P", ":p", ":-p", "xD", ":/", "(:", "):", "=)", "=(",
    ":'(", ":')", "^_^", "-_-", "o_O", "O_o", "<3", ":o", ":O", ":]", ":[", ";(",
];

/// Units that split off a number before them (`35km` is `35` + `km`).
const UNITS: &[&str] = &[
    "km", "m", "dm", "cm", "mm", "ha", "nm", "yd", "in", "ft", "kg", "g", "mg", "t", "lb", "oz", "kmh", "mph", "hPa",
    "Pa", "mbar", "mb", "MB", "kb", "KB", "gb", "GB", "tb", "TB", "T", "G", "M", "K",
];

/// Whether `c` is a symbol such as `°`, `©` or an emoji (general category So), which
/// splits off whatever it touches.
fn is_icon(c: char) -> bool {
    static ICON: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\p{So}$").expect("a valid pattern"));
    !c.is_ascii() && ICON.is_match(c.encode_utf8(&mut [0; 4]))
}

/// The pronouns and question words that contractions attach to.
const W: &[&str] = &[
    "he", "how", "i", "it", "she", "that", "there", "these", "they", "this", "those", "we", "what", "when", "where",
    "who", "why", "you",
];
/// The verbs whose `n't` (or bare `nt`) splits off: `can't` is `ca` + `n't`.
const NT: &[&str] = &[
    "ai", "are", "ca", "could", "dare", "did", "do", "does", "had", "has", "have", "is", "may", "might", "must",
    "need", "ought", "sha", "should", "was", "were", "wo", "would",
];
/// Those of [`NT`] that also take `'ve` after `n't` (`couldn't've`).
const NT_VE: &[&str] = &[
    "ca", "could", "did", "do", "does", "had", "may", "might", "must", "need", "ought", "sha", "should", "wo", "would",
];
/// The words that take `'ve` (`could've`, `they've`).
const VE: &[&str] = &[
    "could", "how", "i", "might", "must", "not", "should", "there", "these", "they", "those", "we", "what", "when",
    "where", "who", "why", "would", "you",
];
const RE: &[&str] = &["how", "there", "these", "they", "those", "we", "what", "when", "where", "who", "why", "you"];
const S: &[&str] = &["he", "how", "it", "let", "she", "that", "there", "this", "what", "when", "where", "who", "why"];
/// Without an apostrophe, the words that would read as another word are left out
/// (`shed`, `hell`, `ill`, `shell`, `well`, `were`, `its`, `lets`).
const D_BARE: &[&str] = &[
    "he", "how", "i", "it", "that", "there", "these", "they", "this", "those", "we", "what", "when", "where", "who",
    "why", "you",
];
const LL_BARE: &[&str] =
    &["how", "it", "that", "there", "these", "they", "this", "those", "what", "when", "where", "who", "why", "you"];
const RE_BARE: &[&str] = &["how", "there", "these", "they", "those", "what", "when", "where", "why", "you"];
const S_BARE: &[&str] = &["he", "how", "she", "that", "there", "this", "what", "when", "where", "who", "why"];

/// The contractions spaCy's English exceptions split: the parts after the stem (`{a}`
/// stands for the apostrophe, straight or curly) and the stems that take them, longest
/// endings first.
const CONTRACTIONS: &[(&[&str], &[&str])] = &[
    (&["n{a}t", "{a}ve"], NT_VE),
    (&["{a}d", "{a}ve"], W),
    (&["{a}ll", "{a}ve"], W),
    (&["nt", "ve"], NT_VE),
    (&["ll", "ve"], W),
    (&["d", "ve"], W),
    (&["{a}m", "a"], &["i"]),
    (&["m", "a"], &["i"]),
    (&["n{a}t"], NT),
    (&["{a}ll"], W),
    (&["{a}re"], RE),
    (&["{a}ve"], VE),
    (&["{a}d"], W),
    (&["{a}s"], S),
    (&["{a}m"], &["i"]),
    (&["nt"], NT),
    (&["ll"], LL_BARE),
    (&["re"], RE_BARE),
    (&["ve"], VE),
    (&["d"], D_BARE),
    (&["s"], S_BARE),
    (&["m"], &["i"]),
];

/// Whole words that split: `cannot` is `can` + `not`, `gonna` is `gon` + `na`.
const SPLIT_WORDS: &[(&str, usize)] = &[("cannot", 3), ("gonna", 3), ("gotta", 3), ("yall", 1), ("y'all", 2)];

/// [`CONTRACTIONS`] with the apostrophe written in, straight then curly: made once, since
/// every word is looked up.
static CONTRACTION_TABLE: LazyLock<Vec<(Vec<String>, &'static [&'static str])>> = LazyLock::new(|| {
    let mut table = Vec::new();
    for apostrophe in ["'", "\u{2019}"] {
        for &(tails, stems) in CONTRACTIONS {
            if apostrophe != "'" && !tails.iter().any(|t| t.contains("{a}")) {
                continue;
            }
            table.push((tails.iter().map(|t| t.replace("{a}", apostrophe)).collect(), stems));
        }
    }
    table
});

/// How a contraction splits `s`, as the lengths of its parts in bytes.
fn contraction(s: &str) -> Option<[usize; 3]> {
    for &(word, at) in SPLIT_WORDS {
        if lower_or_title(s, word) {
            return Some([at, s.len() - at, 0]);
        }
    }
    // Every contraction is letters and apostrophes, at most 10 bytes, and ends in one of
    // the letters its endings end in.
    if s.len() > 12
        || !s.ends_with(['t', 'T', 'e', 'd', 'l', 's', 'm', 'a'])
        || !s.bytes().all(|b| b.is_ascii_alphabetic() || b == b'\'' || b >= 0x80)
    {
        return None;
    }
    'patterns: for (tails, stems) in CONTRACTION_TABLE.iter() {
        let mut rest = s;
        let mut lens = [0usize; 3];
        for (i, tail) in tails.iter().enumerate().rev() {
            match rest.strip_suffix(tail.as_str()) {
                Some(r) => {
                    lens[i + 1] = tail.len();
                    rest = r;
                }
                None => continue 'patterns,
            }
        }
        if stems.iter().any(|w| lower_or_title(rest, w)) {
            lens[0] = rest.len();
            return Some(lens);
        }
    }
    None
}

/// The exceptions kept whole: [`ABBREVIATIONS`] and [`EMOTICONS`].
static WHOLE: LazyLock<std::collections::HashSet<&'static str>> =
    LazyLock::new(|| ABBREVIATIONS.iter().chain(EMOTICONS).copied().collect());

/// How an exception splits `s`, as the lengths of its parts in bytes (0 for none);
/// `None` when `s` is not one.
fn special(s: &str) -> Option<[usize; 3]> {
    if WHOLE.contains(s) {
        return Some([s.len(), 0, 0]);
    }
    // `10am`, `5pm`: the hour and its period.
    for period in ["am", "pm", "a.m.", "p.m."] {
        if let Some(h) = s.strip_suffix(period)
            && h.bytes().all(|b| b.is_ascii_digit())
            && h.parse::<u8>().is_ok_and(|h| (1..=12).contains(&h))
            && !h.starts_with('0')
        {
            return Some([h.len(), period.len(), 0]);
        }
    }
    if is_letter_abbreviation(s) {
        return Some([2, 0, 0]);
    }
    contraction(s)
}

/// A lowercase letter and a period (`d.`): one word.
fn is_letter_abbreviation(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 2 && b[0].is_ascii_lowercase() && b[1] == b'.'
}

/// Whether `s` is `word` in lowercase or with a capital first letter (`I` for `i`).
fn lower_or_title(s: &str, word: &str) -> bool {
    s == word
        || (s.len() == word.len() && s.as_bytes()[0] == word.as_bytes()[0].to_ascii_uppercase() && s[1..] == word[1..])
}

/// The length in bytes of the prefix at the start of `s` (0 for none).
fn prefix_len(s: &str) -> usize {
    let Some(c) = s.chars().next() else { return 0 };
    if c == '.' && s.starts_with("..") {
        return s.bytes().take_while(|&b| b == b'.').count();
    }
    let one = matches!(
        c,
        '§' | '%'
            | '='
            | '—'
            | '–'
            | ','
            | ':'
            | ';'
            | '!'
            | '?'
            | '¿'
            | '¡'
            | '('
            | ')'
            | '['
            | ']'
            | '{'
            | '}'
            | '<'
            | '>'
            | '_'
            | '#'
            | '*'
            | '&'
            | '\''
            | '"'
            | '”'
            | '“'
            | '`'
            | '‘'
            | '´'
            | '’'
            | '‚'
            | '„'
            | '«'
            | '»'
            | '$'
            | '£'
            | '€'
            | '¥'
            | '…'
    ) || (c == '+' && !s[1..].starts_with(|d: char| d.is_ascii_digit()))
        || is_icon(c);
    if one { c.len_utf8() } else { 0 }
}

/// The length in bytes of the suffix at the end of `s` (0 for none): the longest one.
fn suffix_len(s: &str) -> usize {
    let Some(last) = s.chars().next_back() else { return 0 };
    let before = &s[..s.len() - last.len_utf8()];
    if last == '.' && before.ends_with('.') {
        return s.len() - s.trim_end_matches('.').len();
    }
    for two in ["'s", "'S", "\u{2019}s", "\u{2019}S"] {
        if s.len() > two.len() && s.ends_with(two) {
            return two.len();
        }
    }
    let prev = before.chars().next_back();
    let after_digit = prev.is_some_and(|p| p.is_ascii_digit());
    if last.is_ascii_alphabetic() {
        // The longest unit after a digit.
        let unit = UNITS
            .iter()
            .filter(|u| {
                s.len() > u.len() && s.ends_with(*u) && s[..s.len() - u.len()].ends_with(|d: char| d.is_ascii_digit())
            })
            .map(|u| u.len())
            .max();
        if let Some(n) = unit {
            return n;
        }
    }
    if last == '.'
        && matches!(prev, Some('F' | 'f' | 'C' | 'c' | 'K' | 'k'))
        && before[..before.len() - 1].ends_with('°')
    {
        return 1;
    }
    if is_icon(last) {
        return last.len_utf8();
    }
    let one = match last {
        '.' => {
            prev.is_some_and(|p| {
                p.is_lowercase() || p.is_ascii_digit() || matches!(p, '%' | '²' | '-' | '+') || is_punctuation(p)
            }) || {
                let mut up = before.chars().rev();
                up.next().is_some_and(char::is_uppercase) && up.next().is_some_and(char::is_uppercase)
            }
        }
        '$' | '£' | '€' | '¥' | '+' => after_digit,
        '%' | '—' | '–' | ',' | ':' | ';' | '!' | '?' | '¿' | '¡' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>'
        | '_' | '#' | '*' | '&' | '\'' | '"' | '”' | '“' | '`' | '‘' | '´' | '’' | '‚' | '„' | '«' | '»' | '…' => {
            true
        }
        _ => false,
    };
    if one { last.len_utf8() } else { 0 }
}

/// Whether `s` reads as a web address (kept whole).
fn is_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("www.")) && s.len() > 8
}

/// Pushes the infix-split parts of `s`.
fn push_infixed<'a>(s: &'a str, out: &mut Vec<&'a str>) {
    // Most words hold no character an infix starts with: pushed whole, with no work.
    if !s.bytes().any(|b| {
        matches!(b, b'.' | b'-' | b'+' | b'*' | b'^' | b',' | b':' | b'<' | b'>' | b'=' | b'/' | b'~') || b >= 0x80
    }) {
        out.push(s);
        return;
    }
    let cs: Vec<(usize, char)> = s.char_indices().collect();
    let mut start = 0;
    let mut i = 0;
    while i < cs.len() {
        let (at, c) = cs[i];
        let prev = if i > 0 { Some(cs[i - 1].1) } else { None };
        // The length in characters of an infix starting here, 0 for none.
        let mut len = 0;
        if c == '.' && cs.get(i + 1).is_some_and(|&(_, n)| n == '.') {
            len = cs[i..].iter().take_while(|&&(_, n)| n == '.').count();
        } else if c == '…' || is_icon(c) {
            len = 1;
        } else if let Some(p) = prev {
            let next = cs.get(i + 1).map(|&(_, n)| n);
            let alpha_next = next.is_some_and(char::is_alphabetic);
            let alnum_prev = p.is_alphabetic() || p.is_ascii_digit();
            // A mark between two digits (`3-4`), a period between a lowercase letter and an
            // uppercase one (`home.Then`), a comma between letters, or `:<>=/` after a
            // letter or digit and before a letter.
            let one = (matches!(c, '+' | '-' | '*' | '^')
                && p.is_ascii_digit()
                && next.is_some_and(|n| n.is_ascii_digit() || n == '-'))
                || (c == '.'
                    && (p.is_lowercase() || is_quote(p))
                    && next.is_some_and(|n| n.is_uppercase() || is_quote(n)))
                || (c == ',' && p.is_alphabetic() && alpha_next)
                || (alnum_prev && matches!(c, ':' | '<' | '>' | '=' | '/') && alpha_next);
            if one {
                len = 1;
            } else if alnum_prev && matches!(c, '-' | '–' | '—' | '~') {
                // A hyphen or a run of them (`--`, `---`) between a letter or digit and a letter.
                let run = if c == '-' { cs[i..].iter().take_while(|&&(_, n)| n == '-').count().min(3) } else { 1 };
                if cs.get(i + run).is_some_and(|&(_, n)| n.is_alphabetic()) {
                    len = run;
                }
            }
        }
        if len == 0 {
            i += 1;
            continue;
        }
        if at > start {
            out.push(&s[start..at]);
        }
        let end = cs.get(i + len).map_or(s.len(), |&(e, _)| e);
        out.push(&s[at..end]);
        start = end;
        i += len;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
}

fn is_quote(c: char) -> bool {
    matches!(c, '\'' | '"' | '”' | '“' | '`' | '‘' | '´' | '’' | '‚' | '„' | '«' | '»')
}

/// Pushes the words of one whitespace-free piece of text.
fn push_piece<'a>(piece: &'a str, out: &mut Vec<&'a str>) {
    let first = out.len();
    split_piece(piece, out);
    // An emoticon or a letter and its period split by the affix rules (`yes:)` is `yes`,
    // `:`, `)`; `id.` is `i`, `d`, `.`) is one word again, as spaCy's matcher of special
    // cases makes it.
    let mut i = first;
    while i + 1 < out.len() {
        let merged = (2..=3).filter(|k| i + k <= out.len()).find_map(|k| {
            let start = out[i].as_ptr() as usize - piece.as_ptr() as usize;
            let last = out[i + k - 1];
            let end = last.as_ptr() as usize - piece.as_ptr() as usize + last.len();
            let w = &piece[start..end];
            (EMOTICONS.contains(&w) || is_letter_abbreviation(w)).then_some((k, w))
        });
        if let Some((k, w)) = merged {
            out.splice(i..i + k, [w]);
        }
        i += 1;
    }
}

/// Pushes the words of `piece`: prefixes, exceptions, infixes and suffixes.
fn split_piece<'a>(piece: &'a str, out: &mut Vec<&'a str>) {
    let mut s = piece;
    let mut suffixes: Vec<&'a str> = Vec::new();
    loop {
        if s.is_empty() || special(s).is_some() {
            break;
        }
        let pre = prefix_len(s);
        if pre > 0 && pre < s.len() && special(&s[pre..]).is_some() {
            out.push(&s[..pre]);
            s = &s[pre..];
            break;
        }
        let suf = suffix_len(&s[pre..]);
        if suf > 0 && suf < s.len() && special(&s[..s.len() - suf]).is_some() {
            suffixes.push(&s[s.len() - suf..]);
            s = &s[..s.len() - suf];
            break;
        }
        if pre > 0 && suf > 0 && pre + suf <= s.len() {
            out.push(&s[..pre]);
            suffixes.push(&s[s.len() - suf..]);
            s = &s[pre..s.len() - suf];
        } else if pre > 0 {
            out.push(&s[..pre]);
            s = &s[pre..];
        } else if suf > 0 {
            suffixes.push(&s[s.len() - suf..]);
            s = &s[..s.len() - suf];
        } else {
            break;
        }
    }
    if !s.is_empty() {
        match special(s) {
            Some(parts) => {
                let mut at = 0;
                for n in parts.into_iter().filter(|&n| n > 0) {
                    out.push(&s[at..at + n]);
                    at += n;
                }
            }
            None if is_url(s) => out.push(s),
            None => push_infixed(s, out),
        }
    }
    out.extend(suffixes.into_iter().rev());
}

/// The words of `text` (punctuation marks are words of their own), into `out`.
pub(crate) fn words<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    out.clear();
    for piece in text.split(is_space).filter(|p| !p.is_empty()) {
        push_piece(piece, out);
    }
}

/// Whether every character of a word is Unicode punctuation (spaCy's `is_punct`).
fn all_punctuation(w: &str) -> bool {
    static PUNCT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\p{P}+$").expect("a valid pattern"));
    if w.is_ascii() {
        w.bytes().all(|b| {
            b.is_ascii_punctuation() && !matches!(b, b'$' | b'+' | b'<' | b'=' | b'>' | b'^' | b'`' | b'|' | b'~')
        })
    } else {
        PUNCT.is_match(w)
    }
}

/// The number of sentences in `words` (one line's), as spaCy's sentencizer counts them: a
/// sentence ends at a word that is one sentence terminator, and the next begins at the
/// first word after it that is not punctuation. At least one.
pub(crate) fn sentences(words: &[&str]) -> usize {
    let mut n = 1;
    let mut seen_end = false;
    for (i, w) in words.iter().enumerate() {
        let mut cs = w.chars();
        let ends = matches!((cs.next(), cs.next()), (Some(c), None) if is_terminal(c));
        if seen_end && !ends && !all_punctuation(w) {
            if i > 0 {
                n += 1;
            }
            seen_end = false;
        } else if ends {
            seen_end = true;
        }
    }
    n
}

/// Whether `w` is a symbol, not a word: every character is punctuation.
pub(crate) fn is_symbol(w: &str) -> bool {
    w.chars().all(is_punctuation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[&str]) {
        let mut out = Vec::new();
        words(text, &mut out);
        assert_eq!(out, expected, "{text:?}");
    }

    // Each expectation is what datatrove's English tokenizer (spaCy 3.8's blank English)
    // gives for the same text.
    #[test]
    fn words_split_as_datatrove_splits_english() {
        check(
            "Hello, world! Don't stop: it's U.S. policy (e.g. Mr. Smith's). A well-known 3.5% rate... end.",
            &[
                "Hello", ",", "world", "!", "Do", "n't", "stop", ":", "it", "'s", "U.S.", "policy", "(", "e.g.", "Mr.",
                "Smith", "'s", ")", ".", "A", "well", "-", "known", "3.5", "%", "rate", "...", "end", ".",
            ],
        );
        check("a  b\n\nc -d #tag ...x", &["a", "b", "c", "-d", "#", "tag", "...", "x"]);
        check(
            "I can't won't \"quote\" 'single' [1] {x} $5 e-mail http://x.com/a?b=c ok.",
            &[
                "I",
                "ca",
                "n't",
                "wo",
                "n't",
                "\"",
                "quote",
                "\"",
                "'",
                "single",
                "'",
                "[",
                "1",
                "]",
                "{",
                "x",
                "}",
                "$",
                "5",
                "e",
                "-",
                "mail",
                "http://x.com/a?b=c",
                "ok",
                ".",
            ],
        );
        check("Plan A. Then B. It is.", &["Plan", "A.", "Then", "B.", "It", "is", "."]);
        check("He went home.Then left.", &["He", "went", "home", ".", "Then", "left", "."]);
        check(
            "well-known 3-4 ABC. Abc. 10:30 1,000 2.5 5$ 10% @me a/b and/or U.S.A. Ph.D. etc. x.",
            &[
                "well", "-", "known", "3", "-", "4", "ABC", ".", "Abc", ".", "10:30", "1,000", "2.5", "5", "$", "10",
                "%", "@me", "a", "/", "b", "and/or", "U.S.A.", "Ph.D.", "etc", ".", "x.",
            ],
        );
        check(
            "I'm you're they'll We've cannot x+y 3*4 a=b e--mail a---b ABC,def 3,4 cats'",
            &[
                "I", "'m", "you", "'re", "they", "'ll", "We", "'ve", "can", "not", "x+y", "3", "*", "4", "a", "=", "b",
                "e", "--", "mail", "a", "---", "b", "ABC", ",", "def", "3,4", "cats", "'",
            ],
        );
        check(
            "Wait... then. Yes… no! Why? \"Quoted.\" (paren.)",
            &[
                "Wait", "...", "then", ".", "Yes", "…", "no", "!", "Why", "?", "\"", "Quoted", ".", "\"", "(", "paren",
                ".", ")",
            ],
        );
    }

    #[test]
    fn symbols_units_times_and_emoticons_split_as_spacy_splits_them() {
        check(
            "35°C, 95°F. Copyright © 2021 :) <3 yes:) 35km 10am 100mph 3rd 24h 5m 2x Mon.–Fri. Q&A U.S.-based C# +44 (0)20",
            &[
                "35",
                "°",
                "C",
                ",",
                "95",
                "°",
                "F",
                ".",
                "Copyright",
                "©",
                "2021",
                ":)",
                "<3",
                "yes",
                ":)",
                "35",
                "km",
                "10",
                "am",
                "100",
                "mph",
                "3rd",
                "24h",
                "5",
                "m",
                "2x",
                "Mon.–Fri",
                ".",
                "Q&A",
                "U.S.-based",
                "C",
                "#",
                "+44",
                "(",
                "0)20",
            ],
        );
    }

    // Whatever the text, the words are non-empty, hold no whitespace, and run together
    // they are the text without its whitespace, in order: nothing is lost or made up.
    #[test]
    fn words_cover_the_text_whatever_it_holds() {
        let alphabet: Vec<char> =
            "ab AZ09.,;:!?'\"()[]{}<>-–—…#$%&*+/=@^_`|~°©€’“”´éßΩ日本\u{301}\t\n\u{a0}:)".chars().collect();
        let mut rng = weave_core::rng::Rng::new(0x9_0bbe5);
        for _ in 0..20_000 {
            let mut out = Vec::new();
            let len = rng.below(24);
            let text: String = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            words(&text, &mut out);
            assert!(out.iter().all(|w| !w.is_empty() && !w.contains(is_space)), "{text:?}: {out:?}");
            let joined: String = out.concat();
            let expected: String = text.chars().filter(|c| !is_space(*c)).collect();
            assert_eq!(joined, expected, "{text:?}: {out:?}");
            assert!(sentences(&out) >= 1);
        }
    }

    #[test]
    fn contractions_with_and_without_apostrophes_split_as_spacy_splits_them() {
        check(
            "Dont wont id. It's couldn't've they'd've I'ma gonna Gotta yall y'all its lets well shed hes whos don’t I’ll",
            &[
                "Do", "nt", "wo", "nt", "i", "d.", "It", "'s", "could", "n't", "'ve", "they", "'d", "'ve", "I", "'m",
                "a", "gon", "na", "Got", "ta", "y", "all", "y'", "all", "its", "lets", "well", "shed", "he", "s",
                "who", "s", "do", "n’t", "I", "’ll",
            ],
        );
    }

    #[test]
    fn sentences_end_at_terminators_not_at_abbreviations() {
        let count = |t: &str| {
            let mut w = Vec::new();
            words(t, &mut w);
            sentences(&w)
        };
        assert_eq!(count("Hello, world! Don't stop: it's U.S. policy (e.g. Mr. Smith's). A rate... end."), 3);
        assert_eq!(count("Dr. Smith went home."), 1);
        assert_eq!(count("One. Two! Three? \"Four.\" Five"), 5);
        assert_eq!(count("no terminator at all"), 1);
    }

    #[test]
    fn lines_split_as_python_splits_them() {
        assert_eq!(splitlines("a\nb\r\nc\rd\n"), ["a", "b", "c", "d"]);
        assert_eq!(splitlines("\n\nx"), ["", "", "x"]);
        assert!(splitlines("").is_empty());
        assert!(is_symbol("...") && is_symbol("—") && !is_symbol("a."));
        assert!(is_terminal('。') && !is_terminal(',') && is_terminal('\u{17d6}'));
    }
}
