"""Fixtures of the Python bindings' tests: the repository, the `weave` command to compare
with, and copies of the quick start in temporary folders."""

from __future__ import annotations

import _thread
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, List

import pytest

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart"


@pytest.fixture(scope="session")
def weave_bin() -> Path:
    """The `weave` command built from the same checkout ($WEAVE_BIN, or target/debug/weave)."""
    path = Path(os.environ.get("WEAVE_BIN", REPO / "target" / "debug" / "weave"))
    if not path.is_file():
        pytest.fail(f"no weave command at {path}: build it with `cargo build -p weave-cli` or set WEAVE_BIN")
    return path


def copy_quickstart(dest: Path) -> Path:
    """The quick start's pipeline and data copied into `dest`; returns the pipeline file."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pipeline.toml", "raw_data.csv"):
        shutil.copy(QUICKSTART / name, dest / name)
    return dest / "pipeline.toml"


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A fresh copy of the quick start; returns its pipeline file."""
    return copy_quickstart(tmp_path / "quickstart")


def seconds_to_stop_on_ctrl_c(run: Callable[[], object], after: float = 1.5) -> float:
    """Calls `run`, sends it Ctrl-C (`KeyboardInterrupt` in the main thread) `after` seconds
    in, checks that it raised `KeyboardInterrupt`, and returns how long it took to stop
    once interrupted."""
    interrupted_at: List[float] = []

    def interrupt() -> None:
        interrupted_at.append(time.monotonic())
        _thread.interrupt_main()

    timer = threading.Timer(after, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
        return time.monotonic() - interrupted_at[0]
    finally:
        timer.cancel()


def long_pipeline(middle: str) -> str:
    """A pipeline that would run for hours (100 million generated records), with `middle`
    (TOML steps) between its source and its export: for the tests that stop a run."""
    return f"""[pipeline]
name = "long"

[[step]]
id = "make"
kind = "generate"
templates = [{{ text = "My {{device}} won't {{problem}} after {{n}} days." }}]
slots = {{ device = ["phone", "laptop", "tablet"], problem = ["charge", "boot", "sync"], n = ["1", "2", "3"] }}
count = 100000000
batch_size = 1000

{middle}

[[step]]
id = "out"
kind = "export_jsonl"
path = "out.jsonl"
"""
