"""Score digit distributions from token probabilities, for judge.scoring=expected (judge.py).

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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from srlm import rubric
from srlm.backends.base import SCORE_DIGITS

# Leading characters a digit token may carry: a space or tab (the rubric allows either after
# "Score:"), SentencePiece's word marker and byte-level BPE's space marker.
SPACE_MARKS = " \t\u2581\u0120"
_NUMBER = re.compile(r"\d+")


def digit_of(token: str) -> int | None:
    """The score digit a token writes ("3", " 3", "▁3", "Ġ3" -> 3), else None."""
    t = token.lstrip(SPACE_MARKS)
    return SCORE_DIGITS.index(t) if t in SCORE_DIGITS else None


def normalise(mass: Sequence[float]) -> list[float] | None:
    """Six probability masses renormalised to sum 1; None when they sum to zero."""
    total = math.fsum(mass)
    if not total > 0 or not math.isfinite(total):
        return None
    return [m / total for m in mass]


def digit_distribution(entries: Iterable[tuple[str, float]]) -> list[float] | None:
    """Distribution over SCORE_DIGITS from one position's (token, logprob) entries (an
    engine's top-k). Each digit gets the summed probability of its variants; a digit absent
    from the entries gets 0; None when no digit appears at all."""
    mass = [0.0] * len(SCORE_DIGITS)
    for token, logprob in entries:
        d = digit_of(token)
        if d is not None and logprob is not None:
            mass[d] += math.exp(logprob)
    return normalise(mass)


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
class DigitTokens:
    per_digit: list[list[int]]  # per digit in SCORE_DIGITS, the token ids that write it
    spaced: bool  # the tokenizer writes " d" as one token (a score prefix then ends before the space)


def digit_token_ids(tokenizer) -> DigitTokens:
    """The vocabulary ids of each score digit: the bare digit and " d" where that is one token."""
    per_digit, spaced = [], False
    for d in SCORE_DIGITS:
        ids = set()
        for text in (d, " " + d):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and digit_of(tokenizer.decode(enc)) == SCORE_DIGITS.index(d):
                ids.add(enc[0])
                spaced |= text != d
        per_digit.append(sorted(ids))
    return DigitTokens(per_digit, spaced)
