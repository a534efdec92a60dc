//! The key-value metadata of a Parquet input, carried to the Parquet files the pipeline
//! writes from it: Hugging Face `datasets`' `huggingface` key (the dataset's `features`:
//! class labels, sequences, value types), pandas' `pandas` key (the index, the columns'
//! pandas types) and any other key.
//!
//! It travels beside the data, not in it: each `load_parquet` step names its first file
//! on a board the pipeline's steps share ([`BuildContext::shared`]), and an
//! `export_parquet` step reads the metadata of the file of the `load_parquet` step
//! upstream of it ([`BuildContext::upstream`]) when it starts its file (again when a wider
//! schema restarts it, so that it describes the columns written), and writes it both as
//! the file's key-value metadata and in the Arrow schema stored there (pyarrow, and so
//! pandas and `datasets`, read a file's metadata from the stored Arrow schema when there
//! is one; the parquet crate's reader merges the two). So batches, and the
//! cache's encoding of them, carry nothing more, and a loader taken from the cache still
//! passes its file's metadata on. A dataset's files share their metadata (the files of a
//! glob are one dataset's shards), so the first file speaks for them all.
//!
//! The metadata describes columns, and a pipeline may drop, rename, add or retype them, so
//! the exporter compares the columns it writes with the input's (names and Arrow types,
//! nested field names aside):
//! - the same columns, in the same order: every key is kept as it was;
//! - otherwise `huggingface` keeps the features of the columns written under their input
//!   name and type, in the order written (the others are dropped: `datasets` makes a
//!   column without a feature a plain `Value` of its Arrow type), and `pandas` keeps the
//!   column descriptions and index columns of those columns (an index column no longer
//!   written is no longer the index); either key is dropped when none of its columns is
//!   left; every other key is dropped, since what it says of the columns is not known.
//!
//! Kept metadata thus always describes the file written, or is not there. The Parquet
//! writer's own `ARROW:schema` key is never copied: the writer writes the output's.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow_schema::{DataType, Schema as ArrowSchema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use weave_core::{BuildContext, Map, Params, Value};

/// The key the board is shared under.
const BOARD: &str = "parquet.inputs";

/// The key of the Arrow schema the Parquet writer writes.
const ARROW_SCHEMA: &str = "ARROW:schema";

/// The first file of each `load_parquet` step of a pipeline, by step id.
#[derive(Debug, Default)]
struct Inputs(Mutex<BTreeMap<String, PathBuf>>);

/// Puts the first of a `load_parquet` step's files on its pipeline's board.
pub(crate) fn register(p: &Params, paths: &[PathBuf]) {
    let (Some(id), Some(first)) = (p.step_id(), paths.first()) else { return };
    let board = p.context().shared(BOARD, Inputs::default);
    board.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.to_owned(), first.clone());
}

/// Where an `export_parquet` step finds the metadata to keep: its pipeline, and its id.
#[derive(Debug)]
pub(crate) struct Origin {
    context: Arc<BuildContext>,
    step: String,
}

impl Origin {
    /// The origin of the step `p` builds.
    pub(crate) fn of(p: &Params) -> Option<Origin> {
        Some(Origin { context: p.context(), step: p.step_id()?.to_owned() })
    }

    /// The metadata a file of columns `written` carries: the metadata of the input of the
    /// `load_parquet` step upstream, adjusted to the columns (see the module's
    /// documentation). Nothing when no `load_parquet` step is upstream, or when several
    /// are whose files differ in columns or metadata (which one's would describe the
    /// output is not known).
    pub(crate) fn carried(&self, written: &ArrowSchema) -> Vec<KeyValue> {
        let files: Vec<PathBuf> = {
            let board = self.context.shared(BOARD, Inputs::default);
            let board = board.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.context.upstream(&self.step).iter().filter_map(|s| board.get(s).cloned()).collect()
        };
        let mut inputs = Vec::new();
        for f in &files {
            match read(f) {
                Ok(meta) => inputs.push(meta),
                Err(e) => {
                    // The loader read the file; one gone since cannot be described.
                    log::warn!("{}: cannot read its Parquet metadata to keep it: {e}", f.display());
                    return Vec::new();
                }
            }
        }
        let Some((first, rest)) = inputs.split_first() else { return Vec::new() };
        if rest.iter().any(|m| m != first) {
            log::info!(
                "step \"{}\": its Parquet inputs differ in columns or metadata, so none of their metadata is kept",
                self.step
            );
            return Vec::new();
        }
        adjusted(&first.0, &first.1, written)
    }
}

/// A file's key-value metadata (the Arrow schema's aside) and its columns.
fn read(path: &std::path::Path) -> Result<(Vec<(String, String)>, ArrowSchema), String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| e.to_string())?;
    // The file's key-value metadata in the order written, then the keys the Arrow schema
    // stored in it holds besides (what the parquet crate's writer keeps of a schema's
    // metadata), as the Arrow reader merges them.
    let mut kv: Vec<(String, String)> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key != ARROW_SCHEMA)
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
        .collect();
    let mut more: Vec<(&String, &String)> =
        builder.schema().metadata().iter().filter(|(k, _)| !kv.iter().any(|(have, _)| have == *k)).collect();
    more.sort();
    kv.extend(more.into_iter().map(|(k, v)| (k.clone(), v.clone())));
    let columns = ArrowSchema::new(builder.schema().fields().clone());
    Ok((kv, columns))
}

/// `kv`, the metadata of a file of columns `input`, for a file of columns `written`.
fn adjusted(kv: &[(String, String)], input: &ArrowSchema, written: &ArrowSchema) -> Vec<KeyValue> {
    // A column written as it was read: the same name and Arrow type (nested fields'
    // names aside: `item` and `element` name the same list; large and view forms aside:
    // Weave writes strings, bytes and lists in their plain forms, which hold the same).
    let same = |name: &str| {
        let (Ok(a), Ok(b)) = (input.field_with_name(name), written.field_with_name(name)) else { return false };
        plain(a.data_type()).equals_datatype(&plain(b.data_type()))
    };
    let all_same = input.fields().len() == written.fields().len()
        && input.fields().iter().zip(written.fields()).all(|(a, b)| a.name() == b.name() && same(a.name()));
    let kept: Vec<&str> = written.fields().iter().map(|f| f.name().as_str()).filter(|n| same(n)).collect();
    let mut out = Vec::new();
    for (key, value) in kv {
        let value = if all_same {
            Some(value.clone())
        } else {
            match key.as_str() {
                "huggingface" => huggingface(value, &kept),
                "pandas" => pandas(value, &kept),
                _ => None,
            }
        };
        match value {
            Some(v) => out.push(KeyValue::new(key.clone(), v)),
            None => log::info!("the Parquet metadata key `{key}` is not kept: the columns it describes changed"),
        }
    }
    out
}

/// `t` with its large and view forms (strings, bytes, lists, within lists and structs too)
/// as the plain ones.
fn plain(t: &DataType) -> DataType {
    let item = |f: &arrow_schema::FieldRef| Arc::new(f.as_ref().clone().with_data_type(plain(f.data_type())));
    match t {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            DataType::List(item(f))
        }
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(item).collect()),
        other => other.clone(),
    }
}

/// `datasets`' metadata (`{"info": {"features": {COLUMN: FEATURE, ...}}}`) with the
/// features of the `kept` columns only, in that order; `None` when none is left, or when
/// it is not that shape.
fn huggingface(value: &str, kept: &[&str]) -> Option<String> {
    let Ok(Value::Map(mut top)) = Value::from_json(value) else { return None };
    let Some(Value::Map(info)) = top.get_mut("info") else { return None };
    let Some(Value::Map(features)) = info.get("features") else { return None };
    let mut left = Map::new();
    for name in kept {
        if let Some(f) = features.get(name) {
            left.insert(*name, f.clone());
        }
    }
    if left.is_empty() {
        return None;
    }
    info.insert("features", Value::Map(left));
    Some(Value::Map(top).to_string())
}

/// pandas' metadata (`{"index_columns": [...], "columns": [{"name", "field_name", ...}],
/// ...}`) with the descriptions and index columns of the `kept` columns only (a range
/// index, which is no column, stays); `None` when no column is left, or when it is not
/// that shape.
fn pandas(value: &str, kept: &[&str]) -> Option<String> {
    let Ok(Value::Map(mut top)) = Value::from_json(value) else { return None };
    let is_kept = |v: &Value| matches!(v, Value::Str(s) if kept.contains(&s.as_str()));
    let Some(Value::List(columns)) = top.get("columns") else { return None };
    let columns: Vec<Value> = columns
        .iter()
        .filter(|c| match c {
            Value::Map(m) => m.get("field_name").or_else(|| m.get("name")).is_some_and(is_kept),
            _ => false,
        })
        .cloned()
        .collect();
    if columns.is_empty() {
        return None;
    }
    top.insert("columns", Value::List(columns));
    if let Some(Value::List(index)) = top.get("index_columns") {
        let index: Vec<Value> = index.iter().filter(|i| !matches!(i, Value::Str(_)) || is_kept(i)).cloned().collect();
        top.insert("index_columns", Value::List(index));
    }
    Some(Value::Map(top).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Field;

    fn schema(fields: &[(&str, DataType)]) -> ArrowSchema {
        ArrowSchema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>())
    }

    const HF: &str = r#"{"info": {"features": {"text": {"dtype": "string", "_type": "Value"}, "label": {"names": ["neg", "pos"], "_type": "ClassLabel"}, "n": {"dtype": "int32", "_type": "Value"}}}}"#;
    const PANDAS: &str = r#"{"index_columns": ["key"], "column_indexes": [], "columns": [{"name": "text", "field_name": "text", "pandas_type": "unicode"}, {"name": "label", "field_name": "label", "pandas_type": "int64"}, {"name": "key", "field_name": "key", "pandas_type": "unicode"}], "pandas_version": "2.2.0"}"#;

    fn kv() -> Vec<(String, String)> {
        vec![("huggingface".into(), HF.into()), ("pandas".into(), PANDAS.into()), ("writer".into(), "someone".into())]
    }

    fn as_pairs(out: Vec<KeyValue>) -> Vec<(String, String)> {
        out.into_iter().map(|kv| (kv.key, kv.value.unwrap_or_default())).collect()
    }

    #[test]
    fn the_same_columns_keep_every_key_as_it_was() {
        let input = schema(&[("text", DataType::Utf8), ("label", DataType::Int64), ("key", DataType::Utf8)]);
        assert_eq!(as_pairs(adjusted(&kv(), &input, &input)), kv());
    }

    #[test]
    fn changed_columns_keep_the_descriptions_of_the_columns_left_as_they_were() {
        let input = schema(&[
            ("text", DataType::Utf8),
            ("label", DataType::Int64),
            ("key", DataType::Utf8),
            ("n", DataType::Int32),
        ]);
        // `key` dropped, `n` widened to int64, `extra` added, `label` before `text`.
        let written = schema(&[
            ("label", DataType::Int64),
            ("text", DataType::Utf8),
            ("n", DataType::Int64),
            ("extra", DataType::Float64),
        ]);
        let out = as_pairs(adjusted(&kv(), &input, &written));
        assert_eq!(
            out,
            [
                (
                    "huggingface".to_owned(),
                    r#"{"info":{"features":{"label":{"names":["neg","pos"],"_type":"ClassLabel"},"text":{"dtype":"string","_type":"Value"}}}}"#.to_owned()
                ),
                (
                    "pandas".to_owned(),
                    r#"{"index_columns":[],"column_indexes":[],"columns":[{"name":"text","field_name":"text","pandas_type":"unicode"},{"name":"label","field_name":"label","pandas_type":"int64"}],"pandas_version":"2.2.0"}"#.to_owned()
                ),
            ]
        );
        // Nothing left to describe: both go.
        let other = schema(&[("other", DataType::Utf8)]);
        assert!(adjusted(&kv(), &input, &other).is_empty());
        // Not the shape they should be: dropped, not copied blindly.
        let bad = vec![("huggingface".to_owned(), "[1]".to_owned()), ("pandas".to_owned(), "{".to_owned())];
        assert!(adjusted(&bad, &input, &written).is_empty());
    }

    #[test]
    fn a_list_is_the_same_column_whatever_its_items_are_named() {
        let item = |name: &str| DataType::List(Arc::new(Field::new(name, DataType::Int64, true)));
        let large = DataType::LargeList(Arc::new(Field::new("element", DataType::LargeUtf8, true)));
        let input = schema(&[("seq", item("element")), ("gone", DataType::Utf8), ("words", large)]);
        let words = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        assert!(plain(input.field(2).data_type()).equals_datatype(&words), "large forms are the plain ones");
        let written = schema(&[("seq", item("item"))]);
        let hf = r#"{"info":{"features":{"seq":{"feature":{"dtype":"int64","_type":"Value"},"_type":"Sequence"},"gone":{"dtype":"string","_type":"Value"}}}}"#;
        let out = as_pairs(adjusted(&[("huggingface".into(), hf.into())], &input, &written));
        assert_eq!(
            out[0].1,
            r#"{"info":{"features":{"seq":{"feature":{"dtype":"int64","_type":"Value"},"_type":"Sequence"}}}}"#
        );
    }

    /// A loader and an exporter of one pipeline, built as a pipeline file builds them: the
    /// exporter's file has the input's metadata.
    #[test]
    fn the_metadata_of_the_loader_upstream_reaches_the_exporters_file() {
        use arrow_array::{Int64Array, RecordBatch};
        use parquet::arrow::ArrowWriter;
        use weave_core::{ConfTable, SourceFile, Step, StepContext};

        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.parquet");
        let rb = RecordBatch::try_from_iter([("a", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
        let schema = Arc::new(
            rb.schema()
                .as_ref()
                .clone()
                .with_metadata(std::collections::HashMap::from([("pandas".to_owned(), PANDAS.to_owned())])),
        );
        let rb = rb.with_schema(schema).unwrap();
        let mut w = ArrowWriter::try_new(File::create(&input).unwrap(), rb.schema(), None).unwrap();
        w.write(&rb).unwrap();
        w.close().unwrap();

        let context = Arc::new(BuildContext::default());
        let build = |id: &str, kind: &str, keys: String| {
            let k = crate::registry().get(kind).cloned().unwrap();
            let p = Params::new(
                ConfTable::parse(&keys).unwrap(),
                SourceFile::new("p.toml", keys.as_str()),
                "step",
                Some(id.into()),
            )
            .with_context(Arc::clone(&context));
            let step = (k.build)(&p).unwrap();
            assert!(!p.finish(&k.all_keys()).has_errors());
            step
        };
        let Step::Source(mut load) = build("load", "load_parquet", format!("path = {:?}", input.to_str().unwrap()))
        else {
            panic!()
        };
        let output = dir.path().join("out.parquet");
        let Step::Sink(mut out) = build("out", "export_parquet", format!("path = {:?}", output.to_str().unwrap()))
        else {
            panic!()
        };
        context.set_inputs([("load".to_owned(), vec![]), ("out".to_owned(), vec!["load".to_owned()])].into());
        let mut ctx = StepContext::new("out", 0, 0, Default::default());
        while let Some(b) = load.next_batch(&mut ctx).unwrap() {
            out.write(&b, &mut ctx).unwrap();
        }
        out.commit(&mut ctx).unwrap();
        let (kv, _) = read(&output).unwrap();
        assert_eq!(kv, [("pandas".to_owned(), PANDAS.to_owned())]);
    }
}
