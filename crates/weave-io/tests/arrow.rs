//! The public Arrow conversion of a batch, both ways, as a front end uses it: every kind
//! of value Weave has goes to Arrow and comes back equal, and what Arrow cannot hold is
//! refused with a message that says why.

use std::sync::Arc;

use weave_core::{Batch, Record, Value};
use weave_io::arrow::arrow_array::{ArrayRef, DurationSecondArray, Int64Array, RecordBatch};
use weave_io::arrow::arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema, TimeUnit};
use weave_io::arrow::{ConversionError, from_record_batch, to_record_batch, to_record_batches};

fn value(json: &str) -> Value {
    Value::from_json(json).unwrap_or_else(|e| panic!("bad test JSON {json}: {e}"))
}

/// Records with one field per value kind, each column of one kind (null in some rows).
fn every_kind() -> Vec<Record> {
    let names = ["null", "bool", "int", "uint", "float", "str", "list", "map", "bigint", "mixed"];
    let rows = [
        [
            "null",
            "true",
            "-5",
            "18446744073709551615",
            "0.5",
            "\"héllo\"",
            "[1, 2]",
            r#"{"a": 1, "b": {"c": "x"}}"#,
            "100000000000000000000000",
            "1",
        ],
        [
            "null",
            "false",
            "9223372036854775807",
            "1",
            "-1e300",
            "\"\"",
            "[]",
            r#"{"a": 2, "b": {"c": "y"}}"#,
            "-100000000000000000000000",
            "\"two\"",
        ],
        ["null", "null", "null", "null", "null", "null", "null", "null", "null", r#"[3.5, {"x": null}]"#],
    ];
    rows.iter().map(|row| names.iter().zip(row).fold(Record::new(), |r, (n, v)| r.with(*n, value(v)))).collect()
}

#[test]
fn every_value_kind_goes_to_arrow_and_back_unchanged() {
    let records = every_kind();
    let batch = Batch::from_records(&records);
    let rb = to_record_batch(&batch).unwrap();
    assert_eq!(rb.num_rows(), 3);
    let schema = rb.schema();
    let type_of = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
    assert_eq!(type_of("null"), DataType::Null);
    assert_eq!(type_of("bool"), DataType::Boolean);
    assert_eq!(type_of("int"), DataType::Int64);
    assert_eq!(type_of("uint"), DataType::UInt64);
    assert_eq!(type_of("float"), DataType::Float64);
    assert_eq!(type_of("str"), DataType::Utf8);
    assert!(matches!(type_of("list"), DataType::List(_)), "{:?}", type_of("list"));
    assert!(matches!(type_of("map"), DataType::Struct(_)), "{:?}", type_of("map"));
    // What no one Arrow type holds exactly is JSON text, marked so that it reads back.
    for json in ["bigint", "mixed"] {
        assert_eq!(type_of(json), DataType::Utf8);
        let field = schema.field_with_name(json).unwrap();
        assert_eq!(field.metadata().get("weave:json").map(String::as_str), Some("true"), "{json}");
    }
    let back = from_record_batch(&rb).unwrap();
    assert_eq!(back.to_records(), records);
}

#[test]
fn timestamps_dates_decimals_bytes_and_key_value_maps_go_to_arrow_and_back() {
    use weave_core::{Decimal, Map, TimeUnit as Unit, Timestamp};
    let zone = Some(Arc::new("Europe/Paris".to_owned()));
    let mut kv = Map::from([("k1", 1i64), ("k2", 2)]);
    kv.set_key_value(true);
    let records: Vec<Record> = (0..2i64)
        .map(|i| {
            Record::new()
                .with("at", Value::Timestamp(Timestamp::new(1_700_000_000_000 + i, Unit::Millisecond, zone.clone())))
                .with("local", Value::Timestamp(Timestamp::new(-i, Unit::Nanosecond, None)))
                .with("day", Value::Date(19_000 + i as i32))
                .with("price", Value::Decimal(Decimal::new(1250 * i128::from(i), 10, 2).unwrap()))
                .with("raw", Value::Binary(vec![0, 255, i as u8]))
                .with("counts", if i == 0 { Value::Map(kv.clone()) } else { Value::Null })
        })
        .collect();
    let rb = to_record_batch(&Batch::from_records(&records)).unwrap();
    let types: Vec<String> = rb.schema().fields().iter().map(|f| f.data_type().to_string()).collect();
    assert_eq!(
        types,
        [
            "Timestamp(ms, \"Europe/Paris\")",
            "Timestamp(ns)",
            "Date32",
            "Decimal128(10, 2)",
            "Binary",
            "Map(\"entries\": non-null Struct(\"key\": non-null Utf8, \"value\": Int64), unsorted)"
        ]
    );
    let back = from_record_batch(&rb).unwrap().to_records();
    assert_eq!(back, records);
    assert!(matches!(back[0].get("counts"), Some(Value::Map(m)) if m.is_key_value()), "still a map");
}

#[test]
fn non_finite_floats_of_a_float_column_go_to_arrow_and_back() {
    let records: Vec<Record> =
        [f64::INFINITY, f64::NEG_INFINITY, 0.0].iter().map(|&x| Record::new().with("x", Value::Float(x))).collect();
    let back = from_record_batch(&to_record_batch(&Batch::from_records(&records)).unwrap()).unwrap();
    assert_eq!(back.to_records(), records);
    let nan = Batch::from_records(&[Record::new().with("x", Value::Float(f64::NAN))]);
    let back = from_record_batch(&to_record_batch(&nan).unwrap()).unwrap();
    assert!(matches!(back.to_records()[0].get("x"), Some(Value::Float(x)) if x.is_nan()));
}

#[test]
fn a_record_batch_made_by_arrow_reads_as_a_batch() {
    let schema = Arc::new(ArrowSchema::new(vec![ArrowField::new("n", DataType::Int64, true)]));
    let column: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
    let rb = RecordBatch::try_new(schema, vec![column]).unwrap();
    let got: Vec<String> = from_record_batch(&rb).unwrap().to_records().iter().map(ToString::to_string).collect();
    assert_eq!(got, [r#"{"n":1}"#, r#"{"n":null}"#, r#"{"n":3}"#]);
}

#[test]
fn what_arrow_cannot_hold_is_refused_with_why() {
    // Records without fields: Arrow has no rows without columns.
    let empty = Batch::from_records(&[Record::new(), Record::new()]);
    let err = to_record_batch(&empty).unwrap_err();
    assert!(matches!(err, ConversionError::ToArrow(_)), "{err:?}");
    assert!(err.to_string().contains("records with no fields"), "{err}");
    // NaN in a field of mixed types, which Arrow gets as JSON text.
    let mixed = Batch::from_records(&[
        Record::new().with("x", Value::Float(f64::NAN)),
        Record::new().with("x", Value::Str("s".into())),
    ]);
    let err = to_record_batch(&mixed).unwrap_err().to_string();
    assert!(err.contains("field `x`") && err.contains("NaN"), "{err}");
    // An Arrow type Weave does not read, named with its column.
    let schema = Arc::new(ArrowSchema::new(vec![ArrowField::new("d", DataType::Duration(TimeUnit::Second), true)]));
    let column: ArrayRef = Arc::new(DurationSecondArray::from(vec![Some(1)]));
    let err = from_record_batch(&RecordBatch::try_new(schema, vec![column]).unwrap()).unwrap_err();
    assert!(matches!(err, ConversionError::FromArrow(_)), "{err:?}");
    assert!(err.to_string().contains("column `d`"), "{err}");
}

#[test]
fn batches_go_to_arrow_with_one_schema_that_holds_every_batch() {
    let record = |json: &str| match value(json) {
        Value::Map(m) => m.into_iter().fold(Record::new(), |r, (k, v)| r.with(k, v)),
        v => panic!("not an object: {v}"),
    };
    let batch = |rows: &[&str]| Batch::from_records(&rows.iter().map(|r| record(r)).collect::<Vec<_>>());
    // The first batch alone would type `s` as null and lack `late`.
    let batches = [
        batch(&[r#"{"n": 1, "s": null}"#, r#"{"n": 2, "s": null}"#]),
        batch(&[r#"{"n": 3, "s": "x", "late": [1.5]}"#]),
        batch(&[]),
    ];
    let (schema, rbs) = to_record_batches(&batches).unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["n", "s", "late"]);
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert!(rbs.iter().all(|rb| rb.schema() == schema));
    let back: Vec<String> =
        rbs.iter().flat_map(|rb| from_record_batch(rb).unwrap().to_records()).map(|r| r.to_string()).collect();
    assert_eq!(
        back,
        [r#"{"n":1,"s":null,"late":null}"#, r#"{"n":2,"s":null,"late":null}"#, r#"{"n":3,"s":"x","late":[1.5]}"#]
    );
    // No batches: a schema of no fields.
    let (schema, rbs) = to_record_batches(&[]).unwrap();
    assert!(schema.fields().is_empty() && rbs.is_empty());
}
