"""Stage 4 of an iteration: preference pairs from the judge's scores (paper section 3.2).

A candidate's score is the mean of its parseable judgments (at least pairs.min_valid_judgments
of the K). Per prompt, the highest-scoring candidate is chosen and the lowest rejected; prompts
whose scored candidates all tie (or differ by no more than pairs.min_margin) are dropped.
Output: DIR/iter_<t>/pairs.jsonl of PairRecord, with TRL's prompt/chosen/rejected fields.
"""

from __future__ import annotations

import os
import statistics
from collections import defaultdict

from srlm.records import (CandidateRecord, JudgmentRecord, PairRecord, is_done, mark_done, marker, read_json,
                          read_jsonl, write_jsonl)


def candidate_scores(judgments: list[JudgmentRecord], min_valid: int) -> dict[str, float]:
    by_cand: dict[str, list[int]] = defaultdict(list)
    for j in judgments:
        if j.score is not None:
            by_cand[j.candidate_id].append(j.score)
    return {cid: statistics.fmean(s) for cid, s in by_cand.items() if len(s) >= max(1, min_valid)}


def build_pairs(cands: list[CandidateRecord], scores: dict[str, float], min_margin: float = 0.0):
    """Return (pairs, stats). Ties in the max (or min) go to the lowest candidate index, so the
    result does not depend on record order."""
    by_prompt: dict[str, list[CandidateRecord]] = defaultdict(list)
    for c in cands:
        by_prompt[c.prompt_id].append(c)
    pairs, stats = [], {"prompts": len(by_prompt), "dropped_tie": 0, "dropped_unscored": 0}
    for pid in sorted(by_prompt):
        scored = sorted((c for c in by_prompt[pid] if c.id in scores), key=lambda c: c.index)
        if len(scored) < 2:
            stats["dropped_unscored"] += 1
            continue
        best = max(scored, key=lambda c: scores[c.id])
        worst = min(scored, key=lambda c: scores[c.id])
        if scores[best.id] - scores[worst.id] <= min_margin:
            stats["dropped_tie"] += 1
            continue
        pairs.append(PairRecord(
            id=f"{pid}-pair", prompt_id=pid, prompt=best.prompt, chosen=best.response, rejected=worst.response,
            chosen_id=best.id, rejected_id=worst.id, score_chosen=scores[best.id], score_rejected=scores[worst.id],
            chosen_length=len(best.response), rejected_length=len(worst.response)))
    stats["kept"] = len(pairs)
    return pairs, stats


def run(cfg, run_dir: str, t: int, backend=None) -> dict:
    it = os.path.join(run_dir, f"iter_{t}")
    out = os.path.join(it, "pairs.jsonl")
    if not is_done(out):
        cands = read_jsonl(os.path.join(it, "candidates.jsonl"), CandidateRecord)
        judgments = read_jsonl(os.path.join(it, "judgments.jsonl"), JudgmentRecord)
        scores = candidate_scores(judgments, cfg.pairs.min_valid_judgments)
        pairs, stats = build_pairs(cands, scores, cfg.pairs.min_margin)
        stats["scored_candidates"] = len(scores)
        write_jsonl(out, pairs)
        mark_done(out, stats)
    stats = read_json(marker(out), {})
    pairs = read_jsonl(out, PairRecord)
    return {f"pairs/{k}": v for k, v in stats.items()} | {
        "pairs/mean_chosen_length": statistics.fmean(p.chosen_length for p in pairs) if pairs else None,
        "pairs/mean_rejected_length": statistics.fmean(p.rejected_length for p in pairs) if pairs else None,
        "pairs/mean_score_margin": statistics.fmean(p.score_chosen - p.score_rejected for p in pairs) if pairs else None,
    }
