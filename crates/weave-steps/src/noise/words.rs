//! Word-level noise: words dropped, words shuffled within a short distance.

use super::{Noiser, Rng, Scratch, tokenize, trailing};

/// Word dropout: each word is left out with probability `rate`; the spaces of the words
/// that stay are kept. A short text can lose every word.
#[derive(Debug, Clone)]
pub struct WordDropout {
    rate: f64,
}

impl WordDropout {
    /// Dropout at `rate` (from 0 to 1).
    pub fn new(rate: f64) -> Self {
        WordDropout { rate }
    }
}

impl Noiser for WordDropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn settings(&self) -> String {
        format!("rate={}", self.rate)
    }

    fn apply(&self, text: &str, rng: &mut Rng, scratch: &mut Scratch, out: &mut String) -> usize {
        tokenize(text, &mut scratch.toks);
        let toks = &scratch.toks;
        let mut dropped = 0;
        let mut first = true;
        for t in toks {
            if rng.chance(self.rate) {
                dropped += 1;
                continue;
            }
            // The first word kept takes the text's leading whitespace, the others their own.
            let ws = if first { &text[toks[0].ws..toks[0].start] } else { &text[t.ws..t.start] };
            out.push_str(ws);
            out.push_str(&text[t.start..t.end]);
            first = false;
        }
        if first && let Some(t) = toks.first() {
            out.push_str(&text[t.ws..t.start]);
        }
        out.push_str(trailing(text, toks));
        dropped
    }
}

/// Local shuffle: each word, with probability `rate`, moves forward by 1 to `window - 1`
/// places (back, where it cannot move forward), the words it passes shifting by one. A moved
/// word is one word out of order for a word diff, so about `rate` of the words are; no
/// word ends up further than `window - 1` places from where it was. The spaces stay
/// where they are.
#[derive(Debug, Clone)]
pub struct LocalShuffle {
    rate: f64,
    window: usize,
}

impl LocalShuffle {
    /// Shuffle at `rate` (from 0 to 1) within `window` words (at least 2).
    pub fn new(rate: f64, window: usize) -> Self {
        LocalShuffle { rate, window: window.max(2) }
    }
}

/// Marks a word of `order` that has moved.
const MOVED: u32 = 1 << 31;
/// Marks a word of `order` that a word moving back has passed.
const PASSED: u32 = 1 << 30;

impl Noiser for LocalShuffle {
    fn name(&self) -> &'static str {
        "shuffle"
    }

    fn settings(&self) -> String {
        format!("rate={},window={}", self.rate, self.window)
    }

    fn apply(&self, text: &str, rng: &mut Rng, scratch: &mut Scratch, out: &mut String) -> usize {
        tokenize(text, &mut scratch.toks);
        let toks = &scratch.toks;
        let n = toks.len();
        let mut order = std::mem::take(&mut scratch.order);
        order.clear();
        order.extend(0..n as u32);
        // Each word is met once, unmoved, at position `k`: the words before `k` are done,
        // a word moved forward is marked and passed over when `k` reaches it. A word passes
        // unmoved words only (passing a moved word could put it back in order, undoing a
        // move), forward if it can, backward if not; a word passed backward is not passed
        // again, so that nothing drifts beyond the window.
        let mut k = 0;
        while k < n {
            if order[k] & MOVED != 0 || n < 2 || !rng.chance(self.rate) {
                k += 1;
                continue;
            }
            let w = order[k] | MOVED;
            let ahead = order[k + 1..].iter().take(self.window - 1).take_while(|&&o| o & MOVED == 0).count();
            if ahead > 0 {
                let to = k + 1 + rng.below(ahead);
                order.copy_within(k + 1..=to, k);
                order[to] = w;
                // The word now at `k` has not been met yet.
                continue;
            }
            // It may have been pushed back already (by words passing it): that counts too.
            let back = (self.window - 1).saturating_sub((order[k] as usize).saturating_sub(k));
            let behind = order[..k].iter().rev().take(back).take_while(|&&o| o & (MOVED | PASSED) == 0).count();
            if behind > 0 {
                let to = k - 1 - rng.below(behind);
                order.copy_within(to..k, to + 1);
                order[to] = w;
                order[to + 1..=k].iter_mut().for_each(|o| *o |= PASSED);
            }
            k += 1;
        }
        for (k, t) in toks.iter().enumerate() {
            order[k] &= !(MOVED | PASSED);
            let w = toks[order[k] as usize];
            let word = &text[w.start..w.end];
            out.push_str(&text[t.ws..t.start]);
            out.push_str(word);
            // A word that landed on its own double is in order as far as a reader can tell.
            if word == &text[t.start..t.end] {
                order[k] = k as u32;
            }
        }
        out.push_str(trailing(text, toks));
        let changed = n - longest_increasing(&order, &mut scratch.tails);
        scratch.order = order;
        changed
    }
}

/// The length of the longest increasing subsequence of `v` (patience sorting): the words
/// of a shuffled text that are still in order.
fn longest_increasing(v: &[u32], tails: &mut Vec<u32>) -> usize {
    tails.clear();
    for &x in v {
        let i = tails.partition_point(|&t| t < x);
        if i == tails.len() {
            tails.push(x);
        } else {
            tails[i] = x;
        }
    }
    tails.len()
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
    fn dropout_keeps_the_order_and_the_spacing_of_what_stays() {
        let text = "  one two\tthree four  ";
        for seed in 0..200 {
            let (out, c) = run(&WordDropout::new(0.5), text, seed);
            assert_eq!(c, changed_words(text, &out), "{out:?}");
            let kept: Vec<&str> = out.split_whitespace().collect();
            let mut all = text.split_whitespace();
            assert!(kept.iter().all(|k| all.any(|w| w == *k)), "order changed: {out:?}");
            assert!(out.starts_with("  ") && out.ends_with("  "), "{out:?}");
        }
        assert_eq!(run(&WordDropout::new(1.0), " a b ", 1), ("  ".into(), 2));
    }

    #[test]
    fn shuffle_moves_words_within_the_window_only() {
        let text: Vec<String> = (0..30).map(|i| format!("w{i}")).collect();
        let text = text.join(" ");
        for seed in 0..200 {
            let (out, c) = run(&LocalShuffle::new(0.5, 3), &text, seed);
            assert_eq!(c, changed_words(&text, &out));
            for (k, w) in out.split_whitespace().enumerate() {
                let from: usize = w[1..].parse().unwrap();
                assert!(from.abs_diff(k) <= 2, "{w} moved from {from} to {k}: {out}");
            }
            let mut sorted: Vec<&str> = out.split_whitespace().collect();
            sorted.sort_by_key(|w| w[1..].parse::<usize>().unwrap());
            assert_eq!(sorted.join(" "), text, "a word was lost or doubled");
        }
    }
}
