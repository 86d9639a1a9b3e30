"""Worked examples for the report, as cards both templates lay out the same way.

- Eval answers: a few held-out eval prompts (every model answered, one per category first) with
  each model's answer side by side and the head-to-head verdicts for that prompt.
- Preference pairs: per iteration, the pairs with the largest score margin, with the chosen and
  rejected responses and one of the model's own rubric judgments of each (paper section 3.2).
Texts are clipped here (formatting.clip), once for both formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .formatting import clip, fmt, model_key, num
from .load import Run

EVAL_EXAMPLES = 3
PAIR_EXAMPLES_PER_ITERATION = 2


@dataclass
class Panel:
    """One column of a card: a response with its label, and optionally a judgment under it."""
    label: str  # "M2", "chosen"
    text: str
    tag: str = ""  # a short badge next to the label, e.g. "mean score 4"
    tone: str = ""  # "good" | "bad": the badge's colour
    meta: str = ""  # a line under the text, e.g. "12 tokens · 80 chars"
    judgment_label: str = ""
    judgment: str | None = None


@dataclass
class Example:
    title: str
    prompt: str
    panels: list[Panel]
    subtitle: str = ""  # e.g. the record id
    tags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, under the panels
    wide: bool = False  # two wide columns rather than as many as fit


def answer_examples(run: Run, n: int = EVAL_EXAMPLES) -> list[Example]:
    answers: dict[str, dict[str, dict]] = {}
    order: list[str] = []
    for model, rows in run.eval_answers().items():
        answers[model] = {}
        for r in rows:
            rid = str(r.get("id"))
            answers[model][rid] = r
            if rid not in order:
                order.append(rid)
    if not answers:
        return []
    models = sorted(answers, key=model_key)
    # Prompts every model answered first, one per category first, in file order.
    ids = sorted(order, key=lambda i: -sum(i in answers[m] for m in models))
    picked, cats = [], set()
    for i in ids:
        cat = next((answers[m][i].get("category") for m in models if i in answers[m]), None)
        if cat not in cats:
            picked.append(i)
            cats.add(cat)
        if len(picked) == n:
            break
    picked += [i for i in ids if i not in picked][: max(0, n - len(picked))]

    h2h = {xy: {str(r.get("id")): r for r in rows} for xy, rows in run.head_to_head().items()}
    out = []
    for i in picked:
        first = next(answers[m][i] for m in models if i in answers[m])
        verdicts = []
        for (x, y), rows in h2h.items():
            r = rows.get(i)
            if r:
                verdicts.append(f"{x} vs {y}: {x} shown first → {_winner(r.get('verdict_xy'), x, y)}; "
                                f"{y} shown first → {_winner(r.get('verdict_yx'), y, x)}")
        panels = []
        for m in models:
            r = answers[m].get(i)
            if r is None:
                continue
            meta = [f"{fmt(r.get('num_tokens'))} tokens", f"{len(str(r.get('answer') or '')):,} chars"]
            if r.get("finish_reason") == "length":
                meta.append("cut at the token limit")
            panels.append(Panel(m, clip(r.get("answer")), meta=" · ".join(meta)))
        category = str(first.get("category") or "")
        out.append(Example(i, clip(first.get("prompt")), panels, tags=[category] if category else [],
                           notes=verdicts))
    return out


def _winner(verdict: Any, a: str, b: str) -> str:
    return {"A": f"{a} wins", "B": f"{b} wins", "tie": "tie"}.get(verdict, "no verdict")


def margin(pair: dict) -> float | None:
    a, b = num(pair.get("score_chosen")), num(pair.get("score_rejected"))
    return a - b if a is not None and b is not None else None


def _judgment_label(side: str, j: dict | None) -> str:
    if not j:
        return f"a judgment of the {side} response"
    if j.get("score") is not None:
        return f"a judgment of the {side} response (score {fmt(j.get('score'))})"
    return f"a judgment of the {side} response (unparsed: {j.get('error') or 'no score'})"


def pair_examples(run: Run, per_iteration: int = PAIR_EXAMPLES_PER_ITERATION) -> list[Example]:
    out = []
    for t in run.iterations:
        pairs = run.pairs(t)
        if not pairs:
            continue
        picked = sorted(pairs, key=lambda p: (-(margin(p) or 0.0), str(p.get("id"))))[:per_iteration]
        wanted = {str(p.get(k)) for p in picked for k in ("chosen_id", "rejected_id")}
        found: dict[str, dict] = {}
        for j in run.judgments(t):
            cid = str(j.get("candidate_id"))
            if cid in wanted:
                best = found.get(cid)
                # One justification per candidate: the first with a parsed score, else the first.
                if best is None or (best.get("score") is None and j.get("score") is not None):
                    found[cid] = j
        for p in picked:
            panels = []
            for side, tone in (("chosen", "good"), ("rejected", "bad")):
                j = found.get(str(p.get(f"{side}_id")))
                panels.append(Panel(side, clip(p.get(side)), tag=f"mean score {fmt(p.get(f'score_{side}'))}",
                                    tone=tone, judgment_label=_judgment_label(side, j),
                                    judgment=clip(j.get("text")) if j else "(no judgment found)"))
            out.append(Example(f"iteration {t}", clip(p.get("prompt")), panels, subtitle=str(p.get("id")),
                               tags=[f"margin {fmt(margin(p))}"], wide=True))
    return out
