"""Stage 4 of an iteration: preference pairs from the judge's scores (paper section 3.2).

A candidate's score is the mean of its parseable judgments (at least pairs.min_valid_judgments
of the K). Per prompt, the highest-scoring candidate is chosen and the lowest rejected; prompts
whose scored candidates all tie (or differ by no more than pairs.min_margin) are dropped.
With pairs.rho > 0 the pair is length-controlled instead (length_controlled_pairs below).
Output: DIR/iter_<t>/pairs.jsonl of PairRecord, with TRL's prompt/chosen/rejected fields.

Below run(): pure pair builders of the follow-up methods (Meta-Rewarding's length control,
DNO's all-pairs construction and replay of earlier iterations' pairs, SPIN's gold-vs-sample).
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from fractions import Fraction

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
# Pair builders of the follow-up methods. Pure functions: the stages that call them (and write
# their pairs into pairs.jsonl) are wired elsewhere. Each returns (pairs, stats) with stats
# counting drops by reason. Pairs with fields PairRecord lacks (kind, lag, ...) are plain dicts
# holding PairRecord's fields plus those keys.

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


def _pair_dict(pair_id: str, prompt_id: str, prompt: str, chosen_id: str, chosen: str, score_chosen,
               rejected_id: str, rejected: str, score_rejected, **extra) -> dict:
    return {"id": pair_id, "prompt_id": prompt_id, "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "chosen_id": chosen_id, "rejected_id": rejected_id, "score_chosen": score_chosen,
            "score_rejected": score_rejected, "chosen_length": len(chosen), "rejected_length": len(rejected),
            **extra}


def _flagged(flags, cid: str) -> bool:
    if flags is None:
        return False
    if isinstance(flags, Mapping):
        return bool(flags.get(cid, False))
    return cid in flags


def dno_pairs(cands: list[CandidateRecord], scores: dict[str, float], is_reference, margin: float,
              self_margin: float, repetition_flags=None):
    """DNO's batched pair construction (Rosset et al. 2024, arXiv:2404.03715, practical
    version), per prompt: every pair (i, j) with score_i - score_j >= margin and > 0 becomes
    (chosen i, rejected j); when both are the policy's own samples the stricter self_margin
    applies. A reference response (e.g. the seed's gold answer, a CandidateRecord whose id is in
    `is_reference`) takes part like any candidate. A sample flagged in `repetition_flags`
    (heavy repetition, see srlm/repetition.py) is an automatic negative: it ranks below every
    other candidate whatever its score (even unscored), is never chosen, and flagged samples are
    not paired with each other. `is_reference` and `repetition_flags` are sets of candidate ids
    or mappings id -> bool. Returns dicts: PairRecord's fields (score_rejected None for an
    repetition negative) + kind="actor", dno_type "reference" | "self" | "repetition".
    Stats: pairs_<dno_type>, unscored (candidates), dropped_tie, dropped_margin (unordered pairs)."""
    if margin < 0 or self_margin < margin:
        raise ValueError(f"need 0 <= margin <= self_margin, got {margin}, {self_margin}")
    by_prompt: dict[str, list[CandidateRecord]] = defaultdict(list)
    for c in cands:
        by_prompt[c.prompt_id].append(c)
    pairs = []
    stats = {"prompts": len(by_prompt), "unscored": 0, "dropped_tie": 0, "dropped_margin": 0,
             "pairs_reference": 0, "pairs_self": 0, "pairs_repetition": 0}
    for pid in sorted(by_prompt):
        group = sorted(by_prompt[pid], key=lambda c: (c.index, c.id))
        flagged = [c for c in group if _flagged(repetition_flags, c.id)]
        scored = [c for c in group if c.id in scores and not _flagged(repetition_flags, c.id)]
        stats["unscored"] += len(group) - len(flagged) - len(scored)

        def add(ch: CandidateRecord, rj: CandidateRecord, kind: str):
            # A repetition negative's judge score is overridden by the flag: stored as None.
            pairs.append(_pair_dict(f"{ch.id}-over-{rj.id}", pid, ch.prompt, ch.id, ch.response, scores[ch.id],
                                    rj.id, rj.response, None if kind == "repetition" else scores[rj.id],
                                    kind="actor", dno_type=kind))
            stats[f"pairs_{kind}"] += 1

        for a_pos, a in enumerate(scored):
            for b in scored[a_pos + 1:]:
                gap = scores[a.id] - scores[b.id]
                if gap == 0:
                    stats["dropped_tie"] += 1
                    continue
                both_policy = not _flagged(is_reference, a.id) and not _flagged(is_reference, b.id)
                if abs(gap) < (self_margin if both_policy else margin):
                    stats["dropped_margin"] += 1
                    continue
                ch, rj = (a, b) if gap > 0 else (b, a)
                add(ch, rj, "self" if both_policy else "reference")
            for f in flagged:
                add(a, f, "repetition")
    stats["kept"] = len(pairs)
    return pairs, stats


def _as_pair_dict(p) -> dict:
    return dataclasses.asdict(p) if dataclasses.is_dataclass(p) else dict(p)


def replay_mix(current: list, previous: Mapping[int, Sequence], rates: Mapping[int, float], seed: int):
    """Mix pairs of earlier iterations into this iteration's (DNO, section 5: at most 30% of the
    final set from iteration t-1 and 15% from t-2). `previous` maps lag -> that iteration's pairs,
    `rates` lag -> the share of the final set. With C current pairs, every lag gets
    n_l = floor(rates[l] * T) pairs, T = C + sum n the final size, except that a lag with fewer
    pairs than that gives all it has: lags are settled in order of pool / rate, each one short of
    its share fixed at its pool and T recomputed without it, so n_l / T <= rates[l] (to within
    rounding) for every lag, including when an earlier iteration is missing or short (iteration
    2 has no t-2: its 15% must not be handed to t-1, which would then exceed 30%). With every
    lag full, n_l = floor(rates[l] / (1 - R) * C), R = sum(rates). Exact fractions (0.3 / 0.55 * 55
    is 29.999... in floats). Each lag's pairs are sampled without replacement by
    random.Random(f"replay-{seed}-lag{lag}") and keep their original order. Returns dicts: the
    pair's fields + lag (0 for current pairs); ids are kept (prompt ids carry their iteration, so
    they do not collide)."""
    if any(r < 0 for r in rates.values()) or sum(rates.values()) >= 1:
        raise ValueError(f"rates must be >= 0 and sum to < 1, got {dict(rates)}")
    rate = {lag: Fraction(r).limit_denominator(10**6) for lag, r in rates.items() if r > 0}
    pools = {lag: list(previous.get(lag, [])) for lag in rates}
    counts = _replay_counts(len(current), {lag: len(pools[lag]) for lag in rate}, rate)
    out = [{**_as_pair_dict(p), "lag": 0} for p in current]
    stats = {"current": len(current)}
    for lag in sorted(rates):
        pool, n = pools[lag], counts.get(lag, 0)
        chosen = sorted(random.Random(f"replay-{seed}-lag{lag}").sample(range(len(pool)), n))
        out += [{**_as_pair_dict(pool[i]), "lag": lag} for i in chosen]
        stats[f"lag_{lag}"] = n
    ids = [p["id"] for p in out]
    if len(set(ids)) != len(ids):
        raise ValueError("replay_mix: duplicate pair ids across iterations")
    stats["total"] = len(out)
    return out, stats


def _replay_counts(n_current: int, available: Mapping[int, int], rate: Mapping[int, Fraction]) -> dict[int, int]:
    """replay_mix's n_l: the largest counts with n_l <= available[l] and n_l <= rate[l] * T."""
    free = sorted(rate, key=lambda lag: (Fraction(available[lag]) / rate[lag], lag))
    fixed: dict[int, int] = {}

    def total() -> Fraction:  # T when the free lags take exactly their share
        return (n_current + sum(fixed.values())) / (1 - sum(rate[lag] for lag in free))

    while free and available[free[0]] < rate[free[0]] * total():
        lag = free.pop(0)
        fixed[lag] = available[lag]
    t = total()
    return fixed | {lag: min(available[lag], math.floor(rate[lag] * t)) for lag in free}


def spin_pairs(prompts_with_gold: Sequence[tuple[str, str, str]], samples: list[CandidateRecord]):
    """SPIN (Chen et al. 2024, arXiv:2401.01335): chosen = the gold (seed) response, rejected =
    the model's own sample for the same prompt. `prompts_with_gold` holds (prompt_id, prompt,
    gold); every sample of a prompt gives one pair (the paper draws one per prompt), id
    "<prompt_id>-spin-c<sample index>". A sample equal to the gold text (after strip) teaches
    nothing and is dropped. Returns dicts: PairRecord's fields (scores None) + kind="spin".
    Stats: dropped_no_sample (prompts), dropped_same_as_gold, unknown_prompt (samples)."""
    gold: dict[str, tuple[str, str]] = {}
    for pid, prompt, answer in prompts_with_gold:
        if pid in gold:
            raise ValueError(f"spin_pairs: duplicate prompt id {pid}")
        gold[pid] = (prompt, answer)
    by_prompt: dict[str, list[CandidateRecord]] = defaultdict(list)
    for s in samples:
        by_prompt[s.prompt_id].append(s)
    pairs = []
    stats = {"prompts": len(gold), "dropped_no_sample": 0, "dropped_same_as_gold": 0,
             "unknown_prompt": sum(len(v) for k, v in by_prompt.items() if k not in gold)}
    for pid in sorted(gold):
        prompt, answer = gold[pid]
        if not by_prompt.get(pid):
            stats["dropped_no_sample"] += 1
            continue
        for s in sorted(by_prompt[pid], key=lambda c: c.index):
            if s.response.strip() == answer.strip():
                stats["dropped_same_as_gold"] += 1
                continue
            pairs.append(_pair_dict(f"{pid}-spin-c{s.index}", pid, prompt, f"{pid}-gold", answer, None,
                                    s.id, s.response, None, kind="spin"))
    stats["kept"] = len(pairs)
    return pairs, stats
