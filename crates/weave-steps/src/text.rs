//! Text functions shared by the cleaning steps and the benchmarks: each writes its result
//! into a buffer that the caller reuses, so no call allocates.

use weave_core::Appender;

/// Writes `s` with leading and trailing whitespace removed and every inner run of
/// whitespace (Unicode `White_Space`, so tabs, newlines and no-break spaces too) replaced
/// by one ASCII space.
pub fn trim_collapse_into(s: &str, out: &mut Appender<'_>) {
    let mut pending_space = false;
    let mut wrote = false;
    // Runs of non-space text are copied as whole slices, not char by char.
    let mut run_start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if let Some(start) = run_start.take() {
                if pending_space && wrote {
                    out.push(' ');
                }
                out.push_str(&s[start..i]);
                wrote = true;
            }
            pending_space = true;
        } else if run_start.is_none() {
            run_start = Some(i);
        }
    }
    if let Some(start) = run_start {
        if pending_space && wrote {
            out.push(' ');
        }
        out.push_str(&s[start..]);
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
        for b in s.bytes() {
            out.push(char::from(b.to_ascii_lowercase()));
        }
    } else {
        for c in s.chars().flat_map(char::to_lowercase) {
            out.push(c);
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
    fn trim_and_collapse_alone() {
        assert_eq!(apply(trim_into, "  a  b "), "a  b");
        assert_eq!(apply(collapse_into, "  a  b "), " a b ");
        assert_eq!(apply(lowercase_into, "HeLLo"), "hello");
        assert_eq!(apply(lowercase_into, "ÉCOLE İ"), "école i̇");
    }
}
