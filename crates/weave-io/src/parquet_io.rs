//! The `load_parquet` and `export_parquet` steps: Parquet files, the format Hugging Face
//! datasets ship in, read and written through the parquet crate's Arrow reader and writer.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_schema::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use weave_core::{
    Batch, CanonicalConfig, Params, Shape, Sink, Source, Step, StepContext, StepError, StepInfo, StepKind,
};

use weave_core::declared::DeclaredSchema;

use crate::arrow::{FileSchema, batch_from_arrow};
use crate::json::NonFinite;
use crate::output::{AtomicOutput, TempWriter};

/// The `load_parquet` kind.
pub(crate) static LOAD_KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "load_parquet",
        Shape::Source,
        "read Parquet files (all columns or some), streaming row group by row group, in batches",
        ["path", "columns", "batch_size"],
        build_load,
    )
});

/// The `export_parquet` kind.
pub(crate) static EXPORT_KIND: std::sync::LazyLock<StepKind> = std::sync::LazyLock::new(|| {
    StepKind::new(
        "export_parquet",
        Shape::Sink,
        "write records as a Parquet file whose schema later batches widen; it appears whole when the run succeeds",
        ["path", "compression"],
        build_export,
    )
});

/// Reads Parquet files (one, or every file a glob matches, in order), `batch_size` rows at
/// a time, reading only the `columns` asked for. Types map to columns as
/// [`crate::arrow`] says: numbers and strings to typed columns, nested data to values.
#[derive(Debug)]
pub struct LoadParquet {
    paths: Vec<PathBuf>,
    /// The run's shard, and what it reads of `paths` (worked out when the first file is
    /// opened): a shard reads the row groups that start in its range of the files' bytes.
    shard: Option<weave_core::Shard>,
    pieces: Option<Vec<crate::input::Piece>>,
    columns: Option<Vec<String>>,
    batch_size: usize,
    config: CanonicalConfig,
    /// The next piece to open, as an index into `pieces`.
    next_file: usize,
    /// The file being read, with its index in `paths`, and where each asked-for column is
    /// in its batches.
    open: Option<OpenParquet>,
}

struct OpenParquet {
    file: usize,
    reader: ParquetRecordBatchReader,
    /// The columns of each batch, in the order `columns` asks for (all, in the file's
    /// order, without it).
    order: Option<Vec<usize>>,
}

impl std::fmt::Debug for OpenParquet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenParquet").field("file", &self.file).field("order", &self.order).finish_non_exhaustive()
    }
}

fn build_load(p: &Params) -> Option<Step> {
    let paths = crate::input::input_paths(p, "the Parquet file to read, or a glob pattern");
    let config = crate::input::config(p, paths.as_deref().unwrap_or_default());
    let columns = p.str_list("columns");
    if let (Some(cols), Some(item)) = (&columns, p.item("columns")) {
        if cols.is_empty() {
            p.error_at(item, "`columns` must name at least one column (leave it out to read them all)");
        }
        if let Some((_, c)) = cols.iter().enumerate().find(|(i, c)| cols[..*i].contains(c)) {
            p.error_at(item, format!("`columns` names `{c}` twice"));
        }
    }
    let batch_size = crate::batch_size(p);
    if p.has_errors() {
        return None;
    }
    if let Some(paths) = &paths {
        crate::parquet_meta::register(p, paths);
    }
    Some(Step::Source(Box::new(LoadParquet {
        paths: paths?,
        shard: p.context().shard(),
        pieces: None,
        columns,
        batch_size,
        config,
        next_file: 0,
        open: None,
    })))
}

impl StepInfo for LoadParquet {
    fn kind(&self) -> &str {
        &LOAD_KIND.name
    }

    /// 2: a struct's fields in the file's order (they were sorted), `UInt64` exact.
    /// 3: timestamps, dates, decimals and binary as values of their types (they were
    /// strings), maps as key-value maps.
    fn version(&self) -> u32 {
        3
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_read(&self) -> Vec<PathBuf> {
        crate::input::local_files(&self.paths)
    }
}

/// A file the Parquet reader refuses: not Parquet, cut short, or damaged.
fn not_parquet(path: &Path, e: impl std::fmt::Display) -> StepError {
    StepError::fatal(format!("{}: cannot read it as Parquet (is it a Parquet file, and whole?): {e}", path.display()))
}

impl LoadParquet {
    /// Opens piece `piece` of the share: `None` when none of its row groups is the shard's.
    fn open(&self, piece: &crate::input::Piece) -> Result<Option<OpenParquet>, StepError> {
        let path = &self.paths[piece.file];
        // A remote object is read by ranges (its footer, then the chosen column chunks of
        // the chosen row groups), never downloaded whole first.
        if crate::remote::is_remote(path) {
            return self.open_from(crate::remote::RemoteFile::open(path)?, piece);
        }
        let f = File::open(path).map_err(|e| StepError::environment(format!("cannot open {}", path.display()), e))?;
        self.open_from(f, piece)
    }

    /// [`LoadParquet::open`] of the file or object `f`.
    fn open_from<T>(&self, mut f: T, piece: &crate::input::Piece) -> Result<Option<OpenParquet>, StepError>
    where
        T: parquet::file::reader::ChunkReader + std::io::Read + std::io::Seek + 'static,
    {
        let path = &self.paths[piece.file];
        let cannot_read = |e| StepError::environment(format!("cannot read {}", path.display()), e);
        // Before the parquet crate reads the schema, by a recursion its depth could overflow.
        crate::parquet_footer::check_schema_depth(&mut f)
            .map_err(cannot_read)?
            .map_err(|e| StepError::fatal(format!("{}: {e}", path.display())))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| not_parquet(path, e))?;
        self.reader_of(builder, piece)
    }

    /// The reader of a file the builder opened: the shard's row groups, the chosen columns.
    fn reader_of<T: parquet::file::reader::ChunkReader + 'static>(
        &self,
        builder: ParquetRecordBatchReaderBuilder<T>,
        piece: &crate::input::Piece,
    ) -> Result<Option<OpenParquet>, StepError> {
        let file = piece.file;
        let path = &self.paths[file];
        let mut builder = builder.with_batch_size(self.batch_size);
        if let Some(range) = &piece.bytes {
            // A row group is the shard's whose first byte (its first column chunk's) is in
            // the shard's range of the file.
            let groups: Vec<usize> = builder
                .metadata()
                .row_groups()
                .iter()
                .enumerate()
                .filter(|(_, g)| {
                    let start = (0..g.num_columns()).map(|c| g.column(c).byte_range().0).min().unwrap_or(0);
                    range.contains(&start)
                })
                .map(|(i, _)| i)
                .collect();
            if groups.is_empty() {
                return Ok(None);
            }
            builder = builder.with_row_groups(groups);
        }
        let mut order = None;
        if let Some(columns) = &self.columns {
            let schema = builder.schema();
            let mut roots = Vec::with_capacity(columns.len());
            for c in columns {
                match schema.index_of(c) {
                    Ok(i) => roots.push(i),
                    Err(_) => {
                        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                        return Err(StepError::fatal(format!(
                            "{}: no column `{c}` (its columns: {})",
                            path.display(),
                            names.join(", ")
                        )));
                    }
                }
            }
            // The reader gives the chosen columns in the file's order; this puts them back
            // in the order asked for.
            let mut sorted = roots.clone();
            sorted.sort_unstable();
            order = Some(roots.iter().map(|r| sorted.binary_search(r).unwrap_or(0)).collect());
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder = builder.with_projection(mask);
        }
        let reader = builder.build().map_err(|e| not_parquet(path, e))?;
        Ok(Some(OpenParquet { file, reader, order }))
    }
}

impl Source for LoadParquet {
    fn next_batch(&mut self, _ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        loop {
            let open = match &mut self.open {
                Some(open) => open,
                None => {
                    if self.pieces.is_none() {
                        self.pieces = Some(crate::input::pieces(&self.paths, self.shard, |_| true)?);
                    }
                    let Some(piece) = self.pieces.as_ref().and_then(|p| p.get(self.next_file)).cloned() else {
                        return Ok(None);
                    };
                    self.next_file += 1;
                    match self.open(&piece)? {
                        Some(open) => self.open.insert(open),
                        None => continue,
                    }
                }
            };
            let path = &self.paths[open.file];
            let rb = match open.reader.next() {
                None => {
                    self.open = None;
                    continue;
                }
                Some(Err(ArrowError::IoError(m, e))) => {
                    return Err(StepError::environment(format!("cannot read {}: {m}", path.display()), e));
                }
                Some(Err(e)) => return Err(not_parquet(path, e)),
                Some(Ok(rb)) => rb,
            };
            let rb = match &open.order {
                Some(order) => rb.project(order).map_err(|e| StepError::internal(e.to_string()))?,
                None => rb,
            };
            let batch = batch_from_arrow(&rb).map_err(|e| StepError::fatal(format!("{}: {e}", path.display())))?;
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
    }
}

/// Row groups are cut at about this many encoded bytes, which bounds what the writer holds
/// in memory (Parquet needs a whole row group before it can write it out).
const ROW_GROUP_BYTES: usize = 128 << 20;

/// Writes records as one Parquet file, `compression` per column chunk (snappy by
/// default), into a temporary file renamed into place on commit.
///
/// The file's schema is set by the first batch: each field's type (a field of values of
/// mixed types is written as JSON text and read back as values by `load_parquet`). A later
/// batch may lack a field (it is null there) or hold ints in a float field; one that needs
/// a wider schema (floats after ints, a new field, a struct's new key) widens it and the
/// rows so far are rewritten ([`ExportParquet::rewrite`]); values no type holds with the
/// earlier ones are an error that names the field and both types.
pub struct ExportParquet {
    out: AtomicOutput,
    compression: Compression,
    config: CanonicalConfig,
    /// The Parquet writer, which owns the output's temporary file while it writes.
    writer: Option<(ArrowWriter<TempWriter>, FileSchema)>,
    /// Floats in fields written as JSON text that JSON cannot hold (Parquet's own float
    /// columns hold NaN and the infinities).
    nulled: NonFinite,
    /// The step's declared `schema`: the file's schema from the start, never widened.
    declared: Option<std::sync::Arc<DeclaredSchema>>,
    /// Where the metadata of the Parquet input upstream is found, to be kept.
    origin: Option<crate::parquet_meta::Origin>,
}

impl std::fmt::Debug for ExportParquet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportParquet")
            .field("out", &self.out)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

fn build_export(p: &Params) -> Option<Step> {
    let path = p.required_path("path", "the Parquet file to write");
    let compression = match p.choice("compression", &["snappy", "zstd", "gzip", "none"]) {
        None | Some("snappy") => Compression::SNAPPY,
        Some("zstd") => Compression::ZSTD(ZstdLevel::default()),
        Some("gzip") => Compression::GZIP(GzipLevel::default()),
        Some(_) => Compression::UNCOMPRESSED,
    };
    // The schema every step may declare fixes this one's columns too, so it takes it to
    // check its records itself.
    let declared = p.declared_schema();
    if p.has_errors() {
        return None;
    }
    Some(Step::Sink(Box::new(ExportParquet {
        out: AtomicOutput::new(path?),
        compression,
        config: p.canonical(),
        writer: None,
        nulled: NonFinite::default(),
        declared,
        origin: crate::parquet_meta::Origin::of(p),
    })))
}

impl StepInfo for ExportParquet {
    fn kind(&self) -> &str {
        &EXPORT_KIND.name
    }

    /// 2: a struct's fields in the records' order (they were sorted), unsigned and exact
    /// numbers (ints a float cannot hold no longer go into a float column).
    /// 3: the schema widens across batches; timestamps, dates, decimals, binary and maps
    /// as their Parquet types.
    fn version(&self) -> u32 {
        3
    }

    fn config(&self) -> CanonicalConfig {
        self.config.clone()
    }

    fn files_written(&self) -> Vec<PathBuf> {
        vec![self.out.path().to_path_buf()]
    }
}

impl ExportParquet {
    fn start(&mut self, schema: FileSchema) -> Result<(), StepError> {
        // The metadata of the Parquet input upstream, for these columns: in the file's
        // key-value metadata, and in the Arrow schema stored there, which pyarrow reads
        // a file's metadata from.
        let carried = self.origin.as_ref().map(|o| o.carried(&schema.arrow())).unwrap_or_default();
        let arrow = if carried.is_empty() {
            schema.arrow()
        } else {
            let metadata: std::collections::HashMap<String, String> =
                carried.iter().filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?))).collect();
            std::sync::Arc::new(schema.arrow().as_ref().clone().with_metadata(metadata))
        };
        let props = WriterProperties::builder()
            .set_compression(self.compression)
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .set_key_value_metadata((!carried.is_empty()).then_some(carried))
            .build();
        let file = self.out.take_writer()?;
        let writer = ArrowWriter::try_new(file, arrow, Some(props)).map_err(|e| self.error(e))?;
        self.writer = Some((writer, schema));
        Ok(())
    }

    /// A failure of the Parquet writer: the disk's, or ours.
    fn error(&self, e: ParquetError) -> StepError {
        let message = format!("cannot write {} as Parquet", self.out.path().display());
        match e {
            ParquetError::External(e) if e.is::<std::io::Error>() => StepError::environment(message, e),
            e => StepError::internal(format!("{message}: {e}")),
        }
    }
}

impl ExportParquet {
    /// The file so far rewritten under `wider`, a schema that holds every value it holds:
    /// the writer finishes the temporary file, which is read back a batch at a time into a
    /// new one (so memory stays within a batch and a row group, whatever the file's
    /// size), and the old one is deleted. Each widening costs a rewrite of the rows so far,
    /// and a schema can widen only so many times (each field's type climbs a short ladder:
    /// null, int, float; a struct's keys), so the total is bounded by a few passes.
    fn rewrite(&mut self, wider: FileSchema) -> Result<(), StepError> {
        let Some((writer, old_schema)) = self.writer.take() else { return Ok(()) };
        let changes = wider.changes_from(&old_schema).join(", ");
        let file = writer.into_inner().map_err(|e| self.error(e))?;
        self.out.restore(file);
        self.out.finish()?;
        let mut old = self.out.successor();
        std::mem::swap(&mut old, &mut self.out);
        let Some(old_path) = old.finished_temporary().map(Path::to_path_buf) else {
            return Err(StepError::internal("the Parquet file to widen was not finished"));
        };
        self.start(wider)?;
        let path = self.out.path().display().to_string();
        let reread = |e: &dyn std::fmt::Display| {
            StepError::internal(format!("cannot read back {path} to widen its schema: {e}"))
        };
        let f = File::open(&old_path).map_err(|e| reread(&e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| reread(&e))?;
        let mut rows = 0;
        // NaN and infinities in JSON text fields were counted when first written.
        let mut recounted = NonFinite::default();
        for rb in reader {
            let rb = rb.map_err(|e| reread(&e))?;
            let batch = batch_from_arrow(&rb).map_err(|e| reread(&e))?;
            rows += batch.len();
            let Some((writer, schema)) = &mut self.writer else { break };
            let rb = schema.record_batch(&batch, &mut recounted).map_err(|e| {
                StepError::fatal(format!("cannot write {path}: the schema cannot widen ({changes}): {e}"))
            })?;
            writer.write(&rb).map_err(|e| self.error(e))?;
        }
        old.abort();
        log::info!("{path}: the schema widened ({changes}); the {rows} rows written so far were rewritten");
        Ok(())
    }
}

impl ExportParquet {
    /// Writes a batch under the declared schema: a record that does not fit it (a field
    /// it does not declare, a value of another type, a null where none may be) is a bad
    /// record naming the field, the type expected and the value found.
    fn write_declared(
        &mut self,
        declared: &DeclaredSchema,
        batch: &Batch,
        ctx: &mut StepContext,
    ) -> Result<(), StepError> {
        if self.writer.is_none() {
            self.start(FileSchema::declared(declared))?;
        }
        let Some((writer, schema)) = &mut self.writer else { return Ok(()) };
        let fitting = declared.check(batch, ctx);
        // The declared fields, in their order (null where the batch lacks one); the fields
        // it does not declare are null in every row kept, and left out.
        let rows = fitting.len();
        let (fields, columns): (Vec<_>, Vec<_>) = declared
            .fields()
            .iter()
            .map(|d| {
                let c = fitting.column(&d.name).map_or_else(
                    || std::sync::Arc::new(weave_core::Column::Null(rows)),
                    |_| std::sync::Arc::clone(&fitting.columns()[fitting.schema().index_of(&d.name).unwrap_or(0)]),
                );
                (weave_core::Field::new(d.name.clone(), c.data_type()), c)
            })
            .unzip();
        let fitting = Batch::new(std::sync::Arc::new(weave_core::Schema::new(fields)), columns)
            .map_err(|e| StepError::internal(e.to_string()))?;
        let path = self.out.path().display().to_string();
        let rb = schema
            .record_batch(&fitting, &mut self.nulled)
            .map_err(|e| StepError::fatal(format!("cannot write {path}: {e}")))?;
        self.nulled.report(ctx, "a JSON text field");
        writer.write(&rb).map_err(|e| self.error(e))
    }
}

impl Sink for ExportParquet {
    fn write(&mut self, batch: &Batch, ctx: &mut StepContext) -> Result<(), StepError> {
        if let Some(declared) = self.declared.clone() {
            return self.write_declared(&declared, batch, ctx);
        }
        if self.writer.is_none() {
            self.start(FileSchema::of(batch))?;
        }
        let Some((_, schema)) = &mut self.writer else { return Ok(()) };
        let cannot = |path: &Path, e: String| StepError::fatal(format!("cannot write {}: {e}", path.display()));
        let rb = match schema.record_batch(batch, &mut self.nulled) {
            Ok(rb) => rb,
            Err(first) => {
                // The batch does not fit the file's schema: widen it when a wider one holds
                // both, and rewrite what was written under it.
                let wider = schema.widened(batch).map_err(|e| cannot(self.out.path(), e))?;
                if wider.changes_from(schema).is_empty() {
                    return Err(cannot(self.out.path(), first));
                }
                self.rewrite(wider)?;
                let Some((_, schema)) = &mut self.writer else { return Ok(()) };
                schema.record_batch(batch, &mut self.nulled).map_err(|e| cannot(self.out.path(), e))?
            }
        };
        let Some((writer, _)) = &mut self.writer else { return Ok(()) };
        self.nulled.report(ctx, "a JSON text field");
        match writer.write(&rb) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn commit(&mut self, _ctx: &mut StepContext) -> Result<(), StepError> {
        // No batch came: the file still is a valid Parquet file, of no rows, and of the
        // declared columns or none.
        if self.writer.is_none() {
            let schema = match &self.declared {
                Some(d) => FileSchema::declared(d),
                None => FileSchema::of(&Batch::empty()),
            };
            self.start(schema)?;
        }
        let Some((writer, _)) = self.writer.take() else { return Ok(()) };
        // The footer goes last; then the file goes back to be synced and renamed.
        let file = writer.into_inner().map_err(|e| self.error(e))?;
        self.out.restore(file);
        self.out.commit()
    }

    fn abort(&mut self) {
        // Dropping the writer drops the temporary file it owns, which deletes it.
        self.writer = None;
        self.out.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::Array;
    use arrow_array::builder::{Int64Builder, MapBuilder, StringBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, BinaryArray, Date32Array, Decimal128Array, DictionaryArray, FixedSizeListArray, Float32Array,
        Int32Array, LargeStringArray, ListArray, RecordBatch, StringArray, StructArray, TimestampMillisecondArray,
        UInt64Array,
    };
    use arrow_buffer::{OffsetBuffer, ScalarBuffer};
    use arrow_schema::{DataType as ArrowType, Field as ArrowField};
    use weave_core::{Record, Value};

    use super::*;
    use crate::tests::{build_step, check_build_errors, read_source, source_error};

    fn export(path: &Path, extra: &str, batches: &[Batch]) -> Result<(), StepError> {
        let Step::Sink(mut out) =
            build_step("export_parquet", &format!("path = {:?}\n{extra}", path.to_str().unwrap()))
        else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        for b in batches {
            if let Err(e) = out.write(b, &mut ctx) {
                out.abort();
                return Err(e);
            }
        }
        assert!(!path.exists(), "the file must not appear before commit");
        out.commit(&mut ctx)
    }

    fn load(path: &Path, extra: &str) -> Vec<Batch> {
        let Step::Source(mut s) = build_step("load_parquet", &format!("path = {:?}\n{extra}", path.to_str().unwrap()))
        else {
            panic!()
        };
        let mut ctx = StepContext::new("load", 0, 0, Default::default());
        let mut out = Vec::new();
        while let Some(b) = s.next_batch(&mut ctx).unwrap_or_else(|e| panic!("{e}")) {
            out.push(b);
        }
        assert!(ctx.take_rejected().is_empty());
        out
    }

    fn records(batches: &[Batch]) -> Vec<Record> {
        batches.iter().flat_map(Batch::to_records).collect()
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn sample() -> (Vec<Batch>, Vec<Record>) {
        let first = vec![
            Record::new()
                .with("id", 1i64)
                .with("score", 0.5)
                .with("text", "héllo 😀 \"quoted\"\n")
                .with("flag", true)
                .with("tags", json(r#"["a", null, "ü"]"#))
                .with("meta", json(r#"{"n": 1, "s": "x"}"#))
                .with("nothing", Value::Null),
            Record::new()
                .with("id", 2i64)
                .with("score", Value::Null)
                .with("text", "")
                .with("flag", Value::Null)
                .with("tags", json("[]"))
                .with("meta", json(r#"{"n": 2}"#))
                .with("nothing", Value::Null),
            Record::new().with("id", Value::Null).with("score", 2.0).with("text", Value::Null),
        ];
        // The second batch lacks `flag` and `nothing`, and has an int in the float field.
        let second = vec![Record::new().with("id", 4i64).with("score", 3i64).with("text", "last")];
        let batches = vec![Batch::from_records(&first), Batch::from_records(&second)];
        let expected = [
            r#"{"id":1,"score":0.5,"text":"héllo 😀 \"quoted\"\n","flag":true,"tags":["a",null,"ü"],"meta":{"n":1,"s":"x"},"nothing":null}"#,
            r#"{"id":2,"score":null,"text":"","flag":null,"tags":[],"meta":{"n":2,"s":null},"nothing":null}"#,
            r#"{"id":null,"score":2.0,"text":null,"flag":null,"tags":null,"meta":null,"nothing":null}"#,
            r#"{"id":4,"score":3.0,"text":"last","flag":null,"tags":null,"meta":null,"nothing":null}"#,
        ]
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
        (batches, expected)
    }

    #[test]
    fn export_then_load_gives_the_same_records_whatever_the_compression() {
        let (batches, expected) = sample();
        for compression in [
            "",
            "compression = \"snappy\"",
            "compression = \"zstd\"",
            "compression = \"gzip\"",
            "compression = \"none\"",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sub/out.parquet");
            export(&path, compression, &batches).unwrap();
            assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1, "no temporary file is left");
            let back = load(&path, "batch_size = 2");
            assert!(back.iter().all(|b| b.len() <= 2));
            assert_eq!(records(&back), expected, "{compression}");
            assert_eq!(
                back[0].schema().to_string(),
                "{id: int, score: float, text: string, flag: bool, tags: any, meta: any, nothing: null}"
            );
        }
    }

    #[test]
    fn columns_are_read_in_the_order_asked_and_a_missing_one_is_named() {
        let (batches, _) = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        export(&path, "", &batches).unwrap();
        let back = load(&path, "columns = [\"text\", \"id\"]");
        let rows: Vec<String> = records(&back).iter().map(ToString::to_string).collect();
        assert_eq!(rows[0], r#"{"text":"héllo 😀 \"quoted\"\n","id":1}"#);
        assert_eq!(rows[3], r#"{"text":"last","id":4}"#);
        let err = source_error(build_step(
            "load_parquet",
            &format!("path = {:?}\ncolumns = [\"id\", \"nope\"]", path.to_str().unwrap()),
        ));
        assert_eq!(
            err.to_string(),
            format!("{}: no column `nope` (its columns: id, score, text, flag, tags, meta, nothing)", path.display())
        );
        check_build_errors(
            "load_parquet",
            &format!("path = {:?}\ncolumns = []", path.to_str().unwrap()),
            &["2:11 `columns` must name at least one column (leave it out to read them all)"],
        );
        check_build_errors(
            "load_parquet",
            &format!("path = {:?}\ncolumns = [\"id\", \"id\"]", path.to_str().unwrap()),
            &["2:11 `columns` names `id` twice"],
        );
        check_build_errors(
            "export_parquet",
            "path = \"x.parquet\"\ncompression = \"snapy\"",
            &["2:15 `compression` must be one of \"snappy\", \"zstd\", \"gzip\", \"none\", not \"snapy\""],
        );
    }

    #[test]
    fn a_field_of_mixed_types_is_written_as_json_and_read_back_as_values() {
        let recs = vec![
            Record::new().with("v", 1i64),
            Record::new().with("v", "one"),
            Record::new().with("v", json(r#"{"k": [1, "x"]}"#)),
            Record::new().with("v", Value::Null),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        export(&path, "", &[Batch::from_records(&recs)]).unwrap();
        assert_eq!(records(&load(&path, "")), recs);
        // Other readers see JSON text.
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap().build().unwrap();
        let rb = reader.into_iter().next().unwrap().unwrap();
        assert_eq!(rb.schema().field(0).data_type(), &ArrowType::Utf8);
        assert_eq!(rb.column(0).as_any().downcast_ref::<StringArray>().unwrap().value(1), "\"one\"");
    }

    #[test]
    fn a_later_batch_that_no_type_holds_with_the_first_is_an_error_naming_the_field() {
        let first = Batch::from_records(&[Record::new().with("n", 1i64).with("m", json(r#"{"a": 1}"#))]);
        let cases = [
            (
                Record::new().with("n", "x"),
                "field `n`: int in the rows written so far, string in this batch, and no Parquet type holds both",
            ),
            (
                Record::new().with("m", json(r#"{"a": "x"}"#)),
                "field `m`: in key `a`: int in the rows written so far, string in this batch, and no Parquet type holds both",
            ),
            (
                Record::new().with("m", json("[1]")),
                "field `m`: struct {a: int} in the rows written so far, list of int in this batch, and no Parquet type holds both",
            ),
        ];
        for (late, message) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out.parquet");
            let err = export(&path, "", &[first.clone(), Batch::from_records(&[late])]).unwrap_err();
            assert_eq!(err.to_string(), format!("cannot write {}: {message}", path.display()));
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "an aborted export leaves nothing");
        }
    }

    /// The Arrow types of a Parquet file's columns, as `name: type`.
    fn arrow_types(path: &Path) -> Vec<String> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        builder.schema().fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect()
    }

    // The first batch fixed the file's schema: a float after ints, a late field or a
    // struct's late key failed the run.
    #[test]
    fn the_schema_widens_across_batches_and_rewrites_the_rows_written() {
        let b = |lines: &[&str]| {
            Batch::from_records(&lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Record>>())
        };
        let dir = tempfile::tempdir().unwrap();
        // A name, the batches, the file's column types, its rows read back.
        type Case<'a> = (&'a str, Vec<Batch>, &'a [&'a str], &'a [&'a str]);
        let cases: [Case<'_>; 4] = [
            (
                "int then float",
                vec![b(&[r#"{"a": 1}"#, r#"{"a": 2}"#]), b(&[r#"{"a": 3.5}"#])],
                &["a: Float64"],
                &[r#"{"a":1.0}"#, r#"{"a":2.0}"#, r#"{"a":3.5}"#],
            ),
            (
                "a late nullable field",
                vec![b(&[r#"{"a": 1}"#]), b(&[r#"{"a": 2, "late": "x"}"#]), b(&[r#"{"a": 3}"#])],
                &["a: Int64", "late: Utf8"],
                &[r#"{"a":1,"late":null}"#, r#"{"a":2,"late":"x"}"#, r#"{"a":3,"late":null}"#],
            ),
            (
                "a struct gaining a key",
                vec![b(&[r#"{"m": {"x": 1}}"#]), b(&[r#"{"m": {"x": 2, "y": [true]}}"#])],
                &["m: Struct(\"x\": Int64, \"y\": List(Boolean))"],
                &[r#"{"m":{"x":1,"y":null}}"#, r#"{"m":{"x":2,"y":[true]}}"#],
            ),
            (
                "a null field that gets values",
                vec![b(&[r#"{"a": 1, "n": null}"#]), b(&[r#"{"a": 2, "n": [1.5]}"#])],
                &["a: Int64", "n: List(Float64)"],
                &[r#"{"a":1,"n":null}"#, r#"{"a":2,"n":[1.5]}"#],
            ),
        ];
        for (name, batches, types, rows) in cases {
            let path = dir.path().join(format!("{name}.parquet"));
            export(&path, "", &batches).unwrap_or_else(|e| panic!("{name}: {e}"));
            let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
            assert_eq!(
                arrow_types(&path).iter().map(|t| t.replace("nullable ", "")).collect::<Vec<_>>(),
                types,
                "{name}"
            );
            let got: Vec<String> = records(&load(&path, "")).iter().map(ToString::to_string).collect();
            assert_eq!(got, rows, "{name}");
        }
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 4, "no temporary file is left");
        // Ints written before that a float cannot hold exactly stop the widening.
        let path = dir.path().join("inexact.parquet");
        let err = export(&path, "", &[b(&[r#"{"a": 12345678901234567}"#]), b(&[r#"{"a": 0.5}"#])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot write {}: the schema cannot widen (`a` from int to float): field `a`: \
                 12345678901234567 cannot be written exactly in the Parquet file's float column",
                path.display()
            )
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_declared_schema_fixes_the_files_schema_and_sets_records_that_do_not_fit_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let keys = "schema = { id = { type = \"int\", nullable = false }, score = \"float\", day = \"date\", \
                    price = \"decimal(6, 2)\" }";
        let b = |lines: &[&str]| {
            Batch::from_records(&lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Record>>())
        };
        let Step::Sink(mut out) = build_step("export_parquet", &format!("path = {:?}\n{keys}", path.to_str().unwrap()))
        else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        // The first batch's ints would have made `score` an int column: the schema says float.
        out.write(&b(&[r#"{"id": 1, "score": 2}"#, r#"{"id": 2, "score": "high"}"#]), &mut ctx).unwrap();
        out.write(&b(&[r#"{"score": 0.5}"#, r#"{"id": 3, "extra": true}"#, r#"{"id": 4, "score": 1.5}"#]), &mut ctx)
            .unwrap();
        out.commit(&mut ctx).unwrap();
        let reasons: Vec<String> =
            ctx.take_rejected().into_iter().map(|r| format!("{} {}", r.reason, r.record.unwrap())).collect();
        assert_eq!(
            reasons,
            [
                r#"the schema of step `out`: `score`: expected float, found string "high" {"id":2,"score":"high"}"#,
                r#"the schema of step `out`: `id`: expected int (not null), found null {"score":0.5,"id":null,"extra":null}"#,
                r#"the schema of step `out`: field `extra` is not in the declared schema {"score":null,"id":3,"extra":true}"#,
            ]
        );
        assert_eq!(arrow_types(&path), ["id: Int64", "score: Float64", "day: Date32", "price: Decimal128(6, 2)"]);
        let rows: Vec<String> = records(&load(&path, "")).iter().map(ToString::to_string).collect();
        assert_eq!(
            rows,
            [r#"{"id":1,"score":2.0,"day":null,"price":null}"#, r#"{"id":4,"score":1.5,"day":null,"price":null}"#]
        );
        // No rows at all: the declared columns are still the file's.
        let empty = dir.path().join("empty.parquet");
        export(&empty, keys, &[]).unwrap();
        assert_eq!(arrow_types(&empty), ["id: Int64", "score: Float64", "day: Date32", "price: Decimal128(6, 2)"]);
        check_build_errors(
            "export_parquet",
            "path = \"x.parquet\"\nschema = { a = \"datum\", b = { type = \"int\", nullable = 1 } }",
            &[
                "2:16 `schema.a`: unknown type `datum`; the types are string, int, float, bool, json, date, timestamp, decimal(P, S)",
                "2:29 `schema.b`: `nullable` must be true or false, not an integer",
            ],
        );
    }

    #[test]
    fn empty_input_gives_a_valid_file_that_loads_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none.parquet");
        export(&none, "", &[]).unwrap();
        assert!(records(&load(&none, "")).is_empty());
        // No rows but known columns: the columns are in the file.
        let empty = Batch::from_records(&[Record::new().with("a", 1i64)]).filter(&[false]);
        let cols = dir.path().join("cols.parquet");
        export(&cols, "", &[empty]).unwrap();
        assert!(records(&load(&cols, "")).is_empty());
        let err = source_error(build_step(
            "load_parquet",
            &format!("path = {:?}\ncolumns = [\"b\"]", cols.to_str().unwrap()),
        ));
        assert!(err.to_string().ends_with("no column `b` (its columns: a)"), "{err}");
        // Records of no fields cannot be rows of a Parquet file: an error, not a silent drop.
        let err = export(&dir.path().join("x.parquet"), "", &[Batch::from_records(&[Record::new()])]).unwrap_err();
        assert!(err.to_string().ends_with("records with no fields cannot be written as Parquet rows"), "{err}");
    }

    #[test]
    fn truncated_damaged_and_other_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.parquet");
        let recs: Vec<Record> = (0..5000)
            .map(|i| Record::new().with("i", i as i64).with("t", format!("row {i} {}", "x".repeat(i % 50))))
            .collect();
        export(&good, "", &[Batch::from_records(&recs)]).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let mut damaged = bytes.clone();
        // The column chunks start after the 4-byte magic: spoil the first page's header.
        damaged[4..40].fill(0xff);
        let cases: [(&str, &[u8]); 5] = [
            ("empty.parquet", b""),
            ("text.parquet", b"{\"not\": \"parquet\"}\n"),
            ("half.parquet", &bytes[..bytes.len() / 2]),
            ("tail.parquet", &bytes[..bytes.len() - 1]),
            ("damaged.parquet", &damaged),
        ];
        for (name, content) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let err = source_error(build_step("load_parquet", &format!("path = {:?}", path.to_str().unwrap())));
            let prefix = format!("{}: cannot read it as Parquet (is it a Parquet file, and whole?): ", path.display());
            assert!(err.to_string().starts_with(&prefix), "{name}: {err}");
            assert_eq!(err.origin(), weave_core::ErrorOrigin::User);
        }
        let err = source_error(build_step("load_parquet", "path = \"/nonexistent/x.parquet\""));
        assert_eq!(
            (err.to_string().as_str(), err.origin()),
            ("cannot open /nonexistent/x.parquet", weave_core::ErrorOrigin::Environment)
        );
    }

    /// A file written by the parquet crate's own writer, with types Weave does not write
    /// (as other tools write them), in row groups of 1000 rows.
    fn foreign_file(path: &Path, rows: usize) {
        let n = rows;
        let i32s: ArrayRef = Arc::new(Int32Array::from_iter((0..n).map(|i| (i % 7 != 3).then_some(i as i32))));
        let u64s: ArrayRef = Arc::new(UInt64Array::from_iter_values((0..n).map(|i| i as u64 * 3)));
        let f32s: ArrayRef = Arc::new(Float32Array::from_iter_values((0..n).map(|i| i as f32 / 4.0)));
        let large: ArrayRef = Arc::new(LargeStringArray::from_iter_values((0..n).map(|i| format!("large {i}"))));
        let dict: ArrayRef =
            Arc::new(DictionaryArray::<Int32Type>::from_iter((0..n).map(|i| ["train", "test"][i % 2])));
        let dates: ArrayRef = Arc::new(Date32Array::from_iter_values((0..n).map(|i| 19_000 + i as i32)));
        let stamps: ArrayRef = Arc::new(
            TimestampMillisecondArray::from_iter_values((0..n).map(|i| 1_700_000_000_000 + i as i64 * 1500))
                .with_timezone("UTC"),
        );
        let decimals: ArrayRef = Arc::new(
            Decimal128Array::from_iter_values((0..n).map(|i| i as i128 * 101)).with_precision_and_scale(10, 2).unwrap(),
        );
        let text_bytes: ArrayRef =
            Arc::new(BinaryArray::from_iter_values((0..n).map(|i| format!("bytes {i}").into_bytes())));
        let fixed: ArrayRef = Arc::new(FixedSizeListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..n).map(|i| Some(vec![Some(i as i32), None])),
            2,
        ));
        // Chat messages as Hugging Face datasets hold them: list<struct<role, content>>.
        let role: ArrayRef = Arc::new(StringArray::from_iter_values((0..2 * n).map(|j| ["user", "assistant"][j % 2])));
        let content: ArrayRef = Arc::new(StringArray::from_iter_values((0..2 * n).map(|j| format!("m{j}"))));
        let message = StructArray::from(vec![
            (Arc::new(ArrowField::new("role", ArrowType::Utf8, false)), role),
            (Arc::new(ArrowField::new("content", ArrowType::Utf8, false)), content),
        ]);
        let item = Arc::new(ArrowField::new_list_field(message.data_type().clone(), false));
        let offsets = OffsetBuffer::new(ScalarBuffer::from((0..=n).map(|i| 2 * i as i32).collect::<Vec<_>>()));
        let messages: ArrayRef = Arc::new(ListArray::try_new(item, offsets, Arc::new(message), None).unwrap());
        let mut map = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        for i in 0..n {
            map.keys().append_value("len");
            map.values().append_value(i as i64);
            map.append(true).unwrap();
        }
        let maps: ArrayRef = Arc::new(map.finish());
        let rb = RecordBatch::try_from_iter([
            ("i32", i32s),
            ("u64", u64s),
            ("f32", f32s),
            ("large", large),
            ("split", dict),
            ("date", dates),
            ("at", stamps),
            ("price", decimals),
            ("raw", text_bytes),
            ("pair", fixed),
            ("messages", messages),
            ("counts", maps),
        ])
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1000))
            .set_compression(Compression::SNAPPY)
            .build();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), rb.schema(), Some(props)).unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn files_from_other_writers_map_to_columns_row_group_by_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foreign.parquet");
        foreign_file(&path, 2500);
        let back = load(&path, "batch_size = 300");
        assert!(back.iter().all(|b| b.len() <= 300));
        assert_eq!(back.iter().map(Batch::len).sum::<usize>(), 2500);
        assert_eq!(
            back[0].schema().to_string(),
            "{i32: int, u64: uint, f32: float, large: string, split: string, date: any, at: any, \
             price: any, raw: any, pair: any, messages: any, counts: any}"
        );
        let all = records(&back);
        assert_eq!(
            all[1001].to_string(),
            r#"{"i32":1001,"u64":3003,"f32":250.25,"large":"large 1001","split":"test","date":"2024-10-05","at":"2023-11-14T22:38:21.500Z","price":"1011.01","raw":"Ynl0ZXMgMTAwMQ==","pair":[1001,null],"messages":[{"role":"user","content":"m2002"},{"role":"assistant","content":"m2003"}],"counts":{"len":1001}}"#
        );
        assert_eq!(all[3].get("i32"), Some(&Value::Null));
    }

    #[test]
    fn shards_read_the_row_groups_that_start_in_their_range_and_together_every_row_once() {
        let dir = tempfile::tempdir().unwrap();
        // Row groups of 1,000 rows: 3 in the first file, 2 in the second.
        foreign_file(&dir.path().join("a.parquet"), 2500);
        foreign_file(&dir.path().join("b.parquet"), 1200);
        let config = format!("path = {:?}\nbatch_size = 400", dir.path().join("*.parquet").to_str().unwrap());
        let read = |step: Step| {
            let Step::Source(mut s) = step else { panic!() };
            let mut ctx = StepContext::new("load", 0, 0, Default::default());
            let mut rows = Vec::new();
            while let Some(b) = s.next_batch(&mut ctx).unwrap_or_else(|e| panic!("{e}")) {
                rows.extend(b.to_records().iter().map(|r| r.to_string()));
            }
            rows
        };
        let whole = read(build_step("load_parquet", &config));
        assert_eq!(whole.len(), 3700);
        for count in 1..=7 {
            let mut rows = Vec::new();
            let mut empty = 0;
            for i in 0..count {
                let shard = weave_core::Shard::new(i, count).unwrap();
                let part = read(crate::tests::build_sharded_step("load_parquet", &config, shard));
                empty += usize::from(part.is_empty());
                rows.extend(part);
            }
            assert_eq!(rows, whole, "{count} shards");
            // Five row groups: past five shards, some read none.
            assert_eq!(empty, count.saturating_sub(5) as usize, "{count} shards");
        }
    }

    // Binary data was read as text, and bytes that were not UTF-8 failed the run.
    #[test]
    fn binary_is_read_as_bytes_and_written_back_as_binary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.parquet");
        let png = b"\x89PNG\r\n\x1a\n".to_vec();
        let image: ArrayRef = Arc::new(BinaryArray::from(vec![Some(&png[..]), None]));
        let label: ArrayRef = Arc::new(Int32Array::from(vec![7, 8]));
        let rb = RecordBatch::try_from_iter([("image", image), ("label", label)]).unwrap();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), rb.schema(), None).unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();
        let back = records(&load(&path, ""));
        assert_eq!(back[0].get("image"), Some(&Value::Binary(png.clone())));
        assert_eq!(back[0].to_string(), r#"{"image":"iVBORw0KGgo=","label":7}"#, "base64 in JSON");
        let out = dir.path().join("out.parquet");
        export(&out, "", &[Batch::from_records(&back)]).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&out).unwrap()).unwrap().build().unwrap();
        let rb = reader.into_iter().next().unwrap().unwrap();
        assert_eq!(rb.schema().field(0).data_type(), &ArrowType::Binary);
        assert_eq!(rb.column(0).as_any().downcast_ref::<BinaryArray>().unwrap().value(0), &png[..]);
        assert!(rb.column(0).is_null(1));
    }

    /// A file of every type Weave reads natively, as other writers write them, with nulls.
    fn typed_file(path: &Path) -> RecordBatch {
        use arrow_array::builder::ListBuilder;
        let n = 4;
        let valid = |i: usize| i != 2;
        let mut list = ListBuilder::new(Int64Builder::new());
        let mut map = MapBuilder::new(
            Some(arrow_array::builder::MapFieldNames {
                entry: "entries".into(),
                key: "key".into(),
                value: "value".into(),
            }),
            StringBuilder::new(),
            Int64Builder::new(),
        );
        for i in 0..n {
            list.append_value([Some(i as i64), None]);
            // Each row its own keys: a struct would be as wide as every key.
            map.keys().append_value(format!("k{i}"));
            map.values().append_value(i as i64);
            map.append(valid(i)).unwrap();
        }
        let st = StructArray::from(vec![
            (
                Arc::new(ArrowField::new("a", ArrowType::Int64, true)),
                Arc::new(arrow_array::Int64Array::from_iter((0..n).map(|i| Some(i as i64)))) as ArrayRef,
            ),
            (
                Arc::new(ArrowField::new("b", ArrowType::Utf8, true)),
                Arc::new(StringArray::from_iter((0..n).map(|i| Some(format!("b{i}"))))) as ArrayRef,
            ),
        ]);
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("int", Arc::new(arrow_array::Int64Array::from_iter((0..n).map(|i| valid(i).then_some(i as i64 - 1))))),
            (
                "float",
                Arc::new(arrow_array::Float64Array::from_iter((0..n).map(|i| valid(i).then_some(i as f64 / 2.0)))),
            ),
            ("bool", Arc::new(arrow_array::BooleanArray::from_iter((0..n).map(|i| valid(i).then_some(i % 2 == 0))))),
            ("string", Arc::new(StringArray::from_iter((0..n).map(|i| valid(i).then(|| format!("s{i}")))))),
            ("list", Arc::new(list.finish())),
            ("struct", Arc::new(st)),
            ("map", Arc::new(map.finish())),
            (
                "ts_ms_utc",
                Arc::new(
                    TimestampMillisecondArray::from_iter(
                        (0..n).map(|i| valid(i).then_some(1_700_000_000_123 + i as i64)),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            (
                "ts_us",
                Arc::new(arrow_array::TimestampMicrosecondArray::from_iter(
                    (0..n).map(|i| valid(i).then_some(-1_000_001 + i as i64)),
                )),
            ),
            (
                "ts_us_paris",
                Arc::new(
                    arrow_array::TimestampMicrosecondArray::from_iter((0..n).map(|i| valid(i).then_some(i as i64)))
                        .with_timezone("Europe/Paris"),
                ),
            ),
            ("date", Arc::new(Date32Array::from_iter((0..n).map(|i| valid(i).then_some(19_000 + i as i32))))),
            (
                "decimal",
                Arc::new(
                    Decimal128Array::from_iter((0..n).map(|i| valid(i).then_some(i as i128 * 12_345 - 99)))
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            ("binary", Arc::new(BinaryArray::from_iter((0..n).map(|i| valid(i).then(|| vec![0xff, i as u8]))))),
            (
                "dict",
                Arc::new(DictionaryArray::<Int32Type>::from_iter(
                    (0..n).map(|i| valid(i).then_some(["a", "b"][i % 2])),
                )),
            ),
        ];
        let rb = RecordBatch::try_from_iter(columns).unwrap();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), rb.schema(), None).unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();
        rb
    }

    fn read_raw(path: &Path) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    // Timestamps, dates and decimals came back as strings, binary as text, and a map as a
    // struct of every key any row had.
    #[test]
    fn every_type_comes_back_from_load_and_export_with_its_type_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.parquet"), dir.path().join("out.parquet"));
        let original = typed_file(&input);
        // One row per batch: each field's type is found from every batch's values alike.
        let back = load(&input, "batch_size = 1");
        assert_eq!(back.len(), 4);
        export(&output, "", &back).unwrap();
        let got = read_raw(&output);
        assert_eq!(got.num_rows(), 4);
        for (i, field) in original.schema().fields().iter().enumerate() {
            let want = original.column(i);
            // A dictionary comes back as its values.
            let want = match want.data_type() {
                ArrowType::Dictionary(_, _) => {
                    let d = arrow_array::cast::AsArray::as_any_dictionary(want.as_ref());
                    arrow_select::take::take(d.values().as_ref(), d.keys(), None).unwrap()
                }
                _ => Arc::clone(want),
            };
            let have = got.column_by_name(field.name()).unwrap();
            assert_eq!(have.data_type(), want.data_type(), "the type of `{}`", field.name());
            assert_eq!(have.to_data(), want.to_data(), "the values of `{}`", field.name());
        }
        let rows: Vec<String> = records(&back).iter().map(ToString::to_string).collect();
        assert_eq!(
            rows[1],
            r#"{"int":0,"float":0.5,"bool":false,"string":"s1","list":[1,null],"struct":{"a":1,"b":"b1"},"map":{"k1":1},"ts_ms_utc":"2023-11-14T22:13:20.124Z","ts_us":"1969-12-31T23:59:59.000000","ts_us_paris":"1970-01-01T00:00:00.000001Z","date":"2022-01-09","decimal":"122.46","binary":"/wE=","dict":"b"}"#
        );
    }

    #[test]
    fn csv_types_come_out_of_export_parquet_as_those_types() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("in.csv");
        std::fs::write(
            &csv,
            "id,day,at,local,price,score\n\
             1,2024-05-01,2024-05-01T12:30:00.250Z,01/05/2024 08:00,12.5,0.5\n\
             2,2024-02-29,2024-05-01 14:30:00+02:00,02/05/2024 09:15,-0.05,\n",
        )
        .unwrap();
        let types = "types = { id = \"int\", day = \"date\", at = \"timestamp(ms)\", price = \"decimal(10, 2)\", \
                     score = \"float\", local = { type = \"timestamp\", format = \"%d/%m/%Y %H:%M\", unit = \"s\" } }";
        let (batches, rejected) =
            crate::tests::read_batches(build_step("load_csv", &format!("path = {:?}\n{types}", csv.to_str().unwrap())));
        assert!(rejected.is_empty(), "{rejected:?}");
        let out = dir.path().join("out.parquet");
        export(&out, "", &batches).unwrap();
        let rb = read_raw(&out);
        let types: Vec<String> =
            rb.schema().fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
        assert_eq!(
            types,
            [
                "id: Int64",
                "day: Date32",
                "at: Timestamp(ms, \"UTC\")",
                "local: Timestamp(s)",
                "price: Decimal128(10, 2)",
                "score: Float64"
            ]
        );
        let rows: Vec<String> = records(&load(&out, "")).iter().map(ToString::to_string).collect();
        assert_eq!(
            rows,
            [
                r#"{"id":1,"day":"2024-05-01","at":"2024-05-01T12:30:00.250Z","local":"2024-05-01T08:00:00","price":"12.50","score":0.5}"#,
                r#"{"id":2,"day":"2024-02-29","at":"2024-05-01T12:30:00.000Z","local":"2024-05-02T09:15:00","price":"-0.05","score":null}"#,
            ]
        );
    }

    #[test]
    fn a_glob_of_shards_is_one_stream_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in
            ["shards/b/part-1.parquet", "shards/a/part-0.parquet", "shards/a/part-2.parquet"].iter().enumerate()
        {
            let path = dir.path().join(name);
            export(&path, "", &[Batch::from_records(&[Record::new().with("shard", i as i64)])]).unwrap();
        }
        let step = build_step(
            "load_parquet",
            &format!("path = {:?}", dir.path().join("shards/**/part-*.parquet").to_str().unwrap()),
        );
        assert_eq!(step.info().files_read().len(), 3);
        let (rows, _) = read_source(step);
        assert_eq!(rows, [r#"{"shard":1}"#, r#"{"shard":2}"#, r#"{"shard":0}"#]);
    }

    /// The JSONL lines through load_jsonl → export_parquet → load_parquet → export_jsonl.
    fn jsonl_through_parquet(dir: &Path, lines: &str) -> (std::path::PathBuf, String) {
        let input = dir.join("in.jsonl");
        std::fs::write(&input, lines).unwrap();
        let (batches, _) =
            crate::tests::read_batches(build_step("load_jsonl", &format!("path = {:?}", input.to_str().unwrap())));
        let parquet = dir.join("out.parquet");
        export(&parquet, "", &batches).unwrap();
        let back = load(&parquet, "");
        let mut out = Vec::new();
        for b in &back {
            crate::write_jsonl(b, &mut out);
        }
        (parquet, String::from_utf8(out).unwrap())
    }

    // regression: struct fields were written sorted ({alpha: {b, y}}), and ints past i64
    // were floats on the way in.
    #[test]
    fn field_order_and_exact_numbers_survive_a_parquet_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let lines = concat!(
            r#"{"zeta":1,"alpha":{"y":1,"b":2},"mid":3,"id":18446744073709551615,"n":-5}"#,
            "\n",
            r#"{"zeta":2,"alpha":{"y":3,"b":4},"mid":4,"id":7,"n":9223372036854775807}"#,
            "\n"
        );
        let (parquet, back) = jsonl_through_parquet(dir.path(), lines);
        assert_eq!(back, lines);
        // Other readers see the same order and types, straight from the file.
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&parquet).unwrap()).unwrap().build().unwrap();
        let rb = reader.into_iter().next().unwrap().unwrap();
        let names: Vec<&str> = rb.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid", "id", "n"]);
        let ArrowType::Struct(inner) = rb.schema_ref().field(1).data_type() else { panic!("a struct") };
        let inner: Vec<&str> = inner.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(inner, ["y", "b"]);
        assert_eq!(rb.schema_ref().field(3).data_type(), &ArrowType::UInt64);
        let ids = rb.column(3).as_any().downcast_ref::<UInt64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), [u64::MAX, 7]);
        assert_eq!(rb.schema_ref().field(4).data_type(), &ArrowType::Int64);
    }

    // regression: a 17-digit int next to a float was written as a float and lost digits.
    #[test]
    fn ints_a_float_cannot_hold_next_to_floats_keep_their_digits() {
        let dir = tempfile::tempdir().unwrap();
        let lines = concat!(
            r#"{"x":12345678901234567,"big":100000000000000000000000000000,"s":0.5,"f":1.5}"#,
            "\n",
            r#"{"x":0.5,"big":-9223372036854775809,"s":3,"f":-0.0}"#,
            "\n"
        );
        let (parquet, back) = jsonl_through_parquet(dir.path(), lines);
        // Each value as it came, through JSON text where no Parquet type holds them; but
        // `s`'s int is in a double column, which gives it back as the float it holds.
        assert_eq!(back, lines.replace("\"s\":3,", "\"s\":3.0,"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&parquet).unwrap()).unwrap().build().unwrap();
        let rb = reader.into_iter().next().unwrap().unwrap();
        let types: Vec<&ArrowType> = rb.schema_ref().fields().iter().map(|f| f.data_type()).collect();
        // `s` holds an int a float holds exactly: a float column, as other tools write one.
        assert_eq!(types, [&ArrowType::Utf8, &ArrowType::Utf8, &ArrowType::Float64, &ArrowType::Float64]);
        // Written into a float column set by an earlier batch, such an int is an error.
        let first = Batch::from_records(&[Record::new().with("x", 0.5)]);
        let late = Batch::from_records(&[Record::new().with("x", 12_345_678_901_234_567i64)]);
        let path = dir.path().join("late.parquet");
        let err = export(&path, "", &[first, late]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot write {}: field `x`: 12345678901234567 cannot be written exactly in the Parquet file's float column",
                path.display()
            )
        );
    }

    #[test]
    fn unsigned_64_bit_columns_are_read_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u64.parquet");
        let u64s: ArrayRef = Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(1 << 63), Some(5)]));
        let rb = RecordBatch::try_from_iter([("h", u64s)]).unwrap();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), rb.schema(), None).unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();
        let back = load(&path, "");
        assert_eq!(back[0].schema().to_string(), "{h: uint}");
        let rows: Vec<String> = records(&back).iter().map(ToString::to_string).collect();
        assert_eq!(
            rows,
            [r#"{"h":18446744073709551615}"#, r#"{"h":null}"#, r#"{"h":9223372036854775808}"#, r#"{"h":5}"#]
        );
        // And written back as UInt64.
        let again = dir.path().join("again.parquet");
        export(&again, "", &back).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&again).unwrap()).unwrap().build().unwrap();
        let rb = reader.into_iter().next().unwrap().unwrap();
        assert_eq!(rb.schema_ref().field(0).data_type(), &ArrowType::UInt64);
        assert_eq!(rb.column(0).as_any().downcast_ref::<UInt64Array>().unwrap().value(0), u64::MAX);
    }

    // Parquet holds NaN and the infinities natively; in a field written as JSON text they
    // become null, and are counted.
    #[test]
    fn nan_and_infinities_are_kept_in_float_columns_and_counted_in_json_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.parquet");
        let recs = vec![
            Record::new().with("f", f64::NAN).with("mixed", f64::INFINITY),
            Record::new().with("f", f64::NEG_INFINITY).with("mixed", "x"),
        ];
        let Step::Sink(mut out) = build_step("export_parquet", &format!("path = {:?}", path.to_str().unwrap())) else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        out.write(&Batch::from_records(&recs), &mut ctx).unwrap();
        out.commit(&mut ctx).unwrap();
        assert_eq!(ctx.take_added_stats(), [("non_finite_as_null".to_owned(), Value::Int(1))]);
        let back = records(&load(&path, ""));
        assert!(matches!(back[0].get("f"), Some(Value::Float(x)) if x.is_nan()));
        assert_eq!(back[1].get("f"), Some(&Value::Float(f64::NEG_INFINITY)));
        assert_eq!(back[0].get("mixed"), Some(&Value::Null));
    }

    /// A Parquet file of one row whose column `deep` is a list nested `depth` deep around
    /// an integer, written without the Arrow schema (whose reader has a limit of its own),
    /// as another writer may.
    fn write_nested_lists(path: &Path, depth: usize) {
        let path = path.to_path_buf();
        // Arrow and the parquet crate build and write such a schema by recursion too.
        let write = move || {
            let mut array: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![1i64]));
            for _ in 0..depth {
                let field = Arc::new(ArrowField::new("item", array.data_type().clone(), true));
                array = Arc::new(ListArray::new(field, OffsetBuffer::from_lengths([1]), array, None));
            }
            let rb = RecordBatch::try_from_iter([("deep", array)]).unwrap();
            let options = parquet::arrow::arrow_writer::ArrowWriterOptions::new().with_skip_arrow_metadata(true);
            let mut w = ArrowWriter::try_new_with_options(File::create(&path).unwrap(), rb.schema(), options).unwrap();
            w.write(&rb).unwrap();
            w.close().unwrap();
        };
        std::thread::Builder::new().stack_size(1 << 30).spawn(write).unwrap().join().unwrap();
    }

    // regression: the parquet crate reads a file's schema by a recursion per level, so a
    // hostile file of 88 KB whose column nests 2,000 lists deep overflowed a stage thread's
    // stack (a SIGSEGV of the whole run) before any row was read.
    #[test]
    fn a_schema_nested_past_the_limit_is_refused_before_the_parquet_crate_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let (deep, deepest) = (dir.path().join("deep.parquet"), dir.path().join("deepest.parquet"));
        write_nested_lists(&deep, 2000);
        // Each list takes two levels of the schema (the list, its repeated group), the
        // integer one more.
        write_nested_lists(&deepest, (crate::parquet_footer::MAX_SCHEMA_DEPTH - 1) / 2);
        // On a thread with a stage thread's stack.
        let (deep2, deepest2) = (deep.clone(), deepest.clone());
        let (err, values) = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let step = build_step("load_parquet", &format!("path = {:?}", deep2.to_str().unwrap()));
                (source_error(step).to_string(), load(&deepest2, ""))
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            err,
            format!("{}: its schema nests 4001 levels deep; Weave reads schemas of at most 128 levels", deep.display())
        );
        let v = records(&values)[0].get("deep").unwrap().clone();
        assert_eq!(v.to_string(), format!("{}1{}", "[".repeat(63), "]".repeat(63)));
    }

    /// A Parquet file of `rows` rows and no columns, as a writer that counts rows apart from
    /// columns makes it (the parquet crate's writer counts them by their columns): its
    /// footer, in the Thrift compact protocol, is a schema of a root alone and one row group
    /// of no column chunks.
    fn rows_without_columns(path: &Path, rows: i64) {
        let zigzag = |v: i64, out: &mut Vec<u8>| {
            let mut u = ((v << 1) ^ (v >> 63)) as u64;
            while u >= 0x80 {
                out.push((u as u8 & 0x7f) | 0x80);
                u >>= 7;
            }
            out.push(u as u8);
        };
        // FileMetaData: 1 version (i32), 2 schema (a list of one struct: 4 name, 5
        // num_children), 3 num_rows (i64), 4 row_groups (a list of one struct: 1 columns,
        // an empty list; 2 total_byte_size; 3 num_rows).
        let mut meta = vec![0x15, 0x02, 0x19, 0x1c, 0x48, 6];
        meta.extend_from_slice(b"schema");
        meta.extend_from_slice(&[0x15, 0x00, 0x00, 0x16]);
        zigzag(rows, &mut meta);
        meta.extend_from_slice(&[0x19, 0x1c, 0x19, 0x0c, 0x16, 0x00, 0x16]);
        zigzag(rows, &mut meta);
        meta.extend_from_slice(&[0x00, 0x00]);
        let mut file = b"PAR1".to_vec();
        file.extend_from_slice(&meta);
        file.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        file.extend_from_slice(b"PAR1");
        std::fs::write(path, file).unwrap();
    }

    // regression: a file of rows without columns loaded as nothing (the batch of records
    // with no fields was dropped as empty, from when a batch could not count them).
    #[test]
    fn rows_without_columns_load_as_records_without_fields_and_are_exported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-columns.parquet");
        rows_without_columns(&path, 5);
        let back = load(&path, "batch_size = 2");
        assert_eq!(back.iter().map(Batch::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(records(&back), vec![Record::new(); 5]);
        let out = dir.path().join("out.jsonl");
        let Step::Sink(mut jsonl) = build_step("export_jsonl", &format!("path = {:?}", out.to_str().unwrap())) else {
            panic!()
        };
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        for b in &back {
            jsonl.write(b, &mut ctx).unwrap();
        }
        jsonl.commit(&mut ctx).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{}\n".repeat(5));
        // The parquet crate's writer cannot count rows without columns: an error, never
        // a file of no rows.
        let err = export(&dir.path().join("out.parquet"), "", &back).unwrap_err();
        assert!(err.to_string().ends_with("records with no fields cannot be written as Parquet rows"), "{err}");
    }
}
