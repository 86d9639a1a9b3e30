"""Stage 3 of an iteration: M_t judges every candidate K=3 times with the additive 0-5
rubric (paper section 3.2, Figure 2).

Each judgment keeps the raw text and its strictly parsed score; an unparseable, conflicting
or out-of-range judgment is stored with score=null and its reason, and counted in
judge/parse_failure_rate. Nothing is ever guessed into a score.
Output: DIR/iter_<t>/judgments.jsonl of JudgmentRecord.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections import Counter

from srlm import rubric
from srlm.backends import Backend, SamplingParams, generate_within_context
from srlm.parallel import run_chunks
from srlm.records import CandidateRecord, JudgmentRecord, read_jsonl


def judge_texts(backend: Backend, template: str, items: list[tuple[str, str]], k: int, cfg_judge, seed: int):
    """Judge (prompt, response) items k times each -> per item, k (text, score, error).
    Shared by this stage and by evaluation (srlm/evaluate.py)."""
    params = SamplingParams(n=k, temperature=cfg_judge.temperature, top_p=cfg_judge.top_p,
                            max_new_tokens=cfg_judge.max_new_tokens, stop_at_score=True)
    chats = [[{"role": "user", "content": rubric.render(template, p, r)}] for p, r in items]
    results = []
    for comps in generate_within_context(backend, chats, params, seed):
        if comps is None:
            results.append([("", None, "judge prompt exceeds the context window")] * k)
            continue
        row = []
        for c in comps:
            text = rubric.truncate_after_score(c.text)
            score, err = rubric.parse_score(text)
            row.append((text, score, err))
        results.append(row)
    return results


def run(cfg, run_dir: str, t: int, backend: Backend | None) -> dict:
    it = os.path.join(run_dir, f"iter_{t}")
    cands = read_jsonl(os.path.join(it, "candidates.jsonl"), CandidateRecord)
    template = rubric.load_template(cfg.judge.template)

    def work(chunk: list[CandidateRecord], seed: int) -> list[dict]:
        res = judge_texts(backend, template, [(c.prompt, c.response) for c in chunk], cfg.judge.k, cfg.judge, seed)
        recs = []
        for c, row in zip(chunk, res):
            for s, (text, score, err) in enumerate(row):
                recs.append(dataclasses.asdict(JudgmentRecord(
                    id=f"{c.id}-j{s}", candidate_id=c.id, prompt_id=c.prompt_id, sample=s, text=text,
                    score=score, error=err)))
        return recs

    out = os.path.join(it, "judgments.jsonl")
    recs = run_chunks(out, cands, cfg.judge.chunk_size, work, (cfg.seed, t, "judge"), f"M{t} judging")
    scores = [r["score"] for r in recs if r["score"] is not None]
    failures = Counter(r["error"].split(" [")[0] if r["error"] else "" for r in recs if r["score"] is None)
    hist = Counter(scores)
    return {
        "judge/judgments": len(recs),
        "judge/parsed": len(scores),
        "judge/parse_failures": len(recs) - len(scores),
        "judge/parse_failure_rate": (len(recs) - len(scores)) / len(recs) if recs else 0.0,
        "judge/failure_reasons": dict(failures),
        "judge/score_mean": statistics.fmean(scores) if scores else None,
        "judge/score_std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
        "judge/score_hist": {str(k): hist.get(k, 0) for k in range(rubric.MAX_SCORE + 1)},
    }
