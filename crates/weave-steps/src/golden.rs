//! Golden tests of the text kernels: every rule-based noiser, the whitespace and case
//! rewrites of `clean`, and the key normalisation of `dedup`, run over one varied fixed
//! corpus with fixed seeds, each pinned by a blake3 of everything it wrote.
//!
//! These outputs are part of the output contract (see `weave_core::rng`): a faster kernel
//! must write the same bytes. They were recorded before the kernels were tuned for speed;
//! a change here is a change of every seeded dataset, and needs a step version bump.

use weave_core::{Batch, Record, StrColumn};

use crate::dedup::RecordKeys;
use crate::noise::{
    CaseNoise, Frequency, LocalShuffle, Noiser, PatternNoiser, PatternSet, PunctuationNoise, Rng, Scratch, Severity,
    Typos, WhitespaceNoise, WordDropout, built_in, hash_bytes, record_seed,
};
use crate::text::{collapse_into, lowercase_into, trim_collapse_into, trim_into};

/// Hand-picked texts: every kind of character and space the kernels decide on, edge
/// cases, and the words of the typos tables.
const FIXED: &[&str] = &[
    "",
    " ",
    "\t\n\r\u{b}\u{c}",
    "a",
    "I",
    "The quick brown fox jumps over the lazy dog, twice.",
    "  leading and trailing  ",
    "their there they're your you're its it's to too two then than",
    "I definitely receive the separate package tomorrow, because it's necessary.",
    "THE QUICK BROWN FOX. Hello World! iPhone JavaScript McDonald's",
    "naïve café Ωmega straße ǅemal İstanbul ÉCOLE Ärger Œuvre",
    "日本語のテキスト 中文 한국어 text mixed 日本 語",
    "emoji 🙂ok 👍🏽 👨‍👩‍👧 family 🇫🇷 flag",
    "combining e\u{301}te\u{301} cafe\u{301} n\u{303}o a\u{308}\u{304}",
    "tabs\tand\nnewlines\r\nand\u{a0}nbsp\u{2003}em\u{3000}ideographic\u{2028}line\u{85}next",
    "\u{a0}\u{a0}only\u{1680}ogham\u{2000}\u{200a}\u{202f}\u{205f}spaces\u{feff}zwnbsp\u{200b}zwsp",
    "(hello), [world]; {braces}! \"quoted\" 'single' ¿Qué? ¡Hola! «guillemets» — dash…",
    "numbers 1234 3.14 -7 1e10 0x1F 50% $100 #tag @user",
    "don't won't can't shouldn't it\u{2019}s o'clock rock'n'roll",
    "a. b, c; d: e! f? g.. h,, i!!",
    "x",
    "--- *** ... ,,, !!!",
    "Hi",
];

/// A deterministic corpus: the fixed texts, very long words, and texts built from a
/// vocabulary of every kind above, joined by every kind of space.
fn corpus() -> Vec<String> {
    let mut texts: Vec<String> = FIXED.iter().map(|s| (*s).to_owned()).collect();
    texts.push("a".repeat(300));
    texts.push(format!("short {} end", "supercalifragilistic".repeat(20)));
    texts.push("é".repeat(200));
    texts.push(format!("{} {}", "日本".repeat(100), "x".repeat(500)));
    let vocab: Vec<&str> = FIXED.iter().flat_map(|s| s.split_whitespace()).collect();
    let spaces = [" ", " ", " ", " ", "  ", "\t", "\n", "\u{a0}", "\u{3000}", " \r\n "];
    let mut rng = Rng::new(0x0060_1de4);
    for i in 0..400 {
        let words = rng.below(60) + usize::from(i % 7 != 0);
        let mut t = String::new();
        if rng.below(5) == 0 {
            t.push_str(spaces[rng.below(spaces.len())]);
        }
        for w in 0..words {
            if w > 0 {
                t.push_str(spaces[rng.below(spaces.len())]);
            }
            t.push_str(vocab[rng.below(vocab.len())]);
        }
        if rng.below(5) == 0 {
            t.push_str(spaces[rng.below(spaces.len())]);
        }
        texts.push(t);
    }
    texts
}

/// The blake3 (hex) of everything `noiser` writes for every text of the corpus with each
/// of a few seeds, and of the changed-word counts it returns.
fn noise_digest(noiser: &dyn Noiser, texts: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    let mut scratch = Scratch::default();
    let mut out = String::new();
    for text in texts {
        for s in 0..4u64 {
            let seed = record_seed(s, hash_bytes(b"golden"), text);
            out.clear();
            let changed = noiser.apply(text, &mut Rng::substream(seed, 0), &mut scratch, &mut out);
            h.update(out.as_bytes());
            h.update(&[0xff]);
            h.update(&(changed as u64).to_le_bytes());
        }
    }
    h.finalize().to_hex().to_string()
}

fn pattern(noiser: &'static str, name: &str, rate: f64) -> PatternNoiser {
    let set = PatternSet::parse(&built_in(noiser, name).unwrap_or_default()).unwrap_or_else(|e| panic!("{e:?}"));
    PatternNoiser::new(noiser, String::new(), &set, &[], rate)
}

/// Every rule-based noiser, at its default setting and at a high rate.
fn noisers() -> Vec<(String, Box<dyn Noiser>)> {
    let mut all: Vec<(String, Box<dyn Noiser>)> = Vec::new();
    let freqs = [
        ("low", Frequency::Low),
        ("moderate", Frequency::Moderate),
        ("high", Frequency::High),
        ("1.0", Frequency::Rate(1.0)),
    ];
    let sevs = [("mild", Severity::Mild), ("moderate", Severity::Moderate), ("severe", Severity::Severe)];
    for (f, freq) in freqs {
        for (s, sev) in sevs {
            all.push((format!("typos {f} {s}"), Box::new(Typos::new(freq, sev))));
        }
    }
    for rate in [0.1, 0.6] {
        all.push((format!("case {rate}"), Box::new(CaseNoise::new(rate))));
        all.push((format!("whitespace {rate}"), Box::new(WhitespaceNoise::new(rate))));
        all.push((format!("punctuation {rate}"), Box::new(PunctuationNoise::new(rate))));
        all.push((format!("dropout {rate}"), Box::new(WordDropout::new(rate))));
        all.push((format!("shuffle {rate}"), Box::new(LocalShuffle::new(rate, 3))));
    }
    for (noiser, names, rate) in [
        ("language", crate::noise::BUILT_IN_LANGUAGES, 0.3),
        ("domain", crate::noise::BUILT_IN_DOMAINS, 0.3),
        ("style", crate::noise::BUILT_IN_STYLES, 1.0),
        ("synonyms", &["en"][..], 0.3),
    ] {
        for name in names {
            for r in [rate, if rate < 1.0 { 1.0 } else { 0.5 }] {
                all.push((format!("{noiser} {name} {r}"), Box::new(pattern(noiser, name, r))));
            }
        }
    }
    all
}

/// Compares `got` with `want` line by line, printing the whole table on a difference so
/// that a deliberate change (with its version bump) is one paste.
fn check(got: &[(String, String)], want: &[(&str, &str)]) {
    let same = got.len() == want.len() && got.iter().zip(want).all(|((a, b), (c, d))| a == c && b == d);
    if !same {
        let table: String = got.iter().map(|(name, digest)| format!("    (\"{name}\", \"{digest}\"),\n")).collect();
        panic!("golden outputs changed; what the code writes now:\n{table}");
    }
}

#[test]
fn every_noiser_writes_its_golden_output() {
    let texts = corpus();
    let got: Vec<(String, String)> =
        noisers().iter().map(|(n, x)| (n.clone(), noise_digest(x.as_ref(), &texts))).collect();
    check(&got, NOISE_GOLDEN);
}

/// A text rewrite of `text.rs`.
type Rewrite = fn(&str, &mut weave_core::Appender<'_>);

#[test]
fn text_rewrites_write_their_golden_output() {
    let texts = corpus();
    let rewrites: [(&str, Rewrite); 4] = [
        ("trim_collapse", trim_collapse_into),
        ("trim", trim_into),
        ("collapse", collapse_into),
        ("lowercase", lowercase_into),
    ];
    let mut got = Vec::new();
    for (name, f) in rewrites {
        let mut col = StrColumn::new();
        for t in &texts {
            col.push_with(|a| f(t, a));
        }
        let mut h = blake3::Hasher::new();
        for v in col.iter() {
            h.update(v.unwrap_or_default().as_bytes());
            h.update(&[0xff]);
        }
        got.push((name.to_owned(), h.finalize().to_hex().to_string()));
    }
    check(&got, TEXT_GOLDEN);
}

#[test]
fn dedup_keys_are_golden() {
    let texts = corpus();
    let records: Vec<Record> = texts.iter().map(|t| Record::new().with("text", t.as_str())).collect();
    let batch = Batch::from_records(&records);
    let mut got = Vec::new();
    for mask in 0..8u8 {
        let norm: Vec<&str> = ["lowercase", "trim", "collapse_whitespace"]
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect();
        let config = format!("fields = [\"text\"]\nnormalize = {norm:?}");
        let keys = RecordKeys::read(&crate::tests::params(&config), "x").expect("valid keys");
        // The bytes each key is made from, hashed as the keys were when this was recorded
        // (the first 16 bytes of their blake3): the keys' own hash has a secret of each
        // run, the bytes are what the normalisation decides.
        let mut h = blake3::Hasher::new();
        for bytes in keys.batch_key_bytes(&batch).expect("the text column") {
            h.update(&blake3::hash(&bytes).as_bytes()[..16]);
        }
        got.push((norm.join("+"), h.finalize().to_hex().to_string()));
    }
    check(&got, DEDUP_GOLDEN);
}

const NOISE_GOLDEN: &[(&str, &str)] = &[
    ("typos low mild", "bb28465dc27d409ae71a4466b1f9ede16d0b4d8efd105b8e5d6d7cae798115e5"),
    ("typos low moderate", "01302d7b4a200efaf059a47ef2deab15017d92a59743bebc968b1492092db76f"),
    ("typos low severe", "c23679579b309044c03df6ff6e30f2a9057815378cf6207b251b37080b6db168"),
    ("typos moderate mild", "e2d7f4b470013baf35d7082de0d3fff784633f0f631b0a7b40e222f15ff21a5b"),
    ("typos moderate moderate", "a795cd899166a3a1b8a99c8d3710bf92562fa3c85bff3d3c45cf338f3efa14c7"),
    ("typos moderate severe", "97231d6a00576cfddc1587a88bc18c8a69d5f36961f37c5112a04affd5046704"),
    ("typos high mild", "d06fc836691f8d0ac028a65bee9699b0e6de6e4dd4a9cd6b20c256424a4053fe"),
    ("typos high moderate", "a45a36e2b0ee45e9b18c0563465540039f7f3407dcdfefb3e9280551d05dfcc8"),
    ("typos high severe", "637f948dc3408338d3f0dffcf446573a04eb5e15a034ddb4b9d303e6d9a42c6a"),
    ("typos 1.0 mild", "38692c5d3e6dcaa5105ddf93512315a1a6483c147b4fcd7a3c3dff576429c231"),
    ("typos 1.0 moderate", "4ff09d6a9f1286bdb9fce4113dad67df8f8bd8d7e362e3e885228ce498773547"),
    ("typos 1.0 severe", "0434df34637c0375dba379964e1000ccb3d5b767dd8ae5922fd44f830edafdf3"),
    ("case 0.1", "0d6a12be759e41b2c7d18cd4ab5bb2f9b181fe167ae44d90c9d41f7927bab4cf"),
    ("whitespace 0.1", "d7ab6090d63ac2d4727b7ff4ae175e5e3d71db9ed4e5bcfa3df76c6cdaea1118"),
    ("punctuation 0.1", "2750217e93191d9dc8ed479c154886dad2d26745dbd05cd1a82c70d583a1caf0"),
    ("dropout 0.1", "b0363df5cb0f8768078cbec2717030809b644c6b7261c98f35ab64a672a4ca07"),
    ("shuffle 0.1", "59cf56b228519817d68c107a94984c004d70dd93fc7b7953d8791558bf762dc2"),
    ("case 0.6", "3b0e1b80e6cb63c6a6aff1dfb97323a6efa8deb0483ec3627ec13e201a5e1afc"),
    ("whitespace 0.6", "c2519f96695157eb1a21b355cd648621beca50ef362e81a494744dce580d33a3"),
    ("punctuation 0.6", "ec80aba67caeb79850910fa8ee1e0b2eb4c92337e9b59f60c0330e37c1126c4d"),
    ("dropout 0.6", "715e2d7421b9b51a6d2d40b79c095b5ef7841ea4f0a2d41e6e8edba145c500f2"),
    ("shuffle 0.6", "5a2c1ac8dd606851abdaf50c7d5137ae3442db736f181d108ea17f3c90739b69"),
    ("language en 0.3", "97a46845641526cd936ea4656e03cad64e8517826858460bd28320951fd11e30"),
    ("language en 1", "61fbcfaf2474ddaa4beede587ebd2d51ad8c58105b3db73068c06ffd3c2dce72"),
    ("language es 0.3", "605571b1fb47a8d2d58d1cb2477b03bddf9516e3d5b34fb398e6eecc1f0da31d"),
    ("language es 1", "90577b8e76d896967cf88a2460b7392a958d761126d38da6188cfa6f2954a0a9"),
    ("domain programming 0.3", "85c3050b39127192635bc2887255b45577addc9c806acdb8f79775cc705b9b2d"),
    ("domain programming 1", "2149ef6de38d83e44cdf1bacc6aa14bbc4682c9b98b78c013722a367c7256619"),
    ("domain medical 0.3", "f429e48bebc397a366a3054ccfd49f2b9349e83f348577c50ed25ba180b11e4b"),
    ("domain medical 1", "150cabbb2d3e0960a5d3166490fe5a13a218d74fc43bb6b4aa4e037f3207db38"),
    ("domain legal 0.3", "0f3f01a5f2f56e8182336bf9ce359c9699d834c59402a6fd6734c3098d935c27"),
    ("domain legal 1", "15f5c9fe4a6368810189095d2428b4467726200e9a196232a007b39069fa7663"),
    ("domain scientific 0.3", "c9c064ad0974c656b41b98265b7c316642b408ae2dac9d362153305417eb2ab6"),
    ("domain scientific 1", "305d3305eecee80f19e9b4ea8ea2793d813681105e5738f2b48531d7b527b03f"),
    ("style technical 1", "453a426072e5161f6cb54037b13d0d90c587137e7a5479c8dc041c550dea45df"),
    ("style technical 0.5", "95346bdedf28235a1386d6a9cea1f3b3142cb0202dbacae87be8a169d5ae496e"),
    ("style casual 1", "7834df908b151338c4a7d047f5c4e36c87740fa578f65da80ea8bdb725c2d7a2"),
    ("style casual 0.5", "eb556ca6e9997a2ad85334c8166a6fa9032c8655dadf2e47dbfc0d2569dea14d"),
    ("style academic 1", "a66668859955a179dfea7c82b99c92995be4504536c26b4f1be5e58f3ca4778f"),
    ("style academic 0.5", "f782be5747b718f3b273e410432fee9cd1dfbdc02362eb56678ea62254d95d55"),
    ("style business 1", "18d259975a7eb557274613d160927a9a820e6ea23700695278ed3c23fece9711"),
    ("style business 0.5", "f443ba72590778c267fbb04853dad3afa3ad7c60330d39927a71783442f113ca"),
    ("synonyms en 0.3", "93b3b2ca9b399ed528350dd0f65376b3d5af529d74d979b2f12017025cd1a2fa"),
    ("synonyms en 1", "d9dfe4912db55e5a879771045aba68dac7f6b38dc94e05892cc6f8f59f44a448"),
];

const TEXT_GOLDEN: &[(&str, &str)] = &[
    ("trim_collapse", "61bd61b78e3ee660f1516988668cd630dfc146c6f24a7c9c47553c3f30041ae0"),
    ("trim", "d789924930f07ebd599283fe19ae39d7bd559096535b2a04e5ac3298de667436"),
    ("collapse", "8f81c8e1a321f07784e53f4ca3042115faa813201e56e13a3043c5786e3b7ba4"),
    ("lowercase", "9e9fba8ba37623e512e0c48bc267b4d2900ff0e57c2b159f2f913a450b1791b0"),
];

const DEDUP_GOLDEN: &[(&str, &str)] = &[
    ("", "b58ffaa95a69a7a73163ce430b07def709d4405c324c24942abf6939c79046b4"),
    ("lowercase", "cd3495337abdb1feb4650a23ddafcb73fd9879f1b87675f7d2a9ecf759cc0654"),
    ("trim", "d3e45771393f9614dc77205ef597e82a3eb80c5c6c7d5cf64e149449df097917"),
    ("lowercase+trim", "17cc2bf3e1a5249acfb63dddf522eb87e62a549b5f2800c632e42181db439a00"),
    ("collapse_whitespace", "3449908165638a32ad0d2d80c76980fa84ea0d4d360824a5d8e84e3939241973"),
    ("lowercase+collapse_whitespace", "0aaa3410ce766b307b1739723ceddb789874db5d243cb06fad30b0e760de8568"),
    ("trim+collapse_whitespace", "3449908165638a32ad0d2d80c76980fa84ea0d4d360824a5d8e84e3939241973"),
    ("lowercase+trim+collapse_whitespace", "0aaa3410ce766b307b1739723ceddb789874db5d243cb06fad30b0e760de8568"),
];
