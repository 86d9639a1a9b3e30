"""SCIR's cheap variant (method: scir): DPO implicit-reward margins against a hand computation of
the log-probs, and the loop end to end on the tiny model."""

import json
import os

import pytest
import torch

from srlm.engines.modeling import ModelRef
from srlm.loop.pairs import build_pairs, candidate_scores
from srlm.methods import scir
from srlm.run.config import load_config
from srlm.run.records import CandidateRecord, JudgmentRecord, PairRecord, read_jsonl

TOPICS = ["the sea", "a cat", "rain"]


def _pairs():
    return [PairRecord(f"p{i}", f"p{i}", f"Write one sentence about {t}.", f"Here is a sentence about {t}.",
                       f"{t} no no.", "c", "r", 3.0, 1.0, 1, 1) for i, t in enumerate(TOPICS)]


def _logp(model, tok, prompt: str, answer: str) -> float:
    """Summed log-prob of the answer's tokens after the chat-formatted prompt, by hand."""
    user = [{"role": "user", "content": prompt}]
    prompt_ids = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=True,
                                   return_dict=True)["input_ids"]
    assert full[:len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(torch.tensor([full])).logits[0].float()
    logps = torch.log_softmax(logits[:-1], dim=-1)
    return sum(logps[i - 1, full[i]].item() for i in range(len(prompt_ids), len(full)))


def test_implicit_margins_by_hand(tmp_path, tiny_model, tiny_run_args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The policy: the tiny model with its weights moved, so policy and reference differ.
    policy_dir = str(tmp_path / "policy")
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(policy_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.save_pretrained(policy_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    cfg = load_config("tiny", tiny_run_args + ["dpo.beta=0.5", "dpo.per_device_batch_size=2"])
    pairs = _pairs()
    got = scir.implicit_margins(cfg, ModelRef(policy_dir), ModelRef(tiny_model), pairs, str(tmp_path / "work"))
    model.eval()
    want = [0.5 * ((_logp(model, tok, p.prompt, p.chosen) - _logp(ref, tok, p.prompt, p.chosen))
                   - (_logp(model, tok, p.prompt, p.rejected) - _logp(ref, tok, p.prompt, p.rejected))) for p in pairs]
    assert got == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert max(abs(w) for w in want) > 1e-2  # the policy really differs from its reference
    # A policy at its reference has no implicit preference: every margin 0, so SCIR keeps nothing.
    same = scir.implicit_margins(cfg, ModelRef(tiny_model), ModelRef(tiny_model), pairs, str(tmp_path / "w2"))
    assert same == pytest.approx([0.0] * 3, abs=1e-6)


def test_scir_loop_end_to_end(tmp_path, tiny_run_args):
    """Prompts from a file, one SFT epoch and expected judge scores keep it short and give every
    candidate a score (so the judge orders every pair it builds). The tiny model's scores differ
    by ~1e-4 (every judgment forced), so which pairs SCIR keeps is noise; seed 1 keeps some in
    both iterations (seed 42 kept none in iteration 1 once forced prefixes were read from the
    generation's cache, which moves scores by < 1e-4)."""
    from srlm.cli import main
    from srlm.run.rundir import RunDir

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Write one sentence about {t}."}) + "\n"
                               for t in ("the moon", "a dog", "snow", "tea", "a lamp", "autumn", "bread", "a river")))
    overrides = [*tiny_run_args, "method=scir", "prompts.num_prompts=8", "judge.scoring=expected", "prompts.source=file",
                 f"prompts.file={prompts}", "sft.epochs=1", "seed=1"]
    assert main(["run", "--config", "tiny", *overrides]) == 0
    run = tiny_run_args[0].split("=", 1)[1]
    rd = RunDir(run)
    cfg = load_config(os.path.join(run, "config.yaml"))
    metrics = json.load(open(rd.metrics))
    for t in (1, 2):
        cands = read_jsonl(rd.candidates(t), CandidateRecord)
        built, _ = build_pairs(cands, candidate_scores(read_jsonl(rd.judgments(t), JudgmentRecord), 1))
        kept = read_jsonl(rd.pairs(t))
        assert kept, "no pair kept: the filter's checks below would prove nothing"
        m = metrics[f"iter_{t}"]
        assert m["pairs/built"] == len(built) > 0 and m["pairs/kept"] == m["scir/kept"] == len(kept)
        assert m["scir/kept"] + m["scir/disagree"] + m["scir/no_judge_margin"] + m["scir/missing_implicit"] == len(built)
        assert m["scir/agreement_rate"] == pytest.approx(len(kept) / len(built))
        assert [p["id"] for p in kept] == [p.id for p in built if p.id in {k["id"] for k in kept}]
        for p in kept:
            assert p["implicit_margin"] > 0 and p["score_chosen"] > p["score_rejected"]
    # Iteration 2's filter, recomputed: M2's implicit reward against M1 (dpo.init=anchor), kept = margin > 0.
    margins = scir.implicit_margins(cfg, ModelRef(rd.model(2)), ModelRef(rd.model(1)), built, str(tmp_path / "w"))
    assert [p.id for p, mg in zip(built, margins) if mg > 0] == [p["id"] for p in kept]
    assert [p["implicit_margin"] for p in kept] == pytest.approx([mg for mg in margins if mg > 0], abs=1e-5)
    assert os.path.exists(rd.model(3) + ".done")
