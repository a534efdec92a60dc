//! The `pii` step: finds e-mail addresses, phone numbers, IP addresses, payment card
//! numbers and IBANs in text fields, and redacts them (or drops the record).
//!
//! Each kind is a pattern that finds candidates and a check that keeps only real ones, so
//! that numbers, dates, times, versions and code are left alone: a card number must pass
//! the Luhn check and start as a card network's numbers do; an IBAN must pass its mod-97
//! check; an IPv6 address must parse, with at least three groups written and nothing
//! word-like around it (`Foo::bar` is code); a phone number needs a `+` and a country code,
//! the North American 3-3-4 grouping, or a trunk `0` and 9 to 11 digits in groups.

use std::sync::{Arc, LazyLock};

use regex::Regex;
use weave_core::{
    Batch, CanonicalConfig, Column, Params, Shape, Step, StepContext, StepError, StepInfo, StepKind, StrColumn,
    Transform,
};

/// The `pii` kind.
pub(crate) static KIND: LazyLock<StepKind> = LazyLock::new(|| {
    StepKind::new(
        "pii",
        Shape::Transform,
        "find e-mail addresses, phone numbers, IP addresses, card numbers (Luhn-checked) and IBANs in text fields, and redact them or drop the record",
        ["fields", "kinds", "action"],
        build,
    )
});

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Iban,
    CreditCard,
    Ip,
    Phone,
}

impl Kind {
    /// In the order they are looked for: a span taken by one is not looked at again.
    const ALL: [Kind; 5] = [Kind::Email, Kind::Iban, Kind::CreditCard, Kind::Ip, Kind::Phone];

    fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Iban => "iban",
            Kind::CreditCard => "credit_card",
            Kind::Ip => "ip",
            Kind::Phone => "phone",
        }
    }

    /// What a redacted item is replaced with.
    fn token(self) -> &'static str {
        match self {
            Kind::Email => "[EMAIL]",
            Kind::Iban => "[IBAN]",
            Kind::CreditCard => "[CREDIT_CARD]",
            Kind::Ip => "[IP]",
            Kind::Phone => "[PHONE]",
        }
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i-u)\b[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,24}\b")
        .expect("a valid pattern")
});
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u)\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b").expect("a valid pattern"));
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?-u)\b[0-9](?:[ -]?[0-9]){12,18}\b").expect("a valid pattern"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b")
        .expect("a valid pattern")
});
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}").expect("a valid pattern"));
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?-u)\+[0-9]{1,3}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,4}){1,4}\b",
        r"|(?:\([0-9]{3}\) ?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b",
        r"|\b0[0-9]{1,4}(?:[ .-][0-9]{2,4}){2,4}\b",
    ))
    .expect("a valid pattern")
});

/// The spans of `kind` in `text` that pass its check.
fn find(kind: Kind, text: &str, out: &mut Vec<(usize, usize, Kind)>) {
    // Each kind needs a byte that most text lacks: looked for first, with memchr.
    let needs = match kind {
        Kind::Email => text.contains('@'),
        Kind::Iban => text.bytes().any(|b| b.is_ascii_uppercase()),
        Kind::Ip => text.contains('.') || text.contains(':'),
        Kind::CreditCard | Kind::Phone => text.bytes().any(|b| b.is_ascii_digit()),
    };
    if !needs {
        return;
    }
    let re: &Regex = match kind {
        Kind::Email => &EMAIL,
        Kind::Iban => &IBAN,
        Kind::CreditCard => &CARD,
        Kind::Ip => &IPV4,
        Kind::Phone => &PHONE,
    };
    for m in re.find_iter(text) {
        let ok = match kind {
            Kind::Email => true,
            Kind::Iban => iban_ok(m.as_str()),
            Kind::CreditCard => card_ok(m.as_str()),
            Kind::Ip => !dotted_around(text, m.start(), m.end()),
            Kind::Phone => phone_ok(m.as_str()),
        };
        if ok {
            out.push((m.start(), m.end(), kind));
        }
    }
    if kind == Kind::Ip && text.contains(':') {
        for m in IPV6.find_iter(text) {
            if ipv6_ok(m.as_str()) && !word_around(text, m.start(), m.end()) {
                out.push((m.start(), m.end(), Kind::Ip));
            }
        }
    }
}

/// Whether a dotted quad sits inside a longer dotted run (`1.2.3.4.5`, a version or an
/// OID, not an address).
fn dotted_around(text: &str, start: usize, end: usize) -> bool {
    let b = text.as_bytes();
    let before = start >= 2 && b[start - 1] == b'.' && b[start - 2].is_ascii_digit();
    let after = end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit();
    before || after
}

/// Whether a letter, digit, `_` or `:` touches the span (it is part of a word or of code).
fn word_around(text: &str, start: usize, end: usize) -> bool {
    let b = text.as_bytes();
    let touches = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    (start > 0 && touches(b[start - 1])) || (end < b.len() && touches(b[end]))
}

fn ipv6_ok(s: &str) -> bool {
    let groups = s.split(':').filter(|g| !g.is_empty()).count();
    groups >= 3 && s.parse::<std::net::Ipv6Addr>().is_ok()
}

/// A card number: 13 to 19 digits (spaces or dashes between groups), a card network's
/// first digits, and the Luhn check.
fn card_ok(s: &str) -> bool {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    let n = digits.len();
    let prefix = |k: usize| digits[..k].iter().fold(0u32, |a, &d| a * 10 + u32::from(d));
    let network = match digits[0] {
        4 => matches!(n, 13 | 16 | 19),
        5 => (51..=55).contains(&prefix(2)) && n == 16,
        2 => (2221..=2720).contains(&prefix(4)) && n == 16,
        3 => {
            (matches!(prefix(2), 34 | 37) && n == 15)
                || (prefix(2) == 35 && (16..=19).contains(&n))
                || (matches!(prefix(2), 36 | 38) && n == 14)
                || ((300..=305).contains(&prefix(3)) && n == 14)
        }
        6 => (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3))) && (16..=19).contains(&n),
        _ => false,
    };
    network && luhn(&digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An IBAN: 15 to 34 characters and the ISO 13616 check (mod 97 of the rearranged
/// number is 1).
fn iban_ok(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// A phone number: 8 to 15 digits with a `+` country code, or 10 in the North American
/// grouping, or 9 to 11 after a trunk `0`.
fn phone_ok(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    if s.starts_with('+') {
        (8..=15).contains(&digits)
    } else if s.starts_with('0') {
        (9..=11).contains(&digits)
    } else {
        digits == 10
    }
}

/// Finds and redacts or drops: see the module's documentation and the README.
#[derive(Debug)]
pub(crate) struct Pii {
    fields: Vec<String>,
    kinds: Vec<Kind>,
    drop: bool,
    config: CanonicalConfig,
}

fn build(p: &Params) -> Option<Step> {
    let fields = p.str_list("fields").unwrap_or_else(|| vec!["text".to_owned()]);
    let kinds = match p.str_list("kinds") {
        None => Kind::ALL.to_vec(),
        Some(names) => {
            let mut kinds = Vec::new();
            for n in &names {
                match Kind::ALL.iter().find(|k| k.name() == n) {
                    Some(k) => kinds.push(*k),
                    None => {
                        if let Some(item) = p.item("kinds") {
                            let all: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                            p.error_at(item, format!("unknown kind `{n}`; the kinds are {}", all.join(", ")));
                        }
                    }
                }
            }
            if kinds.is_empty()
                && let Some(item) = p.item("kinds")
                && !p.has_errors()
            {
                p.error_at(item, "`kinds` is empty, so nothing would be looked for");
            }
            // In the order they are looked for, whatever order they are written in.
            Kind::ALL.iter().copied().filter(|k| kinds.contains(k)).collect()
        }
    };
    let drop = p.choice("action", &["redact", "drop"]) == Some("drop");
    if p.has_errors() {
        return None;
    }
    Some(Step::Transform(Arc::new(Pii { fields, kinds, drop, config: p.canonical() })))
}

impl StepInfo for Pii {
    fn fields_read(&self) -> Vec<String> {
        self.fields.clone()
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }
}

impl Pii {
    /// The items in `text`, in order, none overlapping another.
    fn items(&self, text: &str, spans: &mut Vec<(usize, usize, Kind)>) {
        spans.clear();
        let mut found = Vec::new();
        for &k in &self.kinds {
            found.clear();
            find(k, text, &mut found);
            for &(s, e, k) in &found {
                if !spans.iter().any(|&(a, b, _)| s < b && a < e) {
                    spans.push((s, e, k));
                }
            }
        }
        spans.sort_unstable_by_key(|&(s, _, _)| s);
    }
}

impl Transform for Pii {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let mut counts = [0u64; 5];
        let mut with_pii = vec![false; batch.len()];
        let mut out = batch.clone();
        let mut spans = Vec::new();
        for field in &self.fields {
            let Some(col) = batch.column(field) else { continue };
            let Column::Str(strs) = col else { continue };
            let mut redacted = StrColumn::with_capacity(strs.len(), strs.data().len());
            let mut changed = false;
            for (row, v) in strs.iter().enumerate() {
                let Some(text) = v else {
                    redacted.push_null();
                    continue;
                };
                self.items(text, &mut spans);
                if spans.is_empty() {
                    redacted.push(text);
                    continue;
                }
                with_pii[row] = true;
                changed = true;
                let mut s = String::with_capacity(text.len());
                let mut at = 0;
                for &(a, b, k) in &spans {
                    counts[Kind::ALL.iter().position(|x| *x == k).unwrap_or(0)] += 1;
                    s.push_str(&text[at..a]);
                    s.push_str(k.token());
                    at = b;
                }
                s.push_str(&text[at..]);
                redacted.push(&s);
            }
            if changed && !self.drop {
                out = out.with_column(field, Column::Str(redacted)).map_err(|e| StepError::internal(e.to_string()))?;
            }
        }
        for (k, n) in Kind::ALL.iter().zip(counts) {
            if n > 0 {
                ctx.add_stat(k.name(), n);
            }
        }
        let records = with_pii.iter().filter(|&&b| b).count() as u64;
        ctx.add_stat("records_with_pii", records);
        if self.drop && records > 0 {
            for (row, &has) in with_pii.iter().enumerate() {
                if has {
                    ctx.drop_record("contains personal data", || batch.row(row).to_record());
                }
            }
            let keep: Vec<bool> = with_pii.iter().map(|&b| !b).collect();
            return Ok(batch.filter(&keep));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::Record;

    fn redact(text: &str) -> String {
        let Step::Transform(t) = build_step("pii", "") else { panic!() };
        let mut ctx = StepContext::new("pii", 0, 0, Default::default());
        let out = t.apply(&Batch::from_records(&[Record::new().with("text", text)]), &mut ctx).unwrap();
        out.row(0).get_str("text").unwrap().to_owned()
    }

    /// The seeded generator, with what these tests draw from it.
    struct Rng(weave_core::rng::Rng);
    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(weave_core::rng::Rng::new(seed))
        }
        fn below(&mut self, n: u64) -> u64 {
            self.0.below(n as usize) as u64
        }
        fn digits(&mut self, n: usize) -> String {
            (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
        }
    }

    /// A card number of `len` digits starting with `prefix`, its last digit chosen to pass
    /// the Luhn check.
    fn card(rng: &mut Rng, prefix: &str, len: usize) -> String {
        let body = format!("{prefix}{}", rng.digits(len - prefix.len() - 1));
        (0..10).map(|d| format!("{body}{d}")).find(|c| luhn(&c.bytes().map(|b| b - b'0').collect::<Vec<_>>())).unwrap()
    }

    /// A valid IBAN for `country` with a basic bank account number of `len` digits.
    fn iban(rng: &mut Rng, country: &str, len: usize) -> String {
        let bban = rng.digits(len);
        let check = (2..=98).find(|c| iban_ok(&format!("{country}{c:02}{bban}"))).unwrap();
        format!("{country}{check:02}{bban}")
    }

    /// One planted item of each kind a document may hold.
    fn planted(rng: &mut Rng, i: usize) -> (String, Kind) {
        let names = ["ana", "j.smith", "li_wei", "o'neil", "maria.garcia+news"];
        let hosts = ["example.com", "mail.co.uk", "uni-bonn.de", "a.io"];
        match i % 12 {
            0 => (format!("{}{}@{}", names[i % 5].replace('\'', ""), rng.below(100), hosts[i % 4]), Kind::Email),
            1 => (format!("+1 {} {} {}", rng.digits(3), rng.digits(3), rng.digits(4)), Kind::Phone),
            2 => (format!("({}) {}-{}", 200 + rng.below(700), rng.digits(3), rng.digits(4)), Kind::Phone),
            3 => (format!("+44 20 {} {}", rng.digits(4), rng.digits(4)), Kind::Phone),
            4 => (
                format!(
                    "0{} {} {} {} {}",
                    1 + rng.below(9),
                    rng.digits(2),
                    rng.digits(2),
                    rng.digits(2),
                    rng.digits(2)
                ),
                Kind::Phone,
            ),
            5 => (
                format!("{}.{}.{}.{}", 1 + rng.below(223), rng.below(256), rng.below(256), 1 + rng.below(254)),
                Kind::Ip,
            ),
            6 => (format!("2001:db8:{:x}:{:x}::{:x}", rng.below(65536), rng.below(65536), rng.below(65536)), Kind::Ip),
            7 => (card(rng, "4", 16), Kind::CreditCard),
            8 => {
                let prefix = format!("5{}", 1 + rng.below(5));
                let c = card(rng, &prefix, 16);
                (format!("{} {} {} {}", &c[..4], &c[4..8], &c[8..12], &c[12..]), Kind::CreditCard)
            }
            9 => (card(rng, "37", 15), Kind::CreditCard),
            10 => (iban(rng, "DE", 18), Kind::Iban),
            _ => {
                let i = iban(rng, "FR", 23);
                let spaced: Vec<String> =
                    i.as_bytes().chunks(4).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
                (spaced.join(" "), Kind::Iban)
            }
        }
    }

    // Issue 19, item 2: recall on planted items of every kind, each in a sentence.
    #[test]
    fn planted_items_of_every_kind_are_found_and_replaced_by_their_token() {
        let mut rng = Rng::new(0x5eed_cafe);
        let (mut found, mut total) = (0, 0);
        let mut missed = Vec::new();
        for i in 0..1200 {
            let (item, kind) = planted(&mut rng, i);
            let text = format!("Contact: {item}, thanks.");
            total += 1;
            if redact(&text) == format!("Contact: {}, thanks.", kind.token()) {
                found += 1;
            } else {
                missed.push(format!("{item} -> {}", redact(&text)));
            }
        }
        assert!(found * 100 >= total * 99, "recall {found}/{total}; missed: {:?}", &missed[..missed.len().min(10)]);
        assert!(missed.is_empty(), "{missed:?}");
    }

    // ... and nothing redacted in clean documents full of numbers, dates, times and code.
    #[test]
    fn clean_documents_with_numbers_dates_and_code_are_left_alone() {
        let mut rng = Rng::new(0x0dd_ba11);
        for i in 0..1000 {
            let doc = match i % 10 {
                0 => format!(
                    "Invoice {} dated 2024-{:02}-{:02} totals ${}.{:02}.",
                    rng.digits(8),
                    1 + rng.below(12),
                    1 + rng.below(28),
                    rng.below(10_000),
                    rng.below(100)
                ),
                1 => format!(
                    "Released v{}.{}.{} on {:02}/{:02}/2023 at {:02}:{:02}:{:02}.",
                    rng.below(10),
                    rng.below(30),
                    rng.below(100),
                    1 + rng.below(12),
                    1 + rng.below(28),
                    rng.below(24),
                    rng.below(60),
                    rng.below(60)
                ),
                2 => format!(
                    "let v: Vec<u32> = std::iter::repeat({}).take({}).collect(); // {}",
                    rng.below(100),
                    rng.below(1000),
                    rng.digits(6)
                ),
                3 => format!(
                    "SELECT * FROM orders WHERE id = {} AND total > {}.{};",
                    rng.digits(12),
                    rng.below(1000),
                    rng.digits(2)
                ),
                4 => format!(
                    "Population grew from {} to {} ({}.{}%) between 1990 and 2020.",
                    rng.digits(7),
                    rng.digits(7),
                    rng.below(100),
                    rng.below(10)
                ),
                5 => format!(
                    "Color #{:06x}, uuid {:08x}-{:04x}-{:04x}-{:04x}-{:012x}.",
                    rng.below(1 << 24),
                    rng.below(1 << 32),
                    rng.below(1 << 16),
                    rng.below(1 << 16),
                    rng.below(1 << 16),
                    rng.below(1 << 48)
                ),
                6 => format!(
                    "OID 1.3.6.1.{}.{}.{} and section 4.{}.{}.",
                    rng.below(10),
                    rng.below(100),
                    rng.below(100),
                    rng.below(10),
                    rng.below(10)
                ),
                7 => format!(
                    "Tracking number {} shipped; ISBN 978-{}-{}-{}-{}.",
                    rng.digits(18),
                    rng.digits(1),
                    rng.digits(3),
                    rng.digits(5),
                    rng.digits(1)
                ),
                8 => format!(
                    "fn show(f: &mut F) {{ write!(f, \"{{}}\", Foo::bar::<u8>({})) }} // {}:{}",
                    rng.below(256),
                    rng.below(24),
                    rng.below(60)
                ),
                _ => format!(
                    "Scores: {} {} {} {}; temperature -{}.{} C; ratio 1:{}:{}.",
                    rng.below(100),
                    rng.below(100),
                    rng.below(100),
                    rng.below(100),
                    rng.below(40),
                    rng.below(10),
                    rng.below(10),
                    rng.below(10)
                ),
            };
            assert_eq!(redact(&doc), doc, "document {i} was changed");
        }
    }

    #[test]
    fn drop_sets_records_with_personal_data_aside_and_figures_count_by_kind() {
        let Step::Transform(t) = build_step("pii", "action = \"drop\"\nfields = [\"a\", \"b\"]") else { panic!() };
        let mut ctx = StepContext::new("pii", 0, 0, Default::default());
        let rows = [
            Record::new().with("a", "write to x@example.com").with("b", "ok"),
            Record::new().with("a", "nothing here").with("b", "call +1 415 555 0100 or 10.0.0.1"),
            Record::new().with("a", "clean").with("b", "clean"),
        ];
        let out = t.apply(&Batch::from_records(&rows), &mut ctx).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(ctx.take_dropped(), [("contains personal data".to_owned(), 2)]);
        let stats = ctx.take_added_stats();
        let stat = |n: &str| stats.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(stat("email"), Some(weave_core::Value::Int(1)));
        assert_eq!(stat("phone"), Some(weave_core::Value::Int(1)));
        assert_eq!(stat("ip"), Some(weave_core::Value::Int(1)));
        assert_eq!(stat("records_with_pii"), Some(weave_core::Value::Int(2)));
        check_build_errors(
            "pii",
            "kinds = [\"ssn\"]\naction = \"mask\"",
            &[
                "1:9 unknown kind `ssn`; the kinds are email, iban, credit_card, ip, phone",
                "2:10 `action` must be one of \"redact\", \"drop\", not \"mask\"",
            ],
        );
    }
}
