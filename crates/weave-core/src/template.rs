//! The `{name}` templates of the pipeline file (`generate`'s slots, the LLM steps'
//! prompt variables): one parser, so that both read a template alike.

/// Parses a template into pieces — text, or a name in braces (`true`) — with the names
/// unresolved; an error says what is wrong and at which character, calling the names
/// `noun`s ("slot", "variable"). `{{` and `}}` are braces.
pub fn parse_template(s: &str, noun: &str) -> Result<Vec<(bool, String)>, String> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut text = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|(_, c)| *c == '{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().is_some_and(|(_, c)| *c == '}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let rest = &s[i + 1..];
                let Some(end) = rest.find(['}', '{']).filter(|&e| rest.as_bytes()[e] == b'}') else {
                    return Err(format!(
                        "the `{{` at character {} opens a {noun} that is not closed (write `{{{{` for a brace)",
                        s[..i].chars().count() + 1
                    ));
                };
                let name = rest[..end].trim();
                if name.is_empty() {
                    return Err(format!(
                        "the {noun} at character {} has no name (write `{{{{}}}}` for braces)",
                        s[..i].chars().count() + 1
                    ));
                }
                if !text.is_empty() {
                    out.push((false, std::mem::take(&mut text)));
                }
                out.push((true, name.to_owned()));
                // Skip the name and the closing brace.
                for _ in 0..rest[..=end].chars().count() {
                    chars.next();
                }
            }
            '}' => {
                return Err(format!(
                    "the `}}` at character {} closes no {noun} (write `}}}}` for a brace)",
                    s[..i].chars().count() + 1
                ));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push((false, text));
    }
    Ok(out)
}
