"""`srlm eval`'s IFEval breakdown from the cached scored rows (evaluate.ifeval_breakdown): per
family, held-out vs trained subsets and paired deltas against M0 and M1, with no model."""

import json
import os
from types import SimpleNamespace

import pytest

from srlm.evaluation import ifeval
from srlm.evaluation.evaluate import ifeval_breakdown, ifeval_split
from srlm.run.records import mark_done, write_jsonl

T, F = True, False
HELD = "punctuation:no_comma"
TRAINED = "change_case:english_lowercase"


def row(key, ids, strict):
    return {"key": key, "prompt": f"p{key}", "response": "x" * key, "finish_reason": "stop",
            "instruction_id_list": ids, "kwargs": [{}] * len(ids), "strict_follow": strict,
            "strict_follow_all": all(strict), "loose_follow": strict, "loose_follow_all": all(strict)}


def model_rows(follow_held: bool, follow_trained: bool) -> list[dict]:
    """Two held-out prompts, two trained ones, one mixed."""
    return [row(1, [HELD], [follow_held]), row(2, [HELD], [T]), row(3, [TRAINED], [follow_trained]),
            row(4, [TRAINED], [F]), row(5, [HELD, TRAINED], [follow_held, follow_trained])]


def cfg(holdout):
    return SimpleNamespace(seed=0, prompts=SimpleNamespace(holdout_families=holdout, verifiable_families=[]))


def write_cache(run_dir, model, rows):
    path = os.path.join(run_dir, "eval", f"ifeval_{model}.jsonl")
    write_jsonl(path, rows)
    mark_done(path, {"size": 0})


@pytest.fixture
def run_dir(tmp_path):
    d = str(tmp_path / "run")
    os.makedirs(os.path.join(d, "eval"))
    write_cache(d, "M0", model_rows(F, F))
    write_cache(d, "M1", model_rows(F, T))  # SFT learns the trained family only
    write_cache(d, "M2", model_rows(T, T))  # then the held-out one too
    return d


def test_split_ids_follow_the_config():
    assert ifeval_split(cfg([])) == (frozenset(), frozenset())
    assert ifeval_split(SimpleNamespace(seed=0, prompts=SimpleNamespace())) == (frozenset(), frozenset())  # old config
    held, trained = ifeval_split(cfg(["punctuation"]))
    assert HELD in held and TRAINED in trained and not held & trained


def test_breakdown_with_held_out_families(run_dir):
    group = {"M1": {"ifeval/score": 0.5, "ifeval_heldout/score": 0.99}}  # a stale split is replaced
    deltas = ifeval_breakdown(cfg(["punctuation"]), run_dir, group)
    assert sorted(deltas) == ["M1_vs_M0", "M2_vs_M0", "M2_vs_M1"]
    assert set(group) == {"M0", "M1", "M2"}
    assert group["M1"]["ifeval/score"] == 0.5  # what eval wrote stays
    assert group["M0"]["ifeval/score"] == ifeval.summarize(model_rows(F, F), seed=0)["ifeval/score"]
    # M1: held-out prompts 1, 2 -> 1 of 2 followed; trained prompts 3, 4 -> 1 of 2.
    assert group["M1"]["ifeval_heldout/prompts"] == 2 and group["M1"]["ifeval_heldout/prompt_strict"] == 0.5
    assert group["M1"]["ifeval_trained/prompts"] == 2 and group["M1"]["ifeval_trained/prompt_strict"] == 0.5
    assert group["M0"]["ifeval_trained/prompt_strict"] == 0.0
    assert len(group["M1"]["ifeval_heldout/score_ci95"]) == 2
    # by family, all 5 prompts: punctuation 3 instructions, change_case 3.
    assert group["M2"]["ifeval/by_family"] == {"change_case": {"instructions": 3, "inst_strict": 2 / 3, "inst_loose": 2 / 3},
                                               "punctuation": {"instructions": 3, "inst_strict": 1.0, "inst_loose": 1.0}}
    d = deltas["M1_vs_M0"]
    assert d["ifeval/paired_prompts"] == 5
    assert d["ifeval_trained/delta_prompt_strict"] == pytest.approx(0.5)  # prompt 3 fixed
    assert d["ifeval_heldout/delta_prompt_strict"] == 0.0
    assert d["ifeval_heldout/paired_prompts"] == 2
    d = deltas["M2_vs_M1"]
    assert d["ifeval_heldout/delta_prompt_strict"] == pytest.approx(0.5) and d["ifeval_trained/delta_prompt_strict"] == 0
    assert d["ifeval/delta_prompt_strict"] == pytest.approx(2 / 5)  # prompts 1 and 5
    assert d["ifeval/prompts_fixed"] == 2 and d["ifeval/prompts_broken"] == 0
    json.dumps([group, deltas])  # metrics.json can hold them


def test_breakdown_without_holdout(run_dir):
    group = {"M1": {"ifeval/score": 0.5, "ifeval_trained/score": 0.1}}
    deltas = ifeval_breakdown(cfg([]), run_dir, group)
    assert not any(k.startswith(("ifeval_heldout/", "ifeval_trained/")) for v in group.values() for k in v)
    assert not any(k.startswith(("ifeval_heldout/", "ifeval_trained/")) for v in deltas.values() for k in v)
    assert deltas["M2_vs_M0"]["ifeval/delta_prompt_strict"] == pytest.approx(3 / 5)


def test_breakdown_needs_finished_caches(tmp_path):
    d = str(tmp_path / "run")
    os.makedirs(os.path.join(d, "eval"))
    assert ifeval_breakdown(cfg([]), d, {}) == {}
    write_cache(d, "M1", model_rows(F, T))
    write_jsonl(os.path.join(d, "eval", "ifeval_M0.jsonl"), model_rows(F, F))  # no marker: unfinished
    group: dict = {}
    assert ifeval_breakdown(cfg([]), d, group) == {} and set(group) == {"M1"}


def test_console_summary_leads_with_ifeval_and_its_deltas(capsys):
    from srlm.evaluation.summary import print_summary

    ev = {"judge_agreement": {"prefs": {"M0": {"accuracy": 0.5}}},
          "ifeval": {"M0": {"ifeval/score": 0.25, "ifeval/mean_response_chars": 812.0,
                            "ifeval_heldout/score": 0.2, "ifeval_heldout/prompts": 40},
                     "M2": {"ifeval/score": 0.3, "ifeval_heldout/score": 0.25, "ifeval_heldout/prompts": 40}},
          "ifeval_delta": {"M2_vs_M0": {"ifeval/delta_score": 0.05, "ifeval/delta_score_ci95": [-0.01, 0.1],
                                        "ifeval_heldout/delta_score": -0.02,
                                        "ifeval_heldout/delta_score_ci95": [-0.1, 0.05]}}}
    print_summary("RUN", {"eval": ev})
    out = capsys.readouterr().out
    assert "  on held-out instructions only: M0 0.2 (40 prompts), M2 0.25 (40 prompts)" in out
    assert "IFEval change, same prompts (score, paired 95% CI): M2 vs M0 +0.05 [-0.01, +0.1]" in out
    assert "IFEval change, same prompts, held-out instructions (score, paired 95% CI): M2 vs M0 -0.02 [-0.1, +0.05]" in out
    assert "trained instructions" not in out
    assert out.index("IFEval change") < out.index("judge-human agreement")


@pytest.mark.parametrize("skipped", [True, False])
def test_m1_reuses_m0_ifeval_only_when_sft_was_skipped(tmp_path, skipped):
    from srlm.evaluation.evaluate import ifeval_model
    from srlm.run.rundir import RunDir

    run = str(tmp_path)
    rd = RunDir(run)
    os.makedirs(rd.model(1))
    rd.write_marker(rd.model(1), {"sft/skipped": 1} if skipped else {"sft/loss": 1.0}, {}, "x")
    c = SimpleNamespace(eval=SimpleNamespace(ifeval_size=2, ifeval_max_new_tokens=8), seed=0)
    m0 = os.path.join(run, "eval", "ifeval_M0.jsonl")
    write_jsonl(m0, [row(1, [HELD], [True]), row(2, [HELD], [False])])
    mark_done(m0, {"size": 2, "max_new_tokens": 8, "seed": 0})

    class NoBackend:  # answering would need a model: reuse must not get here
        def __getattr__(self, name):
            raise AssertionError("M1's IFEval was generated, not reused")

    if skipped:
        res = ifeval_model(c, run, "M1", NoBackend())
        assert res["ifeval/prompt_strict"] == 0.5
        assert open(os.path.join(run, "eval", "ifeval_M1.jsonl")).read() == open(m0).read()
    else:
        with pytest.raises(AssertionError, match="generated"):
            ifeval_model(c, run, "M1", NoBackend())


@pytest.mark.parametrize("skipped", [True, False])
def test_m1_reuses_m0_judge_agreement_answers_and_pairwise_when_sft_was_skipped(tmp_path, skipped):
    """M1 = M0 (sft.enabled=false): every per-model cache of M0 is copied, nothing generated; with
    a trained M1 the same call must reach the backend."""
    from srlm.data import loaders
    from srlm.evaluation import evaluate as ev
    from srlm.run.config import load_config
    from srlm.run.rundir import RunDir

    cfg = load_config("tiny")
    run = str(tmp_path)
    rd = RunDir(run)
    os.makedirs(rd.model(1))
    rd.write_marker(rd.model(1), {"sft/skipped": 1} if skipped else {"sft/loss": 1.0}, {}, "x")
    pairs = [loaders.HumanPair("p1", "q", "long answer", "short", "a")]
    src = ev.HumanSource("prefs", "prefs.jsonl", pairs, {"pairs": 1}, None)
    d = os.path.join(run, "eval")
    agree = os.path.join(d, "agreement_prefs_M0.jsonl")
    write_jsonl(agree, [{"id": "p1", "label": "a", "category": None, "scores_a": [4.0], "scores_b": [2.0],
                         "judgment_a": "Score: 4", "judgment_b": "Score: 2"}])
    mark_done(agree, {"pairs": 1, "scoring": cfg.judge.scoring, "settings": ev.judge_settings(cfg)})
    answers = os.path.join(d, "answers_M0.jsonl")
    write_jsonl(answers, [{"id": "e1", "category": "c", "prompt": "q", "answer": "an answer", "num_tokens": 3,
                           "finish_reason": "stop"}])
    mark_done(answers, {"answers": 1})
    pw = os.path.join(d, "pairwise_prefs_M0.jsonl")
    write_jsonl(pw, [{"id": "p1", "label": "a", "category": None, "verdict_ab": "A", "verdict_ba": "B",
                      "error_ab": None, "error_ba": None, "text_ab": "Winner: A", "text_ba": "Winner: B"}])
    mark_done(pw, {"judge": cfg.eval.judge, "pairs": 1, "settings": ev.judge_settings(cfg)})

    class NoBackend:  # judging or answering would need a model: reuse must not get here
        def __getattr__(self, name):
            raise AssertionError("M1 was evaluated, not reused")

    if not skipped:
        with pytest.raises(AssertionError, match="evaluated"):
            ev.eval_model(cfg, run, "M1", NoBackend(), [src])
        return
    res = ev.eval_model(cfg, run, "M1", NoBackend(), [src])
    assert res["agreement"]["prefs"]["accuracy"] == 1.0 and res["length"]["mean_chars"] == len("an answer")
    for path in (agree, answers):
        assert open(path.replace("_M0.", "_M1.")).read() == open(path).read()
    assert os.path.exists(os.path.join(d, "alpaca_eval", "M1", "model_outputs.json"))
    assert ev.pairwise_agreement(cfg, run, src, "M1", NoBackend())["consistency"] == 1.0
