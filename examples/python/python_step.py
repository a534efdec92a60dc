"""A pipeline with a Python step, run from Python.

The quick start's support tickets are loaded, cleaned and deduplicated by Weave's own
steps; a Python step (`triage`, below) gives each ticket a priority from its wording and
drops the tickets that have no label; Weave writes the rest as JSON Lines.

Run it from a checkout, once `weave-pipelines` is installed (README.md, "Using Weave
from Python"):

    python examples/python/python_step.py [OUT_DIR]

OUT_DIR (default `python_step_out` in the working directory) gets the pipeline's output
(`triaged.jsonl`) and its `.weave` folder: cache, run records, quarantine file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import weave_pipelines as wp

TICKETS = Path(__file__).resolve().parent.parent / "quickstart" / "raw_data.csv"


@wp.step("triage", version="1", config={"urgent": ["urgent", "asap", "refund", "charged twice"]})
def triage(ticket: Dict[str, Any], config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Gives a ticket a priority from its words; drops the tickets with no label."""
    if not ticket["label"]:
        return None  # dropped, and counted under "triage returned None"
    text = ticket["text"].lower()
    found = [word for word in config["urgent"] if word in text]
    ticket["priority"] = "high" if found else "normal"
    ticket["urgent_words"] = found
    return ticket


PIPELINE = {
    "pipeline": {"name": "triage-tickets", "seed": 42},
    "step": [
        {"id": "load", "kind": "load_csv", "path": str(TICKETS), "on_bad_record": "skip"},
        {
            "id": "clean",
            "kind": "clean",
            "fields": ["text"],
            "rules": ["strip_html", "nfc", "trim", "collapse_whitespace", {"min_chars": 20}],
        },
        {"id": "dedup", "kind": "dedup", "fields": ["text"], "normalize": ["lowercase"]},
        # The Python step, named by the kind it was registered as; `urgent` overrides the
        # default in `config` above. A bad record (an exception) would be set aside.
        {
            "id": "triage",
            "kind": "triage",
            "urgent": ["urgent", "asap", "refund", "charged twice", "broken"],
            "on_bad_record": "skip",
        },
        {"id": "export", "kind": "export_jsonl", "path": "triaged.jsonl"},
    ],
}


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "python_step_out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    pipeline = wp.Pipeline.from_dict(PIPELINE, path=out / "pipeline.toml")
    result = pipeline.run(progress=False)
    step = result.step("triage")
    print(
        f"{result.status}: triage took {step['records_in']} tickets, kept {step['records_out']}, "
        f"dropped {sum(step['dropped'].values())}, set aside {step['quarantined']}"
    )
    tickets = [json.loads(line) for line in (out / "triaged.jsonl").read_text().splitlines()]
    high = [t for t in tickets if t["priority"] == "high"]
    print(f"{len(high)} of {len(tickets)} tickets are high priority; the first: {high[0]['text']!r}")


if __name__ == "__main__":
    main()
