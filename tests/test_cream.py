"""CREAM (method: cream): confidences from the two rankings by hand, sequence log-probs against
TRL's, and the loop end to end on the tiny model with either ranking (implicit rewards, or
judge + judgments_prev), confidences in pairs.jsonl and the weighted DPO loss."""

import json
import os

import pytest

from srlm.loop.pairs import build_pairs, candidate_scores
from srlm.methods import cream
from srlm.run.records import CandidateRecord, JudgmentRecord, PairRecord, read_jsonl

# Per prompt: candidate -> (current score, previous score). Hand-computed Kendall tau-b:
# A: current 4 > 3 > 2 > 1, previous 3, 4, 1, 0: of the 6 pairs only (a0, a1) is discordant,
#    tau = (5 - 1) / 6 = 2/3, C = (2/3 + 1) / 2 = 5/6.
# B: current 5, 1, 3 and previous 1, 5, 3: all 3 pairs discordant, tau = -1, C = 0.
# C: the previous model ties both candidates: no ranking, tau undefined, left out.
# D: current 2, 2, 0 and previous 1, 0, 0: concordant 1 (d0, d2), discordant 0, one pair tied in
#    each ranking: tau-b = 1 / sqrt((3 - 1) * (3 - 1)) = 1/2, C = 3/4.
# E: the previous model scored none of its candidates (all unparsed): left out, never shifts others.
# Mean C over A, B, D = (5/6 + 0 + 3/4) / 3 = 19/36.
SCORES = {
    "A": [(4, 3), (3, 4), (2, 1), (1, 0)],
    "B": [(5, 1), (1, 5), (3, 3)],
    "C": [(2, 3), (0, 3)],
    "D": [(2, 1), (2, 0), (0, 0)],
    "E": [(3, None), (1, None)],
}
MEAN = 19 / 36


def _setup():
    cands, current, previous = [], {}, {}
    # Candidates in scrambled order: alignment is by id, not by row.
    for pid in reversed(sorted(SCORES)):
        for i, (cur, prev) in reversed(list(enumerate(SCORES[pid]))):
            cid = f"{pid}-c{i}"
            cands.append(CandidateRecord(cid, pid, f"prompt {pid}", f"answer {cid}", i, 3, "stop"))
            current[cid] = cur
            if prev is not None:
                previous[cid] = prev
    return cands, current, previous


def test_confidences_by_hand():
    cands, current, previous = _setup()
    pairs, _ = build_pairs(cands, current)
    assert [(p.prompt_id, p.chosen_id, p.rejected_id) for p in pairs] == [
        ("A", "A-c0", "A-c3"), ("B", "B-c0", "B-c1"), ("C", "C-c0", "C-c1"), ("D", "D-c0", "D-c2"),
        ("E", "E-c0", "E-c1")]
    prompt_of = {c.id: c.prompt_id for c in cands}
    per_prompt, stats = cream.confidences(pairs, current, previous, prompt_of, "prompt")
    assert per_prompt == pytest.approx([5 / 6, 0.0, MEAN, 0.75, MEAN])
    assert stats["cream/consistency_mean"] == pytest.approx(MEAN)
    assert stats["cream/pairs_prompt_fallback"] == 2 and stats["cream/pairs_unweighted"] == 0
    assert stats["cream/prompts"] == 3 and stats["cream/prompts_all_tied"] == 1
    assert stats["cream/prompts_missing"] == 1 and stats["cream/confidence_mean"] == pytest.approx(
        (5 / 6 + 0 + MEAN + 0.75 + MEAN) / 5)
    dataset, stats = cream.confidences(pairs, current, previous, prompt_of, "dataset")
    assert dataset == pytest.approx([MEAN] * 5) and stats["cream/pairs_prompt_fallback"] == 0
    # No ranking from the previous model at all: no confidence, plain DPO.
    none, stats = cream.confidences(pairs, current, {}, prompt_of, "prompt")
    assert none == [None] * 5 and stats["cream/consistency_mean"] is None and stats["cream/pairs_unweighted"] == 5


def test_previous_model_of_iteration():
    from srlm.run.config import load_config
    from srlm.run.rundir import RunDir
    from srlm.stages import m0, previous_model

    cfg = load_config("cream")
    rd = RunDir("/tmp/x")
    assert previous_model(cfg, rd, 1) == m0(cfg) and cream.previous_model_name(1) == "M0"
    assert previous_model(cfg, rd, 3).path == rd.model(2) and cream.previous_model_name(3) == "M2"


def test_cream_judge_loop_end_to_end(tmp_path, tiny_run_args):
    """Expected judge scores, so both models score every candidate (M0, a random tiny model, never
    writes a score line) and the rankings have few ties: every prompt gets a consistency. Prompts
    from a file and one SFT epoch keep it short (nothing here needs M1 to write prompts)."""
    from srlm.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Write one sentence about {t}."}) + "\n"
                               for t in ("the moon", "a dog", "snow", "tea")))
    assert main(["run", "--config", "tiny", *tiny_run_args, "method=cream", "cream.reward=judge",
                 "judge.scoring=expected", "cream.consistency=prompt", "prompts.source=file",
                 f"prompts.file={prompts}", "sft.epochs=1"]) == 0
    run = tiny_run_args[0].split("=", 1)[1]
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    for t in (1, 2):
        it = os.path.join(run, f"iter_{t}")
        cands = read_jsonl(os.path.join(it, "candidates.jsonl"), CandidateRecord)
        cur = read_jsonl(os.path.join(it, "judgments.jsonl"), JudgmentRecord)
        prev = read_jsonl(os.path.join(it, "judgments_prev.jsonl"), JudgmentRecord)
        assert len(prev) == len(cur) == 2 * len(cands)  # judge.k=2 from both models
        assert {j.candidate_id for j in prev} == {c.id for c in cands}
        pairs = read_jsonl(os.path.join(it, "pairs.jsonl"), PairRecord)
        m = metrics[f"iter_{t}"]
        assert m["judge_prev/model"] == f"M{t - 1}" and m["judge_prev/judgments"] == len(prev)
        # The stage's confidences are the hand-checked function's on the run's own files.
        cur_s, prev_s = candidate_scores(cur, 1), candidate_scores(prev, 1)
        built, _ = build_pairs(cands, cur_s)
        expected, stats = cream.confidences(built, cur_s, prev_s, {c.id: c.prompt_id for c in cands}, "prompt")
        assert [p.id for p in pairs] == [p.id for p in built] and pairs
        assert [p.confidence for p in pairs] == pytest.approx(expected)
        assert m["cream/consistency_mean"] == pytest.approx(stats["cream/consistency_mean"])
        assert all(c is not None and 0 <= c <= 1 for c in expected)
        assert m["dpo/weighted"] == 1 and "dpo/confidence/mean" in m
    assert os.path.exists(os.path.join(run, "models", "M3.done"))


def test_sequence_logps_agree_with_trl(tmp_path, tiny_model, tiny_run_args):
    """cream.sequence_logps (one sequence at a time) against TRL's own forward (scir.implicit_margins):
    the DPO margin built from either is the same."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srlm.engines.modeling import ModelRef
    from srlm.methods import scir
    from srlm.run.config import load_config

    policy_dir = str(tmp_path / "policy")
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(policy_dir)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(policy_dir)
    pairs = [PairRecord(f"p{i}", f"p{i}", f"Tell me about {t}.", f"{t} is a fine thing to talk about.", f"{t}?",
                        "c", "r", 2.0, 1.0, 1, 1) for i, t in enumerate(["tea", "snow", "a lamp"])]
    cfg = load_config("tiny", tiny_run_args)
    lp = cream.implicit_rewards(cfg, [ModelRef(policy_dir), ModelRef(tiny_model)],
                                [(p.prompt, x) for p in pairs for x in (p.chosen, p.rejected)])
    pol, ref = lp[str(ModelRef(policy_dir))], lp[str(ModelRef(tiny_model))]
    ours = [cfg.dpo.beta * ((pol[2 * i] - ref[2 * i]) - (pol[2 * i + 1] - ref[2 * i + 1])) for i in range(3)]
    theirs = scir.implicit_margins(cfg, ModelRef(policy_dir), ModelRef(tiny_model), pairs, str(tmp_path / "w"))
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5) and max(map(abs, ours)) > 1e-3
    assert all(x < 0 for x in pol)  # log-probs of whole answers


def test_cream_implicit_loop_end_to_end(tmp_path, tiny_run_args):
    """The paper's CREAM: no judge; rankings by implicit rewards (M1 against M0 and M0's likelihood in
    iteration 1, M2 against M1 and M1 against M0 in iteration 2, dpo.init=previous)."""
    from srlm.cli import main
    from srlm.engines.modeling import ModelRef
    from srlm.run.config import load_config
    from srlm.run.records import ImplicitRewardRecord
    from srlm.run.rundir import RunDir

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Write one sentence about {t}."}) + "\n"
                               for t in ("the moon", "a dog", "snow", "tea")))
    assert main(["run", "--config", "tiny", *tiny_run_args, "method=cream", "cream.consistency=prompt",
                 "dpo.init=previous", "prompts.source=file", f"prompts.file={prompts}", "sft.epochs=1"]) == 0
    rd = RunDir(tiny_run_args[0].split("=", 1)[1])
    cfg = load_config(rd.config)
    assert cfg.cream.reward == "implicit"  # the paper's, the default
    metrics = json.load(open(rd.metrics))
    for t in (1, 2):
        assert not os.path.exists(rd.judgments(t)) and not os.path.exists(rd.judgments_prev(t))
        cands = read_jsonl(rd.candidates(t), CandidateRecord)
        rewards = read_jsonl(rd.implicit_rewards(t), ImplicitRewardRecord)
        assert [r.candidate_id for r in rewards] == [c.id for c in cands]
        cur = {r.candidate_id: r.current for r in rewards}
        prev = {r.candidate_id: r.previous for r in rewards}
        built, _ = build_pairs(cands, cur)
        expected, stats = cream.confidences(built, cur, prev, {c.id: c.prompt_id for c in cands}, "prompt")
        pairs = read_jsonl(rd.pairs(t), PairRecord)
        assert pairs and [p.id for p in pairs] == [p.id for p in built]
        assert [p.confidence for p in pairs] == pytest.approx(expected)
        assert all(p.score_chosen > p.score_rejected for p in pairs)
        m = metrics[f"iter_{t}"]
        assert m["cream/consistency_mean"] == pytest.approx(stats["cream/consistency_mean"])
        assert m["dpo/weighted"] == 1 and "judge/judgments" not in m
    # Iteration 2's rewards, recomputed: current = log pi_M2 - log pi_M1, previous = log pi_M1 - log pi_M0.
    items = [(c.prompt, c.response) for c in cands]
    m0 = ModelRef(cfg.model.name_or_path)
    lp = cream.implicit_rewards(cfg, [ModelRef(rd.model(2)), ModelRef(rd.model(1)), m0], items)
    l2, l1, l0 = lp[str(ModelRef(rd.model(2)))], lp[str(ModelRef(rd.model(1)))], lp[str(m0)]
    assert [r.current for r in rewards] == pytest.approx([a - b for a, b in zip(l2, l1)], abs=1e-4)
    assert [r.previous for r in rewards] == pytest.approx([a - b for a, b in zip(l1, l0)], abs=1e-4)
    # Iteration 1: M1 and M0 (reference and likelihood, loaded once); 2: M2, M1 (twice), M0.
    assert [metrics[f"iter_{t}"]["cream_rewards/models_loaded"] for t in (1, 2)] == [2, 3]
    assert os.path.exists(rd.model(3) + ".done")
