"""`srlm compare DIR... --out OUT`: several runs side by side, one page (same templates as the report).

For runs that share a seed and an evaluation set (e.g. one per training method), from each run's
config.yaml and metrics.json only:
- judge-human agreement per model and run, next to the length heuristic where recorded (eval group);
- head-to-head win rates each run measured (eval.win_rate);
- answer length per model, i.e. per iteration (eval.length);
- preference pairs kept per iteration (iter_<t> pairs/kept);
- wall time per iteration (iter_<t> iteration/wall_s) and in total;
- with --h2h-judge SPEC only (build_compare's h2h_judge), win rates of each run's final model
  against every other run's and against their common M1, all judged by the one judge SPEC,
  pointwise and pairwise (cross.py: it loads the judge and writes OUT/cross/, including
  win_rates.json). Without it no model is loaded and only the run directories are read.
Writes OUT/index.html (self-contained) and OUT/report.md with its PNG plots. A run is named by its
config.yaml `method`, else its directory name. Runs that differ in seed or evaluation set are
still compared, under a warning at the top of the page.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from typing import Any, Callable

from srlm.run.records import InputError

from .cross import COMMON, cross_win_rates
from .formatting import ci, comparison_label, comparison_order, fmt, model_key, num, pct, seconds
from .load import LENGTH_HEURISTIC, WIN_RATE_AT_EQUAL_LENGTH, Run, load_run, warn
from .plots import (Labeled, draw, plot_compare_agreement, plot_compare_answer_length, plot_compare_cross_win_rates,
                    plot_compare_pairs, plot_compare_wall_time, plot_compare_win_rates)
from .render import Page, build_sections, write_page
from .sections import Fact, Section
from .tables import Table, _win_cells

# What "the same evaluation" means: these config.yaml settings (and `seed`) must agree.
SHARED_SETTINGS = ["seed", "eval.prompts", "eval.max_prompts", "eval.human_prefs", "eval.max_human_pairs"]


def labels(runs: list[Run]) -> list[str]:
    """Each run's method; a method used by several runs gets its directory name added."""
    counts = Counter(r.method for r in runs)
    out = [r.method if counts[r.method] == 1 else f"{r.method} ({r.name})" for r in runs]
    seen: Counter = Counter()
    for i, label in enumerate(out):  # two runs of one method in equally named directories
        seen[label] += 1
        if seen[label] > 1:
            out[i] = f"{label} #{seen[label]}"
    return out


def _setting(run: Run, dotted: str) -> Any:
    v: Any = run.config
    for part in dotted.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


def differences(runs: list[Run]) -> list[str]:
    """The SHARED_SETTINGS on which the runs disagree, as 'setting (a; b)'."""
    out = []
    for key in SHARED_SETTINGS:
        values = [fmt(_setting(r, key)) for r in runs]
        if len(set(values)) > 1:
            out.append(f"`{key}` ({'; '.join(values)})")
    return out


def total_wall_s(run: Run) -> float | None:
    """SFT training time plus every iteration's wall time, as far as recorded (eval not included)."""
    parts = [num(run.sft.get("sft/runtime_s"))] + [num(run.it(t).get("iteration/wall_s")) for t in run.iterations]
    parts = [p for p in parts if p is not None]
    return sum(parts) if parts else None


# --- sections: each takes the [(method label, run)] list and returns a Section --------------------

def runs_section(runs: Labeled) -> Section:
    rows = []
    for label, run in runs:
        model = run.config.get("model")
        human = _setting(run, "eval.human_prefs")
        rows.append([label, run.path, fmt(run.config.get("seed")),
                     fmt(model.get("name_or_path") if isinstance(model, dict) else None),
                     f"{len(run.iterations)} / {fmt(run.config.get('iterations'))}",
                     fmt(_setting(run, "eval.prompts")),
                     ", ".join(map(str, human)) if isinstance(human, list) else fmt(human),
                     seconds(total_wall_s(run))])
    diff = differences([run for _, run in runs])
    intro = ("Warning: these runs differ in " + "; ".join(diff) + ", so their numbers are not directly comparable."
             if diff else "The runs share a seed and an evaluation set.")
    return Section("runs", "Runs", intro=intro, tables=[Table(
        "", ["method", "run directory", "seed", "base model", "iterations (done / configured)", "eval prompts",
             "human preference sets", "total wall time"], rows, text=True)])


def _sources(runs: Labeled) -> list[str]:
    return list(dict.fromkeys(s for _, run in runs for s, pm in (run.eval.get("judge_agreement") or {}).items()
                              if isinstance(pm, dict) and pm))


def agreement_section(runs: Labeled) -> Section:
    tables, plots = [], []
    for source in _sources(runs):
        per_run = {label: {m: v for m, v in ((run.eval.get("judge_agreement") or {}).get(source) or {}).items()
                           if isinstance(v, dict)} for label, run in runs}
        models = sorted({m for pm in per_run.values() for m in pm}, key=model_key)
        heuristic = {label: run.judge_baselines(source).get(LENGTH_HEURISTIC, {}).get("accuracy")
                     for label, run in runs}
        has_heuristic = any(v is not None for v in heuristic.values())
        rows = [[label] + [pct(per_run[label].get(m, {}).get("accuracy")) for m in models]
                + ([pct(heuristic[label])] if has_heuristic else []) for label, _ in runs]
        tables.append(Table(f"Judge-human agreement ({source})",
                            ["method"] + models + (["length heuristic"] if has_heuristic else []), rows,
                            note=f"Accuracy on the human preference set `{source}`: how often the model, judging "
                                 "with the rubric, prefers the human-preferred response (ties and unparsed count "
                                 "as wrong)." + (" The length heuristic always prefers the longer response; a judge "
                                                 "that does not beat it may be judging length."
                                                 if has_heuristic else "")))
        plots.append(draw(plot_compare_agreement, runs, source,
                          "compare_agreement_" + re.sub(r"[^A-Za-z0-9_.-]", "_", source)))
    if not tables:
        tables = [Table("Judge-human agreement", [], [],
                        empty="No run has judge-human agreement results (the `eval` group of metrics.json).")]
    return Section("agreement", "Judge-human agreement", tables=tables, plots=plots)


def win_rate_section(runs: Labeled) -> Section:
    keys = sorted({k for _, run in runs for k, v in (run.eval.get("win_rate") or {}).items() if isinstance(v, dict)},
                  key=comparison_order)
    rows = []
    for k in keys:
        for label, run in runs:
            r = (run.eval.get("win_rate") or {}).get(k)
            if not isinstance(r, dict):
                continue
            rows.append([comparison_label(k), label,
                         f"{fmt(r.get('wins'))} / {fmt(r.get('ties'))} / {fmt(r.get('losses'))}",
                         pct(r.get("win_rate")), ci(r.get("win_rate_ci95")), pct(r.get(WIN_RATE_AT_EQUAL_LENGTH)),
                         pct(r.get("position_bias_first"))])
    return Section("win-rates", "Head-to-head win rates", tables=[Table(
        "", ["comparison", "method", "wins / ties / losses", "win rate", "95% CI",
             "win rate at equal length (logistic fit)", "first position picked"], rows,
        note="Each run's own comparisons (`eval.win_rate`), each prompt judged in both orders, ties counting half.",
        empty="No run has head-to-head win rates.")], plots=[draw(plot_compare_win_rates, runs)])


def length_section(runs: Labeled) -> Section:
    lengths = {label: {m: v for m, v in (run.eval.get("length") or {}).items() if isinstance(v, dict)}
               for label, run in runs}
    models = sorted({m for d in lengths.values() for m in d}, key=model_key)
    rows = [[m] + [f"{fmt(lengths[label].get(m, {}).get('mean_tokens'))} tokens · "
                   f"{fmt(lengths[label].get(m, {}).get('mean_chars'))} chars" if m in lengths[label] else "-"
                   for label, _ in runs] for m in models]
    return Section("length", "Answer length", tables=[Table(
        "", ["model"] + [label for label, _ in runs], rows,
        note="Mean length of the answers to the eval prompts (`eval.length`); M_(t+1) is the model after "
             "iteration t.", empty="No run has answer lengths.")], plots=[draw(plot_compare_answer_length, runs)])


def _per_iteration_table(runs: Labeled, key: str, cell: Callable[[Any], str], **kw) -> Table:
    its = sorted({t for _, run in runs for t in run.iterations if key in run.it(t)})
    rows = [[f"iter_{t}"] + [cell(run.it(t).get(key)) for _, run in runs] for t in its]
    return Table("", ["iteration"] + [label for label, _ in runs], rows, **kw)


def pairs_section(runs: Labeled) -> Section:
    table = _per_iteration_table(runs, "pairs/kept", fmt, note="Preference pairs kept per iteration (`pairs/kept`).",
                                 empty="No run has pair statistics yet.")
    return Section("pairs", "Preference pairs", tables=[table], plots=[draw(plot_compare_pairs, runs)])


def wall_time_section(runs: Labeled) -> Section:
    table = _per_iteration_table(runs, "iteration/wall_s", seconds,
                                 note="Wall time per iteration (`iteration/wall_s`). The total adds SFT training "
                                      "time (`sft/runtime_s`) to the iterations; evaluation is not included.",
                                 empty="No run has recorded an iteration's wall time.")
    if table.rows:
        table.rows.append(["SFT"] + [seconds(run.sft.get("sft/runtime_s")) for _, run in runs])
        table.rows.append(["total"] + [seconds(total_wall_s(run)) for _, run in runs])
    return Section("wall-time", "Wall time", tables=[table], plots=[draw(plot_compare_wall_time, runs)])


def cross_section(cross: dict) -> Section:
    """The cross-run win rates of cross.cross_win_rates (--h2h-judge), one table per judge."""
    comps = [r for r in cross.get("comparisons") or [] if isinstance(r, dict)]
    tables = []
    for kind, title, extra, cells in [
            ("pointwise", "Pointwise judge (rubric scores)", ["mean score X", "mean score Y"],
             lambda r: [fmt(r.get("mean_score_x")), fmt(r.get("mean_score_y"))]),
            ("pairwise", "Pairwise judge (both orders)", ["first position picked", "unparsed verdicts"],
             lambda r: [pct(r.get("position_bias_first")), fmt(r.get("unparsed_verdicts"))])]:
        rows = [[f"{c.get('x')} vs {c.get('y')}"] + _win_cells("", c[kind])[1:] + cells(c[kind])
                for c in comps if isinstance(c.get(kind), dict)]
        tables.append(Table(title, ["comparison (X vs Y)", "wins / ties / losses", "compared / prompts", "win rate",
                                    "95% CI", "win rate at equal length (logistic fit)"] + extra, rows,
                            empty="No comparison."))
    facts = [Fact("judge", fmt(cross.get("judge_model")), code=True),
             Fact("judge scoring", f"{fmt(cross.get('scoring'))}, k = {fmt(cross.get('k'))}")]
    facts += [Fact(e.get("name"), f"{e.get('model')} of {e.get('run')}", code=True)
              for e in cross.get("entries") or [] if isinstance(e, dict)]
    return Section("cross-win-rates", "Win rates across runs, one judge", facts=facts, tables=tables,
                   plots=[draw(plot_compare_cross_win_rates, cross)], intro=(
                       f"One judge, `{cross.get('judge')}`, reads each run's final model and the runs' common "
                       f"{COMMON} (the first run's answers) on the same {fmt(cross.get('prompts'))} eval "
                       "prompts, so the methods meet directly (`cross/win_rates.json`). Win rates are X's, ties "
                       "counting half. Pointwise: each answer scored alone with the rubric, X wins a prompt with the "
                       "higher mean score. Pairwise: both answers in one prompt, asked in both orders."))


COMPARE_SECTIONS: list[Callable[[Labeled], Section]] = [runs_section, agreement_section, win_rate_section,
                                                        length_section, pairs_section, wall_time_section]


def build_compare(run_dirs: list[str], out_dir: str, h2h_judge: str | None = None, h2h_pairwise: bool = True) -> str:
    """Write OUT/index.html and OUT/report.md comparing the runs; return the path of index.html.
    h2h_judge (SPEC, see cross.py): also judge the runs' final models and M1 against each other.
    InputError if fewer than two directories are given or one is not a run directory, and with
    h2h_judge if a run lacks its eval answers or the runs' eval prompts differ."""
    if len(run_dirs) < 2:
        raise InputError("compare needs at least two run directories")
    runs = [load_run(d) for d in run_dirs]
    diff = differences(runs)
    if diff:
        warn("the runs differ in " + "; ".join(d.replace("`", "") for d in diff))
    labeled = list(zip(labels(runs), runs))
    builders = list(COMPARE_SECTIONS)
    if h2h_judge:
        # The only step that loads a model (the judge), and only for verdicts not cached in OUT/cross/.
        cross = cross_win_rates(run_dirs, [label for label, _ in labeled], out_dir, h2h_judge, h2h_pairwise)

        def cross_win_rates_section(_runs: Labeled) -> Section:
            return cross_section(cross)

        builders.insert(builders.index(win_rate_section) + 1, cross_win_rates_section)
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = Page(title="Self-Rewarding LM runs compared: " + ", ".join(label for label, _ in labeled),
                subtitle=" · ".join(f"`{run.path}`" for run in runs) + f" · report generated {generated}",
                sections=build_sections(builders, labeled),
                footer="Generated by `srlm compare` from " + ", ".join(f"`{run.path}`" for run in runs)
                       + ". Self-contained: no scripts or external resources.",
                tab_title="srlm compare: " + ", ".join(label for label, _ in labeled))
    return write_page(page, out_dir)
