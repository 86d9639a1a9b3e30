"""Slow tests on the real embedded default model (SmolLM2-135M-Instruct). Run: make test-slow."""

import json
import os

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_backend():
    from srlm.engines.backends.hf import HFBackend
    from srlm.engines.modeling import load_model, load_tokenizer, resolve

    ref = resolve("embedded:smollm2-135m-instruct")
    return HFBackend(load_model(ref, torch.float32), load_tokenizer(ref), batch_size=8)


def test_greedy_fast_path_equals_generate_on_real_model(real_backend):
    from srlm.data import rubric
    from srlm.engines.backends.base import SamplingParams

    b = real_backend
    template = rubric.load_template()
    chats = [[{"role": "user", "content": rubric.render(template, "What is 7 x 8?", a)}] for a in ("56.", "54, I think.")]
    chats.append([{"role": "user", "content": "Name three primary colours."}])
    out = b.generate(chats, SamplingParams(n=1, temperature=0.0, max_new_tokens=48), seed=0)
    for chat, comps in zip(chats, out):
        ids = b.encode([chat])[0]
        g = b.model.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False, pad_token_id=b.pad_id)
        assert comps[0].text == b.tok.decode(g[0][len(ids):], skip_special_tokens=True)


def test_tiny_config_runs_end_to_end_on_real_model(tmp_path):
    from srlm.cli import main

    run = str(tmp_path / "run")
    assert main(["run", "--config", "tiny", "--output-dir", run]) == 0
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert m["iter_1"]["judge/parse_failure_rate"] < 1.0
    assert m["iter_1"]["pairs/kept"] + m["iter_2"]["pairs/kept"] > 0
    assert "judge_agreement" in m["eval"]
    from srlm.evaluation import report

    assert os.path.exists(report.build(run))
