//! Text functions shared by the cleaning steps and the benchmarks: each writes its result
//! into a buffer that the caller reuses, so no call allocates.

use weave_core::Appender;

/// Writes `s` with leading and trailing whitespace removed and every inner run of
/// whitespace (Unicode `White_Space`, so tabs, newlines and no-break spaces too) replaced
/// by one ASCII space.
pub fn trim_collapse_into(s: &str, out: &mut Appender<'_>) {
    // Copying word by word costs two mispredicted branches per word (where it starts and
    // where it ends), which dominates on short words. Instead ASCII is compacted through a
    // buffer on the stack: every byte is written, whitespace as ' ', and the write position
    // moves on unless a space follows a space (a data-dependent index rather than a
    // branch); each full buffer goes out in one `push_str`. Non-ASCII characters are
    // copied whole; only those whose first byte can start a Unicode space (C2, E1, E2, E3)
    // are decoded.
    let bytes = s.as_bytes();
    // 1 after whitespace, and at the start, so that leading whitespace is dropped.
    let mut after_space = 1;
    let mut buf = [0u8; 128];
    let mut i = 0;
    while i < bytes.len() {
        let chunk = &bytes[i..bytes.len().min(i + buf.len())];
        let mut j = 0;
        let mut k = 0;
        while k < chunk.len() && chunk[k] < 0x80 {
            let b = chunk[k];
            let space = usize::from(matches!(b, b' ' | b'\t'..=b'\r'));
            buf[j] = if space == 1 { b' ' } else { b };
            j += 1 - (space & after_space);
            after_space = space;
            k += 1;
        }
        // ASCII in, ASCII out: always valid.
        out.push_str(std::str::from_utf8(&buf[..j]).unwrap_or_default());
        i += k;
        if k < chunk.len() {
            let b = bytes[i];
            let len = if b < 0xe0 {
                2
            } else if b < 0xf0 {
                3
            } else {
                4
            };
            let c = &s[i..i + len];
            if matches!(b, 0xc2 | 0xe1..=0xe3) && c.chars().next().is_some_and(char::is_whitespace) {
                if after_space == 0 {
                    out.push(' ');
                }
                after_space = 1;
            } else {
                out.push_str(c);
                after_space = 0;
            }
            i += len;
        }
    }
    // A space is only ever written for whitespace, so a final one is trailing whitespace.
    if out.written().ends_with(' ') {
        let len = out.written().len() - 1;
        out.truncate(len);
    }
}

/// Writes `s` trimmed of leading and trailing whitespace.
pub fn trim_into(s: &str, out: &mut Appender<'_>) {
    out.push_str(s.trim());
}

/// Writes `s` with every inner run of whitespace replaced by one space, keeping one space
/// for leading or trailing runs.
pub fn collapse_into(s: &str, out: &mut Appender<'_>) {
    let mut in_space = false;
    let mut run_start = 0;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if !in_space {
                out.push_str(&s[run_start..i]);
                out.push(' ');
                in_space = true;
            }
        } else if in_space {
            run_start = i;
            in_space = false;
        }
    }
    if !in_space {
        out.push_str(&s[run_start..]);
    }
}

/// Writes `s` in lower case (Unicode-aware; ASCII text takes a fast path).
pub fn lowercase_into(s: &str, out: &mut Appender<'_>) {
    if !s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        out.push_str(s);
    } else if s.is_ascii() {
        push_ascii_lower(s.as_bytes(), out);
    } else {
        // Mixed text: ASCII runs through the fast path, only the other characters through
        // the Unicode tables (all of it through `char::to_lowercase` ran at a tenth of the
        // speed of the other rewrites in `cargo xtask bench ops`).
        let mut rest = s;
        while !rest.is_empty() {
            let ascii = rest.bytes().take_while(u8::is_ascii).count();
            push_ascii_lower(&rest.as_bytes()[..ascii], out);
            rest = &rest[ascii..];
            if let Some(c) = rest.chars().next() {
                for l in c.to_lowercase() {
                    out.push(l);
                }
                rest = &rest[c.len_utf8()..];
            }
        }
    }
}

/// Appends the ASCII bytes `run` in lower case, through a small buffer, so that the output
/// grows by a slice at a time rather than a character at a time.
fn push_ascii_lower(run: &[u8], out: &mut Appender<'_>) {
    let mut buf = [0u8; 64];
    for chunk in run.chunks(buf.len()) {
        let lower = &mut buf[..chunk.len()];
        for (l, b) in lower.iter_mut().zip(chunk) {
            *l = b.to_ascii_lowercase();
        }
        // ASCII in, ASCII out: always valid.
        out.push_str(std::str::from_utf8(lower).unwrap_or_default());
    }
}

/// Appends the key form of `s` to `key`, as `dedup` and `validate`'s uniqueness check
/// normalise a field: trimmed when `trim` or `collapse`, every inner run of whitespace
/// made one space when `collapse`, lower case when `lowercase`.
///
/// One pass, the way [`trim_collapse_into`] does it: ASCII is compacted through a buffer
/// on the stack without a branch per word or per byte, and only the other characters are
/// decoded (whitespace among them collapsed, the rest lower-cased through the Unicode
/// tables). Text with a few accented words thus stays on the fast path for all but those
/// characters, where splitting it into words cost a third of a dedup run's CPU.
pub(crate) fn normalise_key_into(s: &str, lowercase: bool, trim: bool, collapse: bool, key: &mut Vec<u8>) {
    let s = if trim || collapse { s.trim() } else { s };
    if !lowercase && !collapse {
        key.extend_from_slice(s.as_bytes());
        return;
    }
    let bytes = s.as_bytes();
    // 1 after whitespace (when collapsing). `s` is trimmed when collapsing, so it neither
    // starts nor ends with whitespace and no space is ever written at either end.
    let mut after_space = 0usize;
    let mut buf = [0u8; 128];
    let mut i = 0;
    while i < bytes.len() {
        let chunk = &bytes[i..bytes.len().min(i + buf.len())];
        let (mut j, mut k) = (0, 0);
        while k < chunk.len() && chunk[k] < 0x80 {
            let b = chunk[k];
            let space = usize::from(collapse && matches!(b, b' ' | b'\t'..=b'\r'));
            let c = if lowercase { b.to_ascii_lowercase() } else { b };
            buf[j] = if space == 1 { b' ' } else { c };
            j += 1 - (space & after_space);
            after_space = space;
            k += 1;
        }
        key.extend_from_slice(&buf[..j]);
        i += k;
        if k < chunk.len() {
            // `i` is on a character boundary: the bytes before it were ASCII or whole
            // characters.
            let Some(c) = s[i..].chars().next() else { break };
            i += c.len_utf8();
            if collapse && c.is_whitespace() {
                if after_space == 0 {
                    key.push(b' ');
                }
                after_space = 1;
                continue;
            }
            after_space = 0;
            let mut b = [0u8; 4];
            if lowercase {
                for l in c.to_lowercase() {
                    key.extend_from_slice(l.encode_utf8(&mut b).as_bytes());
                }
            } else {
                key.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::StrColumn;

    fn apply(f: fn(&str, &mut Appender<'_>), s: &str) -> String {
        let mut c = StrColumn::new();
        c.push("previous row");
        c.push_with(|a| f(s, a));
        c.get(1).unwrap_or_default().to_owned()
    }

    #[test]
    fn trim_collapse_handles_every_kind_of_space() {
        let cases = [
            ("  a  b\t\tc \n", "a b c"),
            ("", ""),
            ("   ", ""),
            ("x", "x"),
            ("\u{a0}é\u{2003}ü\r\n", "é ü"),
            ("a\nb", "a b"),
        ];
        for (input, want) in cases {
            assert_eq!(apply(trim_collapse_into, input), want, "{input:?}");
        }
    }

    #[test]
    fn trim_collapse_agrees_with_is_whitespace_on_every_char() {
        // The fast path decides on bytes and decodes only some characters: check them all.
        let mut c = StrColumn::new();
        let chars: Vec<char> = (0..=0x10_ffff).filter_map(char::from_u32).collect();
        for ch in &chars {
            c.push_with(|a| trim_collapse_into(&format!("{ch}a{ch}{ch}é{ch}"), a));
        }
        for (ch, got) in chars.iter().zip(c.iter()) {
            let want = if ch.is_whitespace() { "a é".to_owned() } else { format!("{ch}a{ch}{ch}é{ch}") };
            assert_eq!(got, Some(want.as_str()), "U+{:04X}", u32::from(*ch));
        }
    }

    #[test]
    fn key_normalisation_agrees_with_words_and_char_to_lowercase_on_every_char() {
        // The one-pass form decides ASCII on bytes and decodes the rest: check every
        // character, between ASCII and accented letters, against splitting into words.
        let reference = |s: &str, lowercase: bool, collapse: bool| -> String {
            let s = s.trim();
            let lower =
                |w: &str| if lowercase { w.chars().flat_map(char::to_lowercase).collect() } else { w.to_owned() };
            if collapse { s.split_whitespace().map(lower).collect::<Vec<_>>().join(" ") } else { lower(s) }
        };
        let mut key = Vec::new();
        for ch in (0..=0x10_ffff).filter_map(char::from_u32) {
            let s = format!("{ch}Ab{ch}{ch}\u{c9}t\u{e9} X{ch}");
            for (lowercase, collapse) in [(true, true), (true, false), (false, true)] {
                key.clear();
                normalise_key_into(&s, lowercase, true, collapse, &mut key);
                let want = reference(&s, lowercase, collapse);
                assert_eq!(
                    std::str::from_utf8(&key),
                    Ok(want.as_str()),
                    "U+{:04X} {lowercase} {collapse}",
                    u32::from(ch)
                );
            }
        }
    }

    #[test]
    fn lowercase_agrees_with_char_to_lowercase_on_every_char() {
        // The fast path takes ASCII runs byte by byte: check it against the tables.
        let mut c = StrColumn::new();
        let chars: Vec<char> = (0..=0x10_ffff).filter_map(char::from_u32).collect();
        for ch in &chars {
            c.push_with(|a| lowercase_into(&format!("Ab{ch}CD{ch}"), a));
        }
        for (ch, got) in chars.iter().zip(c.iter()) {
            let want: String = format!("Ab{ch}CD{ch}").chars().flat_map(char::to_lowercase).collect();
            assert_eq!(got, Some(want.as_str()), "U+{:04X}", u32::from(*ch));
        }
    }

    #[test]
    fn trim_and_collapse_alone() {
        assert_eq!(apply(trim_into, "  a  b "), "a  b");
        assert_eq!(apply(collapse_into, "  a  b "), " a b ");
        assert_eq!(apply(lowercase_into, "HeLLo"), "hello");
        assert_eq!(apply(lowercase_into, "ÉCOLE İ"), "école i̇");
        let long: String = (0..200).map(|i| char::from(b'A' + (i % 26) as u8)).collect();
        assert_eq!(apply(lowercase_into, &long), long.to_ascii_lowercase());
    }
}
