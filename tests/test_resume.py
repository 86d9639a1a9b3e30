"""Kill a run mid-stage, rerun the same command: nothing finished is redone or lost, and the
artifacts equal those of an uninterrupted run with the same seed (the tiny_run fixture)."""

import os

import pytest
import torch

from srlm.engines.backends.hf import HFBackend
from srlm.run.records import read_jsonl
from tiny import tiny_overrides, write_seed_files


class Crash(Exception):
    pass


def test_resume_after_crash_mid_judging(tmp_path, tiny_model, tiny_run, monkeypatch):
    from srlm.cli import main

    calls = {}
    real_generate = HFBackend.generate

    def crashing(self, chats, params, seed):
        if params.stop_at_score:
            calls["judge"] = calls.get("judge", 0) + 1
        if calls.get("judge", 0) == 2:  # iteration 1: first judge chunk done, second crashes
            raise Crash("simulated crash")
        return real_generate(self, chats, params, seed)

    ift, eft, template = write_seed_files(str(tmp_path))
    args = ["run", "--config", "tiny", *tiny_overrides(str(tmp_path), tiny_model, ift, eft, template)]
    monkeypatch.setattr(HFBackend, "generate", crashing)
    with pytest.raises(Crash):
        main(args)
    run = os.path.join(str(tmp_path), "run")
    it1 = os.path.join(run, "iter_1")
    assert os.path.exists(os.path.join(it1, "candidates.jsonl.done"))
    assert not os.path.exists(os.path.join(it1, "judgments.jsonl.done"))
    partial = [f for f in os.listdir(it1) if f.startswith("judgments.jsonl.partial")]
    assert partial, "the crash should leave finished judge chunks behind"
    done_chunks = len(read_jsonl(os.path.join(it1, partial[0])))
    assert done_chunks >= 1

    monkeypatch.setattr(HFBackend, "generate", real_generate)
    resumed_calls = {"judge": 0}

    def counting(self, chats, params, seed):
        if params.stop_at_score:
            resumed_calls["judge"] += 1
        return real_generate(self, chats, params, seed)

    monkeypatch.setattr(HFBackend, "generate", counting)
    assert main(args) == 0
    n_cands = len(read_jsonl(os.path.join(it1, "candidates.jsonl")))
    chunks_total = -(-n_cands // 8)
    # Iteration 1 redid only the unfinished judge chunks; iteration 2 judged everything.
    n2 = len(read_jsonl(os.path.join(run, "iter_2", "candidates.jsonl")))
    assert resumed_calls["judge"] == (chunks_total - done_chunks) + -(-n2 // 8)

    for t in (1, 2):
        for name in ("prompts", "candidates", "judgments", "pairs"):
            a = read_jsonl(os.path.join(run, f"iter_{t}", f"{name}.jsonl"))
            b = read_jsonl(os.path.join(tiny_run, f"iter_{t}", f"{name}.jsonl"))
            assert a == b, f"iter_{t}/{name}.jsonl differs from the uninterrupted run"
    from safetensors.torch import load_file

    wa = load_file(os.path.join(run, "models", "M3", "model.safetensors"))
    wb = load_file(os.path.join(tiny_run, "models", "M3", "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])
