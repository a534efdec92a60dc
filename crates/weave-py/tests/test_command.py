"""The `weave` command the wheel installs: the same command as cargo's binary."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_quickstart
from test_run import LONG

WHEEL_WEAVE = Path(sys.executable).parent / "weave"


@pytest.fixture(scope="module")
def wheel_weave() -> Path:
    """The `weave` script the package installed beside this interpreter."""
    if not WHEEL_WEAVE.is_file():
        pytest.fail(f"the package installed no weave command at {WHEEL_WEAVE}")
    return WHEEL_WEAVE


def test_the_wheel_command_writes_the_same_records_as_cargos(tmp_path: Path, weave_bin: Path, wheel_weave: Path) -> None:
    by_cargo = copy_quickstart(tmp_path / "cargo")
    by_wheel = copy_quickstart(tmp_path / "wheel")
    subprocess.run([weave_bin, "-q", "run", by_cargo], check=True)
    run = subprocess.run([wheel_weave, "run", by_wheel], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "run succeeded in" in run.stdout
    for name in ("processed_data.jsonl", "excluded.jsonl"):
        assert (by_wheel.parent / name).read_bytes() == (by_cargo.parent / name).read_bytes(), name


def test_the_wheel_command_keeps_the_exit_codes(tmp_path: Path, weave_bin: Path, wheel_weave: Path) -> None:
    version = subprocess.run([wheel_weave, "--version"], capture_output=True, text=True)
    assert (version.returncode, version.stdout) == (0, subprocess.run([weave_bin, "--version"], capture_output=True, text=True).stdout)
    assert subprocess.run([wheel_weave, "run"], capture_output=True).returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\nname = "x"\n\n[[step]]\nid = "a"\nkind = "load_csvv"\npath = "a.csv"\n')
    by_wheel = subprocess.run([wheel_weave, "validate", bad], capture_output=True, text=True)
    by_cargo = subprocess.run([weave_bin, "validate", bad], capture_output=True, text=True)
    assert (by_wheel.returncode, by_wheel.stderr) == (1, by_cargo.stderr)


def test_ctrl_c_stops_the_wheel_commands_run_with_130(tmp_path: Path, wheel_weave: Path) -> None:
    pipeline = tmp_path / "long.toml"
    pipeline.write_text(LONG)
    child = subprocess.Popen([wheel_weave, "run", "--no-cache", pipeline], stderr=subprocess.PIPE, text=True)
    # Once the run record exists, the run is under way.
    runs = tmp_path / ".weave" / "runs"
    while not (runs.is_dir() and any(runs.iterdir())):
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        time.sleep(0.05)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "nothing was written" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out.jsonl").exists()
