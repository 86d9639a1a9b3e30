"""The orchestrator: runs the table of stages (stages.py), nothing more.

For each (stage, iteration) it decides, from the stage's marker, whether the output is fresh:
the marker must exist and record the same input digests and the same config values (with the
overrides the stage ran with). A fresh output is skipped; a stale one is removed and rebuilt,
which in turn changes the digests its downstream stages recorded, so they rebuild too. A stage
that was killed half-way resumes from its finished chunks, unless its inputs changed since.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time

import yaml

from srlm.run import progress
from srlm.engines.backends import make_backend
from srlm.checks import check_inputs
from srlm.run.config import Config, ConfigError, get, load_config, save_config, to_dict, with_overrides
from srlm.engines.modeling import ModelRef
from srlm.run.parallel import barrier, is_main
from srlm.run.records import read_json, update_metrics, write_json
from srlm.run.rundir import RunDir, config_digest
from srlm.stages import Stage, downstream, schedule


def prepare(cfg: Config, allow_config_change: bool = False, save: bool = True) -> RunDir:
    """The run directory with its config saved; refuse to resume a run whose saved config
    differs, since its finished stages were made with other settings."""
    rd = RunDir(cfg.output_dir)
    if os.path.exists(rd.config) and not allow_config_change:
        with open(rd.config, encoding="utf-8") as f:
            saved = yaml.safe_load(f) or {}
        # output_dir is where the run lives, not how it was made: a moved run resumes.
        diff = [d for d in _diff(saved, to_dict(cfg)) if not d.startswith("output_dir:")]
        if diff:
            raise ConfigError(f"{rd.config}: this run directory was started with a different config "
                              f"({', '.join(diff[:6])}); use another --output-dir, or pass "
                              "--allow-config-change to resume with the new settings (stages whose "
                              "settings changed then run again)")
    if is_main():
        _check_writable(rd.root)
        if save:
            save_config(cfg, rd.config)
    barrier()
    return rd


def _check_writable(root: str) -> None:
    """Refuse before any compute if the run directory cannot be written."""
    try:
        os.makedirs(root, exist_ok=True)
        probe = os.path.join(root, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"{root}: run directory is not writable ({e.strerror or e})") from None


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ; a key the saved config lacks (added by a newer srlm) is not a
    difference: the run was made before it existed."""
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def stage_values(stage: Stage, cfg: Config) -> dict:
    """The config values a stage's output depends on (its `keys`), as plain JSON values."""
    return {k: _plain(get(cfg, k)) for k in stage.keys}


def stage_config(stage: Stage, cfg: Config) -> str:
    return config_digest(stage_values(stage, cfg))


def same_config(recorded: dict | None, digest: str | None, stage: Stage, cfg: Config) -> bool:
    """Whether a marker's recorded config values still hold. A key the record lacks was added
    by a newer srlm: at its default it is no change (an upgrade must not rebuild finished
    stages), set otherwise it is. Records from before values were kept compare by digest."""
    if recorded is None:
        return digest == stage_config(stage, cfg)
    return _matches(recorded, stage_values(stage, cfg), stage_values(stage, Config()))


def _matches(recorded, current, default) -> bool:
    if not (isinstance(recorded, dict) and isinstance(current, dict)):
        return recorded == current
    default = default if isinstance(default, dict) else {}
    for k in set(recorded) | set(current):
        if k not in current:
            return False
        if k not in recorded:
            if k not in default or current[k] != default[k]:
                return False
        elif not _matches(recorded[k], current[k], default.get(k)):
            return False
    return True


def _plain(v):
    return v.model_dump(mode="json") if hasattr(v, "model_dump") else v


class Backends:
    """Generation engines kept open across the stages that share a model (prompts, sample and
    judge of one iteration load M_t once)."""

    def __init__(self, cfg: Config):
        self.cfg, self.open = cfg, {}

    def get(self, ref):
        key = str(ref)
        if key not in self.open:
            self.close()
            if isinstance(ref, str) and ref.startswith("openai:"):
                from srlm.engines.backends.openai import OpenAIBackend

                model, _, base = ref[len("openai:"):].partition("@")
                self.open[key] = OpenAIBackend(base, model, api_key_env=self.cfg.backend.api_key_env,
                                               concurrency=self.cfg.backend.concurrency, timeout=self.cfg.backend.timeout)
            else:
                self.open[key] = make_backend(self.cfg, ref if isinstance(ref, ModelRef) else ModelRef(ref))
        return self.open[key]

    def close(self) -> None:
        for b in self.open.values():
            b.close()
        self.open = {}


def metrics_group(stage: Stage, t: int) -> str:
    return f"iter_{t}" if stage.per_iteration else stage.name


def freshness(stage: Stage, cfg: Config, rd: RunDir, t: int) -> tuple[bool, str]:
    """(fresh, why not) for the stage's output."""
    out = stage.output(rd, t)
    marker = rd.read_marker(out)
    if marker is None or not os.path.exists(out):
        return False, "not built"
    if "inputs" not in marker:
        return False, "built before provenance was recorded"
    inputs = rd.input_digests(stage.inputs(cfg, rd, t))
    if marker["inputs"] != inputs:
        changed = sorted(set(inputs) ^ set(marker["inputs"]) | {p for p in inputs if marker["inputs"].get(p) != inputs[p]})
        return False, f"inputs changed ({', '.join(changed[:3])})"
    expected = with_overrides(cfg, marker.get("overrides") or [])
    if not same_config(marker.get("config_values"), marker.get("config"), stage, expected):
        return False, "config changed"
    return True, ""


def run_stage(stage: Stage, cfg: Config, rd: RunDir, t: int, backends: Backends | None = None,
              overrides: list[str] | None = None, force: bool = False) -> tuple[dict, bool]:
    """Run one (stage, t) unless its output is fresh. Returns (stats, whether it ran)."""
    out = stage.output(rd, t)
    fresh, why = freshness(stage, cfg, rd, t)
    if fresh and not force:
        return rd.read_marker(out)["stats"], False
    paths = stage.inputs(cfg, rd, t)
    for p in paths:
        if os.path.abspath(p).startswith(os.path.abspath(rd.root) + os.sep) and not rd.is_done(p):
            raise ConfigError(f"{stage.name} (iteration {t}): its input {os.path.relpath(p, rd.root)} is not built; "
                              "run the earlier stages first")
    inputs = rd.input_digests(paths)
    values = stage_values(stage, cfg)
    cdig = config_digest(values)
    if is_main():
        if rd.read_marker(out) is not None:
            if not force:
                print(f"srlm: {stage.name}{f' (iteration {t})' if t else ''}: {why}; building it again",
                      file=sys.stderr)
            rd.remove(out)
        # Chunks and checkpoints of a killed run are reused only if they came from the same inputs.
        started = {"inputs": inputs, "config": cdig, "config_values": values}
        before = read_json(out + ".started", None)
        if not (isinstance(before, dict) and before.get("inputs") == inputs
                and same_config(before.get("config_values"), before.get("config"), stage, cfg)):
            rd.remove(out)
            shutil.rmtree(rd.stage_checkpoint(stage.name, t), ignore_errors=True)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            write_json(out + ".started", started)
    barrier()
    backend = None
    ref = stage.model(cfg, rd, t) if stage.model is not None else None
    if ref is not None:  # a stage may need no model in some settings (judge.source=verifier)
        backends = backends or Backends(cfg)
        with progress.stage(rd.log("load"), f"loading {stage.name}'s model"):
            backend = backends.get(ref)
    started_at = time.time()
    label = f"{stage.name}" + (f" · iteration {t}" if t else "")
    with progress.stage(rd.log(stage.name if not t else f"{stage.name}_{t}"), label):
        stats = stage.run(cfg, rd, t, backend)
    stats = dict(stats) | {f"{stage.name}/wall_s": round(time.time() - started_at, 1)}
    if is_main():
        # Metrics first: a kill between the two leaves an unfinished stage, never a finished one
        # whose numbers are missing.
        update_metrics(rd.root, metrics_group(stage, t), stats)
        rd.write_marker(out, stats, inputs, cdig, overrides, values)
        rd.clear_partials(out)
    barrier()
    return stats, True


def run(cfg: Config, allow_config_change: bool = False, evaluate: bool = True, verbose: bool = False,
        from_run: str | None = None) -> dict:
    counts = check_inputs(cfg)  # every input the config names, before any model loads
    if from_run:
        source_run(cfg, from_run)  # refused before this run's directory is made
    rd = prepare(cfg, allow_config_change)
    if from_run and is_main():
        start_from(cfg, rd, from_run)
    barrier()
    if is_main():
        update_metrics(rd.root, "checks", counts)
    do_eval = evaluate and cfg.eval.enabled
    backends = Backends(cfg)
    names = [s.name for s, _ in schedule(cfg)]
    progress.start_run(names + (["eval"] * (1 + cfg.iterations) if do_eval else []), verbose)
    try:
        current, ran_any, t_started = None, False, time.time()
        for stage, t in schedule(cfg):
            if t != current:
                _finish_iteration(rd, current, ran_any, t_started)
                current, ran_any, t_started = t, False, time.time()
            if stage.model is None:
                backends.close()  # free generation memory before training
            _, ran = run_stage(stage, cfg, rd, t, backends)
            progress.finish_stage(stage.name)
            ran_any |= ran
            if stage.makes_model:  # M1 (sft), or M_{t+1} (dpo, or a method's row in its place such as rl)
                backends.close()
                if do_eval:
                    from srlm.evaluation import evaluate as ev

                    eval_started = time.time()
                    with progress.stage(rd.log("eval"), "eval" + (f" · M{t + 1}" if t else " · M0, M1")):
                        ev.evaluate_models(cfg, rd.root, ["M0", "M1"] if stage.name == "sft" else [f"M{t + 1}"])
                    progress.finish_stage("eval")
                    if ran and is_main():  # a resumed run's cached evaluation keeps the first one's time
                        update_metrics(rd.root, f"iter_{t}" if t else "sft",
                                       {"eval/wall_s": round(time.time() - eval_started, 1)})
        _finish_iteration(rd, current, ran_any, t_started)
    finally:
        backends.close()
    return read_json(rd.metrics, {})


def start_from(cfg: Config, rd: RunDir, source: str, echo=print) -> list[str]:
    """Seed a run with another run's outputs from before iteration 1 (EFT build, M1), so several
    methods start from one SFT model, as a side-by-side comparison needs. A copied output keeps
    its marker, so it counts as built only where the source made it with this run's settings
    (the usual freshness check); anything else is left out and built here. M0's and M1's
    evaluation caches come along when the evaluation settings are equal. Outputs this run
    already has are never replaced. Returns the copied paths."""
    src = source_run(cfg, source)
    copied, groups = [], []
    for stage, t in schedule(cfg):
        if t:
            break
        out, dst_out = stage.output(src, 0), stage.output(rd, 0)
        if rd.is_done(dst_out):
            continue
        fresh, why = freshness(stage, cfg, src, 0)
        if not fresh:
            echo(f"srlm: --from-run: {stage.name} of {source} not taken ({why}); building it here")
            continue
        _link_copy(out, dst_out)
        shutil.copy2(src.marker_path(out), rd.marker_path(dst_out))
        copied.append(dst_out)
        groups.append(metrics_group(stage, 0))
    if "sft" in groups and os.path.exists(src.sft_log) and not os.path.exists(rd.sft_log):
        shutil.copy2(src.sft_log, rd.sft_log)
    if ("sft" in groups and os.path.isdir(src.eval_dir)
            and _eval_settings(load_config(src.config)) == _eval_settings(cfg)):
        for base, _, files in os.walk(src.eval_dir):
            for name in files:
                rel = os.path.relpath(os.path.join(base, name), src.eval_dir)
                models = [int(m) for m in MODEL_IN_NAME.findall(rel)]
                dst = os.path.join(rd.eval_dir, rel)
                if models and max(models) <= 1 and not os.path.exists(dst):
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    shutil.copy2(os.path.join(base, name), dst)
                    copied.append(dst)
    metrics = read_json(src.metrics, {})
    if groups and isinstance(metrics, dict):
        for g in groups:
            if g in metrics:
                update_metrics(rd.root, g, metrics[g])
    if copied:
        echo(f"srlm: --from-run: took {', '.join(groups) or 'evaluation caches'} from {source}")
    return copied


def source_run(cfg: Config, source: str) -> RunDir:
    """The run directory --from-run names; ConfigError if it is none, or this run's own."""
    src = RunDir(source)
    if not os.path.exists(src.config):
        raise ConfigError(f"--from-run {source}: not a run directory (no config.yaml)")
    if os.path.abspath(src.root) == os.path.abspath(cfg.output_dir):
        raise ConfigError(f"--from-run {source}: that is this run's own directory")
    return src


def _eval_settings(cfg: Config) -> dict:
    """What M0's and M1's evaluation caches depend on beyond the models themselves."""
    from srlm.evaluation.evaluate import judge_settings
    from srlm.stages import GENERATION_KEYS

    return {"eval": to_dict(cfg.eval), "judge": judge_settings(cfg),
            **{k: _plain(get(cfg, k)) for k in GENERATION_KEYS}}


def _link_copy(src: str, dst: str) -> None:
    """Hard links where the file system allows (outputs are written whole and never edited in
    place, so two runs can share one model's weights), else copies."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.isdir(src):
        shutil.copytree(src, dst, copy_function=link)
    else:
        link(src, dst)


def _finish_iteration(rd: RunDir, t: int | None, ran_any: bool, started: float) -> None:
    if t and ran_any and is_main():
        update_metrics(rd.root, f"iter_{t}", {"iteration/wall_s": round(time.time() - started, 1)})


def invalidate(cfg: Config, rd: RunDir, stage: Stage, t: int, echo=print) -> list[str]:
    """Remove the output of (stage, t) and everything downstream of it, listing each first."""
    targets = [(stage, t)] + downstream(cfg, stage, t)
    removed = [o for s, ti in targets for o in [s.output(rd, ti)]
               if os.path.exists(o) or os.path.exists(rd.marker_path(o)) or os.path.exists(o + ".started")]
    first_model = t + 1 if stage.per_iteration else 1
    eval_files = _eval_files_for(rd, first_model)
    if removed or eval_files:
        echo("removing (stale once this stage is redone):")
        for p in removed + eval_files:
            echo(f"  {os.path.relpath(p, rd.root)}")
    for p in removed:
        rd.remove(p)
    for p in eval_files:
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    metrics = read_json(rd.metrics, None)
    if isinstance(metrics, dict):
        for s, ti in targets:
            metrics.pop(metrics_group(s, ti), None)
        _drop_models(metrics.get("eval"), first_model)
        write_json(rd.metrics, metrics)
    return removed + eval_files


MODEL_IN_NAME = re.compile(r"(?:^|[_./-])M(\d+)(?:[_./-]|$)")


def _eval_files_for(rd: RunDir, first: int) -> list[str]:
    """Evaluation caches that mention a model M_k with k >= first."""
    out = []
    for base, dirs, files in os.walk(rd.eval_dir) if os.path.isdir(rd.eval_dir) else []:
        for name in dirs + files:
            if any(int(m) >= first for m in MODEL_IN_NAME.findall(name)):
                out.append(os.path.join(base, name))
    return sorted(set(out))


def _drop_models(node, first: int) -> None:
    if not isinstance(node, dict):
        return
    for key in list(node):
        if any(int(m) >= first for m in re.findall(r"(?:^|_)M(\d+)(?:_|$)", key)):
            del node[key]
        else:
            _drop_models(node[key], first)
