"""The report's tables, built once from a `Run` and laid out by both templates (HTML, Markdown).

Cells are already text (formatting.fmt): a missing value is "-". A table without rows is shown
as its title and its `empty` note, so a partial run still shows where the numbers will go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .formatting import ci, comparison_label, comparison_order, fmt, model_key, pct
from .load import WIN_RATE_AT_EQUAL_LENGTH, Run


@dataclass
class Table:
    title: str  # a sub-heading; "" for none
    columns: list[str]
    rows: list[list[str]]
    note: str = ""  # shown above the rows; `backticks` mark code
    empty: str = "-"  # shown instead of the table when it has no rows
    groups: dict[int, str] = field(default_factory=dict)  # row index -> group heading shown before it
    key_column: bool = False  # the first column holds metric keys (monospace)
    compact: bool = False  # as narrow as its content (key/value tables)
    text: bool = False  # left-aligned, wrapping cells (prose rather than numbers)


# Stages of an iteration, in the order they run (paper section 3), for grouping metric keys.
STAGE_ORDER = ["prompts", "sample", "judge", "pairs", "dpo", "iteration"]
STAGE_TITLES = {"prompts": "1. prompts (self-instruct)", "sample": "2. sample (candidates)",
                "judge": "3. judge (0-5 rubric)", "pairs": "4. pairs (preference pairs)",
                "dpo": "5. DPO", "iteration": "iteration"}


def model_descriptions(run: Run) -> dict[str, str]:
    model = run.config.get("model")
    base = model.get("name_or_path") if isinstance(model, dict) else None
    out = {}
    for m in run.models:
        k = model_key(m)[0]
        if m == "M0":
            out[m] = f"base model{': ' + str(base) if base else ''}"
        elif m == "M1":
            out[m] = "SFT copy of M0 (SFT disabled)" if run.sft.get("sft/skipped") else "M0 + SFT on IFT + EFT seed data"
        elif k < 10 ** 9:
            t = k - 1  # iteration t trains M_t into M_{t+1}
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


def models_table(run: Run) -> Table:
    return Table("Models", ["model", "what it is"], [[m, d] for m, d in model_descriptions(run).items()],
                 compact=True, text=True)


def iteration_table(run: Run) -> Table:
    keys: list[str] = []
    for t in run.iterations:
        keys += [k for k in run.it(t) if k not in keys]

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
    return Table("", ["metric"] + [f"iter_{t}" for t in run.iterations], rows,
                 note='Every metric the stages recorded in `metrics.json`, one column per iteration; '
                      '"-" means missing or null.',
                 empty="No iteration has recorded metrics yet.", groups=groups, key_column=True)


def sft_table(run: Run) -> Table:
    return Table("", ["metric", "value"], [[k, fmt(v)] for k, v in run.sft.items()],
                 empty="No SFT metrics (SFT has not finished).", key_column=True, compact=True)


# (key in an agreement summary, row label, formatter), in display order; other keys follow.
AGREEMENT_ROWS: list[tuple[str, str, Callable[[Any], str]]] = [
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


def agreement_tables(run: Run) -> list[Table]:
    """One table per human-preference set: a row per statistic, a column per model."""
    out = []
    for source, per_model in (run.eval.get("judge_agreement") or {}).items():
        if not isinstance(per_model, dict) or not per_model:
            continue
        models = sorted(per_model, key=model_key)
        summaries = {m: per_model[m] if isinstance(per_model[m], dict) else {} for m in models}
        known = [r for r in AGREEMENT_ROWS if any(r[0] in summaries[m] for m in models)]
        extra = list(dict.fromkeys(k for m in models for k in summaries[m] if k not in {r[0] for r in AGREEMENT_ROWS}))
        rows = [[label] + [f(summaries[m].get(k)) for m in models] for k, label, f in known]
        rows += [[k] + [fmt(summaries[m].get(k)) for m in models] for k in extra]
        out.append(Table(f"Judge-human agreement ({source})", ["judge-human agreement"] + models, rows,
                         note=f"Human preference set `{source}`; one column per model, as in the paper's Table 4."))
    return out or [Table("Judge-human agreement", [], [])]


LENGTH_COLS = [("mean_chars", "mean chars"), ("median_chars", "median chars"),
               ("mean_tokens", "mean tokens"), ("median_tokens", "median tokens")]


def length_table(run: Run) -> Table:
    lengths = {m: v for m, v in (run.eval.get("length") or {}).items() if isinstance(v, dict)}
    models = sorted(lengths, key=model_key)
    extra = [k for k in dict.fromkeys(k for m in models for k in lengths[m]) if k not in dict(LENGTH_COLS)]
    cols = LENGTH_COLS + [(k, k) for k in extra]
    return Table("Answer length", ["model"] + [c[1] for c in cols],
                 [[m] + [fmt(lengths[m].get(k)) for k, _ in cols] for m in models])


def _win_cells(key: str, r: dict) -> list[str]:
    """comparison, W/T/L, compared/prompts, win rate, CI, win rate at equal length."""
    return [comparison_label(key), f"{fmt(r.get('wins'))} / {fmt(r.get('ties'))} / {fmt(r.get('losses'))}",
            f"{fmt(r.get('compared'))} / {fmt(r.get('prompts'))}", pct(r.get("win_rate")),
            ci(r.get("win_rate_ci95")), pct(r.get(WIN_RATE_AT_EQUAL_LENGTH))]


def win_rate_table(run: Run) -> Table:
    wr = {k: v for k, v in (run.eval.get("win_rate") or {}).items() if isinstance(v, dict)}
    rows = []
    for k in sorted(wr, key=comparison_order):
        r = wr[k]
        rows.append(_win_cells(k, r) + [pct(r.get("position_bias_first")), fmt(r.get("unparsed_verdicts")),
                                        pct(r.get("mean_relative_length_diff"))])
    return Table("Head-to-head win rates",
                 ["comparison", "wins / ties / losses", "compared / prompts", "win rate", "95% CI",
                  "win rate at equal length (logistic fit)", "first position picked", "unparsed verdicts",
                  "relative length difference"], rows,
                 note='Each prompt judged in both orders; win rate counts ties as half; "win rate at equal length" '
                      "reads a logistic fit of the outcome on the relative length difference at zero difference; "
                      '"first position picked" is how often the judge chose whichever answer was shown first '
                      "(0.5 = no position bias).")


def judge_vs_baselines_table(run: Run) -> Table:
    """Every judge figure beside what it must beat: per human set, each model's agreement
    (unparsed counted wrong), the length heuristic, and the pairwise judge's swap consistency."""
    rows = []
    agreement = run.eval.get("judge_agreement") or {}
    pairwise = run.eval.get("pairwise_agreement") or {}
    for source in sorted(set(agreement) | set(run.eval.get("baselines") or {})):
        length = run.judge_baselines(source).get("length", {})
        per_model = agreement.get(source) if isinstance(agreement.get(source), dict) else {}
        pw = pairwise.get(source) if isinstance(pairwise.get(source), dict) else {}
        for m in sorted(set(per_model) | set(pw), key=model_key):
            a = per_model.get(m) if isinstance(per_model.get(m), dict) else {}
            p = pw.get(m) if isinstance(pw.get(m), dict) else {}
            rows.append([source, m, pct(a.get("accuracy")), pct(length.get("accuracy")),
                         pct(a.get("parse_failure_rate")), pct(p.get("accuracy")), pct(p.get("consistency")),
                         pct(p.get("first_position_rate"))])
        if not per_model and not pw:
            rows.append([source, "-", "-", pct(length.get("accuracy")), "-", "-", "-", "-"])
    return Table("Judge vs. baselines", ["human set", "model", "rubric judge accuracy", "length heuristic",
                                         "parse failures", "pairwise judge accuracy", "swap consistency",
                                         "first position picked"], rows,
                 note="Accuracy counts unparsed and tied judgments as wrong. The length heuristic says the longer "
                      "response wins; a judge that does not beat it carries less signal than length. Swap "
                      "consistency: the pairwise judge names the same response with A and B swapped.")


def pointwise_win_rate_table(run: Run) -> Table:
    wr = {k: v for k, v in (run.eval.get("win_rate_pointwise") or {}).items() if isinstance(v, dict)}
    rows = []
    for k in sorted(wr, key=comparison_order):
        r = wr[k]
        rows.append(_win_cells(k, r) + [fmt(r.get("mean_score_x")), fmt(r.get("mean_score_y")),
                                        fmt(r.get("judge_model"))])
    return Table("Head-to-head win rates, pointwise judge",
                 ["comparison", "wins / ties / losses", "compared / prompts", "win rate", "95% CI",
                  "win rate at equal length (logistic fit)", "mean score X", "mean score Y", "judge"], rows,
                 note="Both answers scored alone with the rubric judge (no position bias); X wins a prompt when "
                      "its mean score is higher.")


IFEVAL_COLS = [("ifeval/prompt_strict", "prompt strict"), ("ifeval/inst_strict", "instruction strict"),
               ("ifeval/prompt_loose", "prompt loose"), ("ifeval/inst_loose", "instruction loose"),
               ("ifeval/score", "score (avg prompt/inst strict)")]


def ifeval_table(run: Run) -> Table:
    res = {m: v for m, v in (run.eval.get("ifeval") or {}).items() if isinstance(v, dict)}
    rows = []
    for m in sorted(res, key=model_key):
        r = res[m]
        rows.append([m] + [f"{pct(r.get(k))} {ci(r.get(k + '_ci95'))}" for k, _ in IFEVAL_COLS]
                    + [fmt(r.get("ifeval/prompts")), fmt(r.get("ifeval/mean_response_chars")),
                       fmt(r.get("ifeval/truncated"))])
    return Table("IFEval (verifiable instructions, no judge)",
                 ["model"] + [c for _, c in IFEVAL_COLS] + ["prompts", "mean answer chars", "cut at the cap"], rows,
                 note="Greedy answers checked by lm-eval's IFEval checkers, with 95% bootstrap intervals over "
                      "prompts. IFEval punishes verbosity where an instruction limits length: read it with the "
                      "answer length.")
