"""Evaluation data never trains anything: exact and ROUGE-L near-duplicates of evaluation prompts.

ROUGE-L F1 as Self-Instruct computes it (rouge_score's scorer, no stemming, on its own tokenizer:
lower-case, every non-[a-z0-9] character a separator), with a cheap bound that skips the
quadratic LCS for almost every pair (NearDuplicateIndex). The self-instruct filter
(loop/prompts.py) uses it among generated prompts. dedup_against_eval drops training prompts
that equal an evaluation prompt (whitespace and case normalised) or whose ROUGE-L F1 with one is
above a threshold, both counted: EFT building (loop/eft_build.py), verifiable and seed prompts
(loop/prompts.py), human pairs (methods/dpo_human.py) and RLHF's IFT prompts (methods/rlhf.py)
all drop them with it. eval_prompts lists the prompts evaluation uses.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from rouge_score import rouge_scorer, tokenizers

from srlm.data import loaders

T = TypeVar("T")

_WORD = re.compile(r"\w+")
# Self-Instruct's filter: rouge_score's ROUGE-L F-measure, no stemming, on its own tokenizer
# (lower-case, every non-[a-z0-9] character a separator), so 0.7 means what it means there.
_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=False)


def words(text: str) -> list[str]:
    """Lower-cased word tokens for the length and repetition filters."""
    return _WORD.findall(text.lower())


def _text(x: str | list[str]) -> str:
    # Token lists are joined with spaces: rouge_score re-tokenizes them to the text's own tokens,
    # since words() drops only characters that rouge_score also treats as separators.
    return x if isinstance(x, str) else " ".join(x)


def rouge_tokens(text: str | list[str]) -> list[str]:
    """The tokens rouge_score scores: lower-cased, non-alphanumerics to spaces."""
    return _TOKENIZER.tokenize(_text(text))


def rouge_l(a: str | list[str], b: str | list[str]) -> float:
    """ROUGE-L F1 of two texts (or token lists from words()/rouge_tokens()), as rouge_score
    computes it; 0 when either has no alphanumeric token."""
    return _SCORER.score(_text(a), _text(b))["rougeL"].fmeasure


class NearDuplicateIndex:
    """Is a text's ROUGE-L F1 with any added text above the threshold (Self-Instruct: > 0.7)?
    A cheap bound on rouge_score's own tokens skips the quadratic LCS for almost every pair:
    LCS <= shared unigrams (multiset), so F1 = 2 LCS / (|a| + |b|) <= 2 shared / (|a| + |b|).
    Texts may be given as strings or as token lists from words() or rouge_tokens()."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.items: list[tuple[str, int, Counter]] = []

    def add(self, text: str | list[str]) -> None:
        toks = rouge_tokens(text)
        self.items.append((" ".join(toks), len(toks), Counter(toks)))

    def is_near_duplicate(self, text: str | list[str]) -> bool:
        toks = rouge_tokens(text)
        joined, c = " ".join(toks), Counter(toks)
        for other, n, oc in self.items:
            shared = sum((c & oc).values())
            if shared == 0:
                continue
            if 2 * shared / (len(toks) + n) > self.threshold and rouge_l(joined, other) > self.threshold:
                return True
        return False


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def dedup_against_eval(items: list[T], eval_prompts: list[str], threshold: float = 0.7,
                       prompt: Callable[[T], str] = lambda item: item) -> tuple[list[T], Counter]:
    """(kept, dropped by reason): the items whose prompt (`prompt(item)`; the item itself for
    strings) is neither an exact ("exact_duplicate_of_eval") nor a ROUGE-L near-duplicate
    ("near_duplicate_of_eval") of an evaluation prompt, in order."""
    exact = {_normalise(p) for p in eval_prompts}
    index = NearDuplicateIndex(threshold)
    for p in eval_prompts:
        index.add(words(p))
    kept, dropped = [], Counter()
    for item in items:
        text = prompt(item)
        if _normalise(text) in exact:
            dropped["exact_duplicate_of_eval"] += 1
        elif index.is_near_duplicate(words(text)):
            dropped["near_duplicate_of_eval"] += 1
        else:
            kept.append(item)
    return kept, dropped


def eval_prompts(cfg) -> list[str]:
    """Every prompt evaluation uses: the eval prompt set and every human-preference file."""
    prompts = [p["prompt"] for p in loaders.load_prompts(cfg.eval.prompts)]
    for source in cfg.eval.human_prefs:
        if source == "embedded:human_prefs":
            source = loaders.source_files(source)[0]
        pairs, _ = loaders.load_human_pairs(source)
        prompts += [p.prompt for p in pairs]
    return prompts
