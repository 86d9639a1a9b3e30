"""Agreement and win-rate arithmetic against hand-computed cases."""

import pytest

from srlm.data import HumanPair
from srlm.evaluate import agreement, head_to_head, length_controlled, length_stats, parse_verdict


def hp(label):
    return HumanPair("x", "p", "a", "b", label)


def test_agreement_hand_computed():
    pairs = [hp("a"), hp("b"), hp("a"), hp("b"), hp("a"), hp("tie"), hp("tie")]
    sa = [[4, 5, 4], [1, None, 2], [3, 3, 3], [5, 5, 5], [None, None, None], [2, 2, 2], [3, 3, 3]]
    sb = [[2, 2, 3], [4, 4, None], [3, 3, 3], [1, 2, 1], [4, 4, 4], [2, 2, 2], [1, 1, 1]]
    r = agreement(pairs, sa, sb)
    # pair1 correct (4.33 > 2.33), pair2 correct (1.5 < 4), pair3 judge tie, pair4 wrong,
    # pair5 unparsed; ties: pair6 agrees (2 == 2), pair7 does not.
    assert (r["correct"], r["wrong"], r["judge_ties"], r["unparsed"], r["human_non_tie"]) == (2, 1, 1, 1, 5)
    assert r["accuracy"] == pytest.approx(2 / 5)
    assert r["accuracy_decided"] == pytest.approx(2 / 3)
    assert (r["human_ties"], r["tie_agreement"]) == (2, 0.5)


def test_agreement_empty():
    r = agreement([], [], [])
    assert r["accuracy"] is None and r["pairs"] == 0


@pytest.mark.parametrize("text,verdict", [
    ("X is better.\nWinner: A", "A"), ("Winner: b", "B"), ("Winner: tie", "tie"), ("  Winner:   A  ", "A"),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == (verdict, None)


@pytest.mark.parametrize("text", ["", "A is better", "Winner: C", "Winner: A\nWinner: B", "Winner: A or B"])
def test_parse_verdict_rejects(text):
    assert parse_verdict(text)[0] is None


def test_head_to_head_position_swaps():
    # verdicts_ab: X shown as A. verdicts_ba: Y shown as A.
    ab = ["A", "A", "B", "A", None, "tie", None]
    ba = ["B", "A", "A", None, "B", "tie", None]
    # p1: X wins both orders -> win. p2: always "A" -> one each -> tie (position bias).
    # p3: Y wins both -> loss. p4: only order 1 parsed, X -> win. p5: only order 2, X -> win.
    # p6: tie both -> tie. p7: nothing parsed -> excluded.
    r = head_to_head(ab, ba, [10] * 7, [10] * 7)
    assert (r["wins"], r["ties"], r["losses"], r["compared"], r["unparsed_verdicts"]) == (3, 2, 1, 6, 4)
    assert r["win_rate"] == pytest.approx((3 + 0.5 * 2) / 6)
    # decided verdicts: A,A,B,A,B(p5),B,A,A -> 8 decided; first position chosen 5 times
    assert r["position_bias_first"] == pytest.approx(5 / 8)
    lo, hi = r["win_rate_ci95"]
    assert 0 <= lo <= r["win_rate"] <= hi <= 1


def test_head_to_head_empty():
    r = head_to_head([], [], [], [])
    assert r["compared"] == 0 and r["win_rate"] is None and r["position_bias_first"] is None


def test_length_controlled_removes_length_effect():
    # X wins exactly when its answer is longer: the raw win rate is 0.5 at balanced lengths,
    # but here X is usually longer, so raw > LC.
    outcomes = [1.0] * 8 + [0.0] * 2 + [1.0, 0.0]
    dlen = [0.5] * 8 + [-0.5] * 2 + [0.0, 0.0]
    lc = length_controlled(outcomes, dlen)
    raw = sum(outcomes) / len(outcomes)
    assert lc < raw and lc == pytest.approx(0.5, abs=0.1)
    assert length_controlled([1.0, 0.0], [0.1, 0.2]) is None  # too few points


def test_length_stats():
    s = length_stats(["ab", "abcd", "abcdef"], [1, 2, 3])
    assert s == {"mean_chars": 4, "median_chars": 4, "mean_tokens": 2, "median_tokens": 2}
    assert length_stats([], [])["mean_chars"] is None
