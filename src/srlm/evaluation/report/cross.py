"""`srlm compare DIR... --h2h-judge SPEC`: win rates across runs, by one judge (paper section 4).

Each run's `srlm eval` pits that run's models against each other, each run with its own judge,
so the models of two methods never meet. Here one judge, SPEC, reads every run's final model
M_(T+1) and the runs' common SFT model M1 (the first run's answers) on the shared eval prompts,
and every final model meets every other one and M1:
- pointwise: each answer scored alone with the rubric judge (judge.scoring mode, k = eval.k, as
  in the first run's config.yaml); X wins a prompt when its mean score is higher
  (evaluate.score_answers, evaluate.pointwise_head_to_head);
- pairwise: both answers in the pairwise prompt, asked in both orders to cancel position bias
  (evaluate.pairwise_h2h).
Each comparison has a 95% bootstrap interval and the win rate at equal length, as in `srlm eval`.
SPEC: M<k> (the first run's model M<k>), a local model path, or openai:MODEL@BASE_URL.
Nothing is generated here: the answers are the DIR/eval/answers_M<k>.jsonl that `srlm eval`
wrote. A run without them, or runs whose eval prompts differ, are refused (InputError).
Output, under OUT/cross/: pointwise_<name>.jsonl and h2h_<x>_vs_<y>.jsonl (the judge's verdicts;
a rerun reuses them and loads no model unless the judge, its settings or the answers changed)
and win_rates.json (what the compare page shows).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from srlm.run.records import InputError, is_done, read_jsonl, write_json
from srlm.run.rundir import RunDir

COMMON = "M1"  # the runs' shared SFT model: every method's loop starts from it


@dataclass
class Entry:
    """One model in the cross-run comparison."""
    name: str  # the run's method label (compare.labels), or COMMON
    run_dir: str
    model: str  # M<k>
    answers: str  # DIR/eval/answers_<model>.jsonl


def answers_file(run_dir: str, model: str) -> str:
    path = RunDir(run_dir).eval_file(f"answers_{model}.jsonl")
    if not is_done(path):
        raise InputError(f"{run_dir}: no eval answers of its model {model} ({path}); run "
                         f"`srlm eval {run_dir} --models {model}` first")
    return path


def entries(run_dirs: list[str], names: list[str]) -> list[Entry]:
    """Each run's final model (its last finished models/M<k>), then the first run's M1."""
    from srlm.evaluation.evaluate import available_models

    out = []
    for name, d in zip(names, run_dirs):
        final = available_models(d)[-1]
        out.append(Entry(name, d, final, answers_file(d, final)))
    return out + [Entry(COMMON, run_dirs[0], COMMON, answers_file(run_dirs[0], COMMON))]


def check_prompts(ents: list[Entry], answers: dict[str, dict[str, dict]]) -> None:
    """InputError unless every entry answered the same eval prompts (same ids, same texts)."""
    first = ents[0]
    ref = {i: r["prompt"] for i, r in answers[first.name].items()}
    for e in ents[1:]:
        got = {i: r["prompt"] for i, r in answers[e.name].items()}
        if got != ref:
            same = sum(ref.get(i) == p for i, p in got.items())
            raise InputError(f"the runs' eval prompts differ: {e.run_dir} ({e.model}, {len(got)} prompts) and "
                             f"{first.run_dir} ({first.model}, {len(ref)} prompts) share {same}; cross-run win "
                             "rates need one evaluation set (eval.prompts, eval.max_prompts)")


def comparisons(names: list[str]) -> list[tuple[str, str]]:
    """Every final model against every later one, then each against COMMON: (x, y) pairs."""
    finals = [n for n in names if n != COMMON]
    return [(x, y) for i, x in enumerate(finals) for y in finals[i + 1:]] + [(x, COMMON) for x in finals]


def pointwise_win_rate(ax: dict[str, dict], ay: dict[str, dict], sx: dict[str, list], sy: dict[str, list],
                       seed: int) -> dict:
    """X vs Y by the rubric judge's scores ({id: scores}) on the prompts both answered."""
    from srlm.evaluation.evaluate import pointwise_head_to_head

    ids = [i for i in ax if i in ay and i in sx and i in sy]
    return pointwise_head_to_head([sx[i] for i in ids], [sy[i] for i in ids], [len(ax[i]["answer"]) for i in ids],
                                  [len(ay[i]["answer"]) for i in ids], seed=seed)


class LazyJudge:
    """The judge backend, loaded on first use: a rerun whose verdicts are all cached loads none."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._backend = make, None

    def __getattr__(self, name: str) -> Any:
        if self._backend is None:
            self._backend = self._make()
        return getattr(self._backend, name)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def make_cross_judge(cfg, run_dir: str, spec: str) -> tuple[str, LazyJudge]:
    """(the judge's identity, recorded with its verdicts; the judge, loaded when first used)."""
    from srlm.engines.modeling import resolve
    from srlm.evaluation import evaluate

    if re.fullmatch(r"M\d+", spec):
        ref = evaluate.model_ref(cfg, run_dir, spec)  # InputError if the first run lacks it
        return os.path.abspath(str(ref)) if os.path.exists(str(ref)) else str(ref), LazyJudge(
            lambda: evaluate.make_backend(cfg, ref))
    if spec.startswith("openai:"):
        model, _, base = spec[len("openai:"):].partition("@")
        if not model or not base:
            raise InputError(f"--h2h-judge {spec!r}: expected openai:MODEL@BASE_URL")
        ident = spec
    else:
        ident = str(resolve(spec))  # InputError if a local path does not exist
        ident = os.path.abspath(ident) if os.path.exists(ident) else ident
    judged_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"judge": spec})})
    return ident, LazyJudge(lambda: evaluate.make_judge(judged_cfg, run_dir, COMMON))


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def cross_win_rates(run_dirs: list[str], names: list[str], out_dir: str, spec: str, pairwise: bool = True) -> dict:
    """Judge every entry with SPEC and write OUT/cross/win_rates.json; return its content:
    {"judge", "judge_model", "scoring", "k", "prompts", "entries": [{name, run, model}],
     "comparisons": [{"x", "y", "pointwise": {...}, "pairwise": {...}}]} (evaluate's summaries).
    pairwise=False skips the pairwise judge ("pairwise": None): it costs two generations per prompt
    and pair of models, and a small judge's pairwise verdicts follow position, not content."""
    from srlm.evaluation import evaluate
    from srlm.run.config import load_config
    from srlm.run.parallel import derive_seed

    config = RunDir(run_dirs[0]).config
    if not os.path.exists(config):
        raise InputError(f"{run_dirs[0]}: no config.yaml (the judge's settings come from the first run)")
    cfg = load_config(config)
    ents = entries(run_dirs, names)
    answers = {e.name: {r["id"]: r for r in read_jsonl(e.answers)} for e in ents}
    check_prompts(ents, answers)
    ident, backend = make_cross_judge(cfg, run_dirs[0], spec)
    cross = os.path.join(out_dir, "cross")
    scoring = getattr(cfg.judge, "scoring", "parsed")
    digest = {e.name: _digest(e.answers) for e in ents}
    try:
        scores = {e.name: evaluate.score_answers(
            cfg, e.answers, os.path.join(cross, f"pointwise_{_slug(e.name)}.jsonl"),
            {"judge": ident, "scoring": scoring, "k": cfg.eval.k, "answers": digest[e.name]}, backend,
            derive_seed(cfg.seed, "cross-pointwise", e.name), "cross-run rubric judge scoring",
            f"{e.name} ({e.model})") for e in ents}
        rows = []
        for x, y in comparisons([e.name for e in ents]):
            h2h = evaluate.pairwise_h2h(
                cfg, answers[x], answers[y], os.path.join(cross, f"h2h_{_slug(x)}_vs_{_slug(y)}.jsonl"),
                {"judge": ident, "answers": [digest[x], digest[y]]}, backend, derive_seed(cfg.seed, "cross-h2h", x, y),
                f"cross-run {x} vs {y}") if pairwise else None
            rows.append({"x": x, "y": y, "pointwise": pointwise_win_rate(answers[x], answers[y], scores[x], scores[y],
                                                                         cfg.seed),
                         "pairwise": h2h})
    finally:
        backend.close()
    res = {"judge": spec, "judge_model": ident, "scoring": scoring, "k": cfg.eval.k,
           "prompts": len(answers[COMMON]),
           "entries": [{"name": e.name, "run": os.path.abspath(e.run_dir), "model": e.model} for e in ents],
           "comparisons": rows}
    write_json(os.path.join(cross, "win_rates.json"), res)
    return res
