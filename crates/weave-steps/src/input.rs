//! Opening input files, decompressing `.gz` and `.zst` on the fly.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use weave_core::{Rejected, StepContext, StepError};

/// An input file's bytes, decompressed when its name ends in `.gz` or `.zst`.
pub(crate) struct Input(Box<dyn Read + Send>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// Opens `path` for reading, with a decoder chosen by its extension (gzip, including
/// several members one after the other; zstd).
pub(crate) fn open(path: &Path) -> Result<Input, StepError> {
    let file = File::open(path).map_err(|e| StepError::environment(format!("cannot open {}", path.display()), e))?;
    // The loaders buffer what they read; the decoders buffer the compressed side.
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    Ok(Input(match ext.as_deref() {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Some("zst" | "zstd") => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(|e| StepError::environment(format!("cannot read {} as zstd", path.display()), e))?,
        ),
        _ => Box::new(file),
    }))
}

/// A file read line by line, as the line-oriented loaders read it.
#[derive(Debug)]
pub(crate) struct Lines {
    path: std::path::PathBuf,
    reader: Option<std::io::BufReader<Input>>,
    line_no: u64,
    buf: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(path: std::path::PathBuf) -> Self {
        Lines { path, reader: None, line_no: 0, buf: Vec::new() }
    }

    /// The next line with its number (from 1), without its line ending and, on the first
    /// line, without a byte-order mark. A line that is not UTF-8 is set aside in `ctx` with
    /// its place and skipped. `None` at the end of the file.
    pub(crate) fn next_line(&mut self, ctx: &mut StepContext) -> Result<Option<(u64, &str)>, StepError> {
        use std::io::BufRead;
        if self.reader.is_none() {
            self.reader = Some(std::io::BufReader::with_capacity(1 << 20, open(&self.path)?));
        }
        let Some(reader) = self.reader.as_mut() else { return Ok(None) };
        loop {
            self.buf.clear();
            let n = reader.read_until(b'\n', &mut self.buf).map_err(|e| {
                StepError::environment(format!("cannot read {}:{}", self.path.display(), self.line_no + 1), e)
            })?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let mut end = self.buf.len();
            for ending in [b'\n', b'\r'] {
                if end > 0 && self.buf[end - 1] == ending {
                    end -= 1;
                }
            }
            let start = if self.line_no == 1 && self.buf[..end].starts_with(b"\xef\xbb\xbf") { 3 } else { 0 };
            // Checked first and read after, so that the borrow ends before the next line.
            if std::str::from_utf8(&self.buf[start..end]).is_err() {
                ctx.reject(Rejected {
                    reason: "line is not valid UTF-8".into(),
                    record: None,
                    origin: Some(format!("{}:{}", self.path.display(), self.line_no)),
                });
                continue;
            }
            let text = std::str::from_utf8(&self.buf[start..end]).unwrap_or_default();
            return Ok(Some((self.line_no, text)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_and_zstd_read_back_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = "a,b\n1,2\n".repeat(1000);
        let gz = dir.path().join("x.csv.gz");
        let mut e = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
        let zst = dir.path().join("x.csv.zst");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        for p in [&gz, &zst] {
            let mut out = String::new();
            open(p).unwrap().read_to_string(&mut out).unwrap();
            assert_eq!(out, text, "{}", p.display());
        }
        let bad = dir.path().join("bad.gz");
        std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage").unwrap();
        let mut out = String::new();
        assert!(open(&bad).unwrap().read_to_string(&mut out).is_err());
    }
}
