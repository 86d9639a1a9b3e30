"""The DPO stage picks the confidence-weighted loss when pairs carry a confidence, and with every
confidence 1.0 trains exactly as TRL's plain DPOTrainer (same losses, same weights)."""

import os

import pytest
import torch

from srlm.engines.modeling import ModelRef
from srlm.engines.training import load_for_training
from srlm.loop import dpo
from srlm.run.config import load_config
from srlm.run.records import PairRecord, read_jsonl, write_jsonl

TOPICS = ["the sea", "a cat", "rain", "coffee"]


def _pairs(confidence=None) -> list[PairRecord]:
    return [PairRecord(f"p{i}", f"p{i}", f"Write one sentence about {t}.", f"Here is a sentence about {t}: lovely.",
                       f"{t} no.", f"p{i}-c0", f"p{i}-c1", 4.0, 1.0, 10, 5, confidence)
            for i, t in enumerate(TOPICS)]


def _cfg(tmp_path, tiny_model, tiny_run_args):
    # Batch 2 over 4 pairs: two optimizer steps, so the second step's loss depends on the first update.
    return load_config("tiny", tiny_run_args + [f"output_dir={tmp_path / 'run'}", "dpo.batch_size=2",
                                                "dpo.per_device_batch_size=2", "dpo.learning_rate=0.01"])


def _train(cfg, tiny_model, pairs, ckpt):
    model, tok = load_for_training(cfg, ModelRef(tiny_model))
    trainer = dpo.train(cfg, model, tok, pairs, str(ckpt))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    weights = trainer.model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    return trainer, losses, weights


def test_is_weighted_and_old_pair_files_load(tmp_path):
    assert not dpo.is_weighted(_pairs())
    mixed = _pairs()
    mixed[2].confidence = 0.25
    assert dpo.is_weighted(mixed)
    # A pairs.jsonl written before the field existed: no "confidence" key, loads as None.
    path = str(tmp_path / "pairs.jsonl")
    write_jsonl(path, [{k: v for k, v in p.__dict__.items() if k != "confidence"} for p in _pairs()])
    assert [p.confidence for p in read_jsonl(path, PairRecord)] == [None] * 4


def test_stage_picks_trainer_and_unit_confidence_equals_plain(tmp_path, tiny_model, tiny_run_args):
    from trl import DPOTrainer

    from srlm.engines.weighted_dpo import WeightedDPOTrainer

    cfg = _cfg(tmp_path, tiny_model, tiny_run_args)
    plain, plain_losses, plain_w = _train(cfg, tiny_model, _pairs(), tmp_path / "plain")
    ones, ones_losses, ones_w = _train(cfg, tiny_model, _pairs(1.0), tmp_path / "ones")
    zeros, zeros_losses, _ = _train(cfg, tiny_model, _pairs(0.0), tmp_path / "zeros")
    assert type(plain) is DPOTrainer
    assert isinstance(ones, WeightedDPOTrainer) and isinstance(zeros, WeightedDPOTrainer)
    assert len(plain_losses) == 2
    # Step 1 starts at the reference (D = 0): log 2 whatever the confidence.
    for losses in (plain_losses, ones_losses, zeros_losses):
        assert losses[0] == pytest.approx(0.693147, abs=1e-4)
    # c = 1 everywhere is plain DPO: same losses, same trained weights.
    assert ones_losses == pytest.approx(plain_losses, rel=1e-6, abs=1e-7)
    torch.testing.assert_close(ones_w, plain_w)
    # c = 0 pushes the other way, so after one update its loss differs: the column reaches the loss.
    assert abs(zeros_losses[1] - ones_losses[1]) > 1e-4
    log = [r for r in ones.state.log_history if "confidence/mean" in r]
    assert log and all(r["confidence/mean"] == 1.0 for r in log)


def test_stage_metrics_say_weighted(tmp_path, tiny_model, tiny_run_args, monkeypatch):
    """dpo.run on a pairs file with confidences: dpo/weighted and the logged confidence mean."""
    from srlm.run.rundir import RunDir

    cfg = _cfg(tmp_path, tiny_model, tiny_run_args)
    rd = RunDir(cfg.output_dir)
    os.makedirs(rd.models_dir, exist_ok=True)
    os.symlink(tiny_model, rd.model(1))
    write_jsonl(rd.pairs(1), _pairs(0.75))
    stats = dpo.run(cfg, rd, 1)
    assert stats["dpo/weighted"] == 1 and stats["dpo/pairs"] == 4
    assert stats["dpo/confidence/mean"] == pytest.approx(0.75)
    write_jsonl(rd.pairs(1), _pairs())
    assert "dpo/weighted" not in dpo.run(cfg, rd, 1)
