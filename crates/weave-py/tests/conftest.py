"""Fixtures of the Python bindings' tests: the repository, the `weave` command to compare
with, and copies of the quick start in temporary folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
