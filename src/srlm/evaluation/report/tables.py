"""The report's tables, built once from a `Run` and laid out by both templates (HTML, Markdown).

Cells are already text (formatting.fmt): a missing value is "-". A table without rows is shown
as its title and its `empty` note, so a partial run still shows where the numbers will go.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

from .formatting import ci, ci_pts, comparison_label, comparison_order, fmt, model_key, num, pct, pts
from .load import WIN_RATE_AT_EQUAL_LENGTH, Run, warn


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


# Prompt sets of the IFEval breakdown (evaluate.ifeval_breakdown): metric prefix, label.
IFEVAL_SETS = [("ifeval/", "all prompts"), ("ifeval_heldout/", "held out of training: every instruction"),
               ("ifeval_trained/", "trained: every instruction trainable")]


def _with_ci(r: dict, key: str, delta: bool = False) -> str:
    """A rate (or a difference of rates) with its 95% interval."""
    if delta:
        return f"{pts(r.get(key))} {ci_pts(r.get(key + '_ci95'))}" if num(r.get(key)) is not None else "-"
    return f"{pct(r.get(key))} {ci(r.get(key + '_ci95'))}" if num(r.get(key)) is not None else "-"


def ifeval_delta_table(run: Run) -> Table:
    """Each model minus M0 and minus M1 on the same IFEval prompts, with paired intervals."""
    deltas = run.ifeval_deltas()
    rows, groups = [], {}
    sets = [(p, label) for p, label in IFEVAL_SETS
            if any(num(d.get(p + "delta_score")) is not None for d in deltas.values())]
    for prefix, label in sets:
        if len(sets) > 1:
            groups[len(rows)] = label
        for k in sorted(deltas, key=comparison_order):
            d = deltas[k]
            if num(d.get(prefix + "delta_score")) is None:
                continue
            rows.append([comparison_label(k), fmt(d.get(prefix + "paired_prompts")), pts(d.get(prefix + "delta_score")),
                         ci_pts(d.get(prefix + "delta_score_ci95")), _with_ci(d, prefix + "delta_prompt_strict", True),
                         _with_ci(d, prefix + "delta_inst_strict", True), _with_ci(d, prefix + "delta_score_loose", True),
                         f"{fmt(d.get(prefix + 'prompts_fixed'))} / {fmt(d.get(prefix + 'prompts_broken'))}"])
    return Table("IFEval change against M0 and M1 (same prompts, paired)",
                 ["comparison", "prompts", "Δ score", "95% CI (paired bootstrap)", "Δ prompt strict",
                  "Δ instruction strict", "Δ score loose", "prompts fixed / broken"], rows,
                 note="The newer model minus the older on the prompts both answered, in percentage points; the "
                      "interval resamples prompts with both models' answers together, so it is narrower than two "
                      "separate intervals would suggest. Fixed / broken: prompts whose every instruction the newer "
                      "model follows (strict) and the older does not, and the reverse.",
                 empty="No IFEval comparison: fewer than two models with IFEval results (`eval.ifeval`).", groups=groups)


def ifeval_split_table(run: Run) -> Table:
    """IFEval on the prompts held out of training vs the trained ones, per model."""
    res = {m: v for m, v in (run.eval.get("ifeval") or {}).items()
           if isinstance(v, dict) and any(str(k).startswith(("ifeval_heldout/", "ifeval_trained/")) for k in v)}
    deltas = run.ifeval_deltas()
    rows = []
    for m in sorted(res, key=model_key):
        r = res[m]
        d0 = deltas.get(f"{m}_vs_M0") or {}
        rows.append([m, fmt(r.get("ifeval_heldout/prompts")), _with_ci(r, "ifeval_heldout/score"),
                     fmt(r.get("ifeval_trained/prompts")), _with_ci(r, "ifeval_trained/score"),
                     _with_ci(r, "ifeval/score"), _with_ci(d0, "ifeval_heldout/delta_score", True),
                     _with_ci(d0, "ifeval_trained/delta_score", True)])
    return Table("IFEval on held-out vs trained instructions",
                 ["model", "held-out prompts", "held-out score", "trained prompts", "trained score", "all prompts",
                  "Δ held-out vs M0", "Δ trained vs M0"], rows,
                 note="Held out: prompts whose every instruction comes from a family never attached to a training "
                      "prompt (`prompts.holdout_families`); trained: prompts whose every instruction training could "
                      "reward. Prompts mixing both are in neither. A gain on trained prompts only is the checkers "
                      "being learned, not instruction following.",
                 empty="No held-out split: no instruction family was held out of training (prompts.holdout_families "
                       "empty), or srlm eval has not run since.")


def _heldout_families(run: Run) -> dict[str, str]:
    """{family: "yes" | "partly"} held out of training by the run's config; {} when none or unknown."""
    prompts = run.config.get("prompts")
    spec = prompts.get("holdout_families") if isinstance(prompts, dict) else None
    if not spec or not isinstance(spec, list):
        return {}
    try:
        from srlm.loop import verifier

        seed = run.config.get("seed") if isinstance(run.config.get("seed"), int) else 0
        held = verifier.heldout_ids([str(x) for x in spec], seed)
        out = {}
        for f in {verifier.family(i) for i in held}:
            ids = [i for i in verifier.instruction_ids() if verifier.family(i) == f]
            out[f] = "yes" if all(i in held for i in ids) else "partly"
        return out
    except Exception as e:  # noqa: BLE001 - the table still shows the accuracies
        warn(f"held-out families unknown: {type(e).__name__}: {e}")
        return {}


def ifeval_family_table(run: Run) -> Table:
    """Instruction-level accuracy (strict) per instruction family, one column per model."""
    per_model = {m: v["ifeval/by_family"] for m, v in (run.eval.get("ifeval") or {}).items()
                 if isinstance(v, dict) and isinstance(v.get("ifeval/by_family"), dict)}
    if not per_model and run.eval.get("ifeval"):  # evaluated before by_family was recorded
        from srlm.evaluation import ifeval

        per_model = {m: ifeval.by_family(rows) for m, rows in run.ifeval_rows().items()}
    models = sorted(per_model, key=model_key)
    families = sorted({f for v in per_model.values() for f in v})
    held = _heldout_families(run)

    def cell(m: str, f: str) -> dict:
        v = per_model[m].get(f)
        return v if isinstance(v, dict) else {}

    rows = []
    for f in families:
        n = next((cell(m, f).get("instructions") for m in reversed(models) if cell(m, f)), None)
        rows.append([f, fmt(n)] + ([held.get(f, "no")] if held else []) + [pct(cell(m, f).get("inst_strict")) for m in models])
    return Table("IFEval per instruction family", ["family", "instructions"] + (["held out"] if held else []) + models,
                 rows, note="Instruction-level accuracy (strict) per family of IFEval instructions (the id before "
                            "':'); a family with few instructions moves in large steps.",
                 empty="No IFEval results per family (`eval.ifeval` off, or srlm eval not run).")


def _correlations(x: list[float], y: list[float]) -> tuple[float | None, float | None]:
    """Pearson and Spearman correlation (scipy.stats); None for fewer than 3 points or a constant side."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    from scipy import stats

    return float(stats.pearsonr(x, y)[0]), float(stats.spearmanr(x, y)[0])


def judge_checker_agreement(run: Run) -> list[dict]:
    """Per iteration whose judgments record both the rubric self-judge's score (`judge_score`)
    and the checker's fraction of instructions followed (`verifier_score`): each candidate's
    judgments averaged first, then Pearson and Spearman over the candidates.
    Rows: {iteration, candidates, pearson, spearman, mean_judge, mean_checker, judge, checker}."""
    out = []
    for t in run.iterations:
        per: dict[str, tuple[float, list[float]]] = {}
        for r in run.judgments(t):
            v, j = num(r.get("verifier_score")), num(r.get("judge_score"))
            if v is None or j is None:
                continue
            per.setdefault(str(r.get("candidate_id")), (v, []))[1].append(j)
        if not per:
            continue
        judge = [statistics.fmean(js) for _, js in per.values()]
        checker = [v for v, _ in per.values()]
        r, rho = _correlations(judge, checker)
        out.append({"iteration": t, "candidates": len(per), "pearson": r, "spearman": rho,
                    "mean_judge": statistics.fmean(judge), "mean_checker": statistics.fmean(checker),
                    "judge": judge, "checker": checker})
    return out


def judge_checker_table(run: Run, rows: list[dict] | None = None) -> Table:
    rows = judge_checker_agreement(run) if rows is None else rows
    return Table("Does the judge see what the checker sees?",
                 ["iteration", "candidates", "Pearson r", "Spearman ρ", "mean self-judge score (0-5)",
                  "mean checker score (share followed)"],
                 [[f"iter_{r['iteration']}", fmt(r["candidates"]), fmt(r["pearson"]), fmt(r["spearman"]),
                   fmt(r["mean_judge"]), fmt(r["mean_checker"])] for r in rows],
                 note="On the same training candidates: the model's own rubric score (each candidate's judgments "
                      "averaged) against the share of its prompt's verifiable instructions it follows, by IFEval's "
                      "strict checkers. Near 0: the self-judge does not see what the checker rewards.",
                 empty="No judgment records both a checker verdict and a rubric score (only runs on verifiable "
                       "prompts with a rubric judge, judge.source rubric or hybrid, record both).")
