"""Data in and out of a run without files: run(inputs=..., outputs=...) and
RunResult.table(), from and to pyarrow, pandas, polars, datasets and lists of dicts."""

from __future__ import annotations

import datetime
import json
import math
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pyarrow as pa
import pyarrow.csv
import pytest

import weave_pipelines as wp
from conftest import QUICKSTART, copy_quickstart


def pipeline(folder: Path, **clean: Any) -> wp.Pipeline:
    """load (a loader whose file does not exist: inputs take its place) -> clean (trims
    `text`; `clean` adds keys) -> export."""
    return wp.Pipeline.from_dict(
        {
            "pipeline": {"name": "memory"},
            "step": [
                {"id": "load", "kind": "load_jsonl", "path": "nowhere.jsonl"},
                {"id": "clean", "kind": "clean", "fields": ["text"], "rules": ["trim"], **clean},
                {"id": "export", "kind": "export_jsonl", "path": "out.jsonl"},
            ],
        },
        path=folder / "pipeline.toml",
    )


def through(folder: Path, data: Any, **options: Any) -> pa.Table:
    """`data` run through the pipeline; the cleaned records as a pyarrow Table."""
    result = pipeline(folder).run(inputs={"load": data}, outputs=["clean"], progress=False, **options)
    return result.table("clean")


def rows(df: Any) -> List[Dict[str, Any]]:
    """A pandas frame's rows, NaN and NA as None, numpy values as Python ones."""
    out = []
    for record in df.to_dict("records"):
        row = {}
        for k, v in record.items():
            if hasattr(v, "tolist"):
                v = v.tolist()
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is getattr(__import__("pandas"), "NA"):
                v = None
            row[k] = v
        out.append(row)
    return out


def test_pandas_to_pipeline_to_pyarrow_keeps_types_and_order(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame(
        {
            "n": [3, 1, 2, -7],
            "x": [0.5, float("nan"), 2.0, -1e300],
            "ok": [True, False, True, False],
            "text": ["  c ", None, "a", "é b"],
            "tags": [[1, 2], [], None, [5]],
        }
    )
    table = through(tmp_path, df)
    assert table.schema.names == ["n", "x", "ok", "text", "tags"]
    assert [f.type for f in table.schema] == [pa.int64(), pa.float64(), pa.bool_(), pa.string(), pa.list_(pa.int64())]
    assert table.to_pylist() == [
        {"n": 3, "x": 0.5, "ok": True, "text": "c", "tags": [1, 2]},
        {"n": 1, "x": None, "ok": False, "text": None, "tags": []},
        {"n": 2, "x": 2.0, "ok": True, "text": "a", "tags": None},
        {"n": -7, "x": -1e300, "ok": False, "text": "é b", "tags": [5]},
    ]
    back = table.to_pandas()
    assert [str(t) for t in back.dtypes[:3]] == ["int64", "float64", "bool"]
    expected = rows(df)
    for row, text in zip(expected, ["c", None, "a", "é b"]):
        row["text"] = text
    assert rows(back) == expected


def test_a_pandas_index_is_dropped_unless_it_has_a_name(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"text": ["a", "b"]}, index=[10, 20])
    assert through(tmp_path / "unnamed", df).column_names == ["text"]
    named = df.rename_axis("row")
    table = through(tmp_path / "named", named)
    assert table.to_pylist() == [{"text": "a", "row": 10}, {"text": "b", "row": 20}]


def test_polars_in_and_out(tmp_path: Path) -> None:
    import polars as pl

    df = pl.DataFrame({"id": [1, 2, 3], "text": [" x", None, "z "], "tags": [["a"], ["b", "c"], []]})
    out = pl.from_arrow(through(tmp_path, df))
    assert isinstance(out, pl.DataFrame)
    assert out.schema == pl.Schema({"id": pl.Int64, "text": pl.String, "tags": pl.List(pl.String)})
    assert out.to_dicts() == [
        {"id": 1, "text": "x", "tags": ["a"]},
        {"id": 2, "text": None, "tags": ["b", "c"]},
        {"id": 3, "text": "z", "tags": []},
    ]


def test_a_datasets_dataset_goes_in_in_its_row_order_and_loads_the_output(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"text": [" a", "b ", "c", "d"], "label": [0, 1, 0, 1]}).select([3, 1, 0])
    table = through(tmp_path, ds)
    out = datasets.Dataset(table)
    assert out.num_rows == 3
    assert out["text"][:] == ["d", "b", "a"] and out["label"][:] == [1, 1, 0]
    assert out.features["label"].dtype == "int64"


def test_a_list_of_dicts_and_arrow_readers_and_record_batches(tmp_path: Path) -> None:
    records = [{"text": " q", "n": 1}, {"text": "r"}]
    assert through(tmp_path / "dicts", records).to_pylist() == [{"text": "q", "n": 1}, {"text": "r", "n": None}]
    # Without a cache, the input is handed over unhashed: the same records.
    assert through(tmp_path / "nocache", records, no_cache=True).to_pylist() == [
        {"text": "q", "n": 1},
        {"text": "r", "n": None},
    ]
    batches = [pa.record_batch({"text": [f" {i}", "x"]}) for i in range(3)]
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, batches)
    assert through(tmp_path / "reader", reader)["text"].to_pylist() == ["0", "x", "1", "x", "2", "x"]
    assert through(tmp_path / "batch", batches[1])["text"].to_pylist() == ["1", "x"]
    # A reader over a Python generator, read while the run goes (no cache): its callbacks
    # take the interpreter's lock, which the waiting run() has released.
    generated = pa.RecordBatchReader.from_batches(batches[0].schema, (b for b in batches))
    assert through(tmp_path / "generated", generated, no_cache=True)["text"].to_pylist() == ["0", "x", "1", "x", "2", "x"]
    # The output read as a stream, and as one record batch, through the capsule protocol.
    result = pipeline(tmp_path / "stream").run(inputs={"load": reader}, outputs=["clean"], progress=False)
    assert result.tables["clean"].num_rows == 0  # the reader was used up above
    result = pipeline(tmp_path / "stream").run(inputs={"load": batches[2]}, outputs=["clean"], progress=False)
    assert pa.RecordBatchReader.from_stream(result.tables["clean"]).read_all()["text"].to_pylist() == ["2", "x"]
    assert pa.record_batch(result.tables["clean"]).num_rows == 2


def test_outputs_of_several_steps_and_the_files_still_written(tmp_path: Path) -> None:
    result = pipeline(tmp_path).run(
        inputs={"load": pa.table({"text": [" a ", "b"]})}, outputs=["load", "clean", "load"], progress=False
    )
    assert result.table("load")["text"].to_pylist() == [" a ", "b"]
    assert result.table("clean")["text"].to_pylist() == ["a", "b"]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"text": "a"}, {"text": "b"}]
    assert [s["id"] for s in result.steps][-2:] == ["load.to_python", "clean.to_python"]
    with pytest.raises(KeyError, match="'export' was not named in run\\(outputs"):
        result.table("export")


def test_the_cache_key_of_an_input_covers_its_content(tmp_path: Path) -> None:
    # `clean` is kept in the cache (a step this cheap is not, by default).
    p = pipeline(tmp_path, cache=True)
    run = lambda texts: p.run(inputs={"load": pa.table({"text": texts})}, outputs=["clean"], progress=False)  # noqa: E731
    first = run([" one", "two "])
    assert first.table("clean")["text"].to_pylist() == ["one", "two"]
    # Other data: computed again, never the first run's output from the cache.
    other = run([" three"])
    assert other.step("clean")["cache"] == "ran"
    assert other.table("clean")["text"].to_pylist() == ["three"]
    # The first data again: cleaned from the cache, with the same records.
    again = run([" one", "two "])
    assert again.step("clean")["cache"] == "replayed"
    assert again.table("clean")["text"].to_pylist() == ["one", "two"]


def test_the_quick_start_from_memory_gives_the_cli_records(tmp_path: Path, weave_bin: Path) -> None:
    by_cli = copy_quickstart(tmp_path / "cli")
    subprocess.run([weave_bin, "-q", "run", by_cli], check=True)
    cli = [json.loads(line) for line in (by_cli.parent / "processed_data.jsonl").read_text().splitlines()]
    by_python = copy_quickstart(tmp_path / "python")
    # The CSV loader reads every value as text, empty ones as "".
    columns = {name: pa.string() for name in ("id", "text", "label", "channel")}
    table = pyarrow.csv.read_csv(QUICKSTART / "raw_data.csv", convert_options=pyarrow.csv.ConvertOptions(column_types=columns))
    result = wp.Pipeline.from_file(by_python).run(inputs={"load": table}, outputs=["validate"], progress=False)
    assert result.table("validate").to_pylist() == cli
    assert result.step("load")["kind"] == "memory_source"


def test_bad_inputs_and_outputs_raise_errors_that_name_the_step(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    table = pa.table({"text": ["a"]})
    with pytest.raises(TypeError, match='inputs\\["load"\\]: a int is not a table'):
        p.run(inputs={"load": 3}, progress=False)
    with pytest.raises(ValueError, match='inputs: the pipeline has no step "lod" \\(did you mean "load"\\?\\)'):
        p.run(inputs={"lod": table}, progress=False)
    with pytest.raises(ValueError, match='inputs: step "clean" \\(kind `clean`, a transform\\) is not a source'):
        p.run(inputs={"clean": table}, progress=False)
    with pytest.raises(ValueError, match='outputs: step "export" \\(kind `export_jsonl`, a sink\\) has no output'):
        p.run(outputs=["export"], progress=False)
    with pytest.raises(ValueError, match='outputs: the pipeline has no step "cleaned"'):
        p.run(outputs=["cleaned"], progress=False)
    durations = pa.table({"text": ["a"], "d": pa.array([datetime.timedelta(seconds=1)])})
    with pytest.raises(ValueError, match='inputs\\["load"\\]: .*column `d`: values of type Duration'):
        p.run(inputs={"load": durations}, progress=False)
    # Nothing ran: no output file.
    assert not (tmp_path / "out.jsonl").exists()
    # Without a cache the input is read as the run goes: the same error fails the step.
    with pytest.raises(wp.RunError, match='step "load" failed: inputs\\["load"\\]: .*column `d`: values of type Duration'):
        p.run(inputs={"load": durations}, no_cache=True, progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_failed_run_hands_back_no_table(tmp_path: Path) -> None:
    with pytest.raises(wp.RunError, match="field `text` is not in the data") as caught:
        pipeline(tmp_path).run(inputs={"load": pa.table({"other": [1]})}, outputs=["load"], progress=False)
    assert caught.value.result.tables == {}


def test_the_python_quick_start_example_gives_the_cli_records_as_a_dataset(tmp_path: Path, weave_bin: Path) -> None:
    import importlib.util

    import datasets

    by_cli = copy_quickstart(tmp_path / "cli")
    subprocess.run([weave_bin, "-q", "run", by_cli], check=True)
    cli = [json.loads(line) for line in (by_cli.parent / "processed_data.jsonl").read_text().splitlines()]
    script = QUICKSTART.parent / "python" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart_example", script)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    dataset = example.main(["--workdir", str(tmp_path / "python")])
    assert isinstance(dataset, datasets.Dataset)
    assert dataset.to_list() == cli
    # Its pipeline's export ran too, in the work folder, with the same bytes as the CLI's.
    written = (tmp_path / "python" / "processed_data.jsonl").read_bytes()
    assert written == (by_cli.parent / "processed_data.jsonl").read_bytes()
