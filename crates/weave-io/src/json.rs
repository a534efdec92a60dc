//! Writing batches as JSON Lines, straight from the columns into one output buffer.

use std::io::Write as _;

use weave_core::{Batch, Column, StepContext, ValueRef};

/// The figure under which an export counts the floats it wrote as `null`.
pub(crate) const NON_FINITE_FIGURE: &str = "non_finite_as_null";

/// Appends each row of `batch` to `out` as one JSON object and a newline, fields in schema
/// order. Strings are escaped as JSON requires; floats that JSON cannot hold (NaN,
/// infinities) are written as `null`, as serde_json does.
pub fn write_jsonl(batch: &Batch, out: &mut Vec<u8>) {
    write_objects(batch, out, b"", b"\n", &mut NonFinite::default(), |_| {});
}

/// Floats that JSON cannot hold (NaN, infinities) that an export wrote as `null`: counted
/// and reported, so that no value changes in silence.
#[derive(Debug, Default)]
pub(crate) struct NonFinite {
    /// How many since the last report.
    count: u64,
    /// The field of the first one, for the warning.
    field: Option<String>,
    /// Whether the step has warned (once: the figure carries the total).
    warned: bool,
}

impl NonFinite {
    /// Counts `n` more in `field`.
    pub(crate) fn add(&mut self, field: &str, n: u64) {
        if n > 0 {
            self.count += n;
            if self.field.is_none() {
                self.field = Some(field.to_owned());
            }
        }
    }

    /// The field of the first one counted since the last report, if any.
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub(crate) fn first_field(&self) -> Option<&str> {
        if self.count == 0 { None } else { self.field.as_deref() }
    }

    /// Adds the count to the step's figure [`NON_FINITE_FIGURE`], and warns the first time.
    pub(crate) fn report(&mut self, ctx: &mut StepContext, format: &str) {
        if self.count == 0 {
            return;
        }
        if !self.warned {
            self.warned = true;
            log::warn!(
                "{}: field `{}` holds NaN or an infinite float, which {format} cannot hold: written as null (every one is counted in the figure `{NON_FINITE_FIGURE}`)",
                ctx.step_id(),
                self.field.as_deref().unwrap_or_default(),
            );
        }
        ctx.add_stat(NON_FINITE_FIGURE, i64::try_from(self.count).unwrap_or(i64::MAX));
        self.count = 0;
    }
}

/// How many floats in `v` JSON cannot hold (NaN, infinities), nested ones included.
pub(crate) fn non_finite(v: ValueRef<'_>) -> u64 {
    match v {
        ValueRef::Float(f) => u64::from(!f.is_finite()),
        ValueRef::List(l) => l.iter().map(|v| non_finite(v.as_ref())).sum(),
        ValueRef::Map(m) => m.values().map(|v| non_finite(v.as_ref())).sum(),
        _ => 0,
    }
}

/// Appends each row of `batch` as one compact JSON object between `before` and `after`,
/// calling `row_end` with the length of `out` after each row (the exporters cut files at
/// those offsets), and counting in `nulled` the floats written as `null`.
#[inline]
pub(crate) fn write_objects(
    batch: &Batch,
    out: &mut Vec<u8>,
    before: &[u8],
    after: &[u8],
    nulled: &mut NonFinite,
    mut row_end: impl FnMut(usize),
) {
    let fields = batch.schema().fields();
    // Field names are escaped once per batch, not once per row.
    let keys: Vec<Vec<u8>> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut k = Vec::with_capacity(f.name.len() + 4);
            k.push(if i == 0 { b'{' } else { b',' });
            write_json_str(&f.name, &mut k);
            k.push(b':');
            k
        })
        .collect();
    let columns = batch.columns();
    // Floats written as null, per column.
    let mut nulls = vec![0u64; columns.len()];
    for row in 0..batch.len() {
        out.extend_from_slice(before);
        if keys.is_empty() {
            out.push(b'{');
        }
        for (c, (key, col)) in keys.iter().zip(columns).enumerate() {
            out.extend_from_slice(key);
            match &**col {
                Column::Str(c) => match c.get(row) {
                    Some(s) => write_json_str(s, out),
                    None => out.extend_from_slice(b"null"),
                },
                other => {
                    let v = other.get(row);
                    nulls[c] += non_finite(v);
                    write_value(v, out);
                }
            }
        }
        out.push(b'}');
        out.extend_from_slice(after);
        row_end(out.len());
    }
    for (f, n) in fields.iter().zip(nulls) {
        nulled.add(&f.name, n);
    }
}

/// Appends each row of `batch` as a JSON object laid out as serde_json's pretty printer
/// lays out an array's elements (two spaces a level, the object one level in), with
/// `before` in front of each, calling `row_end` with the length of `out` after each row,
/// and counting in `nulled` the floats written as `null`.
pub(crate) fn write_pretty_objects(
    batch: &Batch,
    out: &mut Vec<u8>,
    before: &[u8],
    nulled: &mut NonFinite,
    mut row_end: impl FnMut(usize),
) {
    let fields = batch.schema().fields();
    let keys: Vec<Vec<u8>> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut k = Vec::with_capacity(f.name.len() + 10);
            k.extend_from_slice(if i == 0 { b"\n    " } else { b",\n    " });
            write_json_str(&f.name, &mut k);
            k.extend_from_slice(b": ");
            k
        })
        .collect();
    let mut nested = Vec::new();
    let mut nulls = vec![0u64; keys.len()];
    for row in 0..batch.len() {
        out.extend_from_slice(before);
        out.extend_from_slice(b"  {");
        for (c, (key, col)) in keys.iter().zip(batch.columns()).enumerate() {
            out.extend_from_slice(key);
            let v = col.get(row);
            nulls[c] += non_finite(v);
            match v {
                ValueRef::List(_) | ValueRef::Map(_) => {
                    nested.clear();
                    let mut ser = serde_json::Serializer::with_formatter(
                        &mut nested,
                        serde_json::ser::PrettyFormatter::with_indent(b"  "),
                    );
                    // A value of ours always serialises (NaN becomes null).
                    let _ = serde::Serialize::serialize(&v.to_owned(), &mut ser);
                    // Its lines go in at the depth of the field.
                    for (i, line) in nested.split(|&b| b == b'\n').enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b"\n    ");
                        }
                        out.extend_from_slice(line);
                    }
                }
                v => write_value(v, out),
            }
        }
        out.extend_from_slice(if keys.is_empty() { b"}" } else { b"\n  }" });
        row_end(out.len());
    }
    for (f, n) in fields.iter().zip(nulls) {
        nulled.add(&f.name, n);
    }
}

/// Appends one value as JSON.
pub fn write_value(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Bool(true) => out.extend_from_slice(b"true"),
        ValueRef::Bool(false) => out.extend_from_slice(b"false"),
        ValueRef::Int(i) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{i}");
        }
        ValueRef::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        // Its digits, as it was read: a JSON number of any size.
        ValueRef::BigInt(s) => out.extend_from_slice(s.as_bytes()),
        ValueRef::Str(s) => write_json_str(s, out),
        // Floats, lists and maps are rare in text pipelines; serde_json formats them
        // (shortest round-trip floats, NaN as null).
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// What each byte becomes inside a JSON string: 0 for itself, `u` for a `\u00XX` escape,
/// or the letter of its short escape (`\n`, `\"`, ...).
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` as a quoted JSON string. Plain runs are found eight bytes at a time and
/// copied as slices; only `"`, `\` and control characters are escaped, so non-ASCII text
/// passes through as UTF-8.
pub fn write_json_str(s: &str, out: &mut Vec<u8>) {
    use weave_core::swar::{bytes_below, bytes_equal, word};
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    loop {
        while i + 8 <= bytes.len() {
            let x = word(bytes, i);
            let stops = bytes_below(x, 0x20) | bytes_equal(x, b'"') | bytes_equal(x, b'\\');
            if stops != 0 {
                i += (stops.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        if i + 8 > bytes.len() {
            // The tail, a byte at a time, through the table.
            while i < bytes.len() && ESCAPE[usize::from(bytes[i])] == 0 {
                i += 1;
            }
        }
        let Some(&b) = bytes.get(i) else { break };
        // A borrow may flag a plain byte: the table decides.
        let esc = ESCAPE[usize::from(b)];
        if esc != 0 {
            out.extend_from_slice(&bytes[start..i]);
            if esc == b'u' {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
            } else {
                out.extend_from_slice(&[b'\\', esc]);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::Record;

    #[test]
    fn every_ascii_char_is_escaped_as_serde_json_does() {
        for c in (0u8..0x80).map(char::from) {
            let s = format!("a{c}b");
            let mut out = Vec::new();
            write_json_str(&s, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap(), "{c:?}");
        }
    }

    #[test]
    fn every_byte_at_every_offset_of_a_long_string_is_escaped_as_serde_json_does() {
        // The scan takes eight bytes at a time: each character at each position of a word,
        // next to others to escape, and in the tail.
        for c in (0u8..0x80).map(char::from).chain(['\u{e9}', '\u{2028}', '\u{1f600}']) {
            for at in 0..20 {
                let mut s: String = "abcdefghij\"klmnopqrstu".chars().take(at).collect();
                s.push(c);
                s.push_str("vwxyz0123456789\n");
                let mut out = Vec::new();
                write_json_str(&s, &mut out);
                assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap(), "{c:?} at {at}");
            }
        }
    }

    #[test]
    fn rows_match_serde_json() {
        let records = vec![
            Record::new().with("text", "a \"q\" \\ \n\t\u{1} é 😀").with("n", 3i64).with("x", 1.5),
            Record::new().with("text", weave_core::Value::Null).with("n", -7i64).with("x", f64::NAN),
        ];
        let batch = Batch::from_records(&records);
        let mut out = Vec::new();
        write_jsonl(&batch, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for (line, rec) in lines.iter().zip(&records) {
            let ours: serde_json::Value = serde_json::from_str(line).unwrap();
            let theirs: serde_json::Value = serde_json::to_value(rec).unwrap();
            assert_eq!(ours, theirs);
        }
        assert_eq!(lines[0], r#"{"text":"a \"q\" \\ \n\t\u0001 é 😀","n":3,"x":1.5}"#);
    }
}
