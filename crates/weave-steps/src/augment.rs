//! The `augment` step: a text field noised by one noiser or a chain of them, written to a
//! new field beside the original, with the noiser and the seed that produced it.

use std::path::PathBuf;

use weave_core::{
    Batch, CanonicalConfig, Column, ConfItem, ConfValue, Diagnostic, Location, Params, Rejected, Shape, Snippet, Step,
    StepContext, StepError, StepInfo, StepKind, StrColumn, Transform, ValueRef,
};

use crate::noise::{
    BUILT_IN_DOMAINS, BUILT_IN_LANGUAGES, BUILT_IN_STYLES, CaseNoise, Frequency, LocalShuffle, Noiser, PatternNoiser,
    PatternSet, PunctuationNoise, Rng, Scratch, Severity, Typos, WhitespaceNoise, WordDropout, built_in, hash_bytes,
    record_seed,
};

/// The `augment` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "augment",
        Shape::Transform,
        "write a noised copy of a text field (typos, language, domain, case, whitespace, punctuation, dropout, shuffle, synonyms, style), with the noiser and seed",
        [
            "field",
            "output",
            "noiser",
            "frequency",
            "severity",
            "rate",
            "language",
            "domain",
            "categories",
            "style",
            "window",
            "patterns",
            "patterns_file",
            // The LLM noisers' keys (see llm/augment.rs).
            "llm",
            "concurrency",
            "temperature",
            "top_p",
            "max_tokens",
            "stop",
            "system",
            "vary_by",
            "template",
            "styles",
            "persona",
            "description",
            "traits",
            "examples",
            "instructions",
            "sentiment",
            "intensity",
            "preserve",
            "error_types",
            "locale",
            "context_field",
            "context_type",
        ],
        build,
    )
});

/// The noisers a pipeline file can name.
const NOISERS: &[&str] =
    &["typos", "language", "domain", "case", "whitespace", "punctuation", "dropout", "shuffle", "synonyms", "style"];

/// Every noiser's own keys.
const NOISER_KEYS: &[&str] = &[
    "frequency",
    "severity",
    "rate",
    "language",
    "domain",
    "categories",
    "style",
    "window",
    "patterns",
    "patterns_file",
];

/// The keys of noiser `name`.
fn keys_of(name: &str) -> &'static [&'static str] {
    match name {
        "typos" => &["frequency", "severity"],
        "language" => &["language", "categories", "rate", "patterns", "patterns_file"],
        "domain" => &["domain", "categories", "rate", "patterns", "patterns_file"],
        "shuffle" => &["rate", "window"],
        "synonyms" => &["rate", "patterns", "patterns_file"],
        "style" => &["style", "rate", "patterns", "patterns_file"],
        _ => &["rate"],
    }
}

/// The rate a noiser uses when none is given: the original's 0.3 for language and domain
/// errors, every match for a style, 0.1 for the rest.
fn default_rate(name: &str) -> f64 {
    match name {
        "language" | "domain" | "synonyms" => 0.3,
        "style" => 1.0,
        _ => 0.1,
    }
}

/// Writes a noised copy of a text field: `<output>` holds the noised text,
/// `<output>_noiser` the noisers and their settings, `<output>_seed` the record's seed
/// (16 hex digits), from which the same noisers give the same text again.
///
/// A null text gives nulls in the three fields; a value that is not text is a bad record.
#[derive(Debug)]
pub struct Augment {
    field: String,
    output: String,
    noiser_field: String,
    seed_field: String,
    noisers: Vec<Box<dyn Noiser>>,
    description: String,
    files: Vec<PathBuf>,
    config: CanonicalConfig,
}

/// Reusable buffers for noising one text after another.
#[derive(Debug, Default)]
struct Work {
    scratch: Scratch,
    a: String,
    b: String,
}

impl Augment {
    /// The noisers, in the order they are applied.
    pub fn noisers(&self) -> &[Box<dyn Noiser>] {
        &self.noisers
    }

    /// Noises `text` with every noiser in turn, the noiser number `i` drawing from
    /// [`Rng::substream`]`(seed, i)`: what the step writes for a record whose seed is
    /// `seed`. The result is left in `work.a`.
    fn noise(&self, text: &str, seed: u64, work: &mut Work) {
        work.a.clear();
        for (i, n) in self.noisers.iter().enumerate() {
            let mut rng = Rng::substream(seed, i);
            if i == 0 {
                n.apply(text, &mut rng, &mut work.scratch, &mut work.a);
            } else {
                std::mem::swap(&mut work.a, &mut work.b);
                work.a.clear();
                n.apply(&work.b, &mut rng, &mut work.scratch, &mut work.a);
            }
        }
    }
}

/// A noiser's keys, read from the step or from the noiser's table.
#[derive(Debug, Default)]
struct Keys {
    frequency: Option<Frequency>,
    severity: Option<Severity>,
    rate: Option<f64>,
    /// The language, domain or style, with where it was written.
    language: Option<(String, ConfItem)>,
    domain: Option<(String, ConfItem)>,
    style: Option<(String, ConfItem)>,
    categories: Option<(Vec<String>, ConfItem)>,
    window: Option<usize>,
    /// Patterns given inline or in a file.
    user: Option<PatternSet>,
    /// `patterns` or `patterns_file` was written (even if it could not be read).
    patterns_given: bool,
    /// Pattern files read, with their bytes' hash for the cache key.
    files: Vec<(PathBuf, String)>,
}

impl Keys {
    /// Reads the keys that the noisers `names` use from `src`.
    fn read(src: &Params, names: &[&str]) -> Keys {
        let uses = |k: &str| names.iter().any(|n| keys_of(n).contains(&k));
        let mut keys = Keys::default();
        if uses("frequency")
            && let Some(item) = src.item("frequency")
        {
            keys.frequency = match &item.value {
                ConfValue::Str(s) => Frequency::from_name(s).or_else(|| {
                    let mut d = Diagnostic::error(format!(
                        "`frequency` must be \"low\", \"moderate\", \"high\" or a number from 0 to 1, not \"{s}\""
                    ))
                    .with_code("invalid-value")
                    .at(Some(src.locate(item.span.clone())));
                    if let Some(m) = weave_core::did_you_mean(s, Frequency::NAMES.iter().copied()) {
                        d = d.with_help(format!("did you mean \"{m}\"?"));
                    }
                    src.push(d);
                    None
                }),
                _ => unit_number(src, "frequency", item).map(Frequency::Rate),
            };
        }
        if uses("severity") {
            keys.severity = src.choice("severity", Severity::NAMES).and_then(Severity::from_name);
        }
        if uses("rate") {
            keys.rate = src.item("rate").and_then(|item| unit_number(src, "rate", item));
        }
        let named = |key: &str, required: bool, what: &str| {
            let v = if required { src.required_str(key, what) } else { src.str(key) };
            v.zip(src.item(key).cloned())
        };
        if uses("language") {
            keys.language = named("language", false, "");
        }
        if uses("domain") {
            keys.domain = named("domain", true, "programming, medical, legal, scientific or one of your own");
        }
        if uses("style") {
            keys.style = named("style", true, "technical, casual, academic, business or one of your own");
        }
        if uses("categories") {
            keys.categories = src.str_list("categories").zip(src.item("categories").cloned());
            if let Some((c, item)) = &keys.categories
                && c.is_empty()
            {
                src.error_at(item, "`categories` is empty: leave it out to use every category");
            }
        }
        if uses("window") {
            keys.window = src.u64("window").and_then(|w| {
                if (2..=10).contains(&w) {
                    Some(w as usize)
                } else {
                    src.item("window").map(|i| src.error_at(i, "`window` must be from 2 to 10 words"));
                    None
                }
            });
        }
        keys.patterns_given =
            (uses("patterns") && src.has("patterns")) || (uses("patterns_file") && src.has("patterns_file"));
        if uses("patterns") {
            read_inline_patterns(src, &mut keys);
        }
        if uses("patterns_file") {
            read_pattern_file(src, &mut keys);
        }
        keys
    }
}

/// A number from 0 to 1 (or an error at `item`).
fn unit_number(src: &Params, key: &str, item: &ConfItem) -> Option<f64> {
    let x = match &item.value {
        ConfValue::Int(i) => *i as f64,
        ConfValue::Float(f) => *f,
        other => {
            src.error_at(item, format!("`{key}` must be a number from 0 to 1, not {}", other.type_name()));
            return None;
        }
    };
    if (0.0..=1.0).contains(&x) {
        Some(x)
    } else {
        src.error_at(item, format!("`{key}` must be a number from 0 to 1, not {x}"));
        None
    }
}

/// `patterns = { category = ["from -> to", "@rule"], ... }`.
fn read_inline_patterns(src: &Params, keys: &mut Keys) {
    let Some(item) = src.item("patterns") else { return };
    let ConfValue::Table(t) = &item.value else {
        src.error_at(
            item,
            format!(
                "`patterns` must be a table of categories, such as {{ spelling = [\"receive -> recieve\"] }}, not {}",
                item.value.type_name()
            ),
        );
        return;
    };
    let set = keys.user.get_or_insert_with(PatternSet::new);
    for (category, _, lines) in &t.entries {
        let ConfValue::Array(lines) = &lines.value else {
            src.error_at(lines, format!("`{category}` must be a list of patterns such as \"from -> to\""));
            continue;
        };
        for line in lines {
            match &line.value {
                ConfValue::Str(s) => {
                    if let Err((_, msg)) = set.add(category, s) {
                        src.error_at(line, msg);
                    }
                }
                other => {
                    src.error_at(
                        line,
                        format!("a pattern is a string such as \"from -> to\", not {}", other.type_name()),
                    );
                }
            }
        }
    }
}

/// `patterns_file = "path"`: read and checked now, so that `weave validate` reports a
/// missing file or a bad line (with its line and column in that file).
fn read_pattern_file(src: &Params, keys: &mut Keys) {
    let (Some(path), Some(item)) = (src.path("patterns_file"), src.item("patterns_file")) else { return };
    if let Some(why) = crate::input::not_a_regular_file(&path) {
        src.error_at(item, format!("`patterns_file` {why}"));
        return;
    }
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            src.error_at(item, format!("cannot read the patterns file {}: {e}", path.display()));
            return;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            // The text before the first bad byte says on which line and column it is.
            let good = String::from_utf8_lossy(&e.as_bytes()[..e.utf8_error().valid_up_to()]).into_owned();
            let end = good.len();
            let loc = weave_core::SourceFile::new(path.clone(), good).locate(end..end);
            src.push(
                Diagnostic::error(format!(
                    "the patterns file {} is not valid UTF-8 (save it as UTF-8)",
                    path.display()
                ))
                .with_code("invalid-value")
                .at(Some(loc)),
            );
            return;
        }
    };
    match PatternSet::parse(&text) {
        Ok(set) => {
            keys.user.get_or_insert_with(PatternSet::new).extend(set);
            keys.files.push((path, blake3::hash(text.as_bytes()).to_hex().to_string()));
        }
        Err(errors) => {
            for e in errors {
                let width = e.text.chars().count().saturating_sub(e.column - 1).max(1);
                let loc = Location {
                    file: path.clone(),
                    line: e.line,
                    column: e.column,
                    snippet: Some(Snippet { text: e.text.clone(), width }),
                };
                src.push(Diagnostic::error(e.message).with_code("invalid-value").at(Some(loc)));
            }
        }
    }
}

/// Builds noiser `name` from `keys`, read from `src` (where problems are reported).
fn make(name: &'static str, keys: &Keys, src: &Params) -> Option<Box<dyn Noiser>> {
    let rate = keys.rate.unwrap_or_else(|| default_rate(name));
    Some(match name {
        "typos" => {
            Box::new(Typos::new(keys.frequency.unwrap_or(Frequency::Moderate), keys.severity.unwrap_or(Severity::Mild)))
        }
        "case" => Box::new(CaseNoise::new(rate)),
        "whitespace" => Box::new(WhitespaceNoise::new(rate)),
        "punctuation" => Box::new(PunctuationNoise::new(rate)),
        "dropout" => Box::new(WordDropout::new(rate)),
        "shuffle" => Box::new(LocalShuffle::new(rate, keys.window.unwrap_or(3))),
        "language" | "domain" | "style" | "synonyms" => return pattern_noiser(name, keys, src, rate),
        _ => return None,
    })
}

/// A language, domain, style or synonyms noiser: its built-in table and the user's.
fn pattern_noiser(name: &'static str, keys: &Keys, src: &Params, rate: f64) -> Option<Box<dyn Noiser>> {
    let (key, label, built): (&str, Option<&(String, ConfItem)>, &[&str]) = match name {
        "language" => ("language", keys.language.as_ref(), BUILT_IN_LANGUAGES),
        "domain" => ("domain", keys.domain.as_ref(), BUILT_IN_DOMAINS),
        "style" => ("style", keys.style.as_ref(), BUILT_IN_STYLES),
        _ => ("", None, &["en"]),
    };
    let label_name = match (name, label) {
        ("language" | "synonyms", None) => "en".to_owned(),
        (_, None) => return None,
        (_, Some((l, _))) => l.clone(),
    };
    let mut set = match built_in(name, &label_name) {
        Some(text) => match PatternSet::parse(&text) {
            Ok(s) => s,
            Err(e) => {
                // The built-in tables are checked by a test; this would be a bug.
                src.push(Diagnostic::error(format!("built-in {name} table {label_name} is damaged: {e:?}")));
                return None;
            }
        },
        None if keys.user.is_some() => PatternSet::new(),
        // The user's patterns could not be read: that was reported.
        None if keys.patterns_given => return None,
        None => {
            if let Some((_, item)) = label {
                let mut d = Diagnostic::error(format!(
                    "`{key}` \"{label_name}\" has no built-in table (built in: {}); give its patterns with `patterns` or `patterns_file`",
                    built.join(", ")
                ))
                .with_code("invalid-value")
                .at(Some(src.locate(item.span.clone())));
                if let Some(m) = weave_core::did_you_mean(&label_name, built.iter().copied()) {
                    d = d.with_help(format!("did you mean \"{m}\"?"));
                }
                src.push(d);
            }
            return None;
        }
    };
    if let Some(user) = &keys.user {
        set.extend(user.clone());
    }
    let categories = match &keys.categories {
        Some((cats, item)) => {
            let known: Vec<&str> = set.categories().collect();
            let mut ok = true;
            for c in cats {
                if !known.contains(&c.as_str()) {
                    ok = false;
                    let mut msg = format!("{name} \"{label_name}\" has no category \"{c}\"");
                    match weave_core::did_you_mean(c, known.iter().copied()) {
                        Some(m) => msg.push_str(&format!(" (did you mean \"{m}\"?)")),
                        None => msg.push_str(&format!(" (categories: {})", known.join(", "))),
                    }
                    src.error_at(item, msg);
                }
            }
            if !ok {
                return None;
            }
            cats.clone()
        }
        None => Vec::new(),
    };
    if set.is_empty() {
        src.push(
            Diagnostic::error(format!("{name} \"{label_name}\" has no patterns"))
                .at(label.map(|(_, i)| src.locate(i.span.clone()))),
        );
        return None;
    }
    let mut settings = String::new();
    if !key.is_empty() {
        settings.push_str(&format!("{key}={label_name},"));
    }
    if !categories.is_empty() {
        settings.push_str(&format!("categories={},", categories.join("+")));
    }
    for (path, _) in &keys.files {
        settings.push_str(&format!("patterns_file={},", path.display()));
    }
    if keys.user.is_some() && keys.files.is_empty() {
        settings.push_str("patterns=inline,");
    }
    settings.push_str(&format!("rate={rate}"));
    Some(Box::new(PatternNoiser::new(name, settings, &set, &categories, rate)))
}

/// The message for a name that is not a noiser.
fn unknown_noiser(p: &Params, item: &ConfItem, name: &str) {
    let mut msg = format!("unknown noiser \"{name}\"");
    let all = NOISERS.iter().copied().chain(crate::llm::noiser_names());
    match weave_core::did_you_mean(name, all)
        .or_else(|| weave_core::did_you_mean(&format!("llm_{name}"), crate::llm::noiser_names()))
    {
        Some(m) => msg.push_str(&format!(" (did you mean \"{m}\"?)")),
        None => msg.push_str(&format!(
            " (noisers: {}; LLM noisers: {})",
            NOISERS.join(", "),
            crate::llm::noiser_names().collect::<Vec<_>>().join(", ")
        )),
    }
    p.error_at(item, msg);
}

fn build(p: &Params) -> Option<Step> {
    // An LLM noiser makes a step of its own, which sends a batch's requests at once; it
    // rewrites a whole text, so it is not chained with others in one step.
    if let Some(item) = p.item("noiser") {
        let entries: Vec<&ConfItem> = match &item.value {
            ConfValue::Array(a) => a.iter().collect(),
            _ => vec![item],
        };
        if entries.len() == 1 && crate::llm::is_llm_noiser(entries[0]) {
            return crate::llm::build_augment(p, entries[0]);
        }
        if let Some(llm) = entries.iter().find(|e| crate::llm::is_llm_noiser(e)) {
            p.error_at(
                llm,
                "an LLM noiser is not chained with other noisers in one step: give it an `augment` step of its own",
            );
        }
    }
    let field = p.str("field").unwrap_or_else(|| "text".to_owned());
    let output = p.str("output").unwrap_or_else(|| format!("{field}_noisy"));
    if output == field
        && let Some(item) = p.item("output")
    {
        p.error_at(item, "`output` must differ from `field`: augment keeps the original text");
    }
    // The noisers named by a string read their keys from the step; those written as a
    // table read them from the table.
    enum Entry<'a> {
        Named(&'static str),
        Table(&'static str, &'a ConfItem),
    }
    let items: Vec<&ConfItem> = match p.item("noiser") {
        None => {
            let what = format!("one of {}, or a list of them applied in order", NOISERS.join(", "));
            p.required_str("noiser", &what);
            Vec::new()
        }
        Some(item) => match &item.value {
            ConfValue::Array(items) if items.is_empty() => {
                p.error_at(item, "`noiser` is an empty list: name at least one noiser");
                Vec::new()
            }
            ConfValue::Array(items) => items.iter().collect(),
            _ => vec![item],
        },
    };
    let mut entries: Vec<Entry<'_>> = Vec::new();
    // A name that is not a noiser's: which of the step's keys it would use is unknown.
    let mut unknown_name = false;
    for it in items {
        if crate::llm::is_llm_noiser(it) {
            // Reported above: not chained.
            continue;
        }
        match &it.value {
            ConfValue::Str(s) => match NOISERS.iter().find(|n| **n == s) {
                Some(n) => entries.push(Entry::Named(n)),
                None => {
                    unknown_noiser(p, it, s);
                    unknown_name = true;
                }
            },
            ConfValue::Table(t) => match t.get("kind").map(|k| &k.value) {
                Some(ConfValue::Str(s)) => match NOISERS.iter().find(|n| **n == s) {
                    Some(n) => entries.push(Entry::Table(n, it)),
                    None => unknown_noiser(p, t.get("kind").unwrap_or(it), s),
                },
                _ => {
                    p.error_at(
                        it,
                        "a noiser table names its noiser with `kind`, such as { kind = \"typos\", frequency = \"high\" }",
                    );
                }
            },
            other => {
                p.error_at(
                    it,
                    format!(
                        "a noiser is a name (\"typos\") or a table ({{ kind = \"typos\", frequency = \"high\" }}), not {}",
                        other.type_name()
                    ),
                );
            }
        }
    }
    // The step's own noiser keys, read once for every noiser named by a string.
    let named: Vec<&str> =
        entries.iter().filter_map(|e| if let Entry::Named(n) = e { Some(*n) } else { None }).collect();
    let step_keys = Keys::read(p, &named);
    for key in NOISER_KEYS {
        if unknown_name {
            p.item(key);
            continue;
        }
        if p.has(key)
            && !named.iter().any(|n| keys_of(n).contains(key))
            && let Some(item) = p.item(key)
        {
            let owners: Vec<&str> = NOISERS.iter().copied().filter(|n| keys_of(n).contains(key)).collect();
            let msg = if named.is_empty() {
                format!("`{key}` belongs in the noiser's table here (no noiser is named by a string)")
            } else {
                format!(
                    "`{key}` is not a key of {} (it is a key of {})",
                    named.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "),
                    owners.join(", ")
                )
            };
            p.error_at(item, msg);
        }
    }
    let mut noisers: Vec<Box<dyn Noiser>> = Vec::new();
    let mut files: Vec<(PathBuf, String)> = step_keys.files.clone();
    for e in &entries {
        match e {
            Entry::Named(n) => noisers.extend(make(n, &step_keys, p)),
            Entry::Table(n, item) => {
                let ConfValue::Table(t) = &item.value else { continue };
                let sub =
                    Params::new(t.clone(), p.file().clone(), format!("noiser \"{n}\""), p.step_id().map(str::to_owned))
                        .spanning(item.span.clone());
                sub.item("kind");
                let keys = Keys::read(&sub, &[n]);
                noisers.extend(make(n, &keys, &sub));
                files.extend(keys.files);
                let known: Vec<&str> = std::iter::once("kind").chain(keys_of(n).iter().copied()).collect();
                p.absorb(sub, &known);
            }
        }
    }
    if p.has_errors() || noisers.is_empty() {
        return None;
    }
    let description = noisers.iter().map(|n| format!("{}({})", n.name(), n.settings())).collect::<Vec<_>>().join(" > ");
    // The cache key covers what the pattern files said when they were read, by content
    // only: their paths are in the keys as written, relative to the pipeline file, so
    // that the key is the same from any working directory.
    let mut config: serde_json::Value = serde_json::from_slice(p.canonical().as_bytes()).unwrap_or_default();
    if let (Some(map), false) = (config.as_object_mut(), files.is_empty()) {
        map.insert("pattern_file_hashes".to_owned(), files.iter().map(|(_, hash)| hash.clone()).collect());
    }
    files.dedup();
    Some(Step::Transform(std::sync::Arc::new(Augment {
        noiser_field: format!("{output}_noiser"),
        seed_field: format!("{output}_seed"),
        field,
        output,
        noisers,
        description,
        files: files.into_iter().map(|(p, _)| p).collect(),
        config: CanonicalConfig::from_bytes(config.to_string().into_bytes()),
    })))
}

impl StepInfo for Augment {
    fn fields_read(&self) -> Vec<String> {
        vec![self.field.clone()]
    }

    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    /// The noise a configuration makes also depends on the built-in tables in `noise/data`:
    /// bump this when one changes, so that cached outputs are not reused.
    /// 2: the technical style no longer turns every "about" into "approximately".
    fn version(&self) -> u32 {
        2
    }

    fn files_read(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
}

/// The three columns being built.
struct Out {
    text: StrColumn,
    noiser: StrColumn,
    seed: StrColumn,
}

impl Out {
    fn nulls(&mut self) {
        self.text.push_null();
        self.noiser.push_null();
        self.seed.push_null();
    }
}

impl Augment {
    /// Noises one text into the three columns.
    fn one(&self, text: &str, step_hash: u64, ctx_seed: u64, work: &mut Work, out: &mut Out) {
        let seed = record_seed(ctx_seed, step_hash, text);
        self.noise(text, seed, work);
        out.text.push(&work.a);
        out.noiser.push(&self.description);
        // The 16 hex digits are made on the stack and appended at once (ASCII, so
        // `from_utf8` cannot fail).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hex: [u8; 16] = std::array::from_fn(|k| HEX[((seed >> ((15 - k) * 4)) & 0xf) as usize]);
        out.seed.push(std::str::from_utf8(&hex).unwrap_or_default());
    }
}

impl Transform for Augment {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let Some(col) = batch.column(&self.field) else { return Err(crate::missing_field(batch, &self.field)) };
        for f in [&self.output, &self.noiser_field, &self.seed_field] {
            if batch.column(f).is_some() {
                return Err(StepError::fatal(format!(
                    "field `{f}` is already in the data: augment would overwrite it (set `output` to another name)"
                )));
            }
        }
        let n = batch.len();
        let text_bytes = col.as_str().map_or(n * 64, |c| c.data().len() + c.data().len() / 8);
        let mut out = Out {
            text: StrColumn::with_capacity(n, text_bytes),
            noiser: StrColumn::with_capacity(n, n * self.description.len()),
            seed: StrColumn::with_capacity(n, n * 16),
        };
        let step_hash = hash_bytes(ctx.step_id().as_bytes());
        let seed = ctx.seed();
        let mut work = Work::default();
        let mut keep: Option<Vec<bool>> = None;
        match col {
            Column::Str(c) => {
                for v in c.iter() {
                    match v {
                        Some(s) => self.one(s, step_hash, seed, &mut work, &mut out),
                        None => out.nulls(),
                    }
                }
            }
            Column::Null(_) => (0..n).for_each(|_| out.nulls()),
            Column::Any(values) => {
                for (i, v) in values.iter().enumerate() {
                    match v.as_ref() {
                        ValueRef::Str(s) => self.one(s, step_hash, seed, &mut work, &mut out),
                        ValueRef::Null => out.nulls(),
                        other => {
                            ctx.reject(Rejected {
                                reason: format!("field `{}` holds {} {other}, not text", self.field, other.type_name()),
                                record: Some(batch.row(i).to_record()),
                                origin: None,
                            });
                            keep.get_or_insert_with(|| vec![true; n])[i] = false;
                            out.nulls();
                        }
                    }
                }
            }
            other => {
                return Err(StepError::fatal(format!(
                    "field `{}` holds {} values; `augment` works on text",
                    self.field,
                    other.data_type()
                )));
            }
        }
        let internal = |e: weave_core::Error| StepError::internal(e.to_string());
        let mut b = batch.with_column(&self.output, Column::Str(out.text)).map_err(internal)?;
        b = b.with_column(&self.noiser_field, Column::Str(out.noiser)).map_err(internal)?;
        b = b.with_column(&self.seed_field, Column::Str(out.seed)).map_err(internal)?;
        Ok(match keep {
            Some(k) => b.filter(&k),
            None => b,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{build_step, check_build_errors};
    use weave_core::{Record, Value};

    fn step(config: &str) -> std::sync::Arc<dyn Transform> {
        let Step::Transform(t) = build_step("augment", config) else { panic!("not a transform") };
        t
    }

    fn ctx(seed: u64) -> StepContext {
        StepContext::new("augment", seed, 0, Default::default())
    }

    fn texts(texts: &[&str]) -> Vec<Record> {
        texts.iter().enumerate().map(|(i, t)| Record::new().with("id", i as i64).with("text", *t)).collect()
    }

    /// Rows of ordinary text, different from each other.
    fn corpus(n: usize) -> Vec<Record> {
        let words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "it", "rains"];
        (0..n)
            .map(|i| {
                let t: Vec<&str> = (0..10).map(|k| words[(i * 7 + k * (i % 5 + 1)) % words.len()]).collect();
                Record::new().with("id", i as i64).with("text", format!("{} {i}.", t.join(" ")))
            })
            .collect()
    }

    fn field<'a>(r: &'a Record, name: &str) -> &'a Value {
        r.get(name).unwrap_or_else(|| panic!("no field {name} in {r}"))
    }

    #[test]
    fn the_original_stays_and_the_noiser_and_seed_are_recorded() {
        let t = step("noiser = \"typos\"\nfrequency = \"high\"");
        let recs = corpus(50);
        let out = t.apply(&Batch::from_records(&recs), &mut ctx(42)).unwrap().to_records();
        assert_eq!(out.len(), 50);
        let names: Vec<&str> = out[0].iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["id", "text", "text_noisy", "text_noisy_noiser", "text_noisy_seed"]);
        let mut changed = 0;
        for (r, orig) in out.iter().zip(&recs) {
            assert_eq!(field(r, "text"), field(orig, "text"));
            assert_eq!(field(r, "text_noisy_noiser").as_str(), Some("typos(frequency=high,severity=mild)"));
            let seed = field(r, "text_noisy_seed").as_str().unwrap();
            assert_eq!(seed.len(), 16);
            // The seed gives the same text again, through the public noiser.
            let seed = u64::from_str_radix(seed, 16).unwrap();
            let mut again = String::new();
            Typos::new(Frequency::High, Severity::Mild).apply(
                field(r, "text").as_str().unwrap(),
                &mut Rng::substream(seed, 0),
                &mut Scratch::default(),
                &mut again,
            );
            assert_eq!(field(r, "text_noisy").as_str(), Some(again.as_str()));
            changed += usize::from(field(r, "text_noisy") != field(r, "text"));
        }
        assert!(changed > 40, "{changed} of 50 rows changed at high frequency");
    }

    /// The noised texts of `recs`, split into batches of `size`, each batch run on its own
    /// thread with its own context, in reverse order.
    fn run_split(t: &std::sync::Arc<dyn Transform>, recs: &[Record], size: usize, seed: u64) -> Vec<String> {
        let batches: Vec<Batch> = recs.chunks(size).map(Batch::from_records).collect();
        let outs: Vec<Batch> = std::thread::scope(|s| {
            let handles: Vec<_> = batches
                .iter()
                .enumerate()
                .rev()
                .map(|(i, b)| {
                    let t = std::sync::Arc::clone(t);
                    s.spawn(move || t.apply(b, &mut StepContext::new("augment", seed, i as u64, Default::default())))
                })
                .collect();
            let mut outs: Vec<Batch> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
            outs.reverse();
            outs
        });
        outs.iter().flat_map(|b| b.to_records()).map(|r| r.to_string()).collect()
    }

    #[test]
    fn same_seed_same_output_whatever_the_batches_and_threads() {
        let t = step("noiser = [\"typos\", \"synonyms\", \"shuffle\", \"case\"]\nrate = 0.2");
        let recs = corpus(600);
        let whole = run_split(&t, &recs, 600, 7);
        assert_eq!(run_split(&t, &recs, 7, 7), whole);
        assert_eq!(run_split(&t, &recs, 64, 7), whole);
        assert_eq!(run_split(&t, &recs, 1, 7), whole);
        // A record's noise does not depend on the records around it either.
        let alone = run_split(&t, &recs[300..301], 1, 7);
        assert_eq!(alone[0], whole[300]);
    }

    #[test]
    fn different_seeds_and_steps_give_different_noise() {
        let t = step("noiser = \"typos\"");
        let recs = corpus(500);
        let noisy = |seed: u64, id: &str| -> Vec<String> {
            let mut c = StepContext::new(id, seed, 0, Default::default());
            let out = t.apply(&Batch::from_records(&recs), &mut c).unwrap().to_records();
            out.iter().map(|r| field(r, "text_noisy").to_string()).collect()
        };
        let differ = |a: &[String], b: &[String]| a.iter().zip(b).filter(|(x, y)| x != y).count();
        let a = noisy(1, "augment");
        assert_eq!(a, noisy(1, "augment"));
        // At moderate frequency about a third of 11-word rows come through untouched, so
        // two seeds agree on about a ninth of them.
        assert!(differ(&a, &noisy(2, "augment")) > 350, "{}", differ(&a, &noisy(2, "augment")));
        assert!(differ(&a, &noisy(1, "augment2")) > 350);
    }

    #[test]
    fn nulls_empty_text_and_unicode() {
        let t = step(
            "noiser = [{ kind = \"typos\", frequency = \"high\", severity = \"severe\" }, \"whitespace\", \"punctuation\", \"case\", \"dropout\", \"shuffle\", { kind = \"language\", language = \"es\" }]\nrate = 1",
        );
        let recs = vec![
            Record::new().with("text", Value::Null),
            Record::new().with("text", ""),
            Record::new().with("text", "   "),
            Record::new().with("text", "¿Qué tal? Ñandú «cañón» naïve 日本語 テキスト 🙂👍🏽 İstanbul ǅ ß"),
            Record::new().with("text", "\u{301}\u{200d}\u{feff} x\u{a0}y"),
        ];
        let out = t.apply(&Batch::from_records(&recs), &mut ctx(3)).unwrap().to_records();
        assert_eq!(field(&out[0], "text_noisy"), &Value::Null);
        assert_eq!(field(&out[0], "text_noisy_seed"), &Value::Null);
        assert_eq!(field(&out[0], "text_noisy_noiser"), &Value::Null);
        assert_eq!(field(&out[1], "text_noisy").as_str(), Some(""));
        assert_eq!(field(&out[1], "text_noisy_seed").as_str().map(str::len), Some(16));
        assert_eq!(field(&out[2], "text_noisy").as_str(), Some("   "));
        for seed in 0..300 {
            // Many seeds through every noiser: any split inside a character would panic.
            let out = t.apply(&Batch::from_records(&recs[3..]), &mut ctx(seed)).unwrap();
            assert_eq!(out.len(), 2);
        }
    }

    #[test]
    fn text_of_another_type_is_an_error_or_a_bad_record() {
        let t = step("noiser = \"case\"");
        let ints = vec![Record::new().with("text", 5i64)];
        let err = t.apply(&Batch::from_records(&ints), &mut ctx(0)).unwrap_err();
        assert_eq!(err.to_string(), "field `text` holds int values; `augment` works on text");
        // A column of mixed values: the record that is not text is set aside, the rest go on.
        let mixed = vec![
            Record::new().with("id", 1i64).with("text", "Hello there"),
            Record::new().with("id", 2i64).with("text", 5i64),
            Record::new().with("id", 3i64).with("text", Value::Null),
        ];
        let mut c = ctx(0);
        let out = t.apply(&Batch::from_records(&mixed), &mut c).unwrap().to_records();
        let ids: Vec<String> = out.iter().map(|r| field(r, "id").to_string()).collect();
        assert_eq!(ids, ["1", "3"]);
        let rejected = c.take_rejected();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].reason, "field `text` holds int 5, not text");
        assert_eq!(rejected[0].record.as_ref().and_then(|r| r.get("id")), Some(&Value::Int(2)));
        let missing = t.apply(&Batch::from_records(&[Record::new().with("body", "x")]), &mut ctx(0)).unwrap_err();
        assert_eq!(missing.to_string(), "field `text` is not in the data (fields: body)");
        let twice = t.apply(&t.apply(&Batch::from_records(&texts(&["a"])), &mut ctx(0)).unwrap(), &mut ctx(0));
        assert_eq!(
            twice.unwrap_err().to_string(),
            "field `text_noisy` is already in the data: augment would overwrite it (set `output` to another name)"
        );
    }

    #[test]
    fn noisers_chain_with_their_own_keys() {
        let Step::Transform(t) = build_step(
            "augment",
            "field = \"body\"\noutput = \"noised\"\nnoiser = [{ kind = \"typos\", frequency = 0.05 }, \"case\", { kind = \"style\", style = \"casual\" }]\nrate = 0.5",
        ) else {
            panic!()
        };
        let recs = vec![Record::new().with("body", "I do not know")];
        let out = t.apply(&Batch::from_records(&recs), &mut ctx(1)).unwrap().to_records();
        assert_eq!(
            field(&out[0], "noised_noiser").as_str(),
            Some("typos(frequency=0.05,severity=mild) > case(rate=0.5) > style(style=casual,rate=1)")
        );
        assert!(out[0].get("noised_seed").is_some());
    }

    #[test]
    fn users_add_domains_and_languages_inline_or_in_a_file() {
        let t = step(
            "noiser = \"domain\"\ndomain = \"cooking\"\nrate = 1\npatterns = { units = [\"tsp -> tbsp\", \"tbsp -> tsp\", \"@off_by_one\"] }",
        );
        let out = t.apply(&Batch::from_records(&texts(&["Add 2 tsp salt."])), &mut ctx(0)).unwrap().to_records();
        let noisy = field(&out[0], "text_noisy").as_str().unwrap().to_owned();
        assert!(["Add 3 tbsp salt.", "Add 1 tbsp salt."].contains(&noisy.as_str()), "{noisy}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fr.txt");
        std::fs::write(&file, "[orthographe]\ncomme -> come\n@strip_accent\n[grammaire]\nje suis -> je es\n").unwrap();
        let config = format!(
            "noiser = \"language\"\nlanguage = \"fr\"\ncategories = [\"grammaire\"]\nrate = 1\npatterns_file = \"{}\"",
            file.display()
        );
        let Step::Transform(t) = build_step("augment", &config) else { panic!() };
        assert_eq!(t.files_read(), std::slice::from_ref(&file));
        let out = t.apply(&Batch::from_records(&texts(&["Je suis comme ça"])), &mut ctx(0)).unwrap().to_records();
        assert_eq!(field(&out[0], "text_noisy").as_str(), Some("Je es comme ça"));
        // The cache key follows what the file says.
        let before = t.config();
        std::fs::write(&file, "[grammaire]\nje suis -> je est\n").unwrap();
        let Step::Transform(t2) = build_step("augment", &config) else { panic!() };
        assert_ne!(t2.config(), before);
    }

    #[test]
    fn bad_keys_are_reported_at_their_place() {
        check_build_errors(
            "augment",
            "noiser = [\"typo\", \"cases\", { kind = \"style_transfer\" }, 3, { frequency = \"high\" }]",
            &[
                "1:11 unknown noiser \"typo\" (did you mean \"typos\"?)",
                "1:19 unknown noiser \"cases\" (did you mean \"case\"?)",
                "1:37 unknown noiser \"style_transfer\" (did you mean \"style\"?)",
                "1:57 a noiser is a name (\"typos\") or a table ({ kind = \"typos\", frequency = \"high\" }), not an integer",
                "1:60 a noiser table names its noiser with `kind`, such as { kind = \"typos\", frequency = \"high\" }",
            ],
        );
        check_build_errors(
            "augment",
            "noiser = \"typos\"\nfrequency = \"medium\"\nseverity = \"bad\"\nrate = 0.5\nwindow = 3",
            &[
                "2:13 `frequency` must be \"low\", \"moderate\", \"high\" or a number from 0 to 1, not \"medium\"",
                "3:12 `severity` must be one of \"mild\", \"moderate\", \"severe\", not \"bad\"",
                "4:8 `rate` is not a key of \"typos\" (it is a key of language, domain, case, whitespace, punctuation, dropout, shuffle, synonyms, style)",
                "5:10 `window` is not a key of \"typos\" (it is a key of shuffle)",
            ],
        );
        check_build_errors(
            "augment",
            "noiser = [\"shuffle\", { kind = \"case\", rate = -0.1, sevrity = \"mild\" }]\nrate = 1.5\nwindow = 40\noutput = \"text\"",
            &[
                "4:10 `output` must differ from `field`: augment keeps the original text",
                "2:8 `rate` must be a number from 0 to 1, not 1.5",
                "3:10 `window` must be from 2 to 10 words",
                "1:46 `rate` must be a number from 0 to 1, not -0.1",
                "1:52 unknown key `sevrity` in noiser \"case\"",
            ],
        );
        check_build_errors(
            "augment",
            "noiser = [{ kind = \"language\", language = \"fr\" }, { kind = \"domain\", domain = \"medicine\", categories = [\"dosge\"] }, { kind = \"style\" }, { kind = \"language\", categories = [\"grammar\", \"tone\"] }]",
            &[
                "1:43 `language` \"fr\" has no built-in table (built in: en, es); give its patterns with `patterns` or `patterns_file`",
                "1:79 `domain` \"medicine\" has no built-in table (built in: programming, medical, legal, scientific); give its patterns with `patterns` or `patterns_file`",
                "1:117 missing required key `style` (technical, casual, academic, business or one of your own)",
                "1:171 language \"en\" has no category \"tone\" (categories: grammar, spelling, punctuation)",
            ],
        );
        check_build_errors(
            "augment",
            "field = \"body\"",
            &[
                "1:1 missing required key `noiser` (one of typos, language, domain, case, whitespace, punctuation, dropout, shuffle, synonyms, style, or a list of them applied in order)",
            ],
        );
        check_build_errors("augment", "noiser = []", &["1:10 `noiser` is an empty list: name at least one noiser"]);
        // regression: a misspelt noiser also drew errors about every key of the step.
        check_build_errors(
            "augment",
            "noiser = \"typo\"\nfrequency = \"high\"",
            &["1:10 unknown noiser \"typo\" (did you mean \"typos\"?)"],
        );
        check_build_errors(
            "augment",
            "noiser = \"domain\"\ndomain = \"legal\"\npatterns = { terms = [\"ok -> fine\", \"broken\", 4] }",
            &[
                "3:37 expected `from -> to`, `@rule` or `[category]`",
                "3:47 a pattern is a string such as \"from -> to\", not an integer",
            ],
        );
    }

    #[test]
    fn a_bad_patterns_file_is_reported_with_its_lines() {
        // Every error of building an augment step from `config`, as `file:line:column message`.
        let errors = |config: String| -> Vec<String> {
            let k = crate::registry().get("augment").cloned().unwrap();
            let src = weave_core::SourceFile::new("p.toml", config.clone());
            let p = Params::new(weave_core::ConfTable::parse(&config).unwrap(), src, "step", Some("s".into()));
            assert!((k.build)(&p).is_none());
            p.finish(&k.keys)
                .0
                .iter()
                .map(|d| {
                    let l = d.location.as_ref().unwrap();
                    format!("{}:{}:{} {}", l.file.display(), l.line, l.column, d.message)
                })
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pat.txt");
        std::fs::write(&file, "[spelling]\nok -> fine\nbroken line\n@no_such_rule\n").unwrap();
        let got = errors(format!("noiser = \"language\"\npatterns_file = \"{}\"", file.display()));
        let f = file.display();
        assert_eq!(
            got,
            [
                format!("{f}:3:1 expected `from -> to`, `@rule` or `[category]`"),
                format!(
                    "{f}:4:1 unknown rule `@no_such_rule` (rules: @strip_accent, @drop_initial_h, @drop_inverted_mark, @swap_quotes, @plural_apostrophe, @drop_comma, @comma_splice, @drop_apostrophe, @case_style, @drop_semicolon, @bracket_mismatch, @off_by_one, @operator_swap, @decimal_shift, @digit_change, @sig_figs, @clause_label, @drop_caret)"
                ),
            ]
        );
        // regression: a patterns file that is not UTF-8 was told without its line.
        std::fs::write(&file, b"[spelling]\nok -> fine\nca\xffe -> x\n").unwrap();
        let got = errors(format!("noiser = \"language\"\npatterns_file = \"{}\"", file.display()));
        assert_eq!(got, [format!("{f}:3:3 the patterns file {f} is not valid UTF-8 (save it as UTF-8)")]);
        // regression: a FIFO as the patterns file hung `weave validate` for ever.
        let fifo = dir.path().join("fifo.txt");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let got = errors(format!("noiser = \"language\"\npatterns_file = \"{}\"", fifo.display()));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(&format!("p.toml:2:17 `patterns_file` names a FIFO (named pipe) ({})", fifo.display())),
            "{got:?}"
        );
        // A file that cannot be read is the one error (not also "no built-in table").
        check_build_errors(
            "augment",
            "noiser = \"domain\"\ndomain = \"cooking\"\npatterns_file = \"/no/such/file.txt\"",
            &["3:17 cannot read the patterns file /no/such/file.txt: No such file or directory (os error 2)"],
        );
    }
}
