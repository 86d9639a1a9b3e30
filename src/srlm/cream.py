"""CREAM, Consistency Regularized Self-Rewarding (Wang et al. 2024, arXiv:2410.12735, section 3
and Algorithm 1; official code Raibows/CREAM): the previous iteration's model also rewards the
current candidates, and how well its ranking agrees with the current model's weights DPO.

Iteration t (method: cream) runs the self-rewarding rows, plus:
- judge_prev: the previous model judges iteration t's candidates with the same rubric and
  settings as the judge stage -> DIR/iter_<t>/judgments_prev.jsonl (JudgmentRecord). The
  previous model of iteration 1 is M0, the model before SFT, as in the paper and its code
  (M0 there too); of iteration t >= 2 it is M_{t-1}.
- cream_pairs: the self-rewarding pairs (highest vs lowest current score, pairs.build_pairs),
  each with a `confidence`: per prompt, the consistency C = (Kendall tau-b + 1) / 2 of the two
  models' candidate scores (consistency.prompt_consistency, candidates aligned by id; prompts
  the previous model left without a ranking are counted and left out, never shifted);
  cream.consistency=dataset gives every pair the iteration's mean C (Algorithm 1, the code's
  consistency_avg), =prompt its own prompt's C (the code's consistency_dyn), the mean where
  its prompt has none. With no C at all the confidence is None: plain DPO.
  -> DIR/iter_<t>/pairs.jsonl (PairRecord with confidence)
- dpo: the confidence makes it train with the weighted loss
  L = C * -log sigmoid(beta D) + (1 - C) * -log sigmoid(-beta D) (weighted_dpo.py).
Departure: the paper ranks with the DPO implicit reward log pi_t(y|x) - log pi_ref(y|x); here
both rankings are the rubric judge's mean scores (the Self-Rewarding reward the loop already has).
Metrics: cream/consistency_mean (the paper reports it rising from about 0.4-0.5 to above 0.9),
judge_prev/* as judge/*.
"""

from __future__ import annotations

import dataclasses
import statistics

from srlm import rubric
from srlm.backends import Backend
from srlm.consistency import group_by_prompt, prompt_consistency
from srlm.judge import judge_items, summarize
from srlm.pairs import build_pairs, candidate_scores
from srlm.parallel import is_main, run_chunks
from srlm.records import CandidateRecord, JudgmentRecord, PairRecord, read_jsonl, write_jsonl


def previous_model_name(t: int) -> str:
    """The model whose ranking iteration t is checked against: M0 for t = 1, else M_{t-1}."""
    return f"M{t - 1}"


def run_judge_prev(cfg, rd, t: int, backend: Backend | None) -> dict:
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    template = rubric.load_template(cfg.judge.template)

    def work(chunk: list[CandidateRecord], seed: int) -> list[dict]:
        res = judge_items(backend, template, [(c.prompt, c.response) for c in chunk], cfg.judge.k, cfg.judge, seed)
        return [dataclasses.asdict(JudgmentRecord(
            id=f"{c.id}-j{s}", candidate_id=c.id, prompt_id=c.prompt_id, sample=s, text=jd.text, score=jd.score,
            error=jd.error, parsed_score=jd.parsed, mode=jd.mode, score_probs=jd.probs, score_forced=jd.forced,
            finish_reason=jd.finish_reason)) for c, row in zip(chunk, res) for s, jd in enumerate(row)]

    recs = run_chunks(rd.judgments_prev(t), cands, cfg.judge.chunk_size, work, (cfg.seed, t, "judge_prev"),
                      f"{previous_model_name(t)} judging")
    return {"judge_prev/model": previous_model_name(t)} | {
        "judge_prev/" + k.removeprefix("judge/"): v for k, v in summarize(recs).items()}


def confidences(pairs: list[PairRecord], current: dict[str, float], previous: dict[str, float],
                prompt_of: dict[str, str], mode: str) -> tuple[list[float | None], dict]:
    """Each pair's confidence from the two models' candidate scores (candidate id -> score;
    prompt_of: candidate id -> prompt id). mode "dataset": the mean per-prompt consistency for
    every pair; "prompt": the pair's own prompt's, else the mean. None where there is no mean."""
    rep = prompt_consistency(group_by_prompt(current, prompt_of), group_by_prompt(previous, prompt_of))
    out, fallback = [], 0
    for p in pairs:
        c = rep.per_prompt.get(p.prompt_id) if mode == "prompt" else rep.mean
        if c is None and mode == "prompt":
            c, fallback = rep.mean, fallback + 1
        out.append(c)
    given = [c for c in out if c is not None]
    stats = {"cream/consistency_mean": rep.mean, "cream/mode": mode,
             "cream/confidence_mean": statistics.fmean(given) if given else None,
             "cream/pairs_unweighted": len(out) - len(given), "cream/pairs_prompt_fallback": fallback}
    stats |= {"cream/" + k.removeprefix("consistency/"): v for k, v in rep.metrics().items()
              if k != "consistency/mean"}
    return out, stats


def run_pairs(cfg, rd, t: int) -> dict:
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    current = candidate_scores(read_jsonl(rd.judgments(t), JudgmentRecord), cfg.pairs.min_valid_judgments)
    previous = candidate_scores(read_jsonl(rd.judgments_prev(t), JudgmentRecord), cfg.pairs.min_valid_judgments)
    pairs, stats = build_pairs(cands, current, cfg.pairs.min_margin)
    values, cream_stats = confidences(pairs, current, previous, {c.id: c.prompt_id for c in cands},
                                      cfg.cream.consistency)
    for p, c in zip(pairs, values):
        p.confidence = c
    if is_main():
        write_jsonl(rd.pairs(t), pairs)
    return {f"pairs/{k}": v for k, v in stats.items()} | {"pairs/scored_candidates": len(current)} | cream_stats
