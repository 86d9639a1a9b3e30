"""CREAM (method: cream): confidences from the two rankings by hand, and the loop end to end on the
tiny model (judgments_prev, confidences in pairs.jsonl, the weighted DPO loss)."""

import json
import os

import pytest

from srlm import cream
from srlm.pairs import build_pairs, candidate_scores
from srlm.records import CandidateRecord, JudgmentRecord, PairRecord, read_jsonl

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
    from srlm.config import load_config
    from srlm.rundir import RunDir
    from srlm.stages import m0, previous_model

    cfg = load_config("cream")
    rd = RunDir("/tmp/x")
    assert previous_model(cfg, rd, 1) == m0(cfg) and cream.previous_model_name(1) == "M0"
    assert previous_model(cfg, rd, 3).path == rd.model(2) and cream.previous_model_name(3) == "M2"


def test_cream_loop_end_to_end(tmp_path, tiny_run_args):
    """Expected judge scores, so both models score every candidate (M0, a random tiny model, never
    writes a score line) and the rankings have few ties: every prompt gets a consistency. Prompts
    from a file and one SFT epoch keep it short (nothing here needs M1 to write prompts)."""
    from srlm.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Write one sentence about {t}."}) + "\n"
                               for t in ("the moon", "a dog", "snow", "tea")))
    assert main(["run", "--config", "tiny", *tiny_run_args, "method=cream", "judge.scoring=expected",
                 "cream.consistency=prompt", "prompts.source=file", f"prompts.file={prompts}",
                 "sft.epochs=1"]) == 0
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
