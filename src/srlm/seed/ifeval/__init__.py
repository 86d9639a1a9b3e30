"""IFEval's 541 prompts (Zhou et al. 2023), shipped as package data: see README.md here."""
