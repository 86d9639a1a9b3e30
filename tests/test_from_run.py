"""`srlm run --from-run SRC`: several methods start from one M1. SRC's pre-iteration outputs are
taken only where SRC made them with this run's settings, M0/M1 evaluation caches only when the
evaluation settings are equal, and an output the run already has is never replaced."""

import json
import os
import shutil

import pytest

from srlm.pipeline import freshness, prepare, start_from
from srlm.run.config import ConfigError, load_config
from srlm.run.rundir import RunDir
from srlm.stages import BY_NAME


def _dst(tiny_run, tmp_path, overrides=()):
    cfg = load_config(os.path.join(tiny_run, "config.yaml"), list(overrides))
    cfg.output_dir = str(tmp_path / "dst")
    return cfg, prepare(cfg)


EVAL_CACHES = ["answers_M0.jsonl", "answers_M1.jsonl", "answers_M1.jsonl.done", "pointwise_M0_by_M1.jsonl",
               "h2h_M2_vs_M1.jsonl", "answers_M3.jsonl", "alpaca_eval/M1/model_outputs.json",
               "alpaca_eval/M2/model_outputs.json", "mt_bench/M12.jsonl"]


def _source_with_eval(tiny_run, tmp_path) -> str:
    """A copy of the tiny run with evaluation caches of M0..M3 (the tiny run skips evaluation)."""
    src = str(tmp_path / "src")
    shutil.copytree(tiny_run, src)
    for name in EVAL_CACHES:
        path = os.path.join(src, "eval", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(name)
    return src


def test_takes_m1_with_its_marker_and_evaluation(tiny_run, tmp_path):
    cfg, rd = _dst(tiny_run, tmp_path, ["method=spin"])  # another method, same SFT settings
    source = _source_with_eval(tiny_run, tmp_path)
    src = RunDir(source)
    messages = []
    copied = start_from(cfg, rd, source, echo=messages.append)
    sft = BY_NAME["sft"]
    assert rd.model(1) in copied and freshness(sft, cfg, rd, 0) == (True, "")
    assert rd.read_marker(rd.model(1)) == src.read_marker(src.model(1))
    weights = [f for f in os.listdir(rd.model(1)) if f.endswith(".safetensors")]
    assert weights and all(open(os.path.join(rd.model(1), w), "rb").read()
                           == open(os.path.join(src.model(1), w), "rb").read() for w in weights)
    metrics = json.load(open(rd.metrics))
    assert metrics["sft"] == json.load(open(src.metrics))["sft"]
    # Only M0's and M1's evaluation came along; later models are this run's to make.
    taken = sorted(os.path.relpath(p, rd.eval_dir) for p in copied if p.startswith(rd.eval_dir))
    assert taken == ["alpaca_eval/M1/model_outputs.json", "answers_M0.jsonl", "answers_M1.jsonl",
                     "answers_M1.jsonl.done", "pointwise_M0_by_M1.jsonl"]
    assert open(rd.eval_file("answers_M1.jsonl")).read() == "answers_M1.jsonl"
    assert not os.path.exists(rd.iter_dir(1)) and not os.path.exists(rd.model(2))
    assert messages == [f"srlm: --from-run: took sft from {source}"]


def test_other_sft_settings_are_not_taken(tiny_run, tmp_path):
    cfg, rd = _dst(tiny_run, tmp_path, ["sft.learning_rate=0.123"])
    messages = []
    assert start_from(cfg, rd, tiny_run, echo=messages.append) == []
    assert not os.path.exists(rd.model(1))
    assert messages == [f"srlm: --from-run: sft of {tiny_run} not taken (config changed); building it here"]


def test_other_eval_settings_take_the_model_only(tiny_run, tmp_path):
    cfg, rd = _dst(tiny_run, tmp_path, ["eval.max_prompts=3"])
    copied = start_from(cfg, rd, _source_with_eval(tiny_run, tmp_path), echo=lambda m: None)
    assert copied == [rd.model(1)] and not os.path.exists(rd.eval_dir)


def test_an_existing_output_is_kept(tiny_run, tmp_path):
    cfg, rd = _dst(tiny_run, tmp_path)
    start_from(cfg, rd, tiny_run, echo=lambda m: None)
    assert start_from(cfg, rd, tiny_run, echo=lambda m: None) == []  # nothing left to take


def test_refuses_what_is_not_another_run(tiny_run, tmp_path):
    cfg, rd = _dst(tiny_run, tmp_path)
    with pytest.raises(ConfigError, match="not a run directory"):
        start_from(cfg, rd, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="this run's own directory"):
        start_from(cfg, rd, cfg.output_dir)


def test_cli_refuses_a_bad_source_before_the_run_directory_is_made(tmp_path, capsys):
    from srlm.cli import main

    out = tmp_path / "new"
    code = main(["run", "--config", "tiny", "--output-dir", str(out), "--from-run", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "--from-run" in err and "not a run directory" in err and "Traceback" not in err
    assert not out.exists()
