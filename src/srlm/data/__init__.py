"""Data the loop, the methods and evaluation share, and its formats.

loaders.py (seed IFT/EFT, human preference pairs, ranked groups, prompt sets), rubric.py (the
judge prompt and its strict score parser), dedup.py (evaluation prompts never train anything),
repetition.py (n-gram repetition), ifeval_checks.py (IFEval's prompts and lm-eval's checkers).
Imports only srlm.run.
"""
