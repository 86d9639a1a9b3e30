"""DNO, Direct Nash Optimization, practical batched version (Rosset et al. 2024, arXiv:2404.03715,
Algorithm 2 "DNO-Prct" and section 5): each iteration samples from the policy, has an annotator
compare the samples with a stronger reference answer, and trains with DPO on every large-margin
pair, plus some pairs of earlier iterations.

Iteration t (method: dno), rows of the stage table (stages.py):
- seed_prompts: a seeded subset of prompts.num_prompts prompts of the reference set (SPIN's row:
  the same subset every iteration): the seed IFT data (dno.reference=seed) or a file of a
  stronger model's answers -> DIR/iter_<t>/prompts.jsonl. Self-instruct prompts are not used:
  they have no reference answer.
- sample: M_t's sample.n candidates per prompt (the ordinary row) -> iter_<t>/candidates.jsonl.
- dno_reference: each prompt's reference answer as one more CandidateRecord (id "<prompt id>-ref",
  index sample.n, finish_reason "reference") -> DIR/iter_<t>/references.jsonl. A file of its own
  rather than appended to candidates.jsonl, so that the sample stage's output and marker stay
  what sampling wrote; the judge row reads both files (stages.judged_files).
- judge: the rubric judge (M_t, or a frozen judge.model, as the paper's GPT-4 annotator) scores
  candidates and references alike -> iter_<t>/judgments.jsonl.
- dno_pairs: dno_pairs below, on the candidates + references: every pair whose mean-score gap is
  at least dno.margin (dno.self_margin when both sides are M_t's samples); a sample with heavy
  n-gram repetition (dno.repetition_ngram) is an automatic negative. Then replay_mix adds
  earlier iterations' own pairs (lag 0 in their file) at the dno.replay shares of the final set
  -> DIR/iter_<t>/pairs.jsonl (PairRecord fields + kind, dno_type, lag).
- dpo: DPO on them; DNO's reference policy is pi_t, the iteration's start model: dno.yaml sets
  dpo.init=previous. DNO's soft (general-preference) targets are not used: every pair is a hard
  preference.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from fractions import Fraction

from srlm.data import loaders
from srlm.data.repetition import cut_repeated_text
from srlm.loop.pairs import candidate_scores, pair_dict
from srlm.methods.spin import gold_for  # the same prompt id -> seed example lookup as SPIN's gold answers
from srlm.run.parallel import derive_seed, is_main
from srlm.run.records import CandidateRecord, JudgmentRecord, PromptRecord, read_jsonl, write_jsonl

REF_TAG = "-ref"


# -- pure parts: DNO's pairs, and the replay of earlier iterations' pairs ------------------------

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
    (heavy repetition, see srlm/data/repetition.py) is an automatic negative: it ranks below every
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
            pairs.append(pair_dict(f"{ch.id}-over-{rj.id}", pid, ch.prompt, ch.id, ch.response, scores[ch.id],
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


# -- the stages ----------------------------------------------------------------------------------

def reference_sources(cfg) -> list[str]:
    """Where DNO's prompts and their reference answers come from: data.ift, or dno.reference."""
    return list(cfg.data.ift) if cfg.dno.reference == "seed" else [cfg.dno.reference]


def references(prompts: list[PromptRecord], examples: list, index: int) -> list[CandidateRecord]:
    """One reference CandidateRecord per prompt, from the reference example it was drawn from."""
    return [CandidateRecord(id=pid + REF_TAG, prompt_id=pid, prompt=prompt, response=answer.strip(), index=index,
                            num_tokens=0, finish_reason="reference")
            for pid, prompt, answer in gold_for(prompts, examples)]


def run_references(cfg, rd, t: int) -> dict:
    prompts = read_jsonl(rd.prompts(t), PromptRecord)
    recs = references(prompts, loaders.load_ift(reference_sources(cfg)), cfg.sample.n)
    if is_main():
        write_jsonl(rd.references(t), recs)
    return {"dno/references": len(recs),
            "dno/reference_mean_length_chars": statistics.fmean(len(r.response) for r in recs) if recs else None}


def repetitive(cands: list[CandidateRecord], n: int) -> set[str]:
    """Ids of the samples in which one n-word n-gram occurs 3 times (repetition.TIMES)."""
    return {c.id for c in cands if n > 0 and cut_repeated_text(c.response, n)[1]}


def replay_sources(cfg, rd, t: int) -> list[tuple[int, str]]:
    """(lag, pairs file) of the earlier iterations whose pairs iteration t may replay."""
    return [(lag, rd.pairs(t - lag)) for lag, rate in enumerate(cfg.dno.replay, start=1) if rate > 0 and t - lag >= 1]


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def run_pairs(cfg, rd, t: int) -> dict:
    samples = read_jsonl(rd.candidates(t), CandidateRecord)
    refs = read_jsonl(rd.references(t), CandidateRecord)
    scores = candidate_scores(read_jsonl(rd.judgments(t), JudgmentRecord), cfg.pairs.min_valid_judgments)
    flagged = repetitive(samples, cfg.dno.repetition_ngram)
    ref_ids = {r.id for r in refs}
    pairs, stats = dno_pairs(samples + refs, scores, ref_ids, cfg.dno.margin, cfg.dno.self_margin, flagged)
    # Only an earlier iteration's own pairs (lag 0 there) are replayed: its replayed ones would compound.
    previous = {lag: [p for p in read_jsonl(path) if p.get("lag", 0) == 0] for lag, path in replay_sources(cfg, rd, t)}
    rates = {lag: rate for lag, rate in enumerate(cfg.dno.replay, start=1) if rate > 0}
    mixed, mix = replay_mix(pairs, previous, rates, seed=derive_seed(cfg.seed, "dno", "replay", t))
    if is_main():
        write_jsonl(rd.pairs(t), mixed)
    return {f"dno/{k}": v for k, v in stats.items()} | {
        "dno/repetition_flagged": len(flagged),
        "dno/reference_score_mean": _mean([scores[i] for i in ref_ids if i in scores]),
        "dno/sample_score_mean": _mean([scores[c.id] for c in samples if c.id in scores]),
        "dno/replayed": mix["total"] - mix["current"],
        **{f"dno/replay_lag_{lag}": mix.get(f"lag_{lag}", 0) for lag in rates},
        "pairs/kept": len(mixed),
        "pairs/mean_chosen_length": _mean([p["chosen_length"] for p in pairs]),
        "pairs/mean_rejected_length": _mean([p["rejected_length"] for p in pairs]),
    }
