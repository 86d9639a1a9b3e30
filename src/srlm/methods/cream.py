"""CREAM, Consistency Regularized Self-Rewarding (Wang et al. 2024, arXiv:2410.12735, section 3
and Algorithm 1; official code Raibows/CREAM): the previous iteration's model also rewards the
current candidates, and how well its ranking agrees with the current model's weights DPO.

Iteration t (method: cream): prompts and sample as in the self-rewarding loop, then the two
rankings, by cream.reward:
- implicit (the paper and its code): stage cream_rewards, no judge. Each candidate's DPO
  implicit reward log pi(y|x) - log pi_ref(y|x), summed over its tokens (the chat template as
  DPO applies it), under the current model M_t against the model it was trained from (M0 for
  M1; else iteration t-1's DPO start), and under the previous model M_{t-1} likewise; in
  iteration 1 the previous model is M0, the model before SFT, ranking by its likelihood
  log pi_0(y|x) as the code does (it has no reference) -> DIR/iter_<t>/implicit_rewards.jsonl
  (ImplicitRewardRecord).
- judge: stage judge (M_t's rubric scores) and stage judge_prev: the previous model (M0 for
  t = 1, else M_{t-1}) judges the same candidates with the same rubric and settings
  -> DIR/iter_<t>/judgments_prev.jsonl (JudgmentRecord).
Then:
- cream_pairs: highest vs lowest current reward (pairs.build_pairs; score_chosen/rejected hold
  that reward), each with a `confidence`: per prompt, the consistency C = (Kendall tau-b + 1) / 2
  of the two rankings (prompt_consistency below, candidates aligned by id; prompts the
  previous model left without a ranking are counted and left out, never shifted);
  cream.consistency=dataset gives every pair the iteration's mean C (Algorithm 1, the code's
  consistency_avg), =prompt its own prompt's C (the code's consistency_dyn), the mean where
  its prompt has none. With no C at all the confidence is None: plain DPO.
  -> DIR/iter_<t>/pairs.jsonl (PairRecord with confidence)
- dpo: the confidence makes it train with the weighted loss
  L = C * -log sigmoid(beta D) + (1 - C) * -log sigmoid(-beta D) (engines/weighted_dpo.py).
Metrics: cream/consistency_mean (the paper reports it rising over the iterations),
cream_rewards/* or judge_prev/* (as judge/*).

The consistency rate itself, pure functions: Kendall's tau mapped to [0, 1], C = (tau + 1) / 2,
per prompt of the two reward sets; the data-set mean weights how much to trust the current
labels. Candidates are aligned by candidate id, never by row position (CREAM's released code
pairs rows by position, which shifts every later prompt once one is skipped).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.stats import kendalltau

from srlm.engines.backends import Backend
from srlm.loop.judge import judge_candidates, summarize
from srlm.loop.pairs import build_pairs, candidate_scores
from srlm.run.parallel import is_main
from srlm.engines.modeling import ModelRef, load_model, load_tokenizer, set_threads
from srlm.run.records import CandidateRecord, ImplicitRewardRecord, JudgmentRecord, PairRecord, read_jsonl, write_jsonl


# -- the consistency rate -----------------------------------------------------------------------

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


# -- the stages ---------------------------------------------------------------------------------

def previous_model_name(t: int) -> str:
    """The model whose ranking iteration t is checked against: M0 for t = 1, else M_{t-1}."""
    return f"M{t - 1}"


def run_judge_prev(cfg, rd, t: int, backend: Backend | None) -> dict:
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    recs = judge_candidates(cfg, backend, cands, rd.judgments_prev(t), (cfg.seed, t, "judge_prev"),
                            f"{previous_model_name(t)} judging")
    return {"judge_prev/model": previous_model_name(t)} | {
        "judge_prev/" + k.removeprefix("judge/"): v for k, v in summarize(recs).items()}


def sequence_logps(model, tok, items: list[tuple[str, str]]) -> list[float]:
    """Summed log-prob of each answer's tokens after its chat-formatted prompt, one sequence at a
    time (no padding), tokenised as TRL's DPO does for conversational pairs: the prompt with the
    generation prompt, the answer the rest of the full conversation."""
    out = []
    with torch.no_grad():
        for prompt, answer in items:
            user = [{"role": "user", "content": prompt}]
            head = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
            full = tok.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=True,
                                           return_dict=True)["input_ids"]
            ids = torch.tensor([full])
            logps = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
            per_token = logps.gather(1, ids[0, 1:, None])[:, 0]
            out.append(per_token[len(head) - 1:].sum().item())
    return out


def implicit_rewards(cfg, models: list[ModelRef], items: list[tuple[str, str]]) -> dict[str, list[float]]:
    """{str(model): sequence_logps of the items} for each distinct model, loaded one at a time."""
    set_threads(cfg.model.threads)
    out: dict[str, list[float]] = {}
    for ref in models:
        if str(ref) not in out:
            model = load_model(ref, dtype=torch.float32).eval()
            out[str(ref)] = sequence_logps(model, load_tokenizer(ref), items)
            del model
    return out


def run_rewards(cfg, rd, t: int, current: tuple[ModelRef, ModelRef], previous: tuple[ModelRef, ModelRef | None]) -> dict:
    """Stage cream_rewards: current = (M_t, its reference), previous = (the previous model, its
    reference, or None for a likelihood)."""
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    models = [m for m in (*current, *previous) if m is not None]
    logps = implicit_rewards(cfg, models, [(c.prompt, c.response) for c in cands])

    def reward(policy: ModelRef, reference: ModelRef | None) -> list[float]:
        lp = logps[str(policy)]
        return lp if reference is None else [a - b for a, b in zip(lp, logps[str(reference)])]

    cur, prev = reward(*current), reward(*previous)
    recs = [ImplicitRewardRecord(c.id, c.prompt_id, x, y) for c, x, y in zip(cands, cur, prev)]
    if is_main():
        write_jsonl(rd.implicit_rewards(t), recs)
    return {"cream_rewards/candidates": len(recs), "cream_rewards/models_loaded": len(logps),
            "cream_rewards/current_mean": statistics.fmean(cur) if cur else None,
            "cream_rewards/previous_mean": statistics.fmean(prev) if prev else None}


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


def rankings(cfg, rd, t: int) -> tuple[dict[str, float], dict[str, float]]:
    """(current, previous) candidate id -> reward, from the files cream.reward chose."""
    if cfg.cream.reward == "implicit":
        recs = read_jsonl(rd.implicit_rewards(t), ImplicitRewardRecord)
        return {r.candidate_id: r.current for r in recs}, {r.candidate_id: r.previous for r in recs}
    k = cfg.pairs.min_valid_judgments
    return (candidate_scores(read_jsonl(rd.judgments(t), JudgmentRecord), k),
            candidate_scores(read_jsonl(rd.judgments_prev(t), JudgmentRecord), k))


def run_pairs(cfg, rd, t: int) -> dict:
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    current, previous = rankings(cfg, rd, t)
    pairs, stats = build_pairs(cands, current, cfg.pairs.min_margin)
    values, cream_stats = confidences(pairs, current, previous, {c.id: c.prompt_id for c in cands},
                                      cfg.cream.consistency)
    for p, c in zip(pairs, values):
        p.confidence = c
    if is_main():
        write_jsonl(rd.pairs(t), pairs)
    return {f"pairs/{k}": v for k, v in stats.items()} | {"pairs/scored_candidates": len(current)} | cream_stats
