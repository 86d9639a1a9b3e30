"""The positive control's tables (docs/RESULTS.md, "Positive control"), from finished runs.

    srlm run --config verified                                   # the checker as the reward
    srlm run --config verified judge.source=rubric iterations=1 \
        --output-dir runs/verified-selfjudge --from-run runs/verified   # the self-judge instead
    srlm eval runs/verified && srlm eval runs/verified-selfjudge  # breakdowns from the caches
    python benchmarks/positive_control.py runs/verified runs/verified-selfjudge

Prints per run: IFEval per model (score = mean of strict prompt- and instruction-level, with
its bootstrap CI; loose; held-out and trained families apart), each model minus M0 on the same
prompts with the paired CI, answer length; per iteration the pairs, the training candidates'
checker rate, and where a rubric judge ran, its correlation with the checker.
"""

from __future__ import annotations

import json
import os
import sys


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def ci(v):
    return "-" if not v else f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}]"


def dci(v):
    return "-" if not v else f"[{100 * v[0]:+.1f}, {100 * v[1]:+.1f}]"


def delta(d: dict, prefix: str, with_ci: bool = False) -> str:
    v = d.get(prefix + "delta_score")
    if v is None:
        return "-"
    return f"{100 * v:+.1f}" + (" " + dci(d.get(prefix + "delta_score_ci95")) if with_ci else "")


def main(runs: list[str]) -> None:
    from srlm.evaluation.report.load import load_run
    from srlm.evaluation.report.tables import judge_checker_agreement

    for run in runs:
        m = json.load(open(os.path.join(run, "metrics.json")))
        ev = m.get("eval", {})
        ife, deltas = ev.get("ifeval", {}), ev.get("ifeval_delta", {})
        print(f"\n## {run}\n")
        print("| model | IFEval score | 95% CI | loose | held-out families | trained families | "
              "vs M0 (paired) | 95% CI | held-out vs M0 | trained vs M0 | mean chars | at cap |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name in sorted(ife, key=lambda n: int(n[1:])):
            r = ife[name]
            d = deltas.get(f"{name}_vs_M0", {})
            print(f"| {name} | {pct(r.get('ifeval/score'))} | {ci(r.get('ifeval/score_ci95'))} | "
                  f"{pct(r.get('ifeval/score_loose'))} | {pct(r.get('ifeval_heldout/score'))} | "
                  f"{pct(r.get('ifeval_trained/score'))} | "
                  f"{delta(d, 'ifeval/')} | {dci(d.get('ifeval/delta_score_ci95'))} | "
                  f"{delta(d, 'ifeval_heldout/', True)} | {delta(d, 'ifeval_trained/', True)} | "
                  f"{r.get('ifeval/mean_response_chars', 0):.0f} | {r.get('ifeval/truncated')} |")
        print("\n| iteration | prompts | pairs | checker rate of M_t's samples (all followed) | chosen / rejected chars | "
              "DPO loss, reward acc | judge vs checker: Pearson, Spearman (candidates) |")
        print("|---|---|---|---|---|---|---|")
        # The report's own computation (each candidate's judgments averaged, then Pearson and Spearman).
        corr_by_t = {r["iteration"]: r for r in judge_checker_agreement(load_run(run))}
        t = 1
        while f"iter_{t}" in m:
            it = m[f"iter_{t}"]
            row = corr_by_t.get(t)
            corr = "-" if row is None else (f"{row['pearson']:+.3f}, {row['spearman']:+.3f} ({row['candidates']})")
            print(f"| {t} | {it.get('prompts/kept')} | {it.get('pairs/kept')} | "
                  f"{pct(it.get('judge/verifier_mean'))} ({pct(it.get('judge/verifier_all_followed'))}) | "
                  f"{it.get('pairs/mean_chosen_length', 0):.0f} / {it.get('pairs/mean_rejected_length', 0):.0f} | "
                  f"{it.get('dpo/loss', float('nan')):.3f}, {it.get('dpo/rewards/accuracies', float('nan')):.2f} | {corr} |")
            t += 1


if __name__ == "__main__":
    main(sys.argv[1:])
