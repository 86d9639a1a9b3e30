"""Score digit (and other choice) distributions from token probabilities, for
judge.scoring=expected (loop/judge.py) and meta.scoring=expected (methods/meta_rewarding.py).

The paper (section 3.2) parses the judge's `Score: N` line; `expected` mode, a departure from
it, scores a judgment by the mean digit under the model's own distribution where it writes N.

Pure helpers shared by the engines (no model, no I/O, no output file):
- which token texts write a score digit: the bare digit and its spaced variants
  (" 3", SentencePiece "▁3", byte-level BPE "Ġ3"), `digit_of`;
- the distribution over base.SCORE_DIGITS from one position's top-k (token, logprob) entries,
  the variants of a digit summed and the six renormalised to sum 1, `digit_distribution`;
- where a judgment wrote its score digit: the character offset in its text
  (`score_digit_offset`) and the token covering it (`token_at`);
- for engines with the tokenizer in hand, the vocabulary ids of each digit, `digit_token_ids`.
The same for any single-token choices (the meta-judge's "A" / "B"): `choice_distribution`,
`choice_token_ids`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from srlm.data import rubric
from srlm.engines.backends.base import SCORE_DIGITS

# Leading characters a digit token may carry: a space or tab (the rubric allows either after
# "Score:"), SentencePiece's word marker and byte-level BPE's space marker.
SPACE_MARKS = " \t\u2581\u0120"
_NUMBER = re.compile(r"\d+")


def digit_of(token: str) -> int | None:
    """The score digit a token writes ("3", " 3", "▁3", "Ġ3" -> 3), else None."""
    t = token.lstrip(SPACE_MARKS)
    return SCORE_DIGITS.index(t) if t in SCORE_DIGITS else None


def normalise(mass: Sequence[float]) -> list[float] | None:
    """Probability masses (six digits, or any choices) renormalised to sum 1; None when they sum to zero."""
    total = math.fsum(mass)
    if not total > 0 or not math.isfinite(total):
        return None
    return [m / total for m in mass]


def choice_distribution(entries: Iterable[tuple[str, float]], choices: Sequence[str]) -> list[float] | None:
    """Distribution over `choices` from one position's (token, logprob) entries (an engine's
    top-k). A token writes a choice when it equals it after its leading space marks; each
    choice gets the summed probability of its variants, an absent one 0; None when no choice
    appears at all."""
    mass = [0.0] * len(choices)
    for token, logprob in entries:
        t = token.lstrip(SPACE_MARKS)
        if t in choices and logprob is not None:
            mass[choices.index(t)] += math.exp(logprob)
    return normalise(mass)


def digit_distribution(entries: Iterable[tuple[str, float]]) -> list[float] | None:
    """Distribution over SCORE_DIGITS from one position's (token, logprob) entries (an
    engine's top-k). Each digit gets the summed probability of its variants; a digit absent
    from the entries gets 0; None when no digit appears at all."""
    return choice_distribution(entries, SCORE_DIGITS)


def score_digit_offset(text: str, ended: bool = False) -> int | None:
    """Character offset of the digit a judgment wrote in its first complete `Score: N` line
    (rubric.SCORE_LINE_COMPLETE), when N is a single digit; else None. `ended`: the engine
    stopped right after the text (end of sequence), which completes a score line at its end."""
    m = rubric.SCORE_LINE_COMPLETE.search(text + "\n" if ended else text)
    if m is None:
        return None
    number = _NUMBER.search(m.group())
    if len(number.group()) != 1:  # "Score: 10": no single digit position to read
        return None
    return m.start() + number.start()


def token_at(lengths: Sequence[int], offset: int) -> int | None:
    """Index of the token covering position `offset`, given the tokens' lengths in order."""
    pos = 0
    for i, n in enumerate(lengths):
        if pos <= offset < pos + n:
            return i
        pos += n
    return None


@dataclass
class ChoiceTokens:
    per_choice: list[list[int]]  # per choice, the token ids that write it
    spaced: bool  # the tokenizer writes " c" as one token (a forced prefix then ends before the space)


def choice_token_ids(tokenizer, choices: Sequence[str]) -> ChoiceTokens:
    """The vocabulary ids that write each choice: the bare text and " " + text, each where it is
    one token that decodes to the choice (leading space marks stripped)."""
    per_choice, spaced = [], False
    for c in choices:
        ids = set()
        for text in (c, " " + c):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and tokenizer.decode(enc).lstrip(SPACE_MARKS) == c:
                ids.add(enc[0])
                spaced |= text != c
        per_choice.append(sorted(ids))
    return ChoiceTokens(per_choice, spaced)


def digit_token_ids(tokenizer) -> ChoiceTokens:
    """The vocabulary ids of each score digit: the bare digit and " d" where that is one token."""
    return choice_token_ids(tokenizer, SCORE_DIGITS)
