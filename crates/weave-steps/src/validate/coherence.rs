//! The rule-based coherence score of a text: letters, repetition and sentence structure.

use crate::clean::{alpha_ratio, repeated_line_ratio};

/// A text's coherence and its three parts, each in [0, 1]; `score` is their mean.
///
/// - `alpha`: letters among the characters that are not whitespace, over 0.8 and capped
///   at 1 (prose has about 0.8 to 0.95; markup, numbers and symbols have less).
/// - `repetition`: 1 minus the larger of the share of non-empty lines that repeat an
///   earlier line and the share of word trigrams (case and surrounding punctuation
///   ignored) that repeat an earlier trigram.
/// - `structure`: the mean, over sentences, of three marks worth a third each: it starts
///   with a capital (or a digit, or a letter of a script without case), it ends in `.`,
///   `!`, `?` or `…` (closing quotes and brackets may follow), and it has 2 to 50 words.
///   A sentence ends at terminal punctuation followed by whitespace, at a line break, or
///   at the end of the text; one with no letter or digit is not counted.
///
/// A text with nothing but whitespace scores 0 on every part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coherence {
    /// The mean of the three parts.
    pub score: f64,
    /// The letters part.
    pub alpha: f64,
    /// The repetition part (1 = nothing repeats).
    pub repetition: f64,
    /// The sentence structure part.
    pub structure: f64,
}

/// Scores texts for coherence (see [`Coherence`]). It keeps a scratch buffer between
/// calls, so that scoring allocates nothing once warm; one scorer per thread.
///
/// ```
/// let mut scorer = weave_steps::CoherenceScorer::new();
/// let good = scorer.score("My order arrived with a cracked screen. Can I get a replacement?");
/// assert_eq!(good.score, 1.0);
/// let spam = scorer.score("buy now buy now buy now buy now buy now");
/// assert!(spam.repetition < 0.5 && spam.score < 0.6);
/// ```
#[derive(Debug, Default)]
pub struct CoherenceScorer {
    /// The current text's trigram keys. Sorted to count repeats rather than put in a hash
    /// set, whose `clear` would cost as much as the longest text seen, on every call.
    trigrams: Vec<u64>,
}

/// Letters among non-whitespace characters at which the letters part reaches 1.
const PROSE_ALPHA_RATIO: f64 = 0.8;
/// The sentence lengths, in words, that count as sane.
const SENTENCE_WORDS: std::ops::RangeInclusive<u32> = 2..=50;

impl CoherenceScorer {
    /// A scorer.
    pub fn new() -> Self {
        CoherenceScorer::default()
    }

    /// The coherence of `text`.
    pub fn score(&mut self, text: &str) -> Coherence {
        if text.trim().is_empty() {
            return Coherence { score: 0.0, alpha: 0.0, repetition: 0.0, structure: 0.0 };
        }
        let alpha = (alpha_ratio(text) / PROSE_ALPHA_RATIO).min(1.0);
        let repetition = 1.0 - repeated_line_ratio(text).max(self.repeated_trigram_ratio(text));
        let structure = sentence_structure(text);
        Coherence { score: (alpha + repetition + structure) / 3.0, alpha, repetition, structure }
    }

    /// The share of word trigrams that repeat an earlier trigram of the text (0 for fewer
    /// than three words). Words are compared without ASCII case and without the ASCII
    /// punctuation around them; words of punctuation alone are skipped.
    fn repeated_trigram_ratio(&mut self, text: &str) -> f64 {
        self.trigrams.clear();
        let (mut prev2, mut prev1) = (0u64, 0u64);
        let mut words = 0u64;
        for w in text.split_whitespace() {
            let w = w.trim_matches(|c: char| c.is_ascii_punctuation());
            if w.is_empty() {
                continue;
            }
            let h = word_hash(w);
            words += 1;
            if words >= 3 {
                // Rotations keep the order of the words in the key.
                self.trigrams.push(prev2 ^ prev1.rotate_left(21) ^ h.rotate_left(42));
            }
            (prev2, prev1) = (prev1, h);
        }
        if self.trigrams.is_empty() {
            return 0.0;
        }
        self.trigrams.sort_unstable();
        let distinct = 1 + self.trigrams.windows(2).filter(|w| w[0] != w[1]).count();
        (self.trigrams.len() - distinct) as f64 / self.trigrams.len() as f64
    }
}

/// FNV-1a of the word's bytes, ASCII letters folded to lower case.
fn word_hash(w: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in w.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Whether `c` ends a sentence.
fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '\u{2026}' | '\u{3002}' | '\u{ff01}' | '\u{ff1f}')
}

/// Whether `c` may follow a sentence's terminal punctuation (`He said "no."`).
fn is_closing(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '\u{201d}' | '\u{2019}' | '\u{bb}')
}

/// The sentence structure part of [`Coherence`].
fn sentence_structure(text: &str) -> f64 {
    #[derive(Default)]
    struct Sentence {
        /// Whether a letter or digit has been seen, and the first one was not lower case.
        has_alnum: bool,
        capitalised: bool,
        words: u32,
        in_word: bool,
    }
    let (mut sum, mut sentences) = (0.0, 0u32);
    let mut finish = |s: &mut Sentence, ended: bool| {
        if s.has_alnum {
            let marks = u32::from(s.capitalised) + u32::from(ended) + u32::from(SENTENCE_WORDS.contains(&s.words));
            sum += f64::from(marks) / 3.0;
            sentences += 1;
        }
        *s = Sentence::default();
    };
    let mut s = Sentence::default();
    // After terminal punctuation (and any closing quotes): the sentence ends at whitespace.
    let mut ending = false;
    for c in text.chars() {
        if ending && c.is_whitespace() {
            finish(&mut s, true);
            ending = false;
            continue;
        }
        if c == '\n' {
            finish(&mut s, false);
            continue;
        }
        if is_terminal(c) {
            ending = true;
        } else if !(ending && is_closing(c)) {
            // A full stop inside a word ("3.14", "e.g") does not end the sentence.
            ending = false;
        }
        if c.is_whitespace() {
            s.in_word = false;
            continue;
        }
        if !s.in_word {
            s.in_word = true;
            s.words += 1;
        }
        if !s.has_alnum && c.is_alphanumeric() {
            s.has_alnum = true;
            s.capitalised = !c.is_lowercase();
        }
    }
    finish(&mut s, ending);
    if sentences == 0 { 0.0 } else { sum / f64::from(sentences) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(text: &str) -> Coherence {
        CoherenceScorer::new().score(text)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn prose_scores_full_marks() {
        let c = score("My order #4417 arrived with a cracked screen, can I get a replacement? Thanks for your help.");
        assert_eq!((c.alpha, c.repetition, c.structure, c.score), (1.0, 1.0, 1.0, 1.0));
    }

    #[test]
    fn empty_and_blank_texts_score_zero() {
        for t in ["", "   \n\t "] {
            assert_eq!(score(t).score, 0.0, "{t:?}");
        }
    }

    #[test]
    fn symbols_lose_the_letters_part() {
        let c = score("$$$ 100% ### !!! 555-1234");
        assert_eq!(c.alpha, 0.0);
        // Two sentences: "$$$ 100% ### !!!" (all three marks) and "555-1234" (capital only).
        assert!(close(c.structure, (1.0 + 1.0 / 3.0) / 2.0), "{c:?}");
        assert!(c.score < 0.6, "{c:?}");
    }

    #[test]
    fn repeated_trigrams_and_lines_lose_the_repetition_part() {
        // 8 trigrams, of which 6 repeat "buy now buy" or "now buy now".
        let c = score("buy now buy now buy now buy now buy now");
        assert!(close(c.repetition, 0.25), "{c:?}");
        // Case and punctuation around words do not hide a repeat.
        assert!(close(score("Buy now, buy NOW! buy now").repetition, score("buy now buy now buy now").repetition));
        // Lines: 2 of 4 repeat an earlier one; the trigram ratio is lower here.
        let c = score("Click here.\nClick here.\nClick here.\nGoodbye now.");
        assert!(close(c.repetition, 0.5), "{c:?}");
        assert_eq!(score("The cat sat on the mat.").repetition, 1.0);
    }

    #[test]
    fn sentences_are_marked_on_capital_ending_and_length() {
        // No capital, no ending, 2 words: one mark of three.
        assert!(close(score("hello world").structure, 1.0 / 3.0));
        assert_eq!(score("Hello world.").structure, 1.0);
        // A one-word sentence misses the length mark; quotes may close a sentence.
        assert!(close(score("He said \"No.\" Then he left!").structure, 1.0));
        assert!(close(score("Thanks!").structure, 2.0 / 3.0));
        // A decimal point is not the end of a sentence; a line break is.
        assert_eq!(score("Pi is 3.14 roughly.").structure, 1.0);
        assert!(close(score("Title here\nThe body follows.").structure, (2.0 / 3.0 + 1.0) / 2.0));
        // Scripts without case count as capitalised.
        assert_eq!(score("これは 文 です。").structure, 1.0);
        let long = format!("{}.", vec!["Word"; 51].join(" "));
        assert!(close(score(&long).structure, 2.0 / 3.0));
    }

    #[test]
    fn the_readme_examples_hold() {
        let cases = [
            ("My order arrived broken. Can I get a replacement?", 1.0),
            ("password reset email never arrives", 7.0 / 9.0),
            ("buy now buy now buy now buy now buy now", (1.0 + 0.25 + 1.0 / 3.0) / 3.0),
            ("$$$ 100% ### !!!", 2.0 / 3.0),
        ];
        for (text, want) in cases {
            assert!(close(score(text).score, want), "{text:?}: {:?}", score(text));
        }
    }

    #[test]
    fn the_scorer_is_reusable_and_deterministic() {
        let mut s = CoherenceScorer::new();
        let a = s.score("buy now buy now buy now");
        let _ = s.score("Something else entirely, with other words.");
        assert_eq!(s.score("buy now buy now buy now"), a);
    }
}
