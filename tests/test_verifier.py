"""The positive control's parts: verifiable prompts, the checker's reward, the judge stage's
verifier and hybrid sources, and one tiny end-to-end run."""

import json
import os
import random

import pytest

from srlm.data import ifeval_checks
from srlm.loop import judge, prompts, verifier
from srlm.run.config import ConfigError, load_config
from srlm.run.records import CandidateRecord, InputError, JudgmentRecord, PromptRecord, read_jsonl


def test_families_and_holdout():
    fams = verifier.families()
    assert "punctuation" in fams and "change_case" in fams and len(fams) == 9
    assert verifier.family("punctuation:no_comma") == "punctuation"
    assert verifier.heldout_ids([], 42) == frozenset()
    half = verifier.heldout_ids(["half"], 42)
    assert half == verifier.heldout_ids(["half"], 42)  # seeded
    assert len({verifier.family(i) for i in half}) == len(fams) // 2
    # Whole families only: every id of a held-out family is held out.
    assert all(verifier.family(i) not in {verifier.family(h) for h in half} or i in half
               for i in verifier.instruction_ids())
    assert verifier.heldout_ids(["punctuation", "change_case:english_lowercase"], 0) == {
        "punctuation:no_comma", "change_case:english_lowercase"}
    with pytest.raises(InputError, match="neither"):
        verifier.heldout_ids(["punctuaton"], 0)
    with pytest.raises(InputError, match="alone"):
        verifier.heldout_ids(["half", "punctuation"], 0)


def test_trainable_ids():
    assert verifier.trainable_ids(["punctuation"], [], 0) == ["punctuation:no_comma"]
    both = verifier.trainable_ids(["punctuation", "change_case"], ["change_case"], 0)
    assert both == ["punctuation:no_comma"]
    everything = verifier.trainable_ids([], ["half"], 42)
    assert not set(everything) & verifier.heldout_ids(["half"], 42)
    assert len(everything) + len(verifier.heldout_ids(["half"], 42)) == len(verifier.instruction_ids())
    with pytest.raises(InputError, match="leaves no instruction"):
        verifier.trainable_ids(["punctuation"], ["punctuation"], 0)


def test_conflicts_are_symmetric():
    table = verifier.conflicts()
    for a, others in table.items():
        assert a in others
        for b in others:
            assert a in table[b]
    # The registry's own table lists this one way only.
    assert "language:response_language" in table["keywords:existence"]


def test_attach_is_seeded_and_never_draws_conflicts():
    allowed = verifier.instruction_ids()
    a = verifier.attach("Tell me about tea.", random.Random(3), 3, allowed)
    assert a == verifier.attach("Tell me about tea.", random.Random(3), 3, allowed)
    state = random.getstate()
    table = verifier.conflicts()
    rng = random.Random(0)
    for _ in range(300):
        text, ids, kwargs = verifier.attach("Tell me about tea.", rng, 3, allowed)
        assert text.startswith("Tell me about tea.\n\n") and 1 <= len(ids) <= 3 and len(kwargs) == len(ids)
        for i, x in enumerate(ids):
            assert not any(x in table[y] for y in ids[:i])
        if "combination:repeat_prompt" in ids:
            assert kwargs[ids.index("combination:repeat_prompt")] == {"prompt_to_repeat": "Tell me about tea."}
    assert random.getstate() == state  # the global generator is left as it was


def test_check_and_reward_by_hand():
    items = [("k1", "Say hi.\n\nDo not use commas.", ["punctuation:no_comma", "change_case:english_lowercase"],
              [{}, {}], "hello there friend"),
             ("k2", "Say hi.", ["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}],
              "Hello, there friend"),
             ("k3", "Say hi.", ["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}],
              "hello, there friend"),
             ("k4", "Say hi.", ["keywords:existence"], [{"keywords": ["tea", "cup"]}], "A cup of tea.")]
    follow = verifier.check(items)
    assert follow == [[True, True], [False, False], [False, True], [True]]
    assert [verifier.reward(f) for f in follow] == [1.0, 0.0, 0.5, 1.0]
    assert verifier.reward([]) == 0.0


def test_attached_instructions_check_as_ifeval_does():
    """What attach() records is what the checker reads: a response written to follow a drawn
    lowercase / no-comma instruction passes, one that breaks it fails."""
    text, ids, kwargs = verifier.attach("Describe rain.", random.Random(1), 2,
                                        ["punctuation:no_comma", "change_case:english_lowercase"])
    assert sorted(ids) == ["change_case:english_lowercase", "punctuation:no_comma"]
    good, bad = verifier.check([("a", text, ids, kwargs, "rain falls softly on the roof"),
                                ("b", text, ids, kwargs, "Rain falls, softly.")])
    assert good == [True, True] and bad == [False, False]


def _cfg(tmp_path, *overrides):
    return load_config(None, [f"output_dir={tmp_path / 'run'}", *overrides])


def test_config_refuses_verifier_without_instructions(tmp_path):
    with pytest.raises(ConfigError, match="verifiable_max"):
        _cfg(tmp_path, "judge.source=verifier")
    with pytest.raises(ConfigError, match="verifiable_min"):
        _cfg(tmp_path, "prompts.verifiable_max=1", "prompts.verifiable_min=2")
    with pytest.raises(ConfigError, match="methods"):
        _cfg(tmp_path, "judge.source=verifier", "prompts.verifiable_max=1", "method=spin")
    assert _cfg(tmp_path, "judge.source=hybrid", "prompts.verifiable_max=2").judge.rubric_weight == 0.0


def test_verified_config_loads():
    cfg = load_config("verified")
    assert cfg.judge.source == "verifier" and cfg.prompts.source == "seed" and cfg.iterations == 2
    assert cfg.prompts.verifiable_max == 3 and cfg.prompts.holdout_families == ["half"]


def test_seed_prompts_drop_evaluation_duplicates_and_are_seeded(tmp_path):
    ifeval_prompt = ifeval_checks.load_prompts()[0]["prompt"]
    ift = tmp_path / "ift.jsonl"
    rows = [{"prompt": ifeval_prompt, "response": "x"},  # exact duplicate of an IFEval prompt
            {"prompt": ifeval_prompt.replace(".", "!", 1) + " Thanks.", "response": "x"},  # near-duplicate
            *({"prompt": f"Write a short note about topic number {i} and why it matters.", "response": "x"}
              for i in range(6))]
    ift.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [f"data.ift=[{ift}]", "prompts.source=seed", "prompts.num_prompts=10", "prompts.verifiable_max=2",
            "prompts.verifiable_families=[punctuation,change_case]", "prompts.holdout_families=[change_case]",
            "eval.human_prefs=[]"]
    cfg = _cfg(tmp_path, *args)

    class RD:
        def prompts(self, t):
            return str(tmp_path / f"prompts_{t}.jsonl")

    stats = prompts.run(cfg, RD(), 1, None)
    recs = read_jsonl(RD().prompts(1), PromptRecord)
    assert len(recs) == 10 and stats["prompts/seed_pool"] == 6
    assert stats["prompts/dropped_exact_duplicate_of_eval"] == 1
    assert stats["prompts/dropped_near_duplicate_of_eval"] == 1
    assert all(r.instruction_id_list == ["punctuation:no_comma"] for r in recs)  # change_case held out
    assert all("Thanks" not in r.prompt and ifeval_prompt not in r.prompt for r in recs)
    first = [(r.prompt, r.instruction_id_list) for r in recs]
    prompts.run(cfg, RD(), 1, None)
    assert [(r.prompt, r.instruction_id_list) for r in read_jsonl(RD().prompts(1), PromptRecord)] == first
    prompts.run(cfg, RD(), 2, None)  # another iteration draws again
    assert [r.prompt for r in read_jsonl(RD().prompts(2), PromptRecord)] != [p for p, _ in first]


def _candidates():
    p = PromptRecord("t1-p0", "Say hi.\n\nNo commas. All lowercase.", "seed", 1,
                     ["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}])
    texts = ["hello there", "Hello there", "Hello, there", "hello, there"]
    cands = [CandidateRecord(f"t1-p0-c{i}", "t1-p0", p.prompt, t, i, 3, "stop") for i, t in enumerate(texts)]
    return p, cands


def test_judge_verifier_source_scores_by_the_checker(tmp_path):
    cfg = _cfg(tmp_path, "judge.source=verifier", "prompts.verifiable_max=2", "judge.k=3")
    p, cands = _candidates()
    out = str(tmp_path / "judgments.jsonl")
    recs = judge.judge_candidates(cfg, None, cands, out, (0, 1, "judge"), "test", {p.id: p})
    assert [r["score"] for r in recs] == [1.0, 0.5, 0.0, 0.5]  # one record per candidate, K ignored
    assert [r["verifier"] for r in recs] == [[True, True], [True, False], [False, False], [False, True]]
    assert all(r["mode"] == "verifier" and r["judge_score"] is None and r["error"] is None for r in recs)
    stats = judge.summarize(recs)
    assert stats["judge/parse_failures"] == 0 and stats["judge/verifier_mean"] == 0.5
    assert stats["judge/verifier_all_followed"] == 0.25
    assert [j.score for j in read_jsonl(out, JudgmentRecord)] == [1.0, 0.5, 0.0, 0.5]


def test_judge_hybrid_adds_lambda_times_the_rubric(tmp_path, monkeypatch):
    p, cands = _candidates()
    rubric_scores = [[4, 2], [0, 5], [3, 3], [1, None]]

    def fake_items(backend, template, items, k, cfg_judge, seed):
        return [[judge.Judgment(f"Score: {s}", s, None if s is not None else "no score", s) for s in row]
                for row in rubric_scores[:len(items)]]

    monkeypatch.setattr(judge, "judge_items", fake_items)
    for source, lam in (("hybrid", 0.1), ("hybrid", 0.0), ("rubric", 0.0)):
        cfg = _cfg(tmp_path, f"judge.source={source}", "prompts.verifiable_max=2", "judge.k=2",
                   f"judge.rubric_weight={lam}")
        recs = judge.judge_candidates(cfg, object(), cands, str(tmp_path / f"{source}{lam}.jsonl"), (0, 1, "judge"),
                                      "test", {p.id: p})
        v = [1.0, 0.5, 0.0, 0.5]
        for r in recs:
            c = int(r["candidate_id"][-1])
            j = rubric_scores[c][r["sample"]]
            assert r["judge_score"] == j and r["verifier_score"] == v[c]  # both recorded whatever the source
            if source == "rubric":
                assert r["score"] == j
            else:
                assert r["score"] == (None if j is None else pytest.approx(v[c] + lam * j))


@pytest.mark.parametrize("source", ["verifier", "hybrid"])
def test_verifier_loop_end_to_end(tmp_path, tiny_run_args, source):
    from srlm.cli import main

    run = tmp_path / "run"
    extra = ["prompts.source=seed", "prompts.num_prompts=6", "prompts.verifiable_max=2",
             "prompts.verifiable_families=[punctuation,change_case,startend]", "prompts.holdout_families=[startend]",
             f"judge.source={source}", "judge.rubric_weight=0.1", "sample.max_new_tokens=16", "iterations=2",
             "dpo.init=previous", "sft.epochs=1"]
    assert main(["run", "--config", "tiny", *tiny_run_args, *extra]) == 0
    metrics = json.load(open(run / "metrics.json"))
    for t in (1, 2):
        prompt_recs = {p.id: p for p in read_jsonl(str(run / f"iter_{t}" / "prompts.jsonl"), PromptRecord)}
        assert all(p.instruction_id_list and not any(i.startswith("startend") for i in p.instruction_id_list)
                   for p in prompt_recs.values())
        js = read_jsonl(str(run / f"iter_{t}" / "judgments.jsonl"), JudgmentRecord)
        assert js and all(j.verifier is not None and len(j.verifier) == len(prompt_recs[j.prompt_id].instruction_id_list)
                          for j in js)
        assert all((j.judge_score is None) == (source == "verifier") for j in js)
        pairs = read_jsonl(str(run / f"iter_{t}" / "pairs.jsonl"))
        for pr in pairs:
            assert pr["score_chosen"] > pr["score_rejected"]
        assert metrics[f"iter_{t}"]["judge/verifier_mean"] is not None
    assert os.path.exists(run / "models" / "M3")
