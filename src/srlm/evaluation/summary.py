"""The short table `srlm run` prints at the end."""

from __future__ import annotations


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _signed(v) -> str:
    return "-" if v is None else f"{v:+.3g}"


def _interval(v) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{v[0]:+.3g}, {v[1]:+.3g}]"
    return "[-]"


ROWS = [
    ("prompts kept", "prompts/kept"),
    ("candidates", "sample/candidates"),
    ("judgments", "judge/judgments"),
    ("judge parse-failure rate", "judge/parse_failure_rate"),
    ("mean score", "judge/score_mean"),
    ("pairs kept", "pairs/kept"),
    ("pairs dropped (tie)", "pairs/dropped_tie"),
    ("mean chosen length (chars)", "pairs/mean_chosen_length"),
    ("mean rejected length (chars)", "pairs/mean_rejected_length"),
    ("DPO final loss", "dpo/loss"),
    ("DPO reward accuracy", "dpo/rewards/accuracies"),
    ("DPO reward margin", "dpo/rewards/margins"),
    ("sampling wall time (s)", "sample/wall_s"),
    ("judging wall time (s)", "judge/wall_s"),
    ("DPO wall time (s)", "dpo/wall_s"),
    ("evaluating M_t+1, wall time (s)", "eval/wall_s"),
    ("iteration wall time (s)", "iteration/wall_s"),
]
# Rows of the loop's variants (docs/METHODS.md), printed only when a run has them.
METHOD_ROWS = [
    ("length control rho", "pairs/rho"),
    ("meta-judge parse failures", "meta/parse_failures"),
    ("meta-judge first-position rate", "meta/position_bias"),
    ("meta-judge mean P(verdict) (expected)", "meta/mean_verdict_confidence"),
    ("candidates ranked on P(A), both orders", "meta/soft_ranked"),
    ("judge pairs (Meta-Rewarding)", "meta/judge_pairs"),
    ("CREAM consistency", "cream/consistency_mean"),
    ("SCIR agreement", "scir/agreement_rate"),
    ("confidence-weighted DPO", "dpo/weighted"),
    ("DNO pairs against the reference", "dno/pairs_reference"),
    ("DNO pairs replayed", "dno/replayed"),
    ("reward model held-out accuracy", "reward_model/heldout_accuracy"),
    ("length heuristic, same pairs", "reward_model/length_baseline"),
    ("RL mean reward, first step", "rl/reward_first"),
    ("RL mean reward, last step", "rl/reward_last"),
    ("RL KL to the start model", "rl/kl"),
]


def print_summary(run_dir: str, metrics: dict) -> None:
    iters = sorted((k for k in metrics if k.startswith("iter_")), key=lambda k: int(k.split("_")[1]))
    print(f"\nsrlm run finished: {run_dir}")
    if "sft" in metrics:
        s = metrics["sft"]
        print(f"SFT: {s.get('sft/ift_examples', '-')} IFT + {s.get('sft/eft_examples', '-')} EFT examples, "
              f"final loss {_fmt(s.get('sft/loss'))}, {_fmt(s.get('sft/wall_s'))} s; evaluating M0 and M1 "
              f"{_fmt(s.get('eval/wall_s'))} s")
    if iters:
        width = max(len(r[0]) for r in ROWS + METHOD_ROWS)
        print(" " * width + "".join(f"{k:>12}" for k in iters))
        rows = ROWS + [(label, key) for label, key in METHOD_ROWS if any(key in metrics[k] for k in iters)]
        for label, key in rows:
            print(f"{label:<{width}}" + "".join(f"{_fmt(metrics[k].get(key)):>12}" for k in iters))
    ev = metrics.get("eval", {})
    # Judge-free evidence first: IFEval's code-checked instructions, and answer length (IFEval
    # punishes verbosity where an instruction limits length); then the judge's figures.
    ifeval = {m: v for m, v in (ev.get("ifeval") or {}).items() if isinstance(v, dict)}
    if ifeval:
        print("IFEval (strict avg of prompt/instruction level; mean answer chars): "
              + ", ".join(f"{m} {_fmt(v.get('ifeval/score'))} ({_fmt(v.get('ifeval/mean_response_chars'))})"
                          for m, v in ifeval.items()))
        for prefix, what in (("ifeval_heldout/", "held-out instructions"), ("ifeval_trained/", "trained instructions")):
            if any(prefix + "score" in v for v in ifeval.values()):
                print(f"  on {what} only: " + ", ".join(
                    f"{m} {_fmt(v.get(prefix + 'score'))} ({_fmt(v.get(prefix + 'prompts'))} prompts)"
                    for m, v in ifeval.items()))
    deltas = {k: v for k, v in (ev.get("ifeval_delta") or {}).items() if isinstance(v, dict)}
    for prefix, what in (("ifeval/", ""), ("ifeval_heldout/", ", held-out instructions"),
                         ("ifeval_trained/", ", trained instructions")):
        shown = [(k, d) for k, d in deltas.items() if d.get(prefix + "delta_score") is not None]
        if shown:
            print(f"IFEval change, same prompts{what} (score, paired 95% CI): " + ", ".join(
                f"{k.replace('_', ' ')} {_signed(d.get(prefix + 'delta_score'))} {_interval(d.get(prefix + 'delta_score_ci95'))}"
                for k, d in shown))
    # Every judge figure beside the baseline it must beat: "the longer response wins".
    for source in sorted(set(ev.get("judge_agreement", {})) | set(ev.get("baselines", {}))):
        base = (ev.get("baselines", {}).get(source) or {}).get("length") or {}
        per_model = ev.get("judge_agreement", {}).get(source, {})
        pairwise = ev.get("pairwise_agreement", {}).get(source, {})
        print(f"judge-human agreement ({source}): longer-wins baseline {_fmt(base.get('accuracy'))}"
              + "".join(f", {m} {_fmt(v.get('accuracy'))}" for m, v in per_model.items()))
        if pairwise:
            print(f"  pairwise judge, both orders ({source}): "
                  + ", ".join(f"{m} {_fmt(v.get('accuracy'))} (consistent {_fmt(v.get('consistency'))}, "
                              f"first position {_fmt(v.get('first_position_rate'))})" for m, v in pairwise.items()))
        for cat, b in ((ev.get("baselines", {}).get(source) or {}).get("by_category") or {}).items():
            print(f"  {cat}: longer-wins {_fmt(b.get('length', {}).get('accuracy'))}"
                  + "".join(f", {m} {_fmt((v.get('by_category') or {}).get(cat, {}).get('accuracy'))}"
                            for m, v in per_model.items()))
    for group, how in (("win_rate", "pairwise"), ("win_rate_pointwise", "pointwise")):
        for name, h in ev.get(group, {}).items():
            print(f"win rate {name.replace('_', ' ')} ({how} judge): {_fmt(h.get('win_rate'))} "
                  f"(at equal length {_fmt(h.get('win_rate_at_equal_length'))})")
    print(f"models: {run_dir}/models   metrics: {run_dir}/metrics.json   report: srlm report {run_dir}")
