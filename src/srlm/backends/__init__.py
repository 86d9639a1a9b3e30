"""Generation backends behind one interface (base.Backend)."""

from __future__ import annotations

from srlm.backends.base import Backend, Completion, SamplingParams

__all__ = ["Backend", "Completion", "SamplingParams", "make_backend"]


def make_backend(cfg, model_dir: str) -> Backend:
    """Build the configured engine for the model in `model_dir` (M_t)."""
    name = cfg.backend.name
    if name == "transformers":
        from srlm.backends.hf import HFBackend

        return HFBackend.from_config(cfg, model_dir)
    if name == "openai":
        from srlm.backends.openai import OpenAIBackend

        return OpenAIBackend.from_config(cfg, model_dir)
    if name == "vllm":
        from srlm.backends.vllm import VLLMBackend

        return VLLMBackend.from_config(cfg, model_dir)
    raise ValueError(f"unknown backend {name!r}")
