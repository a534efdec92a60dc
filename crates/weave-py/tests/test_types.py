"""Parquet files written by pyarrow, pandas and polars, with every type they write, through
load_parquet -> export_parquet: the output has the input's schema and values."""

from __future__ import annotations

import datetime
import decimal
from pathlib import Path
from typing import Any, Dict

import pyarrow as pa
import pyarrow.parquet as pq

import weave_pipelines as wp


def through_weave(folder: Path, source: Path, batch_size: int = 2) -> Path:
    """`source` loaded and exported as Parquet by a run (in batches of `batch_size`, so
    that types are found over several batches); the output's path."""
    out = folder / "out.parquet"
    wp.Pipeline.from_dict(
        {
            "pipeline": {"name": "types"},
            "step": [
                {"id": "load", "kind": "load_parquet", "path": str(source), "batch_size": batch_size},
                {"id": "export", "kind": "export_parquet", "path": str(out)},
            ],
        },
        path=folder / "pipeline.toml",
    ).run(progress=False)
    return out


def decoded(table: pa.Table) -> pa.Table:
    """`table` with its dictionary columns as their values (how Weave writes them)."""
    columns = []
    for column in table.columns:
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def test_a_pyarrow_file_of_every_type_comes_back_with_its_schema_and_values(tmp_path: Path) -> None:
    utc = datetime.timezone.utc
    table = pa.table(
        {
            "int": pa.array([1, None, -3, 4], pa.int64()),
            "float": pa.array([0.5, 2.0, None, -1e300], pa.float64()),
            "bool": pa.array([True, None, False, True]),
            "string": pa.array(["a", "é", None, ""]),
            "list": pa.array([[1, 2], [], None, [None]], pa.list_(pa.int64())),
            "struct": pa.array(
                [{"x": 1, "y": "a"}, None, {"x": None, "y": "c"}, {"x": 4, "y": None}],
                pa.struct([("x", pa.int64()), ("y", pa.string())]),
            ),
            # Each row its own keys: a map, not a struct of every key.
            "map": pa.array([[("k1", 1)], [("k2", 2), ("k3", None)], None, []], pa.map_(pa.string(), pa.int64())),
            "ts_ms": pa.array(
                [datetime.datetime(2024, 5, 1, 12, 30, 0, 250000), None, datetime.datetime(1969, 12, 31, 23, 59, 59), datetime.datetime(2262, 1, 1)],
                pa.timestamp("ms"),
            ),
            "ts_us_utc": pa.array(
                [datetime.datetime(2024, 5, 1, 12, 30, 0, 1, tzinfo=utc), None, datetime.datetime(2000, 1, 1, tzinfo=utc), datetime.datetime(1900, 1, 1, tzinfo=utc)],
                pa.timestamp("us", tz="UTC"),
            ),
            "ts_ns_paris": pa.array([1, 2, None, 1_700_000_000_000_000_123], pa.timestamp("ns", tz="Europe/Paris")),
            "date": pa.array([datetime.date(2024, 2, 29), None, datetime.date(1, 1, 1), datetime.date(9999, 12, 31)], pa.date32()),
            "decimal": pa.array(
                [decimal.Decimal("12.50"), decimal.Decimal("-0.05"), None, decimal.Decimal("99999999.99")],
                pa.decimal128(10, 2),
            ),
            "binary": pa.array([b"\x89PNG", None, b"", b"\x00\xff"], pa.binary()),
            "dict": pa.array(["train", "test", None, "train"]).dictionary_encode(),
        }
    )
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    back = pq.read_table(through_weave(tmp_path, source))
    expected = decoded(table)
    assert back.schema.names == expected.schema.names
    for field, want in zip(back.schema, expected.schema):
        assert field.type == want.type, field.name
    assert back.to_pylist() == expected.to_pylist()


def test_a_pandas_file_comes_back_with_its_dtypes_and_values(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame(
        {
            "n": [1, 2, 3],
            "x": [0.5, float("nan"), 2.0],
            "ok": [True, False, True],
            "text": ["a", None, "c"],
            "at": pd.to_datetime(["2024-05-01 12:30:00.123456789", "1999-12-31 00:00:00.000000001", None]),
            "at_utc": pd.to_datetime(["2024-05-01 12:30:00", "2000-01-01 00:00:00", "2001-01-01 00:00:00"]).tz_localize("UTC"),
            "day": [datetime.date(2024, 5, 1), None, datetime.date(2000, 1, 1)],
            "price": [decimal.Decimal("1.10"), decimal.Decimal("-2.25"), None],
            "split": pd.Categorical(["train", "test", "train"]),
        }
    )
    source = tmp_path / "in.parquet"
    df.to_parquet(source, index=False)
    back = pd.read_parquet(through_weave(tmp_path, source))
    want = df.assign(split=df["split"].astype(str))
    assert list(back.columns) == list(want.columns)
    for name in want.columns:
        assert str(back[name].dtype) == str(want[name].dtype), name
    pd.testing.assert_frame_equal(back, want)


def test_a_polars_file_comes_back_with_its_schema_and_values(tmp_path: Path) -> None:
    import polars as pl

    df = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "at": [datetime.datetime(2024, 5, 1, 12, 30), None, datetime.datetime(1970, 1, 1)],
            "day": [datetime.date(2024, 5, 1), datetime.date(2000, 1, 1), None],
            "price": [decimal.Decimal("1.10"), None, decimal.Decimal("-3.00")],
            "tags": [["a"], [], None],
            "point": [{"x": 1.0, "y": 2.0}, None, {"x": -1.0, "y": 0.0}],
        },
        schema_overrides={"at": pl.Datetime("us", "UTC"), "price": pl.Decimal(10, 2)},
    )
    source = tmp_path / "in.parquet"
    df.write_parquet(source)
    back = pl.read_parquet(through_weave(tmp_path, source))
    assert back.schema == df.schema
    assert back.to_dicts() == df.to_dicts()


def test_csv_types_come_out_of_export_parquet_as_those_types(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(
        "id,day,at,price\n1,2024-05-01,2024-05-01T12:30:00Z,12.5\n2,,2024-05-01 14:30:00+02:00,-0.05\n"
    )
    wp.Pipeline.from_dict(
        {
            "pipeline": {"name": "csv"},
            "step": [
                {
                    "id": "load",
                    "kind": "load_csv",
                    "path": "in.csv",
                    "types": {"id": "int", "day": "date", "at": "timestamp(ms)", "price": "decimal(6, 2)"},
                },
                {"id": "export", "kind": "export_parquet", "path": "out.parquet"},
            ],
        },
        path=tmp_path / "pipeline.toml",
    ).run(progress=False)
    back = pq.read_table(tmp_path / "out.parquet")
    assert back.schema.types == [pa.int64(), pa.date32(), pa.timestamp("ms", tz="UTC"), pa.decimal128(6, 2)]
    rows: Any = back.to_pylist()
    assert rows[1] == {
        "id": 2,
        "day": None,
        "at": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc),
        "price": decimal.Decimal("-0.05"),
    }


def test_a_python_step_gets_datetime_date_decimal_and_bytes_and_may_return_them(tmp_path: Path) -> None:
    seen = []

    @wp.step("look_at_types")
    def look(record: Dict[str, Any]) -> Dict[str, Any]:
        seen.append({k: type(v).__name__ for k, v in record.items()})
        record["next_day"] = record["day"] + datetime.timedelta(days=1)
        return record

    utc = datetime.timezone.utc
    table = pa.table(
        {
            "at": pa.array([datetime.datetime(2024, 5, 1, 12, 30, 0, 1, tzinfo=utc)], pa.timestamp("us", tz="UTC")),
            "local": pa.array([datetime.datetime(2024, 5, 1, 12, 30)], pa.timestamp("us")),
            "day": pa.array([datetime.date(2024, 2, 29)], pa.date32()),
            "price": pa.array([decimal.Decimal("-0.05")], pa.decimal128(4, 2)),
            "raw": pa.array([b"\x00\xff"], pa.binary()),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    wp.Pipeline.from_dict(
        {
            "pipeline": {"name": "py"},
            "step": [
                {"id": "load", "kind": "load_parquet", "path": "in.parquet"},
                {"id": "py", "kind": "look_at_types"},
                {"id": "export", "kind": "export_parquet", "path": "out.parquet"},
            ],
        },
        path=tmp_path / "pipeline.toml",
    ).run(progress=False)
    assert seen == [{"at": "datetime", "local": "datetime", "day": "date", "price": "Decimal", "raw": "bytes"}]
    back = pq.read_table(tmp_path / "out.parquet")
    assert back.schema.types == [
        pa.timestamp("us", tz="UTC"),
        pa.timestamp("us"),
        pa.date32(),
        # A Python Decimal carries no precision: a decimal a step returns has the digits
        # it holds (here 2), the scale its exponent gives.
        pa.decimal128(2, 2),
        pa.binary(),
        pa.date32(),
    ]
    assert back.to_pylist()[0]["next_day"] == datetime.date(2024, 3, 1)
    assert back.drop_columns(["next_day"]).to_pylist() == table.to_pylist()
