"""srlm: Self-Rewarding Language Models (Yuan et al., 2024) on transformers, TRL and PEFT."""

__version__ = "0.1.0"
