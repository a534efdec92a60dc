//! The `{name}` template syntax every step shares: `generate`'s templates (`{slot}`), the
//! LLM steps' prompts (`{field}`) and the exporters' `path` patterns (`{field}`,
//! `{index:05}`).
//!
//! A template is text with names between braces; `{{` and `}}` are literal braces. A name
//! is trimmed of surrounding whitespace (`{ device }` is `device`), must not be empty, and
//! must not hold a brace. What a name may be beyond that is the caller's business: the
//! parser only cuts the text. Positions in messages count characters from 1, as an editor's
//! column does, so that a template with accented letters points at the right brace.

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal text, with `{{` and `}}` already turned into braces.
    Text(String),
    /// A name between braces, trimmed.
    Name {
        /// The name.
        name: String,
        /// The character (from 1) of its opening brace in the template.
        at: usize,
    },
}

/// Why a template does not parse. `noun` is what the caller calls a name (`"slot"`,
/// `"variable"`, `"placeholder"`), for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `{` without its `}` (or with another `{` first).
    #[error("the `{{` at character {at} opens a {noun} that is not closed (write `{{{{` for a brace)")]
    Unclosed {
        /// The character (from 1) of the brace.
        at: usize,
        /// What a name is called.
        noun: String,
    },
    /// A `}` that closes nothing.
    #[error("the `}}` at character {at} closes no {noun} (write `}}}}` for a brace)")]
    Unopened {
        /// The character (from 1) of the brace.
        at: usize,
        /// What a name is called.
        noun: String,
    },
    /// `{}`, or only whitespace between the braces.
    #[error("the {noun} at character {at} has no name (write `{{{{}}}}` for braces)")]
    NoName {
        /// The character (from 1) of the opening brace.
        at: usize,
        /// What a name is called.
        noun: String,
    },
}

/// Cuts `s` into text and names. `noun` names a name in the error messages.
pub fn parse_template(s: &str, noun: &str) -> Result<Vec<TemplatePart>, TemplateError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = s.char_indices().peekable();
    // The character number (from 1) of the character at byte `i`.
    let at = |i: usize| s[..i].chars().count() + 1;
    while let Some((i, c)) = chars.next() {
        match c {
            '{' | '}' if chars.peek().is_some_and(|&(_, next)| next == c) => {
                chars.next();
                text.push(c);
            }
            '{' => {
                let rest = &s[i + 1..];
                let Some(end) = rest.find(['}', '{']).filter(|&e| rest.as_bytes()[e] == b'}') else {
                    return Err(TemplateError::Unclosed { at: at(i), noun: noun.to_owned() });
                };
                let name = rest[..end].trim();
                if name.is_empty() {
                    return Err(TemplateError::NoName { at: at(i), noun: noun.to_owned() });
                }
                if !text.is_empty() {
                    out.push(TemplatePart::Text(std::mem::take(&mut text)));
                }
                out.push(TemplatePart::Name { name: name.to_owned(), at: at(i) });
                // Skip the name and the closing brace.
                while chars.next_if(|&(j, _)| j <= i + 1 + end).is_some() {}
            }
            '}' => return Err(TemplateError::Unopened { at: at(i), noun: noun.to_owned() }),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(TemplatePart::Text(text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str, at: usize) -> TemplatePart {
        TemplatePart::Name { name: name.into(), at }
    }

    fn text(t: &str) -> TemplatePart {
        TemplatePart::Text(t.into())
    }

    #[test]
    fn names_text_and_escaped_braces() {
        assert_eq!(
            parse_template("My {device} won't { problem }.", "slot").unwrap(),
            [text("My "), name("device", 4), text(" won't "), name("problem", 19), text(".")]
        );
        assert_eq!(parse_template("a{{b}}/{index:03}", "placeholder").unwrap(), [text("a{b}/"), name("index:03", 8)]);
        assert_eq!(parse_template("", "slot").unwrap(), []);
        assert_eq!(parse_template("{{}}", "slot").unwrap(), [text("{}")]);
    }

    #[test]
    fn positions_count_characters_from_one() {
        // "é" is two bytes: a byte count would say 4, not 3.
        let e = parse_template("é}{x", "slot").unwrap_err();
        assert_eq!(e.to_string(), "the `}` at character 2 closes no slot (write `}}` for a brace)");
        assert_eq!(parse_template("éé{x}", "slot").unwrap(), [text("éé"), name("x", 3)]);
        for (bad, message) in [
            ("{", "the `{` at character 1 opens a slot that is not closed (write `{{` for a brace)"),
            ("ab{c{d}", "the `{` at character 3 opens a slot that is not closed (write `{{` for a brace)"),
            ("ab}", "the `}` at character 3 closes no slot (write `}}` for a brace)"),
            ("{ }", "the slot at character 1 has no name (write `{{}}` for braces)"),
        ] {
            assert_eq!(parse_template(bad, "slot").unwrap_err().to_string(), message, "{bad}");
        }
    }
}
