from srlm.loop.pairs import build_pairs, candidate_scores
from srlm.run.records import CandidateRecord, JudgmentRecord


def cand(pid, i, text="x"):
    return CandidateRecord(f"{pid}-c{i}", pid, "prompt " + pid, text, i, 3, "stop")


def judg(cid, s, score):
    return JudgmentRecord(f"{cid}-j{s}", cid, cid.split("-c")[0], s, "t", score, None if score is not None else "e")


def test_mean_of_parseable_only():
    js = [judg("p-c0", 0, 4), judg("p-c0", 1, None), judg("p-c0", 2, 2), judg("p-c1", 0, None)]
    assert candidate_scores(js, 1) == {"p-c0": 3.0}
    assert candidate_scores(js, 3) == {}


def test_highest_vs_lowest_and_ties_dropped():
    cands = [cand("a", i, t) for i, t in enumerate(["aa", "bbbb", "c", "dd"])] + [cand("b", i) for i in range(4)]
    scores = {"a-c0": 3.0, "a-c1": 4.5, "a-c2": 1.0, "a-c3": 4.5, "b-c0": 2.0, "b-c1": 2.0, "b-c2": 2.0, "b-c3": 2.0}
    pairs, stats = build_pairs(cands, scores)
    assert len(pairs) == 1 and stats["dropped_tie"] == 1 and stats["kept"] == 1
    p = pairs[0]
    # a-c1 and a-c3 tie for best: the lower index wins, so the result is order-independent.
    assert (p.chosen_id, p.rejected_id) == ("a-c1", "a-c2")
    assert (p.chosen, p.rejected, p.chosen_length, p.rejected_length) == ("bbbb", "c", 4, 1)
    assert (p.score_chosen, p.score_rejected) == (4.5, 1.0)
    pairs2, _ = build_pairs(list(reversed(cands)), scores)
    assert pairs2 == pairs


def test_unscored_and_margin():
    cands = [cand("a", 0), cand("a", 1), cand("b", 0), cand("b", 1)]
    scores = {"a-c0": 3.0, "b-c0": 2.0, "b-c1": 2.5}
    pairs, stats = build_pairs(cands, scores)
    assert stats["dropped_unscored"] == 1 and len(pairs) == 1
    pairs, stats = build_pairs(cands, scores, min_margin=0.5)
    assert pairs == [] and stats["dropped_tie"] == 1


def test_empty():
    assert build_pairs([], {}) == ([], {"prompts": 0, "dropped_tie": 0, "dropped_unscored": 0, "kept": 0})
