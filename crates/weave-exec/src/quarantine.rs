//! Files of set-aside records, one JSON object a line: the quarantine file (bad records)
//! and the steps' exclusion files (records dropped on purpose).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use weave_core::{Record, Rejected};

use crate::error::Error;
use weave_fs::TempFile;

/// Appends rejected records to a JSONL file, created on the first record of the run.
#[derive(Debug)]
pub(crate) struct Quarantine {
    path: Option<PathBuf>,
    out: Mutex<Option<BufWriter<File>>>,
}

impl Quarantine {
    pub(crate) fn new(path: Option<PathBuf>) -> Self {
        Quarantine { path, out: Mutex::new(None) }
    }

    /// Writes `rejected` for `step`. Without a path, rejected records cannot be kept, so
    /// skipping them is refused rather than losing them silently.
    pub(crate) fn write(&self, step: &str, rejected: &[Rejected]) -> Result<(), Error> {
        let Some(path) = &self.path else {
            let first = &rejected[0];
            return Err(Error::BadRecord {
                step: step.to_owned(),
                reason: format!("{} (no quarantine file is set, so the record cannot be skipped)", first.reason),
                origin: first.origin.clone(),
            });
        };
        let io = |source| Error::Quarantine { path: path.clone(), source };
        let mut guard = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            create_parent(path).map_err(io)?;
            *guard = Some(BufWriter::new(File::create(path).map_err(io)?));
        }
        let Some(out) = guard.as_mut() else { return Ok(()) };
        for r in rejected {
            write_line(out, Some(r.origin.as_deref()), &r.reason, r.record.as_ref(), step).map_err(io)?;
        }
        Ok(())
    }

    /// Flushes what was written.
    pub(crate) fn flush(&self) -> Result<(), Error> {
        let mut guard = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(out), Some(path)) = (guard.as_mut(), &self.path) {
            out.flush().map_err(|source| Error::Quarantine { path: path.clone(), source })?;
        }
        Ok(())
    }
}

/// Writes one line of a quarantine or exclusion file:
/// `{"origin":...,"reason":...,"record":...,"step":...}` (`origin` only when given, for the
/// quarantine file, `null` when unknown). The record is written straight from the data,
/// as an export writes it, not through `serde_json::Value`, whose maps sort their keys and
/// whose numbers stop at 64 bits: its fields keep their order, nested ones too, and its
/// integers their digits.
fn write_line(
    out: &mut impl Write,
    origin: Option<Option<&str>>,
    reason: &str,
    record: Option<&Record>,
    step: &str,
) -> std::io::Result<()> {
    out.write_all(b"{")?;
    if let Some(origin) = origin {
        out.write_all(b"\"origin\":")?;
        serde_json::to_writer(&mut *out, &origin)?;
        out.write_all(b",")?;
    }
    out.write_all(b"\"reason\":")?;
    serde_json::to_writer(&mut *out, reason)?;
    out.write_all(b",\"record\":")?;
    serde_json::to_writer(&mut *out, &record)?;
    out.write_all(b",\"step\":")?;
    serde_json::to_writer(&mut *out, step)?;
    out.write_all(b"}\n")
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    }
}

/// A step's exclusion file: the records it dropped on purpose, each with its reason, in
/// input order. Written under a temporary name beside it ([`TempFile`]) and renamed into
/// place when the run succeeds (an empty file if nothing was dropped), removed when it
/// fails: like every output, it never looks finished when it is not.
#[derive(Debug)]
pub(crate) struct Exclusions {
    step: String,
    path: PathBuf,
    out: Mutex<Option<(BufWriter<File>, TempFile)>>,
}

impl Exclusions {
    pub(crate) fn new(step: &str, path: PathBuf) -> Self {
        Exclusions { step: step.to_owned(), path, out: Mutex::new(None) }
    }

    /// The step whose records these are.
    pub(crate) fn step(&self) -> &str {
        &self.step
    }

    fn io(&self) -> impl Fn(std::io::Error) -> Error + '_ {
        |source| Error::Exclusions { step: self.step.clone(), path: self.path.clone(), source }
    }

    fn with_out(&self, f: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<(), Error> {
        let mut guard = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            create_parent(&self.path).map_err(self.io())?;
            let dir = match self.path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let (file, temp) = TempFile::new_in(dir).map_err(self.io())?;
            *guard = Some((BufWriter::new(file), temp));
        }
        match guard.as_mut() {
            Some((out, _)) => f(out).map_err(self.io()),
            None => Ok(()),
        }
    }

    /// Appends dropped records with their reasons.
    pub(crate) fn write(&self, excluded: &[(String, Record)]) -> Result<(), Error> {
        if excluded.is_empty() {
            return Ok(());
        }
        self.with_out(|out| {
            for (reason, record) in excluded {
                write_line(out, None, reason, Some(record), &self.step)?;
            }
            Ok(())
        })
    }

    /// Makes the file visible: flush, fsync, rename.
    pub(crate) fn commit(&self) -> Result<(), Error> {
        self.with_out(|out| {
            out.flush()?;
            out.get_ref().sync_all()
        })?;
        let taken = self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match taken {
            Some((out, temp)) => {
                drop(out);
                temp.persist(&self.path).map_err(self.io())
            }
            None => Ok(()),
        }
    }

    /// Throws away what was written.
    pub(crate) fn abort(&self) {
        *self.out.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::Value;

    /// `{"zeta":1,"alpha":{"y":1,"b":2},"n":<30 digits>}`: fields out of name order, nested
    /// too, and an integer past 64 bits.
    fn record() -> Record {
        let Ok(Value::Map(fields)) =
            Value::from_json(r#"{"zeta":1,"alpha":{"y":1,"b":2},"n":100000000000000000000000000000}"#)
        else {
            panic!("an object")
        };
        fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    const RECORD: &str = r#"{"zeta":1,"alpha":{"y":1,"b":2},"n":100000000000000000000000000000}"#;

    // regression (issue 13, items 10 and 11, in the files of set-aside records): a record
    // went through `serde_json::Value`, whose maps sort their keys and whose numbers stop at
    // 64 bits, so the quarantine and exclusion files said `{"alpha":{"b":2,"y":1},"n":1e+29,...}`.
    #[test]
    fn the_quarantine_file_keeps_a_records_field_order_and_its_big_integers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let q = Quarantine::new(Some(path.clone()));
        let rejected = [
            Rejected { reason: "too long".into(), record: Some(record()), origin: Some("in.jsonl:3".into()) },
            Rejected { reason: "not an object".into(), record: None, origin: None },
        ];
        q.write("load", &rejected).unwrap();
        q.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!(
                "{{\"origin\":\"in.jsonl:3\",\"reason\":\"too long\",\"record\":{RECORD},\"step\":\"load\"}}\n\
                 {{\"origin\":null,\"reason\":\"not an object\",\"record\":null,\"step\":\"load\"}}\n"
            )
        );
    }

    #[test]
    fn the_exclusion_file_keeps_a_records_field_order_and_its_big_integers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.jsonl");
        let x = Exclusions::new("clean", path.clone());
        x.write(&[("min_chars".to_owned(), record())]).unwrap();
        x.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{{\"reason\":\"min_chars\",\"record\":{RECORD},\"step\":\"clean\"}}\n")
        );
    }
}
