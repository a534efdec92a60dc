"""The ``weave`` command installed with the package: the same command as the binary that
cargo builds (``weave run``, ``validate``, ``plan``, ...), compiled into the wheel."""

from __future__ import annotations

import sys

from . import _native


def main() -> None:
    """Runs ``weave`` with this process's arguments and exits with its exit code."""
    sys.exit(_native.cli(["weave", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
