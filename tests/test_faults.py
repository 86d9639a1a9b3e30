"""Crash tests: a tiny run is killed with SIGKILL at fault points (srlm.run.faults) in every stage,
rerun until it finishes, and must end with exactly the artifacts of the uninterrupted tiny_run:
the same prompts, candidates, judgments and pairs of both iterations, the same metrics (timings
aside) and the same weights. Plus hand-made damage: a torn `.partial` line, unreadable and
missing `.done` markers, an unwritable run directory.

The kills run as subprocesses (SIGKILL cannot be caught, so the test process must survive it).
Several kills are chained in one run directory: each rerun resumes the previous kill's leftovers
and is itself killed further on, which costs one run plus a start-up per kill point.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from srlm.run.records import read_jsonl
from tiny import tiny_overrides, write_seed_files

# transformers' default callbacks get TrainerFaults, so kills land mid-training even while the
# stages do not pass it themselves (faults.TrainerFaults counts each event once either way).
RUNNER = """
import sys
import transformers.trainer as T
from srlm.run.faults import TrainerFaults
T.DEFAULT_CALLBACKS = [*T.DEFAULT_CALLBACKS, TrainerFaults]
from srlm.cli import main
sys.exit(main(sys.argv[1:]))
"""
KILLED = -signal.SIGKILL
# Metrics a resumed run cannot reproduce: timings, and TRL's `num_tokens`, which SFTTrainer and
# DPOTrainer count in an attribute (_total_train_tokens) that checkpoints do not save, so after a
# resume it counts only the tokens trained since (the weights are unaffected).
NOT_REPRODUCIBLE = re.compile(r"(wall_s|runtime_s|_per_second|/num_tokens)$")


def srlm(argv, match=None, at=1, log=None, timeout=900):
    """`srlm ARGV` in a subprocess; with match, killed at the at-th fault point matching it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRLM_FAULT_")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if match:
        env |= {"SRLM_FAULT_AT": str(at), "SRLM_FAULT_MATCH": match}
    if log:
        env["SRLM_FAULT_LOG"] = str(log)
    return subprocess.run([sys.executable, "-c", RUNNER, *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def why(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def kill_at(argv, match, tmp_path, at=1) -> str:
    """Run until the fault point; check that it died there. Returns the fatal point's line."""
    log = tmp_path / "faults.log"
    log.unlink(missing_ok=True)
    proc = srlm(argv, match, at, log)
    assert proc.returncode == KILLED, f"not killed at {match!r}: " + why(proc)
    last = log.read_text().splitlines()[-1]
    assert re.search(match, last), last
    return last


def load_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def timeless(metrics: dict) -> dict:
    return {g: {k: v for k, v in vals.items() if not NOT_REPRODUCIBLE.search(k)} if isinstance(vals, dict) else vals
            for g, vals in metrics.items() if g != "eval"}


def assert_same_run(run: str, ref: str) -> None:
    from safetensors.torch import load_file

    for t in (1, 2):
        for name in ("prompts", "candidates", "judgments", "pairs"):
            got = read_jsonl(os.path.join(run, f"iter_{t}", f"{name}.jsonl"))
            assert got == read_jsonl(os.path.join(ref, f"iter_{t}", f"{name}.jsonl")), f"iter_{t}/{name}.jsonl differs"
    got, want = (timeless(load_json(os.path.join(d, "metrics.json"))) for d in (run, ref))
    assert got == want
    for m in ("M1", "M2", "M3"):
        wa = load_file(os.path.join(run, "models", m, "model.safetensors"))
        wb = load_file(os.path.join(ref, "models", m, "model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            # Bitwise: the Trainer restores RNG states, optimizer, scheduler and data order.
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=lambda s, m=m, k=k: f"{m} {k}: {s}")
    ckpt = os.path.join(run, "checkpoints")
    assert not os.path.isdir(ckpt) or not os.listdir(ckpt), "finished stages leave no checkpoints"


def kill_chain(tmp_path, tiny_model, tiny_run, points: list[str]) -> None:
    ift, eft, template = write_seed_files(str(tmp_path))
    argv = ["run", "--config", "tiny", *tiny_overrides(str(tmp_path), tiny_model, ift, eft, template)]
    for match in points:
        kill_at(argv, match, tmp_path)
    proc = srlm(argv)
    assert proc.returncode == 0, why(proc)
    assert_same_run(str(tmp_path / "run"), tiny_run)


# Fault points are regular expressions over "name detail" lines (srlm.run.faults); the tiny loop
# trains SFT for 60 steps (checkpoints at 20, 40, 60) and DPO for one step per iteration.
SFT_MID = r"^train_step .*/checkpoints/sft step 30$"  # resumes from checkpoint-20: RNG, data order, optimizer
SAMPLE_CHUNK = r"^append_jsonl .*/iter_1/candidates\.jsonl\.partial"  # one sampled chunk of two kept

EVERY_STAGE = [
    SFT_MID,
    r"^save_model:before_rename .*/models/M1$",  # M1.tmp complete, not renamed; SFT checkpoints gone
    r"^append_jsonl .*/iter_1/prompts\.jsonl\.partial",  # a self-instruct round kept
    SAMPLE_CHUNK,
    r"^atomic_write_text:after_rename .*/iter_1/judgments\.jsonl$",  # output renamed, no marker
    r"^atomic_write_text:before_rename .*/iter_1/pairs\.jsonl$",  # pairs built, not written
    r"^train_save .*/checkpoints/dpo_1 step 1$",  # DPO checkpoint written, M2 not: resumes at the end
    r"^atomic_write_text:before_rename .*/iter_2/candidates\.jsonl\.done$",  # all chunks written, no marker
    r"^append_jsonl .*/iter_2/judgments\.jsonl\.partial",
    r"^train_step .*/checkpoints/dpo_2 step 1$",  # mid-DPO, before any checkpoint
    r"^atomic_write_text:after_rename .*/models/M3\.started$",
]


def test_point_kills_on_the_nth_matching_call_and_logs_every_call(tmp_path):
    log = tmp_path / "log"
    code = "from srlm.run.faults import point\nfor n in 'abcbd': point(n, 'x' if n == 'a' else '')\nprint('survived')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRLM_FAULT_")}
    run = lambda **e: subprocess.run([sys.executable, "-c", code], env=env | e, capture_output=True, text=True,
                                      check=False)
    proc = run(SRLM_FAULT_AT="3", SRLM_FAULT_LOG=str(log))
    assert proc.returncode == KILLED and "survived" not in proc.stdout
    assert log.read_text() == "a x\nb\nc\n"
    log.unlink()
    proc = run(SRLM_FAULT_AT="2", SRLM_FAULT_MATCH="^b", SRLM_FAULT_LOG=str(log))
    assert proc.returncode == KILLED and log.read_text() == "a x\nb\nc\nb\n"
    log.unlink()
    proc = run(SRLM_FAULT_LOG=str(log))  # log only: never killed
    assert proc.returncode == 0 and "survived" in proc.stdout and log.read_text() == "a x\nb\nc\nb\nd\n"
    proc = run(SRLM_FAULT_AT="9")  # fewer points than N
    assert proc.returncode == 0 and "survived" in proc.stdout


def test_kill_mid_training_and_mid_sampling_then_rerun_is_identical(tmp_path, tiny_model, tiny_run):
    kill_chain(tmp_path, tiny_model, tiny_run, [SFT_MID, SAMPLE_CHUNK])


@pytest.mark.slow
def test_kill_in_every_stage_then_rerun_is_identical(tmp_path, tiny_model, tiny_run):
    kill_chain(tmp_path, tiny_model, tiny_run, EVERY_STAGE)


# -- hand-made damage on a copy of the uninterrupted run -------------------------------------

@pytest.fixture
def copy_of_run(tmp_path, tiny_run) -> str:
    run = str(tmp_path / "copy")
    shutil.copytree(tiny_run, run)
    return run


def test_torn_last_line_of_a_partial_file_is_redone(tmp_path, copy_of_run, tiny_run):
    """A crash in the middle of an append leaves half a line; the chunk is redone on resume."""
    from srlm.cli import main

    judgments = os.path.join(copy_of_run, "iter_1", "judgments.jsonl")
    kill_at(["judge", copy_of_run, "-t", "1", "--redo"], r"^append_jsonl .*/iter_1/judgments\.jsonl\.partial", tmp_path)
    partial = judgments + ".partial.0"
    assert len(read_jsonl(partial)) == 1  # chunk 0 of 2 finished
    with open(partial, "a", encoding="utf-8") as f:
        f.write('{"chunk": 1, "records": [{"id": "')  # chunk 1 torn mid-write, no newline
    assert main(["judge", copy_of_run, "-t", "1"]) == 0
    assert read_jsonl(judgments) == read_jsonl(os.path.join(tiny_run, "iter_1", "judgments.jsonl"))


def test_unreadable_or_missing_marker_runs_the_stage_again(copy_of_run, tiny_run, capsys):
    from srlm.cli import main

    pairs = os.path.join(copy_of_run, "iter_2", "pairs.jsonl")
    with open(pairs + ".done", "wb") as f:
        f.write(b"\x00\xff\xfe not json")
    before = os.stat(pairs).st_mtime_ns
    assert main(["pairs", copy_of_run, "-t", "2"]) == 0
    assert "unreadable marker" in capsys.readouterr().err
    assert os.stat(pairs).st_mtime_ns != before, "pairs should have been rebuilt"
    assert read_jsonl(pairs) == read_jsonl(os.path.join(tiny_run, "iter_2", "pairs.jsonl"))
    assert load_json(pairs + ".done")["inputs"]

    judgments = os.path.join(copy_of_run, "iter_2", "judgments.jsonl")
    os.remove(judgments + ".done")
    before = os.stat(judgments).st_mtime_ns
    assert main(["judge", copy_of_run, "-t", "2"]) == 0
    assert os.stat(judgments).st_mtime_ns != before, "judgments should have been rebuilt"
    assert read_jsonl(judgments) == read_jsonl(os.path.join(tiny_run, "iter_2", "judgments.jsonl"))
    assert load_json(judgments + ".done")["inputs"]


def test_kill_between_marker_and_metrics_keeps_the_metrics(tmp_path, copy_of_run, tiny_run):
    from srlm.cli import main

    kill_at(["pairs", copy_of_run, "-t", "2", "--redo"], r"^atomic_write_text:after_rename .*/iter_2/pairs\.jsonl\.done$",
            tmp_path)
    assert main(["pairs", copy_of_run, "-t", "2"]) == 0
    got = load_json(os.path.join(copy_of_run, "metrics.json")).get("iter_2", {})
    want = load_json(os.path.join(tiny_run, "metrics.json"))["iter_2"]
    assert {k: v for k, v in got.items() if k.startswith("pairs/") and not NOT_REPRODUCIBLE.search(k)} == \
        {k: v for k, v in want.items() if k.startswith("pairs/") and not NOT_REPRODUCIBLE.search(k)}


def test_resume_skips_a_checkpoint_left_incomplete_by_a_kill(tmp_path):
    from srlm.engines.training import last_checkpoint

    for step, files in ((20, ["model.safetensors", "optimizer.pt", "rng_state.pth", "trainer_state.json"]),
                        (40, ["model.safetensors"])):  # killed after the weights, before the rest
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        for name in files:
            (d / name).write_text("{}")
    assert last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-20")


@pytest.mark.parametrize("where", ["parent_is_a_file", "dir_is_a_file"])
def test_unwritable_run_directory_exits_2_naming_it(tmp_path, tiny_run_args, capsys, where):
    from srlm.cli import main

    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file\n")
    out = blocker / "run" if where == "parent_is_a_file" else blocker
    args = [a for a in tiny_run_args if not a.startswith("output_dir=")] + [f"output_dir={out}"]
    assert main(["run", "--config", "tiny", *args]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not writable" in err and "Traceback" not in err
