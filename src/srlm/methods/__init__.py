"""The follow-up methods (docs/METHODS.md), one module each with its pure parts and its stages:
meta_rewarding.py, spin.py, dno.py, cream.py, scir.py, dpo_human.py, rlhf.py. RLAIF needs no
module: it is the loop with a frozen judge.model (config.py checks it). A method's stage rows are
in srlm/stages.py, each naming its method and the loop's rows it replaces. A method imports the
loop, the engines, srlm.data and srlm.run; never evaluation.
"""
