"""`srlm eval` on a finished tiny run, with an OpenAI-compatible head-to-head judge served
on 127.0.0.1 over the real chat-completions wire format, and with the models as their own judges."""

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

    from srlm.engines.backends.hf import HFBackend

    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"Q{i}", "response_a": "good answer", "response_b": "bad",
                                         "label": "ab"[i % 2], "category": "xxxy"[i]}) + "\n" for i in range(4)))
    secret = "sk-test-do-not-write-me"
    monkeypatch.setenv("SRLM_TEST_KEY", secret)
    backend = HFBackend(AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model))
    with ChatServer(backend=backend, reply="A reads better.\nScore: 4\nWinner: A") as server:
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
    assert "M1_vs_M0" in m["win_rate"] and "win_rate_at_equal_length" in h
    # "The longer response wins": a (11 chars) beats b (3), humans alternate a, b -> 2 of 4;
    # category x holds labels a, b, a (2 of 3), y the one b (0 of 1).
    base = m["baselines"]["prefs"]
    assert base["length"] == {"accuracy": 0.5, "correct": 2, "wrong": 2, "ties": 0, "n": 4, "human_ties": 0}
    assert base["by_category"]["x"]["length"]["accuracy"] == pytest.approx(2 / 3)
    assert base["by_category"]["y"]["length"]["accuracy"] == 0.0
    for v in agree.values():
        assert {c: s["pairs"] for c, s in v["by_category"].items()} == {"x": 3, "y": 1}
    # The external pairwise judge on the human pairs: "A" in both orders names a, then b.
    pw = m["pairwise_agreement"]["prefs"]["judge"]
    assert (pw["both_parsed"], pw["consistency"], pw["first_position_rate"], pw["judge_ties"], pw["accuracy"]) == (
        4, 0.0, 1.0, 4, 0.0)
    assert set(pw["by_category"]) == {"x", "y"}
    # Pointwise: every answer scores 4, so every prompt ties; each model's answers judged once.
    p = m["win_rate_pointwise"]["M2_vs_M1"]
    assert (p["compared"], p["ties"], p["win_rate"], p["mean_score_x"], p["mean_score_y"]) == (3, 3, 0.5, 4.0, 4.0)
    assert "M1_vs_M0" in m["win_rate_pointwise"]
    assert sorted(f for f in os.listdir(os.path.join(run_copy, "eval")) if f.startswith("pointwise_")) == [
        f"pointwise_M{i}_by_judge.jsonl{d}" for i in range(3) for d in ("", ".done")]
    outputs = json.load(open(os.path.join(run_copy, "eval", "alpaca_eval", "M2", "model_outputs.json")))
    assert len(outputs) == 3 and {"instruction", "output", "generator"} <= outputs[0].keys()
    mt = [json.loads(line) for line in open(os.path.join(run_copy, "eval", "mt_bench", "M2.jsonl"))]
    assert mt[0]["choices"][0]["turns"]
    for root, _, files in os.walk(str(tmp_path)):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert secret.encode() not in fh.read(), f
    assert secret not in capsys.readouterr().out


def test_eval_self_judge(run_copy, tmp_path):
    """With eval.judge=self each model is its own pairwise judge on the human pairs, and the
    newer model of a pair scores both sides for the pointwise win rate."""
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"Q{i}", "response_a": "a" * (i + 1), "response_b": "bb",
                                         "label": "ab"[i % 2]}) + "\n" for i in range(3)))
    assert main(["eval", run_copy, "--models", "M1,M2", f"eval.human_prefs=[{prefs}]", "eval.max_prompts=2",
                 "eval.max_new_tokens=8", "eval.k=1"]) == 0
    m = json.load(open(os.path.join(run_copy, "metrics.json")))["eval"]
    # lengths a: 1, 2, 3 vs b: 2 -> pair 1 (human a) wrong, pair 2 tie, pair 3 (human a) correct
    assert m["baselines"]["prefs"]["length"] == {"accuracy": 1 / 3, "correct": 1, "wrong": 1, "ties": 1, "n": 3,
                                                 "human_ties": 0}
    assert set(m["pairwise_agreement"]["prefs"]) == {"M1", "M2"}
    for v in m["pairwise_agreement"]["prefs"].values():
        assert v["both_parsed"] + v["unparsed_pairs"] == 3
        assert v["correct"] + v["wrong"] + v["judge_ties"] + v["unparsed"] == 3
        assert v["judge"] == "self" and "by_category" not in v
    p = m["win_rate_pointwise"]["M2_vs_M1"]
    assert p["judge_model"] == "M2" and p["prompts"] == 2 and p["compared"] + p["unparsed_prompts"] == 2
    assert os.path.exists(os.path.join(run_copy, "eval", "pointwise_M1_by_M2.jsonl.done"))
    assert "M2_vs_M1" in m["win_rate"]
