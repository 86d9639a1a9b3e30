"""The paper's loop (Self-Rewarding Language Models, Yuan et al. 2024): one module per stage.

eft_build.py (EFT from ranked human data, optional) -> sft.py (M0 -> M1); per iteration
prompts.py (self-instruct) -> sample.py -> judge.py (rubric judgments; verifier.py, the
verifiable-instruction checker, is the positive control's reward) -> pairs.py -> dpo.py
(M_{t+1}). The rows that wire them (inputs, outputs, models, config keys) are in srlm/stages.py.
Imports srlm.run, srlm.data and srlm.engines; never a method or evaluation.
"""
