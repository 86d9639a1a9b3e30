"""`srlm report DIR`: one self-contained page about a run.

Reads only what the stages wrote (config.yaml, metrics.json, sft_log.json, iter_<t>/*.jsonl,
iter_<t>/dpo_log.json, eval/*.jsonl) and writes
  DIR/report/index.html  self-contained: plots embedded as base64 PNG, inline CSS, no scripts,
                         no external resources, so it opens offline and can be mailed around;
  DIR/report/report.md   the same tables, with the plots as PNG files next to it.
A run may be partial (crashed, still running, eval disabled, an iteration with no pairs): every
missing file, group, key or null value is shown as "-", and a plot without data is replaced by
a note saying why, so a report can be built at any point of a run.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from srlm.records import InputError, atomic_write_text

REPORT_DIR = "report"
MAX_TEXT_CHARS = 1500  # longer prompts, responses and judgments are clipped in the examples
EVAL_EXAMPLES = 3
PAIR_EXAMPLES_PER_ITERATION = 2

# Section ids and headings, in page order (tests check that every heading is present).
SECTIONS = [
    ("run", "Run"),
    ("iterations", "Iteration metrics"),
    ("sft", "SFT"),
    ("evaluation", "Evaluation"),
    ("plots", "Plots"),
    ("answers", "Example answers"),
    ("pairs", "Example preference pairs"),
]

STAGE_ORDER = ["prompts", "sample", "judge", "pairs", "dpo", "iteration"]
STAGE_TITLES = {"prompts": "1. prompts (self-instruct)", "sample": "2. sample (candidates)",
                "judge": "3. judge (0-5 rubric)", "pairs": "4. pairs (preference pairs)",
                "dpo": "5. DPO", "iteration": "iteration"}

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
           "#CCB974", "#64B5CD"]
GREY = "#9CA3AF"


# --- formatting -----------------------------------------------------------------------------------

def fmt(v: Any) -> str:
    """A metric value as text; None and missing values are '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        if v.is_integer() and abs(v) < 1e15:
            return fmt(int(v))
        if abs(v) >= 10000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(v, dict):
        if v and all(re.fullmatch(r"\d+", str(k)) for k in v):  # a score histogram
            return " ".join(f"{k}:{fmt(n)}" for k, n in sorted(v.items(), key=lambda kv: int(kv[0])))
        return "; ".join(f"{k}: {fmt(n)}" for k, n in v.items()) if v else "-"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def pct(v: Any, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f}%" if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else "-"


def ci(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}]%"
    return "-"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v)


def clip(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f"\n… [{len(text) - limit:,} more characters]"


def model_key(name: str) -> tuple[int, str]:
    m = re.fullmatch(r"M(\d+)", name)
    return (int(m.group(1)), "") if m else (10 ** 9, name)


# --- reading a run directory ------------------------------------------------------------------------

def _warn(msg: str) -> None:
    print(f"srlm report: warning: {msg}", file=sys.stderr)


def _load_json(path: str, default: Any) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        _warn(f"{path}: unreadable ({e}); ignored")
        return default


def _iter_jsonl(path: str):
    """Dicts of a JSONL file; a missing file yields nothing, malformed lines are skipped (a report
    must not fail on a run that crashed mid-write)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def _log_rows(log: Any) -> list[dict]:
    return [r for r in log if isinstance(r, dict)] if isinstance(log, list) else []


@dataclass
class Run:
    dir: str
    config_text: str | None
    config: dict
    metrics: dict
    iterations: list[int]
    models: list[str]
    sft_log: list[dict]
    dpo_logs: dict[int, list[dict]]
    eval: dict = field(default_factory=dict)

    def it(self, t: int) -> dict:
        v = self.metrics.get(f"iter_{t}")
        return v if isinstance(v, dict) else {}

    @property
    def sft(self) -> dict:
        v = self.metrics.get("sft")
        return v if isinstance(v, dict) else {}


def load_run(run_dir: str) -> Run:
    if not os.path.isdir(run_dir):
        raise InputError(f"{run_dir}: no such run directory")
    config_path = os.path.join(run_dir, "config.yaml")
    metrics_path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(config_path) and not os.path.exists(metrics_path):
        raise InputError(f"{run_dir}: not a run directory (no config.yaml or metrics.json)")
    config_text, config = None, {}
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8", errors="replace") as f:
            config_text = f.read()
        try:
            import yaml

            config = yaml.safe_load(config_text) or {}
        except Exception as e:  # noqa: BLE001 - a broken config still gets a report
            _warn(f"{config_path}: unparseable YAML ({e})")
        if not isinstance(config, dict):
            config = {}
    metrics = _load_json(metrics_path, {})
    if not isinstance(metrics, dict):
        metrics = {}

    iterations = set()
    for k in metrics:
        m = re.fullmatch(r"iter_(\d+)", k)
        if m:
            iterations.add(int(m.group(1)))
    for name in os.listdir(run_dir):
        m = re.fullmatch(r"iter_(\d+)", name)
        if m and os.path.isdir(os.path.join(run_dir, name)):
            iterations.add(int(m.group(1)))
    iterations_sorted = sorted(iterations)

    ev = dict(metrics["eval"]) if isinstance(metrics.get("eval"), dict) else {}
    ja = ev.get("judge_agreement")
    if isinstance(ja, dict) and ja and all(isinstance(v, dict) and not any(isinstance(x, dict) and "accuracy" in x
                                                                            for x in v.values()) for v in ja.values()):
        ev["judge_agreement"] = {"human_prefs": ja}  # {MODEL: summary} without the source level
    models = {"M0"}
    models_dir = os.path.join(run_dir, "models")
    if os.path.isdir(models_dir):
        models |= {n for n in os.listdir(models_dir)
                   if re.fullmatch(r"M\d+", n) and os.path.isdir(os.path.join(models_dir, n))}
    for per_model in (ev.get("judge_agreement") or {}).values():
        if isinstance(per_model, dict):
            models |= set(per_model)
    models |= set(ev.get("length") or {})
    models |= {m.group(1) for m in (re.fullmatch(r"answers_(.+)\.jsonl", n)
                                    for n in _listdir(os.path.join(run_dir, "eval"))) if m}

    return Run(
        dir=run_dir, config_text=config_text, config=config, metrics=metrics, iterations=iterations_sorted,
        models=sorted(models, key=model_key),
        sft_log=_log_rows(_load_json(os.path.join(run_dir, "sft_log.json"), [])),
        dpo_logs={t: _log_rows(_load_json(os.path.join(run_dir, f"iter_{t}", "dpo_log.json"), []))
                  for t in iterations_sorted},
        eval=ev,
    )


def _listdir(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def model_descriptions(run: Run) -> dict[str, str]:
    base = (run.config.get("model") or {}).get("name_or_path") if isinstance(run.config.get("model"), dict) else None
    out = {}
    for m in run.models:
        k = model_key(m)[0]
        if m == "M0":
            out[m] = f"base model{': ' + str(base) if base else ''}"
        elif m == "M1":
            out[m] = "SFT copy of M0 (SFT disabled)" if run.sft.get("sft/skipped") else "M0 + SFT on IFT + EFT seed data"
        elif k < 10 ** 9:
            t = k - 1
            it = run.it(t)
            if it.get("dpo/skipped_no_pairs"):
                out[m] = f"iteration {t}: no preference pairs, copy of {it.get('dpo/start', 'the start model')}"
            else:
                start = it.get("dpo/start")
                out[m] = f"iteration {t}: DPO on {fmt(it.get('pairs/kept'))} self-judged pairs" + (
                    f" (from {start})" if start else "")
        else:
            out[m] = ""
    return out


# --- tables (shared by HTML and Markdown) -------------------------------------------------------------

@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    groups: dict[int, str] = field(default_factory=dict)  # row index -> group title shown before it
    code_first: bool = False  # first column holds metric keys (monospace)
    compact: bool = False  # as narrow as its content (key/value tables)
    text: bool = False  # left-aligned, wrapping cells (prose rather than numbers)


def iteration_table(run: Run) -> Table | None:
    if not run.iterations:
        return None
    keys: list[str] = []
    for t in run.iterations:
        for k in run.it(t):
            if k not in keys:
                keys.append(k)
    if not keys:
        return None

    def stage(k: str) -> str:
        return k.split("/", 1)[0]

    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    keys.sort(key=lambda k: (order.get(stage(k), len(order)), stage(k)))  # stable: keeps first-seen order
    rows, groups, last = [], {}, None
    for k in keys:
        if stage(k) != last:
            last = stage(k)
            groups[len(rows)] = STAGE_TITLES.get(last, last)
        rows.append([k] + [fmt(run.it(t).get(k)) for t in run.iterations])
    return Table(["metric"] + [f"iter_{t}" for t in run.iterations], rows, groups, code_first=True)


def sft_table(run: Run) -> Table | None:
    if not run.sft:
        return None
    return Table(["metric", "value"], [[k, fmt(v)] for k, v in run.sft.items()], code_first=True, compact=True)


AGREEMENT_ROWS = [
    ("accuracy", "accuracy (judge ties and unparsed count as wrong)", pct),
    ("accuracy_decided", "accuracy on pairs the judge decided", pct),
    ("correct", "correct", fmt),
    ("human_non_tie", "pairs with a human preference", fmt),
    ("judge_ties", "judge ties", fmt),
    ("unparsed", "pairs with an unparsed side", fmt),
    ("parse_failure_rate", "judgment parse-failure rate", pct),
    ("human_ties", "human ties", fmt),
    ("tie_agreement", "agreement on human ties", pct),
    ("score_hist", "score histogram (0-5)", fmt),
]


def agreement_tables(run: Run) -> list[tuple[str, Table]]:
    out = []
    for source, per_model in (run.eval.get("judge_agreement") or {}).items():
        if not isinstance(per_model, dict) or not per_model:
            continue
        models = sorted(per_model, key=model_key)
        known = [r for r in AGREEMENT_ROWS if any(isinstance(per_model[m], dict) and r[0] in per_model[m]
                                                  for m in models)]
        extra = []
        for m in models:
            for k in (per_model[m] or {}):
                if k not in {r[0] for r in AGREEMENT_ROWS} and k not in extra:
                    extra.append(k)
        rows = [[label] + [f((per_model[m] or {}).get(k)) for m in models] for k, label, f in known]
        rows += [[k] + [fmt((per_model[m] or {}).get(k)) for m in models] for k in extra]
        out.append((str(source), Table(["judge-human agreement"] + models, rows)))
    return out


LENGTH_COLS = [("mean_chars", "mean chars"), ("median_chars", "median chars"),
               ("mean_tokens", "mean tokens"), ("median_tokens", "median tokens")]


def length_table(run: Run) -> Table | None:
    lengths = {m: v for m, v in (run.eval.get("length") or {}).items() if isinstance(v, dict)}
    if not lengths:
        return None
    models = sorted(lengths, key=model_key)
    extra = [k for k in dict.fromkeys(k for m in models for k in lengths[m]) if k not in dict(LENGTH_COLS)]
    cols = LENGTH_COLS + [(k, k) for k in extra]
    return Table(["model"] + [c[1] for c in cols], [[m] + [fmt(lengths[m].get(k)) for k, _ in cols] for m in models])


def comparison_label(key: str) -> str:
    return key.replace("_vs_", " vs ")


def _comparison_order(key: str) -> tuple:
    x, _, y = key.partition("_vs_")
    return model_key(x), model_key(y)


def win_rate_table(run: Run) -> Table | None:
    wr = {k: v for k, v in (run.eval.get("win_rate") or {}).items() if isinstance(v, dict)}
    if not wr:
        return None
    rows = []
    for k in sorted(wr, key=_comparison_order):
        r = wr[k]
        rows.append([comparison_label(k), f"{fmt(r.get('wins'))} / {fmt(r.get('ties'))} / {fmt(r.get('losses'))}",
                     f"{fmt(r.get('compared'))} / {fmt(r.get('prompts'))}", pct(r.get("win_rate")),
                     ci(r.get("win_rate_ci95")), pct(r.get("length_controlled_win_rate")),
                     pct(r.get("position_bias_first")), fmt(r.get("unparsed_verdicts")),
                     pct(r.get("mean_relative_length_diff"))])
    return Table(["comparison", "wins / ties / losses", "compared / prompts", "win rate", "95% CI",
                  "length-controlled win rate", "first position picked", "unparsed verdicts",
                  "relative length difference"], rows)


# --- plots -------------------------------------------------------------------------------------------

@dataclass
class Plot:
    name: str  # file stem in DIR/report/
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
    data = {s: {m: _num((v or {}).get("accuracy")) for m, v in pm.items() if isinstance(v, dict)}
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


def plot_win_rates(run: Run) -> Plot:
    p = Plot("win_rates", "Head-to-head win rates",
             "Win rate of the newer model, each prompt judged in both orders (ties count half), with a 95% "
             "bootstrap confidence interval; the hollow diamond is the length-controlled win rate.")
    wr = {k: v for k, v in (run.eval.get("win_rate") or {}).items()
          if isinstance(v, dict) and _num(v.get("win_rate")) is not None}
    if not wr:
        had = bool(run.eval.get("win_rate"))
        p.note = ("No head-to-head comparison produced a parseable verdict." if had
                  else "No head-to-head results (eval disabled or fewer than two evaluated models after M1).")
        return p
    keys = sorted(wr, key=_comparison_order)
    fig, ax = _figure()
    xs = list(range(len(keys)))
    for i, k in enumerate(keys):
        r = wr[k]
        w = 100 * r["win_rate"]
        c = r.get("win_rate_ci95")
        color = PALETTE[i % len(PALETTE)]
        if isinstance(c, (list, tuple)) and len(c) == 2 and all(_num(x) is not None for x in c):
            lo, hi = 100 * c[0], 100 * c[1]
            ax.errorbar([i], [w], yerr=[[max(0, w - lo)], [max(0, hi - w)]], fmt="o", color=color,
                        ecolor=color, elinewidth=2, capsize=6, markersize=8, zorder=3)
        else:
            ax.plot([i], [w], "o", color=color, markersize=8, zorder=3)
        ax.annotate(f"{w:.1f}%", (i, w), xytext=(10, 0), textcoords="offset points", va="center", fontsize=8.5,
                    color="#374151")
        lc = _num(r.get("length_controlled_win_rate"))
        if lc is not None:
            ax.plot([i], [100 * lc], "D", markerfacecolor="none", markeredgecolor=color, markersize=7,
                    markeredgewidth=1.5, zorder=3)
    ax.plot([], [], "o", color="#4B5563", label="win rate ± 95% CI")
    ax.plot([], [], "D", markerfacecolor="none", markeredgecolor="#4B5563", label="length-controlled")
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
               if isinstance(v, dict) and (_num(v.get("mean_chars")) is not None or _num(v.get("mean_tokens")) is not None)}
    if not lengths:
        p.note = "No answer lengths (eval disabled or not run yet)."
        return p
    models = sorted(lengths, key=model_key)
    colors = _model_colors(run.models)
    fig, axes = _figure(ncols=2)
    for ax, key, label in ((axes[0], "mean_chars", "characters"), (axes[1], "mean_tokens", "tokens")):
        ax.tick_params(axis="x", labelsize=8.5 if len(models) > 5 else 9.5)
        vals = [_num(lengths[m].get(key)) for m in models]
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
            counts = [_num(hist.get(str(s))) or 0 for s in range(6)]
            total = _num(run.it(t).get("judge/judgments"))
            failures = _num(run.it(t).get("judge/parse_failures"))
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
    its = [t for t in run.iterations if any(_num(run.it(t).get(k)) is not None
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
        vals = [_num(run.it(t).get(key)) or 0 for t in its]
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
    its = [(t, _num(run.it(t).get("pairs/mean_chosen_length")), _num(run.it(t).get("pairs/mean_rejected_length")))
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
        y = _num(r.get(key))
        if y is None:
            continue
        xs.append(_num(r.get("step")) or float(i + 1))
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


PLOTS: list[Callable[[Run], Plot]] = [plot_agreement, plot_win_rates, plot_answer_length, plot_score_hist,
                                      plot_pairs, plot_pair_lengths, plot_dpo, plot_sft]


def make_plots(run: Run) -> list[Plot]:
    import matplotlib

    out = []
    with matplotlib.rc_context(STYLE):
        for fn in PLOTS:
            try:
                out.append(fn(run))
            except Exception as e:  # noqa: BLE001 - one bad plot must not cost the whole report
                name = fn.__name__.removeprefix("plot_")
                _warn(f"plot {name} failed: {type(e).__name__}: {e}")
                out.append(Plot(name, name.replace("_", " "), note=f"Plot failed: {type(e).__name__}: {e}"))
    return out


# --- examples ----------------------------------------------------------------------------------------

@dataclass
class AnswerExample:
    id: str
    category: str
    prompt: str
    answers: dict[str, dict]  # model -> answers row
    verdicts: list[str]  # human-readable head-to-head outcomes for this prompt


def answer_examples(run: Run, n: int = EVAL_EXAMPLES) -> list[AnswerExample]:
    ev = os.path.join(run.dir, "eval")
    answers: dict[str, dict[str, dict]] = {}
    order: list[str] = []
    for name in _listdir(ev):
        m = re.fullmatch(r"answers_(.+)\.jsonl", name)
        if not m:
            continue
        rows = {}
        for r in _iter_jsonl(os.path.join(ev, name)):
            rid = str(r.get("id"))
            rows[rid] = r
            if rid not in order:
                order.append(rid)
        if rows:
            answers[m.group(1)] = rows
    if not answers:
        return []
    models = sorted(answers, key=model_key)
    # Prompts every model answered first, one per category first, in file order.
    ids = sorted(order, key=lambda i: -sum(i in answers[m] for m in models))
    picked, cats = [], set()
    for i in ids:
        cat = next((answers[m][i].get("category") for m in models if i in answers[m]), None)
        if cat not in cats:
            picked.append(i)
            cats.add(cat)
        if len(picked) == n:
            break
    for i in ids:
        if len(picked) >= n:
            break
        if i not in picked:
            picked.append(i)

    h2h = {}
    for name in _listdir(ev):
        m = re.fullmatch(r"h2h_(.+)_vs_(.+)\.jsonl", name)
        if m:
            h2h[(m.group(1), m.group(2))] = {str(r.get("id")): r for r in _iter_jsonl(os.path.join(ev, name))}

    out = []
    for i in picked:
        first = next(answers[m][i] for m in models if i in answers[m])
        verdicts = []
        for (x, y), rows in sorted(h2h.items(), key=lambda kv: (model_key(kv[0][0]), model_key(kv[0][1]))):
            r = rows.get(i)
            if r:
                verdicts.append(f"{x} vs {y}: {x} shown first → {_winner(r.get('verdict_xy'), x, y)}; "
                                f"{y} shown first → {_winner(r.get('verdict_yx'), y, x)}")
        out.append(AnswerExample(i, str(first.get("category") or ""), str(first.get("prompt") or ""),
                                 {m: answers[m][i] for m in models if i in answers[m]}, verdicts))
    return out


def _winner(verdict: Any, a: str, b: str) -> str:
    return {"A": f"{a} wins", "B": f"{b} wins", "tie": "tie"}.get(verdict, "no verdict")


@dataclass
class PairExample:
    iteration: int
    pair: dict
    judgment_chosen: dict | None
    judgment_rejected: dict | None


def pair_examples(run: Run, per_iteration: int = PAIR_EXAMPLES_PER_ITERATION) -> list[PairExample]:
    out = []
    for t in run.iterations:
        it = os.path.join(run.dir, f"iter_{t}")
        pairs = list(_iter_jsonl(os.path.join(it, "pairs.jsonl")))
        if not pairs:
            continue

        def margin(p: dict) -> float:
            a, b = _num(p.get("score_chosen")), _num(p.get("score_rejected"))
            return (a - b) if a is not None and b is not None else 0.0

        picked = sorted(pairs, key=lambda p: (-margin(p), str(p.get("id"))))[:per_iteration]
        wanted = {str(p.get(k)) for p in picked for k in ("chosen_id", "rejected_id")}
        found: dict[str, dict] = {}
        for j in _iter_jsonl(os.path.join(it, "judgments.jsonl")):
            cid = str(j.get("candidate_id"))
            if cid in wanted:
                best = found.get(cid)
                # One justification per candidate: the first with a parsed score, else the first.
                if best is None or (best.get("score") is None and j.get("score") is not None):
                    found[cid] = j
        for p in picked:
            out.append(PairExample(t, p, found.get(str(p.get("chosen_id"))), found.get(str(p.get("rejected_id")))))
    return out


# --- HTML --------------------------------------------------------------------------------------------

CSS = """
:root { --fg:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff; --accent:#4c72b0;
  --zebra:#f9fafb; --good:#2f855a; --bad:#c53030; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin:0; background:var(--bg); color:var(--fg); line-height:1.5; font-size:15px;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif; }
.container { max-width: 1120px; margin: 0 auto; padding: 28px 24px 64px; }
header.top { background: linear-gradient(135deg,#1e3a5f,#4c72b0); color:#fff; }
header.top .container { padding-top: 28px; padding-bottom: 24px; }
header.top h1 { margin:0 0 4px; font-size: 26px; letter-spacing: -0.01em; }
header.top .sub { opacity: .85; font-size: 14px; }
header.top code { background: rgba(255,255,255,.15); color:#fff; }
nav.toc { display:flex; flex-wrap:wrap; gap:6px 8px; margin-top:16px; }
nav.toc a { color:#fff; text-decoration:none; font-size:13px; padding:3px 10px; border-radius:999px;
  background: rgba(255,255,255,.14); }
nav.toc a:hover { background: rgba(255,255,255,.28); }
h2 { font-size: 21px; margin: 40px 0 12px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
p.note, .muted { color: var(--muted); font-size: 13.5px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 12.5px; }
code { background:#eef1f5; padding:1px 5px; border-radius:4px; }
.stats { display:grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap:12px; margin: 14px 0; }
.stat { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.stat .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.stat .v { font-size:20px; font-weight:600; margin-top:2px; overflow-wrap:anywhere; }
.stat .d { color:var(--muted); font-size:12.5px; }
dl.meta { display:grid; grid-template-columns: max-content 1fr; gap:4px 16px; margin: 8px 0 0;
  background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 16px; }
dl.meta dt { color:var(--muted); }
dl.meta dd { margin:0; overflow-wrap:anywhere; }
details { background:var(--card); border:1px solid var(--line); border-radius:10px; margin: 12px 0; }
details > summary { cursor:pointer; padding:10px 16px; font-weight:600; }
details > pre { margin:0; border-top:1px solid var(--line); border-radius: 0 0 10px 10px; max-height: 520px; overflow:auto; }
.table-wrap { overflow-x:auto; background:var(--card); border:1px solid var(--line); border-radius:10px; margin: 8px 0 16px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { padding: 6px 12px; text-align: right; border-bottom: 1px solid var(--line); white-space: nowrap; }
td { white-space: normal; overflow-wrap: anywhere; max-width: 420px; }
th:first-child, td:first-child { text-align: left; }
td:first-child:not(.key) { white-space: normal; min-width: 160px; }
thead th { background:#f3f4f6; font-weight:600; position: sticky; top: 0; }
tbody tr:nth-child(even) td { background: var(--zebra); }
tbody tr:last-child td { border-bottom: none; }
tr.group td { background:#eef2f8 !important; color:#1e3a5f; font-weight:600; font-size:12.5px; text-align:left;
  text-transform: uppercase; letter-spacing: .04em; }
td.key { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
table.text td, table.text th { text-align: left; white-space: normal; }
.table-wrap.compact { width: fit-content; min-width: min(560px, 100%); max-width: 100%; }
th { white-space: normal; vertical-align: bottom; }
.plots { display:grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
figure.plot { margin:0; background:var(--card); border:1px solid var(--line); border-radius:10px; padding: 12px; }
figure.plot img { width:100%; height:auto; display:block; }
figure.plot figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
.plot-notes { background:var(--card); border:1px dashed #cbd5e1; border-radius:10px; padding: 12px 16px;
  margin-top: 16px; color: var(--muted); font-size: 13.5px; }
.plot-notes ul { margin: 4px 0 0; padding-left: 20px; }
.plot-notes li b { color: var(--fg); font-weight: 600; }
.card { background:var(--card); border:1px solid var(--line); border-radius:12px; padding: 16px 18px; margin: 14px 0;
  box-shadow: 0 1px 2px rgba(0,0,0,.03); }
.card .head { display:flex; flex-wrap:wrap; align-items:baseline; gap: 8px; margin-bottom: 8px; }
.card .head .title { font-weight:600; }
.tag { display:inline-block; font-size:11.5px; padding:1px 8px; border-radius:999px; background:#eef2f8; color:#1e3a5f; }
.tag.good { background:#e6f4ea; color:var(--good); }
.tag.bad { background:#fdecec; color:var(--bad); }
.label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; margin: 10px 0 4px; }
.label .tag { text-transform:none; letter-spacing:0; margin-left: 4px; }
pre.text { white-space: pre-wrap; overflow-wrap: anywhere; background:#f8fafc; border:1px solid var(--line);
  border-radius:8px; padding:10px 12px; margin:0; max-height: 360px; overflow:auto; font-size: 13.5px;
  font-family: inherit; line-height: 1.45; }
details > pre.text { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  font-size: 12.5px; max-height: 520px; }
pre.prompt { background:#f3f6fb; }
pre.judgment { background:#fffbeb; border-color:#f5e6b8; }
.grid { display:grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 12px; }
.grid.two { grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); }
.col { min-width: 0; }
.col .meta { color:var(--muted); font-size:12px; margin-top:4px; }
ul.verdicts { margin: 10px 0 0; padding-left: 18px; color: var(--muted); font-size: 13px; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 48px; }
"""


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def html_table(t: Table) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.rows):
        if i in t.groups:
            body.append(f'<tr class="group"><td colspan="{len(t.header)}">{esc(t.groups[i])}</td></tr>')
        cells = []
        for j, c in enumerate(row):
            cls = []
            if j == 0 and t.code_first:
                cls.append("key")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{esc(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    wrap_cls = "table-wrap" + (" compact" if t.compact else "")
    table_cls = ' class="text"' if t.text else ""
    return (f'<div class="{wrap_cls}"><table{table_cls}><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _stats(run: Run) -> list[tuple[str, str, str]]:
    """Headline numbers: (label, value, detail)."""
    out = [("iterations", str(len(run.iterations)) if run.iterations else "0",
            f"configured: {fmt(run.config.get('iterations'))}")]
    kept = [run.it(t).get("pairs/kept") for t in run.iterations]
    if kept:
        out.append(("pairs per iteration", " / ".join(fmt(k) for k in kept),
                    "iter " + " / ".join(str(t) for t in run.iterations)))
    sft_loss = run.sft.get("sft/loss")
    if sft_loss is not None:
        out.append(("SFT final loss", fmt(sft_loss), f"from {fmt(run.sft.get('sft/first_loss'))}, "
                    f"{fmt(run.sft.get('sft/steps'))} steps"))
    for source, pm in (run.eval.get("judge_agreement") or {}).items():
        if isinstance(pm, dict) and pm:
            ms = sorted(pm, key=model_key)
            out.append((f"judge agreement ({source})", " → ".join(pct((pm[m] or {}).get("accuracy"), 0) for m in ms),
                        " → ".join(ms)))
            break
    wr = {k: v for k, v in (run.eval.get("win_rate") or {}).items()
          if isinstance(v, dict) and _num(v.get("win_rate")) is not None}
    if wr:
        # The newest model against the oldest rival (M_T vs M1 is the paper's headline comparison).
        k = max(wr, key=lambda k: (_comparison_order(k)[0], -_comparison_order(k)[1][0]))
        out.append((f"win rate {comparison_label(k)}", pct(wr[k].get("win_rate")),
                    f"95% CI {ci(wr[k].get('win_rate_ci95'))}, LC {pct(wr[k].get('length_controlled_win_rate'))}"))
    return out


def render_html(run: Run, plots: list[Plot], answers: list[AnswerExample], pair_ex: list[PairExample],
                generated: str) -> str:
    titles = dict(SECTIONS)
    descs = model_descriptions(run)
    parts: list[str] = []
    add = parts.append
    name = os.path.basename(os.path.abspath(run.dir))
    add("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>srlm report: {esc(name)}</title><style>{CSS}</style></head><body>")
    add('<header class="top"><div class="container">')
    add(f"<h1>Self-Rewarding LM run: {esc(name)}</h1>")
    add(f'<div class="sub"><code>{esc(os.path.abspath(run.dir))}</code> · report generated {esc(generated)}</div>')
    add('<nav class="toc">' + "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title in SECTIONS) + "</nav>")
    add('</div></header><main class="container">')

    # Run
    add(f'<section id="run"><h2>{esc(titles["run"])}</h2>')
    add('<div class="stats">' + "".join(
        f'<div class="stat"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div><div class="d">{esc(d)}</div></div>'
        for k, v, d in _stats(run)) + "</div>")
    meta = [("run directory", f"<code>{esc(os.path.abspath(run.dir))}</code>"),
            ("metrics updated", esc(_mtime(os.path.join(run.dir, "metrics.json")))),
            ("report generated", esc(generated)),
            ("base model", esc((run.config.get("model") or {}).get("name_or_path", "-")
                               if isinstance(run.config.get("model"), dict) else "-")),
            ("seed", esc(fmt(run.config.get("seed"))))]
    add('<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta) + "</dl>")
    add("<h3>Models</h3>")
    add(html_table(Table(["model", "what it is"], [[m, descs.get(m, "")] for m in run.models], compact=True,
                         text=True)))
    if run.config_text is not None:
        add(f"<details><summary>Resolved config (config.yaml)</summary><pre class=\"text\">{esc(run.config_text)}"
            "</pre></details>")
    else:
        add('<p class="note">No config.yaml in the run directory.</p>')
    add("</section>")

    # Iteration metrics
    add(f'<section id="iterations"><h2>{esc(titles["iterations"])}</h2>')
    t = iteration_table(run)
    if t:
        add('<p class="note">Every metric the stages recorded in <code>metrics.json</code>, one column per '
            'iteration; "-" means missing or null.</p>')
        add(html_table(t))
    else:
        add('<p class="note">No iteration has run yet.</p>')
    add("</section>")

    # SFT
    add(f'<section id="sft"><h2>{esc(titles["sft"])}</h2>')
    t = sft_table(run)
    add(html_table(t) if t else '<p class="note">No SFT metrics (SFT has not finished).</p>')
    add("</section>")

    # Evaluation
    add(f'<section id="evaluation"><h2>{esc(titles["evaluation"])}</h2>')
    if not run.eval:
        add('<p class="note">No evaluation results: eval was disabled (<code>eval.enabled=false</code> or '
            '<code>--no-eval</code>) or has not run. Run <code>srlm eval DIR</code> to add them.</p>')
    add("<h3>Judge-human agreement</h3>")
    tables = agreement_tables(run)
    if tables:
        for source, tb in tables:
            add(f'<p class="note">Human preference set <code>{esc(source)}</code>; one column per model, as in '
                "the paper's Table 4.</p>")
            add(html_table(tb))
    else:
        add('<p class="note">-</p>')
    add("<h3>Answer length</h3>")
    tb = length_table(run)
    add(html_table(tb) if tb else '<p class="note">-</p>')
    add("<h3>Head-to-head win rates</h3>")
    tb = win_rate_table(run)
    if tb:
        add('<p class="note">Each prompt judged in both orders; win rate counts ties as half; "first position '
            'picked" is how often the judge chose whichever answer was shown first (0.5 = no position bias).</p>')
        add(html_table(tb))
    else:
        add('<p class="note">-</p>')
    add("</section>")

    # Plots
    add(f'<section id="plots"><h2>{esc(titles["plots"])}</h2><div class="plots">')
    for p in plots:
        if p.png:
            b64 = base64.b64encode(p.png).decode("ascii")
            add(f'<figure class="plot" id="plot-{esc(p.name)}"><img src="data:image/png;base64,{b64}" '
                f'alt="{esc(p.title)}"><figcaption>{esc(p.caption)}</figcaption></figure>')
    add("</div>")
    notes = [p for p in plots if not p.png]
    if notes:
        add('<div class="plot-notes"><b>Not plotted</b><ul>' + "".join(
            f"<li><b>{esc(p.title)}</b>: {esc(p.note)}</li>" for p in notes) + "</ul></div>")
    add("</section>")

    # Example answers
    add(f'<section id="answers"><h2>{esc(titles["answers"])}</h2>')
    if answers:
        add('<p class="note">Held-out eval prompts with every evaluated model\'s answer side by side.</p>')
        for ex in answers:
            add('<div class="card"><div class="head">'
                f'<span class="title">{esc(ex.id)}</span>'
                + (f'<span class="tag">{esc(ex.category)}</span>' if ex.category else "") + "</div>")
            add(f'<div class="label">prompt</div><pre class="text prompt">{esc(clip(ex.prompt))}</pre>')
            add('<div class="grid">')
            for m, r in ex.answers.items():
                meta_bits = [f"{fmt(r.get('num_tokens'))} tokens", f"{len(str(r.get('answer') or '')):,} chars"]
                if r.get("finish_reason") == "length":
                    meta_bits.append("cut at the token limit")
                add(f'<div class="col"><div class="label">{esc(m)}</div>'
                    f'<pre class="text">{esc(clip(r.get("answer")))}</pre>'
                    f'<div class="meta">{esc(" · ".join(meta_bits))}</div></div>')
            add("</div>")
            if ex.verdicts:
                add('<ul class="verdicts">' + "".join(f"<li>{esc(v)}</li>" for v in ex.verdicts) + "</ul>")
            add("</div>")
    else:
        add('<p class="note">No eval answers (<code>eval/answers_*.jsonl</code>) in this run.</p>')
    add("</section>")

    # Example pairs
    add(f'<section id="pairs"><h2>{esc(titles["pairs"])}</h2>')
    if pair_ex:
        add(f'<p class="note">Per iteration, the {PAIR_EXAMPLES_PER_ITERATION} pairs with the largest score margin: '
            "the prompt, the chosen (highest mean score) and rejected (lowest) candidates, and one of the "
            "model's own rubric judgments of each.</p>")
        for ex in pair_ex:
            p = ex.pair
            add('<div class="card"><div class="head">'
                f'<span class="title">iteration {ex.iteration}</span><span class="muted">{esc(p.get("id"))}</span>'
                f'<span class="tag">margin {esc(fmt(_margin(p)))}</span></div>')
            add(f'<div class="label">prompt</div><pre class="text prompt">{esc(clip(p.get("prompt")))}</pre>')
            add('<div class="grid two">')
            for side, cls, text_key, score_key, j in (
                    ("chosen", "good", "chosen", "score_chosen", ex.judgment_chosen),
                    ("rejected", "bad", "rejected", "score_rejected", ex.judgment_rejected)):
                add(f'<div class="col"><div class="label">{side} '
                    f'<span class="tag {cls}">mean score {esc(fmt(p.get(score_key)))}</span></div>'
                    f'<pre class="text">{esc(clip(p.get(text_key)))}</pre>')
                add(f'<div class="label">a judgment of the {side} response{_judgment_score(j)}</div>')
                add(f'<pre class="text judgment">{esc(clip(j.get("text")) if j else "(no judgment found)")}</pre></div>')
            add("</div></div>")
    else:
        add('<p class="note">No preference pairs in this run yet.</p>')
    add("</section>")

    add(f'<footer>Generated by <code>srlm report</code> from <code>{esc(os.path.abspath(run.dir))}</code>. '
        "Self-contained: no scripts or external resources.</footer>")
    add("</main></body></html>\n")
    return "\n".join(parts)


def _margin(p: dict) -> float | None:
    a, b = _num(p.get("score_chosen")), _num(p.get("score_rejected"))
    return a - b if a is not None and b is not None else None


def _judgment_score(j: dict | None) -> str:
    if not j:
        return ""
    if j.get("score") is not None:
        return f" (score {esc(fmt(j.get('score')))})"
    return f" (unparsed: {esc(j.get('error') or 'no score')})"


def _mtime(path: str) -> str:
    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y-%m-%d %H:%M")
    except OSError:
        return "-"


# --- Markdown ----------------------------------------------------------------------------------------

def _md_cell(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def md_table(t: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in t.header) + " |",
             "|" + "|".join([":---"] + [":---" if t.text else "---:"] * (len(t.header) - 1)) + "|"]
    for i, row in enumerate(t.rows):
        if i in t.groups:
            lines.append("| **" + _md_cell(t.groups[i]) + "** |" + " |" * (len(t.header) - 1))
        cells = [f"`{c}`" if j == 0 and t.code_first else _md_cell(c) for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def md_block(text: Any, lang: str = "text") -> str:
    text = "" if text is None else str(text)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}\n"


def render_md(run: Run, plots: list[Plot], answers: list[AnswerExample], pair_ex: list[PairExample],
              generated: str) -> str:
    titles = dict(SECTIONS)
    out: list[str] = []
    add = out.append
    name = os.path.basename(os.path.abspath(run.dir))
    add(f"# Self-Rewarding LM run: {name}\n")
    add(f"Run directory `{os.path.abspath(run.dir)}`, report generated {generated}.\n")

    add(f"## {titles['run']}\n")
    for k, v, d in _stats(run):
        add(f"- **{k}**: {v} ({d})")
    add("")
    add(md_table(Table(["model", "what it is"], [[m, d] for m, d in model_descriptions(run).items()], text=True)))
    if run.config_text is not None:
        add("Resolved config (`config.yaml`):\n")
        add(md_block(run.config_text.rstrip("\n"), "yaml"))

    add(f"## {titles['iterations']}\n")
    t = iteration_table(run)
    add(md_table(t) if t else "No iteration has run yet.\n")

    add(f"## {titles['sft']}\n")
    t = sft_table(run)
    add(md_table(t) if t else "No SFT metrics (SFT has not finished).\n")

    add(f"## {titles['evaluation']}\n")
    if not run.eval:
        add("No evaluation results (eval disabled or not run). Run `srlm eval DIR` to add them.\n")
    add("### Judge-human agreement\n")
    tables = agreement_tables(run)
    for source, tb in tables:
        add(f"Human preference set `{source}`:\n")
        add(md_table(tb))
    if not tables:
        add("-\n")
    add("### Answer length\n")
    tb = length_table(run)
    add(md_table(tb) if tb else "-\n")
    add("### Head-to-head win rates\n")
    tb = win_rate_table(run)
    add(md_table(tb) if tb else "-\n")

    add(f"## {titles['plots']}\n")
    for p in plots:
        if p.png:
            add(f"### {p.title}\n\n![{p.title}]({p.name}.png)\n\n{p.caption}\n")
    for p in plots:
        if not p.png:
            add(f"- *{p.title}*: not plotted. {p.note}")
    add("")

    add(f"## {titles['answers']}\n")
    if not answers:
        add("No eval answers in this run.\n")
    for ex in answers:
        add(f"### {ex.id}" + (f" ({ex.category})" if ex.category else "") + "\n")
        add("Prompt:\n")
        add(md_block(clip(ex.prompt)))
        for m, r in ex.answers.items():
            add(f"**{m}** ({fmt(r.get('num_tokens'))} tokens, finish: {fmt(r.get('finish_reason'))}):\n")
            add(md_block(clip(r.get("answer"))))
        for v in ex.verdicts:
            add(f"- {v}")
        add("")

    add(f"## {titles['pairs']}\n")
    if not pair_ex:
        add("No preference pairs in this run yet.\n")
    for ex in pair_ex:
        p = ex.pair
        add(f"### Iteration {ex.iteration}: {p.get('id')} (margin {fmt(_margin(p))})\n")
        add("Prompt:\n")
        add(md_block(clip(p.get("prompt"))))
        for side, j in (("chosen", ex.judgment_chosen), ("rejected", ex.judgment_rejected)):
            add(f"**{side}** (mean score {fmt(p.get('score_' + side))}):\n")
            add(md_block(clip(p.get(side))))
            js = "" if not j else (f", score {fmt(j.get('score'))}" if j.get("score") is not None
                                   else f", unparsed: {j.get('error') or 'no score'}")
            add(f"A judgment of the {side} response{js}:\n")
            add(md_block(clip(j.get("text")) if j else "(no judgment found)"))
    return "\n".join(out).rstrip("\n") + "\n"


# --- entry point -------------------------------------------------------------------------------------

def build(run_dir: str) -> str:
    """Write DIR/report/index.html (self-contained) and DIR/report/report.md with its PNG plots;
    return the path of index.html."""
    run = load_run(run_dir)
    out_dir = os.path.join(run_dir, REPORT_DIR)
    os.makedirs(out_dir, exist_ok=True)
    plots = make_plots(run)
    for p in plots:
        png = os.path.join(out_dir, f"{p.name}.png")
        if p.png:
            with open(png, "wb") as f:
                f.write(p.png)
        elif os.path.exists(png):
            os.remove(png)  # a plot from an earlier build that no longer has data
    answers = answer_examples(run)
    pair_ex = pair_examples(run)
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    md = os.path.join(out_dir, "report.md")
    index = os.path.join(out_dir, "index.html")
    atomic_write_text(md, render_md(run, plots, answers, pair_ex, generated))
    atomic_write_text(index, render_html(run, plots, answers, pair_ex, generated))
    return index
