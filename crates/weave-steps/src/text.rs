//! Text functions shared by the cleaning steps and the benchmarks: each writes its result
//! into a buffer that the caller reuses, so no call allocates.

use weave_core::Appender;

/// Writes `s` with leading and trailing whitespace removed and every inner run of
/// whitespace (Unicode `White_Space`, so tabs, newlines and no-break spaces too) replaced
/// by one ASCII space.
pub fn trim_collapse_into(s: &str, out: &mut Appender<'_>) {
    collapse_runs(s, &mut ColumnOut(out));
}

/// Where [`collapse_runs`] writes: a column's row, or a key's bytes (lower-cased or not).
trait RunOut {
    /// Bytes written so far.
    fn len(&self) -> usize;
    /// Whether the last byte written is a space.
    fn ends_in_space(&self) -> bool;
    /// Appends a stretch of ASCII text (lone spaces included).
    fn plain(&mut self, run: &str);
    /// Appends one non-ASCII character that is not whitespace (`c` is its text).
    fn other(&mut self, c: &str);
    /// Appends a space.
    fn space(&mut self);
    /// Drops the last byte (a trailing space).
    fn pop_space(&mut self);
}

struct ColumnOut<'o, 'a>(&'o mut Appender<'a>);

impl RunOut for ColumnOut<'_, '_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn ends_in_space(&self) -> bool {
        self.0.written().ends_with(' ')
    }
    fn plain(&mut self, run: &str) {
        self.0.push_str(run);
    }
    fn other(&mut self, c: &str) {
        self.0.push_str(c);
    }
    fn space(&mut self) {
        self.0.push(' ');
    }
    fn pop_space(&mut self) {
        let len = self.0.len() - 1;
        self.0.truncate(len);
    }
}

/// A key's bytes, from `start`; lower-cased when `lowercase`.
struct KeyOut<'k> {
    key: &'k mut Vec<u8>,
    start: usize,
    lowercase: bool,
}

impl RunOut for KeyOut<'_> {
    fn len(&self) -> usize {
        self.key.len() - self.start
    }
    fn ends_in_space(&self) -> bool {
        self.len() > 0 && self.key.last() == Some(&b' ')
    }
    fn plain(&mut self, run: &str) {
        let at = self.key.len();
        self.key.extend_from_slice(run.as_bytes());
        if self.lowercase {
            self.key[at..].make_ascii_lowercase();
        }
    }
    fn other(&mut self, c: &str) {
        push_key_char(self.key, c, self.lowercase);
    }
    fn space(&mut self) {
        self.key.push(b' ');
    }
    fn pop_space(&mut self) {
        self.key.pop();
    }
}

/// Appends the non-ASCII character `c` (its text) to `key`, lower-cased when `lowercase`.
fn push_key_char(key: &mut Vec<u8>, c: &str, lowercase: bool) {
    match c.chars().next() {
        Some(ch) if lowercase => {
            let mut b = [0u8; 4];
            lower_each(ch, |l| push_short(key, l.encode_utf8(&mut b).as_bytes()));
        }
        _ => push_short(key, c.as_bytes()),
    }
}

/// Appends a character's one to four bytes: byte by byte, since a copy of a length not
/// known at compile time is a call to `memmove`, which on accented text took a tenth of the
/// time of a dedup key.
#[inline]
fn push_short(key: &mut Vec<u8>, bytes: &[u8]) {
    key.reserve(bytes.len());
    for &b in bytes {
        key.push(b);
    }
}

/// The lower case of each character from U+0080 to U+07FF (two bytes in UTF-8: the
/// accented Latin, Greek and Cyrillic letters) whose lower case is one character, or NUL.
static LOWER_TWO_BYTES: std::sync::LazyLock<Box<[char]>> = std::sync::LazyLock::new(|| {
    (0x80u32..0x800)
        .map(|u| {
            let mut l = char::from_u32(u).map(char::to_lowercase).into_iter().flatten();
            match (l.next(), l.next()) {
                (Some(one), None) => one,
                _ => '\0',
            }
        })
        .collect()
});

/// Characters that are their own lower case, in blocks without letters that have a case:
/// General Punctuation (dashes, quotes, the ellipsis) and U+3000 to U+9FFF (CJK symbols,
/// kana, Hangul jamo, CJK ideographs). A test checks every one against `to_lowercase`.
const CASELESS: [std::ops::Range<u32>; 2] = [0x2000..0x2070, 0x3000..0xA000];

/// Calls `f` with each character of the lower case of `c`, as `char::to_lowercase` gives
/// them. Two-byte characters come from a table, and [`CASELESS`] ones are themselves:
/// `to_lowercase` searches the Unicode tables, which on accented text cost as much as the
/// rest of a dedup key.
#[inline]
fn lower_each(c: char, mut f: impl FnMut(char)) {
    let u = u32::from(c);
    if (0x80..0x800).contains(&u) {
        let l = LOWER_TWO_BYTES[(u - 0x80) as usize];
        if l != '\0' {
            f(l);
            return;
        }
    } else if CASELESS.iter().any(|r| r.contains(&u)) {
        f(c);
        return;
    }
    c.to_lowercase().for_each(f);
}

use weave_core::swar::{HI, bytes_below, bytes_equal, word};

/// Where the next byte of `s[i..]` is that [`collapse_runs`] must look at (a control
/// byte, so tabs and newlines; a non-ASCII byte; a space followed by a space), or
/// `s.len()`, looking at eight bytes at a time. A byte that needs no look may be reported
/// too (a borrow in the arithmetic): the caller decides on the byte itself.
#[inline]
fn next_stop(s: &[u8], mut i: usize) -> usize {
    while i + 9 <= s.len() {
        let (x, next) = (word(s, i), word(s, i + 1));
        let stops = bytes_below(x, 0x20) | (x & HI) | (bytes_equal(x, b' ') & bytes_equal(next, b' '));
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() {
        let b = s[i];
        if !(0x20..0x80).contains(&b) || (b == b' ' && s.get(i + 1) == Some(&b' ')) {
            return i;
        }
        i += 1;
    }
    s.len()
}

/// The length of the UTF-8 character whose first byte is `b`.
#[inline]
fn utf8_len(b: u8) -> usize {
    match b {
        0..0x80 => 1,
        0x80..0xe0 => 2,
        0xe0..0xf0 => 3,
        _ => 4,
    }
}

/// Writes `s` trimmed, every run of whitespace (`char::is_whitespace`) as one space.
///
/// Copying word by word costs two mispredicted branches per word, which dominates on
/// short words. Instead plain stretches (ASCII above the space, and lone spaces) are
/// found eight bytes at a time and written as slices; only control bytes, non-ASCII
/// bytes and doubled spaces stop the copy, and of the non-ASCII characters only those
/// whose first byte can start a Unicode space (C2, E1, E2, E3) are decoded.
fn collapse_runs(s: &str, out: &mut impl RunOut) {
    let bytes = s.as_bytes();
    let start = out.len();
    let mut i = 0;
    // After whitespace (and at the start): spaces that would open the next stretch are
    // dropped.
    let mut after_space = true;
    loop {
        if after_space {
            while bytes.get(i) == Some(&b' ') {
                i += 1;
            }
        }
        let j = next_stop(bytes, i);
        if j > i {
            // `i` and `j` are on character boundaries: every stop is at an ASCII byte or
            // the first byte of a character, and a stretch is ASCII.
            out.plain(&s[i..j]);
        }
        if j == bytes.len() {
            break;
        }
        let b = bytes[j];
        let len = utf8_len(b).min(bytes.len() - j);
        let c = &s[j..j + len];
        let space = if b < 0x80 {
            matches!(b, b' ' | b'\t'..=b'\r')
        } else {
            matches!(b, 0xc2 | 0xe1..=0xe3) && c.chars().next().is_some_and(char::is_whitespace)
        };
        if space {
            if out.len() > start && !out.ends_in_space() {
                out.space();
            }
            after_space = true;
        } else {
            if b < 0x80 {
                out.plain(c);
            } else {
                out.other(c);
            }
            after_space = false;
        }
        i = j + len;
    }
    // A space is only ever written for whitespace, so a final one is trailing whitespace.
    if out.len() > start && out.ends_in_space() {
        out.pop_space();
    }
}

/// Writes `s` trimmed of leading and trailing whitespace.
pub fn trim_into(s: &str, out: &mut Appender<'_>) {
    out.push_str(s.trim());
}

/// Writes `s` with every inner run of whitespace replaced by one space, keeping one space
/// for leading or trailing runs.
pub fn collapse_into(s: &str, out: &mut Appender<'_>) {
    let mut in_space = false;
    let mut run_start = 0;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if !in_space {
                out.push_str(&s[run_start..i]);
                out.push(' ');
                in_space = true;
            }
        } else if in_space {
            run_start = i;
            in_space = false;
        }
    }
    if !in_space {
        out.push_str(&s[run_start..]);
    }
}

/// Writes `s` in lower case (Unicode-aware; ASCII text takes a fast path).
pub fn lowercase_into(s: &str, out: &mut Appender<'_>) {
    if !s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        out.push_str(s);
    } else if s.is_ascii() {
        push_ascii_lower(s.as_bytes(), out);
    } else {
        // Mixed text: ASCII runs through the fast path, only the other characters through
        // the Unicode tables (all of it through `char::to_lowercase` ran at a tenth of the
        // speed of the other rewrites in `cargo xtask bench ops`).
        let mut rest = s;
        while !rest.is_empty() {
            let ascii = rest.bytes().take_while(u8::is_ascii).count();
            push_ascii_lower(&rest.as_bytes()[..ascii], out);
            rest = &rest[ascii..];
            if let Some(c) = rest.chars().next() {
                lower_each(c, |l| out.push(l));
                rest = &rest[c.len_utf8()..];
            }
        }
    }
}

/// Appends the ASCII bytes `run` in lower case, through a small buffer, so that the output
/// grows by a slice at a time rather than a character at a time.
fn push_ascii_lower(run: &[u8], out: &mut Appender<'_>) {
    let mut buf = [0u8; 64];
    for chunk in run.chunks(buf.len()) {
        let lower = &mut buf[..chunk.len()];
        for (l, b) in lower.iter_mut().zip(chunk) {
            *l = b.to_ascii_lowercase();
        }
        // ASCII in, ASCII out: always valid.
        out.push_str(std::str::from_utf8(lower).unwrap_or_default());
    }
}

/// Appends the key form of `s` to `key`, as `dedup` and `validate`'s uniqueness check
/// normalise a field: trimmed when `trim` or `collapse`, every inner run of whitespace
/// made one space when `collapse`, lower case when `lowercase`.
///
/// Collapsed text takes [`collapse_runs`], the path of [`trim_collapse_into`], lower-cased
/// a stretch at a time; only non-ASCII characters are decoded (where splitting the text
/// into words and each accented word into characters cost a third of a dedup run's CPU).
pub(crate) fn normalise_key_into(s: &str, lowercase: bool, trim: bool, collapse: bool, key: &mut Vec<u8>) {
    if collapse {
        let start = key.len();
        collapse_runs(s, &mut KeyOut { key, start, lowercase });
        return;
    }
    let s = if trim { s.trim() } else { s };
    if !lowercase {
        key.extend_from_slice(s.as_bytes());
        return;
    }
    // ASCII stretches (found eight bytes at a time) copied and lower-cased in place; the
    // other characters one by one.
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        let j = next_non_ascii(bytes, i);
        let at = key.len();
        key.extend_from_slice(&bytes[i..j]);
        key[at..].make_ascii_lowercase();
        if j == bytes.len() {
            break;
        }
        let len = utf8_len(bytes[j]).min(bytes.len() - j);
        push_key_char(key, &s[j..j + len], true);
        i = j + len;
    }
}

/// Where the next byte of `s[i..]` above 0x7f is, or `s.len()`.
#[inline]
fn next_non_ascii(s: &[u8], mut i: usize) -> usize {
    while i + 8 <= s.len() {
        let high = word(s, i) & HI;
        if high != 0 {
            return i + (high.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + s[i..].iter().position(|b| *b >= 0x80).unwrap_or(s.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::StrColumn;

    fn apply(f: fn(&str, &mut Appender<'_>), s: &str) -> String {
        let mut c = StrColumn::new();
        c.push("previous row");
        c.push_with(|a| f(s, a));
        c.get(1).unwrap_or_default().to_owned()
    }

    #[test]
    fn trim_collapse_handles_every_kind_of_space() {
        let cases = [
            ("  a  b\t\tc \n", "a b c"),
            ("", ""),
            ("   ", ""),
            ("x", "x"),
            ("\u{a0}é\u{2003}ü\r\n", "é ü"),
            ("a\nb", "a b"),
        ];
        for (input, want) in cases {
            assert_eq!(apply(trim_collapse_into, input), want, "{input:?}");
        }
    }

    #[test]
    fn trim_collapse_agrees_with_is_whitespace_on_every_char() {
        // The fast path decides on bytes and decodes only some characters: check them all.
        let mut c = StrColumn::new();
        let chars: Vec<char> = (0..=0x10_ffff).filter_map(char::from_u32).collect();
        for ch in &chars {
            c.push_with(|a| trim_collapse_into(&format!("{ch}a{ch}{ch}é{ch}"), a));
        }
        for (ch, got) in chars.iter().zip(c.iter()) {
            let want = if ch.is_whitespace() { "a é".to_owned() } else { format!("{ch}a{ch}{ch}é{ch}") };
            assert_eq!(got, Some(want.as_str()), "U+{:04X}", u32::from(*ch));
        }
    }

    #[test]
    fn key_normalisation_agrees_with_words_and_char_to_lowercase_on_every_char() {
        // The one-pass form decides ASCII on bytes and decodes the rest: check every
        // character, between ASCII and accented letters, against splitting into words.
        let reference = |s: &str, lowercase: bool, collapse: bool| -> String {
            let s = s.trim();
            let lower =
                |w: &str| if lowercase { w.chars().flat_map(char::to_lowercase).collect() } else { w.to_owned() };
            if collapse { s.split_whitespace().map(lower).collect::<Vec<_>>().join(" ") } else { lower(s) }
        };
        let mut key = Vec::new();
        for ch in (0..=0x10_ffff).filter_map(char::from_u32) {
            let s = format!("{ch}Ab{ch}{ch}\u{c9}t\u{e9} X{ch}");
            for (lowercase, collapse) in [(true, true), (true, false), (false, true)] {
                key.clear();
                normalise_key_into(&s, lowercase, true, collapse, &mut key);
                let want = reference(&s, lowercase, collapse);
                assert_eq!(
                    std::str::from_utf8(&key),
                    Ok(want.as_str()),
                    "U+{:04X} {lowercase} {collapse}",
                    u32::from(ch)
                );
            }
        }
    }

    #[test]
    fn lowercase_agrees_with_char_to_lowercase_on_every_char() {
        // The fast path takes ASCII runs byte by byte: check it against the tables.
        let mut c = StrColumn::new();
        let chars: Vec<char> = (0..=0x10_ffff).filter_map(char::from_u32).collect();
        for ch in &chars {
            c.push_with(|a| lowercase_into(&format!("Ab{ch}CD{ch}"), a));
        }
        for (ch, got) in chars.iter().zip(c.iter()) {
            let want: String = format!("Ab{ch}CD{ch}").chars().flat_map(char::to_lowercase).collect();
            assert_eq!(got, Some(want.as_str()), "U+{:04X}", u32::from(*ch));
        }
    }

    #[test]
    fn trim_and_collapse_alone() {
        assert_eq!(apply(trim_into, "  a  b "), "a  b");
        assert_eq!(apply(collapse_into, "  a  b "), " a b ");
        assert_eq!(apply(lowercase_into, "HeLLo"), "hello");
        assert_eq!(apply(lowercase_into, "ÉCOLE İ"), "école i̇");
        let long: String = (0..200).map(|i| char::from(b'A' + (i % 26) as u8)).collect();
        assert_eq!(apply(lowercase_into, &long), long.to_ascii_lowercase());
    }
}
