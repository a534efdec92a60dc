//! The documented rates, measured: every noiser with a frequency or a rate is run over a
//! generated 100,000-row corpus and the share of what it changed, measured from outside
//! (by [`changed_words`], or by comparing whole rows), must lie in the band README.md
//! gives for it (keep the two in step).
//!
//! Debug builds are slow, so the rows are short (2 to 4 words): the noisers treat a word
//! the same wherever it stands (the last word of a text joins the word before it, for
//! instance), so short rows measure what long texts get.

use super::*;

/// Rows in each measured corpus.
const ROWS: usize = 100_000;

/// Ordinary words, some capitalised, some with punctuation: the word-level corpus.
const WORDS: &[&str] = &[
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "while",
    "rain",
    "fell",
    "outside",
    "window,",
    "people",
    "often",
    "forget",
    "that",
    "simple",
    "tools",
    "work",
    "best.",
    "Every",
    "morning",
    "she",
    "walked",
    "her",
    "dog",
    "along",
    "river",
    "bank",
    "before",
    "breakfast.",
    "Data",
    "pipelines",
    "need",
    "careful",
    "testing",
    "and",
    "clear",
    "errors;",
    "model",
    "learned",
    "from",
    "examples",
    "written",
    "by",
    "hand.",
    "Paris",
    "is",
    "large",
    "city",
    "with",
    "many",
    "museums,",
    "parks",
    "cafés",
    "bridges.",
    "we",
    "shipped",
    "release",
    "last",
    "week",
    "after",
    "long",
    "review",
    "process.",
    "Please",
    "send",
    "report",
    "tomorrow",
    "morning!",
    "numbers",
    "can",
    "be",
    "tricky",
    "when",
    "units",
    "are",
    "missing",
    "(or",
    "wrong).",
    "They",
    "said",
    "it's",
    "fine",
    "but",
    "nobody",
    "checked",
    "Green",
    "tea",
    "cools",
    "quickly",
    "in",
    "winter",
    "air.",
    "Our",
    "team",
    "meets",
    "Tuesday",
    "to",
    "plan",
    "next",
    "sprint",
    "goals.",
    "I",
    "think",
    "answer",
    "was",
    "right",
    "there",
    "all",
    "along.",
];

/// A corpus of `rows` rows of `min` to `max` words drawn from `WORDS`, the same every time.
fn word_corpus(rows: usize, min: usize, max: usize) -> Vec<String> {
    let mut rng = Rng::new(2024);
    (0..rows)
        .map(|_| {
            let n = min + rng.below(max - min + 1);
            let mut row = String::new();
            for k in 0..n {
                if k > 0 {
                    row.push(' ');
                }
                row.push_str(WORDS[rng.below(WORDS.len())]);
            }
            row
        })
        .collect()
}

/// What `noiser` changed over `rows`, each row noised with a stream of its own:
/// (share of words changed as measured, share as the noiser reported, share of rows changed).
fn measure(noiser: &dyn Noiser, rows: &[String]) -> (f64, f64, f64) {
    let words: usize = rows.iter().map(|r| r.split_whitespace().count()).sum();
    let (mut measured, mut reported, mut rows_changed) = (0, 0, 0);
    let mut scratch = Scratch::default();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.clear();
        reported += noiser.apply(row, &mut Rng::substream(i as u64, 0), &mut scratch, &mut out);
        measured += changed_words(row, &out);
        rows_changed += usize::from(out != *row);
    }
    (measured as f64 / words as f64, reported as f64 / words as f64, rows_changed as f64 / rows.len() as f64)
}

/// Runs `f` on every item, on two threads (the measurements are independent).
fn on_two_threads<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let (a, b) = items.split_at(items.len() / 2);
    std::thread::scope(|s| {
        let h = s.spawn(|| b.iter().map(&f).collect::<Vec<R>>());
        let mut out: Vec<R> = a.iter().map(&f).collect();
        out.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        out
    })
}

#[test]
fn word_noisers_change_the_documented_share_of_words() {
    let rows = word_corpus(ROWS, 2, 4);
    // Each noiser at a documented setting, and the band README.md gives for it.
    let cases: Vec<(&str, Box<dyn Noiser>, f64, f64)> = vec![
        ("typos low", Box::new(Typos::new(Frequency::Low, Severity::Mild)), 0.025, 0.04),
        ("typos moderate", Box::new(Typos::new(Frequency::Moderate, Severity::Mild)), 0.09, 0.12),
        ("typos high", Box::new(Typos::new(Frequency::High, Severity::Mild)), 0.23, 0.29),
        ("case 0.1", Box::new(CaseNoise::new(0.1)), 0.09, 0.11),
        ("whitespace 0.1", Box::new(WhitespaceNoise::new(0.1)), 0.09, 0.11),
        ("punctuation 0.1", Box::new(PunctuationNoise::new(0.1)), 0.09, 0.11),
        ("dropout 0.1", Box::new(WordDropout::new(0.1)), 0.09, 0.11),
        ("shuffle 0.1", Box::new(LocalShuffle::new(0.1, 3)), 0.085, 0.10),
        ("shuffle 0.3", Box::new(LocalShuffle::new(0.3, 3)), 0.23, 0.26),
    ];
    let results = on_two_threads(&cases, |(_, n, _, _)| measure(&**n, &rows));
    let mut problems = Vec::new();
    for ((name, _, lo, hi), (measured, reported, _)) in cases.iter().zip(results) {
        if !(*lo..=*hi).contains(&measured) {
            problems.push(format!("{name}: {measured:.4} of the words changed, documented {lo}..{hi}"));
        }
        // What a noiser says it changed is what changed (up to repeated words, which a
        // shuffle can move without a reader seeing it).
        if (reported - measured).abs() > 0.001 {
            problems.push(format!("{name}: reported {reported:.4} changed, measured {measured:.4}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn pattern_noisers_apply_at_their_rate() {
    use super::patterns::PatternSet;
    // Each pattern noiser at its default rate (and a style at 0.5, since every match at
    // 1 cannot show a rate), over rows that each hold one place where it applies.
    let cases: &[(&str, &str, f64)] = &[
        ("language", "en", 0.3),
        ("language", "es", 0.3),
        ("domain", "programming", 0.3),
        ("domain", "medical", 0.3),
        ("domain", "legal", 0.3),
        ("domain", "scientific", 0.3),
        ("synonyms", "en", 0.3),
        ("style", "technical", 1.0),
        ("style", "casual", 0.5),
        ("style", "academic", 1.0),
        ("style", "business", 0.5),
    ];
    let results = on_two_threads(cases, |&(noiser, name, rate)| {
        let set = PatternSet::parse(&built_in(noiser, name).unwrap_or_default()).unwrap_or_default();
        let n = PatternNoiser::new("test", String::new(), &set, &[], rate);
        let examples: Vec<String> = n.examples().into_iter().filter(|e| n.sites(e) == 1).collect();
        let rows: Vec<&String> = examples.iter().cycle().take(ROWS).collect();
        let mut scratch = Scratch::default();
        let mut out = String::new();
        let mut changed = 0;
        for (i, row) in rows.iter().enumerate() {
            out.clear();
            n.apply(row, &mut Rng::substream(i as u64, 0), &mut scratch, &mut out);
            changed += usize::from(out != **row);
        }
        (examples.len(), changed as f64 / rows.len() as f64)
    });
    let mut problems = Vec::new();
    for (&(noiser, name, rate), (examples, share)) in cases.iter().zip(results) {
        if examples < 10 {
            problems.push(format!("{noiser} {name}: only {examples} usable examples"));
        }
        if (share - rate).abs() > 0.015 {
            problems.push(format!("{noiser} {name}: {share:.4} of the places changed at rate {rate}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
