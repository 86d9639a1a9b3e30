"""Each bad input gets one clear error (file, line, problem) and exit code 2, no traceback."""

import json
import os
import re

import pytest

from srlm.cli import main


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def test_missing_config_file(capsys, tmp_path):
    code, err = run_cli(["run", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "nope.yaml" in err and "not found" in err and "Traceback" not in err


def test_model_path_does_not_exist(capsys, tmp_path):
    code, err = run_cli(["run", f"output_dir={tmp_path}/r", "model.name_or_path=./no/such/model"], capsys)
    assert code == 2 and "./no/such/model: model path does not exist" in err


def test_directory_that_is_not_a_model(capsys, tmp_path):
    code, err = run_cli(["run", f"output_dir={tmp_path}/r", f"model.name_or_path={tmp_path}"], capsys)
    assert code == 2 and "not a model directory" in err


def test_template_without_placeholders(capsys, tmp_path, tiny_run_args):
    bad = tmp_path / "tpl.txt"
    bad.write_text("Rate this response: {response}")
    code, err = run_cli(["run", *tiny_run_args, f"judge.template={bad}"], capsys)
    assert code == 2 and "tpl.txt" in err and "{prompt}" in err


def test_malformed_seed_line(capsys, tmp_path, tiny_run_args):
    bad = tmp_path / "ift_bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" + '{"prompt": "c", "response"\n')
    code, err = run_cli(["run", *tiny_run_args, f"data.ift=[{bad}]"], capsys)
    assert code == 2 and "ift_bad.jsonl:2: malformed JSON" in err


def test_prompt_file_with_empty_prompt(capsys, tmp_path, tiny_run_args):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": " "}) + "\n")
    code, err = run_cli(["run", *tiny_run_args, "prompts.source=file", f"prompts.file={bad}", "sft.enabled=false"],
                        capsys)
    assert code == 2 and "prompts.jsonl:2: field 'prompt' is empty" in err


def test_over_long_prompts_are_skipped_and_counted(tmp_path, tiny_run_args):
    from srlm.run.records import read_json

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "short one"}) + "\n" + json.dumps({"prompt": "word " * 3000}) + "\n")
    args = [a for a in tiny_run_args if not a.startswith("prompts.")]
    assert main(["run", *args, "prompts.source=file", f"prompts.file={prompts}", "sft.enabled=false",
                 "iterations=1"]) == 0
    m = read_json(os.path.join(str(tmp_path), "run", "metrics.json"))["iter_1"]
    assert m["sample/skipped_over_context"] == 1 and m["sample/candidates"] == 4


def test_stage_on_missing_run(capsys, tmp_path):
    code, err = run_cli(["judge", str(tmp_path / "run"), "-t", "1"], capsys)
    # "models/M1 does not exist" before the stage table (stages.py), "its input models/M1 is not built" after
    assert code == 2 and re.search(r"models/M1 (does not exist|is not built)", err) and "Traceback" not in err


@pytest.mark.parametrize("cmd", ["run", "sft", "prompts", "sample", "judge", "pairs", "dpo", "eval", "report", "config"])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 200


# --- inputs are checked before any compute (srlm.checks) --------------------------------------

def _prefs_with_bad_label(tmp_path) -> str:
    prefs = tmp_path / "prefs.jsonl"
    row = {"prompt": "Which is better?", "response_a": "one", "response_b": "two", "label": "a"}
    prefs.write_text(json.dumps(row) + "\n" + json.dumps(row | {"label": "left"}) + "\n")
    return str(prefs)


def _no_sft(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("SFT started although an input is bad")

    monkeypatch.setattr("srlm.loop.sft.run", refuse)


def _calls_check_inputs(module) -> bool:
    import inspect

    return "check_inputs" in inspect.getsource(module)


def test_check_inputs_through_the_cli_lists_every_problem(capsys, tmp_path, tiny_run_args, monkeypatch):
    """Until pipeline.run calls checks.check_inputs itself, call it first here: the CLI turns the
    one InputError listing several problems into exit 2 without a traceback."""
    from srlm import checks, pipeline

    original = pipeline.run

    def checked_run(cfg, *a, **k):
        checks.check_inputs(cfg)
        return original(cfg, *a, **k)

    monkeypatch.setattr(pipeline, "run", checked_run)
    _no_sft(monkeypatch)
    prefs = _prefs_with_bad_label(tmp_path)
    code, err = run_cli(["run", *tiny_run_args, f"eval.human_prefs=[{prefs}]", f"eval.prompts={tmp_path}/none.jsonl"],
                        capsys)
    assert code == 2 and "Traceback" not in err
    assert "2 problems in the inputs" in err
    assert f"{prefs}:2: 'label' must be 'a', 'b' or 'tie' (got 'left')" in err
    assert f"{tmp_path}/none.jsonl: file not found" in err


@pytest.mark.skipif(not _calls_check_inputs(__import__("srlm.pipeline").pipeline),
                    reason="pipeline.run does not call srlm.checks.check_inputs(cfg) yet")
def test_run_refuses_bad_human_label_before_sft(capsys, tmp_path, tiny_run_args, monkeypatch):
    _no_sft(monkeypatch)
    prefs = _prefs_with_bad_label(tmp_path)
    code, err = run_cli(["run", *tiny_run_args, "eval.enabled=true", f"eval.human_prefs=[{prefs}]"], capsys)
    assert code == 2 and f"{prefs}:2: 'label' must be 'a', 'b' or 'tie' (got 'left')" in err
    assert not os.path.exists(os.path.join(str(tmp_path), "run", "models", "M1"))


@pytest.mark.skipif(not _calls_check_inputs(__import__("srlm.cli").cli),
                    reason="the stage commands do not call srlm.checks.check_inputs(cfg) yet")
def test_stage_command_refuses_bad_human_label_before_sft(capsys, tmp_path, tiny_run_args, monkeypatch):
    _no_sft(monkeypatch)
    prefs = _prefs_with_bad_label(tmp_path)
    args = [a for a in tiny_run_args if not a.startswith("output_dir=")]
    code, err = run_cli(["sft", str(tmp_path / "run"), *args, f"eval.human_prefs=[{prefs}]"], capsys)
    assert code == 2 and f"{prefs}:2: 'label' must be 'a', 'b' or 'tie' (got 'left')" in err
