"""The report's plots: one function per plot, each a matplotlib figure (Agg) turned into PNG bytes.

A plot without data is a `Plot` with no PNG and a `note` saying why; `draw` runs a plot function
under the report's style and turns a failure into such a note, so one bad plot never costs the
whole report. HTML embeds the PNGs as base64, Markdown links them as files next to report.md.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

from .formatting import comparison_label, comparison_order, fmt, model_key, num
from .load import LENGTH_HEURISTIC, WIN_RATE_AT_EQUAL_LENGTH, Run, warn

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
           "#CCB974", "#64B5CD"]
GREY = "#9CA3AF"


@dataclass
class Plot:
    name: str  # file stem of the PNG next to report.md; unique within a page
    title: str
    caption: str = ""
    png: bytes | None = None
    note: str | None = None  # why there is no plot


STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlepad": 10,
    "axes.labelsize": 9.5,
    "axes.labelcolor": "#374151",
    "axes.edgecolor": "#9CA3AF",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "axes.axisbelow": True,
    "grid.color": "#E5E7EB",
    "grid.linewidth": 0.8,
    "xtick.color": "#4B5563",
    "ytick.color": "#4B5563",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}


FIGSIZE = (5.6, 3.5)  # every plot: shown at the same width, so equal sizes keep fonts equal


def _figure(ncols: int = 1):
    # Figure() without pyplot: no global state and no GUI backend, the Agg canvas is used.
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=150, layout="constrained")
    axes = fig.subplots(1, ncols) if ncols > 1 else fig.subplots()
    return fig, axes


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    return buf.getvalue()


def _model_colors(models: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


def _slots(ax, n: int, minimum: int = 3) -> None:
    pad = max(0.0, (minimum - n) / 2)
    ax.set_xlim(-0.6 - pad, n - 0.4 + pad)


def _integer_y(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _bar_labels(ax, bars, labels: list[str], fontsize: float = 8) -> None:
    for b, text in zip(bars, labels):
        if not text:
            continue
        h = b.get_height()
        ax.annotate(text, (b.get_x() + b.get_width() / 2, h), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=fontsize, color="#374151")


def plot_agreement(run: Run) -> Plot:
    p = Plot("agreement", "Judge-human agreement",
             "How often the model, judging with the rubric, prefers the response humans preferred "
             "(paper Table 4). Judge ties and unparseable judgments count as wrong.")
    data = {s: {m: num((v or {}).get("accuracy")) for m, v in pm.items() if isinstance(v, dict)}
            for s, pm in (run.eval.get("judge_agreement") or {}).items() if isinstance(pm, dict)}
    data = {s: d for s, d in data.items() if any(v is not None for v in d.values())}
    if not data:
        p.note = "No judge-human agreement results (eval disabled, not run yet, or no human pairs)."
        return p
    models = sorted({m for d in data.values() for m in d}, key=model_key)
    sources = list(data)
    colors = _model_colors(run.models)
    fig, ax = _figure()
    width = 0.8 / len(sources)
    n_bars = len(models) * len(sources)
    label_size = 8 if n_bars <= 10 else 6.5 if n_bars <= 16 else 0
    for j, s in enumerate(sources):
        xs = [i + (j - (len(sources) - 1) / 2) * width for i in range(len(models))]
        vals = [data[s].get(m) for m in models]
        heights = [100 * v if v is not None else 0 for v in vals]
        if len(sources) == 1:
            bars = ax.bar(xs, heights, width * 0.85, color=[colors.get(m, GREY) for m in models])
        else:
            bars = ax.bar(xs, heights, width * 0.9, color=PALETTE[j % len(PALETTE)], label=s)
        if label_size:
            _bar_labels(ax, bars, [f"{100 * v:.0f}%" if v is not None else "n/a" for v in vals], label_size)
    ax.axhline(50, color=GREY, linestyle="--", linewidth=1)
    ax.set_xticks(range(len(models)), models)
    _slots(ax, len(models))
    ax.set_ylim(0, 112)
    ax.set_ylabel("agreement with human preference (%)")
    ax.set_xlabel("model")
    ax.set_title("Judge-human agreement" + (f" ({sources[0]})" if len(sources) == 1 else ""))
    if len(sources) > 1:
        ax.legend(title="human preference set", loc="upper left")
    p.png = _png(fig)
    return p


def _win_rate_point(ax, x: float, r: dict, color: str, size: int = 7, cap: int = 4) -> float:
    """One win rate at x: the point with its 95% interval when recorded, and the win rate at equal
    length as a hollow diamond. Returns the win rate in percent."""
    w = 100 * r["win_rate"]
    c = r.get("win_rate_ci95")
    if isinstance(c, (list, tuple)) and len(c) == 2 and all(num(v) is not None for v in c):
        ax.errorbar([x], [w], yerr=[[max(0, w - 100 * c[0])], [max(0, 100 * c[1] - w)]], fmt="o", color=color,
                    ecolor=color, elinewidth=2, capsize=cap, markersize=size, zorder=3)
    else:
        ax.plot([x], [w], "o", color=color, markersize=size, zorder=3)
    eq = num(r.get(WIN_RATE_AT_EQUAL_LENGTH))
    if eq is not None:
        ax.plot([x], [100 * eq], "D", markerfacecolor="none", markeredgecolor=color, markersize=size - 1,
                markeredgewidth=1.5, zorder=3)
    return w


def plot_win_rates(run: Run) -> Plot:
    p = Plot("win_rates", "Head-to-head win rates",
             "Win rate of the newer model, each prompt judged in both orders (ties count half), with a 95% "
             "bootstrap confidence interval; the hollow diamond is the win rate at equal length (a logistic "
             "fit of the outcome on the relative length difference, read at zero difference).")
    wr = {k: v for k, v in (run.eval.get("win_rate") or {}).items()
          if isinstance(v, dict) and num(v.get("win_rate")) is not None}
    if not wr:
        had = bool(run.eval.get("win_rate"))
        p.note = ("No head-to-head comparison produced a parseable verdict." if had
                  else "No head-to-head results (eval disabled or fewer than two evaluated models after M1).")
        return p
    keys = sorted(wr, key=comparison_order)
    fig, ax = _figure()
    xs = list(range(len(keys)))
    for i, k in enumerate(keys):
        w = _win_rate_point(ax, i, wr[k], PALETTE[i % len(PALETTE)], size=8, cap=6)
        ax.annotate(f"{w:.1f}%", (i, w), xytext=(10, 0), textcoords="offset points", va="center", fontsize=8.5,
                    color="#374151")
    ax.plot([], [], "o", color="#4B5563", label="win rate ± 95% CI")
    ax.plot([], [], "D", markerfacecolor="none", markeredgecolor="#4B5563", label="at equal length (logistic fit)")
    ax.axhline(50, color=GREY, linestyle="--", linewidth=1)
    labels = [f"{comparison_label(k)}\n{fmt(wr[k].get('wins'))}W {fmt(wr[k].get('ties'))}T "
              f"{fmt(wr[k].get('losses'))}L" for k in keys]
    ax.set_xticks(xs, labels)
    _slots(ax, len(keys))
    ax.set_ylim(0, 100)
    ax.set_ylabel("win rate of the newer model (%)")
    ax.set_title("Head-to-head win rates")
    ax.legend(loc="lower right")
    p.png = _png(fig)
    return p


def plot_answer_length(run: Run) -> Plot:
    p = Plot("answer_length", "Answer length per model",
             "Mean length of each model's answers to the eval prompts (DPO on self-judged pairs tends to "
             "make answers longer, paper section 4).")
    lengths = {m: v for m, v in (run.eval.get("length") or {}).items()
               if isinstance(v, dict) and (num(v.get("mean_chars")) is not None or num(v.get("mean_tokens")) is not None)}
    if not lengths:
        p.note = "No answer lengths (eval disabled or not run yet)."
        return p
    models = sorted(lengths, key=model_key)
    colors = _model_colors(run.models)
    fig, axes = _figure(ncols=2)
    for ax, key, label in ((axes[0], "mean_chars", "characters"), (axes[1], "mean_tokens", "tokens")):
        ax.tick_params(axis="x", labelsize=8.5 if len(models) > 5 else 9.5)
        vals = [num(lengths[m].get(key)) for m in models]
        bars = ax.bar(range(len(models)), [v or 0 for v in vals], 0.65, color=[colors.get(m, GREY) for m in models])
        _bar_labels(ax, bars, [f"{v:.0f}" if v is not None else "n/a" for v in vals])
        ax.set_xticks(range(len(models)), models)
        _slots(ax, len(models))
        ax.set_ylabel(f"mean {label}")
        ax.set_xlabel("model")
        ax.set_title(label, fontsize=10, fontweight="normal")
        ax.margins(y=0.15)
    fig.suptitle("Mean answer length per model", fontsize=11, fontweight="bold")
    p.png = _png(fig)
    return p


def plot_score_hist(run: Run) -> Plot:
    p = Plot("score_hist", "Judge score distribution per iteration",
             "Share of the iteration's judgments giving each rubric score; 'unparsed' judgments have no "
             "valid 'Score: N' line and are never turned into a score.")
    its = []
    for t in run.iterations:
        hist = run.it(t).get("judge/score_hist")
        if isinstance(hist, dict):
            counts = [num(hist.get(str(s))) or 0 for s in range(6)]
            total = num(run.it(t).get("judge/judgments"))
            failures = num(run.it(t).get("judge/parse_failures"))
            if failures is None:
                failures = max(0.0, total - sum(counts)) if total is not None else 0.0
            n = sum(counts) + failures
            if n > 0:
                its.append((t, counts + [failures], n))
    if not its:
        p.note = "No judge scores yet."
        return p
    cats = [str(s) for s in range(6)] + ["unparsed"]
    fig, ax = _figure()
    width = 0.8 / len(its)
    for j, (t, counts, n) in enumerate(its):
        xs = [i + (j - (len(its) - 1) / 2) * width for i in range(len(cats))]
        mean = run.it(t).get("judge/score_mean")
        ax.bar(xs, [100 * c / n for c in counts], width * 0.92, color=PALETTE[j % len(PALETTE)],
               label=f"iter {t} (n={n:.0f}, mean {fmt(mean)})")
    ax.set_xticks(range(len(cats)), cats)
    ax.set_xlabel("rubric score")
    ax.set_ylabel("share of judgments (%)")
    ax.set_title("Judge score distribution per iteration")
    top = max(100 * c / n for _, counts, n in its for c in counts)
    ax.set_ylim(0, top * (1.15 + 0.09 * len(its)))
    ax.legend(loc="upper left")
    p.png = _png(fig)
    return p


def plot_pairs(run: Run) -> Plot:
    p = Plot("pairs", "Preference pairs kept vs dropped",
             "Per iteration, prompts that gave a pair (highest vs lowest mean score) and prompts dropped because "
             "all scored candidates tied, or unscored because fewer than two candidates had a valid score.")
    its = [t for t in run.iterations if any(num(run.it(t).get(k)) is not None
                                            for k in ("pairs/kept", "pairs/dropped_tie", "pairs/dropped_unscored"))]
    if not its:
        p.note = "No pair statistics yet."
        return p
    parts = [("pairs/kept", "kept", "#55A868"), ("pairs/dropped_tie", "dropped: tie", "#DD8452"),
             ("pairs/dropped_unscored", "dropped: unscored", "#B0B7C3")]
    fig, ax = _figure()
    bottom = [0.0] * len(its)
    xs = list(range(len(its)))
    for key, label, color in parts:
        vals = [num(run.it(t).get(key)) or 0 for t in its]
        bars = ax.bar(xs, vals, 0.6, bottom=bottom, color=color, label=label)
        for b, v, b0 in zip(bars, vals, bottom):
            if v > 0:
                ax.text(b.get_x() + b.get_width() / 2, b0 + v / 2, f"{v:.0f}", ha="center", va="center",
                        fontsize=8, color="white" if key != "pairs/dropped_unscored" else "#1F2937")
        bottom = [a + b for a, b in zip(bottom, vals)]
    ax.set_xticks(xs, [f"iter {t}" for t in its])
    _slots(ax, len(its))
    _integer_y(ax)
    ax.set_ylim(0, max(bottom + [1]) * 1.3)
    ax.set_ylabel("prompts")
    ax.set_xlabel("iteration")
    ax.set_title("Preference pairs kept vs dropped")
    ax.legend(loc="upper center", ncol=3)
    p.png = _png(fig)
    return p


def plot_pair_lengths(run: Run) -> Plot:
    p = Plot("pair_lengths", "Chosen vs rejected length",
             "Mean length in characters of the chosen and rejected responses of each iteration's pairs: a judge "
             "that rewards length shows chosen consistently longer than rejected.")
    its = [(t, num(run.it(t).get("pairs/mean_chosen_length")), num(run.it(t).get("pairs/mean_rejected_length")))
           for t in run.iterations]
    its = [x for x in its if x[1] is not None or x[2] is not None]
    if not its:
        p.note = "No preference pairs, so no chosen/rejected lengths."
        return p
    fig, ax = _figure()
    xs = list(range(len(its)))
    for off, idx, label, color in ((-0.2, 1, "chosen", "#55A868"), (0.2, 2, "rejected", "#C44E52")):
        vals = [x[idx] for x in its]
        bars = ax.bar([x + off for x in xs], [v or 0 for v in vals], 0.38, color=color, label=label)
        _bar_labels(ax, bars, [f"{v:.0f}" if v is not None else "n/a" for v in vals])
    ax.set_xticks(xs, [f"iter {t}" for t, _, _ in its])
    _slots(ax, len(its))
    top = max([v for x in its for v in x[1:] if v is not None] + [1])
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("mean length (characters)")
    ax.set_xlabel("iteration")
    ax.set_title("Mean chosen vs rejected response length")
    ax.legend(loc="upper center", ncol=2)
    p.png = _png(fig)
    return p


def _curve(log: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, r in enumerate(log):
        if "loss" not in r:  # train-step rows; the final summary row has train_loss instead
            continue
        y = num(r.get(key))
        if y is None:
            continue
        xs.append(num(r.get("step")) or float(i + 1))
        ys.append(y)
    return xs, ys


def plot_dpo(run: Run) -> Plot:
    p = Plot("dpo_loss", "DPO training curves per iteration",
             "DPO loss (starts at ln 2 ≈ 0.693) and reward margin (implicit reward of chosen minus rejected) "
             "per logging step.")
    curves = {t: log for t, log in run.dpo_logs.items() if _curve(log, "loss")[0]}
    if not curves:
        p.note = "No DPO training logs (no iteration has trained yet, or no iteration had pairs)."
        return p
    skipped = [t for t in run.iterations if t not in curves and run.it(t).get("dpo/skipped_no_pairs")]
    fig, axes = _figure(ncols=2)
    for j, t in enumerate(sorted(curves)):
        color = PALETTE[j % len(PALETTE)]
        for ax, key in ((axes[0], "loss"), (axes[1], "rewards/margins")):
            xs, ys = _curve(curves[t], key)
            if xs:
                ax.plot(xs, ys, color=color, linewidth=1.8, marker="o" if len(xs) <= 30 else None, markersize=3.5,
                        label=f"iter {t}")
    from matplotlib.ticker import MaxNLocator

    axes[0].axhline(0.6931, color=GREY, linestyle="--", linewidth=1)
    axes[0].set_title("loss", fontsize=10, fontweight="normal")
    axes[0].set_ylabel("DPO loss")
    axes[1].axhline(0, color=GREY, linestyle="--", linewidth=1)
    axes[1].set_title("reward margin", fontsize=10, fontweight="normal")
    axes[1].set_ylabel("chosen − rejected reward")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(True, axis="both")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("DPO training per iteration", fontsize=11, fontweight="bold")
    axes[0].legend(loc="best")
    if skipped:
        p.caption += " Not shown (no pairs): " + ", ".join(f"iteration {t}" for t in skipped) + "."
    p.png = _png(fig)
    return p


def plot_sft(run: Run) -> Plot:
    p = Plot("sft_loss", "SFT loss", "Training loss of M0 → M1 on the IFT + EFT seed data (completion tokens only).")
    xs, ys = _curve(run.sft_log, "loss")
    if not xs:
        p.note = "No SFT training log (SFT disabled or not finished)."
        return p
    fig, ax = _figure()
    ax.plot(xs, ys, color=PALETTE[0], linewidth=1.8, marker="o" if len(xs) <= 40 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("SFT training loss (M0 → M1)")
    ax.grid(True, axis="both")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    p.png = _png(fig)
    return p


# The plots of `srlm report DIR`, in page order.
PLOTS: list[Callable[[Run], Plot]] = [plot_agreement, plot_win_rates, plot_answer_length, plot_score_hist,
                                      plot_pairs, plot_pair_lengths, plot_dpo, plot_sft]


def draw(fn: Callable[..., Plot], *args) -> Plot:
    """fn(*args) under the report style; an exception becomes a note (and a warning)."""
    import matplotlib

    try:
        with matplotlib.rc_context(STYLE):
            return fn(*args)
    except Exception as e:  # noqa: BLE001 - one bad plot must not cost the whole report
        name = fn.__name__.removeprefix("plot_")
        warn(f"plot {name} failed: {type(e).__name__}: {e}")
        return Plot(name, name.replace("_", " "), note=f"Plot failed: {type(e).__name__}: {e}")


# --- several runs (`srlm compare`): one series per run, labelled by its method --------------------

Labeled = list[tuple[str, Run]]  # (method label, run), in the order given


def _grouped_bars(ax, categories: list[str], series: list[tuple[str, str, list[float | None]]],
                  fmt_label: Callable[[float], str] | None = None) -> None:
    """One group of bars per category, one bar per series (label, colour, values); None is 'n/a'."""
    width = 0.8 / max(1, len(series))
    n_bars = len(categories) * len(series)
    size = 8 if n_bars <= 10 else 6.5 if n_bars <= 16 else 0
    for j, (label, color, vals) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(categories))]
        bars = ax.bar(xs, [v if v is not None else 0 for v in vals], width * 0.9, color=color, label=label)
        if size and fmt_label:
            _bar_labels(ax, bars, [fmt_label(v) if v is not None else "n/a" for v in vals], size)
    ax.set_xticks(range(len(categories)), categories)
    _slots(ax, len(categories))


def plot_compare_agreement(runs: Labeled, source: str, name: str) -> Plot:
    p = Plot(name, f"Judge-human agreement per run ({source})",
             f"How often each run's models, judging with the rubric, prefer the response humans preferred on "
             f"{source} (ties and unparsed judgments count as wrong); the dotted line is the length heuristic "
             "(always prefer the longer response) where the run recorded it.")
    data = {label: {m: num((v or {}).get("accuracy")) for m, v in
                    ((run.eval.get("judge_agreement") or {}).get(source) or {}).items() if isinstance(v, dict)}
            for label, run in runs}
    if not any(v is not None for d in data.values() for v in d.values()):
        p.note = f"No run has judge-human agreement results on {source}."
        return p
    models = sorted({m for d in data.values() for m in d}, key=model_key)
    fig, ax = _figure()
    _grouped_bars(ax, models, [(label, PALETTE[j % len(PALETTE)],
                                [100 * v if (v := data[label].get(m)) is not None else None for m in models])
                               for j, (label, _) in enumerate(runs)],
                  lambda v: f"{v:.0f}%")
    heuristic = [(j, num(run.judge_baselines(source).get(LENGTH_HEURISTIC, {}).get("accuracy")))
                 for j, (_, run) in enumerate(runs)]
    for j, h in heuristic:
        if h is not None:
            ax.axhline(100 * h, color=PALETTE[j % len(PALETTE)], linestyle=":", linewidth=1.5)
    if any(h is not None for _, h in heuristic):
        ax.plot([], [], ":", color="#4B5563", label="length heuristic")
    ax.axhline(50, color=GREY, linestyle="--", linewidth=1)
    ax.set_ylim(0, 118)
    ax.set_ylabel("agreement with human preference (%)")
    ax.set_xlabel("model")
    ax.set_title(f"Judge-human agreement ({source})")
    ax.legend(loc="upper left", ncol=min(3, len(runs) + 1))
    p.png = _png(fig)
    return p


def plot_compare_win_rates(runs: Labeled) -> Plot:
    p = Plot("compare_win_rates", "Head-to-head win rates per run",
             "Each run's win rate of the newer model (both orders, ties count half) with its 95% bootstrap "
             "interval; the hollow diamond is the win rate at equal length (logistic fit). Each run is judged "
             "by its own judge, so compare with care.")
    data = {label: {k: v for k, v in (run.eval.get("win_rate") or {}).items()
                    if isinstance(v, dict) and num(v.get("win_rate")) is not None} for label, run in runs}
    keys = sorted({k for d in data.values() for k in d}, key=comparison_order)
    if not keys:
        p.note = "No run has a head-to-head win rate."
        return p
    fig, ax = _figure()
    width = 0.7 / len(runs)
    for j, (label, _) in enumerate(runs):
        color = PALETTE[j % len(PALETTE)]
        for i, k in enumerate(keys):
            r = data[label].get(k)
            if r is None:
                continue
            _win_rate_point(ax, i + (j - (len(runs) - 1) / 2) * width, r, color)
        if data[label]:
            ax.plot([], [], "o", color=color, label=label)
    ax.plot([], [], "D", markerfacecolor="none", markeredgecolor="#4B5563", label="at equal length")
    ax.axhline(50, color=GREY, linestyle="--", linewidth=1)
    ax.set_xticks(range(len(keys)), [comparison_label(k) for k in keys])
    _slots(ax, len(keys))
    ax.set_ylim(0, 100)
    ax.set_ylabel("win rate of the newer model (%)")
    ax.set_title("Head-to-head win rates")
    ax.legend(loc="lower right", ncol=min(3, len(runs) + 1))
    p.png = _png(fig)
    return p


def plot_compare_cross_win_rates(cross: dict) -> Plot:
    """`srlm compare --h2h-judge`: report/cross.py's comparisons, one judge for all."""
    p = Plot("compare_cross_win_rates", "Win rates across runs, one judge",
             f"Win rate of the first-named model in each comparison, judged by `{cross.get('judge')}` pointwise "
             "(rubric scores) and pairwise (both orders), ties counting half, with 95% bootstrap intervals; the "
             "hollow diamond is the win rate at equal length (logistic fit).")
    rows = [r for r in cross.get("comparisons") or [] if isinstance(r, dict)]
    if not rows:
        p.note = "No cross-run comparison."
        return p
    fig, ax = _figure()
    judges = [("pointwise", PALETTE[0]), ("pairwise", PALETTE[1])]
    width = 0.7 / len(judges)
    for j, (kind, color) in enumerate(judges):
        for i, row in enumerate(rows):
            r = row.get(kind) or {}
            if num(r.get("win_rate")) is None:
                continue
            _win_rate_point(ax, i + (j - (len(judges) - 1) / 2) * width, r, color)
        ax.plot([], [], "o", color=color, label=f"{kind} judge")
    ax.plot([], [], "D", markerfacecolor="none", markeredgecolor="#4B5563", label="at equal length")
    ax.axhline(50, color=GREY, linestyle="--", linewidth=1)
    ax.set_xticks(range(len(rows)), [f"{r.get('x')}\nvs {r.get('y')}" for r in rows])
    _slots(ax, len(rows))
    ax.set_ylim(0, 100)
    ax.set_ylabel("win rate of the first-named model (%)")
    ax.set_title("Win rates across runs")
    ax.legend(loc="best", ncol=3)
    p.png = _png(fig)
    return p


def plot_compare_answer_length(runs: Labeled) -> Plot:
    p = Plot("compare_answer_length", "Answer length per iteration",
             "Mean length of each run's models' answers to the eval prompts: M0 is the base model, M1 after "
             "SFT, M_(t+1) after iteration t.")
    data = {label: {m: v for m, v in (run.eval.get("length") or {}).items() if isinstance(v, dict)}
            for label, run in runs}
    models = sorted({m for d in data.values() for m in d}, key=model_key)
    if not any(num(v.get(k)) is not None for d in data.values() for v in d.values()
               for k in ("mean_chars", "mean_tokens")):
        p.note = "No run has answer lengths (eval disabled or not run yet)."
        return p
    fig, axes = _figure(ncols=2)
    for ax, key, label in ((axes[0], "mean_chars", "characters"), (axes[1], "mean_tokens", "tokens")):
        for j, (run_label, _) in enumerate(runs):
            pts = [(i, num(data[run_label].get(m, {}).get(key))) for i, m in enumerate(models)]
            pts = [(i, v) for i, v in pts if v is not None]
            if pts:
                ax.plot([i for i, _ in pts], [v for _, v in pts], marker="o", markersize=4, linewidth=1.8,
                        color=PALETTE[j % len(PALETTE)], label=run_label)
        ax.set_xticks(range(len(models)), models)
        _slots(ax, len(models))
        ax.set_ylabel(f"mean {label}")
        ax.set_xlabel("model")
        ax.set_title(label, fontsize=10, fontweight="normal")
        ax.set_ylim(bottom=0)
        ax.margins(y=0.15)
    axes[0].legend(loc="best")
    fig.suptitle("Mean answer length per model", fontsize=11, fontweight="bold")
    p.png = _png(fig)
    return p


def _per_iteration(runs: Labeled, key: str) -> tuple[list[int], dict[str, list[float | None]]]:
    its = sorted({t for _, run in runs for t in run.iterations if num(run.it(t).get(key)) is not None})
    return its, {label: [num(run.it(t).get(key)) for t in its] for label, run in runs}


def plot_compare_pairs(runs: Labeled) -> Plot:
    p = Plot("compare_pairs", "Preference pairs per iteration",
             "Pairs each run kept per iteration (prompts whose best and worst candidates differ in mean score).")
    its, data = _per_iteration(runs, "pairs/kept")
    if not its:
        p.note = "No run has pair statistics yet."
        return p
    fig, ax = _figure()
    _grouped_bars(ax, [f"iter {t}" for t in its],
                  [(label, PALETTE[j % len(PALETTE)], data[label]) for j, (label, _) in enumerate(runs)],
                  lambda v: f"{v:.0f}")
    _integer_y(ax)
    ax.margins(y=0.2)
    ax.set_ylabel("pairs kept")
    ax.set_xlabel("iteration")
    ax.set_title("Preference pairs per iteration")
    ax.legend(loc="upper left", ncol=min(3, len(runs)))
    p.png = _png(fig)
    return p


def plot_compare_wall_time(runs: Labeled) -> Plot:
    p = Plot("compare_wall_time", "Wall time per iteration",
             "Wall-clock time of each iteration (prompts, sampling, judging, pairs and DPO), per run.")
    its, data = _per_iteration(runs, "iteration/wall_s")
    if not its:
        p.note = "No run has recorded an iteration's wall time."
        return p
    minutes = max((v for vals in data.values() for v in vals if v is not None), default=0) >= 300
    scale = 60 if minutes else 1
    fig, ax = _figure()
    _grouped_bars(ax, [f"iter {t}" for t in its],
                  [(label, PALETTE[j % len(PALETTE)], [v / scale if v is not None else None for v in data[label]])
                   for j, (label, _) in enumerate(runs)],
                  lambda v: f"{v:.1f}" if v < 10 else f"{v:.0f}")
    ax.margins(y=0.2)
    ax.set_ylabel("minutes" if minutes else "seconds")
    ax.set_xlabel("iteration")
    ax.set_title("Wall time per iteration")
    ax.legend(loc="upper left", ncol=min(3, len(runs)))
    p.png = _png(fig)
    return p


def plot_ifeval(run: Run) -> Plot:
    p = Plot("ifeval", "IFEval accuracy per model",
             "Prompt- and instruction-level accuracy (strict) on IFEval's verifiable instructions, with 95% "
             "bootstrap intervals: a judge-free measure of whether the loop helps.")
    res = {m: v for m, v in (run.eval.get("ifeval") or {}).items()
           if isinstance(v, dict) and num(v.get("ifeval/prompt_strict")) is not None}
    if not res:
        p.note = "No IFEval results (eval.ifeval off, eval disabled, or not run yet)."
        return p
    models = sorted(res, key=model_key)
    fig, ax = _figure()
    for key, label, marker in (("ifeval/prompt_strict", "prompt level", "o"), ("ifeval/inst_strict",
                                                                              "instruction level", "s")):
        vals = [num(res[m].get(key)) for m in models]
        lo = [v - (res[m].get(key + "_ci95") or [v, v])[0] for m, v in zip(models, vals)]
        hi = [(res[m].get(key + "_ci95") or [v, v])[1] - v for m, v in zip(models, vals)]
        ax.errorbar(range(len(models)), vals, yerr=[lo, hi], marker=marker, capsize=3, label=label)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("accuracy (strict)")
    ax.set_xlabel("model")
    ax.legend(fontsize=8)
    p.png = _png(fig)
    return p



def _errorbar(ax, xs: list[float], vals: list[float], cis: list, color: str, marker: str, label: str,
              scale: float = 100) -> None:
    """Points joined by a line, each with its [low, high] interval where one is given."""
    lo = [max(0.0, v - (c[0] * scale if c else v)) for v, c in zip(vals, cis)]
    hi = [max(0.0, (c[1] * scale if c else v) - v) for v, c in zip(vals, cis)]
    ax.errorbar(xs, vals, yerr=[lo, hi], marker=marker, color=color, ecolor=color, capsize=3, linewidth=1.6,
                markersize=5, label=label)


def _pair(v) -> list[float] | None:
    return [float(v[0]), float(v[1])] if isinstance(v, (list, tuple)) and len(v) == 2 and all(
        num(x) is not None for x in v) else None


def plot_proxy_vs_gold(run: Run) -> Plot:
    """What the loop optimises (its own judge's score) beside measures it cannot move by pleasing
    that judge: IFEval's checkers and agreement with human preferences."""
    import numpy as np

    p = Plot("proxy_vs_gold", "Proxy vs gold",
             "Left, the proxy: the mean rubric score each model gives its own answers to the eval prompts "
             "(eval/pointwise_<M>_by_<M>.jsonl, 95% normal interval). Right, what it should track: IFEval score "
             "(mean of prompt- and instruction-level strict accuracy, 95% bootstrap interval) and judge-human "
             "agreement, with the length heuristic dotted. A proxy that rises while the right panel stays flat "
             "is the judge being pleased, not the model improving.")
    proxy = run.self_judge_scores()
    ifeval = {m: v for m, v in (run.eval.get("ifeval") or {}).items()
              if isinstance(v, dict) and num(v.get("ifeval/score")) is not None}
    sources = [(s, pm) for s, pm in (run.eval.get("judge_agreement") or {}).items() if isinstance(pm, dict)
               and any(isinstance(v, dict) and num(v.get("accuracy")) is not None for v in pm.values())]
    source, agree = sources[0] if sources else (None, {})
    agree = {m: num(v.get("accuracy")) for m, v in agree.items() if isinstance(v, dict) and num(v.get("accuracy")) is not None}
    models = sorted(set(proxy) | set(ifeval) | set(agree), key=model_key)
    if not models:
        p.note = "No self-judged eval answers, IFEval or judge agreement (eval disabled or not run yet)."
        return p
    x = {m: i for i, m in enumerate(models)}
    fig, (left, right) = _figure(ncols=2)
    if proxy:
        ms = [m for m in models if m in proxy]
        means = [float(np.mean(proxy[m])) for m in ms]
        half = [1.96 * float(np.std(proxy[m], ddof=1)) / len(proxy[m]) ** 0.5 if len(proxy[m]) > 1 else 0.0
                for m in ms]
        left.errorbar([x[m] for m in ms], means, yerr=half, marker="o", color=PALETTE[3], ecolor=PALETTE[3],
                      capsize=3, linewidth=1.6, markersize=5)
        for m, v in zip(ms, means):
            left.annotate(f"{v:.2f}", (x[m], v), xytext=(6, 4), textcoords="offset points", fontsize=7.5,
                          color="#374151")
    else:
        left.text(0.5, 0.5, "no self-judged\neval answers", ha="center", va="center", transform=left.transAxes,
                  color="#6B7280")
    left.set_ylim(0, 5.2)
    left.set_ylabel("self-judge score of own answers (0-5)")
    left.set_title("proxy: the model's own judge", fontsize=10, fontweight="normal")
    if ifeval:
        ms = [m for m in models if m in ifeval]
        _errorbar(right, [x[m] for m in ms], [100 * num(ifeval[m]["ifeval/score"]) for m in ms],
                  [_pair(ifeval[m].get("ifeval/score_ci95")) for m in ms], PALETTE[0], "s", "IFEval score")
    if agree:
        ms = [m for m in models if m in agree]
        right.plot([x[m] for m in ms], [100 * agree[m] for m in ms], marker="o", color=PALETTE[2], linewidth=1.6,
                   markersize=5, label=f"agreement ({source})")
        length = num(run.judge_baselines(source).get(LENGTH_HEURISTIC, {}).get("accuracy"))
        if length is not None:
            right.axhline(100 * length, color=PALETTE[2], linestyle=":", linewidth=1.3, label="longer answer wins")
    right.set_ylim(0, 100)
    right.set_ylabel("%")
    right.set_title("gold: checkers and humans", fontsize=10, fontweight="normal")
    if ifeval or agree:
        right.legend(loc="upper left", fontsize=7)
    for ax in (left, right):
        ax.set_xticks(range(len(models)), models)
        _slots(ax, len(models))
        ax.set_xlabel("model")
    fig.suptitle("Proxy vs gold", fontsize=11, fontweight="bold")
    missing = [(what, [m for m in models if m not in have]) for what, have in
               (("self-judged scores", proxy), ("IFEval", ifeval), ("judge agreement", agree))]
    missing = [(what, ms) for what, ms in missing if ms]
    if missing:
        p.caption += " Missing: " + "; ".join(f"{what} for {', '.join(ms)}" for what, ms in missing) + (
            " (a model's self-judged scores exist once it has judged its own answers in a pointwise head-to-head, "
            "which M0 never does)." if any(what == "self-judged scores" for what, _ in missing) else ".")
    p.png = _png(fig)
    return p


def plot_judge_vs_checker(run: Run) -> Plot:
    import numpy as np

    from .tables import judge_checker_agreement

    p = Plot("judge_vs_checker", "Does the judge see what the checker sees?",
             "Training candidates on verifiable prompts. Left: per iteration, the correlation between the "
             "self-judge's rubric score (each candidate's judgments averaged) and the share of instructions the "
             "checker says it follows, n = candidates. Right: each candidate (checker shares jittered slightly).")
    rows = judge_checker_agreement(run)
    if not rows:
        p.note = ("No judgment records both a checker verdict and a rubric score (only runs on verifiable prompts "
                  "with a rubric judge record both).")
        return p
    fig, (left, right) = _figure(ncols=2)
    xs = list(range(len(rows)))
    for off, key, label, marker, color in ((-0.1, "pearson", "Pearson r", "o", PALETTE[0]),
                                           (0.1, "spearman", "Spearman ρ", "s", PALETTE[1])):
        points = [(i + off, r[key]) for i, r in enumerate(rows) if r[key] is not None]
        if points:
            left.plot([a for a, _ in points], [b for _, b in points], marker, color=color, markersize=6, label=label)
    left.axhline(0, color=GREY, linestyle="--", linewidth=1)
    left.set_ylim(-1.15, 1.15)
    left.set_xticks(xs, [f"iter {r['iteration']}\nn={r['candidates']}" for r in rows])
    _slots(left, len(rows))
    left.set_ylabel("correlation")
    left.set_title("judge vs checker", fontsize=10, fontweight="normal")
    left.legend(loc="best", fontsize=7)
    rng = np.random.default_rng(0)
    for j, r in enumerate(rows):
        jitter = rng.uniform(-0.02, 0.02, size=len(r["checker"]))
        right.scatter(r["judge"], np.asarray(r["checker"]) + jitter, s=9, alpha=0.5,
                      color=PALETTE[j % len(PALETTE)], label=f"iter {r['iteration']}")
    right.set_xlim(-0.1, 5.1)
    right.set_ylim(-0.08, 1.08)
    right.set_xlabel("self-judge score (0-5)")
    right.set_ylabel("share of instructions followed")
    right.set_title("candidates", fontsize=10, fontweight="normal")
    right.grid(True, axis="both")
    if len(rows) > 1:
        right.legend(loc="best", fontsize=7)
    fig.suptitle("Does the judge see what the checker sees?", fontsize=11, fontweight="bold")
    no_corr = [r["iteration"] for r in rows if r["pearson"] is None]
    if no_corr:
        p.caption += (" No correlation (fewer than 3 candidates, or one side constant) in iteration "
                      + ", ".join(map(str, no_corr)) + ".")
    p.png = _png(fig)
    return p


# The judge-free section's plots (sections.judge_free_section), in page order.
JUDGE_FREE_PLOTS: list[Callable[[Run], Plot]] = [plot_ifeval, plot_proxy_vs_gold, plot_judge_vs_checker]
