"""The orchestrator: sequences the stages, nothing more.

    M0 --sft--> M1
    for t in 1..T:  prompts -> sample -> judge -> pairs -> dpo  => M_{t+1}   (then eval)

Every stage reads and writes files under the run directory and leaves a `.done` marker, so
rerunning the same command after a crash skips finished stages and resumes the unfinished one.
"""

from __future__ import annotations

import os
import time

import yaml

from srlm import dpo, judge, pairs, prompts, sample, sft
from srlm.backends import make_backend
from srlm.config import Config, ConfigError, save_config, to_dict
from srlm.modeling import ModelRef, resolve
from srlm.parallel import barrier, is_main
from srlm.records import is_done, read_json, update_metrics

GENERATION_STAGES = {"prompts": prompts, "sample": sample, "judge": judge}
STAGE_FILES = {"prompts": "prompts.jsonl", "sample": "candidates.jsonl", "judge": "judgments.jsonl",
               "pairs": "pairs.jsonl"}


def prepare(cfg: Config, allow_config_change: bool = False) -> str:
    """Create the run directory and save the resolved config; refuse to resume a run whose
    saved config differs, since its finished stages were made with other settings."""
    run_dir = cfg.output_dir
    path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(path) and not allow_config_change:
        with open(path) as f:
            saved = yaml.safe_load(f) or {}
        diff = _diff(saved, to_dict(cfg))
        if diff:
            raise ConfigError(f"{path}: this run directory was started with a different config "
                              f"({', '.join(diff[:6])}); use another --output-dir, or pass "
                              "--allow-config-change to resume with the new settings")
    if is_main():
        os.makedirs(run_dir, exist_ok=True)
        save_config(cfg, path)
    barrier()
    return run_dir


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def model_ref(run_dir: str, t: int) -> ModelRef:
    return ModelRef(os.path.join(run_dir, "models", f"M{t}"))


def record(run_dir: str, group: str, values: dict) -> None:
    if is_main():
        update_metrics(run_dir, group, values)


def run_sft(cfg: Config, run_dir: str) -> dict:
    m0 = resolve(cfg.model.name_or_path, cfg.model.gguf_file)
    values = sft.run(cfg, run_dir, m0)
    record(run_dir, "sft", values)
    return values


def run_generation_stage(cfg: Config, run_dir: str, t: int, name: str, backend=None) -> dict:
    """One of prompts/sample/judge for iteration t, loading M_t unless a backend is given."""
    own = backend is None
    if own:
        ref = resolve(cfg.prompts.model) if name == "prompts" and cfg.prompts.model else model_ref(run_dir, t)
        backend = make_backend(cfg, ref)
    try:
        values = GENERATION_STAGES[name].run(cfg, run_dir, t, backend)
    finally:
        if own:
            backend.close()
    record(run_dir, f"iter_{t}", values)
    return values


def run_iteration(cfg: Config, run_dir: str, t: int) -> None:
    it = os.path.join(run_dir, f"iter_{t}")
    started = time.time()
    todo = [n for n in GENERATION_STAGES if not is_done(os.path.join(it, STAGE_FILES[n]))]
    backend = None
    if todo:
        backend = make_backend(cfg, model_ref(run_dir, t))
    try:
        for name in GENERATION_STAGES:
            if name in todo and name == "prompts" and cfg.prompts.model:
                run_generation_stage(cfg, run_dir, t, name)  # loads its own fixed prompt model
            else:
                # A finished stage only reads its files, so it needs no backend.
                record(run_dir, f"iter_{t}", GENERATION_STAGES[name].run(cfg, run_dir, t, backend))
    finally:
        if backend is not None:
            backend.close()
    record(run_dir, f"iter_{t}", pairs.run(cfg, run_dir, t))
    record(run_dir, f"iter_{t}", dpo.run(cfg, run_dir, t))
    record(run_dir, f"iter_{t}", {"iteration/wall_s": round(time.time() - started, 1)})


def run(cfg: Config, allow_config_change: bool = False, evaluate: bool = True) -> dict:
    run_dir = prepare(cfg, allow_config_change)
    run_sft(cfg, run_dir)
    do_eval = evaluate and cfg.eval.enabled
    if do_eval:
        from srlm import evaluate as ev

        ev.evaluate_models(cfg, run_dir, ["M0", "M1"])
    for t in range(1, cfg.iterations + 1):
        run_iteration(cfg, run_dir, t)
        if do_eval:
            ev.evaluate_models(cfg, run_dir, [f"M{t + 1}"])
    return read_json(os.path.join(run_dir, "metrics.json"), {})
