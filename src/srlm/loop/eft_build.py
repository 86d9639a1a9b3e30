"""Build the EFT (evaluation fine-tuning) set from ranked human replies (paper section 3.1).

The paper made its EFT data from Open Assistant: for each prompt with several human-ranked
replies, a model wrote rubric judgments (Figure 2 prompt) for every reply, and only the
judgments whose scores agree with the human ranking were kept. This module does the same:

1. Groups: (prompt, replies best-first) from Open Assistant trees ('oasst:PATH', first turns
   only as in the paper), 'embedded:oasst' (100 OA trees shipped in srlm/seed/oasst/,
   Apache-2.0), or a pairwise JSONL {prompt, response_a, response_b, label a|b} (a group of
   two; ties carry no ranking and are skipped and counted): data/loaders.py's load_groups.
2. Evaluation data never trains anything: a group whose prompt equals (whitespace and case
   normalised) or is a ROUGE-L near-duplicate (F1 > 0.7, as the prompt filter) of any
   evaluation prompt is dropped; both are counted (data/dedup.py).
3. K judgments per reply by any judge backend, in resumable chunks (run/parallel.py).
   Only the integer that a judgment's own `Score: N` line states is used; a reply without one
   drops its group ("unparsed").
4. Per group, one judgment per reply with scores strictly decreasing along the human ranking:
   the best reply takes its highest score, each next reply its highest score strictly below
   the previous pick (greedy, which finds such a chain whenever one exists). No chain: the
   group is dropped ("disagrees"). Departure: the paper also resampled the kept set so each
   score is equally represented; that is not done here (the score histogram is reported).

Iterating: `build` takes any judge backend, so round r+1 can be judged by a model SFT'd on
round r's output (e.g. M1 trained on this file); nothing else is needed.
Output: OUT (EFT JSONL {id, prompt, response, judgment, score, source}, read unchanged by
loaders.load_eft), OUT.done (the stats), and OUT's judgments beside it (`<OUT>.judgments.jsonl`,
every raw judgment, the resume unit).
"""

from __future__ import annotations

from collections import Counter

from srlm.data import dedup, loaders, rubric
from srlm.data.loaders import RankedGroup
from srlm.loop.judge import judge_texts
from srlm.run.parallel import run_chunks
from srlm.run.records import InputError, is_done, mark_done, marker, read_json, write_jsonl

DROP_REASONS = ("exact_duplicate_of_eval", "near_duplicate_of_eval", "too_long", "unparsed", "disagrees")


def line_score(text: str) -> tuple[str, int | None]:
    """(judgment cut after its score line, the integer that line states or None)."""
    text = rubric.truncate_after_score(text).strip()
    score, _ = rubric.parse_score(text)
    return text, score


def agreeing_chain(judgments: list[list[dict]]) -> tuple[str, list[dict] | None]:
    """judgments[i] = reply i's parsed judgments ({text, score}), replies best-first.
    Returns ("", one judgment per reply with strictly decreasing scores) or (reason, None)."""
    if any(not js for js in judgments):
        return "unparsed", None
    chain, previous = [], rubric.MAX_SCORE + 1
    for js in judgments:
        below = [j for j in js if j["score"] < previous]
        if not below:
            return "disagrees", None
        # Highest score below the previous pick leaves the most room for the replies after it;
        # among equal scores the first judgment, so the choice is deterministic.
        pick = max(below, key=lambda j: j["score"])
        chain.append(pick)
        previous = pick["score"]
    return "", chain


def build(groups: list[RankedGroup], judge_backend, template: str, k: int, judge_params, seed: int,
          eval_prompts: list[str], out_path: str, near_duplicate_threshold: float = 0.7,
          max_chars: int = 0, chunk_size: int = 8) -> dict:
    """Judge every reply k times with `judge_backend` (any srlm Backend, e.g. a strong model
    or M_t) and write the EFT examples whose scores agree with the human ranking.
    judge_params: temperature, top_p, max_new_tokens (a JudgeConfig). max_chars: drop groups
    whose prompt plus longest reply is longer (0 = no limit). Returns the stats."""
    if is_done(out_path):
        return read_json(marker(out_path))
    dropped: Counter = Counter({r: 0 for r in DROP_REASONS})
    todo, dup = dedup.dedup_against_eval(groups, eval_prompts, near_duplicate_threshold, prompt=lambda g: g.prompt)
    dropped.update(dup)
    if max_chars:
        fits = [g for g in todo if len(g.prompt) + max(map(len, g.replies)) <= max_chars]
        dropped["too_long"] += len(todo) - len(fits)
        todo = fits

    def work(chunk: list[RankedGroup], chunk_seed: int) -> list[dict]:
        items = [(g.prompt, r) for g in chunk for r in g.replies]
        rows = iter(judge_texts(judge_backend, template, items, k, judge_params, chunk_seed))
        recs = []
        for g in chunk:
            per_reply = []
            for _ in g.replies:
                row = []
                for text, score, err in next(rows):
                    if score is not None and err:
                        # judge.scoring=expected: a judgment without a score line states the
                        # judge's expected score, rounded, so that it can teach the format.
                        text = rubric.forced_prefix(text) + str(int(round(score)))
                    row.append({"text": text, "judge_score": score, "error": err})
                per_reply.append(row)
            recs.append({"group_id": g.id, "judgments": per_reply})
        return recs

    judged_path = f"{out_path}.judgments.jsonl"
    judged = run_chunks(judged_path, todo, chunk_size, work, (seed, "eft_build"), "EFT judging")
    if [r["group_id"] for r in judged] != [g.id for g in todo]:
        raise InputError(f"{judged_path}: judged groups differ from this run's groups (sources or evaluation "
                         f"prompts changed?); delete it and its .partial/.done files to rebuild")

    counts: Counter = Counter()
    examples = []
    for g, rec in zip(todo, judged):
        parsed = []
        for js in rec["judgments"]:
            ok = []
            for j in js:
                counts["judgments"] += 1
                text, score = line_score(j["text"])
                if score is None:
                    # Only a stated `Score: N` line counts; a score read otherwise (e.g. the
                    # expected score from digit probabilities) is skipped.
                    counts["judgments_unparsed"] += 1
                    if j["judge_score"] is not None:
                        counts["judge_scores_without_line"] += 1
                    continue
                if j["judge_score"] is not None and j["judge_score"] != score:
                    counts["judge_scores_replaced_by_line"] += 1
                ok.append({"text": text, "score": score})
            parsed.append(ok)
        reason, chain = agreeing_chain(parsed)
        if chain is None:
            dropped[reason] += 1
            continue
        for rank, (reply, j) in enumerate(zip(g.replies, chain)):
            examples.append({"id": f"{g.id}-r{rank}", "prompt": g.prompt, "response": reply,
                             "judgment": j["text"], "score": j["score"], "source": g.source})

    hist = Counter(e["score"] for e in examples)
    stats = {
        "eft_build/groups_in": len(groups),
        "eft_build/groups_judged": len(todo),
        "eft_build/dropped": dict(dropped),
        "eft_build/groups_kept": len(todo) - dropped["unparsed"] - dropped["disagrees"],
        "eft_build/examples": len(examples),
        "eft_build/score_hist": {str(s): hist.get(s, 0) for s in range(rubric.MAX_SCORE + 1)},
        **{f"eft_build/{name}": counts[name] for name in
           ("judgments", "judgments_unparsed", "judge_scores_without_line", "judge_scores_replaced_by_line")},
    }
    write_jsonl(out_path, examples)
    mark_done(out_path, stats)
    return stats



def run_stage(cfg, rd, backend) -> dict:
    """The eft_build stage of the pipeline (stages.py): sources and judge from cfg.eft_build."""
    groups, load_stats = loaders.load_groups(cfg.eft_build.sources, cfg.eft_build.first_turn_only)
    stats = build(groups, backend, rubric.load_template(cfg.judge.template), cfg.eft_build.k, cfg.judge, cfg.seed,
                  dedup.eval_prompts(cfg), rd.eft_built, cfg.eft_build.near_duplicate_threshold, cfg.eft_build.max_chars,
                  cfg.eft_build.chunk_size)
    return dict(load_stats) | stats
