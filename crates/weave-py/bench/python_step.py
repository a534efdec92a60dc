"""What a trivial Python step costs per record, against the same function in a plain loop.

A run of N rows (default 1,000,000) from a JSON Lines file through `load_jsonl → STEP →
export_jsonl`, where STEP is `identity = lambda r: r` registered with `@wp.step`, is
timed against the same run without the step; the difference over N is what the step
adds per record. The same function applied in a plain Python loop over the same batches
of the same records (dicts already made) is the floor: the rest is the step's
conversions (rows to dicts and back, as JSON) and its share of the run's machinery.

Run it with a release build of the package (README.md, "Using Weave from Python"):

    pip install ./crates/weave-py
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
from typing import Any, Callable, Dict, List

import weave_pipelines as wp


def identity(record: Dict[str, Any]) -> Dict[str, Any]:
    return record


def pipeline(folder: Path, batch_size: int, step: bool) -> wp.Pipeline:
    steps: List[Dict[str, Any]] = [{"id": "load", "kind": "load_jsonl", "path": "in.jsonl", "batch_size": batch_size}]
    if step:
        steps.append({"id": "identity", "kind": "bench_identity"})
    steps.append({"id": "export", "kind": "export_jsonl", "path": "out.jsonl"})
    return wp.Pipeline.from_dict({"pipeline": {"name": "python-step-bench"}, "step": steps}, folder / "p.toml")


def best(repeat: int, f: Callable[[], float]) -> float:
    return min(f() for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-concurrent", type=int, default=2)
    args = parser.parse_args()
    n = args.rows
    wp.step("bench_identity")(identity)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with open(folder / "in.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": i, "text": f"ticket {i}: my router will not boot", "score": i / 7}) + "\n")

        busy: List[float] = []

        def run(step: bool) -> float:
            result = pipeline(folder, args.batch_size, step).run(
                no_cache=True, progress=False, max_concurrent=args.max_concurrent
            )
            assert result.step("export")["records_in"] == n
            if step:
                busy.append(result.step("identity")["busy_seconds"])
            return result.elapsed_seconds

        with_step = best(args.repeat, lambda: run(True))
        without = best(args.repeat, lambda: run(False))

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

    ns = 1e9 / n
    added = with_step - without
    print(f"{n:,} rows, batches of {args.batch_size}, max_concurrent {args.max_concurrent}, best of {args.repeat}")
    print(f"run with the Python step     {with_step:8.3f} s")
    print(f"run without it               {without:8.3f} s")
    print(f"the step adds                {added * ns:8.0f} ns/record  (its busy time: {min(busy) * ns:.0f} ns/record)")
    print(f"plain Python loop            {loop * ns:8.0f} ns/record")
    print(f"step / plain loop            {added / loop:8.1f}x")


if __name__ == "__main__":
    main()
