//! The CSV reader's fast path: a record that lies whole in the read buffer is split with
//! `memchr` (the next delimiter or line break of an unquoted field, the next quote of a
//! quoted one) instead of being fed to `csv_core` byte by byte, and its fields are copied
//! a run at a time. It reads what `csv_core` reads, with the reader's settings (a
//! delimiter, a quote, doubled quotes inside quotes, no escape character):
//!
//! - an unquoted field runs to the next delimiter or line break, quotes included;
//! - a quoted field runs to the quote that is not doubled, line breaks included;
//! - a record ends with a line feed, a carriage return and a line feed, or a carriage
//!   return alone.
//!
//! Whatever it is not sure of it leaves to the parser, which then reads the record as
//! before: a record that starts with a line break (blank lines are skipped there), that
//! the buffer cuts (or the input ends inside), a quoted field with text after its closing
//! quote (`"a"b`), and a record over `max_record_bytes` (the parser tells it as too large).

/// What [`split_record`] made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    /// Bytes of the input it took: the record and its line break.
    pub(crate) consumed: usize,
    /// Fields written to `ends`.
    pub(crate) fields: usize,
    /// Line feeds among the bytes taken (inside quoted fields, and the record's own).
    pub(crate) line_feeds: u64,
}

/// Splits the record at the front of `input` when it ends in `input`: its fields go
/// unescaped, one after the other, into `fields` (grown as needed) and where each ends
/// into `ends`, as `csv_core::Reader::read_record` writes them. `None` leaves the record
/// to the parser (see the module's notes); `fields` and `ends` then hold nothing of use.
pub(crate) fn split_record(
    input: &[u8],
    delimiter: u8,
    quote: u8,
    max: usize,
    fields: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Option<Split> {
    let first = *input.first()?;
    if first == b'\n' || first == b'\r' {
        return None;
    }
    // A record's fields are never longer than its bytes.
    if fields.len() < input.len() {
        fields.resize(input.len(), 0);
    }
    let (mut pos, mut out, mut n, mut line_feeds) = (0, 0, 0, 0);
    let mut push_end = |n: &mut usize, out: usize| {
        if *n == ends.len() {
            ends.resize((2 * *n).max(16), 0);
        }
        ends[*n] = out;
        *n += 1;
    };
    // Where the record's line break starts: every field but the last ends at a delimiter.
    let brk = loop {
        if input[pos] == quote {
            pos += 1;
            loop {
                // The line feeds inside are counted on the way (an unquoted field has none).
                let run = memchr::memchr2(quote, b'\n', &input[pos..])?;
                fields[out..out + run].copy_from_slice(&input[pos..pos + run]);
                out += run;
                pos += run;
                if input[pos] == b'\n' {
                    fields[out] = b'\n';
                    out += 1;
                    pos += 1;
                    line_feeds += 1;
                    continue;
                }
                pos += 1;
                // A doubled quote is one quote of the text; any other byte ends the field.
                if *input.get(pos)? != quote {
                    break;
                }
                fields[out] = quote;
                out += 1;
                pos += 1;
            }
            push_end(&mut n, out);
            match input[pos] {
                b if b == delimiter => pos += 1,
                b'\n' | b'\r' => break pos,
                _ => return None,
            }
        } else {
            let at = pos + memchr::memchr3(delimiter, b'\n', b'\r', &input[pos..])?;
            fields[out..out + (at - pos)].copy_from_slice(&input[pos..at]);
            out += at - pos;
            push_end(&mut n, out);
            pos = at + 1;
            if input[at] != delimiter {
                break at;
            }
        }
        if pos == input.len() {
            return None;
        }
    };
    let consumed = match input[brk] {
        b'\r' => match input.get(brk + 1)? {
            b'\n' => brk + 2,
            _ => brk + 1,
        },
        _ => brk + 1,
    };
    if input[consumed - 1] == b'\n' {
        line_feeds += 1;
    }
    if out.saturating_add(n.saturating_mul(8)) > max {
        return None;
    }
    Some(Split { consumed, fields: n, line_feeds })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of the record at the front of `input`, and the bytes and line feeds it
    /// took.
    fn split(input: &str, max: usize) -> Option<(usize, u64, Vec<String>)> {
        let (mut fields, mut ends) = (Vec::new(), Vec::new());
        let got = split_record(input.as_bytes(), b',', b'"', max, &mut fields, &mut ends)?;
        let mut start = 0;
        let mut out = Vec::new();
        for &end in &ends[..got.fields] {
            out.push(String::from_utf8(fields[start..end].to_vec()).unwrap());
            start = end;
        }
        Some((got.consumed, got.line_feeds, out))
    }

    fn texts(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|&f| f.to_owned()).collect()
    }

    #[test]
    fn records_are_split_as_the_parser_splits_them() {
        assert_eq!(split("1,two words,\n2,x,y\n", usize::MAX), Some((13, 1, texts(&["1", "two words", ""]))));
        assert_eq!(split(",\n", usize::MAX), Some((2, 1, texts(&["", ""]))));
        assert_eq!(split("é,ü\n", usize::MAX), Some((6, 1, texts(&["é", "ü"]))));
        // Quotes: doubled inside, line breaks and delimiters kept, a quote inside an
        // unquoted field is text.
        assert_eq!(
            split("1,\"a \"\"b\"\",\nc\",x\"y\n", usize::MAX),
            Some((19, 2, texts(&["1", "a \"b\",\nc", "x\"y"])))
        );
        assert_eq!(split("\"\",\"\"\"\"\n", usize::MAX), Some((8, 1, texts(&["", "\""]))));
        // Line endings: CRLF, a carriage return alone, and a last field quoted.
        assert_eq!(split("a,b\r\nc\n", usize::MAX), Some((5, 1, texts(&["a", "b"]))));
        assert_eq!(split("a,\"b\"\rc\n", usize::MAX), Some((6, 0, texts(&["a", "b"]))));
    }

    #[test]
    fn what_it_is_not_sure_of_is_left_to_the_parser() {
        // Blank lines, text after a closing quote, no line break yet (the buffer or the
        // input ends), a quote never closed, a carriage return the buffer ends on.
        for input in ["\n1,a\n", "\r\n1,a\n", "\"a\"b,c\n", "1,a", "1,", "\"a\nb", "\"a\"\"", "1,a\r", "", "1,\"a\""] {
            assert_eq!(split(input, usize::MAX), None, "{input:?}");
        }
    }

    #[test]
    fn a_record_over_the_bound_is_left_to_the_parser_which_tells_it_as_too_large() {
        // "ab,c": 3 bytes of fields and 2 fields, 19 in all.
        assert!(split("ab,c\n", 19).is_some());
        assert_eq!(split("ab,c\n", 18), None);
    }

    #[test]
    fn many_fields_grow_the_ends() {
        let line = format!("{}\n", vec!["x"; 100].join(","));
        let (consumed, _, fields) = split(&line, usize::MAX).unwrap();
        assert_eq!(consumed, line.len());
        assert_eq!(fields, texts(&["x"; 100]));
    }
}
