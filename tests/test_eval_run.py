"""`srlm eval` on a finished tiny run, with an OpenAI-compatible head-to-head judge served
on 127.0.0.1 over the real chat-completions wire format."""

import json
import os
import shutil

import pytest

from openai_server import ChatServer
from srlm.cli import main


@pytest.fixture
def run_copy(tmp_path, tiny_run):
    dst = str(tmp_path / "run")
    shutil.copytree(tiny_run, dst)
    return dst


def test_eval_with_openai_judge(run_copy, tmp_path, tiny_model, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srlm.backends.hf import HFBackend

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"Q{i}", "response_a": "good answer", "response_b": "bad",
                                         "label": "ab"[i % 2]}) + "\n" for i in range(4)))
    secret = "sk-test-do-not-write-me"
    monkeypatch.setenv("SRLM_TEST_KEY", secret)
    backend = HFBackend(AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model))
    with ChatServer(backend=backend, reply="A reads better.\nWinner: A") as server:
        code = main(["eval", run_copy, "--models", "M0,M1,M2", f"eval.human_prefs=[{prefs}]", "eval.max_prompts=3",
                     "eval.max_new_tokens=8", f"eval.judge=openai:judge@{server.base_url}",
                     "backend.api_key_env=SRLM_TEST_KEY"])
        assert code == 0
        auth = [r["headers"].get("Authorization") for r in server.requests if r["method"] == "POST"]
    assert auth and all(a == f"Bearer {secret}" for a in auth)
    m = json.load(open(os.path.join(run_copy, "metrics.json")))["eval"]
    agree = m["judge_agreement"]["prefs"]
    assert set(agree) == {"M0", "M1", "M2"}
    for v in agree.values():
        assert v["pairs"] == 4 and v["correct"] + v["wrong"] + v["judge_ties"] + v["unparsed"] == 4, v
    assert set(m["length"]) == {"M0", "M1", "M2"}
    # A judge that always answers "A" has total position bias: every prompt ends a tie.
    h = m["win_rate"]["M2_vs_M1"]
    assert (h["compared"], h["ties"], h["win_rate"], h["position_bias_first"]) == (3, 3, 0.5, 1.0)
    assert "M1_vs_M0" in m["win_rate"]
    outputs = json.load(open(os.path.join(run_copy, "eval", "alpaca_eval", "M2", "model_outputs.json")))
    assert len(outputs) == 3 and {"instruction", "output", "generator"} <= outputs[0].keys()
    mt = [json.loads(line) for line in open(os.path.join(run_copy, "eval", "mt_bench", "M2.jsonl"))]
    assert mt[0]["choices"][0]["turns"]
    for root, _, files in os.walk(str(tmp_path)):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert secret.encode() not in fh.read(), f
    assert secret not in capsys.readouterr().out
