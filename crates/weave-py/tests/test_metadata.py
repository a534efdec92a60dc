"""The key-value metadata of a Parquet input kept on export (issue 18, item 4): a Hugging
Face dataset comes back with its `features`, a pandas DataFrame with its index, and a
step that drops a column gives a file whose metadata still loads in both."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import pyarrow.parquet as pq

import weave_pipelines as wp

# `datasets` reads a local Parquet file with its packaged builder: nothing to download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def through_weave(folder: Path, source: Path, middle: Optional[Dict[str, Any]] = None) -> Path:
    """`source` loaded, passed through a `fields` step (`middle`: its keys), and exported as
    Parquet by a run, in batches of 2; the output's path."""
    out = folder / "out.parquet"
    steps: List[Dict[str, Any]] = [{"id": "load", "kind": "load_parquet", "path": str(source), "batch_size": 2}]
    if middle is not None:
        steps.append({"id": "shape", "kind": "fields", **middle})
    steps.append({"id": "export", "kind": "export_parquet", "path": str(out)})
    wp.Pipeline.from_dict({"pipeline": {"name": "metadata"}, "step": steps}, path=folder / "pipeline.toml").run(
        progress=False
    )
    return out


def hf_dataset() -> Any:
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "neutral", "pos"]),
            "tokens": datasets.Sequence(datasets.Value("int64")),
            "score": datasets.Value("float64"),
            "n": datasets.Value("int64"),
            "at": datasets.Value("timestamp[us]"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "text": ["good", "bad", None, "fine"],
            "label": [2, 0, 1, 1],
            "tokens": [[1, 2], [], [3], [4, 5, 6]],
            "score": [0.5, -1.0, None, 2.25],
            "n": [1, 2, 3, None],
            "at": [
                datetime.datetime(2024, 5, 1, 12, 30),
                None,
                datetime.datetime(1999, 12, 31, 23, 59, 59, 999999),
                datetime.datetime(2000, 1, 1),
            ],
        },
        features=features,
    )


def test_a_hugging_face_dataset_comes_back_with_its_features_and_values(tmp_path: Path) -> None:
    import datasets

    ds = hf_dataset()
    source = tmp_path / "in.parquet"
    ds.to_parquet(str(source))
    assert b"huggingface" in (pq.read_schema(source).metadata or {})
    # Every column kept, in its order, through a `fields` step.
    out = through_weave(tmp_path, source, {"select": list(ds.features)})
    back = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "hf"))
    assert back.features == ds.features
    assert back.to_list() == ds.to_list()
    loaded = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf2"))
    assert loaded.features == ds.features
    assert loaded.to_list() == ds.to_list()
    assert loaded.features["label"].int2str(loaded[0]["label"]) == "pos"


def test_a_step_that_drops_a_column_gives_a_file_whose_metadata_still_loads(tmp_path: Path) -> None:
    import datasets
    import pandas as pd

    ds = hf_dataset()
    source = tmp_path / "in.parquet"
    ds.to_parquet(str(source))
    out = through_weave(tmp_path, source, {"drop": ["tokens"], "rename": {"n": "count"}})
    features = json.loads(pq.read_schema(out).metadata[b"huggingface"])["info"]["features"]
    # The features of the columns left as they were, and none of the columns gone or renamed.
    assert list(features) == ["text", "label", "score", "at"]
    back = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "hf"))
    want = ds.remove_columns(["tokens"]).rename_column("n", "count")
    assert back.features == want.features
    assert back.to_list() == want.to_list()
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["text", "label", "score", "count", "at"]
    assert frame["label"].tolist() == [2, 0, 1, 1]


def pandas_frame() -> Any:
    import pandas as pd

    return pd.DataFrame(
        {"a": [1, 2, 3], "b": ["x", "y", None], "c": [0.5, 1.5, 2.5]},
        index=pd.Index(["r1", "r2", "r3"], name="key"),
    )


def test_a_pandas_frame_comes_back_with_its_named_index(tmp_path: Path) -> None:
    import pandas as pd

    df = pandas_frame()
    source = tmp_path / "in.parquet"
    df.to_parquet(source)
    back = pd.read_parquet(through_weave(tmp_path, source))
    pd.testing.assert_frame_equal(back, df)
    assert back.index.name == "key"


def test_a_pandas_frame_that_lost_a_column_keeps_its_index_and_one_that_lost_its_index_loads(
    tmp_path: Path,
) -> None:
    import pandas as pd

    df = pandas_frame()
    source = tmp_path / "in.parquet"
    df.to_parquet(source)
    back = pd.read_parquet(through_weave(tmp_path, source, {"drop": ["b"]}))
    pd.testing.assert_frame_equal(back, df.drop(columns=["b"]))
    meta = json.loads(pq.read_schema(tmp_path / "out.parquet").metadata[b"pandas"])
    assert [c["name"] for c in meta["columns"]] == ["a", "c", "key"]

    # The index column dropped: the metadata no longer names it, and the frame has a
    # default index.
    back = pd.read_parquet(through_weave(tmp_path, source, {"drop": ["key"]}))
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True))
    meta = json.loads(pq.read_schema(tmp_path / "out.parquet").metadata[b"pandas"])
    assert meta["index_columns"] == []


def test_metadata_of_other_writers_is_kept_when_the_columns_are_and_dropped_when_not(tmp_path: Path) -> None:
    import pyarrow as pa

    table = pa.table({"a": [1, 2], "b": ["x", "y"]}).replace_schema_metadata({"origin": "survey 2024"})
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    kept = pq.read_schema(through_weave(tmp_path, source)).metadata or {}
    assert kept.get(b"origin") == b"survey 2024"
    dropped = pq.read_schema(through_weave(tmp_path, source, {"drop": ["b"]})).metadata or {}
    assert b"origin" not in dropped


def test_hugging_face_datasets_reads_a_file_of_every_type_back_with_the_same_features_and_values(
    tmp_path: Path,
) -> None:
    """A file that pyarrow wrote (no `huggingface` key) of every type `datasets` has, through
    Weave: `datasets` gives it the same features and values as the input (maps aside:
    `datasets` has no map type)."""
    import decimal

    import datasets
    import pyarrow as pa

    utc = datetime.timezone.utc
    table = pa.table(
        {
            "int": pa.array([1, None, -3], pa.int64()),
            "float": pa.array([0.5, None, -1e300], pa.float64()),
            "bool": pa.array([True, None, False]),
            "string": pa.array(["a", "é", None]),
            "list": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
            "struct": pa.array(
                [{"x": 1, "y": "a"}, None, {"x": None, "y": "c"}], pa.struct([("x", pa.int64()), ("y", pa.string())])
            ),
            "ts_ms": pa.array(
                [datetime.datetime(2024, 5, 1, 12, 30, 0, 250000), None, datetime.datetime(1969, 12, 31)],
                pa.timestamp("ms"),
            ),
            "ts_us_utc": pa.array(
                [datetime.datetime(2024, 5, 1, tzinfo=utc), None, datetime.datetime(1900, 1, 1, tzinfo=utc)],
                pa.timestamp("us", tz="UTC"),
            ),
            "date": pa.array([datetime.date(2024, 2, 29), None, datetime.date(1, 1, 1)], pa.date32()),
            "decimal": pa.array([decimal.Decimal("12.50"), None, decimal.Decimal("-0.05")], pa.decimal128(10, 2)),
            "binary": pa.array([b"\x89PNG", None, b""], pa.binary()),
            "dict": pa.array(["train", None, "test"]).dictionary_encode(),
        }
    )
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    out = through_weave(tmp_path, source)
    before = datasets.Dataset.from_parquet(str(source), cache_dir=str(tmp_path / "hf"))
    after = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / "hf2"))
    assert after.features == before.features
    assert after.to_list() == before.to_list()
