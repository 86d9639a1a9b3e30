"""The short table `srlm run` prints at the end."""

from __future__ import annotations


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


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
    ("iteration wall time (s)", "iteration/wall_s"),
]


def print_summary(run_dir: str, metrics: dict) -> None:
    iters = sorted((k for k in metrics if k.startswith("iter_")), key=lambda k: int(k.split("_")[1]))
    print(f"\nsrlm run finished: {run_dir}")
    if "sft" in metrics:
        s = metrics["sft"]
        print(f"SFT: {s.get('sft/ift_examples', '-')} IFT + {s.get('sft/eft_examples', '-')} EFT examples, "
              f"final loss {_fmt(s.get('sft/loss'))}")
    if iters:
        width = max(len(r[0]) for r in ROWS)
        print(" " * width + "".join(f"{k:>12}" for k in iters))
        for label, key in ROWS:
            print(f"{label:<{width}}" + "".join(f"{_fmt(metrics[k].get(key)):>12}" for k in iters))
    for source, per_model in metrics.get("eval", {}).get("judge_agreement", {}).items():
        print(f"judge-human agreement ({source}): "
              + ", ".join(f"{m} {_fmt(v.get('accuracy'))}" for m, v in per_model.items()))
    for name, h in metrics.get("eval", {}).get("win_rate", {}).items():
        print(f"win rate {name.replace('_', ' ')}: {_fmt(h.get('win_rate'))} "
              f"(length-controlled {_fmt(h.get('length_controlled_win_rate'))})")
    print(f"models: {run_dir}/models   metrics: {run_dir}/metrics.json   report: srlm report {run_dir}")
