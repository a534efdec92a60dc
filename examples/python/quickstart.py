"""The quick start from Python: support tickets from a pandas DataFrame, cleaned,
deduplicated, restyled and validated by the quick start's pipeline, and handed back as a
Hugging Face ``datasets.Dataset``, with no file in between.

    pip install ./crates/weave-py pandas datasets
    python examples/python/quickstart.py [--workdir DIR]

The pipeline is ``examples/quickstart/pipeline.toml`` as it is: its ``load`` step (a CSV
loader) takes the data frame instead of its file, and ``validate``'s output comes back as
a table. Its other steps run as written, so the JSONL export, the run record and the cache
go to the work folder (a temporary one unless ``--workdir`` says).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import List, Optional

import datasets
import pandas as pd

import weave_pipelines as wp

QUICKSTART = Path(__file__).resolve().parent.parent / "quickstart"


def main(argv: Optional[List[str]] = None) -> datasets.Dataset:
    """Runs the quick start on the tickets in memory; returns the validated records."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the run's files go (default: a temporary folder)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="weave-quickstart-"))
    workdir.mkdir(parents=True, exist_ok=True)

    # The raw tickets as a notebook would have them. Every column is text, as the
    # pipeline's CSV loader reads it (empty cells as "", not NaN), so the records are the
    # ones `weave run examples/quickstart/pipeline.toml` writes.
    tickets = pd.read_csv(QUICKSTART / "raw_data.csv", dtype=str, keep_default_na=False)

    # The pipeline file's text, taken as read from the work folder: relative paths (the
    # export, the .weave folder) resolve there.
    text = (QUICKSTART / "pipeline.toml").read_text(encoding="utf-8")
    pipeline = wp.Pipeline.from_toml(text, path=workdir / "pipeline.toml")
    result = pipeline.run(inputs={"load": tickets}, outputs=["validate"])
    print(f"{result.status}: {len(tickets)} tickets in, {result.step('validate')['records_out']} out; "
          f"pass rate {result.figures['validate']['pass_rate']:.2%}; run record {result.report_path}")

    dataset = datasets.Dataset(result.table("validate"))
    print(dataset)
    print(dataset[0]["text_technical"])
    return dataset


if __name__ == "__main__":
    main()
