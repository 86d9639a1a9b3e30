"""The LLM-as-a-Judge prompt and its strict score parser (paper section 2.2, Figure 2).

The template is the paper's additive 5-point rubric in this project's own words, with the
constant rubric text first so every judgment shares its prefill (see engines/backends/hf.py).
Parsing is deliberately strict: a judgment counts only if it has a line `Score: N` with
0 <= N <= 5; anything else is a parse failure that is counted and excluded, never scored.
"""

from __future__ import annotations

import importlib.resources
import os
import re

from srlm.run.config import EMBEDDED_TEMPLATE
from srlm.run.records import InputError

MAX_SCORE = 5
SCORE_LINE = re.compile(r"^[ \t]*Score:[ \t]*(\d+)[ \t]*$", re.MULTILINE)
# A score line is complete once a non-digit follows the number: generation can stop there.
SCORE_LINE_COMPLETE = re.compile(r"(?:^|\n)[ \t]*Score:[ \t]*\d+[^\d]")
# Text that ends where the score digit comes next (expected scoring reads the distribution there).
SCORE_PREFIX_END = re.compile(r"(?:^|\n)[ \t]*Score:[ \t]*$")
# Appended to a judgment that stopped without a score line, to read the digit distribution.
FORCED_PREFIX = "\nScore: "


def load_template(path: str = EMBEDDED_TEMPLATE) -> str:
    if path == EMBEDDED_TEMPLATE:
        text = importlib.resources.files("srlm.seed").joinpath("judge_template.txt").read_text()
    else:
        if not os.path.exists(path):
            raise InputError(f"{path}: judge template not found")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    for name in ("{prompt}", "{response}"):
        if text.count(name) != 1:
            raise InputError(f"{path}: judge template must contain {name} exactly once "
                             f"(found {text.count(name)})")
    return text


def render(template: str, prompt: str, response: str) -> str:
    # str.replace, not str.format: prompts and responses contain braces (code, JSON).
    return template.replace("{prompt}", prompt.strip()).replace("{response}", response.strip())


def parse_score(text: str) -> tuple[int | None, str | None]:
    """Return (score, None) or (None, reason). Deterministic and strict."""
    found = SCORE_LINE.findall(text)
    if not found:
        return None, "no 'Score: N' line"
    values = {int(v) for v in found}
    if len(values) > 1:
        return None, f"conflicting score lines {sorted(values)}"
    value = values.pop()
    if not 0 <= value <= MAX_SCORE:
        return None, f"score {value} out of range 0-{MAX_SCORE}"
    return value, None


def expected_score(probs: list[float]) -> float:
    """The probability-weighted mean over the digits 0..MAX_SCORE."""
    return sum(d * p for d, p in enumerate(probs))


def forced_prefix(text: str) -> str:
    """The judgment text with the score prefix appended, as the assistant turn's beginning."""
    return text.rstrip() + FORCED_PREFIX if text.strip() else FORCED_PREFIX.lstrip("\n")


def score_line_complete(text: str) -> bool:
    """True once the judgment's score line is finished (used to stop generation early)."""
    return SCORE_LINE_COMPLETE.search(text) is not None


def truncate_after_score(text: str) -> str:
    """Cut anything generated after the first complete score line."""
    m = SCORE_LINE_COMPLETE.search(text)
    if not m:
        return text
    return text[: m.end() - 1]
