"""Benchmark: a million rows from a pyarrow Table through clean -> dedup and back to a
pyarrow Table, from Python, against the same pipeline run by the `weave` command from and
to Parquet files of the same data.

    pip install ./crates/weave-py pyarrow          # a release wheel
    python crates/weave-py/bench/from_memory.py [--rows N] [--repeat K] [--weave PATH]

Both sides run without a cache (the work, not a cache hit, is measured) with the same
`max_concurrent`; with `--cold-cache`, each run has an empty cache of its own instead
(the input's content is then hashed for its key on both sides, and what the steps keep is
stored). The Python side is timed from `run()` to the output's pyarrow Table:
the import of the input through the Arrow C stream, the run, and the export back. The
command's side is the wall time of the process: reading the Parquet file, the run, and
writing the Parquet file. The output of both is checked to be the same records. Each is
run `--repeat` times, alternating; the medians and their ratio are printed, and written
as JSON beside the data (`--workdir`, by default a temporary folder).

The `weave` command is, by default, the one installed with the wheel (the same compiled
code as the Python module); `--weave target/release/weave` compares with cargo's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq

import weave_pipelines as wp

WORDS = (
    "the order arrived late and the box was damaged please send a replacement "
    "my account is locked after the update I cannot sign in on the app "
    "refund requested for a double charge on my card last week thanks"
).split()


def make_table(rows: int, seed: int = 7) -> pa.Table:
    """`rows` support tickets: an id, a label and a text of 8 to 40 words with stray
    whitespace; about a fifth repeat an earlier text (some only in case or spacing)."""
    rng = random.Random(seed)
    texts: List[str] = []
    for i in range(rows):
        if i > 10 and rng.random() < 0.2:
            earlier = texts[rng.randrange(len(texts))]
            texts.append(earlier.upper() if rng.random() < 0.3 else "  " + earlier)
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 40))]
            texts.append(" ".join(w + ("  " if rng.random() < 0.05 else "") for w in words) + " ")
    labels = ["billing", "account", "shipping", None]
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "text": pa.array(texts, pa.string()),
            "label": pa.array([labels[i % 4] for i in range(rows)], pa.string()),
        }
    )


def pipeline_text(source: str, sink: Optional[str], threads: int) -> str:
    """The pipeline: load_parquet -> clean -> dedup (-> export_parquet)."""
    export = f'\n[[step]]\nid = "export"\nkind = "export_parquet"\npath = "{sink}"\n' if sink else ""
    return f"""[pipeline]
name = "from-memory-bench"

[resources]
max_concurrent = {threads}

[[step]]
id = "load"
kind = "load_parquet"
path = "{source}"

[[step]]
id = "clean"
kind = "clean"
fields = ["text"]
rules = ["trim", "collapse_whitespace", {{ min_chars = 20 }}]

[[step]]
id = "dedup"
kind = "dedup"
fields = ["text"]
normalize = ["lowercase"]
{export}"""


def run_python(workdir: Path, table: pa.Table, threads: int, cache: Optional[Path]) -> tuple[float, pa.Table]:
    """One run from the table in memory to the output table (with an empty cache in
    `cache`, or none); its wall time."""
    pipeline = wp.Pipeline.from_toml(pipeline_text("unused.parquet", None, threads), path=workdir / "python.toml")
    options: Dict[str, Any] = {"cache_dir": cache} if cache else {"no_cache": True}
    start = time.perf_counter()
    result = pipeline.run(inputs={"load": table}, outputs=["dedup"], progress=False, **options)
    out = result.table("dedup")
    return time.perf_counter() - start, out


def run_cli(weave: str, workdir: Path, threads: int, cache: Optional[Path]) -> float:
    """One run of the command from the Parquet file to a Parquet file (with an empty
    cache in `cache`, or none); its wall time."""
    toml = workdir / "cli.toml"
    toml.write_text(pipeline_text("input.parquet", "output.parquet", threads))
    options = ["--cache-dir", str(cache)] if cache else ["--no-cache"]
    start = time.perf_counter()
    subprocess.run([weave, "-q", "run", *options, str(toml)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def fresh(folder: Path) -> Path:
    """`folder`, empty."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="max_concurrent of both")
    parser.add_argument("--weave", default=shutil.which("weave"), help="the weave command (default: the wheel's)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--cold-cache", action="store_true", help="an empty cache for each run, not none")
    args = parser.parse_args(argv)
    if not args.weave:
        parser.error("no `weave` command on PATH: install the wheel, or give --weave")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="weave-bench-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)

    table = make_table(args.rows)
    pq.write_table(table, workdir / "input.parquet")
    python_times: List[float] = []
    cli_times: List[float] = []
    out = None
    for _ in range(args.repeat):
        cache = fresh(workdir / "cache") if args.cold_cache else None
        elapsed, out = run_python(workdir, table, args.threads, cache)
        python_times.append(elapsed)
        cache = fresh(workdir / "cache") if args.cold_cache else None
        cli_times.append(run_cli(args.weave, workdir, args.threads, cache))
    assert out is not None
    from_files = pq.read_table(workdir / "output.parquet")
    if out.to_pylist() != from_files.to_pylist():
        sys.exit("the outputs differ: the in-memory run and the command's did not give the same records")

    python_s, cli_s = statistics.median(python_times), statistics.median(cli_times)
    figures = {
        "rows_in": args.rows,
        "rows_out": out.num_rows,
        "threads": args.threads,
        "cache": "cold" if args.cold_cache else "none",
        "python_from_memory_s": python_s,
        "cli_from_files_s": cli_s,
        "ratio": python_s / cli_s,
        "python_runs_s": python_times,
        "cli_runs_s": cli_times,
        "weave": args.weave,
        "weave_pipelines": wp.__version__,
        "pyarrow": pa.__version__,
    }
    name = "from_memory_cold_cache.json" if args.cold_cache else "from_memory.json"
    (workdir / name).write_text(json.dumps(figures, indent=2))
    print(
        f"{args.rows:,} rows in, {out.num_rows:,} out, max_concurrent {args.threads}, "
        f"cache {figures['cache']}, median of {args.repeat}"
    )
    print(f"  python, pyarrow Table -> clean -> dedup -> pyarrow Table: {python_s:.3f} s")
    print(f"  weave run, Parquet file -> clean -> dedup -> Parquet file: {cli_s:.3f} s")
    print(f"  ratio: {python_s / cli_s:.2f}x (target: at most 1.15x)")
    print(f"  figures: {workdir / name}")
    return figures


if __name__ == "__main__":
    main()
