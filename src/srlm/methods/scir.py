"""SCIR's cheap variant (after Zhou et al. 2025, arXiv:2502.08922, "Self-Consistency of the
Internal Reward Models"): a self-rewarding model holds two reward models, the generative rubric
judge and the DPO implicit reward r(x, y) = beta * (log pi_t(y|x) - log pi_ref(y|x)); a pair
is kept only when both order it the same way (scir_filter).

This is NOT the paper's method, which also trains the two reward models towards agreement with
a consistency loss inside DPO; it is the filter that loss is built on. Iteration t (method:
scir) runs the self-rewarding rows with one change, stage scir_pairs:
- pairs as usual (highest vs lowest judge score, pairs.build_pairs);
- each pair's implicit-reward margin beta * ((log pi_t - log pi_ref)(chosen) - (...)(rejected))
  under the policy M_t and the model M_t was trained from: M0 for M1 (SFT's start), else the
  start of iteration t-1's DPO (M1 with dpo.init=anchor, M_{t-1} with previous). Log-probs are
  TRL's own (WeightedDPOTrainer's forward on DPOTrainer's tokenisation, the pairs as chat turns
  exactly as the dpo stage feeds them), so the margin is the one DPO itself would log;
- pairs the judge prefers but the implicit reward does not (margin <= 0) are dropped.
Output: DIR/iter_<t>/pairs.jsonl (PairRecord fields + implicit_margin). Metrics scir/*, with
scir/agreement_rate, the share of judged pairs both rewards order the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from srlm.engines.modeling import ModelRef, load_model
from srlm.loop.pairs import build_pairs, candidate_scores
from srlm.run.parallel import is_main
from srlm.run.records import CandidateRecord, JudgmentRecord, PairRecord, read_jsonl, write_jsonl
from srlm.engines.training import cpu_log_probs, load_for_training, trainer_kwargs


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

def implicit_margins(cfg, policy: ModelRef, reference: ModelRef, pairs: list[PairRecord], work_dir: str) -> list[float]:
    """beta * (policy-vs-reference log-ratio of chosen - that of rejected), one per pair, in order."""
    if not pairs:
        return []
    from trl import DPOConfig

    from srlm.loop.dpo import to_conversational
    from srlm.engines.weighted_dpo import WeightedDPOTrainer

    model, tok = load_for_training(cfg, policy)
    ref_model = load_model(reference, dtype=torch.float32)
    model.eval()
    ref_model.eval()
    data = to_conversational(pairs)
    args = DPOConfig(**trainer_kwargs(cfg, cfg.dpo, work_dir), beta=cfg.dpo.beta, precompute_ref_log_probs=False,
                     per_device_eval_batch_size=cfg.dpo.per_device_batch_size)
    out: list[float] = []
    with cpu_log_probs():
        trainer = WeightedDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=data,
                                     eval_dataset=data, processing_class=tok)
        # The evaluation loader keeps the pairs' order (sequential sampler, no dropped rows).
        with torch.no_grad():
            for batch in trainer.get_eval_dataloader():
                batch = trainer._prepare_inputs(batch)
                chosen, rejected, _ = trainer._sequence_logps(trainer.model, batch)
                ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.ref_model, batch)
                out += (cfg.dpo.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))).tolist()
    if len(out) != len(pairs):
        raise RuntimeError(f"implicit rewards: {len(out)} margins for {len(pairs)} pairs")
    return out


def run_pairs(cfg, rd, t: int, reference: ModelRef) -> dict:
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    scores = candidate_scores(read_jsonl(rd.judgments(t), JudgmentRecord), cfg.pairs.min_valid_judgments)
    pairs, stats = build_pairs(cands, scores, cfg.pairs.min_margin)
    margins = implicit_margins(cfg, ModelRef(rd.model(t)), reference, pairs, rd.stage_checkpoint("scir_pairs", t))
    by_id = {p.id: m for p, m in zip(pairs, margins)}
    kept, scir_stats = scir_filter(pairs, by_id)
    out = [{**p.__dict__, "implicit_margin": by_id[p.id]} for p in kept]
    if is_main():
        write_jsonl(rd.pairs(t), out)
    return ({f"pairs/{k}": v for k, v in stats.items()} | {"pairs/kept": len(kept), "pairs/built": len(pairs)}
            | {f"scir/{k}": v for k, v in scir_stats.items()}
            | {"scir/implicit_margin_mean": statistics.fmean(margins) if margins else None})
