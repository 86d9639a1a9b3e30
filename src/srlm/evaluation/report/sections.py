"""The sections of `srlm report DIR`, in page order: each is one function Run -> Section.

A Section holds its content already built (text, tables, plots, examples); the templates
(templates/report.html.j2, report.md.j2) only lay it out, the same way for every section. To add
a section, write a function returning a Section and add it to SECTIONS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .examples import PAIR_EXAMPLES_PER_ITERATION, Example, answer_examples, pair_examples
from .formatting import ci, ci_pts, comparison_label, comparison_order, fmt, model_key, num, pct, pts
from .load import LENGTH_HEURISTIC, WIN_RATE_AT_EQUAL_LENGTH, Run
from .plots import JUDGE_FREE_PLOTS, PLOTS, Plot, draw
from .tables import (Table, agreement_tables, ifeval_delta_table, ifeval_family_table, ifeval_split_table,
                     ifeval_table, iteration_table, judge_checker_table, judge_vs_baselines_table, length_table,
                     models_table, pointwise_win_rate_table, sft_table, win_rate_table)


@dataclass
class Stat:
    """A headline number, shown as a card."""
    label: str
    value: str
    detail: str = ""


@dataclass
class Fact:
    label: str
    value: str
    code: bool = False  # a path or identifier, shown as code


@dataclass
class Details:
    """Raw text shown collapsed (HTML <details>) or as a fenced block (Markdown)."""
    summary: str
    text: str
    lang: str = "text"


@dataclass
class Section:
    id: str  # HTML anchor
    title: str
    intro: str = ""  # a paragraph under the heading; `backticks` mark code
    stats: list[Stat] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    details: list[Details] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)


def ifeval_stat(run: Run) -> Stat | None:
    """The judge-free headline: the newest model's IFEval score with its interval, and its change
    from M0 on the same prompts with the paired interval."""
    res = {m: v for m, v in (run.eval.get("ifeval") or {}).items()
           if isinstance(v, dict) and num(v.get("ifeval/score")) is not None}
    if not res:
        return None
    final = max(res, key=model_key)
    r = res[final]
    detail = f"{final}, 95% CI {ci(r.get('ifeval/score_ci95'))}"
    d = run.ifeval_deltas().get(f"{final}_vs_M0") or {}
    if num(d.get("ifeval/delta_score")) is not None:
        detail += (f"; vs M0 {pts(d.get('ifeval/delta_score'))} {ci_pts(d.get('ifeval/delta_score_ci95'))} "
                   f"(paired, {fmt(d.get('ifeval/paired_prompts'))} prompts)")
    return Stat("IFEval score (no judge)", pct(r.get("ifeval/score")), detail)


def agreement_stat(run: Run) -> Stat | None:
    """Judge-human agreement per model on the first human set, beside the length heuristic."""
    for source, pm in (run.eval.get("judge_agreement") or {}).items():
        if isinstance(pm, dict) and pm:
            ms = sorted(pm, key=model_key)
            length = run.judge_baselines(source).get(LENGTH_HEURISTIC, {}).get("accuracy")
            return Stat(f"judge agreement ({source})", " → ".join(pct((pm[m] or {}).get("accuracy"), 0) for m in ms),
                        " → ".join(ms) + f"; longer answer wins: {pct(length, 0)}")
    return None  # the first human set; the Evaluation section has them all


def headline_stats(run: Run) -> list[Stat]:
    """The judge-free measure first, then the judge's agreement beside the length heuristic."""
    out = [s for s in (ifeval_stat(run), agreement_stat(run)) if s is not None]
    out.append(Stat("iterations", str(len(run.iterations)), f"configured: {fmt(run.config.get('iterations'))}"))
    if run.iterations:
        out.append(Stat("pairs per iteration", " / ".join(fmt(run.it(t).get("pairs/kept")) for t in run.iterations),
                        "iter " + " / ".join(str(t) for t in run.iterations)))
    if run.sft.get("sft/loss") is not None:
        out.append(Stat("SFT final loss", fmt(run.sft.get("sft/loss")),
                        f"from {fmt(run.sft.get('sft/first_loss'))}, {fmt(run.sft.get('sft/steps'))} steps"))
    wr = {k: v for k, v in (run.eval.get("win_rate") or {}).items()
          if isinstance(v, dict) and num(v.get("win_rate")) is not None}
    if wr:
        # The newest model against the oldest rival (M_T vs M1 is the paper's headline comparison).
        k = max(wr, key=lambda k: (comparison_order(k)[0], -comparison_order(k)[1][0]))
        out.append(Stat(f"win rate {comparison_label(k)}", pct(wr[k].get("win_rate")),
                        f"95% CI {ci(wr[k].get('win_rate_ci95'))}, at equal length "
                        f"{pct(wr[k].get(WIN_RATE_AT_EQUAL_LENGTH))}"))
    return out


def run_section(run: Run) -> Section:
    model = run.config.get("model")
    base = model.get("name_or_path") if isinstance(model, dict) else None
    facts = [Fact("run directory", run.path, code=True), Fact("metrics updated", run.metrics_mtime),
             Fact("base model", fmt(base)), Fact("seed", fmt(run.config.get("seed")))]
    if run.config.get("method") not in (None, ""):
        facts.append(Fact("method", str(run.config["method"])))
    details = [Details("Resolved config (config.yaml)", run.config_text.rstrip("\n"), "yaml")] \
        if run.config_text is not None else []
    return Section("run", "Run", intro="" if details else "No config.yaml in the run directory.",
                   stats=headline_stats(run), facts=facts, tables=[models_table(run)], details=details)


def iterations_section(run: Run) -> Section:
    return Section("iterations", "Iteration metrics", tables=[iteration_table(run)])


def sft_section(run: Run) -> Section:
    return Section("sft", "SFT", tables=[sft_table(run)])


def evaluation_section(run: Run) -> Section:
    intro = "" if run.eval else ("No evaluation results: eval was disabled (`eval.enabled=false` or `--no-eval`) "
                                 "or has not run. Run `srlm eval DIR` to add them.")
    return Section("evaluation", "Evaluation", intro=intro,
                   tables=[judge_vs_baselines_table(run), *agreement_tables(run), length_table(run),
                           win_rate_table(run), pointwise_win_rate_table(run)])


def judge_free_section(run: Run) -> Section:
    """IFEval (no judge): per model, the change against M0 and M1, held-out vs trained instructions,
    per family; the self-judge's score beside it (proxy vs gold), and the self-judge against the
    checker on the training candidates."""
    return Section("judge_free", "Judge-free evaluation (IFEval)",
                   intro="IFEval's verifiable instructions are checked by code, so no judge can be pleased into "
                         "a better number: the measure every judge-based figure of this run should be read against.",
                   tables=[ifeval_table(run), ifeval_delta_table(run), ifeval_split_table(run),
                           ifeval_family_table(run), judge_checker_table(run)],
                   plots=[draw(fn, run) for fn in JUDGE_FREE_PLOTS])


def plots_section(run: Run) -> Section:
    return Section("plots", "Plots", plots=[draw(fn, run) for fn in PLOTS])


def answers_section(run: Run) -> Section:
    examples = answer_examples(run)
    return Section("answers", "Example answers", examples=examples,
                   intro="Held-out eval prompts with every evaluated model's answer side by side." if examples
                   else "No eval answers (`eval/answers_*.jsonl`) in this run.")


def pairs_section(run: Run) -> Section:
    examples = pair_examples(run)
    return Section("pairs", "Example preference pairs", examples=examples,
                   intro=f"Per iteration, the {PAIR_EXAMPLES_PER_ITERATION} pairs with the largest score margin: "
                         "the prompt, the chosen (highest mean score) and rejected (lowest) candidates, and one of "
                         "the model's own rubric judgments of each." if examples
                   else "No preference pairs in this run yet.")


SECTIONS: list[Callable[[Run], Section]] = [run_section, judge_free_section, iterations_section, sft_section,
                                            evaluation_section, plots_section, answers_section, pairs_section]
