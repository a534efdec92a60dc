//! The tuned baseline of the `io` and `prep` scenarios: the same job as their pipelines,
//! written as a single-purpose program that uses every trick the job allows, so that the
//! scenarios measure how far Weave is from the limit rather than from a naive loop.
//!
//! - The input is read in pieces of about [`PIECE`] bytes, each cut after the last record
//!   that ends in it: the reader follows the quotes (`memchr2` on `"` and `\n`), so a
//!   newline inside a quoted field never cuts a record.
//! - `threads` workers take the pieces. First pass, in any order: check the piece's
//!   UTF-8 once (simdutf8), split the CSV by hand, trim and collapse the text straight
//!   from the file's bytes (quotes unescaped on the way) into one buffer per piece, eight
//!   bytes at a time (SWAR: a word's run of plain bytes is found in one step and copied as
//!   a slice), drop short texts, and hash the lower-cased text to a 128-bit key. No
//!   allocation per record: every record is a few offsets into its piece's buffers.
//! - One sequencer thread takes the pieces back in order and decides, key by key, which
//!   record is new (a flat hash set of `u128`): the only serial work, a hash-set insert per
//!   record.
//! - Second pass, by the workers again, in any order: the kept records' JSON lines (with
//!   `prep`'s typos and completeness check), escaped eight bytes at a time.
//! - One writer thread writes the pieces in order and hands their buffers back to the
//!   reader: at most `2 × threads + 2` pieces exist, so memory is bounded whatever the
//!   input's size.
//!
//! The keys are XXH3-128 (`twox-hash`): fast on short texts (tens of GB/s on long ones,
//! a few nanoseconds on a 150-byte text) and well spread; not cryptographic, which a
//! baseline that only needs to tell texts apart does not need. With n distinct texts the
//! chance that any two share a key is about n² / 2¹²⁹: below 10⁻²⁶ for the million rows
//! here (and a collision would show: the output is checked against Weave's byte for
//! byte). The set takes the key's low 64 bits as its hash (`weave_steps::KeyHasher`),
//! since they are already uniform.
//!
//! The noise of `prep` calls Weave's public typos noiser (`weave_steps::Typos`, each
//! record seeded by `record_seed` as the `augment` step seeds it): reimplementing it
//! bit for bit is a project of its own, so `prep` compares everything but the noiser's
//! kernel, which both sides share.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};
use weave_steps::KeySet;

use super::io::{Job, MIN_CHARS, Noise};

/// The size of a piece of input: large enough that handing a piece from thread to
/// thread costs nothing next to its work (a few microseconds against a millisecond),
/// small enough that the pieces in flight take a few megabytes.
pub(super) const PIECE: usize = 256 << 10;

/// The header the program expects: it is single-purpose, and says so when the input is
/// not what it was written for.
const HEADER: &[u8] = b"id,text,label";

/// Runs the job on `threads` workers with pieces of `piece` bytes; returns the records
/// written.
pub(super) fn run(job: Job, input: &Path, output: &Path, threads: usize, piece: usize) -> Result<u64, String> {
    let threads = threads.max(1);
    let mut file = File::open(input).map_err(|e| format!("cannot open {}: {e}", input.display()))?;
    let size = file.metadata().map_or(0, |m| m.len());
    let mut out = File::create(output).map_err(|e| format!("cannot create {}: {e}", output.display()))?;
    let mut carry = read_header(&mut file)?;

    let pool = 2 * threads + 2;
    let (free_tx, free_rx) = crossbeam_channel::bounded::<Piece>(pool);
    for _ in 0..pool {
        let _ = free_tx.send(Piece::new(job, piece));
    }
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Work>();
    let (parsed_tx, parsed_rx) = crossbeam_channel::unbounded::<Msg>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Msg>();
    let error: Mutex<Option<String>> = Mutex::new(None);
    let fail = |e: String| {
        let mut slot = error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(e);
    };

    let written = std::thread::scope(|s| {
        for _ in 0..threads {
            let (jobs, parsed, done) = (jobs_rx.clone(), parsed_tx.clone(), done_tx.clone());
            s.spawn(move || worker(job, &jobs, &parsed, &done));
        }
        drop((jobs_rx, done_tx));
        let seq_jobs = jobs_tx.clone();
        let sequencer = s.spawn(move || sequence(&parsed_rx, &seq_jobs, size));
        let writer = s.spawn(|| write_out(&done_rx, &free_tx, &mut out, &fail));

        // The reader: fills pieces from the file, cut after their last whole record.
        let mut count = 0u64;
        let mut eof = false;
        while !eof {
            let Ok(mut p) = free_rx.recv() else { break };
            p.reset(count);
            p.raw.extend_from_slice(&carry);
            carry.clear();
            loop {
                // Up to a piece in all; a piece more when a record is longer than that.
                let want = if p.raw.len() < piece { piece - p.raw.len() } else { piece } as u64;
                match (&mut file).take(want).read_to_end(&mut p.raw) {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(e) => {
                        fail(format!("cannot read {}: {e}", input.display()));
                        eof = true;
                    }
                }
                match last_boundary(&p.raw) {
                    Some(end) if !eof => {
                        carry.extend_from_slice(&p.raw[end..]);
                        p.raw.truncate(end);
                        break;
                    }
                    // A record longer than a piece: read on into the same piece.
                    None if !eof => {}
                    _ => break,
                }
            }
            if p.raw.is_empty() && eof {
                // Nothing after the last cut: hand the unused piece back.
                break;
            }
            count += 1;
            if jobs_tx.send(Work::Parse(p)).is_err() {
                break;
            }
        }
        drop(jobs_tx);
        let _ = parsed_tx.send(Msg::End(count));
        drop(parsed_tx);
        let seen = sequencer.join().unwrap_or_else(|_| Err("the sequencer panicked".to_owned()));
        if let Err(e) = seen {
            fail(e);
        }
        writer.join().unwrap_or(0)
    });
    match error.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

/// Reads and checks the header line; returns what was read after it.
fn read_header(file: &mut File) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(4096);
    file.take(4096).read_to_end(&mut buf).map_err(|e| format!("cannot read the header: {e}"))?;
    let end = memchr::memchr(b'\n', &buf).ok_or("no header line")?;
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    if line != HEADER {
        return Err(format!(
            "the tuned baseline reads `{}` files only, not `{}`",
            String::from_utf8_lossy(HEADER),
            String::from_utf8_lossy(line)
        ));
    }
    Ok(buf[end + 1..].to_vec())
}

/// The end of the last whole record in `raw` (just after its newline), following the
/// quotes from `raw`'s start, which is a record's start.
fn last_boundary(raw: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut end = None;
    for i in memchr::memchr2_iter(b'"', b'\n', raw) {
        if raw[i] == b'"' {
            quoted = !quoted;
        } else if !quoted {
            end = Some(i + 1);
        }
    }
    end
}

/// A piece of the input and everything made from it, reused from piece to piece.
#[derive(Debug, Default)]
struct Piece {
    /// Its place in the input.
    index: u64,
    /// Whole CSV records.
    raw: Vec<u8>,
    /// The cleaned texts, back to back.
    clean: Vec<u8>,
    /// The ids and labels, unquoted, back to back.
    fields: Vec<u8>,
    /// The records long enough to keep, in order.
    recs: Vec<Rec>,
    /// The JSON lines of the records kept.
    out: Vec<u8>,
    written: u64,
    error: Option<String>,
}

impl Piece {
    /// A piece whose buffers are sized once for pieces of `piece` bytes, so that they do
    /// not grow (and leave freed blocks behind, on another thread's heap) as they fill.
    fn new(job: Job, piece: usize) -> Piece {
        // `prep`'s lines carry the text twice (the noisy copy) and the noiser's fields.
        let out = if job == Job::Prep { 3 * piece } else { piece + piece / 2 };
        Piece {
            // A carried record and a piece, and room for `read_to_end`'s probe read.
            raw: Vec::with_capacity(2 * piece + 64),
            clean: Vec::with_capacity(piece),
            fields: Vec::with_capacity(piece / 8),
            recs: Vec::with_capacity(piece / 64),
            out: Vec::with_capacity(out),
            ..Piece::default()
        }
    }

    fn reset(&mut self, index: u64) {
        self.index = index;
        self.raw.clear();
        self.clean.clear();
        self.fields.clear();
        self.recs.clear();
        self.out.clear();
        self.written = 0;
        self.error = None;
    }
}

/// One record: offsets into its piece's buffers, its key, and whether it is new.
#[derive(Debug, Clone, Copy)]
struct Rec {
    key: u128,
    id: (u32, u32),
    label: (u32, u32),
    text: (u32, u32),
    keep: bool,
}

/// What the workers are given.
enum Work {
    /// Split, clean, filter and key the records.
    Parse(Piece),
    /// Write the kept records' JSON lines.
    Emit(Piece),
}

/// What the sequencer and the writer are given: pieces, then the count of pieces.
enum Msg {
    Piece(Piece),
    End(u64),
}

/// A worker: both passes, on whatever piece comes.
fn worker(job: Job, jobs: &Receiver<Work>, parsed: &Sender<Msg>, done: &Sender<Msg>) {
    let mut lower = Vec::new();
    let mut noise = (job == Job::Prep).then(Noise::new);
    for work in jobs {
        match work {
            Work::Parse(mut p) => {
                if let Err(e) = parse(&mut p, &mut lower) {
                    p.recs.clear();
                    p.error = Some(e);
                }
                let _ = parsed.send(Msg::Piece(p));
            }
            Work::Emit(mut p) => {
                emit(&mut p, noise.as_mut());
                let _ = done.send(Msg::Piece(p));
            }
        }
    }
}

/// Takes the parsed pieces in order and marks each record new or a duplicate; hands the
/// pieces back to the workers for their second pass.
fn sequence(parsed: &Receiver<Msg>, jobs: &Sender<Work>, input_size: u64) -> Result<(), String> {
    // One key per 200 bytes of input (the corpus's rows are 213 bytes on average), so
    // that the set does not grow, and copy itself, while it fills.
    let mut seen = KeySet::with_capacity_and_hasher((input_size / 200) as usize, Default::default());
    let mut waiting: std::collections::BTreeMap<u64, Piece> = std::collections::BTreeMap::new();
    let (mut next, mut total) = (0u64, None);
    let mut first_error = None;
    while total != Some(next) {
        let Ok(msg) = parsed.recv() else { return Err("a worker stopped early".to_owned()) };
        match msg {
            Msg::End(n) => total = Some(n),
            Msg::Piece(p) => {
                waiting.insert(p.index, p);
            }
        }
        while let Some(mut p) = waiting.remove(&next) {
            if let Some(e) = &p.error {
                first_error.get_or_insert_with(|| e.clone());
            }
            for r in &mut p.recs {
                r.keep = seen.insert(r.key);
            }
            next += 1;
            let _ = jobs.send(Work::Emit(p));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Writes the pieces in order and hands them back to the reader; returns the records
/// written.
fn write_out(done: &Receiver<Msg>, free: &Sender<Piece>, out: &mut File, fail: &(dyn Fn(String) + Sync)) -> u64 {
    let mut waiting: std::collections::BTreeMap<u64, Piece> = std::collections::BTreeMap::new();
    let (mut next, mut written) = (0u64, 0u64);
    let mut ok = true;
    for msg in done {
        if let Msg::Piece(p) = msg {
            waiting.insert(p.index, p);
        }
        while let Some(p) = waiting.remove(&next) {
            if ok && let Err(e) = out.write_all(&p.out) {
                fail(format!("cannot write the output: {e}"));
                ok = false;
            }
            written += p.written;
            next += 1;
            let _ = free.send(p);
        }
    }
    if ok && let Err(e) = out.sync_all() {
        fail(format!("cannot write the output: {e}"));
    }
    written
}

/// The first pass over a piece: split, clean, filter, key.
fn parse(p: &mut Piece, lower: &mut Vec<u8>) -> Result<(), String> {
    let raw = &p.raw;
    simdutf8::basic::from_utf8(raw).map_err(|_| "the input is not UTF-8".to_owned())?;
    let mut at = 0;
    while at < raw.len() {
        let id = field(raw, &mut at, &mut p.fields)?;
        expect(raw, &mut at, b',')?;
        let text_start = p.clean.len();
        let chars_less = text_field(raw, &mut at, &mut p.clean)?;
        expect(raw, &mut at, b',')?;
        let label = field(raw, &mut at, &mut p.fields)?;
        if at < raw.len() {
            if raw[at] == b'\r' {
                at += 1;
            }
            expect(raw, &mut at, b'\n')?;
        }
        let text = &p.clean[text_start..];
        // Characters, not bytes: every multi-byte character counted once.
        if text.len() - chars_less < MIN_CHARS {
            p.clean.truncate(text_start);
            continue;
        }
        lower_into(text, lower)?;
        p.recs.push(Rec {
            key: twox_hash::XxHash3_128::oneshot(lower),
            id,
            label,
            text: (text_start as u32, p.clean.len() as u32),
            keep: false,
        });
    }
    Ok(())
}

/// Writes `text` lower-cased into `lower` (cleared first) as the dedup step lower-cases:
/// character by character (`char::to_lowercase`, no final-sigma rule). Runs of ASCII are
/// mapped byte by byte, which the compiler vectorises.
fn lower_into(text: &[u8], lower: &mut Vec<u8>) -> Result<(), String> {
    lower.clear();
    let mut i = 0;
    while i < text.len() {
        let j = text[i..].iter().position(|b| *b >= 0x80).map_or(text.len(), |k| i + k);
        lower.extend(text[i..j].iter().map(u8::to_ascii_lowercase));
        if j == text.len() {
            break;
        }
        let len = utf8_len(text[j]);
        let c = std::str::from_utf8(&text[j..j + len]).map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        for l in c.chars().flat_map(char::to_lowercase) {
            lower.extend_from_slice(l.encode_utf8(&mut b).as_bytes());
        }
        i = j + len;
    }
    Ok(())
}

/// The length of the UTF-8 character that starts with byte `b`.
#[inline]
fn utf8_len(b: u8) -> usize {
    match b {
        0..0x80 => 1,
        0x80..0xe0 => 2,
        0xe0..0xf0 => 3,
        _ => 4,
    }
}

fn expect(raw: &[u8], at: &mut usize, byte: u8) -> Result<(), String> {
    if raw.get(*at) == Some(&byte) {
        *at += 1;
        Ok(())
    } else {
        Err(format!("expected {:?} at byte {} of a piece: a row without three fields", char::from(byte), *at))
    }
}

/// Copies the field at `at` (unquoted) into `out`; returns its range there.
fn field(raw: &[u8], at: &mut usize, out: &mut Vec<u8>) -> Result<(u32, u32), String> {
    let start = out.len();
    if raw.get(*at) == Some(&b'"') {
        let mut i = *at + 1;
        loop {
            let q = memchr::memchr(b'"', &raw[i..]).ok_or("an unterminated quoted field")? + i;
            out.extend_from_slice(&raw[i..q]);
            if raw.get(q + 1) == Some(&b'"') {
                out.push(b'"');
                i = q + 2;
            } else {
                *at = q + 1;
                break;
            }
        }
    } else {
        let end = memchr::memchr3(b',', b'\n', b'\r', &raw[*at..]).map_or(raw.len(), |k| *at + k);
        out.extend_from_slice(&raw[*at..end]);
        *at = end;
    }
    Ok((start as u32, out.len() as u32))
}

/// Cleans the text field at `at` into `out` (trimmed, whitespace runs collapsed to one
/// space, quotes unescaped); returns how many more bytes than characters it has.
fn text_field(raw: &[u8], at: &mut usize, out: &mut Vec<u8>) -> Result<usize, String> {
    if raw.get(*at) == Some(&b'"') {
        // The closing quote: the first lone one (a pair is an escaped quote).
        let mut i = *at + 1;
        let end = loop {
            let q = memchr::memchr(b'"', &raw[i..]).ok_or("an unterminated quoted field")? + i;
            if raw.get(q + 1) == Some(&b'"') {
                i = q + 2;
            } else {
                break q;
            }
        };
        let extra = trim_collapse(&raw[*at + 1..end], true, out);
        *at = end + 1;
        Ok(extra)
    } else {
        let end = memchr::memchr3(b',', b'\n', b'\r', &raw[*at..]).map_or(raw.len(), |k| *at + k);
        let extra = trim_collapse(&raw[*at..end], false, out);
        *at = end;
        Ok(extra)
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is zero; exact for the lowest such byte (a
/// borrow can flag bytes above it).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// The high bit of each byte of `x` below `n` (at most 0x80); exact for the lowest.
#[inline]
fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// Where the next byte of `s[i..]` is that the cleaner must look at (see
/// [`trim_collapse`]), or `s.len()`. A byte that needs no look may be reported too (a
/// borrow in the arithmetic): the cleaner decides on the byte itself.
#[inline]
fn next_stop(s: &[u8], mut i: usize) -> usize {
    while i + 9 <= s.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        let x = u64::from_le_bytes(w);
        w.copy_from_slice(&s[i + 1..i + 9]);
        let next = u64::from_le_bytes(w);
        // Control bytes and non-ASCII, a quote, and a space followed by another space.
        let spaces = zero_bytes(x ^ (LO * 0x20)) & zero_bytes(next ^ (LO * 0x20));
        let stops = bytes_below(x, 0x20) | (x & HI) | zero_bytes(x ^ (LO * u64::from(b'"'))) | spaces;
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() {
        let b = s[i];
        if !(0x20..0x80).contains(&b) || b == b'"' || (b == b' ' && s.get(i + 1) == Some(&b' ')) {
            return i;
        }
        i += 1;
    }
    s.len()
}

/// Appends `s` trimmed, with every run of whitespace (`char::is_whitespace`, as the
/// `clean` step's rules) as one space; in a quoted field (`quoted`) a pair of quotes is
/// one. Returns how many more bytes than characters it wrote.
///
/// Plain runs (ASCII above the space, and lone spaces) are found eight bytes at a time and
/// copied as slices; only control bytes, non-ASCII bytes, quotes and doubled spaces stop
/// the copy.
fn trim_collapse(s: &[u8], quoted: bool, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let mut extra = 0;
    // After whitespace (and at the start): spaces that open the next run are dropped.
    let mut after_space = true;
    let mut i = 0;
    loop {
        if after_space {
            while s.get(i) == Some(&b' ') {
                i += 1;
            }
        }
        let j = next_stop(s, i);
        // (A run may end with one space; the stop after it then decides `after_space`.)
        out.extend_from_slice(&s[i..j]);
        if j == s.len() {
            break;
        }
        let b = s[j];
        let space = if b < 0x80 {
            matches!(b, b' ' | b'\t'..=b'\r')
        } else {
            // Only these lead bytes can start a Unicode space.
            matches!(b, 0xc2 | 0xe1..=0xe3)
                && std::str::from_utf8(&s[j..(j + utf8_len(b)).min(s.len())])
                    .ok()
                    .and_then(|c| c.chars().next())
                    .is_some_and(char::is_whitespace)
        };
        let len = utf8_len(b).min(s.len() - j);
        if space {
            if out.len() > start && out.last() != Some(&b' ') {
                out.push(b' ');
            }
            after_space = true;
        } else {
            out.extend_from_slice(&s[j..j + len]);
            extra += len - 1;
            after_space = false;
        }
        // An escaped quote is two quotes in the file.
        i = j + len + usize::from(quoted && b == b'"');
    }
    if out.len() > start && out.last() == Some(&b' ') {
        out.pop();
    }
    extra
}

/// Appends `s` as a JSON string, escaped as Weave's `write_json_str` escapes it (`"`,
/// `\` and control bytes), looking at eight bytes at a time.
fn json_str(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut i = 0;
    loop {
        let mut j = i;
        loop {
            if j + 8 <= s.len() {
                let mut w = [0u8; 8];
                w.copy_from_slice(&s[j..j + 8]);
                let x = u64::from_le_bytes(w);
                // Bytes above 0x7f are flagged by `bytes_below` too (its `!x` keeps them
                // out), so they are not: only control bytes, quotes and backslashes.
                let stops = bytes_below(x, 0x20)
                    | zero_bytes(x ^ (LO * u64::from(b'"')))
                    | zero_bytes(x ^ (LO * u64::from(b'\\')));
                if stops == 0 {
                    j += 8;
                    continue;
                }
                j += (stops.trailing_zeros() / 8) as usize;
                break;
            }
            while j < s.len() && !(s[j] < 0x20 || s[j] == b'"' || s[j] == b'\\') {
                j += 1;
            }
            break;
        }
        out.extend_from_slice(&s[i..j]);
        let Some(&b) = s.get(j) else { break };
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            // A borrow flagged a plain byte: copy it.
            0x20.. => out.push(b),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]),
        }
        i = j + 1;
    }
    out.push(b'"');
}

/// The second pass over a piece: the kept records' JSON lines.
fn emit(p: &mut Piece, mut noise: Option<&mut Noise>) {
    if p.error.is_some() {
        return;
    }
    let range = |(a, b): (u32, u32)| a as usize..b as usize;
    for r in p.recs.iter().filter(|r| r.keep) {
        let (id, text, label) = (&p.fields[range(r.id)], &p.clean[range(r.text)], &p.fields[range(r.label)]);
        // The completeness check (the text cannot be blank: it has 20 characters and is
        // trimmed), before the noise it would throw away.
        if noise.is_some() && label_blank(label) {
            continue;
        }
        let out = &mut p.out;
        out.extend_from_slice(b"{\"id\":");
        json_str(id, out);
        out.extend_from_slice(b",\"text\":");
        json_str(text, out);
        out.extend_from_slice(b",\"label\":");
        json_str(label, out);
        if let Some(noise) = noise.as_deref_mut() {
            // The piece's bytes were checked as UTF-8, and cleaning copies whole characters.
            match std::str::from_utf8(text) {
                Ok(text) => noise.write(text, out, |s, out| json_str(s.as_bytes(), out)),
                Err(e) => {
                    p.error = Some(e.to_string());
                    return;
                }
            }
        }
        out.extend_from_slice(b"}\n");
        p.written += 1;
    }
}

/// Whether a label is blank as the completeness check sees it (`str::trim`: Unicode
/// whitespace).
fn label_blank(label: &[u8]) -> bool {
    std::str::from_utf8(label).is_ok_and(|s| s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_steps::write_json_str;

    fn clean(s: &str, quoted: bool) -> (String, usize) {
        let mut out = Vec::new();
        let extra = trim_collapse(s.as_bytes(), quoted, &mut out);
        (String::from_utf8(out).unwrap(), extra)
    }

    #[test]
    fn cleaning_matches_the_clean_steps_rules() {
        let cases = [
            "",
            "   ",
            "a",
            "  hello   world  ",
            "a \tb\t c \u{a0} d\u{2003}\u{2003}e",
            "x\u{1}y  \u{85}z\u{3000}",
            "long words without any special byte at all here",
            "café  naïve\n\n數據 — … \r\n end ",
            "ends with a space followed by nbsp \u{a0}",
            "  two  spaces  across  eight  byte  boundaries  of  the  words  ",
        ];
        for s in cases {
            let mut want = String::new();
            super::super::layout::trim_collapse(s, &mut want);
            let (got, extra) = clean(s, false);
            assert_eq!(got, want, "{s:?}");
            assert_eq!(got.len() - extra, got.chars().count(), "{s:?}");
        }
        // A quoted field's escaped quotes are one quote each.
        assert_eq!(clean("say \"\"hi\"\"  now", true).0, "say \"hi\" now");
    }

    #[test]
    fn json_strings_are_escaped_as_weave_escapes_them() {
        let mut s: String = (0u8..0x80).map(char::from).collect();
        s.push_str("é 😀 \"quoted\" back\\slash and a long plain tail of text");
        for cut in 0..s.len() {
            if !s.is_char_boundary(cut) {
                continue;
            }
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            json_str(&s.as_bytes()[cut..], &mut ours);
            write_json_str(&s[cut..], &mut theirs);
            assert_eq!(ours, theirs, "from byte {cut}");
        }
    }

    #[test]
    fn pieces_are_cut_after_whole_records_only() {
        let raw = b"1,\"a\nb\",x\n2,\"c\"\"\n\",y\n3,\"open\n";
        assert_eq!(last_boundary(raw), Some(21));
        assert_eq!(last_boundary(b"1,\"no end\n"), None);
    }
}
