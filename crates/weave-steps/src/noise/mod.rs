//! Rule-based noisers: functions that damage text the way people and careless pipelines do
//! (typos, language and domain errors, case, spacing and punctuation noise, dropped and
//! shuffled words, synonyms, style), for the `augment` step and for benchmarks.
//!
//! A [`Noiser`] rewrites one text with a random stream of its own ([`Rng`]) into a buffer
//! the caller reuses, and says how many words it changed. Randomness comes only from the
//! [`Rng`] it is given (`weave_core::rng`, the one home of the output stability contract):
//! the `augment` step seeds one stream per record from the pipeline seed, the step id and
//! the record's text (see [`record_seed`]).
//!
//! "Words" are the runs of characters between whitespace; a word keeps its punctuation
//! (`world,`). The whitespace between words is copied as it is unless a noiser's job is to
//! change it.

mod patterns;
mod surface;
mod typos;
mod words;

#[cfg(test)]
mod rates;

use std::fmt;

pub use weave_core::rng::Rng;
use weave_core::rng::mix;

pub use patterns::{PatternNoiser, PatternSet};
pub use surface::{CaseNoise, PunctuationNoise, WhitespaceNoise};
pub use typos::{Frequency, Severity, Typos};
pub use words::{LocalShuffle, WordDropout};

pub(crate) use patterns::{BUILT_IN_DOMAINS, BUILT_IN_LANGUAGES, BUILT_IN_STYLES, built_in};

/// Something that damages text on purpose.
///
/// Implementations are stateless and shared by the threads that run a step: everything
/// random comes from `rng`, everything reused between calls lives in `scratch`.
pub trait Noiser: Send + Sync + fmt::Debug {
    /// The name the pipeline file gives it (`"typos"`).
    fn name(&self) -> &'static str;

    /// Its settings in a short form (`frequency=moderate,severity=mild`), recorded beside
    /// every text it produced.
    fn settings(&self) -> String;

    /// Appends `text` with noise to `out`, drawing every random choice from `rng`, and
    /// returns how many words of `text` were changed: words that are not found unchanged,
    /// in order, in the output, as [`changed_words`] measures it (a word joined to its
    /// neighbour, split, replaced, dropped or moved out of order counts; a changed space
    /// between two words does not).
    fn apply(&self, text: &str, rng: &mut Rng, scratch: &mut Scratch, out: &mut String) -> usize;
}

/// A 64-bit hash of `bytes`, the same on every platform and in every version (it decides
/// the noise, so it must never change without bumping the step's version). Not meant to
/// resist crafted collisions: it only spreads seeds.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (bytes.len() as u64).wrapping_mul(K) ^ 0x2545_f491_4f6c_dd1d;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    mix(h)
}

/// A hasher for the word tables: short keys, no need to resist crafted collisions (the
/// tables are fixed when the step is built), so [`hash_bytes`] rather than SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = self.0.rotate_left(5) ^ hash_bytes(bytes);
    }

    fn write_u8(&mut self, b: u8) {
        // A `str` ends its hash with a 0xff byte, to keep `("ab", "c")` from hashing as
        // `("a", "bc")`; keys here are single words, so it adds nothing.
        let _ = b;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by words.
pub(crate) type WordMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<WordHasher>>;

/// The seed of one record's noise: a hash of the pipeline seed, the step (through
/// [`hash_bytes`] of its id) and the record's text.
///
/// The text, not the record's position, because a stateless step never learns a record's
/// position in the whole dataset (only its place in a batch, and batch boundaries move
/// with `batch_size` and with the filters before the step). So the noise of a record
/// depends on nothing but the seed, the step and the record itself: not on threads, batch
/// sizes, order, or records added or removed elsewhere. Two records with the same text get
/// the same noise; deduplicate first if that matters.
pub fn record_seed(pipeline_seed: u64, step_hash: u64, text: &str) -> u64 {
    mix(mix(pipeline_seed ^ step_hash.rotate_left(17)) ^ hash_bytes(text.as_bytes()))
}

/// Buffers a noiser reuses from one call to the next, so that noising a text allocates
/// nothing once they have grown. One per thread; any noiser may use it.
#[derive(Debug, Default)]
pub struct Scratch {
    toks: Vec<Tok>,
    lower: String,
    cands: Vec<patterns::Cand>,
    order: Vec<u32>,
    tails: Vec<u32>,
}

/// A word of a text: `text[ws..start]` is the whitespace before it, `text[start..end]`
/// the word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tok {
    pub(crate) ws: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// What a byte says about whitespace: [`NOT_SPACE`], [`ASCII_SPACE`], or [`MAYBE_SPACE`]
/// for the four lead bytes (C2, E1, E2, E3) that can start a Unicode space, which only
/// then is decoded. Continuation bytes and other lead bytes are never whitespace, so a
/// scan may step through a text byte by byte.
static SPACE_CLASS: [u8; 256] = {
    let mut t = [NOT_SPACE; 256];
    t[b' ' as usize] = ASCII_SPACE;
    let mut b = b'\t';
    while b <= b'\r' {
        t[b as usize] = ASCII_SPACE;
        b += 1;
    }
    t[0xc2] = MAYBE_SPACE;
    t[0xe1] = MAYBE_SPACE;
    t[0xe2] = MAYBE_SPACE;
    t[0xe3] = MAYBE_SPACE;
    t
};
const NOT_SPACE: u8 = 0;
const ASCII_SPACE: u8 = 1;
const MAYBE_SPACE: u8 = 2;

/// The length in bytes of the whitespace character at byte `i` of `s`, or 0 if the
/// character there is not whitespace. ASCII is decided on the byte; only the few lead
/// bytes that can start a Unicode space are decoded.
#[inline]
fn space_len(s: &str, i: usize) -> usize {
    match SPACE_CLASS[usize::from(s.as_bytes()[i])] {
        NOT_SPACE => 0,
        ASCII_SPACE => 1,
        _ => unicode_space_len(s, i),
    }
}

/// The length of the character at byte `i` of `s` (a lead byte) if it is whitespace, or 0.
fn unicode_space_len(s: &str, i: usize) -> usize {
    match s.get(i..).and_then(|r| r.chars().next()) {
        Some(c) if c.is_whitespace() => c.len_utf8(),
        _ => 0,
    }
}

/// The byte length of the character that starts with byte `b`.
#[inline]
fn char_len(b: u8) -> usize {
    match b {
        0..0x80 => 1,
        0x80..0xe0 => 2,
        0xe0..0xf0 => 3,
        _ => 4,
    }
}

/// The words of a text, one [`Tok`] at a time, found in one pass over its bytes: a run of
/// non-space bytes is skipped by a table lookup per byte, and only the lead bytes that
/// can start a Unicode space are decoded. What follows the last word is
/// `text[last.end..]`.
#[derive(Debug, Clone)]
pub(crate) struct Words<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Words<'a> {
    /// The words of `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        Words { text, at: 0 }
    }
}

impl Iterator for Words<'_> {
    type Item = Tok;

    #[inline]
    fn next(&mut self) -> Option<Tok> {
        let bytes = self.text.as_bytes();
        let ws = self.at;
        let mut i = ws;
        loop {
            if i >= bytes.len() {
                self.at = i;
                return None;
            }
            let n = space_len(self.text, i);
            if n == 0 {
                break;
            }
            i += n;
        }
        let start = i;
        // The first character is not a space; its other bytes (if any) are continuation
        // bytes, which the table calls `NOT_SPACE`.
        i += 1;
        loop {
            // Eight bytes at a time to the first byte that may be whitespace (most words
            // end within one step), then that byte is decided by the table.
            while let Some(w) = bytes.get(i..i + 8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                let m = maybe_space(u64::from_le_bytes(b));
                if m != 0 {
                    i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            let Some(&b) = bytes.get(i) else { break };
            match SPACE_CLASS[usize::from(b)] {
                NOT_SPACE => i += 1,
                ASCII_SPACE => break,
                _ if unicode_space_len(self.text, i) > 0 => break,
                _ => i += 1,
            }
        }
        self.at = i;
        Some(Tok { ws, start, end: i })
    }
}

/// The high bit of each byte of `w` (eight bytes of text, little-endian) that may be
/// whitespace: an ASCII byte below `!` or any byte that is not ASCII. Only the lowest mark
/// is exact (a borrow may mark bytes above it), which is the one a scan needs.
#[inline]
fn maybe_space(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    (w.wrapping_sub(ONES * 0x21) & !w & HIGH) | (w & HIGH)
}

/// Fills `toks` with the words of `text`; what follows the last word is
/// `text[toks.last().end..]`.
pub(crate) fn tokenize(text: &str, toks: &mut Vec<Tok>) {
    toks.clear();
    toks.extend(Words::new(text));
}

/// The whitespace after the last word (all of `text` when it has no words).
pub(crate) fn trailing<'a>(text: &'a str, toks: &[Tok]) -> &'a str {
    &text[toks.last().map_or(0, |t| t.end)..]
}

/// A word split into leading punctuation, its core (from the first to the last letter or
/// digit) and trailing punctuation: `"(hello),"` is `("(", "hello", "),")`. A word with no
/// letter or digit is all prefix.
pub(crate) fn affixes(word: &str) -> (&str, &str, &str) {
    if word.is_ascii() {
        let b = word.as_bytes();
        let Some(a) = b.iter().position(u8::is_ascii_alphanumeric) else { return (word, "", "") };
        let e = b.iter().rposition(u8::is_ascii_alphanumeric).map_or(b.len(), |i| i + 1);
        return (&word[..a], &word[a..e], &word[e..]);
    }
    let Some(a) = word.find(|c: char| c.is_alphanumeric()) else { return (word, "", "") };
    let b = word.rfind(|c: char| c.is_alphanumeric()).map_or(word.len(), |i| i + char_len(word.as_bytes()[i]));
    (&word[..a], &word[a..b], &word[b..])
}

/// Whether `s` has a letter.
pub(crate) fn has_letter(s: &str) -> bool {
    if s.is_ascii() { s.bytes().any(|b| b.is_ascii_alphabetic()) } else { s.chars().any(char::is_alphabetic) }
}

/// How a word is capitalised, so that a replacement can follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// No upper-case letter.
    Lower,
    /// The first letter upper case, no other.
    Title,
    /// Every letter upper case (and more than one letter).
    Upper,
    /// Anything else (`iPhone`, `JavaScript`).
    Mixed,
}

/// How `word` is capitalised.
pub(crate) fn case_of(word: &str) -> Case {
    let mut letters = 0;
    let mut upper = 0;
    let mut first_upper = false;
    for c in word.chars().filter(|c| c.is_alphabetic()) {
        if c.is_uppercase() {
            upper += 1;
            first_upper |= letters == 0;
        }
        letters += 1;
    }
    match (upper, first_upper) {
        (0, _) => Case::Lower,
        (1, true) => Case::Title,
        (u, _) if u == letters && letters > 1 => Case::Upper,
        _ => Case::Mixed,
    }
}

/// Appends `s` (written in lower case) to `out` in the case `case`.
pub(crate) fn push_cased(out: &mut String, s: &str, case: Case) {
    match case {
        Case::Lower | Case::Mixed => out.push_str(s),
        Case::Upper => out.extend(s.chars().flat_map(char::to_uppercase)),
        Case::Title => {
            let mut chars = s.chars();
            for c in chars.by_ref() {
                if c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                    break;
                }
                out.push(c);
            }
            out.push_str(chars.as_str());
        }
    }
}

/// Writes `s` in lower case into `buf` (cleared first).
pub(crate) fn lower_into(s: &str, buf: &mut String) {
    buf.clear();
    if s.is_ascii() {
        buf.push_str(s);
        buf.make_ascii_lowercase();
    } else {
        buf.extend(s.chars().flat_map(char::to_lowercase));
    }
}

/// How many of the words in `a` are not found, in order, in `b`: the words that a word
/// diff shows as removed or changed (by a longest common subsequence of words). This is
/// what [`Noiser::apply`] counts, measured from outside.
pub fn changed_words(a: &str, b: &str) -> usize {
    if a == b {
        return 0;
    }
    let wa: Vec<&str> = a.split_whitespace().collect();
    let wb: Vec<&str> = b.split_whitespace().collect();
    // Common ends first, so that the quadratic part only sees the middle.
    let pre = wa.iter().zip(&wb).take_while(|(x, y)| x == y).count();
    let suf = wa[pre..].iter().rev().zip(wb[pre..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (ma, mb) = (&wa[pre..wa.len() - suf], &wb[pre..wb.len() - suf]);
    let mut row = vec![0usize; mb.len() + 1];
    for x in ma {
        let mut diag = 0;
        for (j, y) in mb.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    ma.len() - row[mb.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> (Vec<&str>, &str) {
        let mut toks = Vec::new();
        tokenize(text, &mut toks);
        let w = toks.iter().map(|t| &text[t.start..t.end]).collect();
        (w, trailing(text, &toks))
    }

    #[test]
    fn tokenize_keeps_every_byte_in_place() {
        for text in [
            "",
            "   ",
            "a",
            " a  b\t",
            "héllo\u{a0}wörld\u{3000}日本 語\n",
            "x\u{2003}",
            "abcdefghijklmno\u{1}pq rstuvwxyzabcdefgh\u{a0}ijklmnopqrstu\u{2003}vwxyz0123456789é\u{85}end",
            "seven77 eight888\televen11111\u{c2}\u{a9}more",
        ] {
            let mut toks = Vec::new();
            tokenize(text, &mut toks);
            let mut rebuilt = String::new();
            for t in &toks {
                rebuilt.push_str(&text[t.ws..t.end]);
            }
            rebuilt.push_str(trailing(text, &toks));
            assert_eq!(rebuilt, text);
        }
        assert_eq!(words(" a  b\t"), (vec!["a", "b"], "\t"));
        assert_eq!(words("héllo\u{a0}wörld\u{3000}日本"), (vec!["héllo", "wörld", "日本"], ""));
        assert_eq!(words("  "), (vec![], "  "));
        // Long words, control characters and non-ASCII bytes across the eight-byte steps of
        // the scan.
        assert_eq!(
            words("abcdefghij\u{1}klmnop qrstuvwxyz0123\u{a0}©©©©©©©©x\u{85}y"),
            (vec!["abcdefghij\u{1}klmnop", "qrstuvwxyz0123", "©©©©©©©©x", "y"], "")
        );
    }

    #[test]
    fn affixes_and_case() {
        assert_eq!(affixes("(hello),"), ("(", "hello", "),"));
        assert_eq!(affixes("don't"), ("", "don't", ""));
        assert_eq!(affixes("¿Qué?"), ("¿", "Qué", "?"));
        assert_eq!(affixes("--"), ("--", "", ""));
        assert_eq!(case_of("hello"), Case::Lower);
        assert_eq!(case_of("Hello"), Case::Title);
        assert_eq!(case_of("HELLO"), Case::Upper);
        assert_eq!(case_of("I"), Case::Title);
        assert_eq!(case_of("iPhone"), Case::Mixed);
        let mut s = String::new();
        push_cased(&mut s, "élan", Case::Title);
        push_cased(&mut s, " straße", Case::Upper);
        assert_eq!(s, "Élan STRASSE");
    }

    #[test]
    fn a_seeded_noise_is_fixed_forever() {
        // Part of the output contract (see `weave_core::rng`): recorded before the random
        // streams moved to weave-core, it must never change.
        let text = "The quick brown fox jumps over the lazy dog, twice.";
        let seed = record_seed(42, hash_bytes(b"aug"), text);
        assert_eq!(seed, 0x37b7_9bd3_d8ff_3f2c);
        let mut out = String::new();
        let typos = Typos::new(Frequency::High, Severity::Severe);
        let changed = typos.apply(text, &mut Rng::substream(seed, 0), &mut Scratch::default(), &mut out);
        assert_eq!((changed, out.as_str()), (3, "The, quci brolwj fox jumps over the lazy dog, twice."));
    }

    #[test]
    fn record_seeds_depend_on_seed_step_and_text() {
        let s = record_seed(1, hash_bytes(b"aug"), "hello");
        assert_eq!(s, record_seed(1, hash_bytes(b"aug"), "hello"));
        assert_ne!(s, record_seed(2, hash_bytes(b"aug"), "hello"));
        assert_ne!(s, record_seed(1, hash_bytes(b"aug2"), "hello"));
        assert_ne!(s, record_seed(1, hash_bytes(b"aug"), "hello "));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
        assert_ne!(hash_bytes(b"12345678"), hash_bytes(b"12345678\0"));
    }

    #[test]
    fn changed_words_counts_what_a_reader_would() {
        assert_eq!(changed_words("a b c", "a b c"), 0);
        assert_eq!(changed_words("a b c", "a x c"), 1);
        assert_eq!(changed_words("a b c", "b a c"), 1);
        assert_eq!(changed_words("a b c", "c b a"), 2);
        assert_eq!(changed_words("a b c d", "a c d"), 1);
        assert_eq!(changed_words("a b c d", "ab c d"), 2);
        assert_eq!(changed_words("a bc d", "a b c d"), 1);
        assert_eq!(changed_words("", ""), 0);
        assert_eq!(changed_words("a b", ""), 2);
    }
}
