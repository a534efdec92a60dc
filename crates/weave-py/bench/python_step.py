"""What a trivial Python step costs per record, against the same function in a plain loop.

A run of N rows (default 1,000,000) from a JSON Lines file through `load_jsonl → STEP →
export_jsonl`, where STEP is the identity function registered with `@wp.step` (dict
mode: called per record) or `@wp.step(batch=True)` (batch mode: called per pyarrow
record batch), is timed against the same run without the step; the difference over N is
what the step adds per record. The same function applied in a plain Python loop over
the same batches of the same records (dicts, or pyarrow record batches, already made) is
the floor: the rest is the step's conversions and its share of the run's machinery. The
JSON round trip of the same batches (`json.loads` and `json.dumps`) is timed alone too:
it is what dict mode cost when rows crossed as JSON text, before they were made dicts
straight from the columns (ARCHITECTURE.md, `crates/weave-py`).

Run it with a release build of the package (README.md, "Using Weave from Python"):

    pip install ./crates/weave-py
    pip install pyarrow    # for batch mode
    python crates/weave-py/bench/python_step.py [--rows 1000000] [--repeat 3]

Each figure is the best of `--repeat` runs (the machine is shared: the best is the
least disturbed).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import weave_pipelines as wp


def identity(x: Any) -> Any:
    """The trivial step: a record (dict mode) or a batch (batch mode) unchanged."""
    return x


def pipeline(folder: Path, batch_size: int, kind: Optional[str]) -> wp.Pipeline:
    steps: List[Dict[str, Any]] = [{"id": "load", "kind": "load_jsonl", "path": "in.jsonl", "batch_size": batch_size}]
    if kind is not None:
        steps.append({"id": "step", "kind": kind})
    steps.append({"id": "export", "kind": "export_jsonl", "path": "out.jsonl"})
    return wp.Pipeline.from_dict({"pipeline": {"name": "python-step-bench"}, "step": steps}, folder / "p.toml")


def best(repeat: int, f: Callable[[], float]) -> float:
    return min(f() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-concurrent", type=int, default=2)
    args = parser.parse_args()
    n = args.rows
    wp.step("bench_identity")(identity)
    wp.step("bench_identity_batch", batch=True)(identity)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with open(folder / "in.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": i, "text": f"ticket {i}: my router will not boot", "score": i / 7}) + "\n")

        busy: Dict[str, List[float]] = {"bench_identity": [], "bench_identity_batch": []}

        def run(kind: Optional[str]) -> float:
            result = pipeline(folder, args.batch_size, kind).run(
                no_cache=True, progress=False, max_concurrent=args.max_concurrent
            )
            assert result.step("export")["records_in"] == n
            if kind is not None:
                busy[kind].append(result.step("step")["busy_seconds"])
            return result.elapsed_seconds

        without = best(args.repeat, lambda: run(None))
        with_dicts = best(args.repeat, lambda: run("bench_identity"))
        with_batches = best(args.repeat, lambda: run("bench_identity_batch"))

        # The same records as dicts, in the same batches, through the same function.
        with open(folder / "in.jsonl") as f:
            records = [json.loads(line) for line in f]
        batches = [records[i : i + args.batch_size] for i in range(0, n, args.batch_size)]

        def plain() -> float:
            start = time.perf_counter()
            for batch in batches:
                out = [identity(r) for r in batch]
                assert len(out) == len(batch)
            return time.perf_counter() - start

        loop = best(args.repeat, plain)

        # The conversion dict mode measured against: each batch's rows made dicts from
        # JSON text and the records returned written back as JSON text, by `json`.
        texts = [json.dumps(b) for b in batches]

        def json_round_trip() -> float:
            start = time.perf_counter()
            for text in texts:
                json.dumps(json.loads(text), allow_nan=False, ensure_ascii=False)
            return time.perf_counter() - start

        round_trip = best(args.repeat, json_round_trip)

        try:
            import pyarrow as pa  # type: ignore[import-untyped]
        except ImportError:
            arrow_batches = None
        else:
            arrow_batches = pa.Table.from_pylist(records).to_batches(max_chunksize=args.batch_size)

        def plain_batches() -> float:
            assert arrow_batches is not None
            start = time.perf_counter()
            for batch in arrow_batches:
                identity(batch)
            return time.perf_counter() - start

        batch_loop = best(args.repeat, plain_batches) if arrow_batches is not None else float("nan")

    ns = 1e9 / n
    print(f"{n:,} rows, batches of {args.batch_size}, max_concurrent {args.max_concurrent}, best of {args.repeat}")
    print(f"run without a Python step              {without:8.3f} s")
    print(f"run with it, dict mode                 {with_dicts:8.3f} s")
    print(f"run with it, batch mode                {with_batches:8.3f} s")
    print(
        f"dict mode adds                         {(with_dicts - without) * ns:8.0f} ns/record"
        f"  (step busy {min(busy['bench_identity']) * ns:.0f} ns/record)"
    )
    print(
        f"batch mode adds                        {(with_batches - without) * ns:8.0f} ns/record"
        f"  (step busy {min(busy['bench_identity_batch']) * ns:.0f} ns/record)"
    )
    print(f"plain loop over the dicts              {loop * ns:8.0f} ns/record")
    print(f"plain loop over the pyarrow batches    {batch_loop * ns:8.1f} ns/record")
    print(f"json loads + dumps of the same batches {round_trip * ns:8.0f} ns/record")


if __name__ == "__main__":
    main()
