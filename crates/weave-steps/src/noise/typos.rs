//! The `typos` noiser: the slips of a hurried typist, at a chosen frequency and severity.

use std::sync::OnceLock;

use super::{Noiser, Rng, Scratch, WordMap, Words, affixes, case_of, has_letter, lower_into, push_cased};

/// How often `typos` damages a word.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Frequency {
    /// 3% of the words with letters.
    Low,
    /// 10% of the words with letters.
    Moderate,
    /// 25% of the words with letters.
    High,
    /// This share of the words with letters (from 0 to 1).
    Rate(f64),
}

impl Frequency {
    /// The names the pipeline file uses.
    pub const NAMES: &'static [&'static str] = &["low", "moderate", "high"];

    /// The frequency called `name`.
    pub fn from_name(name: &str) -> Option<Frequency> {
        Some(match name {
            "low" => Frequency::Low,
            "moderate" => Frequency::Moderate,
            "high" => Frequency::High,
            _ => return None,
        })
    }

    /// The chance that a word with letters is damaged.
    pub fn rate(self) -> f64 {
        match self {
            Frequency::Low => 0.03,
            Frequency::Moderate => 0.10,
            Frequency::High => 0.25,
            Frequency::Rate(r) => r,
        }
    }

    fn name(self) -> String {
        match self {
            Frequency::Low => "low".into(),
            Frequency::Moderate => "moderate".into(),
            Frequency::High => "high".into(),
            Frequency::Rate(r) => r.to_string(),
        }
    }
}

/// How badly `typos` damages a word it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// One letter-level edit per damaged word.
    Mild,
    /// One or two.
    Moderate,
    /// Two or three.
    Severe,
}

impl Severity {
    /// The names the pipeline file uses.
    pub const NAMES: &'static [&'static str] = &["mild", "moderate", "severe"];

    /// The severity called `name`.
    pub fn from_name(name: &str) -> Option<Severity> {
        Some(match name {
            "mild" => Severity::Mild,
            "moderate" => Severity::Moderate,
            "severe" => Severity::Severe,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Severity::Mild => "mild",
            Severity::Moderate => "moderate",
            Severity::Severe => "severe",
        }
    }

    /// How many letter-level edits a damaged word gets.
    fn edits(self, rng: &mut Rng) -> usize {
        match self {
            Severity::Mild => 1,
            Severity::Moderate => 1 + rng.below(2),
            Severity::Severe => 2 + rng.below(2),
        }
    }
}

/// Typos: each word with letters is damaged with the chance its [`Frequency`] gives (words
/// without letters, such as numbers, are kept). A damaged word gets one of:
///
/// - letter edits (70%): a neighbouring key on a QWERTY keyboard instead of a letter, an
///   extra neighbouring key, a missing, doubled or transposed letter; as many as the
///   [`Severity`] says;
/// - a wrong case (8%): one letter, most often the first, in the other case;
/// - a missing space (6%): joined to the next word (the last word, to the one before);
/// - an extra space (6%): split in two;
/// - wrong punctuation (10%): its final mark dropped or changed, an apostrophe dropped,
///   or a comma added;
///
/// and, for a word of the built-in tables, half of the time its homophone (`their` →
/// `there`) or a common misspelling of it (`receive` → `recieve`) instead.
#[derive(Debug, Clone)]
pub struct Typos {
    frequency: Frequency,
    severity: Severity,
}

impl Typos {
    /// Typos at this frequency and severity.
    pub fn new(frequency: Frequency, severity: Severity) -> Self {
        Typos { frequency, severity }
    }
}

/// Keys next to each letter on a QWERTY keyboard (same row and the rows above and below).
const QWERTY: [&str; 26] = [
    "qwsz",   // a
    "ghvn",   // b
    "dfxv",   // c
    "ersfxc", // d
    "wrsd",   // e
    "rtdgcv", // f
    "tyfhvb", // g
    "yugjbn", // h
    "uojk",   // i
    "uihknm", // j
    "iojlm",  // k
    "opk",    // l
    "jkn",    // m
    "hjbm",   // n
    "ipkl",   // o
    "ol",     // p
    "wa",     // q
    "etdf",   // r
    "weadzx", // s
    "ryfg",   // t
    "yihj",   // u
    "fgcb",   // v
    "qeas",   // w
    "sdzc",   // x
    "tugh",   // y
    "asx",    // z
];

/// Groups of words that sound alike: any one may be written for another.
const HOMOPHONES: &[&[&str]] = &[
    &["their", "there", "they're"],
    &["your", "you're"],
    &["its", "it's"],
    &["to", "too", "two"],
    &["then", "than"],
    &["were", "where", "we're"],
    &["whose", "who's"],
    &["affect", "effect"],
    &["accept", "except"],
    &["lose", "loose"],
    &["hear", "here"],
    &["know", "no"],
    &["knew", "new"],
    &["right", "write"],
    &["weather", "whether"],
    &["peace", "piece"],
    &["brake", "break"],
    &["by", "buy", "bye"],
    &["passed", "past"],
    &["principal", "principle"],
    &["stationary", "stationery"],
    &["complement", "compliment"],
    &["allowed", "aloud"],
    &["weak", "week"],
    &["wait", "weight"],
    &["which", "witch"],
    &["wear", "where"],
    &["sea", "see"],
    &["one", "won"],
    &["for", "four"],
    &["hole", "whole"],
    &["plain", "plane"],
    &["threw", "through"],
    &["sight", "site", "cite"],
    &["role", "roll"],
    &["scene", "seen"],
    &["meat", "meet"],
    &["pair", "pear"],
    &["mail", "male"],
    &["rain", "reign"],
    &["sun", "son"],
    &["waist", "waste"],
    &["wood", "would"],
    &["board", "bored"],
    &["course", "coarse"],
    &["desert", "dessert"],
    &["led", "lead"],
    &["quiet", "quite"],
    &["advice", "advise"],
    &["lie", "lye"],
];

/// Common misspellings: the word, and how it is often written.
const MISSPELLINGS: &[(&str, &str)] = &[
    ("the", "teh"),
    ("and", "adn"),
    ("with", "wiht"),
    ("just", "jsut"),
    ("about", "abotu"),
    ("because", "becuase"),
    ("receive", "recieve"),
    ("believe", "beleive"),
    ("separate", "seperate"),
    ("definitely", "definately"),
    ("occurred", "occured"),
    ("necessary", "neccessary"),
    ("accommodate", "accomodate"),
    ("embarrass", "embarass"),
    ("government", "goverment"),
    ("environment", "enviroment"),
    ("beginning", "begining"),
    ("calendar", "calender"),
    ("tomorrow", "tommorow"),
    ("until", "untill"),
    ("really", "realy"),
    ("different", "diffrent"),
    ("address", "adress"),
    ("argument", "arguement"),
    ("weird", "wierd"),
    ("friend", "freind"),
    ("truly", "truely"),
    ("publicly", "publically"),
    ("existence", "existance"),
    ("independent", "independant"),
    ("occasion", "occassion"),
    ("recommend", "reccomend"),
    ("successful", "succesful"),
    ("across", "accross"),
    ("apparently", "apparantly"),
    ("basically", "basicly"),
    ("business", "buisness"),
    ("committee", "commitee"),
    ("completely", "completly"),
    ("conscious", "concious"),
    ("experience", "experiance"),
    ("finally", "finaly"),
    ("foreign", "foriegn"),
    ("grammar", "grammer"),
    ("immediately", "immediatly"),
    ("interesting", "intresting"),
    ("knowledge", "knowlege"),
    ("library", "libary"),
    ("maintenance", "maintainance"),
    ("noticeable", "noticable"),
    ("occurrence", "occurence"),
    ("possession", "posession"),
    ("privilege", "priviledge"),
    ("probably", "probly"),
    ("pronunciation", "pronounciation"),
    ("restaurant", "restaraunt"),
    ("rhythm", "rythm"),
    ("schedule", "schedual"),
    ("sentence", "sentance"),
    ("similar", "similiar"),
    ("surprise", "suprise"),
    ("threshold", "threshhold"),
    ("vacuum", "vaccum"),
    ("wednesday", "wensday"),
    ("february", "febuary"),
    ("height", "heigth"),
    ("guarantee", "garantee"),
    ("license", "lisence"),
    ("minuscule", "miniscule"),
    ("piece", "peice"),
];

/// Word (lower case) → what it can be mistyped as, from the two tables above.
fn table() -> &'static WordMap<&'static str, Vec<&'static str>> {
    static TABLE: OnceLock<WordMap<&'static str, Vec<&'static str>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: WordMap<&'static str, Vec<&'static str>> = WordMap::default();
        for group in HOMOPHONES {
            for w in *group {
                t.entry(w).or_default().extend(group.iter().filter(|o| *o != w));
            }
        }
        for (w, bad) in MISSPELLINGS {
            t.entry(w).or_default().push(bad);
        }
        t
    })
}

impl Noiser for Typos {
    fn name(&self) -> &'static str {
        "typos"
    }

    fn settings(&self) -> String {
        format!("frequency={},severity={}", self.frequency.name(), self.severity.name())
    }

    fn apply(&self, text: &str, rng: &mut Rng, scratch: &mut Scratch, out: &mut String) -> usize {
        let p = self.frequency.rate();
        // One pass over the text: the words come from `Words` as they are needed (one
        // ahead, to know whether a word is the last), and the text is copied lazily: the
        // untouched stretch since the last damaged word goes out in one `push_str` when
        // the next damaged word (or the end) comes, so the nine words in ten that stay as
        // they are cost a table scan and a random draw, no copy of their own.
        let mut words = Words::new(text);
        let mut next = words.next();
        // `text[..copied]` is in `out` (damaged where it was picked).
        let mut copied = 0;
        let mut changed = 0;
        // The previous word asked to be joined to this one (a missing space).
        let mut joined = false;
        // This word was counted as changed.
        let mut counted = false;
        let mut first = true;
        while let Some(t) = next {
            next = words.next();
            let is_first = std::mem::replace(&mut first, false);
            let prev_counted = counted;
            let word = &text[t.start..t.end];
            // The draw comes first so that most words cost no more than it.
            let chosen = rng.chance(p) && has_letter(word);
            counted = chosen || joined;
            changed += usize::from(counted);
            if !chosen {
                if joined {
                    // The space before this word is left out.
                    out.push_str(&text[copied..t.ws]);
                    copied = t.start;
                    joined = false;
                }
                continue;
            }
            out.push_str(&text[copied..t.ws]);
            let ws_at = out.len();
            let ws_len = if joined { 0 } else { t.start - t.ws };
            out.push_str(&text[t.ws..t.ws + ws_len]);
            copied = t.end;
            joined = false;
            let (pre, core, suf) = affixes(word);
            out.push_str(pre);
            if rng.below(2) == 0 {
                lower_into(core, &mut scratch.lower);
                if let Some(alts) = table().get(scratch.lower.as_str()) {
                    push_cased(out, alts[rng.below(alts.len())], case_of(core));
                    out.push_str(suf);
                    continue;
                }
            }
            let start = out.len();
            out.push_str(core);
            match rng.below(100) {
                0..70 => {}
                // (A letter without case falls through to the letter edits.)
                70..78 if toggle_case(out, start, rng) => {
                    out.push_str(suf);
                    continue;
                }
                // A missing space: joined to the next word, or the last word to the one
                // before (so that a word's chance does not depend on where it stands).
                78..84 if next.is_some() => {
                    out.push_str(suf);
                    joined = true;
                    continue;
                }
                78..84 if ws_len > 0 && !is_first => {
                    out.replace_range(ws_at..ws_at + ws_len, "");
                    changed += usize::from(!prev_counted);
                    out.push_str(suf);
                    continue;
                }
                84..90 if core.chars().nth(1).is_some() => {
                    let n = out[start..].chars().count();
                    let at = nth_char(out, start, 1 + rng.below(n - 1)).0;
                    out.insert(at, ' ');
                    out.push_str(suf);
                    continue;
                }
                90..100 => {
                    punctuate(out, start, suf, rng);
                    continue;
                }
                _ => {}
            }
            for _ in 0..self.severity.edits(rng) {
                edit(out, start, rng);
            }
            if &out[start..] == core {
                // Edits that undid each other (a letter doubled, then one of the pair
                // deleted): the word was picked, so it must change.
                let (at, c) = nth_char(out, start, rng.below(core.chars().count()));
                out.insert(at, c);
            }
            out.push_str(suf);
        }
        out.push_str(&text[copied..]);
        changed
    }
}

/// The byte position and the character number `k` of `out[start..]`.
fn nth_char(out: &str, start: usize, k: usize) -> (usize, char) {
    out[start..].char_indices().nth(k).map_or((out.len(), ' '), |(i, c)| (start + i, c))
}

/// Puts one character-level typo into the word `out[start..]`.
fn edit(out: &mut String, start: usize, rng: &mut Rng) {
    let n = out[start..].chars().count();
    match rng.below(100) {
        // A neighbouring key instead of a letter, or as well as it.
        0..45 => {
            let letters = out[start..].bytes().filter(u8::is_ascii_alphabetic).count();
            if letters > 0 {
                let m = rng.below(letters);
                let Some(at) = out[start..].bytes().enumerate().filter(|(_, b)| b.is_ascii_alphabetic()).nth(m) else {
                    return;
                };
                let (at, b) = (start + at.0, at.1);
                let near = QWERTY[usize::from(b.to_ascii_lowercase() - b'a')].as_bytes();
                let mut k = char::from(*rng.pick(near));
                if b.is_ascii_uppercase() {
                    k = k.to_ascii_uppercase();
                }
                if rng.below(3) == 0 {
                    // An extra key pressed with the intended one, before or after it.
                    out.insert(at + rng.below(2), k);
                } else {
                    out.replace_range(at..at + 1, k.encode_utf8(&mut [0; 4]));
                }
                return;
            }
        }
        // A missing letter.
        45..65 if n >= 2 => {
            let (at, c) = nth_char(out, start, rng.below(n));
            out.replace_range(at..at + c.len_utf8(), "");
            return;
        }
        // Two neighbouring letters swapped (only pairs that differ change anything).
        65..85 => {
            let pairs = out[start..].chars().zip(out[start..].chars().skip(1)).filter(|(a, b)| a != b).count();
            if pairs > 0 {
                let m = rng.below(pairs);
                let mut seen = 0;
                let mut prev: Option<(usize, char)> = None;
                for (i, c) in out[start..].char_indices() {
                    if let Some((pi, pc)) = prev
                        && pc != c
                    {
                        if seen == m {
                            let (a, e) = (start + pi, start + i + c.len_utf8());
                            out.replace_range(a..e, "");
                            out.insert(a, pc);
                            out.insert(a, c);
                            return;
                        }
                        seen += 1;
                    }
                    prev = Some((i, c));
                }
            }
        }
        _ => {}
    }
    // A doubled letter: always possible, and always a change.
    let (at, c) = nth_char(out, start, rng.below(n));
    out.insert(at, c);
}

/// Puts one letter of the word `out[start..]` in the other case (the first letter, most of
/// the time). False if the chosen letter has no case.
fn toggle_case(out: &mut String, start: usize, rng: &mut Rng) -> bool {
    let n = out[start..].chars().count();
    let k = if rng.below(5) < 3 { 0 } else { rng.below(n) };
    let (at, c) = nth_char(out, start, k);
    let mut buf = [0u8; 16];
    let mut len = 0;
    let flipped: &mut dyn Iterator<Item = char> =
        if c.is_uppercase() { &mut c.to_lowercase() } else { &mut c.to_uppercase() };
    for f in flipped {
        if len + f.len_utf8() > buf.len() {
            return false;
        }
        len += f.encode_utf8(&mut buf[len..]).len();
    }
    let Ok(new) = std::str::from_utf8(&buf[..len]) else { return false };
    if new.chars().eq(std::iter::once(c)) {
        return false;
    }
    out.replace_range(at..at + c.len_utf8(), new);
    true
}

/// Writes the word `out[start..]`'s suffix `suf` with its punctuation damaged: the final
/// mark dropped or changed, an inner apostrophe dropped, or a comma added.
fn punctuate(out: &mut String, start: usize, suf: &str, rng: &mut Rng) {
    if let Some(last) = suf.chars().last() {
        let keep = &suf[..suf.len() - last.len_utf8()];
        out.push_str(keep);
        match last {
            '.' if rng.below(2) == 0 => out.push(','),
            ',' if rng.below(2) == 0 => out.push('.'),
            // Dropped.
            _ => {}
        }
        return;
    }
    if let Some(i) = out[start..].find(['\'', '\u{2019}']) {
        let at = start + i;
        let len = out[at..].chars().next().map_or(1, char::len_utf8);
        out.replace_range(at..at + len, "");
        return;
    }
    out.push(',');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(t: &Typos, text: &str, seed: u64) -> (String, usize) {
        let mut out = String::new();
        let n = t.apply(text, &mut Rng::new(seed), &mut Scratch::default(), &mut out);
        (out, n)
    }

    #[test]
    fn every_picked_word_changes_and_numbers_are_kept() {
        let t = Typos::new(Frequency::Rate(1.0), Severity::Mild);
        for seed in 0..500 {
            let text = "a I the quick, brown fox 1234 jumped... (over) it's";
            let (out, n) = noise(&t, text, seed);
            assert!(out.contains("1234"), "{out}");
            // Every word with letters changed (and "1234" too when "fox" lost its space),
            // and the count agrees with the measure from outside.
            assert!(n >= 9, "{out}");
            assert_eq!(super::super::changed_words(text, &out), n, "{text} -> {out}");
        }
    }

    #[test]
    fn keyboard_neighbours_are_real_neighbours() {
        // Each neighbour relation is mutual, as on a real keyboard.
        for (i, near) in QWERTY.iter().enumerate() {
            let c = b'a' + i as u8;
            for n in near.bytes() {
                assert!(QWERTY[usize::from(n - b'a')].as_bytes().contains(&c), "{} -> {}", c as char, n as char);
            }
        }
    }

    fn levenshtein(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diag = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let up = row[j + 1];
                row[j + 1] = (diag + usize::from(ca != *cb)).min(up + 1).min(row[j] + 1);
                diag = up;
            }
        }
        row[b.len()]
    }

    #[test]
    fn severity_sets_how_far_a_word_moves() {
        let dist = |sev| {
            let t = Typos::new(Frequency::Rate(1.0), sev);
            let mut total = 0;
            for seed in 0..2000 {
                let (out, _) = noise(&t, "keyboard", seed);
                total += levenshtein("keyboard", &out);
            }
            total as f64 / 2000.0
        };
        let (mild, moderate, severe) = (dist(Severity::Mild), dist(Severity::Moderate), dist(Severity::Severe));
        assert!(mild < moderate && moderate < severe, "{mild} {moderate} {severe}");
        assert!((1.0..1.6).contains(&mild), "{mild}");
    }

    #[test]
    fn multibyte_text_is_never_split_inside_a_character() {
        let t = Typos::new(Frequency::Rate(1.0), Severity::Severe);
        for seed in 0..2000 {
            let (out, _) = noise(&t, "naïve café Ωmega 日本語 straße ǅemal İstanbul 🙂ok", seed);
            // A String cannot hold broken UTF-8; check nothing vanished or was invented
            // beyond the edits a typo makes.
            assert!(out.chars().count() >= 25, "{out}");
        }
        assert_eq!(noise(&t, "", 1), (String::new(), 0));
        assert_eq!(noise(&t, " \t ", 1), (" \t ".into(), 0));
    }
}
