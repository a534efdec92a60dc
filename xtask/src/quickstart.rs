//! `cargo xtask quickstart-data`: writes `examples/quickstart/raw_data.csv`, the shipped
//! example's input — a few thousand support tickets, as messy as real exports are.
//!
//! The file is committed; this task is how it was made, and makes it again byte for byte
//! (a fixed seed). What is in it, on purpose:
//! - tickets from five queues (`label`): hardware, account, billing, shipping, software,
//!   made from phrase templates with slot values (products, order numbers, days, names);
//! - stray whitespace (leading, trailing, doubled, tabs), HTML left over from a help-desk
//!   export (`<br>`, `<p>`, `&amp;`), texts in capitals, and line breaks inside a quoted
//!   field;
//! - exact duplicates and near duplicates (case and spacing), as when a ticket is filed
//!   twice;
//! - texts too short to use ("hi", "help!!", "???"), empty texts, missing labels;
//! - non-ASCII text: accented names, curly quotes, a few emoji, some Spanish tickets;
//! - keyboard mashing and repeated-word spam, which a coherence check should catch.

use std::fmt::Write as _;
use std::path::Path;

use crate::bench::Rng;

/// Rows written.
const ROWS: usize = 3000;

const PRODUCTS: &[&str] = &[
    "Aurora X2 laptop",
    "Pixel Dock",
    "ZenPhone 12",
    "SoundWave earbuds",
    "HomeHub router",
    "Orbit smartwatch",
    "Lumen desk lamp",
    "TypeMaster keyboard",
];
const NAMES: &[&str] = &["José", "Zoë", "Anna", "Mohammed", "Li Wei", "Siobhán", "Tom", "Priya", "Björn", "Chloé"];
const DAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend", "yesterday"];

/// (label, templates). Slots: {product}, {order}, {day}, {name}, {n}.
const QUEUES: &[(&str, &[&str])] = &[
    (
        "hardware",
        &[
            "My {product} arrived with a cracked screen, can I get a replacement?",
            "The {product} stopped charging on {day}. I already tried another cable.",
            "Since the last update my {product} overheats after {n} minutes of use.",
            "The hinge on my {product} feels loose and makes a clicking noise.",
            "One of the keys on the {product} is stuck and the battery drains overnight.",
            "I dropped my {product} and now the speaker crackles at any volume.",
        ],
    ),
    (
        "account",
        &[
            "Password reset email never arrives. Checked spam folder twice.",
            "I can't log in since {day}, it says my account is locked.",
            "Please change the email on my account, I no longer use the old one.",
            "Two-factor codes are rejected even though the clock on my phone is right.",
            "Hi, this is {name}: how do I delete my account and all my data?",
            "My account shows someone else's name after I signed in on {day}.",
        ],
    ),
    (
        "billing",
        &[
            "I was charged twice for order #{order}, please refund one of the payments.",
            "Why did my subscription price go up by {n} dollars this month?",
            "The invoice for order #{order} has the wrong company name on it.",
            "I cancelled on {day} but was still billed for the next month.",
            "Can I pay for order #{order} by bank transfer instead of card?",
            "The discount code from your newsletter is not applied at checkout.",
        ],
    ),
    (
        "shipping",
        &[
            "Order #{order} has been \"in transit\" for {n} days, where is it?",
            "The tracking number for order #{order} does not work on the courier's site.",
            "My parcel was delivered to the wrong address on {day}.",
            "Can I change the delivery address for order #{order}? It hasn't shipped yet.",
            "The box arrived damaged and the {product} inside is scratched.",
            "Do you ship to Canary Islands? The checkout refuses my postcode.",
        ],
    ),
    (
        "software",
        &[
            "How do I export my data as CSV? I can't find the option anywhere.",
            "The app crashes every time I open settings on my {product}.",
            "After updating to version 4.{n} the sync with my {product} stopped working.",
            "Dark mode resets to light mode every time I restart the app.",
            "Notifications arrive {n} minutes late on my {product}.",
            "The search in the app returns nothing for words with accents like \"café\".",
        ],
    ),
];

/// What people add to a ticket.
const CONTEXT: &[&str] = &[
    "I have been a customer for {n} years.",
    "My customer number is {order}{n}.",
    "This is the second time I write about it.",
    "I need this fixed before {day}.",
    "Please call me back, {name} speaking.",
    "It happened again this morning at {n}:15.",
    "I attached a photo of the problem.",
    "My colleague {name} has the same issue.",
    "I bought it {n} days ago.",
    "Order #{order}, in case you need it.",
    "Nothing in the FAQ helped.",
    "Thanks in advance, {name}.",
];

/// Spanish tickets, with their queue.
const SPANISH: &[(&str, &str)] = &[
    ("shipping", "Mi pedido #{order} no ha llegado todavía, ¿pueden revisarlo?"),
    ("billing", "Me cobraron dos veces el pedido #{order}, necesito un reembolso."),
    ("hardware", "La pantalla de mi {product} se rompió al segundo día de uso."),
    ("account", "No puedo iniciar sesión desde el {day}, dice que la contraseña es incorrecta."),
];

/// Texts too short to be useful, and noise.
const JUNK: &[&str] = &["hi", "help!!", "???", "test", "asdf", "ok thanks", "."];
const MASHING: &[&str] = &[
    "asdkjh qwpoeiru zmxncb alskdjf qpwoei",
    "refund refund refund refund refund refund refund refund",
    "!!!!!!!! ??????? !!!!!!!!",
    "jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj",
];

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = match args.first() {
        Some(p) => Path::new(p).to_path_buf(),
        None => root.join("examples/quickstart/raw_data.csv"),
    };
    let csv = generate(ROWS, 2024);
    std::fs::write(&path, &csv).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {} ({} rows, {} bytes)", path.display(), ROWS, csv.len());
    Ok(())
}

/// The CSV text: `id,text,label,channel`.
pub(crate) fn generate(rows: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::from("id,text,label,channel\n");
    let mut written: Vec<(String, String)> = Vec::new();
    for id in 1..=rows {
        let channel = rng.pick(&["email", "chat", "web form", "phone"]);
        let (text, label) = ticket(&mut rng, &written);
        if written.len() < 500 || rng.chance(0.05) {
            written.push((text.clone(), label.clone()));
        }
        let _ = writeln!(out, "{id},{},{},{channel}", field(&text), field(&label));
    }
    out
}

fn ticket(rng: &mut Rng, written: &[(String, String)]) -> (String, String) {
    let roll = rng.below(1000);
    // Duplicates: the same ticket filed again, exactly or with other case and spacing.
    if roll < 50 && !written.is_empty() {
        let (t, l) = &written[rng.below(written.len())];
        return (t.clone(), l.clone());
    }
    if roll < 80 && !written.is_empty() {
        let (t, l) = &written[rng.below(written.len())];
        let t = if rng.chance(0.5) { t.to_uppercase() } else { format!("  {}  ", t.replace(' ', "  ")) };
        return (t, l.clone());
    }
    if roll < 110 {
        return (rng.pick(JUNK).to_owned(), rng.pick(&["", "account", "software"]).to_owned());
    }
    if roll < 125 {
        return (String::new(), rng.pick(&["", "billing"]).to_owned());
    }
    if roll < 140 {
        return (rng.pick(MASHING).to_owned(), rng.pick(&["", "billing", "hardware"]).to_owned());
    }
    let (label, mut text) = if roll < 190 {
        let (l, t) = SPANISH[rng.below(SPANISH.len())];
        (l, fill(t, rng))
    } else {
        let (l, templates) = QUEUES[rng.below(QUEUES.len())];
        let mut t = fill(templates[rng.below(templates.len())], rng);
        // Most tickets say a little more: context, or a second problem.
        if rng.chance(0.6) {
            t.push(' ');
            t.push_str(&fill(rng.pick(CONTEXT), rng));
        }
        if rng.chance(0.25) {
            let (_, more) = QUEUES[rng.below(QUEUES.len())];
            t.push(' ');
            t.push_str(&fill(more[rng.below(more.len())], rng));
        }
        (l, t)
    };
    // Mess, as help-desk exports have it.
    match rng.below(12) {
        0 => text = format!("  {text}   "),
        1 => text = text.replacen(". ", ".  ", 2).replacen(", ", " ,  ", 1),
        2 => text = format!("<p>{}</p>", text.replacen(". ", ".<br>", 1)),
        3 => text = text.replace(" and ", " &amp; "),
        4 => text = text.replacen(". ", ".\n", 1),
        5 => text = format!("\t{text}"),
        6 => {
            text =
                format!("{text} {}", rng.pick(&["🙏", "😡", "👍", "Thanks!", "Regards, Tom", "– sent from my phone"]))
        }
        7 => text = text.replace('"', "\u{201c}"),
        _ => {}
    }
    let label = if rng.chance(0.02) { String::new() } else { label.to_owned() };
    (text, label)
}

fn fill(template: &str, rng: &mut Rng) -> String {
    template
        .replace("{product}", rng.pick(PRODUCTS))
        .replace("{order}", &(1000 + rng.below(9000)).to_string())
        .replace("{day}", rng.pick(DAYS))
        .replace("{name}", rng.pick(NAMES))
        .replace("{n}", &(2 + rng.below(28)).to_string())
}

/// A CSV field, quoted when it must be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
