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
- dno_pairs: pairs.dno_pairs on the candidates + references: every pair whose mean-score gap is
  at least dno.margin (dno.self_margin when both sides are M_t's samples); a sample with heavy
  n-gram repetition (dno.repetition_ngram) is an automatic negative. Then pairs.replay_mix adds
  earlier iterations' own pairs (lag 0 in their file) at the dno.replay shares of the final set
  -> DIR/iter_<t>/pairs.jsonl (PairRecord fields + kind, dno_type, lag).
- dpo: DPO on them; DNO's reference policy is pi_t, the iteration's start model: dno.yaml sets
  dpo.init=previous. DNO's soft (general-preference) targets are not used: every pair is a hard
  preference.
"""

from __future__ import annotations

import statistics

from srlm.data import loaders
from srlm.loop.pairs import candidate_scores, dno_pairs, replay_mix
from srlm.run.parallel import derive_seed, is_main
from srlm.run.records import CandidateRecord, JudgmentRecord, PromptRecord, read_jsonl, write_jsonl
from srlm.data.repetition import cut_repeated_text
from srlm.methods.spin import gold_for  # the same prompt id -> seed example lookup as SPIN's gold answers

REF_TAG = "-ref"


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
