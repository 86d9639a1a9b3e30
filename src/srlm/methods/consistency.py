"""Agreement between two reward signals on the same candidates, for the consistency-based
follow-ups of self-rewarding:

- CREAM (Wang et al. 2024, arXiv:2410.12735, section 3): the rank consistency between the
  current model's and the previous iteration's rewards for one prompt's candidates is Kendall's
  tau mapped to [0, 1], C = (tau + 1) / 2; the data-set mean weights how much to trust the
  current labels. Here candidates are aligned by candidate id, never by row position (CREAM's
  released code pairs rows by position, which shifts every later prompt once one is skipped).
- SCIR (Zhou et al. 2025, arXiv:2502.08922): keep a preference pair only when the two internal
  reward models, the rubric judge (score difference) and the DPO implicit reward (log-ratio
  difference), order chosen over rejected the same way.
Pure functions; the caller logs `consistency/*` metrics and writes the filtered pairs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import kendalltau


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties handled). None when it is undefined: fewer than two items, or one
    side all tied (no ranking to agree with); such prompts are excluded from means."""
    if len(x) != len(y):
        raise ValueError(f"length mismatch: {len(x)} vs {len(y)}")
    if len(x) < 2 or len(set(x)) == 1 or len(set(y)) == 1:
        return None
    return float(kendalltau(x, y, variant="b").statistic)


def consistency(x: Sequence[float], y: Sequence[float]) -> float | None:
    """CREAM's consistency rate (tau + 1) / 2 in [0, 1]; None when tau is undefined."""
    tau = kendall_tau(x, y)
    return None if tau is None else (tau + 1) / 2


@dataclass
class ConsistencyReport:
    per_prompt: dict[str, float] = field(default_factory=dict)  # prompt_id -> consistency
    mean: float | None = None  # over prompts with a defined value
    prompts_missing: int = 0  # prompts present on one side only
    candidates_missing: int = 0  # candidates present on one side only (left out, others kept)
    prompts_too_few: int = 0  # fewer than 2 shared candidates
    prompts_all_tied: int = 0  # one side gives all shared candidates the same reward

    def metrics(self) -> dict[str, Any]:
        return {"consistency/mean": self.mean, "consistency/prompts": len(self.per_prompt),
                "consistency/prompts_missing": self.prompts_missing,
                "consistency/candidates_missing": self.candidates_missing,
                "consistency/prompts_too_few": self.prompts_too_few,
                "consistency/prompts_all_tied": self.prompts_all_tied}


def group_by_prompt(rewards: Mapping[str, float], prompt_of: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """candidate_id -> reward  to  prompt_id -> {candidate_id -> reward}."""
    out: dict[str, dict[str, float]] = {}
    for cid, r in rewards.items():
        out.setdefault(prompt_of[cid], {})[cid] = r
    return out


def prompt_consistency(current: Mapping[str, Mapping[str, float]],
                       previous: Mapping[str, Mapping[str, float]]) -> ConsistencyReport:
    """Per-prompt CREAM consistency of two reward sets, each prompt_id -> {candidate_id -> reward},
    aligned by candidate id. A prompt on one side only, or a candidate on one side only, is
    left out and counted; everything else is compared as if it were not there."""
    rep = ConsistencyReport()
    rep.prompts_missing = len(set(current) ^ set(previous))
    for pid in sorted(set(current) & set(previous)):
        cur, prev = current[pid], previous[pid]
        shared = sorted(set(cur) & set(prev))
        rep.candidates_missing += len(set(cur) ^ set(prev))
        if len(shared) < 2:
            rep.prompts_too_few += 1
            continue
        c = consistency([cur[k] for k in shared], [prev[k] for k in shared])
        if c is None:
            rep.prompts_all_tied += 1
            continue
        rep.per_prompt[pid] = c
    rep.mean = statistics.fmean(rep.per_prompt.values()) if rep.per_prompt else None
    return rep


def scir_agree(judge_margin: float, implicit_margin: float) -> bool:
    """True when both margins (reward of chosen minus reward of rejected) have the same strict
    sign: the two internal reward models order the pair the same way. A zero margin orders
    nothing and never agrees."""
    return (judge_margin > 0 and implicit_margin > 0) or (judge_margin < 0 and implicit_margin < 0)


def _get(p: Any, name: str) -> Any:
    return p[name] if isinstance(p, Mapping) else getattr(p, name)


def scir_filter(pairs: Iterable[Any], implicit_margins: Mapping[str, float]) -> tuple[list[Any], dict[str, Any]]:
    """SCIR's cheap filter variant (not the paper's full method, which also trains the two
    reward models towards consistency): keep a pair only when the judge's score margin
    score_chosen - score_rejected and the DPO implicit-reward margin agree that chosen is
    better. `implicit_margins` maps pair id -> beta * (log-ratio(chosen) - log-ratio(rejected))
    under the current policy and its reference. Pairs (PairRecord or dict) come back unchanged.
    Stats: kept, disagree, no_judge_margin (judge does not prefer chosen, or has no scores),
    missing_implicit (no implicit margin given), agreement_rate = agree / compared."""
    kept = []
    stats = {"pairs": 0, "kept": 0, "disagree": 0, "no_judge_margin": 0, "missing_implicit": 0}
    for p in pairs:
        stats["pairs"] += 1
        sc, sr = _get(p, "score_chosen"), _get(p, "score_rejected")
        if sc is None or sr is None or sc - sr <= 0:
            stats["no_judge_margin"] += 1
            continue
        pid = _get(p, "id")
        if pid not in implicit_margins:
            stats["missing_implicit"] += 1
            continue
        if scir_agree(sc - sr, implicit_margins[pid]):
            kept.append(p)
        else:
            stats["disagree"] += 1
    stats["kept"] = len(kept)
    compared = stats["kept"] + stats["disagree"]
    stats["agreement_rate"] = stats["kept"] / compared if compared else None
    return kept, stats
