"""RLAIF / a frozen AI judge (judge.model): which model the judge stage loads and records, the
config checks, and a tiny run whose iteration-2 judgments are written by M1, not M2."""

import json
import os

import pytest

from srlm import stages
from srlm.engines.modeling import ModelRef
from srlm.run.config import Config, ConfigError, load_config, with_overrides
from srlm.run.rundir import RunDir


def _cfg(*overrides):
    return with_overrides(Config(), ["output_dir=/tmp/srlm-rlaif-unit", *overrides])


def test_judge_model_resolution(tmp_path, tiny_model):
    rd = RunDir(str(tmp_path))
    judge = stages.BY_NAME["judge"]
    # Empty: M_t judges itself, and the recorded input is exactly the policy's directory (as before).
    cfg = _cfg()
    assert judge.model(cfg, rd, 2) == ModelRef(rd.model(2))
    assert judge.inputs(cfg, rd, 2)[0] == rd.model(2)
    # M1: the SFT model in every iteration.
    cfg = _cfg("judge.model=M1")
    assert judge.model(cfg, rd, 1) == judge.model(cfg, rd, 3) == ModelRef(rd.model(1))
    assert judge.inputs(cfg, rd, 3)[0] == rd.model(1)
    # M0: model.name_or_path; a local directory; an endpoint (a string the pipeline opens as a client).
    cfg = _cfg(f"model.name_or_path={tiny_model}", "judge.model=M0")
    assert judge.model(cfg, rd, 2) == ModelRef(tiny_model)
    assert judge.model(_cfg(f"judge.model={tiny_model}"), rd, 2) == ModelRef(tiny_model)
    assert judge.model(_cfg("judge.model=openai:gpt-x@http://127.0.0.1:9/v1"), rd, 2) == "openai:gpt-x@http://127.0.0.1:9/v1"
    assert judge.inputs(_cfg("judge.model=openai:gpt-x@http://h/v1"), rd, 2)[0] == "openai:gpt-x@http://h/v1"


def test_rlaif_needs_a_frozen_judge():
    with pytest.raises(ConfigError, match="method rlaif needs a frozen judge: set judge.model"):
        load_config("tiny", ["method=rlaif"])
    with pytest.raises(ConfigError, match="judge.model M2: a frozen judge must exist before iteration 1"):
        load_config("tiny", ["judge.model=M2"])
    cfg = load_config("rlaif")
    assert cfg.method == "rlaif" and cfg.judge.model == "M1"
    # The packaged RLAIF config is default.yaml plus the judge: same sizes.
    default = load_config("default")
    assert cfg.model_dump(exclude={"method", "output_dir", "judge"}) == default.model_dump(
        exclude={"method", "output_dir", "judge"})
    assert cfg.judge.model_dump(exclude={"model"}) == default.judge.model_dump(exclude={"model"})


def test_rlaif_run_judges_with_m1_in_every_iteration(tmp_path, tiny_run_args):
    """Two iterations on the tiny model: both judge stages load M1 (recorded in their markers with
    the same digest: the frozen judge is identical across iterations), while sampling uses M_t."""
    from srlm.cli import main

    assert main(["run", "--config", "tiny", *tiny_run_args, "method=rlaif", "judge.model=M1", "--no-eval"]) == 0
    root = os.path.join(str(tmp_path), "run")
    rd = RunDir(root)
    cfg = load_config(rd.config)
    assert cfg.method == "rlaif" and cfg.judge.model == "M1"
    m1_digest = rd.digest(rd.model(1))
    for t in (1, 2):
        judge_inputs = rd.read_marker(rd.judgments(t))["inputs"]
        assert judge_inputs["models/M1"] == m1_digest
        assert f"models/M{t + 1}" not in judge_inputs and not any(k.startswith("models/M2") for k in judge_inputs)
        assert stages.judge_model(cfg, rd, t) == ModelRef(rd.model(1))
    # The policy still changes: iteration 2 samples from M2, which DPO trained.
    assert "models/M2" in rd.read_marker(rd.candidates(2))["inputs"]
    assert os.path.exists(rd.model(3) + ".done")
    metrics = json.load(open(rd.metrics))
    assert metrics["iter_2"]["judge/judgments"] == cfg.judge.k * metrics["iter_2"]["sample/candidates"]
