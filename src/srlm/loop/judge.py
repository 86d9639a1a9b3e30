"""Stage 3 of an iteration: M_t judges every candidate K=3 times with the additive 0-5
rubric (paper section 3.2, Figure 2).

judge.scoring picks how a judgment becomes a score:
- parsed (the paper): the strictly parsed `Score: N` line; an unparseable, conflicting or
  out-of-range judgment is stored with score=null and its reason, counted in
  judge/parse_failure_rate, and never guessed into a score.
- expected: the probability-weighted mean of the digits 0-5 under the model's next-token
  distribution where it wrote its score digit; when it stopped (or was cut for repeating
  itself, judge.stop_repetition) without a score line, the distribution is read after the
  judgment text plus a forced `Score: ` prefix (by the transformers backend in the same decode,
  from the judgment's own KV cache; by other engines in a second pass). The six probabilities
  and whether the prefix was forced are stored with the judgment; no judgment is thrown away.
  An engine that returns no token probabilities falls back to parsed, judgment by judgment, and
  says so.
judge.source picks what the score is (the positive control, verifier.py): rubric (the
paper) as above; verifier: the fraction of the prompt's verifiable instructions the candidate
follows, IFEval's strict check, one record per candidate and no model; hybrid: the checker's
fraction + judge.rubric_weight x each rubric judgment's score. On verifiable prompts every
judgment records the checker's verdicts (`verifier`, `verifier_score`) and the rubric's score
(`judge_score`) beside `score`, so the self-judge can be compared with the checker.
Output: DIR/iter_<t>/judgments.jsonl of JudgmentRecord.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections import Counter
from dataclasses import dataclass

from srlm.data import rubric
from srlm.engines.backends import Backend, SamplingParams, generate_within_context
from srlm.run.parallel import run_chunks
from srlm.run.records import CandidateRecord, JudgmentRecord, PromptRecord, read_jsonl

log = logging.getLogger(__name__)
OVER_CONTEXT = "judge prompt exceeds the context window"


@dataclass
class Judgment:
    text: str
    score: float | int | None  # what pairs and evaluation use: parsed int, or expected float
    error: str | None  # why the text did not parse (kept in expected mode too, for the record)
    parsed: int | None  # the parsed `Score: N`, whatever the mode
    probs: list[float] | None = None  # expected mode: P(0..5)
    forced: bool = False  # expected mode: probabilities read after a forced score prefix
    finish_reason: str | None = None
    mode: str = "parsed"  # how `score` was obtained


def judge_items(backend: Backend, template: str, items: list[tuple[str, str]], k: int, cfg_judge,
                seed: int) -> list[list[Judgment]]:
    """Judge (prompt, response) items k times each. Shared by this stage, evaluation
    (srlm/evaluation/evaluate.py) and EFT building (eft_build.py)."""
    scoring = getattr(cfg_judge, "scoring", "parsed")
    expected = scoring == "expected"
    params = SamplingParams(n=k, temperature=cfg_judge.temperature, top_p=cfg_judge.top_p,
                            max_new_tokens=cfg_judge.max_new_tokens, stop_at_score=True, score_probs=expected,
                            force_score=expected, stop_repetition=getattr(cfg_judge, "stop_repetition", 0))
    chats = [[{"role": "user", "content": rubric.render(template, p, r)}] for p, r in items]
    results: list[list[Judgment]] = []
    for chat, comps in zip(chats, generate_within_context(backend, chats, params, seed)):
        if comps is None:
            results.append([Judgment("", None, OVER_CONTEXT, None) for _ in range(k)])
            continue
        row = []
        for c in comps:
            text = rubric.truncate_after_score(c.text)
            parsed, err = rubric.parse_score(text)
            if err and c.finish_reason == "repetition":
                err = f"{err} (cut for repeating itself)"
            row.append(Judgment(text, parsed, err, parsed, probs=c.score_probs, forced=c.score_forced,
                                finish_reason=c.finish_reason))
        results.append(row)
    if expected:
        _expected_scores(backend, chats, results)
    return results


def _expected_scores(backend: Backend, chats: list, results: list[list[Judgment]]) -> None:
    """Fill in expected scores: from the written score position, else from a forced prefix."""
    need = [(i, j) for i, row in enumerate(results) for j, jd in enumerate(row)
            if jd.probs is None and jd.error != OVER_CONTEXT]
    forced = backend.score_probs([chats[i] for i, _ in need],
                                 [rubric.forced_prefix(results[i][j].text) for i, j in need]) if need else []
    for (i, j), probs in zip(need, forced):
        results[i][j].probs, results[i][j].forced = probs, probs is not None
    missing = 0
    for row in results:
        for jd in row:
            if jd.probs is not None:
                jd.score, jd.mode = rubric.expected_score(jd.probs), "expected"
            elif jd.error != OVER_CONTEXT:
                missing += 1
    if missing:
        log.warning("judge.scoring=expected: the engine returned no token probabilities for %d judgments; "
                    "they use their parsed score instead", missing)


def judge_texts(backend: Backend, template: str, items: list[tuple[str, str]], k: int, cfg_judge, seed: int):
    """judge_items as per item k (text, score, error) tuples."""
    return [[(j.text, j.score, j.error) for j in row] for row in judge_items(backend, template, items, k, cfg_judge,
                                                                             seed)]


def run(cfg, rd, t: int, backend: Backend | None, files: list[str] | None = None) -> dict:
    """The judge stage over `files` of CandidateRecord (default: iter_<t>/candidates.jsonl; DNO
    adds its reference answers, stages.judged_files), judged in file order."""
    cands = [c for f in (files or [rd.candidates(t)]) for c in read_jsonl(f, CandidateRecord)]
    prompts = {p.id: p for p in read_jsonl(rd.prompts(t), PromptRecord)} if reads_prompts(cfg) else {}
    recs = judge_candidates(cfg, backend, cands, rd.judgments(t), (cfg.seed, t, "judge"), f"M{t} judging", prompts)
    return summarize(recs)


def reads_prompts(cfg) -> bool:
    """Whether the judge stage reads iter_<t>/prompts.jsonl (for verifiable instructions)."""
    return cfg.judge.source != "rubric" or cfg.prompts.verifiable_max > 0


def judge_candidates(cfg, backend: Backend | None, cands: list[CandidateRecord], out: str, seed_key: tuple,
                     label: str, prompts: dict[str, PromptRecord] | None = None) -> list[dict]:
    """K JudgmentRecords per candidate into `out` (one under judge.source=verifier), in resumable
    chunks seeded from `seed_key` (the judge stage, and CREAM's previous-model judge). `prompts`
    (by id) supplies verifiable instructions for the checker."""
    template = rubric.load_template(cfg.judge.template)
    from srlm.loop import verifier

    source = cfg.judge.source
    prompts = prompts or {}

    def work(chunk: list[CandidateRecord], seed: int) -> list[dict]:
        follow = _check(chunk, prompts)
        if source == "verifier":
            rows = [[None] for _ in chunk]
        else:
            rows = judge_items(backend, template, [(c.prompt, c.response) for c in chunk], cfg.judge.k, cfg.judge,
                               seed)
        recs = []
        for c, row, f in zip(chunk, rows, follow):
            vscore = None if f is None else verifier.reward(f)
            for s, jd in enumerate(row):
                if jd is None:  # the checker alone
                    jd = Judgment(_verdict_text(f), vscore, None if f is not None else NO_INSTRUCTIONS, None,
                                  mode="verifier")
                    judge_score = None
                else:
                    judge_score = jd.score
                    if source == "hybrid":
                        jd.score = None if vscore is None or jd.score is None else (
                            vscore + cfg.judge.rubric_weight * jd.score)
                        jd.mode = f"hybrid+{jd.mode}"
                recs.append(dataclasses.asdict(JudgmentRecord(
                    id=f"{c.id}-j{s}", candidate_id=c.id, prompt_id=c.prompt_id, sample=s, text=jd.text,
                    score=jd.score, error=jd.error, parsed_score=jd.parsed, mode=jd.mode, score_probs=jd.probs,
                    score_forced=jd.forced, finish_reason=jd.finish_reason, verifier=f, verifier_score=vscore,
                    judge_score=judge_score)))
        return recs

    return run_chunks(out, cands, cfg.judge.chunk_size, work, seed_key, label)


NO_INSTRUCTIONS = "the prompt carries no verifiable instructions"


def _check(chunk: list[CandidateRecord], prompts: dict[str, PromptRecord]) -> list[list[bool] | None]:
    """The checker's strict verdicts per candidate (None where its prompt has no instructions)."""
    from srlm.loop import verifier

    todo = [(i, prompts[c.prompt_id]) for i, c in enumerate(chunk)
            if c.prompt_id in prompts and prompts[c.prompt_id].instruction_id_list]
    out: list[list[bool] | None] = [None] * len(chunk)
    checked = verifier.check([(chunk[i].prompt_id, p.prompt, p.instruction_id_list, p.kwargs, chunk[i].response)
                              for i, p in todo]) if todo else []
    for (i, _), f in zip(todo, checked):
        out[i] = f
    return out


def _verdict_text(follow: list[bool] | None) -> str:
    if follow is None:
        return ""
    return f"verifier: {sum(follow)}/{len(follow)} instructions followed ({', '.join(map(str, follow))})"


def summarize(recs: list[dict]) -> dict:
    """judge/* metrics of judgment records. parse_failure_rate always counts texts without a
    valid score line (the paper's measure); unscored counts judgments with no score at all,
    which is 0 in expected mode by construction. Checker-only records (judge.source=verifier)
    have no text to parse and count in neither."""
    scores = [r["score"] for r in recs if r["score"] is not None]
    texts = [r for r in recs if r.get("mode") != "verifier"]
    parsed = [r.get("parsed_score", r["score"]) for r in texts]
    parsed = [p for p in parsed if p is not None]
    failures = Counter(r["error"].split(" [")[0] if r["error"] else "" for r in texts
                       if r.get("parsed_score", r["score"]) is None)
    # Histogram of scores rounded to the nearest digit (expected scores are fractional).
    hist = Counter(int(round(s)) for s in scores)
    n = len(recs)
    checked = [r for r in recs if r.get("verifier_score") is not None]
    extra = {}
    if checked:
        extra["judge/verifier_mean"] = statistics.fmean(r["verifier_score"] for r in checked)
        extra["judge/verifier_all_followed"] = statistics.fmean(float(all(r["verifier"])) for r in checked)
    return extra | {
        "judge/judgments": n,
        "judge/parsed": len(parsed),
        "judge/parse_failures": len(texts) - len(parsed),
        "judge/parse_failure_rate": (len(texts) - len(parsed)) / len(texts) if texts else 0.0,
        "judge/failure_reasons": dict(failures),
        "judge/unscored": n - len(scores),
        "judge/forced_prefix": sum(bool(r.get("score_forced")) for r in recs),
        "judge/cut_repetition": sum(r.get("finish_reason") == "repetition" for r in recs),
        "judge/score_mean": statistics.fmean(scores) if scores else None,
        "judge/score_std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
        "judge/score_hist": {str(k): hist.get(k, 0) for k in range(rubric.MAX_SCORE + 1)},
    }
