"""The engines: generation (backends/: transformers, OpenAI-compatible servers, vLLM), models
(modeling.py: finding, loading, saving), training (training.py: what SFT, DPO and the RL stages
share; weighted_dpo.py: the confidence-weighted DPO loss) and every touch on private
transformers/TRL names (_compat.py). Imports srlm.run and srlm.data only.
"""
