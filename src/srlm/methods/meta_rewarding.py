"""Meta-Rewarding's judge training (Wu et al. 2024, arXiv:2407.19594, section 2.3): M_t judges
its own judgments, and the judgments it prefers become DPO pairs that train the judge.

Two stages of iteration t, in the iterations meta.judge_iterations of method meta_rewarding:
- meta_judge (after judge): per prompt, the candidate whose judgment scores vary most
  (meta.select_response); every pair of its judgments that wrote a score line is compared by
  M_t in both orders with the meta-judge prompt (meta.render_meta). meta.scoring picks the
  verdict: parsed (the paper), the `Winner: Judgement A|B` line parsed strictly by
  meta.parse_meta_verdict, nothing guessed; expected (a departure), the more probable of A and B
  after the text cut before its verdict line plus a forced `Winner: Judgement ` prefix
  (meta.forced_verdict_prefix, Backend.choice_probs), so every comparison is decided; the parsed
  verdict, the two probabilities and whether the prefix was forced are kept on the record.
  Output: DIR/iter_<t>/meta_judgments.jsonl of MetaJudgmentRecord.
- judge_pairs (after pairs): the verdicts are weighted by position over the whole iteration
  (meta.position_weights, cancelling the meta-judge's first-position bias), Bradley-Terry
  strengths are fitted per candidate (meta.elo_scores); chosen = the strongest judgment,
  rejected = the weakest, prompt = the judge prompt (the rubric request for that candidate).
  Pairs whose chosen judgment is longer than meta.max_chosen_words are dropped, and judge pairs
  are capped at meta.judge_pair_fraction of the DPO set.
  Output: DIR/iter_<t>/judge_pairs.jsonl of JudgePairRecord.
The dpo stage trains on pairs.jsonl plus judge_pairs.jsonl (dpo_pairs below).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
import statistics
from collections import defaultdict
from fractions import Fraction

from srlm.data import rubric
from srlm.engines.backends import Backend, SamplingParams, generate_within_context
from srlm.methods.meta import (
    META_JUDGE_TEMPLATE,
    VERDICTS,
    Battle,
    battle_orders,
    bradley_terry,
    decide_verdict,
    elo_scores,
    forced_verdict_prefix,
    judge_pair,
    parse_meta_verdict,
    position_weights,
    render_meta,
    select_response,
    soft_battle_matrix,
    truncate_after_verdict,
)
from srlm.run.parallel import is_main, run_chunks
from srlm.run.records import (
    CandidateRecord,
    JudgePairRecord,
    JudgmentRecord,
    MetaJudgmentRecord,
    PairRecord,
    read_jsonl,
    write_jsonl,
)

log = logging.getLogger(__name__)
OVER_CONTEXT = "meta-judge prompt exceeds the context window"
_OPENING_TAG = re.compile(r"[ \t]*<[A-Za-z_ ]+>[ \t]*")


def trains_judge(cfg, t: int) -> bool:
    """Whether iteration t meta-judges and trains the judge (the paper: iterations 1 and 2)."""
    return cfg.method == "meta_rewarding" and t in cfg.meta.judge_iterations


def rubric_of(template: str) -> str:
    """The judge template's instructions for the meta-judge prompt: the text before its first
    placeholder, less a trailing opening tag line such as `<request>`."""
    head = template[:min(template.index(p) for p in ("{prompt}", "{response}"))].rstrip().split("\n")
    if head and _OPENING_TAG.fullmatch(head[-1]):
        head = head[:-1]
    return "\n".join(head).strip()


def _has_score_line(j: JudgmentRecord) -> bool:
    # Only judgments that wrote a valid score line take part: a chosen judgment also teaches the format.
    return j.parsed_score is not None or (j.mode == "parsed" and j.score is not None)


def _score(j: JudgmentRecord) -> float:
    return j.score if j.score is not None else j.parsed_score


def select_judgments(cands: list[CandidateRecord], judgments: list[JudgmentRecord]):
    """Per prompt (in prompt id order), (the candidate whose judgments' scores vary most, its
    judgments with a score line in sample order). Prompts where no candidate has two such
    judgments are left out."""
    by_cand: dict[str, list[JudgmentRecord]] = defaultdict(list)
    for j in judgments:
        if _has_score_line(j):
            by_cand[j.candidate_id].append(j)
    by_prompt: dict[str, list[CandidateRecord]] = defaultdict(list)
    for c in cands:
        by_prompt[c.prompt_id].append(c)
    out = []
    for pid in sorted(by_prompt):
        group = sorted(by_prompt[pid], key=lambda c: c.index)
        lists = [sorted(by_cand.get(c.id, []), key=lambda j: j.sample) for c in group]
        i = select_response([[_score(j) for j in js] for js in lists])
        if i is not None:
            out.append((group[i], lists[i]))
    return out


def run(cfg, rd, t: int, backend: Backend | None) -> dict:
    """The meta_judge stage: every ordered pair of the selected judgments, meta-judged once by M_t."""
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    judgments = read_jsonl(rd.judgments(t), JudgmentRecord)
    rubric_text = rubric_of(rubric.load_template(cfg.judge.template))
    selected = select_judgments(cands, judgments)
    items = [(c, js[a], js[b]) for c, js in selected for a, b in battle_orders(len(js))]
    params = SamplingParams(n=1, temperature=cfg.meta.temperature, top_p=cfg.meta.top_p,
                            max_new_tokens=cfg.meta.max_new_tokens, stop_repetition=cfg.judge.stop_repetition)

    def work(chunk: list, seed: int) -> list[dict]:
        chats = [[{"role": "user", "content": render_meta(META_JUDGE_TEMPLATE, rubric_text, c.prompt, c.response,
                                                          ja.text, jb.text)}] for c, ja, jb in chunk]
        recs = []
        for (c, ja, jb), comps in zip(chunk, generate_within_context(backend, chats, params, seed)):
            if comps is None:
                text, verdict, error, finish = "", None, OVER_CONTEXT, None
            else:
                text = truncate_after_verdict(comps[0].text)
                verdict, error = parse_meta_verdict(text)
                finish = comps[0].finish_reason
            recs.append(MetaJudgmentRecord(
                id=f"{c.id}-m{ja.sample}v{jb.sample}", prompt_id=c.prompt_id, candidate_id=c.id, judgment_a=ja.id,
                judgment_b=jb.id, text=text, verdict=verdict, error=error, finish_reason=finish,
                parsed_verdict=verdict))
        if cfg.meta.scoring == "expected":
            expected_verdicts(backend, chats, recs)
        return [dataclasses.asdict(r) for r in recs]

    recs = run_chunks(rd.meta_judgments(t), items, cfg.meta.chunk_size, work, (cfg.seed, t, "meta_judge"),
                      f"M{t} meta-judging")
    return summarize(recs) | {"meta/prompts": len({c.prompt_id for c in cands}), "meta/selected": len(selected)}


def expected_verdicts(backend: Backend, chats: list, recs: list[MetaJudgmentRecord]) -> None:
    """meta.scoring=expected: decide each meta-judgment (not over the context window) by
    [P(A), P(B)] after its forced verdict prefix. Where the engine returns no probabilities the
    parsed verdict stays (mode "parsed"), with one warning."""
    need = [i for i, r in enumerate(recs) if r.error != OVER_CONTEXT]
    probs = backend.choice_probs([chats[i] for i in need], [forced_verdict_prefix(recs[i].text) for i in need],
                                 list(VERDICTS)) if need else []
    missing = 0
    for i, p in zip(need, probs):
        r = recs[i]
        if p is None:
            missing += 1
            continue
        r.verdict_probs, r.verdict, r.mode = p, decide_verdict(p), "expected"
        r.verdict_forced = r.parsed_verdict is None
    if missing:
        log.warning("meta.scoring=expected: the engine returned no token probabilities for %d meta-judgments; "
                    "they keep their parsed verdict", missing)


def summarize(recs: list[dict]) -> dict:
    """meta/* metrics of meta-judgment records. parse_failures counts texts without a valid
    verdict line (in either mode); undecided, final verdicts that are None (0 in expected mode
    but for exact ties and prompts over the context window). position_bias: how often the
    judgment shown first wins among the final decisive verdicts (0.5 = no bias).
    mean_verdict_confidence: mean max(P(A), P(B)) of expected-mode verdicts."""
    n = len(recs)
    first = sum(r["verdict"] == "A" for r in recs)
    second = sum(r["verdict"] == "B" for r in recs)
    # In parsed mode the verdict is the parsed one (files from before expected mode have no parsed_verdict).
    parsed = sum((r["verdict"] if r.get("mode", "parsed") == "parsed" else r.get("parsed_verdict")) is not None
                 for r in recs)
    conf = [max(r["verdict_probs"]) for r in recs if r.get("verdict_probs")]
    return {
        "meta/meta_judgments": n,
        "meta/parse_failures": n - parsed,
        "meta/parse_failure_rate": (n - parsed) / n if n else 0.0,
        "meta/undecided": n - first - second,
        "meta/verdicts_forced": sum(bool(r.get("verdict_forced")) for r in recs),
        "meta/mean_verdict_confidence": statistics.fmean(conf) if conf else None,
        "meta/over_context": sum(r["error"] == OVER_CONTEXT for r in recs),
        "meta/position_bias": first / (first + second) if first + second else None,
    }


def build_judge_pairs(cands: list[CandidateRecord], judgments: list[JudgmentRecord],
                      metas: list[MetaJudgmentRecord], template: str, max_chosen_words: int, prior: float = 0.1):
    """Judge pairs from meta-judgments: (pairs, stats). Position weights come from every
    meta-judgment given (the iteration's); per candidate, its judgments (in sample order) get
    Bradley-Terry strengths from its own battles (expected-mode meta-judgments: from their
    P(A) over both orders, meta.soft_battle_matrix; stats["soft_ranked"] counts those
    candidates); chosen = strongest, rejected = weakest (ties -> lowest sample). Dropped:
    strengths tie (e.g. every verdict unparsed: dropped_tie), chosen judgment longer than
    max_chosen_words words (dropped_too_long; 0 = no limit)."""
    cand_by_id = {c.id: c for c in cands}
    jud_by_id = {j.id: j for j in judgments}
    by_cand: dict[str, list[MetaJudgmentRecord]] = defaultdict(list)
    for m in metas:
        by_cand[m.candidate_id].append(m)
    weights = position_weights([Battle(0, 1, m.verdict) for m in metas])
    pairs, stats = [], {"candidates": len(by_cand), "dropped_tie": 0, "dropped_too_long": 0, "soft_ranked": 0}
    for cid in sorted(by_cand):
        ms = by_cand[cid]
        ids = sorted({m.judgment_a for m in ms} | {m.judgment_b for m in ms}, key=lambda i: jud_by_id[i].sample)
        pos = {jid: k for k, jid in enumerate(ids)}
        if all(m.mode == "expected" and m.verdict_probs for m in ms):
            # Expected verdicts: P(A) of both orders, so an A-always meta-judge still ranks.
            stats["soft_ranked"] += 1
            strengths = bradley_terry(soft_battle_matrix(len(ids), [
                (pos[m.judgment_a], pos[m.judgment_b], m.verdict_probs[0]) for m in ms]), prior)
        else:
            strengths = elo_scores(len(ids), [Battle(pos[m.judgment_a], pos[m.judgment_b], m.verdict) for m in ms],
                                   weights, prior)
        texts = [jud_by_id[i].text for i in ids]
        choice, _ = judge_pair(texts, strengths, None)
        if choice is None:
            stats["dropped_tie"] += 1
            continue
        ch, rj = choice
        words = [len(x.split()) for x in texts]
        if max_chosen_words and words[ch] > max_chosen_words:
            stats["dropped_too_long"] += 1
            continue
        cand = cand_by_id[cid]
        pairs.append(JudgePairRecord(
            id=f"{cid}-judge-pair", prompt_id=cand.prompt_id,
            prompt=rubric.render(template, cand.prompt, cand.response),
            chosen=texts[ch], rejected=texts[rj], chosen_id=ids[ch], rejected_id=ids[rj], score_chosen=strengths[ch],
            score_rejected=strengths[rj], chosen_length=len(texts[ch]), rejected_length=len(texts[rj]),
            candidate_id=cid, chosen_words=words[ch], rejected_words=words[rj]))
    stats["weight_first"], stats["weight_second"] = weights
    return pairs, stats


def cap_judge_pairs(judge_pairs: list, n_actor: int, fraction: float | None, seed: str):
    """(kept, dropped): at most floor(f / (1 - f) * n_actor) judge pairs, so judge pairs are at most
    a share f of actor + judge pairs (exact fractions: 0.25 / 0.75 * 6 is 2, not 1.999...). A seeded
    subset keeps its order. fraction None keeps every pair."""
    if fraction is None:
        return list(judge_pairs), 0
    f = Fraction(fraction).limit_denominator(10**6)
    cap = math.floor(f / (1 - f) * n_actor)
    if len(judge_pairs) <= cap:
        return list(judge_pairs), 0
    keep = sorted(random.Random(seed).sample(range(len(judge_pairs)), cap))
    return [judge_pairs[i] for i in keep], len(judge_pairs) - cap


def run_pairs(cfg, rd, t: int) -> dict:
    """The judge_pairs stage."""
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    judgments = read_jsonl(rd.judgments(t), JudgmentRecord)
    metas = read_jsonl(rd.meta_judgments(t), MetaJudgmentRecord)
    template = rubric.load_template(cfg.judge.template)
    pairs, stats = build_judge_pairs(cands, judgments, metas, template, cfg.meta.max_chosen_words)
    n_actor = len(read_jsonl(rd.pairs(t)))
    kept, dropped = cap_judge_pairs(pairs, n_actor, cfg.meta.judge_pair_fraction, f"judge-mix-{cfg.seed}-{t}")
    if is_main():
        write_jsonl(rd.judge_pairs(t), kept)
    return {f"meta/{k}": v for k, v in stats.items()} | {
        "meta/judge_pairs": len(kept),
        "meta/dropped_mix": dropped,
        "meta/actor_pairs": n_actor,
        "meta/chosen_length": statistics.fmean(p.chosen_length for p in kept) if kept else None,
        "meta/rejected_length": statistics.fmean(p.rejected_length for p in kept) if kept else None,
        "meta/chosen_words": statistics.fmean(p.chosen_words for p in kept) if kept else None,
        "meta/rejected_words": statistics.fmean(p.rejected_words for p in kept) if kept else None,
    }


def dpo_pairs(cfg, rd, t: int) -> list[PairRecord]:
    """The judge pairs the dpo stage of iteration t trains on besides the actor pairs."""
    return read_jsonl(rd.judge_pairs(t), PairRecord) if trains_judge(cfg, t) else []
