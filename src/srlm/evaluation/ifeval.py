"""IFEval (Zhou et al. 2023, arXiv:2311.07911) as a measurement: a model's answers to IFEval's
prompts and their accuracies. The prompts and the checkers, which the loop's verifier shares,
are in data/ifeval_checks.py (with why IFEval is a second opinion no judge can be hacked into).

Four accuracies (paper section 3): prompt-level (all instructions of a prompt followed) and
instruction-level (share of instructions followed), each `strict` (the response as written) and
`loose` (passes if any of eight variants passes: the response, without its first and/or last
line, with or without markdown asterisks).

- Answers: greedy, one user turn per prompt through the model's chat template (for SmolLM2 the
  template adds its default system prompt, as lighteval's --use-chat-template run did), at most
  MAX_NEW_TOKENS new tokens: lm-evaluation-harness's `max_gen_toks` and lighteval's
  `generation_size` for ifeval.
- Output: `answer` rows (key, prompt, instructions, response, num_tokens, finish_reason),
  ifeval_checks.score adds the strict and loose verdicts per instruction, `summarize` gives the
  `ifeval/*` metrics with 95% bootstrap intervals (prompts resampled, also for instruction
  level); `paired_delta` one model minus another on their common prompts with a paired
  bootstrap, `by_family` instruction-level accuracy per instruction family, `subset` the prompts
  whose instructions all lie in a set (held out of training, or trained). The caller writes
  them: `srlm eval` puts the scored rows of model M<t> in DIR/eval/ifeval_M<t>.jsonl and the
  summaries in the "eval" group of DIR/metrics.json.
"""

from __future__ import annotations

import numpy as np

from srlm.engines.backends import SamplingParams, generate_within_context

MAX_NEW_TOKENS = 1280  # lm-eval `max_gen_toks` and lighteval `generation_size` for ifeval
CI_LEVEL = 0.95
SKIPPED = "skipped"  # finish_reason of a prompt that leaves no room for the answer in the context


# --- answering --------------------------------------------------------------------------------

def answer(backend, prompts: list[dict], max_new_tokens: int = MAX_NEW_TOKENS, seed: int = 0) -> list[dict]:
    """Greedy answers through the backend's batched `generate`, one user turn per prompt. A
    prompt too long for the context window is kept with an empty response (it then fails
    every check, so the accuracy keeps the whole prompt set as denominator)."""
    params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
    chats = [[{"role": "user", "content": p["prompt"]}] for p in prompts]
    outs = generate_within_context(backend, chats, params, seed)
    rows = []
    for p, out in zip(prompts, outs):
        c = out[0] if out else None
        rows.append({"key": p["key"], "prompt": p["prompt"], "instruction_id_list": p["instruction_id_list"],
                     "kwargs": p["kwargs"], "response": c.text if c else "",
                     "num_tokens": c.num_tokens if c else 0, "finish_reason": c.finish_reason if c else SKIPPED})
    return rows


# --- aggregation ------------------------------------------------------------------------------

NAMES = ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose", "score", "score_loose")


def _per_prompt(scored: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (numerator per prompt, denominator per prompt) of the four accuracies."""
    n = len(scored)
    counts = np.array([len(r["strict_follow"]) for r in scored], dtype=float)
    out = {}
    for mode in ("strict", "loose"):
        out[f"prompt_{mode}"] = (np.array([r[f"{mode}_follow_all"] for r in scored], dtype=float), np.ones(n))
        out[f"inst_{mode}"] = (np.array([sum(r[f"{mode}_follow"]) for r in scored], dtype=float), counts)
    return out


def _metrics(per_prompt: dict[str, tuple[np.ndarray, np.ndarray]], idx: np.ndarray) -> dict[str, np.ndarray]:
    """The six metrics on the prompts `idx` (one index vector, or a matrix of resamples)."""
    m = {k: num[idx].sum(-1) / den[idx].sum(-1) for k, (num, den) in per_prompt.items()}
    m["score"] = (m["prompt_strict"] + m["inst_strict"]) / 2
    m["score_loose"] = (m["prompt_loose"] + m["inst_loose"]) / 2
    return m


def _interval(boots: np.ndarray) -> list[float]:
    tail = (1 - CI_LEVEL) / 2
    lo, hi = np.quantile(boots, [tail, 1 - tail])
    return [float(lo), float(hi)]


def _resamples(n: int, seed: int, bootstrap: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(max(1, bootstrap), n))


def summarize(scored: list[dict], seed: int = 0, bootstrap: int = 1000) -> dict:
    """The `ifeval/*` metrics of scored rows.

    prompt_{strict,loose}: share of prompts whose every instruction is followed;
    inst_{strict,loose}: followed instructions / all instructions (pooled over prompts, as
    lm-eval's agg_inst_level_acc). `score` is the SmolLM2 model card's "IFEval (Average
    prompt/inst)" read as the mean of prompt- and instruction-level strict accuracy (the Open
    LLM Leaderboard's reading); the card does not say strict or loose, so `score_loose`, the
    mean of the loose pair, is given too.
    Each `*_ci95` is a seeded percentile bootstrap over prompts (instruction level included,
    so that a prompt's instructions stay together), all metrics on the same resamples."""
    n = len(scored)
    res: dict = {"ifeval/prompts": n,
                 "ifeval/instructions": sum(len(r["strict_follow"]) for r in scored),
                 "ifeval/mean_response_chars": float(np.mean([len(r["response"]) for r in scored])) if n else None,
                 "ifeval/truncated": sum(r.get("finish_reason") == "length" for r in scored),
                 "ifeval/skipped": sum(r.get("finish_reason") == SKIPPED for r in scored)}
    if n == 0:
        return res | {f"ifeval/{k}": None for k in NAMES} | {f"ifeval/{k}_ci95": None for k in NAMES}
    per_prompt = _per_prompt(scored)
    point = _metrics(per_prompt, np.arange(n))
    boots = _metrics(per_prompt, _resamples(n, seed, bootstrap))
    for k in NAMES:
        res[f"ifeval/{k}"] = float(point[k])
        res[f"ifeval/{k}_ci95"] = _interval(boots[k])
    return res


def paired_delta(rows_a: list[dict], rows_b: list[dict], seed: int = 0, bootstrap: int = 1000) -> dict:
    """Model B minus model A on the prompts both answered (joined by `key`, in A's order).

    `ifeval/delta_<name>` for the six metrics of summarize(), each with `ifeval/delta_<name>_ci95`:
    a seeded paired percentile bootstrap, one resample of prompts shared by both models (a
    prompt's two answers stay together, so the prompts' own difficulty cancels and the interval
    is narrower than two separate ones). `ifeval/paired_prompts`: prompts compared;
    `ifeval/prompts_fixed` / `ifeval/prompts_broken`: prompts that B follows entirely (strict)
    and A does not / the reverse."""
    by_key = {r["key"]: r for r in rows_b}
    common = [(r, by_key[r["key"]]) for r in rows_a if r["key"] in by_key]
    n = len(common)
    res: dict = {"ifeval/paired_prompts": n}
    if n == 0:
        return (res | {"ifeval/prompts_fixed": 0, "ifeval/prompts_broken": 0}
                | {f"ifeval/delta_{k}": None for k in NAMES} | {f"ifeval/delta_{k}_ci95": None for k in NAMES})
    pa, pb = _per_prompt([a for a, _ in common]), _per_prompt([b for _, b in common])
    res["ifeval/prompts_fixed"] = sum(b["strict_follow_all"] and not a["strict_follow_all"] for a, b in common)
    res["ifeval/prompts_broken"] = sum(a["strict_follow_all"] and not b["strict_follow_all"] for a, b in common)
    whole, idx = np.arange(n), _resamples(n, seed, bootstrap)
    point_a, point_b = _metrics(pa, whole), _metrics(pb, whole)
    boot_a, boot_b = _metrics(pa, idx), _metrics(pb, idx)
    for k in NAMES:
        res[f"ifeval/delta_{k}"] = float(point_b[k] - point_a[k])
        res[f"ifeval/delta_{k}_ci95"] = _interval(boot_b[k] - boot_a[k])
    return res


def by_family(scored: list[dict]) -> dict[str, dict]:
    """Instruction-level accuracy per instruction family (the id before ':', e.g. "punctuation"):
    {family: {"instructions": n, "inst_strict": x, "inst_loose": y}}, families sorted."""
    counts: dict[str, list[int]] = {}  # family -> [instructions, strict followed, loose followed]
    for r in scored:
        for i, s, lo in zip(r["instruction_id_list"], r["strict_follow"], r["loose_follow"]):
            c = counts.setdefault(i.split(":", 1)[0], [0, 0, 0])
            c[0] += 1
            c[1] += bool(s)
            c[2] += bool(lo)
    return {f: {"instructions": n, "inst_strict": s / n, "inst_loose": lo / n}
            for f, (n, s, lo) in sorted(counts.items())}


def subset(rows: list[dict], ids: frozenset[str] | set[str]) -> list[dict]:
    """The rows whose every instruction id is in `ids` (rows without instructions are left out):
    with the ids held out of training, the prompts that test only what training never rewarded;
    with the trainable ids, the prompts that test only what it did. Mixed prompts are in neither."""
    return [r for r in rows if r["instruction_id_list"] and all(i in ids for i in r["instruction_id_list"])]
