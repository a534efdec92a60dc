"""Weave from Python: build, check, plan and run data-generation pipelines.

The distribution is ``weave-pipelines`` and the module ``weave_pipelines`` (``weave`` on
the package index is another project). A pipeline comes from a pipeline file, from TOML
text, or from a dict of the same shape::

    import weave_pipelines as wp

    pipeline = wp.Pipeline.from_file("examples/quickstart/pipeline.toml")
    print(pipeline.plan()["levels"])
    result = pipeline.run(max_concurrent=2)
    print(result.status, result.step("export")["records_in"], result.report_path)

Data can come from memory and go back to it, without files: ``inputs`` gives a table (a
pyarrow Table, a pandas or polars DataFrame, a ``datasets.Dataset``, a list of dicts) in
place of a source step, and ``outputs`` names steps whose records come back as pyarrow
Tables::

    result = pipeline.run(inputs={"load": df}, outputs=["clean"])
    clean = result.table("clean").to_pandas()

A Python function becomes a step kind that pipelines name with :func:`step`
(``@wp.step("my_kind")`` on ``def f(record: dict) -> dict | None``).

A run is ``weave run``'s: the same run record (``report.json``), metrics file, alerts,
cache and quarantine file. Errors in a pipeline raise :class:`PipelineError` with the
diagnostics ``weave validate`` prints; Ctrl-C stops a run cleanly (nothing is committed)
and raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from . import _data, _native, _progress
from ._native import PipelineError, RunError, TransientError, WeaveError
from ._steps import step, step_kinds

__all__ = ["Pipeline", "RunResult", "WeaveError", "PipelineError", "RunError", "__version__"]
# Python steps (_steps.py): a function registered as a step kind.
__all__ += ["step", "step_kinds", "TransientError"]

__version__: str = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class RunResult:
    """What a run did: its status, each step's metrics, its figures and its run record.

    Attributes:
        status: ``"succeeded"`` or ``"failed"`` (a failed run raises :class:`RunError`,
            whose ``result`` this is).
        pipeline: The pipeline's name.
        error: Why the run failed, as ``weave run`` prints it (``None`` on success).
        steps: Per step, in declaration order: ``id``, ``kind``, ``cache`` (``ran``,
            ``replayed`` or ``skipped``), ``records_in``, ``records_out``, ``batches_in``,
            ``batches_out``, ``retries``, ``dropped`` (reason to count), ``quarantined``,
            ``bad_records``, ``excluded``, ``busy_seconds``, ``cpu_seconds``, ``figures``.
        figures: The figures steps set (tokens, cost, pass rates), by step id.
        stats: The run record's statistics of the data (``report.json``'s ``stats``).
        report: The whole run report (``report.json``), as ``weave report --format json``
            prints it.
        report_path: The run report's file.
        record_dir: The run record's folder.
        elapsed_seconds: The run's wall time.
        peak_memory: The most bytes of batches in flight at once.
        threads: The CPU worker threads used.
        quarantine: The quarantine file, if the run has one.
        quarantined: How many bad records were set aside in it.
        alerts_fired: How many alerts fired.
        metrics_error: Why the metrics file could not be written at the end, if it could not.
        tables: The output of each step named in ``run(outputs=...)``, by step id, as an
            object of the Arrow PyCapsule protocol (``pyarrow.table()``,
            ``polars.DataFrame()`` read it); :meth:`table` gives it as a pyarrow Table.
    """

    status: str
    pipeline: str
    error: Optional[str]
    steps: List[Dict[str, Any]]
    figures: Dict[str, Dict[str, Any]]
    stats: Optional[Dict[str, Any]]
    report: Optional[Dict[str, Any]] = field(repr=False)
    report_path: Optional[Path]
    record_dir: Optional[Path]
    elapsed_seconds: float
    peak_memory: int
    threads: int
    quarantine: Optional[Path]
    quarantined: int
    alerts_fired: int
    metrics_error: Optional[str]
    tables: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def _from_native(cls, data: Mapping[str, Any]) -> "RunResult":
        """Makes a result from the dict the compiled module returns."""
        paths = ("report_path", "record_dir", "quarantine")
        values: Dict[str, Any] = {k: (Path(v) if k in paths and v is not None else v) for k, v in data.items()}
        return cls(**values)

    @property
    def succeeded(self) -> bool:
        """Whether the run succeeded (and so committed its outputs)."""
        return self.status == "succeeded"

    def step(self, step_id: str) -> Dict[str, Any]:
        """The metrics of the step ``step_id``; ``KeyError`` if the pipeline has none."""
        for s in self.steps:
            if s["id"] == step_id:
                return s
        raise KeyError(f"the run has no step {step_id!r}; its steps: {', '.join(s['id'] for s in self.steps)}")

    def table(self, step_id: str) -> Any:
        """The records step ``step_id`` gave, as a ``pyarrow.Table``, in the order of the
        data; the step must be named in ``run(outputs=...)``.

        Types are kept: ints (as int64), floats (float64), bools, strings, nulls, lists and
        structs; a field whose values mix types is JSON text. ``table.to_pandas()``,
        ``polars.from_arrow(table)`` and ``datasets.Dataset(table)`` take it from there.
        """
        try:
            data = self.tables[step_id]
        except KeyError:
            named = ", ".join(self.tables) or "none"
            raise KeyError(
                f"step {step_id!r} was not named in run(outputs=[...]); the steps named: {named}"
            ) from None
        return _data.arrow_table(data, step_id)


class Pipeline:
    """A checked pipeline, ready to plan and run.

    Make one with :meth:`from_file`, :meth:`from_toml` or :meth:`from_dict`; each checks the
    pipeline at once and raises :class:`PipelineError` when it has errors.
    """

    __slots__ = ("_native",)

    def __init__(self, native: "_native.Pipeline") -> None:
        """Wraps a checked pipeline of the compiled module (use the ``from_*`` methods)."""
        self._native = native

    @classmethod
    def from_file(cls, path: PathLike) -> "Pipeline":
        """Reads and checks the pipeline file at ``path``.

        Relative paths in it resolve from its folder, where the run's ``.weave`` folder
        (cache, run records, quarantine file) goes too.
        """
        return cls(_native.Pipeline.from_file(os.fspath(path)))

    @classmethod
    def from_toml(cls, text: str, path: PathLike = "pipeline.toml") -> "Pipeline":
        """Checks the TOML text of a pipeline file, taken as read from ``path``.

        ``path`` need not exist: relative paths resolve from its folder, diagnostics name
        it, and the run's ``.weave`` folder goes beside it.
        """
        return cls(_native.Pipeline.from_toml(text, os.fspath(path)))

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], path: PathLike = "pipeline.toml") -> "Pipeline":
        """Checks a dict of the pipeline file's shape, taken as read from ``path``.

        ``{"pipeline": {"name": ...}, "step": [{"id": ..., "kind": ...}, ...]}`` is the
        file's ``[pipeline]`` table and ``[[step]]`` array. The dict is written as TOML
        (kept as :attr:`text`), and a diagnostic's line and column point into that text.
        """
        return cls(_native.Pipeline.from_toml(_native.Pipeline.dict_to_toml(dict(spec)), os.fspath(path)))

    @property
    def name(self) -> str:
        """The pipeline's name (``[pipeline] name``)."""
        return self._native.name

    @property
    def path(self) -> Path:
        """The file the pipeline was read from, or is taken to be."""
        return Path(self._native.path)

    @property
    def text(self) -> str:
        """The pipeline's TOML text."""
        return self._native.text

    @property
    def warnings(self) -> List[Dict[str, Any]]:
        """The warnings found when it was checked (each a diagnostic dict, as in
        :attr:`PipelineError.diagnostics`)."""
        return self._native.warnings

    def plan(self, cache_dir: Optional[PathLike] = None) -> Dict[str, Any]:
        """How the pipeline would run, as ``weave plan --format json`` gives it.

        Keys: ``pipeline``, ``seed``, ``resources``, ``steps`` (in order, each with its
        ``level``, ``after``, ``config``, ``resources``, ``retry`` and ``cache`` status,
        key and reasons), ``levels``, ``critical_path`` and ``warnings``. ``cache_dir`` is
        the cache to plan against (by default ``$WEAVE_CACHE_DIR``, the file's
        ``[cache] dir``, or ``.weave/cache`` beside the file).
        """
        return self._native.plan(None if cache_dir is None else os.fspath(cache_dir))

    def run(
        self,
        *,
        max_memory: Union[int, str, None] = None,
        max_concurrent: Optional[int] = None,
        cache_dir: Optional[PathLike] = None,
        no_cache: bool = False,
        refresh: Sequence[str] = (),
        quarantine: Optional[PathLike] = None,
        metrics_file: Optional[PathLike] = None,
        progress: Union[bool, Callable[[Dict[str, Any]], None]] = True,
        inputs: Optional[Mapping[str, Any]] = None,
        outputs: Sequence[str] = (),
    ) -> RunResult:
        """Runs the pipeline as ``weave run`` does, and returns what it did.

        The options are ``weave run``'s: ``max_memory`` (bytes, or a size such as
        ``"4GB"``) and ``max_concurrent`` over the file's ``[resources]``; ``cache_dir``,
        ``no_cache`` (neither read nor write the cache) and ``refresh`` (step ids to compute
        again, with every step after them); ``quarantine`` (where set-aside records go) and
        ``metrics_file`` (Prometheus text, rewritten while the run goes).

        ``progress``: ``True`` shows a bar per step in a terminal or a Jupyter notebook
        (tqdm's, when it is installed), ``False`` nothing; a callable is called about every
        100 ms, and once at the end, with ``{"done": bool, "steps": [{"step",
        "records_in", "records_out", "retries", "records_per_second", "finished"}]}``.

        ``inputs``: data in place of source steps, by step id (``{"load": df}``): a
        pyarrow Table, RecordBatch or RecordBatchReader, a pandas DataFrame (its index
        dropped unless named), a polars DataFrame, a ``datasets.Dataset``, a list of dicts,
        or any object with ``__arrow_c_stream__``. The step's own keys (its file) are then
        not used. With a cache, the data is read before the run and its content is its
        cache key; with ``no_cache``, it is read batch by batch as the run goes. ``outputs``: step ids whose records
        come back (:meth:`RunResult.table`); each gets a step ``<id>.to_python`` after it.
        An id that names no step, a step of the wrong kind (an input for a step that is not
        a source, an output of a sink), or data that is not a table raise an error naming
        the step.

        Outputs appear only when the whole run succeeds. Raises :class:`RunError` when the
        run fails, :class:`WeaveError` when it cannot start (its files would clash), and
        ``KeyboardInterrupt`` when Ctrl-C stopped it: the run is cancelled and waited for,
        and nothing is committed. The interpreter's lock is released while Weave works.
        """
        data = self._native.run(
            max_memory=max_memory,
            max_concurrent=max_concurrent,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            no_cache=no_cache,
            refresh=list(refresh),
            quarantine=None if quarantine is None else os.fspath(quarantine),
            metrics_file=None if metrics_file is None else os.fspath(metrics_file),
            progress=_progress.default_display() if progress is True else (progress or None),
            inputs=[(step, _data.arrow_input(data, step)) for step, data in (inputs or {}).items()],
            outputs=list(dict.fromkeys(outputs)),
        )
        result = RunResult._from_native(data)
        if result.status != "succeeded":
            error = RunError(result.error or f"the run {result.status}")
            error.result = result
            raise error
        return result

    def __repr__(self) -> str:
        return f"Pipeline(name={self.name!r}, path={str(self.path)!r})"
