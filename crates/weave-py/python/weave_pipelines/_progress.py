"""Progress of a run while it goes: a bar per step, in a terminal or a Jupyter notebook.

With tqdm installed, its ``tqdm.auto`` bars (widgets in Jupyter); otherwise one line per
step, rewritten in place on stderr. Nothing is shown when stderr is neither a terminal nor
a notebook's, as ``weave run`` shows bars only on a terminal.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, TextIO


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel."""
    return "ipykernel" in sys.modules


def default_display() -> Optional[Callable[[Mapping[str, Any]], None]]:
    """The display for ``progress=True``: tqdm's bars, plain lines, or none (no terminal)."""
    stream = sys.stderr
    if not (_in_notebook() or (hasattr(stream, "isatty") and stream.isatty())):
        return None
    try:
        from tqdm.auto import tqdm  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return Lines(stream)
    return TqdmBars(tqdm)


class TqdmBars:
    """One tqdm bar per step: records so far and records per second."""

    def __init__(self, tqdm: Any) -> None:
        """Bars made with ``tqdm`` (``tqdm.auto.tqdm``) as steps appear."""
        self._tqdm = tqdm
        self._bars: Dict[str, Any] = {}

    def __call__(self, snapshot: Mapping[str, Any]) -> None:
        """Moves each step's bar to its count; closes them all when the run is done."""
        for step in snapshot["steps"]:
            bar = self._bars.get(step["step"])
            if bar is None:
                bar = self._tqdm(desc=step["step"], unit=" records", position=len(self._bars), leave=True)
                self._bars[step["step"]] = bar
            count = max(step["records_in"], step["records_out"])
            bar.update(count - bar.n)
        if snapshot["done"]:
            for bar in self._bars.values():
                bar.close()


class Lines:
    """Without tqdm: a line per step on a terminal, rewritten in place."""

    def __init__(self, stream: TextIO) -> None:
        """Lines written to ``stream``."""
        self._stream = stream
        self._shown = 0

    def __call__(self, snapshot: Mapping[str, Any]) -> None:
        """Rewrites the lines with each step's counts."""
        lines: List[str] = []
        for s in snapshot["steps"]:
            word = "done" if s["finished"] else f"{s['records_per_second']:.0f}/s"
            lines.append(f"{s['step']:<16} {max(s['records_in'], s['records_out']):>12} records  {word}")
        up = f"\x1b[{self._shown}F" if self._shown else ""
        self._stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self._stream.flush()
        self._shown = len(lines)
