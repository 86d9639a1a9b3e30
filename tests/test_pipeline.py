"""The whole loop on a tiny model: every artifact of the run-directory contract."""

import json
import os

import pytest

from srlm.run.config import load_config
from srlm.run.records import CandidateRecord, JudgmentRecord, PairRecord, PromptRecord, read_jsonl


def test_run_directory_contract(tiny_run):
    cfg = load_config(os.path.join(tiny_run, "config.yaml"))
    assert cfg.iterations == 2 and cfg.output_dir == tiny_run
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for m in ("M1", "M2", "M3"):
        d = os.path.join(tiny_run, "models", m)
        assert os.path.exists(d + ".done")
        AutoModelForCausalLM.from_pretrained(d)
        AutoTokenizer.from_pretrained(d)
        assert not os.path.exists(d + ".tmp")
    metrics = json.load(open(os.path.join(tiny_run, "metrics.json")))
    for t in (1, 2):
        it = os.path.join(tiny_run, f"iter_{t}")
        prompts = read_jsonl(os.path.join(it, "prompts.jsonl"), PromptRecord)
        cands = read_jsonl(os.path.join(it, "candidates.jsonl"), CandidateRecord)
        judgments = read_jsonl(os.path.join(it, "judgments.jsonl"), JudgmentRecord)
        pairs = read_jsonl(os.path.join(it, "pairs.jsonl"), PairRecord)
        for name in ("prompts", "candidates", "judgments", "pairs"):
            assert os.path.exists(os.path.join(it, f"{name}.jsonl.done"))
            assert not [f for f in os.listdir(it) if ".partial" in f]
        pids = {p.id for p in prompts}
        assert len(prompts) == cfg.prompts.num_prompts == len(pids)
        assert len(cands) == cfg.sample.n * len(prompts) and {c.prompt_id for c in cands} == pids
        cids = {c.id for c in cands}
        assert len(judgments) == cfg.judge.k * len(cands) and {j.candidate_id for j in judgments} == cids
        for j in judgments:
            assert j.score is None or 0 <= j.score <= 5
            if cfg.judge.scoring == "parsed":
                assert (j.score is None) == (j.error is not None)
            else:  # the tiny config scores every judgment from its digit distribution
                assert j.mode == "expected" and len(j.score_probs) == 6
                assert abs(sum(j.score_probs) - 1) < 1e-4
                assert abs(j.score - sum(i * p for i, p in enumerate(j.score_probs))) < 1e-4
                assert j.score_forced == (j.parsed_score is None)
        for p in pairs:
            assert p.chosen_id in cids and p.rejected_id in cids and p.prompt_id in pids
            assert p.score_chosen > p.score_rejected and p.chosen_length == len(p.chosen)
        m = metrics[f"iter_{t}"]
        assert m["prompts/kept"] == len(prompts) and m["sample/candidates"] == len(cands)
        assert m["judge/judgments"] == len(judgments)
        assert m["judge/parse_failures"] == sum(j.parsed_score is None and j.mode == "expected" or j.score is None
                                                for j in judgments)
        assert m["judge/unscored"] == sum(j.score is None for j in judgments)
        assert m["pairs/kept"] == len(pairs)
        assert m["pairs/kept"] + m["pairs/dropped_tie"] + m["pairs/dropped_unscored"] == len(prompts)
        for key in ("judge/parse_failure_rate", "judge/score_mean", "judge/score_std", "pairs/mean_chosen_length",
                    "pairs/mean_rejected_length", "iteration/wall_s"):
            assert key in m
        if pairs:
            assert {"dpo/loss", "dpo/rewards/accuracies", "dpo/rewards/margins"} <= m.keys()
        # Issue 8: every packaged config, tiny included, forms pairs in every iteration.
        assert pairs, f"iteration {t} formed no preference pairs"
    assert metrics["sft"]["sft/ift_examples"] == 8


def test_pairs_feed_dpo_trainer_format(tiny_run):
    import datasets

    path = os.path.join(tiny_run, "iter_1", "pairs.jsonl")
    if not read_jsonl(path):
        pytest.skip("no pairs in iteration 1")
    ds = datasets.load_dataset("json", data_files=path, split="train")
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)


def test_rerun_is_a_noop(tiny_run):
    from srlm.cli import main

    it = os.path.join(tiny_run, "iter_2")
    before = {f: os.path.getmtime(os.path.join(it, f)) for f in os.listdir(it)}
    assert main(["run", "--config", os.path.join(tiny_run, "config.yaml")]) == 0
    assert before == {f: os.path.getmtime(os.path.join(it, f)) for f in os.listdir(it)}


def test_changed_config_refuses_to_resume(tiny_run, capsys):
    from srlm.cli import main

    assert main(["run", "--config", os.path.join(tiny_run, "config.yaml"), "sample.n=3"]) == 2
    assert "different config" in capsys.readouterr().err


def test_run_records_evaluation_time_per_model_made(tmp_path, monkeypatch):
    """`srlm run` times each evaluation beside the stage that made the model (sft: M0 and M1;
    iter_t: M_t+1), inside the iteration's wall time; a resumed run whose stages were already
    done keeps the first times. Stages and evaluation are stand-ins here: only the bookkeeping runs."""
    import time

    from srlm import pipeline
    from srlm.evaluation import evaluate as ev
    from srlm.run.config import load_config

    ran = {"value": True}
    monkeypatch.setattr(pipeline, "check_inputs", lambda cfg: {})
    monkeypatch.setattr(pipeline, "run_stage", lambda stage, cfg, rd, t, backends: ({}, ran["value"]))
    monkeypatch.setattr(ev, "evaluate_models", lambda cfg, root, models: time.sleep(0.05))
    cfg = load_config("tiny", [f"output_dir={tmp_path / 'run'}"])
    metrics = pipeline.run(cfg)
    assert metrics["sft"]["eval/wall_s"] >= 0.05
    for t in range(1, cfg.iterations + 1):
        m = metrics[f"iter_{t}"]
        assert 0.05 <= m["eval/wall_s"] <= m["iteration/wall_s"]
    monkeypatch.setattr(ev, "evaluate_models", lambda cfg, root, models: None)
    ran["value"] = False  # everything fresh: a resume re-reads the cached evaluation
    again = pipeline.run(cfg)
    assert [again[f"iter_{t}"]["eval/wall_s"] for t in range(1, cfg.iterations + 1)] == \
        [metrics[f"iter_{t}"]["eval/wall_s"] for t in range(1, cfg.iterations + 1)]
