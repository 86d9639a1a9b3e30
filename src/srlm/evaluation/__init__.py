"""Measuring a run: evaluate.py (`srlm eval`: judge-human agreement, win rates, length, IFEval),
ifeval.py (IFEval answers and accuracies), summary.py (the table `srlm run` prints) and report/
(`srlm report`, `srlm compare`). Evaluation judges with the loop's judge; it never imports
training (sft, dpo, the engines' training modules) or a method.
"""
