"""The small interface every generation engine implements.

A stage hands a backend chat conversations and sampling parameters and gets back, per
conversation, `n` completions. Engines: transformers in process (hf.py), any
OpenAI-compatible server (openai.py), vLLM in process (vllm.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    # Judgments: stop once a complete `Score: N` line is out (saves the tokens a small
    # model would otherwise spend rambling after its verdict).
    stop_at_score: bool = False


@dataclass
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS or score line) | "length"


Chat = list[dict]


class Backend(Protocol):
    def generate(self, chats: list[Chat], params: SamplingParams, seed: int) -> list[list[Completion]]:
        """Return len(chats) lists of params.n completions, reproducible for a given seed."""

    def count_prompt_tokens(self, chats: list[Chat]) -> list[int]:
        """Prompt length in tokens after the chat template, to skip prompts that do not fit."""

    @property
    def context_window(self) -> int: ...

    def close(self) -> None: ...
