"""A learning test of the training half (slow: the real embedded model). With the checker as the
reward, one iteration of the loop (verifiable prompts -> samples -> checker -> highest vs lowest
-> DPO) must raise the rate at which the model follows the trained instruction on prompts it
never trained on; with chosen and rejected swapped, the same run must not. The second case is
what shows the first can fail: a test that passed whatever DPO did would pass both.

The instruction is IFEval's punctuation:no_comma: SmolLM2-135M-Instruct follows it in a minority
of its 48-token samples (about 1 in 8, docs/LOG.md 2026-12-04), so many prompts form a pair and
the rate can move either way. Its first choice, english_lowercase, is followed in 1 of 256
samples, which forms one pair: nothing to learn from. (On the tiny random model of the fast
tests a DPO step moves only the few tokens it saw, so no instruction's rate moves on unseen
prompts: this needs a real model.)
"""

import json
import os
import random

import pytest

from srlm.engines.backends import SamplingParams, make_backend
from srlm.engines.modeling import ModelRef
from srlm.loop import verifier
from srlm.run.config import load_config

pytestmark = pytest.mark.slow

NO_COMMA = "punctuation:no_comma"
TOKENS = 48
TRAIN_TOPICS = ["the sea", "a cat", "rain", "coffee", "a train", "winter", "music", "a garden", "a river", "bread",
                "a lamp", "the wind", "a bridge", "a violin", "a kite", "an owl", "a library", "the moon",
                "a bicycle", "tea", "a forest", "a painting", "snow", "a dog", "a beach", "a city", "a farm",
                "a piano", "an island", "a market", "a castle", "a volcano"]
HELD_OUT_TOPICS = ["a mountain", "the desert", "a clock", "honey", "a storm", "a candle", "a ship", "a fox",
                   "a lighthouse", "autumn", "a museum", "a garden hose", "a telescope", "a waterfall", "a bakery",
                   "a tiger"]


def _pass_rate(cfg, model_dir: str, seed: int = 0) -> tuple[float, float]:
    """Share of sampled answers (4 per held-out prompt, the loop's sampling settings) that follow
    the no-comma instruction, by IFEval's checker; and their mean length in characters."""
    rng = random.Random(seed)
    prompts = [verifier.attach(f"Write a short paragraph about {t}.", rng, 1, [NO_COMMA]) for t in HELD_OUT_TOPICS]
    backend = make_backend(cfg, ModelRef(model_dir))
    try:
        outs = backend.generate([[{"role": "user", "content": p}] for p, _, _ in prompts],
                                SamplingParams(n=4, temperature=0.7, top_p=0.9, max_new_tokens=TOKENS), seed)
    finally:
        backend.close()
    items = [(f"h{i}-{j}", p, ids, kw, c.text) for i, ((p, ids, kw), comps) in enumerate(zip(prompts, outs))
             for j, c in enumerate(comps)]
    follow = verifier.check(items)
    return sum(f[0] for f in follow) / len(follow), sum(len(it[-1]) for it in items) / len(items)


def _swap_pairs(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    for r in rows:
        for a, b in (("chosen", "rejected"), ("chosen_id", "rejected_id"), ("score_chosen", "score_rejected"),
                     ("chosen_length", "rejected_length")):
            r[a], r[b] = r[b], r[a]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize("swap", [False, True], ids=["as_built", "chosen_rejected_swapped"])
def test_checker_reward_teaches_the_instruction(tmp_path, swap):
    from srlm.cli import main

    ift = tmp_path / "ift.jsonl"
    ift.write_text("".join(json.dumps({"prompt": f"Write a short paragraph about {t}.", "response": "ok."}) + "\n"
                           for t in TRAIN_TOPICS))
    run = str(tmp_path / "run")
    args = ["run", "--config", "verified", f"output_dir={run}", f"data.ift=[{ift}]", "iterations=1",
            "eval.enabled=false", "prompts.num_prompts=128", "prompts.verifiable_max=1", "prompts.holdout_families=[]",
            f"prompts.verifiable_families=[{NO_COMMA}]", f"sample.max_new_tokens={TOKENS}"]  # DPO as verified.yaml trains
    assert main(args) == 0
    pairs = os.path.join(run, "iter_1", "pairs.jsonl")
    if swap:  # the rerun sees pairs.jsonl changed and retrains M2 on the swapped pairs
        _swap_pairs(pairs)
        assert main(args) == 0
    assert sum(1 for _ in open(pairs)) >= 16
    cfg = load_config(os.path.join(run, "config.yaml"))
    before, len_before = _pass_rate(cfg, os.path.join(run, "models", "M1"))
    after, len_after = _pass_rate(cfg, os.path.join(run, "models", "M2"))
    print(f"no comma followed on held-out prompts: M1 {before:.3f} -> M2 {after:.3f}; mean answer chars "
          f"{len_before:.0f} -> {len_after:.0f} (swap={swap})")
    if swap:
        assert after <= before, (before, after)
    else:
        assert after >= before + 0.15, (before, after)
        assert len_after >= 20, len_after  # sentences, not an empty answer that has no comma either
