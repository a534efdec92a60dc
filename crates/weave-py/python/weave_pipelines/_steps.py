"""Python steps: a Python function registered as a step kind that pipelines can name.

``@step("kind")`` on ``def f(record: dict) -> dict | None`` (or, with ``batch=True``, on
``def f(batch: pyarrow.RecordBatch) -> pyarrow.RecordBatch``) makes ``kind = "kind"``
usable in any pipeline built from Python afterwards (a file, TOML text or a dict). See
:func:`step`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from typing import Any, Callable, Dict, Mapping, Optional, TypeVar

from . import _data, _native

__all__ = ["step", "step_kinds"]

F = TypeVar("F", bound=Callable[..., Any])

_KIND_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def step(
    kind: str,
    *,
    version: str = "1",
    config: Optional[Mapping[str, Any]] = None,
    batch: bool = False,
) -> Callable[[F], F]:
    """Registers the decorated function as the step kind ``kind``, a record-wise transform
    or filter, and returns the function unchanged.

    By default the function is called once per record, with the record as a dict (field
    names to ``None``, bools, ints, floats, strings, lists and dicts, in the record's
    field order)::

        import weave_pipelines as wp

        @wp.step("shout", version="1", config={"field": "text"})
        def shout(record: dict, config: dict) -> dict | None:
            text = record[config["field"]]
            if not text:
                return None  # dropped, counted under "shout returned None"
            record[config["field"]] = text.upper()
            return record

    and a pipeline names it as it names a built-in kind (``kind = "shout"``, ``field =
    "title"``). What the function does decides what happens to the record:

    - it returns a dict: that is the output record (fields may be added or removed);
    - it returns ``None``: the record is dropped, counted in the step's ``dropped``;
    - it raises :class:`TransientError` (or a subclass): the function is called again on
      that record alone, under the step's retry policy (``retry = {max_retries = 3,
      retry_delay = "1s"}``), and each retry is counted in the step's ``retries``; a
      record still failing after them is a bad record (below);
    - it raises any other ``Exception``, or returns something else: the record is a bad
      record, set aside with ``"ExceptionType: message"`` as its reason, and the step's
      ``on_bad_record`` decides whether the run goes on (``"skip"``: into the quarantine
      file) or fails (``"fail"``, the default).

    With ``batch=True``, the function is called once per batch instead, with a
    ``pyarrow.RecordBatch`` (pyarrow must be installed), and returns the output batch:
    a ``pyarrow.RecordBatch`` or ``Table``, or any table of the Arrow PyCapsule protocol
    (a polars ``DataFrame``). The columns cross through Arrow's C data interface, not row
    by row. It may return fewer rows (a filter: the others are counted as dropped, under
    ``"KIND left it out"``). A :class:`TransientError` has the batch's call retried; any
    other exception, or a return value that is not a table, sets every record of the
    batch aside with its message::

        import pyarrow as pa
        import pyarrow.compute as pc

        @wp.step("long_texts", batch=True)
        def long_texts(batch: pa.RecordBatch) -> pa.RecordBatch:
            return batch.filter(pc.greater(pc.utf8_length(batch["text"]), 20))

    ``config``: the keys a step of this kind takes in the pipeline file, with their
    default values (JSON data). When the function has a second parameter named
    ``config``, it gets them as a dict: the defaults, with the values the step's table
    sets. Any other key in the step's table is an unknown key, as for built-in kinds.

    The cache key of a step of this kind covers the function's source
    (``inspect.getsource``; without a source file, its qualified name and bytecode),
    ``version``, and its configuration: change any and the step runs again, leave them
    and a cached output is replayed. Code the function calls is not covered: change
    ``version`` when it changes. Its output is cached as an LLM step's is
    (``cache = "auto"`` keeps it).

    Python steps hold the interpreter's lock while they run: they run one batch at a
    time, across all the run's threads, while the run's Rust steps and I/O go on in
    parallel beside them. Ctrl-C still stops the run.

    A kind exists in this process only, for pipelines built after it was registered;
    registering a name again replaces the kind. The ``weave`` command does not know it.
    """
    if not _KIND_NAME.match(kind):
        raise ValueError(f"a step kind is a lowercase word of letters, digits and underscores, not {kind!r}")
    if not isinstance(version, str):
        raise TypeError(f"version must be a string, not {type(version).__name__}")
    defaults: Dict[str, Any] = dict(config or {})
    try:
        defaults_json = json.dumps(defaults, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"config must hold JSON data (str, int, float, bool, None, lists, dicts): {e}") from None

    def register(function: F) -> F:
        if not callable(function):
            raise TypeError(f"@step({kind!r}) decorates a function, not {type(function).__name__}")
        # The batches are pyarrow's: without it, every call would fail at run time.
        if batch:
            _data.pyarrow(f"@step({kind!r}, batch=True)")
        _native.register_step(
            kind,
            function,
            version=version,
            fingerprint=_fingerprint(function),
            defaults=defaults_json,
            takes_config=_takes_config(function, kind),
            batch=bool(batch),
            summary=_summary(function),
        )
        return function

    return register


def step_kinds() -> list[str]:
    """The names of the Python step kinds registered in this process."""
    return _native.step_kinds()


def _fingerprint(function: Callable[..., Any]) -> str:
    """A digest of the function's source, or of its qualified name and bytecode when it
    has no source file (defined in a REPL, or by ``exec``). A ``functools.partial`` is its
    function's digest and its arguments; an object with ``__call__``, its class's."""
    h = hashlib.sha256()
    _digest_into(h, function)
    return h.hexdigest()


def _digest_into(h: "hashlib._Hash", function: Any) -> None:
    """Feeds what identifies ``function``'s code to ``h`` (see :func:`_fingerprint`)."""
    if isinstance(function, functools.partial):
        _digest_into(h, function.func)
        # An argument whose repr holds an address differs in every process: that misses
        # the cache, which is safe, where a repr that hid a difference would not be.
        h.update(b"\0partial\0" + repr((function.args, sorted(function.keywords.items()))).encode())
        return
    target = function if inspect.isroutine(function) or inspect.isclass(function) else type(function)
    try:
        h.update(b"source\0" + inspect.getsource(target).encode("utf-8", "surrogatepass"))
        return
    except (OSError, TypeError):
        pass
    h.update(b"code\0" + getattr(target, "__qualname__", repr(target)).encode("utf-8", "surrogatepass"))
    code = getattr(function, "__code__", None) or getattr(getattr(target, "__call__", None), "__code__", None)
    if code is not None:
        h.update(b"\0" + code.co_code + b"\0" + repr(code.co_consts).encode("utf-8", "surrogatepass"))


def _takes_config(function: Callable[..., Any], kind: str) -> bool:
    """Whether the function takes the step's configuration: its second parameter is
    named ``config``."""
    try:
        parameters = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return False
    if "config" not in parameters:
        return False
    if parameters.index("config") != 1:
        raise TypeError(f"@step({kind!r}): `config` must be the function's second parameter, after the record")
    return True


def _summary(function: Callable[..., Any]) -> str:
    """The kind's one-line summary (the registry's listing): the first line of the
    function's docstring, or its name."""
    doc = inspect.getdoc(function)
    if doc:
        return doc.splitlines()[0]
    name = getattr(function, "__qualname__", type(function).__qualname__)
    return f"a Python step ({getattr(function, '__module__', '?')}.{name})"
