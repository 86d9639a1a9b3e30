"""Stage 4 of an iteration: preference pairs from the judge's scores (paper section 3.2).

A candidate's score is the mean of its parseable judgments (at least pairs.min_valid_judgments
of the K). Per prompt, the highest-scoring candidate is chosen and the lowest rejected; prompts
whose scored candidates all tie (or differ by no more than pairs.min_margin) are dropped.
With pairs.rho > 0 the pair is length-controlled instead (length_controlled_pairs below).
Output: DIR/iter_<t>/pairs.jsonl of PairRecord, with TRL's prompt/chosen/rejected fields.

Below run(): Meta-Rewarding's length control (pairs.rho, usable by any method) and pair_dict,
the form of a pair with keys PairRecord lacks; the methods' own pair builders (DNO's, SPIN's,
CREAM's, SCIR's) live in their modules under srlm/methods/.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from srlm.run.parallel import is_main
from srlm.run.records import CandidateRecord, JudgmentRecord, PairRecord, read_jsonl, write_jsonl


def candidate_scores(judgments: list[JudgmentRecord], min_valid: int) -> dict[str, float]:
    by_cand: dict[str, list[int]] = defaultdict(list)
    for j in judgments:
        if j.score is not None:
            by_cand[j.candidate_id].append(j.score)
    return {cid: statistics.fmean(s) for cid, s in by_cand.items() if len(s) >= max(1, min_valid)}


def _actor_pair(pid: str, best: CandidateRecord, worst: CandidateRecord, scores: dict[str, float]) -> PairRecord:
    return PairRecord(
        id=f"{pid}-pair", prompt_id=pid, prompt=best.prompt, chosen=best.response, rejected=worst.response,
        chosen_id=best.id, rejected_id=worst.id, score_chosen=scores[best.id], score_rejected=scores[worst.id],
        chosen_length=len(best.response), rejected_length=len(worst.response))


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
        pairs.append(_actor_pair(pid, best, worst, scores))
    stats["kept"] = len(pairs)
    return pairs, stats


def rho_at(rho: float | Sequence[float], t: int) -> float:
    """pairs.rho for iteration t: a number, or a per-iteration list (element t-1, the last
    element for later iterations)."""
    if isinstance(rho, (int, float)):
        return float(rho)
    return float(rho[min(t, len(rho)) - 1])


def run(cfg, rd, t: int) -> dict:
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    judgments = read_jsonl(rd.judgments(t), JudgmentRecord)
    scores = candidate_scores(judgments, cfg.pairs.min_valid_judgments)
    rho = rho_at(cfg.pairs.rho, t)
    if rho > 0:  # Meta-Rewarding's length control; rho = 0 keeps exactly the metrics of the paper's rule
        pairs, stats = length_controlled_pairs(cands, scores, rho, cfg.pairs.min_margin)
        stats["rho"] = rho
    else:
        pairs, stats = build_pairs(cands, scores, cfg.pairs.min_margin)
    stats["scored_candidates"] = len(scores)
    if is_main():
        write_jsonl(rd.pairs(t), pairs)
    return {f"pairs/{k}": v for k, v in stats.items()} | {
        "pairs/mean_chosen_length": statistics.fmean(p.chosen_length for p in pairs) if pairs else None,
        "pairs/mean_rejected_length": statistics.fmean(p.rejected_length for p in pairs) if pairs else None,
        "pairs/mean_score_margin": statistics.fmean(p.score_chosen - p.score_rejected for p in pairs) if pairs else None,
    }


# ---------------------------------------------------------------------------------------------
# Meta-Rewarding's length control (pairs.rho, any method) and the pair form every method's own
# pair builder writes. Pairs with fields PairRecord lacks (kind, lag, ...) are plain dicts
# holding PairRecord's fields plus those keys (pair_dict).

_SCORE_EPS = 1e-9  # tier bounds are float sums; a mean of integer scores sitting on a bound counts


def length_controlled_pairs(cands: list[CandidateRecord], scores: dict[str, float], rho: float,
                            min_margin: float = 0.0):
    """Meta-Rewarding's length control (Wu et al. 2024, section 2.2). With Smax, Smin the
    prompt's highest and lowest scores, the top tier is [(1-rho) Smax + rho Smin, Smax] and the
    bottom tier [Smin, (1-rho) Smin + rho Smax]; chosen = the shortest response (characters) in
    the top tier, rejected = the longest in the bottom tier, ties -> lowest candidate index.
    Dropped: all scores within min_margin (dropped_tie), or chosen and rejected the same
    candidate (dropped_same, once rho >= 0.5 lets the tiers overlap), or their own gap
    <= min_margin (dropped_tie). rho = 0 is exactly build_pairs (max vs min, ties -> lowest
    index), which is today's rule; the paper's rule would take the shortest of tied maxima."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    if rho == 0.0:
        pairs, stats = build_pairs(cands, scores, min_margin)
        return pairs, {**stats, "dropped_same": 0}
    by_prompt: dict[str, list[CandidateRecord]] = defaultdict(list)
    for c in cands:
        by_prompt[c.prompt_id].append(c)
    pairs, stats = [], {"prompts": len(by_prompt), "dropped_tie": 0, "dropped_unscored": 0, "dropped_same": 0}
    for pid in sorted(by_prompt):
        scored = sorted((c for c in by_prompt[pid] if c.id in scores), key=lambda c: c.index)
        if len(scored) < 2:
            stats["dropped_unscored"] += 1
            continue
        s_max, s_min = max(scores[c.id] for c in scored), min(scores[c.id] for c in scored)
        if s_max - s_min <= min_margin:
            stats["dropped_tie"] += 1
            continue
        top_floor = (1 - rho) * s_max + rho * s_min
        bottom_ceiling = (1 - rho) * s_min + rho * s_max
        top = [c for c in scored if scores[c.id] >= top_floor - _SCORE_EPS]
        bottom = [c for c in scored if scores[c.id] <= bottom_ceiling + _SCORE_EPS]
        best = min(top, key=lambda c: (len(c.response), c.index))
        worst = max(bottom, key=lambda c: (len(c.response), -c.index))
        if best.id == worst.id:
            stats["dropped_same"] += 1
            continue
        if scores[best.id] - scores[worst.id] <= min_margin:
            stats["dropped_tie"] += 1
            continue
        pairs.append(_actor_pair(pid, best, worst, scores))
    stats["kept"] = len(pairs)
    return pairs, stats


def pair_dict(pair_id: str, prompt_id: str, prompt: str, chosen_id: str, chosen: str, score_chosen,
               rejected_id: str, rejected: str, score_rejected, **extra) -> dict:
    """PairRecord's fields as a plain dict, plus a method's own keys (kind, lag, dno_type, ...)."""
    return {"id": pair_id, "prompt_id": prompt_id, "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "chosen_id": chosen_id, "rejected_id": rejected_id, "score_chosen": score_chosen,
            "score_rejected": score_rejected, "chosen_length": len(chosen), "rejected_length": len(rejected),
            **extra}
