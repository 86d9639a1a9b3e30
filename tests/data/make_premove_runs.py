"""Writes tests/data/premove_runs.json: run directories as srlm made them before issue 19's
move of the modules into folders (commit 9bc9f2e), for tests/test_layout_resume.py.

For every packaged config (and two variants) it builds the whole schedule by hand: each
stage's output is a one-line placeholder file (or a directory for a model) and its `.done`
marker is written exactly as pipeline.run_stage writes it (input digests, config values and
their digest), in schedule order, so that each marker records its upstream markers' digests.
No model is loaded: M0 is named by a Hub id, whose digest is its name. The seed directory's
absolute path is stored as @SEED@ (and config.yaml's output_dir as @RUN@); the test puts the
current ones back (the seed files stay in
src/srlm/seed/, so a real run keeps its paths across the move).

It imports the pre-move module layout; to regenerate (nothing needs to):
    git archive 9bc9f2e src | tar -x -C /tmp/premove
    PYTHONPATH=/tmp/premove/src python tests/data/make_premove_runs.py
"""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
import tempfile

from srlm.config import load_config, save_config
from srlm.pipeline import stage_values
from srlm.rundir import RunDir, config_digest
from srlm.stages import schedule

M0 = "model.name_or_path=HuggingFaceTB/SmolLM2-135M-Instruct"
RUNS = {name: (name, []) for name in ("default", "tiny", "cpu-full", "verified", "gpu-qwen2.5-7b", "rlaif",
                                      "meta-rewarding", "spin", "dpo-human", "dno", "cream", "scir", "rlhf")}
RUNS["cream-judge"] = ("cream", ["cream.reward=judge"])
RUNS["rlhf-ift"] = ("rlhf", ["rlhf.prompts=ift"])
SEED = "@SEED@"
RUN = "@RUN@"


def build(config: str, overrides: list[str], root: str) -> dict:
    cfg = load_config(config, [M0, *overrides, f"output_dir={root}"])
    rd = RunDir(root)
    save_config(cfg, rd.config)
    order = schedule(cfg)
    dirs = []
    for stage, t in order:
        out = stage.output(rd, t)
        inputs = rd.input_digests(stage.inputs(cfg, rd, t))  # before the output exists, as the pipeline
        values = stage_values(stage, cfg)
        if out == rd.model(t + 1) or out == rd.model(1) or out == rd.reward_model(t):
            os.makedirs(out, exist_ok=True)
            dirs.append(os.path.relpath(out, root))
        else:
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "w", encoding="utf-8") as f:
                f.write(f"{stage.name} {t}\n")
        rd.write_marker(out, {f"{stage.name}/fixture": 1}, inputs, config_digest(values), [], values)
    files = {}
    for base, _, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            with open(path, encoding="utf-8") as f:
                files[os.path.relpath(path, root)] = f.read()
    return {"config": config, "overrides": [M0, *overrides],
            "schedule": [[s.name, t] for s, t in order], "dirs": sorted(dirs), "files": dict(sorted(files.items()))}


def main() -> int:
    seed_dir = str(importlib.resources.files("srlm.seed"))
    out = {"made_by": "tests/data/make_premove_runs.py at the pre-move layout",
           "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                    cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip(),
           "seed_placeholder": SEED, "run_placeholder": RUN, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config, overrides) in RUNS.items():
            root = os.path.join(tmp, name)
            run = build(config, overrides, root)
            # config.yaml names the run directory (output_dir, which a resume ignores); no marker may.
            run["files"]["config.yaml"] = run["files"]["config.yaml"].replace(root, RUN)
            text = json.dumps(run)
            if root in text:
                raise SystemExit(f"{name}: a marker names the run directory's absolute path")
            out["runs"][name] = json.loads(text.replace(seed_dir, SEED))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "premove_runs.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=0, sort_keys=False, ensure_ascii=False)
        f.write("\n")
    print(f"{path}: {len(out['runs'])} runs, {sum(len(r['schedule']) for r in out['runs'].values())} stages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
