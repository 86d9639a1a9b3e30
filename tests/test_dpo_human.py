"""DPO on human pairs (method: dpo_human): pairs from pairwise JSONL and Open Assistant ranks,
evaluation prompts removed, counts in metrics; the loop end to end on the tiny model."""

import json
import os

import pytest

from srlm.data import loaders
from srlm.methods import dpo_human
from srlm.run.config import load_config
from srlm.run.records import PairRecord, read_jsonl


def _write_pairwise(path) -> str:
    eval_prompt = loaders.load_prompts("embedded:eval_prompts")[0]["prompt"]
    rows = [
        {"prompt": "Name a colour of the sky.", "response_a": "Blue.", "response_b": "Cheese.", "label": "a"},
        {"prompt": "What is two plus two?", "response_a": "Five.", "response_b": "Four.", "label": "b"},
        {"prompt": "Pick a fruit.", "response_a": "Apple.", "response_b": "Pear.", "label": "tie"},
        # An evaluation prompt, exactly (case and spacing differ) and nearly (one word added).
        {"prompt": "  " + eval_prompt.upper() + " ", "response_a": "x", "response_b": "y", "label": "a"},
        {"prompt": eval_prompt + " please", "response_a": "x", "response_b": "y", "label": "b"},
        {"prompt": "Say hello politely.", "response_a": "hey", "response_b": "Hello, nice to meet you.", "label": "b"},
    ]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def test_pairwise_file(tmp_path):
    src = _write_pairwise(tmp_path / "train.jsonl")
    cfg = load_config("tiny", ["method=dpo_human", "iterations=1", f"pairs.human_train={src}"])
    pairs, stats = dpo_human.build(cfg)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("Name a colour of the sky.", "Blue.", "Cheese."),
        ("What is two plus two?", "Four.", "Five."),
        ("Say hello politely.", "Hello, nice to meet you.", "hey"),
    ]
    assert stats == {"human_pairs/input_ties_skipped": 1, "human_pairs/groups": 5, "human_pairs/kept": 3,
                     "human_pairs/dropped_exact_duplicate_of_eval": 1,
                     "human_pairs/dropped_near_duplicate_of_eval": 1}
    assert all(p.score_chosen is None and p.confidence is None for p in pairs)
    assert pairs[1].chosen_length == 5 and pairs[1].rejected_length == 5
    assert len({p.id for p in pairs}) == 3


def test_oasst_best_vs_worst_and_subset():
    cfg = load_config("dpo-human", ["pairs.max_human_train=0"])
    pairs, stats = dpo_human.build(cfg)
    groups = loaders.oasst_ranked_groups(loaders.source_files("embedded:oasst")[0])
    assert len(pairs) == stats["human_pairs/kept"] == len(groups) - stats["human_pairs/dropped_exact_duplicate_of_eval"] \
        - stats["human_pairs/dropped_near_duplicate_of_eval"]
    best_worst = {prompt: (replies[0], replies[-1]) for prompt, replies in groups}
    for p in pairs:
        assert (p.chosen, p.rejected) == best_worst[p.prompt]
    five = dpo_human.build(load_config("dpo-human", ["pairs.max_human_train=5"]))[0]
    assert len(five) == 5 and [p.id for p in five] == [p.id for p in pairs if p.id in {q.id for q in five}]
    assert [p.id for p in five] == [p.id for p in dpo_human.build(load_config("dpo-human", ["pairs.max_human_train=5"]))[0]]
    assert [p.id for p in five] != [p.id for p in pairs[:5]] or len(pairs) == 5  # a sample, not the head


def test_config_refuses_without_file_or_with_iterations():
    with pytest.raises(ValueError, match="needs pairs.human_train"):
        load_config("tiny", ["method=dpo_human", "iterations=1"])
    with pytest.raises(ValueError, match="iterations must be 0 or 1"):
        load_config("dpo-human", ["iterations=2"])


def test_dpo_human_end_to_end(tmp_path, tiny_run_args):
    from srlm.cli import main

    src = _write_pairwise(tmp_path / "train.jsonl")
    assert main(["run", "--config", "tiny", *tiny_run_args, "method=dpo_human", "iterations=1",
                 f"pairs.human_train={src}", "sft.epochs=1"]) == 0
    run = tiny_run_args[0].split("=", 1)[1]
    it = os.path.join(run, "iter_1")
    assert sorted(f for f in os.listdir(it) if f.endswith(".jsonl")) == ["pairs.jsonl"]  # no prompts/sample/judge
    pairs = read_jsonl(os.path.join(it, "pairs.jsonl"), PairRecord)
    assert len(pairs) == 3
    m = json.load(open(os.path.join(run, "metrics.json")))["iter_1"]
    assert m["human_pairs/kept"] == 3 and m["human_pairs/dropped_exact_duplicate_of_eval"] == 1
    assert m["dpo/pairs"] == 3 and m["dpo/start"] == "M1" and "dpo/loss" in m
    assert os.path.exists(os.path.join(run, "models", "M2.done"))
    assert not os.path.exists(os.path.join(run, "models", "M3"))
