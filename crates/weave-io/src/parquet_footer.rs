//! How deep a Parquet file's schema nests, read from its footer before the parquet crate
//! reads it.
//!
//! The parquet crate builds a file's schema, its Arrow schema and its column readers by
//! recursion, one call per level of nesting, with no limit: a hostile file of a few
//! kilobytes whose columns nest 2,000 deep overflows a stage thread's stack (a SIGSEGV of
//! the whole process). So the footer's schema, a flat list of elements each saying how many
//! children it has, is read here first, without recursion, and a file nested past
//! [`MAX_SCHEMA_DEPTH`] is refused. Only the Thrift compact protocol's framing is read;
//! whatever is not the schema is skipped (nested structures to a fixed depth), and anything
//! this cannot make sense of is left for the parquet crate to refuse with its own message.

use std::io::{Read, Seek, SeekFrom};

/// The most levels of groups a Parquet schema may nest under its root: no more than a
/// value may nest ([`weave_core::MAX_DEPTH`]), since a list or map takes one or two levels
/// and a struct one.
pub(crate) const MAX_SCHEMA_DEPTH: usize = weave_core::MAX_DEPTH;

/// How deep structures the check skips may nest (the parquet crate's own limit).
const MAX_SKIP_DEPTH: usize = 64;

/// Refuses a file whose schema nests past [`MAX_SCHEMA_DEPTH`], with a message; `Ok` for
/// any other file, including files that are not Parquet, which the parquet crate refuses.
pub(crate) fn check_schema_depth(file: &mut (impl Read + Seek)) -> std::io::Result<Result<(), String>> {
    let Some(footer) = footer(file)? else { return Ok(Ok(())) };
    Ok(match schema_depth(&footer) {
        Some(depth) if depth > MAX_SCHEMA_DEPTH => Err(format!(
            "its schema nests {depth} levels deep; Weave reads schemas of at most {MAX_SCHEMA_DEPTH} levels"
        )),
        _ => Ok(()),
    })
}

/// The footer's metadata bytes, or `None` when the file does not end as Parquet does.
fn footer(file: &mut (impl Read + Seek)) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len < 12 {
        return Ok(None);
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8))?;
    file.read_exact(&mut tail)?;
    if &tail[4..] != b"PAR1" {
        return Ok(None);
    }
    let meta_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if meta_len + 8 > len {
        return Ok(None);
    }
    file.seek(SeekFrom::End(-8 - meta_len as i64))?;
    let mut meta = Vec::new();
    file.take(meta_len).read_to_end(&mut meta)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(Some(meta))
}

/// How deep the schema of a `FileMetaData` nests under its root; `None` when the bytes are
/// not what this reads (the parquet crate then says what is wrong).
fn schema_depth(meta: &[u8]) -> Option<usize> {
    let mut r = Compact { bytes: meta, at: 0 };
    let mut last_id = 0i16;
    loop {
        let (id, ty) = r.field_header(&mut last_id)?;
        match (id, ty) {
            (_, STOP) => return None,
            // Field 2 of FileMetaData: the schema, a list of SchemaElement structs.
            (2, LIST) => return r.schema(),
            _ => r.skip(ty, 0)?,
        }
    }
}

const STOP: u8 = 0;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;

/// A reader of the Thrift compact protocol over a byte slice.
struct Compact<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Compact<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn advance(&mut self, n: u64) -> Option<()> {
        let end = self.at.checked_add(usize::try_from(n).ok()?)?;
        (end <= self.bytes.len()).then(|| self.at = end)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// A field's id and type (`STOP` ends a struct).
    fn field_header(&mut self, last_id: &mut i16) -> Option<(i16, u8)> {
        let b = self.byte()?;
        let ty = b & 0x0f;
        if ty == STOP {
            return Some((0, STOP));
        }
        let delta = i16::from(b >> 4);
        *last_id = if delta == 0 { i16::try_from(self.zigzag()?).ok()? } else { last_id.checked_add(delta)? };
        Some((*last_id, ty))
    }

    /// A list or set header: its size and its elements' type.
    fn list_header(&mut self) -> Option<(u64, u8)> {
        let b = self.byte()?;
        let size = if b >> 4 == 15 { self.varint()? } else { u64::from(b >> 4) };
        Some((size, b & 0x0f))
    }

    /// Skips a value of type `ty` (as a field's type; in a list, booleans take a byte).
    fn skip(&mut self, ty: u8, depth: usize) -> Option<()> {
        match ty {
            // Booleans live in the field header.
            1 | 2 => Some(()),
            3 => self.advance(1),
            4..=6 => self.varint().map(drop),
            7 => self.advance(8),
            8 => {
                let n = self.varint()?;
                self.advance(n)
            }
            LIST | SET | MAP | STRUCT if depth >= MAX_SKIP_DEPTH => None,
            LIST | SET => {
                let (size, elem) = self.list_header()?;
                for _ in 0..size {
                    self.skip_element(elem, depth + 1)?;
                }
                Some(())
            }
            MAP => {
                let size = self.varint()?;
                if size == 0 {
                    return Some(());
                }
                let kv = self.byte()?;
                for _ in 0..size {
                    self.skip_element(kv >> 4, depth + 1)?;
                    self.skip_element(kv & 0x0f, depth + 1)?;
                }
                Some(())
            }
            STRUCT => {
                let mut last_id = 0;
                loop {
                    match self.field_header(&mut last_id)? {
                        (_, STOP) => return Some(()),
                        (_, t) => self.skip(t, depth + 1)?,
                    }
                }
            }
            // UUID.
            13 => self.advance(16),
            _ => None,
        }
    }

    fn skip_element(&mut self, ty: u8, depth: usize) -> Option<()> {
        if matches!(ty, 1 | 2) { self.advance(1) } else { self.skip(ty, depth) }
    }

    /// The schema's depth: its elements come in depth-first order, each group followed by
    /// its `num_children` children (field 5 of SchemaElement).
    fn schema(&mut self) -> Option<usize> {
        let (size, elem) = self.list_header()?;
        if elem != STRUCT {
            return None;
        }
        // How many children each open group still waits for, the root's first.
        let mut open: Vec<u64> = Vec::new();
        let mut deepest = 0;
        for i in 0..size {
            let mut children = 0u64;
            let mut last_id = 0;
            loop {
                match self.field_header(&mut last_id)? {
                    (_, STOP) => break,
                    (5, 5) => children = u64::try_from(self.zigzag()?).unwrap_or(0),
                    (_, t) => self.skip(t, 1)?,
                }
            }
            if i > 0 {
                while open.last() == Some(&0) {
                    open.pop();
                }
                // A child beyond what the groups announced: the parquet crate says so.
                *open.last_mut()? -= 1;
            }
            deepest = deepest.max(open.len());
            if children > 0 {
                open.push(children);
            }
        }
        Some(deepest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footers_that_are_not_parquet_are_left_to_the_parquet_crate() {
        for bytes in [&b""[..], b"PAR1", b"not a parquet file at all", b"PAR1\xff\xff\xff\xffPAR1"] {
            let r = check_schema_depth(&mut std::io::Cursor::new(bytes)).unwrap();
            assert_eq!(r, Ok(()), "{bytes:?}");
        }
        // Metadata of garbage, a field of every type, structures nested past the skip limit.
        for meta in [vec![0xffu8; 40], vec![0x1c; 200], [0x19u8, 0x1c].repeat(100)] {
            let mut file = b"PAR1".to_vec();
            file.extend_from_slice(&meta);
            file.extend_from_slice(&(meta.len() as u32).to_le_bytes());
            file.extend_from_slice(b"PAR1");
            assert_eq!(check_schema_depth(&mut std::io::Cursor::new(file)).unwrap(), Ok(()));
        }
    }
}
