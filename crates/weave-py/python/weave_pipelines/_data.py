"""Data in and out of a run without files: what ``run(inputs=...)`` takes, and the
tables ``RunResult.table()`` gives.

Tables cross through the Arrow PyCapsule protocol (``__arrow_c_stream__``): the columns'
buffers are handed over, never copied row by row. pyarrow is needed for pandas data, lists
of dicts and the tables a run gives back; pandas, polars and datasets are imported only
when the data given is theirs (they are then imported already).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


def pyarrow(what: str) -> ModuleType:
    """The ``pyarrow`` module, or an ``ImportError`` that says what needed it."""
    try:
        return importlib.import_module("pyarrow")
    except ImportError as e:
        raise ImportError(f"{what} needs pyarrow: pip install pyarrow") from e


def arrow_input(data: Any, step: str) -> Any:
    """``data`` as an object of the Arrow PyCapsule protocol, for the source step ``step``.

    Taken as they are: objects with ``__arrow_c_stream__`` or ``__arrow_c_array__`` (a
    pyarrow ``Table``, ``RecordBatchReader`` or ``RecordBatch``, a polars ``DataFrame``).
    Converted: a pandas ``DataFrame`` (``pyarrow.Table.from_pandas``; its index is dropped
    unless it has a name, which then makes it a column), a Hugging Face
    ``datasets.Dataset`` (its Arrow table, in its current row order), an older polars
    ``DataFrame`` (``to_arrow()``), and a list of dicts (``pyarrow.Table.from_pylist``,
    one record per dict).
    """
    what = f'inputs["{step}"]'
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(data, pandas.DataFrame):
        named = any(name is not None for name in data.index.names)
        return pyarrow(what).Table.from_pandas(data, preserve_index=named)
    datasets = sys.modules.get("datasets")
    if datasets is not None and isinstance(data, datasets.Dataset):
        # The arrow format's full slice applies the dataset's index mapping (after
        # `select`, `shuffle` or `filter`), which its underlying table does not.
        return data.with_format("arrow")[:]
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        return data
    polars = sys.modules.get("polars")
    if polars is not None and isinstance(data, polars.DataFrame):
        return data.to_arrow()
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return pyarrow(what).Table.from_pylist(data)
    raise TypeError(
        f"{what}: a {type(data).__name__} is not a table: give a pyarrow Table or RecordBatchReader, "
        "a pandas or polars DataFrame, a datasets.Dataset, or a list of dicts"
    )


def arrow_table(data: Any, step: str) -> Any:
    """The output ``data`` of step ``step`` (an object of the PyCapsule protocol) as a
    ``pyarrow.Table``."""
    return pyarrow(f'the output of step "{step}"').table(data)
