"""Classical RLHF (method: rlhf): the reward model's accuracy and its length baseline by hand, the
held-out split, the RL prompts, config validation, and the loop end to end on the tiny model
(human pairs -> reward model -> RLOO -> M2)."""

import json
import os

import pytest

from srlm import stages
from srlm.data import loaders
from srlm.methods import rlhf
from srlm.run.config import load_config
from srlm.run.records import PairRecord, read_jsonl


def _pair(i: int, prompt: str, chosen: str, rejected: str) -> PairRecord:
    return PairRecord(id=f"p{i}", prompt_id=f"g{i}", prompt=prompt, chosen=chosen, rejected=rejected,
                      chosen_id=f"g{i}-r0", rejected_id=f"g{i}-r1", score_chosen=None, score_rejected=None,
                      chosen_length=len(chosen), rejected_length=len(rejected))


def test_pairwise_accuracy_by_hand():
    # Pairs: won, lost, tie, won -> (1 + 0 + 0.5 + 1) / 4 = 0.625.
    assert rlhf.pairwise_accuracy([2.0, -1.0, 0.3, 5.0], [1.0, 0.5, 0.3, -5.0]) == 0.625
    assert rlhf.pairwise_accuracy([1.0, 1.0], [1.0, 1.0]) == 0.5  # all ties: chance, not 0 or 1
    assert rlhf.pairwise_accuracy([0.0], [1e-6]) == 0.0
    assert rlhf.pairwise_accuracy([], []) is None
    with pytest.raises(ValueError):
        rlhf.pairwise_accuracy([1.0], [])


def test_length_baseline_by_hand():
    pairs = [_pair(0, "q", "a long answer", "short"),  # longer chosen: the heuristic is right
             _pair(1, "q", "no", "a much longer one"),  # shorter chosen: wrong
             _pair(2, "q", "same", "size")]  # equal lengths: half
    assert rlhf.length_accuracy(pairs) == 0.5  # (1 + 0 + 0.5) / 3
    assert rlhf.length_accuracy(pairs[:1]) == 1.0


def test_split_heldout_is_seeded_disjoint_and_bounded():
    train, held = rlhf.split_heldout(10, 0.2, seed=42)
    assert len(held) == 2 and len(train) == 8 and sorted(train + held) == list(range(10))
    assert train == sorted(train) and held == sorted(held)
    assert (train, held) == rlhf.split_heldout(10, 0.2, seed=42)
    assert any(rlhf.split_heldout(10, 0.2, seed=s)[1] != held for s in range(43, 48))
    assert rlhf.split_heldout(3, 0.01, seed=1)[1].__len__() == 1  # fraction > 0 holds out at least one
    assert rlhf.split_heldout(1, 0.5, seed=1) == ([0], [])  # but always leaves one to train on
    assert rlhf.split_heldout(4, 0.0, seed=1) == ([0, 1, 2, 3], [])
    assert rlhf.split_heldout(0, 0.2, seed=1) == ([], [])


def _write_pairwise(path) -> str:
    """Six usable pairs (chosen = the longer, polite answer) plus a tie and an evaluation prompt."""
    eval_prompt = loaders.load_prompts("embedded:eval_prompts")[0]["prompt"]
    topics = ["the sea", "a cat", "rain", "coffee", "a train", "winter"]
    rows = [{"prompt": f"Write one sentence about {t}.", "response_a": f"Here is a sentence about {t}: it is lovely.",
             "response_b": "no", "label": "a"} for t in topics]
    rows += [{"prompt": "Pick a fruit.", "response_a": "Apple.", "response_b": "Pear.", "label": "tie"},
             {"prompt": eval_prompt, "response_a": "x", "response_b": "y", "label": "a"}]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def test_rl_prompts_pairs_ift_and_subset(tmp_path):
    src = _write_pairwise(tmp_path / "train.jsonl")
    eval_prompt = loaders.load_prompts("embedded:eval_prompts")[0]["prompt"]
    ift = tmp_path / "ift.jsonl"
    ift.write_text("".join(json.dumps({"prompt": p, "response": "r"}) + "\n"
                           for p in ["Say hi.", eval_prompt, "Say hi.", "Count to three."]))
    pairs = [_pair(0, "A?", "a", "b"), _pair(1, "B?", "a", "b"), _pair(2, "A?", "c", "d")]
    cfg = load_config("tiny", ["method=rlhf", "iterations=1", f"pairs.human_train={src}"])
    assert rlhf.rl_prompts(cfg, pairs) == ["A?", "B?"]  # each prompt once, in order
    cfg = load_config("tiny", ["method=rlhf", "iterations=1", f"pairs.human_train={src}", "rlhf.prompts=ift",
                               f"data.ift=[{ift}]", "data.max_ift=0"])
    assert rlhf.rl_prompts(cfg, pairs) == ["Say hi.", "Count to three."]  # the evaluation prompt is dropped
    many = [_pair(i, f"Q{i}?", "a", "b") for i in range(10)]
    cfg = load_config("tiny", ["method=rlhf", "iterations=1", f"pairs.human_train={src}", "rlhf.max_prompts=3"])
    sub = rlhf.rl_prompts(cfg, many)
    assert len(sub) == 3 and sub == rlhf.rl_prompts(cfg, many) and sub == sorted(sub, key=lambda q: int(q[1:-1]))


def test_reward_log_summary():
    log = [{"loss": 0.1, "reward": 0.2, "step": 1}, {"loss": 0.0, "step": 2}, {"loss": 0.2, "reward": 0.7, "step": 3},
           {"train_runtime": 1.0}]
    assert rlhf.reward_log_summary(log) == {"rl/reward_first": 0.2, "rl/reward_last": 0.7}
    assert rlhf.reward_log_summary([{"loss": 1.0}]) == {}


def test_config_validation(tmp_path):
    src = _write_pairwise(tmp_path / "train.jsonl")
    with pytest.raises(ValueError, match="method rlhf needs pairs.human_train"):
        load_config("tiny", ["method=rlhf", "iterations=1"])
    with pytest.raises(ValueError, match="iterations must be 0 or 1"):
        load_config("tiny", ["method=rlhf", "iterations=2", f"pairs.human_train={src}"])
    with pytest.raises(ValueError, match="rlhf.batch_size"):
        load_config("tiny", ["method=rlhf", "iterations=1", f"pairs.human_train={src}", "rlhf.num_generations=3",
                             "rlhf.batch_size=8", "rlhf.per_device_batch_size=4"])
    with pytest.raises(ValueError, match="rlhf.reward_batch_size"):
        load_config("tiny", ["method=rlhf", "iterations=1", f"pairs.human_train={src}", "rlhf.reward_batch_size=6",
                             "rlhf.reward_per_device_batch_size=4"])
    with pytest.raises(ValueError):
        load_config("tiny", ["method=rlhf", "iterations=1", f"pairs.human_train={src}", "rlhf.trainer=ppo"])
    # Other methods ignore the rlhf section's batch arithmetic.
    load_config("tiny", ["rlhf.num_generations=3"])


def test_schedule_swaps_dpo_for_reward_model_and_rl(tmp_path):
    src = _write_pairwise(tmp_path / "train.jsonl")
    cfg = load_config("tiny", ["method=rlhf", "iterations=1", f"pairs.human_train={src}"])
    assert [(s.name, t) for s, t in stages.schedule(cfg)] == [
        ("sft", 0), ("human_pairs", 1), ("reward_model", 1), ("rl", 1)]
    names = [s.name for s, _ in stages.schedule(load_config("tiny"))]
    assert "dpo" in names and "reward_model" not in names and "rl" not in names
    # Changing an RL setting reruns rl only; a reward-model setting reruns both (rl reads the model).
    assert "rlhf.beta" in stages.BY_NAME["rl"].keys and "rlhf.beta" not in stages.BY_NAME["reward_model"].keys
    assert "rlhf.reward_epochs" in stages.BY_NAME["reward_model"].keys


def test_rlhf_end_to_end(tmp_path, tiny_run_args):
    from srlm.cli import main

    src = _write_pairwise(tmp_path / "train.jsonl")
    assert main(["run", "--config", "tiny", *tiny_run_args, "method=rlhf", "iterations=1",
                 f"pairs.human_train={src}", "sft.epochs=1", "rlhf.lora=false",
                 "rlhf.heldout_fraction=0.34", "rlhf.reward_batch_size=2", "rlhf.reward_per_device_batch_size=2",
                 "rlhf.reward_max_length=256", "rlhf.reward_epochs=4", "rlhf.reward_learning_rate=3e-3",
                 "rlhf.num_generations=2", "rlhf.batch_size=4", "rlhf.per_device_batch_size=2",
                 "rlhf.max_completion_length=8", "rlhf.learning_rate=1e-4", "rlhf.max_prompts=4"]) == 0
    run = tiny_run_args[0].split("=", 1)[1]
    it = os.path.join(run, "iter_1")
    assert sorted(f for f in os.listdir(it) if f.endswith(".jsonl")) == ["pairs.jsonl"]  # no prompts/sample/judge
    pairs = read_jsonl(os.path.join(it, "pairs.jsonl"), PairRecord)
    assert len(pairs) == 6
    rm = os.path.join(it, "reward_model")
    assert os.path.exists(rm + ".done") and os.path.exists(os.path.join(rm, "config.json"))
    held = read_jsonl(os.path.join(rm, rlhf.HELDOUT_FILE))
    m = json.load(open(os.path.join(run, "metrics.json")))["iter_1"]
    assert m["reward_model/train_pairs"] == 4 and m["reward_model/heldout_pairs"] == len(held) == 2
    assert m["reward_model/heldout_accuracy"] == rlhf.pairwise_accuracy(
        [h["reward_chosen"] for h in held], [h["reward_rejected"] for h in held])
    assert m["reward_model/length_baseline"] == 1.0  # every chosen answer is the longer one
    # The pairs' signal (a full answer over "no") is easy: the reward model learns it and ranks both
    # held-out pairs right, with a clear margin.
    assert m["reward_model/heldout_accuracy"] == 1.0 and m["reward_model/loss"] < m["reward_model/first_loss"]
    assert all(h["reward_chosen"] - h["reward_rejected"] > 0.1 for h in held)
    # The saved reward model scores as it did when the stage measured it.
    model, tok = rlhf.load_reward_model(rm)
    byid = {p.id: p for p in pairs}
    again = rlhf.score(model, tok, [byid[h["id"]].prompt for h in held], [byid[h["id"]].chosen for h in held], 256)
    assert again == pytest.approx([h["reward_chosen"] for h in held], abs=1e-4)
    assert m["rl/trainer"] == "rloo" and m["rl/prompts"] == 4 and m["rl/start"] == "M1"
    assert m["rl/steps"] >= 1 and "rl/reward_first" in m and "rl/reward_last" in m and "rl/kl" in m
    assert os.path.exists(os.path.join(run, "models", "M2.done"))
    assert os.path.exists(os.path.join(run, "models", "M2", "config.json"))
    assert os.path.exists(os.path.join(it, "rl_log.json"))
    assert not os.path.exists(os.path.join(run, "models", "M3")) and "dpo/loss" not in m


def test_packaged_config_shares_default_m1_and_evaluation():
    from srlm.run.config import to_dict

    default, cfg = to_dict(load_config("default")), to_dict(load_config("rlhf"))
    for key in ("seed", "model", "data", "sft", "eft_build", "eval", "backend", "judge"):
        assert cfg[key] == default[key], f"rlhf.yaml differs from default.yaml in {key}"
    assert cfg["method"] == "rlhf" and cfg["iterations"] == 1 and cfg["pairs"]["human_train"] == "embedded:oasst"
    r = load_config("rlhf").rlhf
    assert r.batch_size % r.num_generations == 0 and r.trainer == "rloo"


def test_lora_reward_model_and_grpo(tmp_path, tiny_model, tiny_run_args):
    """The packaged config's path: LoRA for both models (the score head trains and survives the
    merge), and the GRPO trainer; the stages called directly on a run whose M1 is the tiny model."""
    import shutil

    from srlm.run.records import write_jsonl
    from srlm.run.rundir import RunDir

    src = _write_pairwise(tmp_path / "train.jsonl")
    cfg = load_config("tiny", [*tiny_run_args, "method=rlhf", "iterations=1", f"pairs.human_train={src}",
                               "rlhf.lora=true", "rlhf.lora_r=4", "rlhf.trainer=grpo", "rlhf.heldout_fraction=0.34",
                               "rlhf.reward_batch_size=2", "rlhf.reward_per_device_batch_size=2",
                               "rlhf.reward_max_length=256", "rlhf.reward_epochs=4", "rlhf.reward_learning_rate=3e-2",
                               "rlhf.num_generations=2", "rlhf.batch_size=4", "rlhf.per_device_batch_size=2",
                               "rlhf.max_completion_length=6", "rlhf.max_prompts=2", "rlhf.learning_rate=1e-3"])
    rd = RunDir(cfg.output_dir)
    shutil.copytree(tiny_model, rd.model(1))
    from srlm.methods import dpo_human

    os.makedirs(rd.iter_dir(1))
    write_jsonl(rd.pairs(1), dpo_human.build(cfg)[0])
    stats = rlhf.run_reward_model(cfg, rd, 1)
    assert stats["reward_model/train_pairs"] == 4 and stats["reward_model/heldout_pairs"] == 2
    assert stats["reward_model/heldout_accuracy"] == 1.0
    # The merged reward model has no adapter left and scores as the stage measured.
    assert not any("lora" in n for n, _ in rlhf.load_reward_model(rd.reward_model(1))[0].named_parameters())
    held = read_jsonl(os.path.join(rd.reward_model(1), rlhf.HELDOUT_FILE))
    model, tok = rlhf.load_reward_model(rd.reward_model(1))
    byid = {p.id: p for p in read_jsonl(rd.pairs(1), PairRecord)}
    again = rlhf.score(model, tok, [byid[h["id"]].prompt for h in held], [byid[h["id"]].rejected for h in held], 256)
    assert again == pytest.approx([h["reward_rejected"] for h in held], abs=1e-4)
    stats = rlhf.run_rl(cfg, rd, 1)
    assert stats["rl/trainer"] == "grpo" and stats["rl/prompts"] == 2 and stats["rl/steps"] >= 1
    assert os.path.exists(os.path.join(rd.model(2), "config.json")) and os.path.exists(rd.rl_log(1))
    from transformers import AutoModelForCausalLM

    m1, m2 = (AutoModelForCausalLM.from_pretrained(rd.model(t)) for t in (1, 2))
    assert not any("lora" in n for n, _ in m2.named_parameters())
    assert any((a - b).abs().max() > 0 for a, b in zip(m1.parameters(), m2.parameters()))  # the merge moved M2
