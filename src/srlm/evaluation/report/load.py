"""Reading a run directory into a `Run`, for `srlm report` and `srlm compare`.

This module is the only place that knows the file names of a run directory:
  config.yaml, metrics.json, sft_log.json, models/M<k>/,
  iter_<t>/{pairs.jsonl, judgments.jsonl, dpo_log.json},
  eval/answers_<M>.jsonl, eval/h2h_<X>_vs_<Y>.jsonl, eval/ifeval_<M>.jsonl (scored IFEval rows),
  eval/pointwise_<M>_by_<judge>.jsonl (rubric scores of M's eval answers), and report/ (where
  the report goes).
A run may be partial (crashed, still running, eval disabled): a missing file is an empty value,
and a corrupt one gives a warning on stderr and counts as missing, so a report can be built at
any point of a run. A JSONL file keeps the records before its first bad line, because a crash
mid-append tears only the last line (records.append_jsonl).
It also reads old runs: the win-rate key `length_controlled_win_rate` (renamed
`win_rate_at_equal_length`, which is what it measures: not AlpacaEval's LC metric) and an
`eval.judge_agreement` written as {MODEL: summary} without the human-set level.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

from srlm.run.records import InputError, is_done, iter_jsonl, read_json
from srlm.run.rundir import RunDir

from .formatting import model_key

# eval.win_rate.<X>_vs_<Y>: the metric key, and the name older runs wrote it under.
WIN_RATE_AT_EQUAL_LENGTH = "win_rate_at_equal_length"
OLD_WIN_RATE_AT_EQUAL_LENGTH = "length_controlled_win_rate"
# eval.baselines.<human set>.<baseline>: {"accuracy": ...}: judges that are no model of the run,
# to set the models' agreement against; "length" prefers the longer response (evaluation/evaluate.py).
JUDGE_BASELINES = "baselines"
LENGTH_HEURISTIC = "length"
# eval.ifeval_delta.<X>_vs_<Y>: IFEval of X minus Y on the same prompts (evaluate.ifeval_breakdown).
IFEVAL_DELTA = "ifeval_delta"


def warn(msg: str) -> None:
    print(f"srlm report: warning: {msg}", file=sys.stderr)


def _json(path: str, default: Any) -> Any:
    try:
        return read_json(path, default)
    except (OSError, ValueError) as e:  # ValueError: malformed JSON or bad UTF-8
        warn(f"{path}: unreadable ({e}); treated as missing")
        return default


def _records(path: str) -> Iterator[dict]:
    """The JSON objects of a JSONL file; nothing if it is missing; up to the first bad line."""
    if not os.path.exists(path):
        return
    n = 0
    try:
        for _, obj in iter_jsonl(path):
            if isinstance(obj, dict):
                n += 1
                yield obj
    except (InputError, OSError, ValueError) as e:
        warn(f"{e}; using the {n} records before it")


def _rows(log: Any) -> list[dict]:
    return [r for r in log if isinstance(r, dict)] if isinstance(log, list) else []


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


@dataclass
class Run:
    """What a run directory holds; small files are read at once, large ones on demand."""
    dir: str
    config_text: str | None  # config.yaml as written (None: no file)
    config: dict
    metrics: dict  # metrics.json
    metrics_mtime: str  # when metrics.json was last written ("-" if never)
    iterations: list[int]
    models: list[str]  # M0, M1, ... that exist or have results, in order
    sft_log: list[dict]
    dpo_logs: dict[int, list[dict]]
    eval: dict = field(default_factory=dict)  # metrics.json "eval" group, in the current shape

    @property
    def path(self) -> str:
        return os.path.abspath(self.dir)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def report_dir(self) -> str:
        """Where `srlm report` writes index.html, report.md and the plots."""
        return RunDir(self.dir).report_dir

    @property
    def method(self) -> str:
        """What `srlm compare` calls this run: config.yaml `method`, else the directory name."""
        m = self.config.get("method")
        return str(m) if m not in (None, "") else self.name

    def it(self, t: int) -> dict:
        """The metrics.json group of iteration t."""
        return _dict(self.metrics.get(f"iter_{t}"))

    @property
    def sft(self) -> dict:
        return _dict(self.metrics.get("sft"))

    def judge_baselines(self, source: str) -> dict[str, dict]:
        """{baseline: summary} for one human-preference set, e.g. {"length": {"accuracy": 0.6, ...}}."""
        return {k: v for k, v in _dict(_dict(self.eval.get(JUDGE_BASELINES)).get(source)).items()
                if isinstance(v, dict)}

    # --- large files, read when a section needs them -----------------------------------------

    def pairs(self, t: int) -> list[dict]:
        """iter_<t>/pairs.jsonl: the preference pairs DPO trained on."""
        return list(_records(RunDir(self.dir).pairs(t)))

    def judgments(self, t: int) -> Iterator[dict]:
        """iter_<t>/judgments.jsonl: every rubric judgment of the iteration's candidates."""
        return _records(RunDir(self.dir).judgments(t))

    def eval_answers(self) -> dict[str, list[dict]]:
        """{model: rows of eval/answers_<model>.jsonl}, models in order."""
        out = {}
        for name in _listdir(RunDir(self.dir).eval_dir):
            m = re.fullmatch(r"answers_(.+)\.jsonl", name)
            if m:
                rows = list(_records(RunDir(self.dir).eval_file(name)))
                if rows:
                    out[m.group(1)] = rows
        return {k: out[k] for k in sorted(out, key=model_key)}

    def head_to_head(self) -> dict[tuple[str, str], list[dict]]:
        """{(X, Y): rows of eval/h2h_<X>_vs_<Y>.jsonl}: both-order verdicts per eval prompt."""
        out = {}
        for name in _listdir(RunDir(self.dir).eval_dir):
            m = re.fullmatch(r"h2h_(.+)_vs_(.+)\.jsonl", name)
            if m:
                out[(m.group(1), m.group(2))] = list(_records(RunDir(self.dir).eval_file(name)))
        return {k: out[k] for k in sorted(out, key=lambda k: (model_key(k[0]), model_key(k[1])))}


    def ifeval_rows(self) -> dict[str, list[dict]]:
        """{model: scored rows of eval/ifeval_<model>.jsonl} for the finished caches, models in order."""
        out = {}
        for name in _listdir(RunDir(self.dir).eval_dir):
            m = re.fullmatch(r"ifeval_(.+)\.jsonl", name)
            path = RunDir(self.dir).eval_file(name)
            if m and is_done(path):
                rows = [r for r in _records(path) if isinstance(r.get("strict_follow"), list)]
                if rows:
                    out[m.group(1)] = rows
        return {k: out[k] for k in sorted(out, key=model_key)}

    def ifeval_deltas(self) -> dict[str, dict]:
        """eval.ifeval_delta ({"M<t>_vs_M0": paired delta, ...}); for a run evaluated before that
        group existed, the whole-set deltas computed here from the scored IFEval rows."""
        recorded = {k: v for k, v in _dict(self.eval.get(IFEVAL_DELTA)).items() if isinstance(v, dict)}
        if recorded or not self.eval.get("ifeval"):
            return recorded
        from srlm.evaluation import ifeval

        rows, out = self.ifeval_rows(), {}
        seed = self.config.get("seed") if isinstance(self.config.get("seed"), int) else 0
        for m in rows:
            for base in ("M0", "M1"):
                if base in rows and model_key(base) < model_key(m):
                    out[f"{m}_vs_{base}"] = ifeval.paired_delta(rows[base], rows[m], seed=seed)
        return out

    def self_judge_scores(self) -> dict[str, list[float]]:
        """{model: mean rubric score of each of its eval answers, judged by the model itself}
        from eval/pointwise_<M>_by_<M>.jsonl (written by the pointwise head-to-head with
        eval.judge=self); answers without a parsed score are left out."""
        out = {}
        for name in _listdir(RunDir(self.dir).eval_dir):
            m = re.fullmatch(r"pointwise_(.+)_by_(.+)\.jsonl", name)
            if not m or m.group(1) != m.group(2):
                continue
            means = []
            for r in _records(RunDir(self.dir).eval_file(name)):
                scores = [s for s in r.get("scores") or [] if not isinstance(s, bool) and isinstance(s, (int, float))]
                if scores:
                    means.append(sum(scores) / len(scores))
            if means:
                out[m.group(1)] = means
        return {k: out[k] for k in sorted(out, key=model_key)}


def _config(path: str) -> tuple[str | None, dict]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return None, {}
    except OSError as e:
        warn(f"{path}: unreadable ({e}); treated as missing")
        return None, {}
    try:
        import yaml

        config = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - a broken config still gets a report, with its text
        warn(f"{path}: unparseable YAML ({e})")
        config = {}
    return text, _dict(config)


def _eval_group(metrics: dict) -> dict:
    """metrics.json "eval", copied and brought to the current shape."""
    ev = dict(_dict(metrics.get("eval")))
    ja = ev.get("judge_agreement")
    if isinstance(ja, dict) and ja and all(
            isinstance(v, dict) and not any(isinstance(x, dict) and "accuracy" in x for x in v.values())
            for v in ja.values()):
        ev["judge_agreement"] = {"human_prefs": ja}  # {MODEL: summary} without the human-set level
    wr = ev.get("win_rate")
    if isinstance(wr, dict):
        ev["win_rate"] = {k: v for k, v in wr.items()}
        for k, v in wr.items():
            if isinstance(v, dict) and WIN_RATE_AT_EQUAL_LENGTH not in v and OLD_WIN_RATE_AT_EQUAL_LENGTH in v:
                ev["win_rate"][k] = {**v, WIN_RATE_AT_EQUAL_LENGTH: v[OLD_WIN_RATE_AT_EQUAL_LENGTH]}
    return ev


def _mtime(path: str) -> str:
    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y-%m-%d %H:%M")
    except OSError:
        return "-"


def load_run(run_dir: str) -> Run:
    """Read DIR; InputError if it is not a run directory (neither config.yaml nor metrics.json)."""
    if not os.path.isdir(run_dir):
        raise InputError(f"{run_dir}: no such run directory")
    rd = RunDir(run_dir)
    config_path, metrics_path = rd.config, rd.metrics
    if not os.path.exists(config_path) and not os.path.exists(metrics_path):
        raise InputError(f"{run_dir}: not a run directory (no config.yaml or metrics.json)")
    config_text, config = _config(config_path)
    metrics = _dict(_json(metrics_path, {}))

    iterations = {int(m.group(1)) for m in (re.fullmatch(r"iter_(\d+)", k) for k in metrics) if m}
    iterations |= {int(m.group(1)) for m in (re.fullmatch(r"iter_(\d+)", n) for n in _listdir(run_dir))
                   if m and os.path.isdir(os.path.join(run_dir, m.group(0)))}
    iterations_sorted = sorted(iterations)

    ev = _eval_group(metrics)
    models = {"M0"}
    models_dir = rd.models_dir
    models |= {n for n in _listdir(models_dir) if re.fullmatch(r"M\d+", n) and os.path.isdir(os.path.join(models_dir, n))}
    for per_model in _dict(ev.get("judge_agreement")).values():
        models |= set(_dict(per_model))
    models |= set(_dict(ev.get("length")))
    models |= {m.group(1) for m in (re.fullmatch(r"answers_(.+)\.jsonl", n)
                                    for n in _listdir(rd.eval_dir)) if m}

    return Run(
        dir=run_dir, config_text=config_text, config=config, metrics=metrics, metrics_mtime=_mtime(metrics_path),
        iterations=iterations_sorted, models=sorted(models, key=model_key),
        sft_log=_rows(_json(rd.sft_log, [])),
        dpo_logs={t: _rows(_json(rd.dpo_log(t), [])) for t in iterations_sorted},
        eval=ev,
    )
