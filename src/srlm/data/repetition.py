"""Degenerate generations: a small model often repeats one sentence until the token cap.

A sequence (token ids, or words for engines that only return text) is cut once one n-gram
has occurred `times` times: the cut keeps everything before that n-gram's second occurrence,
so the text keeps one copy of what was repeated and none of the loop.
"""

from __future__ import annotations

import re
from typing import Hashable, Sequence

TIMES = 3  # occurrences of one n-gram that count as a loop


class RepetitionGuard:
    """Fed one item at a time; `push` returns the cut index once the sequence loops."""

    def __init__(self, n: int, times: int = TIMES):
        self.n, self.times = n, times
        self.items: list[Hashable] = []
        self.starts: dict[tuple, list[int]] = {}

    def push(self, item: Hashable) -> int | None:
        self.items.append(item)
        if self.n <= 0 or len(self.items) < self.n:
            return None
        start = len(self.items) - self.n
        seen = self.starts.setdefault(tuple(self.items[start:]), [])
        # Overlapping occurrences ("a a a a" for n=2) are one run of the same loop: count them too.
        seen.append(start)
        if len(seen) >= self.times:
            return seen[1]
        return None


def find_repetition(seq: Sequence[Hashable], n: int, times: int = TIMES) -> int | None:
    """Index to cut `seq` at (the start of the looping n-gram's second occurrence), or None."""
    guard = RepetitionGuard(n, times)
    for item in seq:
        cut = guard.push(item)
        if cut is not None:
            return cut
    return None


_WORD = re.compile(r"\S+")


def cut_repeated_text(text: str, n: int, times: int = TIMES) -> tuple[str, bool]:
    """Word-level version for text: (text cut before the loop, whether it was cut)."""
    if n <= 0:
        return text, False
    matches = list(_WORD.finditer(text))
    cut = find_repetition([m.group().lower() for m in matches], n, times)
    if cut is None:
        return text, False
    return text[: matches[cut].start()].rstrip(), True
