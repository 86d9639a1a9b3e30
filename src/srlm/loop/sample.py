"""Stage 2 of an iteration: N candidate responses per prompt from M_t (paper section 3.2:
N=4, temperature 0.7, top_p 0.9).

Prompts whose chat-formatted length leaves no room for `sample.max_new_tokens` in the context
window are skipped and counted (sample/skipped_over_context).
Output: DIR/iter_<t>/candidates.jsonl of CandidateRecord.
"""

from __future__ import annotations

import dataclasses
import statistics

from srlm.engines.backends import Backend, SamplingParams, generate_within_context
from srlm.run.parallel import run_chunks
from srlm.run.records import CandidateRecord, PromptRecord, read_jsonl


def run(cfg, rd, t: int, backend: Backend | None) -> dict:
    prompts = read_jsonl(rd.prompts(t), PromptRecord)
    params = SamplingParams(n=cfg.sample.n, temperature=cfg.sample.temperature, top_p=cfg.sample.top_p,
                            max_new_tokens=cfg.sample.max_new_tokens)

    def work(chunk: list[PromptRecord], seed: int) -> list[dict]:
        chats = [[{"role": "user", "content": p.prompt}] for p in chunk]
        recs = []
        for p, comps in zip(chunk, generate_within_context(backend, chats, params, seed)):
            for i, c in enumerate(comps or []):
                recs.append(dataclasses.asdict(CandidateRecord(
                    id=f"{p.id}-c{i}", prompt_id=p.id, prompt=p.prompt, response=c.text.strip(), index=i,
                    num_tokens=c.num_tokens, finish_reason=c.finish_reason)))
        return recs

    recs = run_chunks(rd.candidates(t), prompts, cfg.sample.chunk_size, work, (cfg.seed, t, "sample"), f"M{t} sampling")
    lengths = [len(r["response"]) for r in recs]
    sampled = {r["prompt_id"] for r in recs}
    return {
        "sample/prompts": len(prompts),
        "sample/candidates": len(recs),
        "sample/skipped_over_context": len(prompts) - len(sampled),
        "sample/truncated": sum(r["finish_reason"] == "length" for r in recs),
        "sample/empty": sum(not r["response"] for r in recs),
        "sample/mean_length_chars": statistics.fmean(lengths) if lengths else 0.0,
        "sample/mean_tokens": statistics.fmean(r["num_tokens"] for r in recs) if recs else 0.0,
    }
