"""The loop under `accelerate launch --multi_gpu --num_processes 2` on the CPU (`--cpu` would
start one process only: accelerate's simple launcher): generation is sharded across the two
processes by chunk, training runs as DDP over gloo. Generation from the same model is identical to a
single-process run record for record; what depends on a DDP-trained model is checked for what
is guaranteed."""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from srlm.run.records import read_jsonl
from tiny import tiny_overrides, write_seed_files

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]

# One launch, several `srlm` commands: the processes start (and load torch) once.
SCRIPT = """
import sys
from srlm.cli import main
for argv in {commands!r}:
    if main(argv) != 0:
        sys.exit(1)
"""
BARRIER = """
import os, sys, time
from srlm.run.parallel import barrier, world
rank, size = world()
assert size == 2, size
barrier()
if rank == 0:
    time.sleep(5)
    open(sys.argv[1], "w").write("rank 0 was here")
barrier()
if rank == 1 and not os.path.exists(sys.argv[1]):
    sys.exit("rank 1 passed the barrier before rank 0 reached it")
"""


def free_port() -> int:
    # A fresh rendezvous port per launch: the last launch's port may still be held.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, env=None):
    args = ["--main_process_port", str(free_port()), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", **(env or {}))
    proc = subprocess.run(LAUNCH + args, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_barrier_waits_for_every_process(tmp_path):
    script = tmp_path / "barrier.py"
    script.write_text(BARRIER)
    launch([str(script), str(tmp_path / "flag")])


@pytest.mark.xfail(strict=True, reason="DPO with precompute_ref_log_probs under DDP: TRL writes the reference "
                   "log-probs to a datasets cache file in rank 0's own temp dir, which rank 1 cannot open (see report)")
def test_two_processes_run_the_loop(tmp_path, tiny_model, tiny_run):
    ift, eft, template = write_seed_files(str(tmp_path))
    script = tmp_path / "loop.py"
    script.write_text(SCRIPT.format(commands=[["run", "--config", "tiny",
                                               *tiny_overrides(str(tmp_path), tiny_model, ift, eft, template)]]))
    log = tmp_path / "faults.log"
    launch([str(script)], env={"SRLM_FAULT_LOG": str(log)})
    assert any(line.endswith(".partial.1") for line in log.read_text().splitlines()), "rank 1 generated nothing"
    run = os.path.join(str(tmp_path), "run")
    for t in (1, 2):
        # M1..M3 differ from the single-process run's: DDP splits each batch across the processes
        # and (with sft.per_device_batch_size=8 on 2 processes) trains with a batch of 16, not 8
        # (trainer_kwargs' gradient accumulation floors at 1). So everything generated from them
        # differs too; guaranteed are the counts the config fixes and the links between files.
        prompts = read_jsonl(os.path.join(run, f"iter_{t}", "prompts.jsonl"))
        cands = read_jsonl(os.path.join(run, f"iter_{t}", "candidates.jsonl"))
        judgments = read_jsonl(os.path.join(run, f"iter_{t}", "judgments.jsonl"))
        pairs = read_jsonl(os.path.join(run, f"iter_{t}", "pairs.jsonl"))
        single = {name: read_jsonl(os.path.join(tiny_run, f"iter_{t}", f"{name}.jsonl"))
                  for name in ("prompts", "candidates", "judgments")}
        assert len(prompts) == len(single["prompts"]) == 4, f"iter_{t}: prompts.num_prompts"
        assert len(cands) == len(single["candidates"]) == 4 * len(prompts), f"iter_{t}: sample.n=4 per prompt"
        assert len(judgments) == len(single["judgments"]) == 2 * len(cands), f"iter_{t}: judge.k=2 per candidate"
        # Chunk order is kept: candidates follow the prompts' order, judgments the candidates'.
        assert [c["prompt_id"] for c in cands] == [p["id"] for p in prompts for _ in range(4)]
        assert [j["candidate_id"] for j in judgments] == [c["id"] for c in cands for _ in range(2)]
        by_id = {c["id"]: c for c in cands}
        for p in pairs:
            assert by_id[p["chosen_id"]]["response"] == p["chosen"]
            assert by_id[p["rejected_id"]]["response"] == p["rejected"]
        assert os.path.exists(os.path.join(run, f"iter_{t}", "pairs.jsonl.done"))
    for m in ("M1", "M2", "M3"):
        assert os.path.exists(os.path.join(run, "models", m, "model.safetensors"))


def test_two_processes_generate_iteration_1_identically(tmp_path, tiny_run):
    """Same M1, same per-chunk seeds: prompts, candidates and judgments of iteration 1 made by two
    processes (alternate chunks each) equal the single-process run's record for record."""
    run = str(tmp_path / "copy")
    shutil.copytree(tiny_run, run)
    script = tmp_path / "generate.py"
    script.write_text(SCRIPT.format(commands=[["prompts", run, "-t", "1", "--redo"], ["sample", run, "-t", "1"],
                                              ["judge", run, "-t", "1"]]))
    log = tmp_path / "faults.log"
    launch([str(script)], env={"SRLM_FAULT_LOG": str(log)})
    for name in ("prompts", "candidates", "judgments"):
        assert read_jsonl(os.path.join(run, "iter_1", f"{name}.jsonl")) == \
            read_jsonl(os.path.join(tiny_run, "iter_1", f"{name}.jsonl")), f"iter_1/{name}.jsonl"
    # Both processes generated: each appended its own chunks (fault log of both ranks).
    appends = [line for line in log.read_text().splitlines() if line.startswith("append_jsonl ")]
    for stage in ("candidates", "judgments"):
        assert any(line.endswith(f"/{stage}.jsonl.partial.0") for line in appends), stage
        assert any(line.endswith(f"/{stage}.jsonl.partial.1") for line in appends), stage
