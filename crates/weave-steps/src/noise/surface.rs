//! Surface noise: letter case, the spaces between words, punctuation.

use super::{Noiser, Rng, Scratch, affixes, tokenize, trailing};

/// Case noise: each word with a cased letter, with probability `rate`, is written in
/// upper case, in lower case, with its first cased letter flipped, or in alternating
/// case (`hElLo`), whichever changes it.
#[derive(Debug, Clone)]
pub struct CaseNoise {
    rate: f64,
}

impl CaseNoise {
    /// Case noise at `rate` (from 0 to 1).
    pub fn new(rate: f64) -> Self {
        CaseNoise { rate }
    }
}

fn is_cased(c: char) -> bool {
    c.is_uppercase() || c.is_lowercase()
}

impl Noiser for CaseNoise {
    fn name(&self) -> &'static str {
        "case"
    }

    fn settings(&self) -> String {
        format!("rate={}", self.rate)
    }

    fn apply(&self, text: &str, rng: &mut Rng, scratch: &mut Scratch, out: &mut String) -> usize {
        tokenize(text, &mut scratch.toks);
        let mut changed = 0;
        for t in &scratch.toks {
            out.push_str(&text[t.ws..t.start]);
            let word = &text[t.start..t.end];
            if !rng.chance(self.rate) || !word.chars().any(is_cased) {
                out.push_str(word);
                continue;
            }
            changed += 1;
            let start = out.len();
            match rng.below(4) {
                0 => out.extend(word.chars().flat_map(char::to_uppercase)),
                1 => out.extend(word.chars().flat_map(char::to_lowercase)),
                2 => {
                    let mut upper = rng.below(2) == 0;
                    for c in word.chars() {
                        if is_cased(c) {
                            if upper {
                                out.extend(c.to_uppercase());
                            } else {
                                out.extend(c.to_lowercase());
                            }
                            upper = !upper;
                        } else {
                            out.push(c);
                        }
                    }
                }
                _ => {}
            }
            if out.len() == start || out[start..] == *word {
                out.truncate(start);
                flip_first(word, out);
            }
        }
        out.push_str(trailing(text, &scratch.toks));
        changed
    }
}

/// Writes `word` with its first cased letter in the other case.
fn flip_first(word: &str, out: &mut String) {
    let mut done = false;
    for c in word.chars() {
        if !done && is_cased(c) {
            if c.is_uppercase() {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            done = true;
        } else {
            out.push(c);
        }
    }
}

/// Whitespace noise: each word, with probability `rate`, loses the space after it (it is
/// joined to the next word; the last word, to the one before), gets a space inside it
/// (split in two), or gets its space doubled, one of the three at random. A joined pair is
/// two changed words, a split word one, a doubled space none: about `rate` changed words
/// per word.
#[derive(Debug, Clone)]
pub struct WhitespaceNoise {
    rate: f64,
}

impl WhitespaceNoise {
    /// Whitespace noise at `rate` (from 0 to 1).
    pub fn new(rate: f64) -> Self {
        WhitespaceNoise { rate }
    }
}

impl Noiser for WhitespaceNoise {
    fn name(&self) -> &'static str {
        "whitespace"
    }

    fn settings(&self) -> String {
        format!("rate={}", self.rate)
    }

    fn apply(&self, text: &str, rng: &mut Rng, scratch: &mut Scratch, out: &mut String) -> usize {
        tokenize(text, &mut scratch.toks);
        let toks = &scratch.toks;
        let mut changed = 0;
        // The previous word lost the space after it.
        let mut joined = false;
        // This word was counted as changed.
        let mut counted = false;
        for (i, t) in toks.iter().enumerate() {
            let prev_counted = counted;
            if !joined {
                out.push_str(&text[t.ws..t.start]);
            }
            // A word joined to the one before was counted when the space was lost.
            counted = joined;
            changed += usize::from(joined);
            joined = false;
            let word = &text[t.start..t.end];
            if !rng.chance(self.rate) {
                out.push_str(word);
                continue;
            }
            let chars = word.chars().count();
            match rng.below(3) {
                // The space after the word lost (before it, for the last word, so that
                // a word's chance does not depend on where it stands).
                0 if i + 1 < toks.len() => {
                    out.push_str(word);
                    changed += usize::from(!counted);
                    counted = true;
                    joined = true;
                }
                0 if i > 0 && out.ends_with(char::is_whitespace) => {
                    // All of it, a space the word before doubled too.
                    let end = out.trim_end().len();
                    out.truncate(end);
                    out.push_str(word);
                    changed += usize::from(!counted) + usize::from(!prev_counted);
                    counted = true;
                }
                0 | 1 if chars >= 2 => {
                    let at = word.char_indices().nth(1 + rng.below(chars - 1)).map_or(word.len(), |(i, _)| i);
                    out.push_str(&word[..at]);
                    out.push(' ');
                    out.push_str(&word[at..]);
                    changed += usize::from(!counted);
                    counted = true;
                }
                _ => {
                    out.push_str(word);
                    out.push(' ');
                }
            }
        }
        out.push_str(trailing(text, toks));
        changed
    }
}

/// Marks that punctuation noise adds or swaps in.
const MARKS: &[char] = &[',', '.', '!', '?', ';', ':'];

/// Punctuation noise: each word, with probability `rate`, has its final mark dropped,
/// changed or doubled, its opening mark (a quote or bracket) dropped, an inner apostrophe
/// dropped, or a mark added after it.
#[derive(Debug, Clone)]
pub struct PunctuationNoise {
    rate: f64,
}

impl PunctuationNoise {
    /// Punctuation noise at `rate` (from 0 to 1).
    pub fn new(rate: f64) -> Self {
        PunctuationNoise { rate }
    }
}

impl Noiser for PunctuationNoise {
    fn name(&self) -> &'static str {
        "punctuation"
    }

    fn settings(&self) -> String {
        format!("rate={}", self.rate)
    }

    fn apply(&self, text: &str, rng: &mut Rng, scratch: &mut Scratch, out: &mut String) -> usize {
        tokenize(text, &mut scratch.toks);
        let mut changed = 0;
        for t in &scratch.toks {
            out.push_str(&text[t.ws..t.start]);
            let word = &text[t.start..t.end];
            if !rng.chance(self.rate) {
                out.push_str(word);
                continue;
            }
            changed += 1;
            let (pre, core, suf) = affixes(word);
            let apostrophe = core.find(['\'', '\u{2019}']);
            match (rng.below(4), suf.chars().last()) {
                // The final mark dropped, changed or doubled.
                (0 | 1, Some(last)) => {
                    out.push_str(pre);
                    out.push_str(core);
                    out.push_str(&suf[..suf.len() - last.len_utf8()]);
                    match rng.below(3) {
                        0 => {}
                        1 => {
                            let others = MARKS.iter().filter(|m| **m != last).count();
                            let k = rng.below(others);
                            out.extend(MARKS.iter().filter(|m| **m != last).nth(k));
                        }
                        _ => {
                            out.push(last);
                            out.push(last);
                        }
                    }
                }
                (2, _) if !pre.is_empty() && !core.is_empty() => {
                    let mut c = pre.chars();
                    c.next();
                    out.push_str(c.as_str());
                    out.push_str(core);
                    out.push_str(suf);
                }
                (3, _) if apostrophe.is_some() => {
                    let at = apostrophe.unwrap_or(0);
                    out.push_str(pre);
                    out.push_str(&core[..at]);
                    out.push_str(core[at..].trim_start_matches(['\'', '\u{2019}']));
                    out.push_str(suf);
                }
                _ => {
                    out.push_str(word);
                    out.push(*rng.pick(MARKS));
                }
            }
        }
        out.push_str(trailing(text, &scratch.toks));
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::super::changed_words;
    use super::*;

    fn run(n: &dyn Noiser, text: &str, seed: u64) -> (String, usize) {
        let mut out = String::new();
        let c = n.apply(text, &mut Rng::new(seed), &mut Scratch::default(), &mut out);
        (out, c)
    }

    #[test]
    fn every_picked_word_changes_and_the_count_is_the_measure() {
        let text = "Hello, world! It's a (fine) day: ÉTÉ à Paris; 42 x";
        for seed in 0..300 {
            for n in [&CaseNoise::new(1.0) as &dyn Noiser, &PunctuationNoise::new(1.0)] {
                let (out, c) = run(n, text, seed);
                assert_eq!(c, changed_words(text, &out), "{} {text} -> {out}", n.name());
            }
            let (out, _) = run(&CaseNoise::new(1.0), text, seed);
            // Only "42" has no cased letter.
            assert_eq!(changed_words(text, &out), 10, "{out}");
            assert!(out.contains(" 42 "), "{out}");
        }
    }

    #[test]
    fn whitespace_noise_changes_only_spaces() {
        let text = "one two three four five six";
        for seed in 0..300 {
            let (out, c) = run(&WhitespaceNoise::new(0.5), text, seed);
            let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
            assert_eq!(squeeze(&out), squeeze(text), "{out}");
            assert_eq!(c, changed_words(text, &out), "{text} -> {out}");
        }
    }

    #[test]
    fn zero_rate_is_identity_and_empty_text_is_fine() {
        for n in [&CaseNoise::new(0.0) as &dyn Noiser, &WhitespaceNoise::new(0.0), &PunctuationNoise::new(0.0)] {
            assert_eq!(run(n, "  Some text,\there.\n", 3), ("  Some text,\there.\n".to_owned(), 0));
            assert_eq!(run(n, "", 3), (String::new(), 0));
        }
    }
}
