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

/// Local shuffle: words trade places with one of the next `window - 1` words, never
/// moving further than that, so that about `rate` of the words are out of order (as a
/// word diff counts them: a swap of neighbours is one word out of order, a swap over a
/// distance two). The spaces stay where they are.
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
        // A swap over a distance of 1 puts one word out of order, over a longer distance
        // two; distances are equally likely, so this many swaps per word give `rate`.
        let w = self.window as f64;
        let swap = self.rate * (w - 1.0) / (2.0 * w - 3.0);
        for i in 0..n.saturating_sub(1) {
            // A word moves at most once, so that it never ends up further than the window.
            if order[i] == i as u32 && rng.chance(swap) {
                let reach = (self.window - 1).min(n - 1 - i);
                let j = i + 1 + rng.below(reach);
                if order[j] == j as u32 {
                    order.swap(i, j);
                }
            }
        }
        for (k, t) in toks.iter().enumerate() {
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
