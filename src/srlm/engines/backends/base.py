"""The small interface every generation engine implements.

A stage hands a backend chat conversations and sampling parameters and gets back, per
conversation, `n` completions. Engines: transformers in process (hf.py), any
OpenAI-compatible server (openai.py), vLLM in process (vllm.py).

Judging in `expected` mode (judge.scoring, srlm/loop/judge.py) needs two more things from an engine:
- with `SamplingParams.score_probs`, each completion that writes its own `Score:` line carries
  the next-token distribution over the digits 0-5 read at the position where it wrote the
  digit (`Completion.score_probs`, six probabilities summing to 1);
- `score_probs(chats, prefixes)`: for a judgment that stopped without a score line, the same
  distribution read after the judgment text plus a forced score prefix (`\\nScore: `). With
  `SamplingParams.force_score` an engine may read it during generation instead (the
  transformers backend feeds the prefix to the judgment's own KV cache), marking the
  completion `score_forced`; the judge asks `score_probs()` only for the rest.
An engine that cannot read token probabilities returns None for them; the judge then says so
once and falls back to parsing the score line.
The meta-judge in `expected` mode (meta.scoring, srlm/methods/meta_rewarding.py) reads the same kind of
distribution over other single-token choices ("A" / "B" after `Winner: Judgement `):
`choice_probs(chats, prefixes, choices)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SCORE_DIGITS = ("0", "1", "2", "3", "4", "5")


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    # Judgments: stop once a complete `Score: N` line is out (saves the tokens a small
    # model would otherwise spend rambling after its verdict).
    stop_at_score: bool = False
    # Judgments in `expected` mode: record the distribution over SCORE_DIGITS where the
    # model writes its score digit.
    score_probs: bool = False
    # With score_probs: a completion that ends without a score line gets the same distribution
    # read after its text plus rubric.FORCED_PREFIX (as `score_probs()` would), where the engine
    # can do it in the same decode, reusing the completion's KV cache (Completion.score_forced).
    # Engines without it leave those completions' score_probs None.
    force_score: bool = False
    # Stop a completion once it repeats itself: the last `stop_repetition` tokens (words for
    # engines that only see text) have already occurred twice before. 0 = off.
    stop_repetition: int = 0


@dataclass
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS or score line) | "length" | "repetition" (cut by stop_repetition)
    # Six probabilities over SCORE_DIGITS at the score digit the model wrote itself (only
    # with SamplingParams.score_probs, and only when it wrote a score line); None otherwise.
    score_probs: list[float] | None = None
    # True when score_probs were read after a forced score prefix (SamplingParams.force_score).
    score_forced: bool = False


Chat = list[dict]


class Backend(Protocol):
    def generate(self, chats: list[Chat], params: SamplingParams, seed: int) -> list[list[Completion]]:
        """Return len(chats) lists of params.n completions, reproducible for a given seed."""

    def score_probs(self, chats: list[Chat], prefixes: list[str]) -> list[list[float] | None]:
        """For each chat, the assistant turn begun with prefixes[i] (a judgment text ending in a
        score prefix such as 'Score: '): the next-token distribution over SCORE_DIGITS,
        renormalised to sum to 1. None where the engine cannot read token probabilities."""

    def choice_probs(self, chats: list[Chat], prefixes: list[str], choices: list[str]) -> list[list[float] | None]:
        """As score_probs over single-token `choices`: for each chat, the assistant turn begun with
        prefixes[i], one probability per choice (summed over the tokens that write it, with or
        without a leading space), renormalised to sum 1. None where the engine cannot read token
        probabilities (or, for a server's top-k, when no choice is among them)."""

    def count_prompt_tokens(self, chats: list[Chat]) -> list[int]:
        """Prompt length in tokens after the chat template, to skip prompts that do not fit."""

    @property
    def context_window(self) -> int: ...

    def close(self) -> None: ...
