//! The CSV reader's fast path: a record that is one plain line (no quote character, no
//! carriage return) is split at its delimiters with `memchr` instead of being fed to
//! `csv_core` byte by byte. Most lines of most CSV files are plain, and for them the two
//! readings are the same: without a quote nothing is unescaped, and without a carriage
//! return the line feed is the only record terminator. Every other line (quotes, CRLF
//! endings, blank lines, a line the buffer cuts, a record over `max_record_bytes`) is
//! left to the parser, which then reads it as before.

/// What [`split_plain_line`] made of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlainLine {
    /// Bytes of the input it took: the line and its line feed.
    pub(crate) consumed: usize,
    /// Fields written to `ends`.
    pub(crate) fields: usize,
}

/// Splits the record at the front of `input` when it is a plain line that ends in
/// `input`: its fields go one after the other into `fields` (grown as needed) and where
/// each ends into `ends`, as `csv_core::Reader::read_record` writes them. `None` leaves
/// the line to the parser: it starts with a line break (blank lines are skipped there),
/// holds `quote` or a carriage return, has no line feed in `input`, or takes more than
/// `max` (its fields' bytes and 8 bytes per field: the parser tells it as too large).
pub(crate) fn split_plain_line(
    input: &[u8],
    delimiter: u8,
    quote: u8,
    max: usize,
    fields: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Option<PlainLine> {
    let first = *input.first()?;
    if first == b'\n' || first == b'\r' {
        return None;
    }
    let nl = memchr::memchr(b'\n', input)?;
    let line = &input[..nl];
    if memchr::memchr2(quote, b'\r', line).is_some() {
        return None;
    }
    if fields.len() < line.len() {
        fields.resize(line.len(), 0);
    }
    let (mut out, mut n, mut start) = (0, 0, 0);
    for at in memchr::memchr_iter(delimiter, line).chain(std::iter::once(line.len())) {
        let field = &line[start..at];
        fields[out..out + field.len()].copy_from_slice(field);
        out += field.len();
        if n == ends.len() {
            ends.resize((2 * n).max(16), 0);
        }
        ends[n] = out;
        n += 1;
        start = at + 1;
    }
    if out.saturating_add(n.saturating_mul(8)) > max {
        return None;
    }
    Some(PlainLine { consumed: nl + 1, fields: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields of the line at the front of `input`, and the bytes it took.
    fn split(input: &[u8], max: usize) -> Option<(usize, Vec<Vec<u8>>)> {
        let (mut fields, mut ends) = (Vec::new(), Vec::new());
        let got = split_plain_line(input, b',', b'"', max, &mut fields, &mut ends)?;
        let mut start = 0;
        let mut out = Vec::new();
        for &end in &ends[..got.fields] {
            out.push(fields[start..end].to_vec());
            start = end;
        }
        Some((got.consumed, out))
    }

    fn texts(fields: &[&str]) -> Vec<Vec<u8>> {
        fields.iter().map(|f| f.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_plain_line_is_split_at_its_delimiters_and_the_rest_is_left_to_the_parser() {
        assert_eq!(split(b"1,two words,\n2,x,y\n", usize::MAX), Some((13, texts(&["1", "two words", ""]))));
        assert_eq!(split(b",\n", usize::MAX), Some((2, texts(&["", ""]))));
        assert_eq!(split("é,ü\n".as_bytes(), usize::MAX), Some((6, texts(&["é", "ü"]))));
        // A quote anywhere, a carriage return, a blank line, no line feed yet, no input.
        assert_eq!(split(b"1,\"a\"\n", usize::MAX), None);
        assert_eq!(split(b"1,a\"b\n", usize::MAX), None);
        assert_eq!(split(b"1,a\r\n", usize::MAX), None);
        assert_eq!(split(b"1,a\rb\n", usize::MAX), None);
        assert_eq!(split(b"\n1,a\n", usize::MAX), None);
        assert_eq!(split(b"\r\n1,a\n", usize::MAX), None);
        assert_eq!(split(b"1,a", usize::MAX), None);
        assert_eq!(split(b"", usize::MAX), None);
    }

    #[test]
    fn a_line_over_the_bound_is_left_to_the_parser_which_tells_it_as_too_large() {
        // "ab,c": 3 bytes of fields and 2 fields, 19 in all.
        assert!(split(b"ab,c\n", 19).is_some());
        assert_eq!(split(b"ab,c\n", 18), None);
    }

    #[test]
    fn many_fields_grow_the_ends() {
        let line = format!("{}\n", vec!["x"; 100].join(","));
        let (consumed, fields) = split(line.as_bytes(), usize::MAX).unwrap();
        assert_eq!(consumed, line.len());
        assert_eq!(fields, texts(&["x"; 100]));
    }
}
