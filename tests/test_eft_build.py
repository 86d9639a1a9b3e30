"""EFT from ranked human replies (srlm/loop/eft_build.py): a scripted fake judge makes every
kept/dropped decision and count exact."""

import importlib.resources
import json
import os
from types import SimpleNamespace

import pytest

from srlm.data import loaders
from srlm.engines.backends import Completion
from srlm.loop import eft_build
from srlm.run.records import InputError, read_jsonl

TEMPLATE = "Request: {prompt}\nReply: {response}\nJudge it."
PARAMS = SimpleNamespace(temperature=0.7, top_p=0.9, max_new_tokens=64)
EVAL_PROMPTS = ["  what is the CAPITAL of   france? ",  # exact duplicate of tree 4 once normalised
                "Give me a recipe for banana bread with walnuts please",  # near duplicate of tree 5
                "Explain quantum tunnelling to a child."]


def j(score, why="reasons"):
    return f"{why}\nScore: {score}"


# reply text -> its K=3 scripted judgments
SCRIPT = {
    # tree 1 (kept): best picks 5; mid's 5 is not below 5, so 4; worst's highest below 4 is 1.
    "E-best": [j(4, "b0"), j(5, "b1"), j(3, "b2")],
    "E-mid": [j(5, "m0"), j(2, "m1"), j(4, "m2")],
    "E-worst": [j(4, "w0"), j(1, "w1"), "no score at all"],
    # tree 2 (disagrees): the judge ties the two replies at best.
    "P-best": [j(3), j(3), j(3)],
    "P-worse": [j(3), j(4), j(5)],
    # tree 3 (unparsed): the better reply has no parseable judgment.
    "H-best": ["no score", "fine\nScore: 7", "Score: five"],
    "H-worse": [j(1), j(1), j(1)],
    # pairwise file, label b (kept)
    "Q-best": [j(4, "q0"), j(2, "q1"), j(4, "q2")],
    "Q-worse": [j(2, "r0"), j(4, "r1"), j(3, "r2")],
    # trees 4 and 5 are duplicates of evaluation prompts: never judged
    "F-best": [j(5)] * 3, "F-worse": [j(0)] * 3, "B-best": [j(5)] * 3, "B-worse": [j(0)] * 3,
}


class FakeJudge:
    """generate() answers each rendered judge prompt with the scripted judgments of its reply."""

    context_window = 100_000

    def __init__(self, fail_after_calls: int = -1):
        self.calls: list[tuple[int, list[str]]] = []  # (seed, replies judged)
        self.fail_after_calls = fail_after_calls

    def generate(self, chats, params, seed):
        if len(self.calls) == self.fail_after_calls:
            raise RuntimeError("killed")
        replies = [c[0]["content"].split("\nReply: ")[1].split("\nJudge it.")[0] for c in chats]
        self.calls.append((seed, replies))
        return [[Completion(t, len(t.split()), "stop") for t in SCRIPT[r][:params.n]] for r in replies]

    def count_prompt_tokens(self, chats):
        return [len(c[0]["content"].split()) for c in chats]

    def close(self):
        pass


def tree(prompt, replies, child=None):
    """An Open Assistant tree: replies [(text, rank)], ranks as the export's strings."""
    rs = [{"role": "assistant", "text": t, "rank": str(k), "deleted": "False", "replies": []} for t, k in replies]
    if child:
        rs[0]["replies"] = [child]
    return {"message_tree_id": prompt[:8], "prompt": {"role": "prompter", "lang": "en", "text": prompt, "replies": rs}}


@pytest.fixture
def sources(tmp_path):
    # A later-turn prompt with two ranked replies: first turns only, as the paper, so not a group.
    later = {"role": "prompter", "text": "And softer?", "replies": [
        {"role": "assistant", "text": "L-a", "rank": 0}, {"role": "assistant", "text": "L-b", "rank": 1}]}
    trees = [
        tree("How do I boil an egg?", [("E-worst", 2), ("E-best", 0), ("E-mid", 1)], child=later),
        tree("Name three prime numbers.", [("P-best", 0), ("P-worse", 1)]),
        tree("Write a haiku about autumn.", [("H-worse", 1), ("H-best", 0)]),
        tree("What is the capital of France?", [("F-best", 0), ("F-worse", 1)]),
        tree("Give me a recipe for banana bread with walnuts", [("B-best", 0), ("B-worse", 1)]),
    ]
    oa = tmp_path / "trees.jsonl"
    oa.write_text("".join(json.dumps(t) + "\n" for t in trees))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"id": "q1", "prompt": "Suggest a name for a cat.", "response_a": "Q-worse",
                    "response_b": "Q-best", "label": "b"}) + "\n"
        + json.dumps({"id": "q2", "prompt": "Is tea better than coffee?", "response_a": "T-a",
                      "response_b": "T-b", "label": "tie"}) + "\n")
    return [f"oasst:{oa}", str(pairs)]


def run_build(sources, out, backend=None, chunk_size=2, eval_prompts=EVAL_PROMPTS, **kw):
    groups, _ = loaders.load_groups(sources)
    return eft_build.build(groups, backend or FakeJudge(), TEMPLATE, 3, PARAMS, 7, eval_prompts, str(out),
                           chunk_size=chunk_size, **kw)


def test_load_groups_ranks_best_first_and_skips_ties(sources):
    groups, stats = loaders.load_groups(sources)
    assert [(g.prompt, g.replies) for g in groups] == [
        ("How do I boil an egg?", ["E-best", "E-mid", "E-worst"]),
        ("Name three prime numbers.", ["P-best", "P-worse"]),
        ("Write a haiku about autumn.", ["H-best", "H-worse"]),
        ("What is the capital of France?", ["F-best", "F-worse"]),
        ("Give me a recipe for banana bread with walnuts", ["B-best", "B-worse"]),
        ("Suggest a name for a cat.", ["Q-best", "Q-worse"]),
    ]
    assert stats == {"eft_build/input_ties_skipped": 1}
    assert [g.source for g in groups] == [sources[0]] * 5 + [sources[1]]
    assert len({g.id for g in groups}) == 6


def test_build_keeps_agreeing_chains_and_counts_every_drop(sources, tmp_path):
    judge = FakeJudge()
    out = tmp_path / "eft.jsonl"
    stats = run_build(sources, out, judge)
    assert stats["eft_build/groups_in"] == 6
    assert stats["eft_build/dropped"] == {"exact_duplicate_of_eval": 1, "near_duplicate_of_eval": 1,
                                          "too_long": 0, "unparsed": 1, "disagrees": 1}
    assert stats["eft_build/groups_judged"] == 4
    assert stats["eft_build/groups_kept"] == 2
    assert stats["eft_build/examples"] == 5
    assert stats["eft_build/score_hist"] == {"0": 0, "1": 1, "2": 0, "3": 1, "4": 2, "5": 1}
    # 9 replies judged 3 times; unparsed: E-worst's third and all three of H-best's.
    assert stats["eft_build/judgments"] == 27
    assert stats["eft_build/judgments_unparsed"] == 4
    # Evaluation duplicates are never even judged.
    judged = {r for _, replies in judge.calls for r in replies}
    assert judged == {"E-best", "E-mid", "E-worst", "P-best", "P-worse", "H-best", "H-worse", "Q-best", "Q-worse"}

    rows = read_jsonl(str(out))
    assert [(r["response"], r["score"], r["judgment"]) for r in rows] == [
        ("E-best", 5, "b1\nScore: 5"), ("E-mid", 4, "m2\nScore: 4"), ("E-worst", 1, "w1\nScore: 1"),
        ("Q-best", 4, "q0\nScore: 4"), ("Q-worse", 3, "r2\nScore: 3")]
    assert rows[0]["prompt"] == "How do I boil an egg?" and rows[0]["source"] == sources[0]
    assert rows[3]["prompt"] == "Suggest a name for a cat." and rows[3]["source"] == sources[1]
    assert set(rows[0]) == {"id", "prompt", "response", "judgment", "score", "source"}
    assert len({r["id"] for r in rows}) == 5

    # The EFT loader reads it unchanged, rendering each through the judge template.
    eft = loaders.load_eft([str(out)], TEMPLATE)
    assert [e.score for e in eft] == [5, 4, 1, 4, 3]
    assert eft[1].prompt == "Request: How do I boil an egg?\nReply: E-mid\nJudge it."
    assert eft[1].judgment == "m2\nScore: 4"

    # Done: a rerun returns the recorded stats without judging again.
    again = FakeJudge()
    assert run_build(sources, out, again) == stats and again.calls == []


def test_near_duplicate_threshold_and_too_long(sources, tmp_path):
    # "give me a recipe for banana bread with walnuts" (9 words) in the 10-word eval prompt:
    # LCS 9, P = 1, R = 0.9, F1 = 18/19 = 0.947: a near duplicate at 0.7, not at 0.95.
    stats = run_build(sources, tmp_path / "a.jsonl", near_duplicate_threshold=0.95)
    assert stats["eft_build/dropped"]["near_duplicate_of_eval"] == 0
    assert stats["eft_build/dropped"]["exact_duplicate_of_eval"] == 1
    assert stats["eft_build/groups_kept"] == 3  # B-best 5 > B-worse 0
    # max_chars: prompt + longest reply; the egg tree is 21 + 7 = 28 chars, the others longer:
    # primes 25 + 7, haiku 27 + 7, cat 25 + 7 (the two evaluation duplicates are dropped first).
    stats = run_build(sources, tmp_path / "b.jsonl", max_chars=28)
    assert stats["eft_build/dropped"]["too_long"] == 3
    assert [r["response"] for r in read_jsonl(str(tmp_path / "b.jsonl"))] == ["E-best", "E-mid", "E-worst"]


def test_agreeing_chain_greedy():
    def js(*scores):
        return [{"text": f"t{s}-{i}", "score": s} for i, s in enumerate(scores)]

    reason, chain = eft_build.agreeing_chain([js(3, 5), js(4, 5), js(2)])
    assert reason == "" and [c["score"] for c in chain] == [5, 4, 2]
    assert eft_build.agreeing_chain([js(3, 3), js(3)]) == ("disagrees", None)  # a tie is not agreement
    assert eft_build.agreeing_chain([js(1), js(0), js(0)]) == ("disagrees", None)
    assert eft_build.agreeing_chain([js(5), []]) == ("unparsed", None)
    # Equal scores: the first judgment is kept.
    assert eft_build.agreeing_chain([js(4, 4), js(1)])[1][0]["text"] == "t4-0"


def test_only_stated_integer_scores_count(sources, tmp_path, monkeypatch):
    """A judge that returns expected (float) scores: the Score line's integer is used; a score
    without a line is written as a line (rounded); both counted."""
    real = eft_build.judge_texts

    def expected_mode(*args):
        rows = real(*args)
        return [[(text, None if score is None else score + 0.25, err) for text, score, err in row] for row in rows]

    monkeypatch.setattr(eft_build, "judge_texts", expected_mode)
    stats = run_build(sources, tmp_path / "eft.jsonl")
    assert stats["eft_build/judge_scores_replaced_by_line"] == 23  # 27 judgments, 4 without a line
    assert stats["eft_build/judge_scores_without_line"] == 0
    assert [r["score"] for r in read_jsonl(str(tmp_path / "eft.jsonl"))] == [5, 4, 1, 4, 3]

    def score_without_line(*args):
        rows = real(*args)
        return [[(text, 2.5 if score is None else score, err) for text, score, err in row] for row in rows]

    monkeypatch.setattr(eft_build, "judge_texts", score_without_line)
    stats = run_build(sources, tmp_path / "eft2.jsonl")
    # judge.scoring=expected: a judgment with a score but no valid line states its rounded
    # expected score (2.5 -> 2) as its line, so it can teach the format; a text whose own line
    # is invalid then holds two conflicting lines and stays unparsed.
    assert stats["eft_build/judge_scores_without_line"] == 1
    assert stats["eft_build/judge_scores_replaced_by_line"] == 3


def test_resume_after_partial_gives_the_same_output(sources, tmp_path):
    clean_judge = FakeJudge()
    run_build(sources, tmp_path / "clean" / "eft.jsonl", clean_judge, chunk_size=1)
    assert len(clean_judge.calls) == 4  # one group per chunk

    out = tmp_path / "resumed" / "eft.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        run_build(sources, out, FakeJudge(fail_after_calls=2), chunk_size=1)
    assert not out.exists() and os.path.exists(f"{out}.judgments.jsonl.partial.0")
    second = FakeJudge()
    stats = run_build(sources, out, second, chunk_size=1)
    # Only the two unfinished chunks are judged, with the same seeds as the clean run.
    assert second.calls == clean_judge.calls[2:]
    assert out.read_text() == (tmp_path / "clean" / "eft.jsonl").read_text()
    assert stats == json.loads((tmp_path / "clean" / "eft.jsonl.done").read_text())


def test_stale_judgments_are_refused(sources, tmp_path):
    out = tmp_path / "eft.jsonl"
    run_build(sources, out)
    os.remove(out)
    os.remove(f"{out}.done")
    with pytest.raises(InputError, match="judged groups differ"):
        run_build(sources, out, eval_prompts=[])


def test_embedded_oasst_sample_is_shipped():
    source = loaders.resolve_source("embedded:oasst")
    assert source.startswith("oasst:") and source.endswith(os.path.join("oasst", "en_100_tree.jsonl"))
    assert loaders.resolve_source("x.jsonl") == "x.jsonl"
    groups, _ = loaders.load_groups(["embedded:oasst"])
    # 99 of the sample's 212 ranked reply groups are first-turn (its README).
    assert len(groups) == 99 and all(len(g.replies) >= 2 for g in groups)
    root = importlib.resources.files("srlm.seed").joinpath("oasst")
    assert "Apache License" in root.joinpath("LICENSE").read_text()
    assert "Apache" in root.joinpath("ATTRIBUTION.md").read_text()
