"""Verifiable instructions: prompts that carry checkable instructions, and the checker's reward.

The positive control of the loop (docs/RESULTS.md): a reward that carries signal at any model
size. Each training prompt gets 1-3 instructions of IFEval's kinds ("answer in all lowercase",
"use no commas", "end with the phrase ..."), drawn from lm-evaluation-harness's IFEval
instruction registry with seeded arguments and never two that the registry's conflict table
forbids together. A candidate's reward is the fraction of its prompt's instructions it follows
under IFEval's strict reading, checked by the same checkers that score IFEval (data/ifeval_checks.py).

IFEval's own 541 prompts never train anything: base prompts whose text equals one of them, or is
a near-duplicate by ROUGE-L (Self-Instruct's filter, as EFT building uses), are dropped first.
Instruction families can be held out of training (`prompts.holdout_families`), so evaluation can
ask whether the loop teaches instruction following or only the trained checkers.
"""

from __future__ import annotations

import functools
import random

from srlm.run.records import InputError

HALF = "half"  # prompts.holdout_families: [half] holds out a seeded half of the families


@functools.cache
def _registry():
    from srlm.data import ifeval_checks

    ifeval_checks._checkers()  # imports lm-eval's IFEval module offline (NLTK data, seeded langdetect)
    from lm_eval.tasks.ifeval import instructions_registry

    return instructions_registry


def instruction_ids() -> list[str]:
    """Every instruction id of IFEval's registry, sorted."""
    return sorted(_registry().INSTRUCTION_DICT)


def family(instruction_id: str) -> str:
    """'punctuation:no_comma' -> 'punctuation'."""
    return instruction_id.split(":", 1)[0]


def families() -> list[str]:
    return sorted({family(i) for i in instruction_ids()})


@functools.cache
def conflicts() -> dict[str, frozenset[str]]:
    """The registry's conflict table made symmetric (its own is not: 'language' lists
    'keywords:existence' but not the reverse); every id conflicts with itself."""
    table = {i: set(v) | {i} for i, v in _registry().INSTRUCTION_CONFLICTS.items()}
    for i, others in list(table.items()):
        for o in others:
            table.setdefault(o, {o}).add(i)
    return {i: frozenset(v) for i, v in table.items()}


def _expand(entries: list[str], what: str) -> set[str]:
    """Family names and instruction ids -> instruction ids; unknown names are refused."""
    ids, fams = instruction_ids(), families()
    out: set[str] = set()
    for e in entries:
        if e in ids:
            out.add(e)
        elif e in fams:
            out |= {i for i in ids if family(i) == e}
        else:
            raise InputError(f"{what}: {e!r} is neither an IFEval instruction family ({', '.join(fams)}) "
                             f"nor an instruction id")
    return out


def heldout_ids(spec: list[str], seed: int) -> frozenset[str]:
    """Instruction ids held out of training: none for [], a seeded half of the families for
    ['half'], else the named families and instruction ids."""
    if not spec:
        return frozenset()
    if list(spec) == [HALF]:
        fams = families()
        held = random.Random(f"holdout:{seed}").sample(fams, len(fams) // 2)
        return frozenset(i for i in instruction_ids() if family(i) in held)
    if HALF in spec:
        raise InputError("prompts.holdout_families: 'half' stands alone (a seeded half of the families)")
    return frozenset(_expand(list(spec), "prompts.holdout_families"))


def trainable_ids(pool: list[str], holdout: list[str], seed: int) -> list[str]:
    """The instruction ids training prompts may carry: the pool (all of the registry when
    empty) minus the held-out ones."""
    ids = _expand(list(pool), "prompts.verifiable_families") if pool else set(instruction_ids())
    out = sorted(ids - heldout_ids(holdout, seed))
    if not out:
        raise InputError("prompts.verifiable_families minus prompts.holdout_families leaves no instruction to train on")
    return out


def attach(base: str, rng: random.Random, k: int, allowed: list[str]) -> tuple[str, list[str], list[dict]]:
    """`base` followed by k instruction descriptions drawn from `allowed` (fewer when conflicts
    leave no choice). Returns (prompt, instruction ids, kwargs), kwargs in IFEval's input format.
    Arguments (keywords, counts, phrases) are drawn by the registry's own build_description from
    Python's global generator, seeded here from `rng` and restored afterwards."""
    reg = _registry()
    table = conflicts()
    chosen: list[str] = []
    for _ in range(k):
        options = [i for i in allowed if not any(i in table.get(c, {c}) for c in chosen)]
        if not options:
            break
        chosen.append(rng.choice(options))
    descriptions, kwargs = [], []
    state = random.getstate()
    try:
        for iid in chosen:
            random.seed(rng.getrandbits(64))
            inst = reg.INSTRUCTION_DICT[iid](iid)
            if iid == "combination:repeat_prompt":
                text = inst.build_description(prompt_to_repeat=base)
            else:
                text = inst.build_description()
            descriptions.append(text.strip())
            kwargs.append({k: v for k, v in (inst.get_instruction_args() or {}).items()})
    finally:
        random.setstate(state)
    prompt = base.rstrip() + "\n\n" + " ".join(descriptions) if descriptions else base
    return prompt, chosen, kwargs


def check(items: list[tuple[str, str, list[str], list[dict], str]]) -> list[list[bool]]:
    """Strict per-instruction verdicts of (key, prompt, instruction ids, kwargs, response) items,
    through IFEval's checking (ifeval_checks.score; seeded per key as evaluation is)."""
    from srlm.data import ifeval_checks

    rows = [{"key": key, "prompt": prompt, "instruction_id_list": ids, "kwargs": kw, "response": resp}
            for key, prompt, ids, kw, resp in items]
    return [r["strict_follow"] for r in ifeval_checks.score(rows)]


def reward(follow: list[bool]) -> float:
    """Fraction of the instructions followed (IFEval's instruction-level accuracy of one answer)."""
    return sum(follow) / len(follow) if follow else 0.0
