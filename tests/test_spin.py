"""SPIN (method: spin): seed prompt subset, gold lookup, and the loop end to end on the tiny model."""

import json
import os

import pytest

from srlm.data import loaders
from srlm.methods import spin
from srlm.run.records import CandidateRecord, InputError, PromptRecord, read_jsonl


def test_seed_subset_is_seeded_sorted_and_bounded():
    a = spin.seed_subset(100, 10, seed=42)
    assert a == spin.seed_subset(100, 10, seed=42) and a == sorted(a) and len(set(a)) == 10
    assert all(0 <= i < 100 for i in a)
    assert a != spin.seed_subset(100, 10, seed=43)
    assert spin.seed_subset(5, 10, seed=42) == [0, 1, 2, 3, 4]  # fewer seeds than asked: all of them


def test_prompt_ids_and_gold():
    ift = [loaders.IFTExample("q0", "a0"), loaders.IFTExample("q1", "a1"), loaders.IFTExample("q2", "a2")]
    assert spin.prompt_id(3, 2) == "t3-seed00002" and spin.seed_index("t3-seed00002") == 2
    prompts = [PromptRecord(spin.prompt_id(1, 2), "q2", "seed", 1), PromptRecord(spin.prompt_id(1, 0), "q0", "seed", 1)]
    assert spin.gold_for(prompts, ift) == [("t1-seed00002", "q2", "a2"), ("t1-seed00000", "q0", "a0")]
    with pytest.raises(InputError, match="redo seed_prompts"):
        spin.gold_for([PromptRecord(spin.prompt_id(1, 1), "changed", "seed", 1)], ift)


def test_spin_loop_end_to_end(tmp_path, tiny_run_args):
    from srlm.cli import main

    # SPIN needs no judge-trained M1 (no self-instruct, no judge): one SFT epoch keeps the test short.
    assert main(["run", "--config", "tiny", *tiny_run_args, "method=spin", "dpo.init=previous", "sft.epochs=1"]) == 0
    run = tiny_run_args[0].split("=", 1)[1]
    ift = {ex.prompt: ex.response for ex in loaders.load_ift([os.path.join(str(tmp_path), "ift.jsonl")])}
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    per_iter = []
    for t in (1, 2):
        it = os.path.join(run, f"iter_{t}")
        assert not os.path.exists(os.path.join(it, "judgments.jsonl"))  # no judge in SPIN
        prompts = read_jsonl(os.path.join(it, "prompts.jsonl"), PromptRecord)
        assert len(prompts) == 4 and all(p.source == "seed" and p.prompt in ift for p in prompts)
        cands = {c.id: c for c in read_jsonl(os.path.join(it, "candidates.jsonl"), CandidateRecord)}
        pairs = read_jsonl(os.path.join(it, "pairs.jsonl"))
        own = [p for p in pairs if p["lag"] == 0]
        m = metrics[f"iter_{t}"]
        assert len(own) + m["spin/dropped_same_as_gold"] == 4 and own
        for p in own:
            assert p["kind"] == "spin" and p["chosen"] == ift[p["prompt"]]
            sample = cands[p["rejected_id"]]
            assert sample.index == 0 and p["rejected"] == sample.response and sample.prompt_id == p["prompt_id"]
            assert p["prompt_id"].startswith(f"t{t}-seed")
        per_iter.append((prompts, own, pairs))
        assert m["pairs/kept"] == len(pairs) and m["dpo/pairs"] == len(pairs)
        assert m["dpo/start"] == f"M{t}"  # dpo.init=previous: SPIN's reference is M_t
        assert "judge/judgments" not in m
    # The same seed prompts each iteration; iteration 2 adds iteration 1's own pairs, marked lag 1.
    assert [p.prompt for p in per_iter[0][0]] == [p.prompt for p in per_iter[1][0]]
    replayed = [p for p in per_iter[1][2] if p["lag"] == 1]
    assert [p["id"] for p in replayed] == [p["id"] for p in per_iter[0][1]]
    assert metrics["iter_2"]["spin/replayed"] == len(per_iter[0][1])
    assert os.path.exists(os.path.join(run, "models", "M3.done"))
