"""Pipelines from a file, TOML text and a dict; their errors; plan() as data."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import weave_pipelines as wp

BAD = """[pipeline]
name = "bad"

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"

[[step]]
id = "clean"
kind = "clean"
ruls = ["trim"]
"""


def test_a_file_is_read_and_checked(quickstart: Path) -> None:
    p = wp.Pipeline.from_file(quickstart)
    assert p.name == "support-tickets"
    assert p.path == quickstart
    assert p.text == quickstart.read_text()


def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        wp.Pipeline.from_file(tmp_path / "nope.toml")


def test_a_validation_error_carries_file_line_column_step_and_hint(tmp_path: Path, weave_bin: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    with pytest.raises(wp.PipelineError) as caught:
        wp.Pipeline.from_file(path)
    err = caught.value
    assert isinstance(err, wp.WeaveError)
    # Two errors, as `weave validate` finds them: `rules` is missing, `ruls` unknown.
    assert len(err.diagnostics) == 2
    [d] = [d for d in err.diagnostics if d["code"] == "unknown-key"]
    assert (d["file"], d["line"], d["column"], d["step"]) == (str(path), 12, 1, "clean")
    assert d["code"] == "unknown-key"
    assert "rules" in d["hint"]
    # The text is what `weave validate` prints, byte for byte.
    cli = subprocess.run([weave_bin, "validate", path], capture_output=True, text=True)
    assert cli.returncode == 1
    assert err.text == cli.stderr.rstrip("\n")
    assert str(err) == err.text


def test_toml_text_resolves_paths_from_the_path_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("text\nhello\nworld\n")
    text = BAD.replace("ruls", "rules").replace('[[step]]\nid = "clean"', '[[step]]\nid = "clean"\nafter = ["load"]')
    text += '\n[[step]]\nid = "out"\nkind = "export_jsonl"\npath = "out.jsonl"\n'
    p = wp.Pipeline.from_toml(text, tmp_path / "virtual.toml")
    result = p.run()
    assert result.step("out")["records_in"] == 2
    assert (tmp_path / "out.jsonl").read_text().splitlines() == ['{"text":"hello"}', '{"text":"world"}']


def test_a_toml_syntax_error_has_its_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(wp.PipelineError) as caught:
        wp.Pipeline.from_toml('[pipeline]\nname = "x"\nseed = = 3\n', tmp_path / "p.toml")
    d = caught.value.diagnostics[0]
    assert (d["line"], d["column"]) == (3, 8)
    assert d["file"] == str(tmp_path / "p.toml")


def test_a_dict_builds_the_same_pipeline_as_its_file(quickstart: Path) -> None:
    spec = {
        "pipeline": {"name": "from-dict", "seed": 7},
        "step": [
            {"id": "load", "kind": "load_csv", "path": "raw_data.csv"},
            {"id": "clean", "kind": "clean", "fields": ["text"], "rules": ["trim", {"min_chars": 20}]},
            {"id": "export", "kind": "export_jsonl", "path": "dict.jsonl", "after": ["clean"]},
        ],
    }
    p = wp.Pipeline.from_dict(spec, quickstart.parent / "dict.toml")
    assert p.name == "from-dict"
    assert [s["id"] for s in p.plan()["steps"]] == ["load", "clean", "export"]
    result = p.run(no_cache=True)
    assert result.step("export")["records_in"] == result.step("clean")["records_out"] > 0
    assert (quickstart.parent / "dict.jsonl").is_file()


def test_a_dict_with_an_error_points_into_its_toml_text(tmp_path: Path) -> None:
    spec = {"pipeline": {"name": "x"}, "step": [{"id": "load", "kind": "load_csvv", "path": "a.csv"}]}
    with pytest.raises(wp.PipelineError) as caught:
        wp.Pipeline.from_dict(spec, tmp_path / "x.toml")
    d = caught.value.diagnostics[0]
    assert d["step"] == "load" and d["hint"] == "did you mean `load_csv`?"
    # The line and column point at the kind in the dict's TOML form.
    line = wp._native.Pipeline.dict_to_toml(spec).splitlines()[d["line"] - 1]
    assert line[d["column"] - 1 :] == '"load_csvv"'


def test_a_dict_value_without_a_toml_form_is_a_type_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"the pipeline\.step\[0\]\.path: a NoneType has no TOML form"):
        wp.Pipeline.from_dict({"step": [{"id": "a", "path": None}]}, tmp_path / "x.toml")


def test_plan_is_data_and_sees_the_cache(quickstart: Path) -> None:
    p = wp.Pipeline.from_file(quickstart)
    plan = p.plan()
    assert plan["pipeline"] == "support-tickets"
    assert plan["levels"] == [["load"], ["clean"], ["dedup"], ["augment"], ["validate"], ["export"]]
    assert plan["critical_path"]["steps"][0] == "load"
    assert {s["cache"]["status"] for s in plan["steps"] if s["cache"]} == {"compute"}
    p.run()
    # After a run nothing is computed again: each step is cached or not needed.
    after = {s["id"]: s["cache"]["status"] for s in p.plan()["steps"] if s["cache"]}
    assert set(after.values()) <= {"cached", "skip (not needed)"}, after
    assert "cached" in after.values()


def test_plan_matches_weave_plan_json(quickstart: Path, weave_bin: Path) -> None:
    import json

    cli = subprocess.run([weave_bin, "plan", "--format", "json", quickstart], capture_output=True, text=True, check=True)
    assert wp.Pipeline.from_file(quickstart).plan() == json.loads(cli.stdout)
