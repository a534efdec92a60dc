"""Python steps (@wp.step): records in and out, bad records, retries, filters, cache keys,
Ctrl-C, and kinds the pipeline does not know."""

from __future__ import annotations

import datetime
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import weave_pipelines as wp
from conftest import REPO, long_pipeline, seconds_to_stop_on_ctrl_c


def write_records(path: Path, records: List[Dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def read_records(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def pipeline(tmp_path: Path, kind: str, step_keys: str = "", pipeline_keys: str = "") -> wp.Pipeline:
    """load in.jsonl → a step of `kind` (with `step_keys`) → export out.jsonl."""
    return wp.Pipeline.from_toml(
        f"""[pipeline]
name = "python-steps"{pipeline_keys}

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"

[[step]]
id = "py"
kind = "{kind}"
{step_keys}

[[step]]
id = "out"
kind = "export_jsonl"
path = "out.jsonl"
""",
        tmp_path / "pipeline.toml",
    )


TEXTS = [{"id": i, "text": t} for i, t in enumerate(["alpha", "", "beta", "boom", "gamma"])]


def test_records_go_through_the_function_in_order_with_their_types(tmp_path: Path) -> None:
    @wp.step("tag_length")
    def tag(record: Dict[str, Any]) -> Dict[str, Any]:
        record["length"] = len(record["text"])
        record["ratio"] = record["length"] / 4
        return record

    write_records(tmp_path / "in.jsonl", [{"id": 2**70, "text": "héllo", "tags": ["a"], "meta": {"k": None}}] + TEXTS)
    result = pipeline(tmp_path, "tag_length").run(progress=False)
    out = read_records(tmp_path / "out.jsonl")
    assert out[0] == {"id": 2**70, "text": "héllo", "tags": ["a"], "meta": {"k": None}, "length": 5, "ratio": 1.25}
    assert [r["id"] for r in out[1:]] == [r["id"] for r in TEXTS]
    assert list(out[1]) == ["id", "text", "tags", "meta", "length", "ratio"]
    step = result.step("py")
    assert (step["kind"], step["records_in"], step["records_out"]) == ("tag_length", 6, 6)
    assert step["busy_seconds"] > 0 and step["cpu_seconds"] > 0


def test_a_raising_step_quarantines_its_records_with_the_exception_message(tmp_path: Path) -> None:
    @wp.step("explode_on_boom")
    def explode(record: Dict[str, Any]) -> Dict[str, Any]:
        if record["text"] == "boom":
            raise ValueError(f"cannot take {record['text']!r}")
        if record["text"] == "":
            return {"when": {2024, 1}}  # a set is not record data: a bad record too
        return record

    write_records(tmp_path / "in.jsonl", TEXTS)
    quarantine = tmp_path / "quarantine.jsonl"
    result = pipeline(tmp_path, "explode_on_boom", 'on_bad_record = "skip"').run(
        quarantine=quarantine, progress=False
    )
    assert [r["text"] for r in read_records(tmp_path / "out.jsonl")] == ["alpha", "beta", "gamma"]
    assert result.step("py")["quarantined"] == 2
    set_aside = {r["record"]["text"]: r for r in read_records(quarantine)}
    assert set_aside["boom"]["reason"] == "ValueError: cannot take 'boom'"
    assert set_aside["boom"]["step"] == "py"
    assert set_aside["boom"]["record"] == {"id": 3, "text": "boom"}
    assert set_aside[""]["reason"].startswith("the record it returned is not JSON data: TypeError: ")
    assert "a set is not record data" in set_aside[""]["reason"]

    assert set_aside[""]["reason"].endswith("(field `when`)")

    # Without "skip", the first bad record stops the run, naming why.
    (tmp_path / "out.jsonl").unlink()
    with pytest.raises(wp.RunError, match="bad record: the record it returned is not JSON data: TypeError: a set"):
        pipeline(tmp_path, "explode_on_boom").run(progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_wrong_return_value_is_a_bad_record(tmp_path: Path) -> None:
    @wp.step("returns_a_list")
    def wrong(record: Dict[str, Any]) -> Any:
        return [record] if record["id"] == 0 else record

    write_records(tmp_path / "in.jsonl", TEXTS)
    quarantine = tmp_path / "q.jsonl"
    pipeline(tmp_path, "returns_a_list", 'on_bad_record = "skip"').run(quarantine=quarantine, progress=False)
    [bad] = read_records(quarantine)
    assert bad["reason"] == "TypeError: it returned a list, not a dict or None"
    assert len(read_records(tmp_path / "out.jsonl")) == len(TEXTS) - 1


class Busy(wp.TransientError):
    """A failure of our own that may pass: a subclass is retried too."""


def test_a_transient_error_is_retried_and_counted(tmp_path: Path) -> None:
    calls: Dict[str, int] = {}

    @wp.step("flaky")
    def flaky(record: Dict[str, Any]) -> Dict[str, Any]:
        calls[record["text"]] = calls.get(record["text"], 0) + 1
        if record["text"] == "beta" and calls["beta"] <= 2:
            record["text"] = "changed by a call that failed"
            raise Busy("the service is busy")
        return record

    write_records(tmp_path / "in.jsonl", TEXTS)
    metrics = tmp_path / "metrics.prom"
    retry = 'retry = { max_retries = 3, retry_delay = "1ms" }'
    result = pipeline(tmp_path, "flaky", retry).run(metrics_file=metrics, progress=False)
    # The failing record's call alone is made again, on the record as it was.
    assert calls == {"alpha": 1, "": 1, "beta": 3, "boom": 1, "gamma": 1}
    assert read_records(tmp_path / "out.jsonl") == TEXTS
    assert result.step("py")["retries"] == 2
    prometheus = metrics.read_text()
    assert 'weave_step_retries_total{pipeline="python-steps",step="py"} 2' in prometheus
    assert 'weave_step_requests_total{pipeline="python-steps",step="py"} 7' in prometheus
    assert 'weave_step_failed_requests_total{pipeline="python-steps",step="py"} 2' in prometheus

    # Past the step's retries, the record is a bad record: set aside, or the run fails.
    @wp.step("busy_on_beta")
    def busy_on_beta(record: Dict[str, Any]) -> Dict[str, Any]:
        if record["text"] == "beta":
            raise wp.TransientError("still busy")
        return record

    keys = 'retry = { max_retries = 2, retry_delay = "1ms" }'
    quarantine = tmp_path / "q.jsonl"
    skipped = pipeline(tmp_path, "busy_on_beta", keys + '\non_bad_record = "skip"').run(
        quarantine=quarantine, progress=False
    )
    assert (skipped.step("py")["retries"], skipped.step("py")["quarantined"]) == (2, 1)
    [set_aside] = read_records(quarantine)
    assert set_aside["reason"] == "TransientError: still busy (still failing after 2 retries)"
    assert [r["text"] for r in read_records(tmp_path / "out.jsonl")] == ["alpha", "", "boom", "gamma"]

    (tmp_path / "out.jsonl").unlink()
    with pytest.raises(wp.RunError, match="TransientError: still busy \\(still failing after 2 retries\\)"):
        pipeline(tmp_path, "busy_on_beta", keys).run(progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_filter_drops_records_and_counts_them(tmp_path: Path) -> None:
    @wp.step("non_empty")
    def non_empty(record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        return record if record["text"] else None

    write_records(tmp_path / "in.jsonl", TEXTS)
    # The progress callback takes the lock while the step runs: no deadlock, and the
    # step's counts are in it.
    snapshots: List[Dict[str, Any]] = []
    result = pipeline(tmp_path, "non_empty").run(progress=snapshots.append)
    assert [r["text"] for r in read_records(tmp_path / "out.jsonl")] == ["alpha", "beta", "boom", "gamma"]
    step = result.step("py")
    assert (step["records_in"], step["records_out"]) == (5, 4)
    assert step["dropped"] == {"non_empty returned None": 1}
    [shown] = [s for s in snapshots[-1]["steps"] if s["step"] == "py"]
    assert (shown["records_in"], shown["records_out"], shown["finished"]) == (5, 4, True)


def test_the_config_reaches_the_function_over_its_defaults(tmp_path: Path) -> None:
    @wp.step("suffix", config={"field": "text", "suffix": "!"})
    def suffix(record: Dict[str, Any], config: Dict[str, Any]) -> Dict[str, Any]:
        record[config["field"]] += config["suffix"]
        return record

    write_records(tmp_path / "in.jsonl", TEXTS[:1])
    pipeline(tmp_path, "suffix").run(progress=False)
    assert read_records(tmp_path / "out.jsonl") == [{"id": 0, "text": "alpha!"}]
    pipeline(tmp_path, "suffix", 'suffix = "?"').run(progress=False)
    assert read_records(tmp_path / "out.jsonl") == [{"id": 0, "text": "alpha?"}]

    with pytest.raises(wp.PipelineError) as caught:
        pipeline(tmp_path, "suffix", 'sufix = "?"')
    [d] = caught.value.diagnostics
    assert d["message"] == "unknown key `sufix` in step"
    assert (d["line"], d["column"], d["step"], d["hint"]) == (12, 1, "py", "did you mean `suffix`?")


def first_version(record: Dict[str, Any]) -> Dict[str, Any]:
    record["v"] = 1
    return record


def second_version(record: Dict[str, Any]) -> Dict[str, Any]:
    record["v"] = 2
    return record


def test_the_cache_key_covers_the_function_source_and_version(tmp_path: Path) -> None:
    write_records(tmp_path / "in.jsonl", TEXTS)
    cache = tmp_path / "cache"

    def run_with(function: Any, version: str) -> str:
        """Whether the step ran or was replayed; the export always runs (refreshed), so
        that an unchanged run is not skipped whole."""
        wp.step("versioned", version=version)(function)
        result = pipeline(tmp_path, "versioned").run(cache_dir=cache, refresh=["out"], progress=False)
        assert {r["v"] for r in read_records(tmp_path / "out.jsonl")} == {2 if function is second_version else 1}
        return str(result.step("py")["cache"])

    assert run_with(first_version, "1") == "ran"
    assert run_with(first_version, "1") == "replayed"
    # The plan says why a changed function runs again.
    wp.step("versioned", version="1")(second_version)
    [planned] = [s for s in pipeline(tmp_path, "versioned").plan(cache_dir=cache)["steps"] if s["id"] == "py"]
    assert planned["cache"]["status"] == "stale"
    assert any(r.startswith("config `function.source` changed") for r in planned["cache"]["reasons"])
    assert run_with(second_version, "1") == "ran", "another source is another key"
    assert run_with(first_version, "2") == "ran", "another version is another key"
    assert run_with(first_version, "1") == "replayed"

    # A function without a source file (made by exec) is keyed by its name and bytecode.
    made: Dict[str, Any] = {}
    exec("def made(record):\n    record['v'] = 1\n    return record\n", made)
    assert run_with(made["made"], "1") == "ran"
    exec("def made(record):\n    record['v'] = 1\n    return record\n", made)
    assert run_with(made["made"], "1") == "replayed"
    exec("def made(record):\n    record['v'] = 1\n    record['w'] = 0\n    return record\n", made)
    assert run_with(made["made"], "1") == "ran"


def set_field(record: Dict[str, Any], value: int) -> Dict[str, Any]:
    record["v"] = value
    return record


class Setter:
    """A callable object as a step."""

    def __call__(self, record: Dict[str, Any]) -> Dict[str, Any]:
        record["v"] = 3
        return record


def test_partials_and_callable_objects_are_keyed_by_their_code_and_arguments(tmp_path: Path) -> None:
    write_records(tmp_path / "in.jsonl", TEXTS)

    def source_key(function: Any) -> str:
        wp.step("keyed_callable")(function)
        [planned] = [s for s in pipeline(tmp_path, "keyed_callable").plan()["steps"] if s["id"] == "py"]
        return str(planned["config"]["function"]["source"])

    one = source_key(functools.partial(set_field, value=1))
    assert source_key(functools.partial(set_field, value=1)) == one
    assert source_key(functools.partial(set_field, value=2)) != one
    assert source_key(Setter()) == source_key(Setter()) != one
    pipeline(tmp_path, "keyed_callable").run(progress=False)
    assert {r["v"] for r in read_records(tmp_path / "out.jsonl")} == {3}


LONG = long_pipeline(
    """[[step]]
id = "py"
kind = "slow_upper"
"""
)


def test_keyboard_interrupt_stops_a_run_with_a_python_step_and_commits_nothing(tmp_path: Path) -> None:
    @wp.step("slow_upper")
    def slow_upper(record: Dict[str, Any]) -> Dict[str, Any]:
        record["text"] = record["text"].upper()
        return record

    p = wp.Pipeline.from_toml(LONG, tmp_path / "long.toml")
    stopped_after = seconds_to_stop_on_ctrl_c(lambda: p.run(no_cache=True, max_concurrent=2, progress=False))
    # As in test_run.py: about 0.1 s here; the bound leaves room for a busy machine, and
    # a run that does not stop (100 million records through Python) fails it.
    print(f"stopped {stopped_after:.3f}s after the interrupt")
    assert stopped_after < 10.0, f"stopped {stopped_after:.2f}s after the interrupt"
    assert not (tmp_path / "out.jsonl").exists()
    [record] = (tmp_path / ".weave" / "runs").iterdir()
    report = json.loads((record / "report.json").read_text())
    assert report["status"] == "interrupted", report["status"]
    py = next(s for s in report["steps"] if s["step"] == "py")
    assert 0 < py["records_out"] < 100_000_000


def test_an_unknown_kind_is_a_validation_error_with_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(wp.PipelineError) as caught:
        pipeline(tmp_path, "never_registered")
    [d] = caught.value.diagnostics
    assert d["message"] == "unknown step kind `never_registered`"
    assert (d["file"], d["line"], d["column"], d["step"]) == (str(tmp_path / "pipeline.toml"), 11, 8, "py")
    assert "never_registered" in caught.value.text

    @wp.step("now_registered", version="3", config={"n": 1})
    def now_registered(record: Dict[str, Any]) -> Dict[str, Any]:
        """Passes records through."""
        return record

    assert "now_registered" in wp.step_kinds()
    write_records(tmp_path / "in.jsonl", TEXTS)
    planned = {s["id"]: s for s in pipeline(tmp_path, "now_registered", "n = 2").plan()["steps"]}
    assert planned["py"]["kind"] == "now_registered"
    assert planned["py"]["shape"] == "transform"
    # Its calls run on a thread of their own, one at a time (they hold the GIL anyway).
    assert planned["py"]["resources"]["io_concurrency"] == 1
    assert planned["py"]["cache"]["stored"], "cache = auto keeps a Python step's output"
    assert planned["py"]["config"]["config"] == {"n": 2}
    assert planned["py"]["config"]["function"]["version"] == "3"


def test_bad_registrations_are_refused() -> None:
    with pytest.raises(ValueError, match="`clean` is a built-in step kind"):
        wp.step("clean")(first_version)
    with pytest.raises(ValueError, match="lowercase word"):
        wp.step("Not A Kind")(first_version)
    with pytest.raises(TypeError, match="`config` must be the function's second parameter"):

        @wp.step("config_first")
        def config_first(config: Dict[str, Any], record: Dict[str, Any]) -> Dict[str, Any]:
            return record

    with pytest.raises(TypeError, match="config must hold JSON data"):
        wp.step("not_json", config={"when": datetime.date(2024, 1, 1)})


def test_the_python_step_example_runs(tmp_path: Path) -> None:
    example = REPO / "examples" / "python" / "python_step.py"
    done = subprocess.run([sys.executable, str(example), str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("succeeded: triage took "), done.stdout
    tickets = read_records(tmp_path / "triaged.jsonl")
    assert tickets and all(t["label"] for t in tickets)
    assert {t["priority"] for t in tickets} == {"high", "normal"}
    high = [t for t in tickets if t["priority"] == "high"]
    assert all(t["urgent_words"] and all(w in t["text"].lower() for w in t["urgent_words"]) for t in high)
    assert f"{len(high)} of {len(tickets)} tickets are high priority" in done.stdout
    [record] = (tmp_path / ".weave" / "runs").iterdir()
    report = json.loads((record / "report.json").read_text())
    triage = next(s for s in report["steps"] if s["step"] == "triage")
    assert triage["records_out"] == len(tickets)


def test_a_batch_step_takes_and_returns_pyarrow_record_batches(tmp_path: Path) -> None:
    # pyarrow is a test dependency (.ci/run installs it); batch mode needs it.
    import pyarrow as pa
    import pyarrow.compute as pc
    seen: List[Any] = []

    @wp.step("long_texts", batch=True, config={"min_length": 4})
    def long_texts(batch: Any, config: Dict[str, Any]) -> Any:
        seen.append(type(batch))
        lengths = pc.utf8_length(batch["text"])
        kept = batch.filter(pc.greater_equal(lengths, config["min_length"]))
        return kept.append_column("length", pc.utf8_length(kept["text"]))

    write_records(tmp_path / "in.jsonl", TEXTS)
    result = pipeline(tmp_path, "long_texts", "min_length = 5").run(progress=False)
    assert seen == [pa.RecordBatch]
    assert read_records(tmp_path / "out.jsonl") == [
        {"id": 0, "text": "alpha", "length": 5},
        {"id": 4, "text": "gamma", "length": 5},
    ]
    step = result.step("py")
    assert (step["records_in"], step["records_out"]) == (5, 2)
    assert step["dropped"] == {"long_texts left it out": 3}

    # A table of several chunks is one batch out.
    @wp.step("doubled", batch=True)
    def doubled(batch: Any) -> Any:
        return pa.Table.from_batches([batch, batch])

    pipeline(tmp_path, "doubled").run(progress=False)
    assert [r["id"] for r in read_records(tmp_path / "out.jsonl")] == [r["id"] for r in TEXTS] * 2


def test_a_failing_batch_step_sets_its_batch_aside_or_is_retried(tmp_path: Path) -> None:
    calls = {"n": 0}

    @wp.step("batch_flaky", batch=True)
    def batch_flaky(batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise wp.TransientError("try again")
        if calls["n"] == 2:
            raise KeyError("no such column")
        return batch

    write_records(tmp_path / "in.jsonl", TEXTS)
    quarantine = tmp_path / "q.jsonl"
    keys = 'on_bad_record = "skip"\nmax_bad_records = 10\nretry = { max_retries = 2, retry_delay = "1ms" }'
    p = pipeline(tmp_path, "batch_flaky", keys, pipeline_keys="\nmax_bad_records = 10")
    result = p.run(quarantine=quarantine, progress=False)
    step = result.step("py")
    assert (step["retries"], step["quarantined"], step["records_out"]) == (1, len(TEXTS), 0)
    set_aside = read_records(quarantine)
    assert [r["record"]["id"] for r in set_aside] == [r["id"] for r in TEXTS]
    assert {r["reason"] for r in set_aside} == {"KeyError: 'no such column'"}

    @wp.step("not_a_table", batch=True)
    def not_a_table(batch: Any) -> Any:
        return batch.to_pylist()

    with pytest.raises(wp.RunError, match="what not_a_table returned: a list is not a table"):
        pipeline(tmp_path, "not_a_table").run(progress=False)


def test_a_python_step_runs_between_data_in_and_out_of_memory(tmp_path: Path) -> None:
    @wp.step("in_memory_upper")
    def upper(record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if not record["text"]:
            return None
        record["text"] = record["text"].upper()
        return record

    write_records(tmp_path / "in.jsonl", [])
    result = pipeline(tmp_path, "in_memory_upper").run(inputs={"load": TEXTS}, outputs=["py"], progress=False)
    assert result.table("py").to_pylist() == [
        {"id": r["id"], "text": r["text"].upper()} for r in TEXTS if r["text"]
    ]


def test_what_a_function_returns_becomes_the_records_values(tmp_path: Path) -> None:
    @wp.step("value_kinds")
    def value_kinds(record: Dict[str, Any]) -> Dict[str, Any]:
        if record["id"] == 1:
            return {1: "a key that is no string"}
        if record["id"] == 2:
            loop: List[Any] = []
            loop.append(loop)
            return {"loop": loop}
        return {
            "big": 2**64 + 1,
            "negative_big": -(2**70),
            "u64": 2**63,
            "pair": (1, "two"),
            "nested": {"z": [1.5, None, True], "a": {}},
            "nan": float("nan"),
            "text": "naïve ☃",
        }

    write_records(tmp_path / "in.jsonl", TEXTS[:3])
    quarantine = tmp_path / "q.jsonl"
    keys = 'on_bad_record = "skip"\nmax_bad_records = 2'
    p = pipeline(tmp_path, "value_kinds", keys, pipeline_keys="\nmax_bad_records = 2")
    p.run(quarantine=quarantine, progress=False)
    [out] = read_records(tmp_path / "out.jsonl")
    assert out == {
        "big": 2**64 + 1,
        "negative_big": -(2**70),
        "u64": 2**63,
        "pair": [1, "two"],
        "nested": {"z": [1.5, None, True], "a": {}},
        "nan": None,  # JSON has no NaN: the export writes null, and counts it
        "text": "naïve ☃",
    }
    assert list(out["nested"]) == ["z", "a"], "a dict's order is kept"
    reasons = {r["record"]["id"]: r["reason"] for r in read_records(quarantine)}
    assert reasons[1] == "the record it returned is not JSON data: TypeError: a key is a int, not a str"
    assert reasons[2].startswith("the record it returned is not JSON data: ValueError: nested more than 128 deep")
