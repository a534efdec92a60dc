"""Type stubs of the compiled part of ``weave_pipelines`` (crates/weave-py/src/lib.rs).

Use the package's ``Pipeline`` and ``RunResult``; this module is what they call.
"""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

__version__: str

class WeaveError(Exception):
    """The base of Weave's errors; a run that cannot start raises it."""

class PipelineError(WeaveError):
    """A pipeline with errors.

    ``diagnostics``: each problem as a dict with ``severity``, ``message``, ``step``,
    ``file``, ``line``, ``column``, ``hint``, ``code`` and ``text`` (its rendering).
    ``text``: every diagnostic as ``weave validate`` prints them.
    """

    diagnostics: List[Dict[str, Any]]
    text: str

class RunError(WeaveError):
    """A run that failed (nothing committed); ``result`` is what it did until then."""

    result: Any

class TransientError(Exception):
    """Raised by a Python step for a failure that may pass if tried again: retried."""

def register_step(
    name: str,
    function: Callable[..., Any],
    *,
    version: str,
    fingerprint: str,
    defaults: str,
    takes_config: bool,
    batch: bool,
    summary: str,
) -> None:
    """Registers ``function`` as the step kind ``name`` (``weave_pipelines.step`` calls it)."""

def step_kinds() -> List[str]:
    """The names of the Python step kinds registered in this process."""

def cli(args: List[str]) -> int:
    """Runs the ``weave`` command with ``args`` (``sys.argv``); returns its exit code."""

class Pipeline:
    """A checked pipeline: its text, and the path relative paths resolve from."""

    @staticmethod
    def from_file(path: str) -> "Pipeline":
        """Reads and checks the pipeline file at ``path``."""
    @staticmethod
    def from_toml(text: str, path: str) -> "Pipeline":
        """Checks TOML text, taken as read from ``path`` (which need not exist)."""
    @staticmethod
    def dict_to_toml(spec: Dict[str, Any]) -> str:
        """The TOML text of a dict of the pipeline file's shape."""
    @property
    def name(self) -> str:
        """The pipeline's name."""
    @property
    def path(self) -> str:
        """The file the pipeline was read from, or is taken to be."""
    @property
    def text(self) -> str:
        """The pipeline's TOML text."""
    @property
    def warnings(self) -> List[Dict[str, Any]]:
        """The warnings found when it was checked."""
    def plan(self, cache_dir: Optional[str] = None) -> Dict[str, Any]:
        """``weave plan --format json`` as Python data."""
    def run(
        self,
        *,
        max_memory: Union[int, str, None] = None,
        max_concurrent: Optional[int] = None,
        cache_dir: Optional[str] = None,
        no_cache: bool = False,
        refresh: List[str] = ...,
        quarantine: Optional[str] = None,
        metrics_file: Optional[str] = None,
        progress: Optional[Callable[[Dict[str, Any]], None]] = None,
        inputs: List[Tuple[str, Any]] = ...,
        outputs: List[str] = ...,
    ) -> Dict[str, Any]:
        """Runs the pipeline as ``weave run`` does; the dict behind ``RunResult``.

        ``inputs``: (step id, object of the Arrow PyCapsule protocol) pairs in place of
        source steps; ``outputs``: step ids whose output comes back under ``tables``.
        """

class ArrowData:
    """Record batches of one schema that a run handed back, read through the Arrow
    PyCapsule protocol (``pyarrow.table(data)``, ``polars.DataFrame(data)``)."""

    @property
    def num_rows(self) -> int:
        """How many rows the batches hold."""
    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object:
        """The batches as an Arrow C stream (a capsule named ``arrow_array_stream``)."""
    def __arrow_c_schema__(self) -> object:
        """The schema as an Arrow C schema (a capsule named ``arrow_schema``)."""
    def __arrow_c_array__(self, requested_schema: Optional[object] = None) -> Tuple[object, object]:
        """The batches as one Arrow C struct array: (schema capsule, array capsule)."""
