"""Each bad input gets one clear error (file, line, problem) and exit code 2, no traceback."""

import json
import os

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
    from srlm.records import read_json

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "short one"}) + "\n" + json.dumps({"prompt": "word " * 3000}) + "\n")
    args = [a for a in tiny_run_args if not a.startswith("prompts.")]
    assert main(["run", *args, "prompts.source=file", f"prompts.file={prompts}", "sft.enabled=false",
                 "iterations=1"]) == 0
    m = read_json(os.path.join(str(tmp_path), "run", "metrics.json"))["iter_1"]
    assert m["sample/skipped_over_context"] == 1 and m["sample/candidates"] == 4


def test_stage_on_missing_run(capsys, tmp_path):
    code, err = run_cli(["judge", str(tmp_path / "run"), "-t", "1"], capsys)
    assert code == 2 and "models/M1 does not exist" in err


@pytest.mark.parametrize("cmd", ["run", "sft", "prompts", "sample", "judge", "pairs", "dpo", "eval", "report", "config"])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 200
