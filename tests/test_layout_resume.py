"""A run directory made before issue 19 moved the modules into folders resumes with nothing rebuilt.

tests/data/premove_runs.json holds run directories made by the pre-move layout (commit 9bc9f2e,
by tests/data/make_premove_runs.py): every packaged config and two variants, each scheduled
stage's output a placeholder and its `.done` marker written as pipeline.run_stage writes it
(input digests, config values and their digest). Here every (stage, iteration) of the same
config must be fresh, so `srlm run` would skip it: the schedule, the stage names, the input paths
and digests and the config values a stage depends on are what they were. No model is loaded
(M0 is a Hub id, digested by its name), nothing is trained.
"""

from __future__ import annotations

import importlib.resources
import json
import os

import pytest

from srlm.pipeline import freshness, prepare, run_stage
from srlm.run.config import load_config
from srlm.stages import schedule

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "premove_runs.json")
with open(FIXTURE, encoding="utf-8") as f:
    PREMOVE = json.load(f)


def materialise(run: dict, root: str) -> None:
    """The run directory as the pre-move code left it, with this checkout's seed directory (the
    seed files never moved, so a real run's recorded paths are this checkout's)."""
    seed = str(importlib.resources.files("srlm.seed"))
    for d in run["dirs"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for rel, text in run["files"].items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace(PREMOVE["seed_placeholder"], seed).replace(PREMOVE["run_placeholder"], root))


def test_fixture_still_names_packaged_configs_and_stages():
    """The fixture covered every packaged config and every stage at the move (15 runs, 160
    stages); each of them must still exist (a later method adds configs and stages of its own)."""
    from srlm.run.config import packaged_names
    from srlm.stages import STAGES

    runs = PREMOVE["runs"].values()
    assert {r["config"] for r in runs} <= set(packaged_names())
    assert {name for r in runs for name, _ in r["schedule"]} <= {s.name for s in STAGES}


@pytest.mark.parametrize("name", sorted(PREMOVE["runs"]))
def test_premove_run_resumes_with_nothing_rebuilt(name, tmp_path):
    run = PREMOVE["runs"][name]
    root = str(tmp_path / name)
    materialise(run, root)
    # The run's own saved config, as a resume reads it: a packaged config may change after the
    # move (verified.yaml's DPO rate did), and the run keeps the settings it was made with.
    cfg = load_config(os.path.join(root, "config.yaml"))
    assert cfg.output_dir == root
    rd = prepare(cfg)
    order = schedule(cfg)
    assert [[s.name, t] for s, t in order] == run["schedule"]
    stale = {f"{s.name} (iteration {t})": why for s, t in order for fresh, why in [freshness(s, cfg, rd, t)]
             if not fresh}
    assert stale == {}
    for s, t in order:  # each fresh: the pipeline returns its recorded stats and runs nothing
        stats, ran = run_stage(s, cfg, rd, t)
        assert (ran, stats) == (False, {f"{s.name}/fixture": 1})
    assert sorted(os.path.relpath(os.path.join(b, n), root) for b, _, ns in os.walk(root) for n in ns) == \
        sorted(run["files"])
