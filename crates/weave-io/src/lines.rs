//! The `load_text` step: a plain text file, one record per line.

use std::path::PathBuf;

use crate::input::Lines;

use weave_core::{
    Batch, CanonicalConfig, Column, DataType, Field, Params, Schema, Shape, Source, Step, StepContext, StepError,
    StepInfo, StepKind, StrColumn,
};

/// The `load_text` kind.
pub(crate) static KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "load_text",
        Shape::Source,
        "read text files, one record per line (LF or CRLF), into one field",
        ["path", "field", "skip_empty", "batch_size", "batch_bytes", "max_record_bytes"],
        build,
    )
});

/// Reads text files (one, or every file a glob matches, in order) line by line into
/// records of one field (`text` by default). Lines that are not UTF-8 are rejected with
/// their file and line number.
#[derive(Debug)]
pub struct LoadText {
    paths: Vec<PathBuf>,
    field: String,
    skip_empty: bool,
    batch: crate::BatchLimit,
    config: CanonicalConfig,
    lines: Lines,
}

fn build(p: &Params) -> Option<Step> {
    let paths = crate::input::input_paths(p, "the text file to read, or a glob pattern");
    let config = crate::input::config(p, paths.as_deref().unwrap_or_default());
    let field = p.str("field").unwrap_or_else(|| "text".to_owned());
    let skip_empty = p.bool("skip_empty").unwrap_or(false);
    let batch = crate::BatchLimit::read(p);
    let max_record = crate::max_record_bytes(p);
    if p.has_errors() {
        return None;
    }
    let paths = paths?;
    Some(Step::Source(Box::new(LoadText {
        lines: Lines::new(paths.clone(), max_record).with_shard(p.context().shard()),
        paths,
        field,
        skip_empty,
        batch,
        config,
    })))
}

impl StepInfo for LoadText {
    fn kind(&self) -> &str {
        &KIND.name
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_read(&self) -> Vec<PathBuf> {
        crate::input::local_files(&self.paths)
    }
}

impl Source for LoadText {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        let mut col = StrColumn::with_capacity(self.batch.rows.min(4096), 0);
        while !self.batch.full(col.len(), col.data().len()) {
            let Some(line) = self.lines.next_line(ctx)? else { break };
            if !(line.text.is_empty() && self.skip_empty) {
                col.push(line.text);
            }
        }
        if col.is_empty() {
            return Ok(None);
        }
        let schema = std::sync::Arc::new(Schema::new(vec![Field::new(self.field.clone(), DataType::Str)]));
        Batch::new(schema, vec![std::sync::Arc::new(Column::Str(col))])
            .map(Some)
            .map_err(|e| StepError::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::build_step;

    #[test]
    fn lines_become_records_and_bad_lines_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, b"\xef\xbb\xbffirst\r\n\nthird \xff\nlast").unwrap();
        let config = format!("path = {:?}\nfield = \"line\"\nskip_empty = true", path.to_str().unwrap());
        let Step::Source(mut s) = build_step("load_text", &config) else { panic!() };
        let mut ctx = StepContext::new("load", 0, 0, Default::default());
        let b = s.next_batch(&mut ctx).unwrap().unwrap();
        let rows: Vec<String> = b.to_records().iter().map(|r| r.to_string()).collect();
        assert_eq!(rows, [r#"{"line":"first"}"#, r#"{"line":"last"}"#]);
        assert!(s.next_batch(&mut ctx).unwrap().is_none());
        let rej = ctx.take_rejected();
        assert_eq!(rej.len(), 1);
        assert!(rej[0].origin.as_deref().unwrap().ends_with(":3"));
    }

    #[test]
    fn a_line_over_max_record_bytes_is_a_bad_record_and_the_next_lines_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let long = "y".repeat(3 << 20);
        std::fs::write(&path, format!("0123456789\n{long}\r\n01234567890\nlast")).unwrap();
        for kind in ["load_text", "load_jsonl"] {
            let config = format!("path = {:?}\nmax_record_bytes = 10", path.to_str().unwrap());
            let (rows, rejected) = crate::tests::read_source(build_step(kind, &config));
            let prefix = path.display().to_string();
            let too_large = "is larger than `max_record_bytes` (10 B); it was skipped without being read into memory";
            if kind == "load_text" {
                assert_eq!(rows, [r#"{"text":"0123456789"}"#, r#"{"text":"last"}"#]);
                assert_eq!(
                    rejected,
                    [format!("{prefix}:2: line {too_large}"), format!("{prefix}:3: line {too_large}")]
                );
            } else {
                assert_eq!(rejected.len(), 4, "{rejected:?}");
                assert_eq!(rejected[1], format!("{prefix}:2: line {too_large}"));
            }
        }
        crate::tests::check_build_errors(
            "load_text",
            "path = \"x.txt\"\nmax_record_bytes = 0",
            &["2:20 `max_record_bytes` must be at least 1"],
        );
    }

    #[test]
    fn a_batch_ends_at_batch_size_rows_or_batch_bytes_whichever_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, "aaaa\nbbbb\ncccc\n".to_owned() + &"x".repeat(50) + "\ndddd\neeee\nf\n").unwrap();
        let sizes = |extra: &str| {
            let config = format!("path = {:?}\n{extra}", path.to_str().unwrap());
            let Step::Source(mut s) = build_step("load_text", &config) else { panic!() };
            let mut ctx = StepContext::new("load", 0, 0, Default::default());
            std::iter::from_fn(|| s.next_batch(&mut ctx).unwrap().map(|b| b.len())).collect::<Vec<_>>()
        };
        assert_eq!(sizes(""), [7]);
        assert_eq!(sizes("batch_size = 2"), [2, 2, 2, 1]);
        // 4 + 4 bytes is under 10, a third line reaches it; a line over the bound is a
        // batch of its own rather than never read.
        assert_eq!(sizes("batch_bytes = 10"), [3, 1, 3]);
        assert_eq!(sizes("batch_bytes = \"10B\"\nbatch_size = 2"), [2, 2, 2, 1]);
        crate::tests::check_build_errors(
            "load_text",
            "path = \"x.txt\"\nbatch_bytes = 0\nbatch_size = 0",
            &["3:14 `batch_size` must be from 1 to 1000000, not 0", "2:15 `batch_bytes` must be at least 1"],
        );
    }

    #[test]
    fn empty_files_huge_lines_and_a_bom_in_each_file() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(5 << 20);
        std::fs::write(dir.path().join("1.txt"), b"").unwrap();
        std::fs::write(dir.path().join("2.txt"), format!("\u{feff}{big}\nend")).unwrap();
        std::fs::write(dir.path().join("3.txt"), "\u{feff}third\r\n").unwrap();
        let config = format!("path = {:?}", dir.path().join("*.txt").to_str().unwrap());
        let (rows, rej) = crate::tests::read_source(build_step("load_text", &config));
        assert!(rej.is_empty());
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], format!("{{\"text\":\"{big}\"}}"));
        assert_eq!(rows[1..], [r#"{"text":"end"}"#, r#"{"text":"third"}"#]);
    }
}
