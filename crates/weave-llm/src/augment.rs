//! The LLM noisers of the `augment` step (style transfer, persona, sentiment, language
//! errors, locale, context-aware noise, domain errors, typos): a text field rewritten by an
//! LLM, written beside the original with the noiser and the seed that produced it, as the
//! rule-based noisers do. A step with an LLM noiser is built here, so that it sends the
//! requests of a batch at once.

use std::sync::Arc;

use weave_core::{
    Batch, CanonicalConfig, ConfItem, ConfValue, DataType, Diagnostic, Params, Rejected, Step, StepContext, StepError,
    StepInfo, StrColumn, Transform, ValueRef, did_you_mean,
};

use super::prompt::{self, Prompt, Var};
use super::vary::VaryBy;
use super::{Either, LlmCall, Outcome, Request};

/// The keys that belong to one noiser or another.
pub const NOISER_KEYS: &[&str] = &[
    "style",
    "styles",
    "persona",
    "description",
    "traits",
    "examples",
    "instructions",
    "sentiment",
    "intensity",
    "preserve",
    "language",
    "error_types",
    "rate",
    "locale",
    "context_field",
    "context_type",
    "window",
    "domain",
    "categories",
    "frequency",
    "severity",
];

/// The keys a noiser's table may hold besides its own.
const TABLE_KEYS: &[&str] =
    &["kind", "llm", "temperature", "top_p", "max_tokens", "stop", "system", "template", "vary_by"];

/// The system message of every noiser, unless `system` replaces it.
const SYSTEM: &str =
    "You rewrite text exactly as instructed. Reply with the rewritten text only: no preamble, no quotes, no notes.";

/// A noiser: its keys, its template's variables (besides `{text}`), its default
/// temperature and prompt, and how its keys are read.
struct Def {
    name: &'static str,
    keys: &'static [&'static str],
    vars: &'static [&'static str],
    temperature: f64,
    template: &'static str,
    read: fn(&Params) -> Option<Settings>,
}

/// A noiser's keys as read: the values of its template's variables, what
/// `<output>_noiser` shows of them, (for `llm_context`) the context field and how many
/// characters of it the prompt takes, and the default template when the settings call for
/// another than the noiser's own (a persona of the user's with no examples has no
/// "Examples" line).
struct Settings {
    vars: Vec<(&'static str, String)>,
    shown: Vec<String>,
    context: Option<(String, usize)>,
    template: Option<String>,
}

const DEFS: &[Def] = &[
    Def {
        name: "llm_style_transfer",
        keys: &["style", "styles"],
        vars: &["style", "style_instructions"],
        temperature: 0.7,
        template: "{style_instructions}\nKeep the meaning and every fact, number and name.\n\nText:\n{text}",
        read: read_style,
    },
    Def {
        name: "llm_persona",
        keys: &["persona", "description", "traits", "examples", "instructions"],
        vars: &["persona", "description", "traits", "examples", "instructions"],
        temperature: 0.7,
        template: "Rewrite the text as this persona would write it.\nPersona: {persona}, {description}.\nTraits: {traits}.\nExamples of their writing:\n{examples}\n{instructions}\nKeep the meaning, the technical terms, numbers and references; change only the style and tone.\n\nText:\n{text}",
        read: read_persona,
    },
    Def {
        name: "llm_sentiment",
        keys: &["sentiment", "intensity", "preserve"],
        vars: &["sentiment", "sentiment_instructions", "intensity", "preserve"],
        temperature: 0.7,
        template: "{sentiment_instructions}\nIntensity, from 0 (slightly) to 1 (strongly): {intensity}.\nKeep these words unchanged: {preserve}.\nKeep the core meaning and the facts.\n\nText:\n{text}",
        read: read_sentiment,
    },
    Def {
        name: "llm_language",
        keys: &["language", "error_types", "rate"],
        vars: &["language", "error_types", "rate", "rate_percent"],
        temperature: 0.7,
        template: "Rewrite the text with the mistakes people make when they write in {language}: {error_types}. Change about {rate_percent}% of the words, naturally. Keep the meaning.\n\nText:\n{text}",
        read: read_language,
    },
    Def {
        name: "llm_locale",
        keys: &["locale", "instructions"],
        vars: &["locale", "instructions"],
        temperature: 0.3,
        template: "Adapt the text for readers in the {locale} locale, in its language. {instructions} Keep the meaning and the facts.\n\nText:\n{text}",
        read: read_locale,
    },
    Def {
        name: "llm_context",
        keys: &["context_field", "context_type", "window"],
        vars: &["context_type", "context_instructions"],
        temperature: 0.7,
        template: "Rewrite the text so that it fits its {context_type}: {context_instructions} Keep the meaning.\n\n{context_type}:\n{context}\n\nText:\n{text}",
        read: read_context,
    },
    Def {
        name: "llm_domain",
        keys: &["domain", "categories", "rate"],
        vars: &["domain", "categories", "rate", "rate_percent"],
        temperature: 0.7,
        template: "Introduce realistic {domain} errors into the text, of these kinds: {categories}. Change about {rate_percent}% of it, and keep its structure and overall meaning.\n\nText:\n{text}",
        read: read_domain,
    },
    Def {
        name: "llm_typos",
        keys: &["frequency", "severity", "error_types", "instructions"],
        vars: &["frequency", "severity", "error_types", "instructions"],
        temperature: 0.8,
        template: "Introduce realistic, human typos and errors into the text.\nKinds of errors:\n{error_types}\nHow often: {frequency}. How severe: {severity}.\n{instructions}\n\nText:\n{text}",
        read: read_typos,
    },
];

const STYLES: &[(&str, &str)] = &[
    ("technical", "Rewrite the text in a technical writing style, with precise terminology."),
    ("casual", "Rewrite the text in a casual, conversational tone."),
    ("academic", "Rewrite the text in an academic writing style, with formal language."),
    ("creative", "Rewrite the text with creative and descriptive language."),
    ("business", "Rewrite the text in the style of professional business communication."),
];

const SENTIMENTS: &[(&str, &str)] = &[
    ("positive", "Rewrite the text to express a more positive sentiment."),
    ("negative", "Rewrite the text to express a more negative sentiment."),
    ("neutral", "Rewrite the text in a more neutral and objective tone."),
    ("formal", "Rewrite the text in a more formal and professional tone."),
    ("casual", "Rewrite the text in a more casual and conversational tone."),
    ("intense", "Amplify the emotional intensity of the text, keeping the direction of its sentiment."),
];

/// Built-in domains and their error categories, each with examples for the prompt.
const DOMAINS: &[(&str, &[(&str, &str)])] = &[
    (
        "programming",
        &[
            ("syntax", "missing semicolons, mismatched brackets, wrong indentation"),
            ("naming", "camelCase and snake_case mixed, reserved words as names"),
            ("logic", "off-by-one errors, unhandled nulls"),
        ],
    ),
    (
        "medical",
        &[
            ("terminology", "confused drug names, misspelt conditions"),
            ("abbreviations", "ambiguous acronyms, wrong expansions"),
            ("dosage", "unit confusion, misplaced decimal points"),
        ],
    ),
    (
        "legal",
        &[
            ("terminology", "wrong legal terms, jurisdictions mixed up"),
            ("formatting", "citation errors, clause numbering"),
            ("references", "wrong statute numbers, case law errors"),
        ],
    ),
    (
        "scientific",
        &[
            ("notation", "unit conversion errors, wrong significant figures"),
            ("formatting", "equation layout, reference style"),
            ("terminology", "confused technical terms, misused symbols"),
        ],
    ),
];

const TYPO_ERRORS: &[&str] = &[
    "misspellings (\"teh\" for \"the\")",
    "missing letters (\"th\" for \"the\")",
    "transposed letters (\"thsi\" for \"this\")",
    "wrong case (\"Javascript\" for \"JavaScript\")",
    "homophones (\"their\" for \"there\")",
    "doubled letters (\"commmon\")",
    "missing or extra spaces",
    "missing or wrong punctuation",
];

const LANGUAGES: &[(&str, &str)] = &[
    ("en", "English"),
    ("es", "Spanish"),
    ("fr", "French"),
    ("de", "German"),
    ("it", "Italian"),
    ("pt", "Portuguese"),
    ("nl", "Dutch"),
    ("zh", "Chinese"),
    ("ja", "Japanese"),
    ("ko", "Korean"),
    ("ru", "Russian"),
    ("ar", "Arabic"),
    ("hi", "Hindi"),
];

/// Rewrites a text field with an LLM noiser: `<output>` holds the answer, `<output>_noiser`
/// the noiser with its settings and model, `<output>_seed` the request's seed (16 hex
/// digits), which the provider's sampling used where it supports seeds.
///
/// A null text gives nulls in the three fields and no request; a value that is not text in
/// a mixed field, and a request that gets no usable answer (after every retry, or cut off
/// at `max_tokens`), are bad records with the reason.
#[derive(Debug)]
pub struct LlmAugment {
    call: LlmCall,
    noiser: &'static str,
    field: String,
    output: String,
    noiser_field: String,
    seed_field: String,
    description: String,
    system: Prompt,
    template: Prompt,
    vary_by: VaryBy,
    config: CanonicalConfig,
}

fn def(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

/// The names of the LLM noisers.
pub fn noiser_names() -> impl Iterator<Item = &'static str> {
    DEFS.iter().map(|d| d.name)
}

/// The error for a noiser name that is not one.
fn unknown_noiser(p: &Params, item: &weave_core::ConfItem, name: &str) {
    let names: Vec<&str> = DEFS.iter().map(|d| d.name).collect();
    let mut d = Diagnostic::error(format!("unknown LLM noiser \"{name}\"")).with_code("invalid-value");
    d = d.at(Some(p.locate(item.span.clone())));
    d = match did_you_mean(name, names.iter().copied())
        .or_else(|| did_you_mean(&format!("llm_{name}"), names.iter().copied()))
    {
        Some(m) => d.with_help(format!("did you mean \"{m}\"?")),
        None => d.with_help(format!("the LLM noisers are {}", names.join(", "))),
    };
    p.push(d);
}

/// Builds an `augment` step whose noiser, written at `noiser` (a name or a table), is an
/// LLM noiser (alone: `augment` refuses a chain with one).
pub fn build(p: &Params, noiser: &ConfItem) -> Option<Step> {
    let field = p.str("field").unwrap_or_else(|| "text".to_owned());
    let output = p.str("output").unwrap_or_else(|| format!("{field}_noisy"));
    if output == field
        && let Some(item) = p.item("output")
    {
        p.error_at(item, "`output` must differ from `field`: augment keeps the original text");
    }
    let mut table: Option<Params> = None;
    let mut chosen: Option<&'static Def> = None;
    {
        let item = noiser;
        match &item.value {
            ConfValue::Str(name) => match def(name) {
                Some(d) => chosen = Some(d),
                None => unknown_noiser(p, item, name),
            },
            ConfValue::Table(t) => {
                let t = Params::new(t.clone(), p.file().clone(), "`noiser`", p.step_id().map(str::to_owned))
                    .spanning(item.span.clone())
                    .with_context(p.context())
                    .with_retry(p.retry_policy());
                if let Some(kind) = t.required_str("kind", "the noiser, such as \"llm_style_transfer\"") {
                    match def(&kind) {
                        Some(d) => chosen = Some(d),
                        None => {
                            if let Some(item) = t.item("kind") {
                                unknown_noiser(&t, item, &kind);
                            }
                        }
                    }
                }
                table = Some(t);
            }
            // `augment` sends only names and tables here (see `is_llm_noiser`).
            _ => {}
        }
    }
    let src = table.as_ref().unwrap_or(p);
    let settings = chosen.and_then(|d| (d.read)(src));
    // Keys of noisers not chosen, or on the step while the noiser has its own table.
    for key in NOISER_KEYS {
        if table.is_some() {
            if let Some(item) = p.item(key) {
                p.error_at(item, format!("`{key}` belongs in the `noiser` table, since the noiser is written as one"));
            }
        } else if let Some(d) = chosen.filter(|d| !d.keys.contains(key))
            && let Some(item) = p.item(key)
        {
            p.error_at(item, format!("`{key}` is not a key of noiser `{}` (its keys: {})", d.name, d.keys.join(", ")));
        }
    }
    let either = Either { step: p, inner: table.as_ref() };
    let call = LlmCall::read(p, table.as_ref(), chosen.map_or(0.7, |d| d.temperature), None);
    // Like the rule-based noisers, whose seed comes from the text: one text, one rewrite,
    // unless asked.
    let vary_by = VaryBy::read(either.pick("vary_by"), VaryBy::Prompt);
    let (mut system, mut template) = (None, None);
    if let (Some(d), Some(s)) = (chosen, &settings) {
        let resolve = |name: &str| -> Result<Var, String> {
            if name == "text" {
                return Ok(Var::Field { name: field.clone(), max_chars: None });
            }
            if name == "context"
                && let Some((f, window)) = &s.context
            {
                return Ok(Var::Field { name: f.clone(), max_chars: Some(*window) });
            }
            if let Some((_, v)) = s.vars.iter().find(|(n, _)| *n == name) {
                return Ok(Var::Fixed(v.clone()));
            }
            let mut known: Vec<&str> = vec!["text"];
            if s.context.is_some() {
                known.push("context");
            }
            known.extend_from_slice(d.vars);
            Err(prompt::unknown_var(name, &known))
        };
        let (ps, pt) = (either.pick("system"), either.pick("template"));
        system = prompt::read(ps, "system", Some(SYSTEM), &resolve);
        template = prompt::read(pt, "template", Some(s.template.as_deref().unwrap_or(d.template)), &resolve);
        if let (Some(sy), Some(te)) = (&system, &template) {
            let missing = |var: &str| !sy.uses(var) && !te.uses(var);
            let mut need = vec!["text"];
            if s.context.is_some() {
                need.push("context");
            }
            for var in need.into_iter().filter(|v| missing(v)) {
                let what = if var == "text" { "the text to rewrite" } else { "the context" };
                let msg = format!("the template never uses `{{{var}}}`: the model would not see {what}");
                match pt.item("template") {
                    Some(item) => {
                        pt.error_at(item, msg);
                    }
                    None => p.push(Diagnostic::error(msg)),
                }
            }
        }
    }
    if let Some(t) = table {
        let mut known: Vec<&str> = TABLE_KEYS.to_vec();
        known.extend(chosen.map_or(NOISER_KEYS, |d| d.keys));
        p.absorb(t, &known);
    }
    if p.has_errors() {
        return None;
    }
    let (d, s, call, system, template) = (chosen?, settings?, call?, system?, template?);
    let description = {
        let mut parts = s.shown.clone();
        parts.push(format!("model={}", call.provider().model));
        format!("{}({})", d.name, parts.join(","))
    };
    let config = call.config(p);
    Some(Step::Transform(Arc::new(LlmAugment {
        call,
        noiser: d.name,
        noiser_field: format!("{output}_noiser"),
        seed_field: format!("{output}_seed"),
        field,
        output,
        description,
        system,
        template,
        vary_by,
        config,
    })))
}

/// A list of strings at `key`, or `default`.
fn list_or(p: &Params, key: &str, default: &[&str]) -> Vec<String> {
    match p.str_list(key) {
        Some(l) if l.is_empty() => {
            if let Some(item) = p.item(key) {
                p.error_at(item, format!("`{key}` is empty: leave it out for the default"));
            }
            Vec::new()
        }
        Some(l) => l,
        None => default.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// A rate from 0 to 1 at `key`, or `default`.
fn unit(p: &Params, key: &str, default: f64) -> f64 {
    super::number_in(p, key, 0.0, 1.0).unwrap_or(default)
}

/// A named thing from `known` (or the user's `extra`), with "did you mean" when it is not.
fn named(p: &Params, key: &str, value: &str, known: &[(String, String)], hint: &str) -> Option<String> {
    if let Some((_, v)) = known.iter().find(|(n, _)| n == value) {
        return Some(v.clone());
    }
    let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
    let mut msg = format!("unknown {key} \"{value}\"");
    match did_you_mean(value, names.iter().copied()) {
        Some(m) => msg.push_str(&format!(" (did you mean \"{m}\"?)")),
        None => msg.push_str(&format!("; the {key}s are {}{hint}", names.join(", "))),
    }
    if let Some(item) = p.item(key) {
        p.error_at(item, msg);
    }
    None
}

fn read_style(p: &Params) -> Option<Settings> {
    let mut known: Vec<(String, String)> = STYLES.iter().map(|(n, i)| ((*n).to_owned(), (*i).to_owned())).collect();
    if let Some(item) = p.item("styles") {
        match &item.value {
            ConfValue::Table(t) => {
                for (name, _, v) in &t.entries {
                    match &v.value {
                        ConfValue::Str(s) if !s.trim().is_empty() => {
                            known.retain(|(n, _)| n != name);
                            known.push((name.clone(), s.clone()));
                        }
                        _ => {
                            p.error_at(
                                v,
                                format!("style `{name}` must be its instruction, such as \"Rewrite the text as a pirate would say it.\""),
                            );
                        }
                    }
                }
            }
            other => {
                p.error_at(
                    item,
                    format!(
                        "`styles` must be a table of style names and instructions, such as {{ pirate = \"Rewrite the text as a pirate would say it.\" }}, not {}",
                        other.type_name()
                    ),
                );
            }
        }
    }
    let style = p.required_str("style", "technical, casual, academic, creative, business, or one of `styles`")?;
    let instructions = named(p, "style", &style, &known, ", or your own in `styles`")?;
    Some(Settings {
        vars: vec![("style", style.clone()), ("style_instructions", instructions)],
        shown: vec![format!("style={style}")],
        context: None,
        template: None,
    })
}

/// A persona's defaults: the built-in one's, which apply to it alone.
struct Persona {
    name: &'static str,
    description: &'static str,
    traits: &'static [&'static str],
    examples: &'static [&'static str],
    instructions: &'static str,
}

/// The persona used when the noiser names none.
const TECHNICAL_EXPERT: Persona = Persona {
    name: "Technical Expert",
    description: "a knowledgeable and precise technical professional",
    traits: &["precise", "knowledgeable", "professional", "analytical", "detail-oriented"],
    examples: &[
        "The implementation uses a bounded queue, so memory stays flat under load.",
        "Based on the measurements, we can conclude that the cache pays for itself.",
    ],
    instructions: "Write in a clear, professional and technically accurate manner.",
};

/// A persona's settings. The built-in persona's description, traits, examples and
/// instructions apply only to it: a persona of the user's gets what its keys say and
/// nothing else, and the prompt leaves out the lines for what they do not say (a "hurried
/// customer" must not come out as "a knowledgeable and precise technical professional").
fn read_persona(p: &Params) -> Option<Settings> {
    let persona = p.str("persona").unwrap_or_else(|| TECHNICAL_EXPERT.name.to_owned());
    let built_in = persona.eq_ignore_ascii_case(TECHNICAL_EXPERT.name);
    let default = |value: &'static str| if built_in { value } else { "" };
    let defaults = |values: &'static [&'static str]| if built_in { values } else { &[] };
    let description = p.str("description").unwrap_or_else(|| default(TECHNICAL_EXPERT.description).to_owned());
    let traits = list_or(p, "traits", defaults(TECHNICAL_EXPERT.traits));
    let examples = list_or(p, "examples", defaults(TECHNICAL_EXPERT.examples));
    let instructions = p.str("instructions").unwrap_or_else(|| default(TECHNICAL_EXPERT.instructions).to_owned());
    let examples: Vec<String> = examples.iter().map(|e| format!("- {e}")).collect();
    // The noiser's template, without the lines of what is not given; with everything
    // given (the built-in persona), it is that template.
    let mut template = String::from("Rewrite the text as this persona would write it.\nPersona: {persona}");
    if !description.trim().is_empty() {
        template.push_str(", {description}");
    }
    template.push_str(".\n");
    if !traits.is_empty() {
        template.push_str("Traits: {traits}.\n");
    }
    if !examples.is_empty() {
        template.push_str("Examples of their writing:\n{examples}\n");
    }
    if !instructions.trim().is_empty() {
        template.push_str("{instructions}\n");
    }
    template.push_str(
        "Keep the meaning, the technical terms, numbers and references; change only the style and tone.\n\nText:\n{text}",
    );
    Some(Settings {
        vars: vec![
            ("persona", persona.clone()),
            ("description", description),
            ("traits", traits.join(", ")),
            ("examples", examples.join("\n")),
            ("instructions", instructions),
        ],
        shown: vec![format!("persona={persona}")],
        context: None,
        template: Some(template),
    })
}

fn read_sentiment(p: &Params) -> Option<Settings> {
    let names: Vec<&'static str> = SENTIMENTS.iter().map(|(n, _)| *n).collect();
    let sentiment = p.choice("sentiment", &names).unwrap_or("neutral");
    let intensity = unit(p, "intensity", 0.5);
    let preserve = p.str_list("preserve").unwrap_or_default();
    let instructions = SENTIMENTS.iter().find(|(n, _)| *n == sentiment).map_or("", |(_, i)| i);
    Some(Settings {
        vars: vec![
            ("sentiment", sentiment.to_owned()),
            ("sentiment_instructions", instructions.to_owned()),
            ("intensity", intensity.to_string()),
            ("preserve", if preserve.is_empty() { "none".to_owned() } else { preserve.join(", ") }),
        ],
        shown: vec![format!("sentiment={sentiment}"), format!("intensity={intensity}")],
        context: None,
        template: None,
    })
}

fn read_language(p: &Params) -> Option<Settings> {
    let language = p.str("language").unwrap_or_else(|| "en".to_owned());
    let name = LANGUAGES.iter().find(|(c, _)| c.eq_ignore_ascii_case(&language)).map_or(language.as_str(), |(_, n)| n);
    let errors = list_or(p, "error_types", &["grammar"]);
    let rate = unit(p, "rate", 0.3);
    Some(Settings {
        vars: vec![
            ("language", name.to_owned()),
            ("error_types", errors.join(", ")),
            ("rate", rate.to_string()),
            ("rate_percent", format!("{:.0}", rate * 100.0)),
        ],
        shown: vec![format!("language={language}"), format!("rate={rate}")],
        context: None,
        template: None,
    })
}

fn read_locale(p: &Params) -> Option<Settings> {
    let locale = p.required_str("locale", "the locale to adapt the text to, such as \"en-GB\" or \"pt-BR\"")?;
    if locale.trim().is_empty() {
        if let Some(item) = p.item("locale") {
            p.error_at(item, "`locale` is empty: name a locale, such as \"en-GB\"");
        }
        return None;
    }
    let instructions = p.str("instructions").unwrap_or_else(|| {
        "Adapt spelling, vocabulary, idioms, units, dates, currencies and place names to what readers there expect."
            .to_owned()
    });
    Some(Settings {
        vars: vec![("locale", locale.clone()), ("instructions", instructions)],
        shown: vec![format!("locale={locale}")],
        context: None,
        template: None,
    })
}

fn read_context(p: &Params) -> Option<Settings> {
    let field = p.required_str("context_field", "the field that holds the text's context")?;
    let kind = p.choice("context_type", &["document", "conversation", "paragraph"]).unwrap_or("document");
    let window = p.u64("window").unwrap_or(1000);
    if window == 0
        && let Some(item) = p.item("window")
    {
        p.error_at(item, "`window` (characters of context) must be at least 1");
    }
    let instructions = match kind {
        "conversation" => "keep the conversation coherent, the speaker's character and a natural flow.",
        "paragraph" => "keep the logical flow and the transitions between paragraphs, and a consistent style.",
        _ => "keep the document's style, tone and terminology, and a coherent flow.",
    };
    Some(Settings {
        vars: vec![("context_type", kind.to_owned()), ("context_instructions", instructions.to_owned())],
        shown: vec![format!("context_field={field}"), format!("context_type={kind}")],
        context: Some((field, window.max(1) as usize)),
        template: None,
    })
}

fn read_domain(p: &Params) -> Option<Settings> {
    let domain = p.required_str("domain", "programming, medical, legal, scientific, or your own with `categories`")?;
    let rate = unit(p, "rate", 0.3);
    let given = p.str_list("categories");
    let categories = match DOMAINS.iter().find(|(n, _)| *n == domain) {
        Some((_, cats)) => match &given {
            None => cats.iter().map(|(c, e)| format!("{c} ({e})")).collect::<Vec<_>>(),
            Some(list) => {
                let known: Vec<(String, String)> =
                    cats.iter().map(|(c, e)| ((*c).to_owned(), format!("{c} ({e})"))).collect();
                let mut out = Vec::new();
                for c in list {
                    out.push(named(p, "categories", c, &known, "")?);
                }
                if out.is_empty()
                    && let Some(item) = p.item("categories")
                {
                    p.error_at(item, "`categories` is empty: leave it out to use every category");
                }
                out
            }
        },
        None => match given {
            Some(list) if !list.is_empty() => list,
            _ => {
                let names: Vec<&str> = DOMAINS.iter().map(|(n, _)| *n).collect();
                let mut msg = format!("domain \"{domain}\" is not built in: describe its errors in `categories`");
                if let Some(m) = did_you_mean(&domain, names.iter().copied()) {
                    msg = format!(
                        "unknown domain \"{domain}\" (did you mean \"{m}\"? or describe its errors in `categories`)"
                    );
                }
                if let Some(item) = p.item("domain") {
                    p.error_at(item, msg);
                }
                return None;
            }
        },
    };
    Some(Settings {
        vars: vec![
            ("domain", domain.clone()),
            ("categories", categories.join("; ")),
            ("rate", rate.to_string()),
            ("rate_percent", format!("{:.0}", rate * 100.0)),
        ],
        shown: vec![format!("domain={domain}"), format!("rate={rate}")],
        context: None,
        template: None,
    })
}

fn read_typos(p: &Params) -> Option<Settings> {
    let frequency = p.choice("frequency", &["low", "moderate", "high"]).unwrap_or("moderate");
    let severity = p.choice("severity", &["mild", "moderate", "severe"]).unwrap_or("mild");
    let errors = list_or(p, "error_types", TYPO_ERRORS);
    let instructions = p.str("instructions").unwrap_or_else(|| {
        "Keep the text readable; keep code, technical terms and numbers mostly intact; make the errors look human."
            .to_owned()
    });
    let errors: Vec<String> = errors.iter().map(|e| format!("- {e}")).collect();
    Some(Settings {
        vars: vec![
            ("frequency", frequency.to_owned()),
            ("severity", severity.to_owned()),
            ("error_types", errors.join("\n")),
            ("instructions", instructions),
        ],
        shown: vec![format!("frequency={frequency}"), format!("severity={severity}")],
        context: None,
        template: None,
    })
}

impl LlmAugment {
    /// The noiser's name (`"llm_style_transfer"`).
    pub fn noiser(&self) -> &str {
        self.noiser
    }

    /// What `<output>_noiser` holds: the noiser, its settings and the model.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl StepInfo for LlmAugment {
    /// 2 (`vary_by = "record"` only): over records whose fields vary (JSON), the salt is
    /// the record's own fields in name order.
    fn version(&self) -> u32 {
        if self.vary_by == VaryBy::Record { 2 } else { 1 }
    }

    fn fields_read(&self) -> Vec<String> {
        let mut read = vec![self.field.clone()];
        read.extend(self.system.fields().into_iter().chain(self.template.fields()).map(str::to_owned));
        read.extend(self.vary_by.fields_read());
        read
    }

    fn kind(&self) -> &str {
        "augment"
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn resources(&self) -> weave_core::Resources {
        self.call.resources()
    }

    fn estimated_cost(&self) -> f64 {
        super::COST
    }
}

/// What one row of a batch needs.
enum Plan {
    /// A request (its number among the batch's requests).
    Ask(usize),
    /// A null text: nulls out, no request.
    Null,
    /// A bad record, with the reason.
    Bad(String),
}

impl Transform for LlmAugment {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let schema = batch.schema();
        let col = schema.index_of(&self.field).ok_or_else(|| crate::missing_field(batch, &self.field))?;
        if !matches!(schema.fields()[col].data_type, DataType::Str | DataType::Any | DataType::Null) {
            return Err(StepError::fatal(format!(
                "field `{}` holds {} values, not text: name a text field with `field`",
                self.field,
                schema.fields()[col].data_type
            )));
        }
        for f in [&self.output, &self.noiser_field, &self.seed_field] {
            if schema.index_of(f).is_some() {
                return Err(StepError::fatal(format!(
                    "field `{f}` is already in the data: set `output` to a field it does not have"
                )));
            }
        }
        let (scols, tcols) = (self.system.columns(batch)?, self.template.columns(batch)?);
        let vcols = self.vary_by.columns(batch, ctx)?;
        let mut plans = Vec::with_capacity(batch.len());
        let mut requests = Vec::new();
        for row in 0..batch.len() {
            let plan = match batch.columns()[col].get(row) {
                ValueRef::Null => Plan::Null,
                ValueRef::Str(_) => {
                    let (mut system, mut user) = (String::new(), String::new());
                    match self
                        .system
                        .render(batch, &scols, row, &mut system)
                        .and_then(|()| self.template.render(batch, &tcols, row, &mut user))
                    {
                        Ok(()) => {
                            let salt = self.vary_by.salt(batch, &vcols, row, ctx);
                            requests.push(Request::new(Some(system), user, ctx.seed(), 0, salt.as_ref()));
                            Plan::Ask(requests.len() - 1)
                        }
                        Err(why) => Plan::Bad(why),
                    }
                }
                v => Plan::Bad(format!("`{}` is not text ({})", self.field, v.type_name())),
            };
            plans.push(plan);
        }
        let seeds: Vec<u64> = requests.iter().map(|r| r.seed).collect();
        let outcomes = self.call.run(requests, ctx)?;
        let mut keep = vec![true; batch.len()];
        let kept = plans.iter().filter(|p| !matches!(p, Plan::Bad(_))).count();
        let mut text = StrColumn::with_capacity(kept, 0);
        let mut noiser = StrColumn::with_capacity(kept, kept * self.description.len());
        let mut seed = StrColumn::with_capacity(kept, kept * 16);
        for (row, plan) in plans.iter().enumerate() {
            let reason = match plan {
                Plan::Null => {
                    text.push_null();
                    noiser.push_null();
                    seed.push_null();
                    continue;
                }
                Plan::Bad(why) => why.clone(),
                Plan::Ask(i) => match &outcomes[*i] {
                    Outcome::Answered(a) => match self.usable(a) {
                        Ok(t) => {
                            text.push(t);
                            noiser.push(&self.description);
                            seed.push(&format!("{:016x}", seeds[*i]));
                            continue;
                        }
                        Err(why) => why,
                    },
                    Outcome::Rejected(why) => why.clone(),
                },
            };
            keep[row] = false;
            ctx.reject(Rejected {
                reason: format!("{}: {reason}", self.noiser),
                record: Some(batch.row(row).to_record()),
                origin: None,
            });
        }
        let out = batch.filter(&keep);
        let out = out
            .with_column(&self.output, weave_core::Column::from(text))
            .and_then(|b| b.with_column(&self.noiser_field, weave_core::Column::from(noiser)))
            .and_then(|b| b.with_column(&self.seed_field, weave_core::Column::from(seed)))
            .map_err(|e| StepError::internal(e.to_string()))?;
        Ok(out)
    }
}

impl LlmAugment {
    /// The rewritten text of an answer, or why it cannot be used.
    fn usable<'a>(&self, a: &'a super::client::Answer) -> Result<&'a str, String> {
        if a.truncated() {
            return Err(match self.call.max_tokens() {
                Some(m) => format!("the answer was cut off at max_tokens = {m} (raise `max_tokens`)"),
                None => "the answer was cut off at the server's token limit (set `max_tokens`)".to_owned(),
            });
        }
        let t = a.content.trim();
        if t.is_empty() { Err("the answer is empty".to_owned()) } else { Ok(t) }
    }
}
