"""Generation backends behind one interface (base.Backend)."""

from __future__ import annotations

from srlm.engines.backends.base import Backend, Completion, SamplingParams

__all__ = ["Backend", "Completion", "SamplingParams", "generate_within_context", "make_backend"]


def make_backend(cfg, model_dir: str) -> Backend:
    """Build the configured engine for the model in `model_dir` (M_t)."""
    name = cfg.backend.name
    if name == "transformers":
        from srlm.engines.backends.hf import HFBackend

        return HFBackend.from_config(cfg, model_dir)
    if name == "openai":
        from srlm.engines.backends.openai import OpenAIBackend

        return OpenAIBackend.from_config(cfg, model_dir)
    if name == "vllm":
        from srlm.engines.backends.vllm import VLLMBackend

        return VLLMBackend.from_config(cfg, model_dir)
    raise ValueError(f"unknown backend {name!r}")


def generate_within_context(backend: Backend, chats: list, params: SamplingParams,
                            seed: int) -> list[list[Completion] | None]:
    """Generate for every chat that leaves room for params.max_new_tokens in the context
    window; None in place of the chats that do not (callers skip and count them)."""
    limit = backend.context_window - params.max_new_tokens
    fits = [n <= limit for n in backend.count_prompt_tokens(chats)]
    outs = iter(backend.generate([c for c, ok in zip(chats, fits) if ok], params, seed))
    return [next(outs) if ok else None for ok in fits]
