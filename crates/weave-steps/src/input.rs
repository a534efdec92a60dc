//! Opening input files, decompressing `.gz` and `.zst` on the fly.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use weave_core::StepError;

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
