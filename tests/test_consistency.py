import math

import pytest

from srlm.methods.cream import consistency, group_by_prompt, kendall_tau, prompt_consistency
from srlm.methods.scir import scir_agree, scir_filter
from srlm.run.records import PairRecord


def test_kendall_tau_by_hand():
    # Pairs (0,1), (0,2) concordant, (1,2) discordant: (2 - 1) / 3.
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert kendall_tau([0.5, 2.0], [1, 7]) == pytest.approx(1)
    # tau-b with a tie in x: C = 2, D = 0, n0 = 3 pairs, 1 tied in x: 2 / sqrt(2 * 3).
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    # Ties on both sides: C = 4, D = 0, n0 = 6, one tie each side: 4 / sqrt(5 * 5).
    assert kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)


def test_kendall_tau_undefined():
    assert kendall_tau([2, 2, 2], [1, 2, 3]) is None  # one side all tied: no ranking
    assert kendall_tau([1, 2, 3], [4, 4, 4]) is None
    assert kendall_tau([1], [1]) is None and kendall_tau([], []) is None
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1, 2, 3])


def test_consistency_rate():
    assert consistency([1, 2, 3], [1, 2, 3]) == 1.0
    assert consistency([1, 2, 3], [3, 2, 1]) == pytest.approx(0.0)
    assert consistency([1, 2, 3], [1, 3, 2]) == pytest.approx(2 / 3)
    assert consistency([1, 1], [1, 2]) is None


def test_prompt_consistency_aligns_by_id():
    current = {
        "p1": {"a": 1, "b": 2, "c": 3},
        "p2": {"d": 1, "e": 2, "f": 3},  # absent from previous
        "p3": {"g": 1, "h": 2, "i": 3},
        "p5": {"m": 1, "n": 2},
        "p6": {"q": 1, "r": 2},
    }
    previous = {
        "p1": {"c": 1, "b": 2, "a": 3},  # order of entries is irrelevant: reversed ranking
        "p3": {"i": 2, "zz": 9, "g": 1, "h": 3},  # zz only here: left out, g,h,i still compared
        "p4": {"x": 1, "y": 2},  # absent from current
        "p5": {"m": 2, "n": 2},  # all tied
        "p6": {"q": 1, "s": 2},  # one shared candidate
    }
    rep = prompt_consistency(current, previous)
    # p1: tau = -1 -> 0; p3: ranks (1,2,3) vs (1,3,2), tau = 1/3 -> 2/3. Positional alignment would
    # have compared p3's rows with p2's or p4's; by id nothing shifts.
    assert rep.per_prompt == pytest.approx({"p1": 0.0, "p3": 2 / 3})
    assert rep.mean == pytest.approx(1 / 3)
    assert (rep.prompts_missing, rep.candidates_missing, rep.prompts_too_few, rep.prompts_all_tied) == (2, 3, 1, 1)
    m = rep.metrics()
    assert m["consistency/mean"] == pytest.approx(1 / 3) and m["consistency/prompts"] == 2
    # Dropping p2 and p4 (the unmatched prompts) changes nothing else.
    rep2 = prompt_consistency({k: v for k, v in current.items() if k != "p2"},
                              {k: v for k, v in previous.items() if k != "p4"})
    assert rep2.per_prompt == rep.per_prompt and rep2.prompts_missing == 0


def test_prompt_consistency_empty():
    rep = prompt_consistency({}, {})
    assert rep.per_prompt == {} and rep.mean is None


def test_group_by_prompt():
    rewards = {"p1-c0": 1.0, "p1-c1": 2.0, "p2-c0": 0.5}
    prompt_of = {"p1-c0": "p1", "p1-c1": "p1", "p2-c0": "p2", "unused": "p3"}
    assert group_by_prompt(rewards, prompt_of) == {"p1": {"p1-c0": 1.0, "p1-c1": 2.0}, "p2": {"p2-c0": 0.5}}


def test_scir_agree():
    assert scir_agree(2.0, 0.1) and scir_agree(-1.0, -0.3)
    assert not scir_agree(2.0, -0.1) and not scir_agree(-2.0, 0.1)
    assert not scir_agree(2.0, 0.0) and not scir_agree(0.0, 1.0) and not scir_agree(0.0, 0.0)


def pair(pid, sc, sr):
    return PairRecord(pid, pid, "q", "c", "r", pid + "c", pid + "r", sc, sr, 1, 1)


def test_scir_filter():
    pairs = [pair("P1", 4.0, 2.0), pair("P2", 3.0, 1.0), pair("P3", 2.0, 2.0), pair("P4", 5.0, 1.0),
             {"id": "P5", "score_chosen": 4.0, "score_rejected": 1.0},
             {"id": "P6", "score_chosen": None, "score_rejected": None}]
    implicit = {"P1": 0.5, "P2": -0.2, "P3": 1.0, "P5": 0.0, "P6": 1.0}
    kept, stats = scir_filter(pairs, implicit)
    assert kept == [pairs[0]]
    assert stats == {"pairs": 6, "kept": 1, "disagree": 2, "no_judge_margin": 2, "missing_implicit": 1,
                     "agreement_rate": pytest.approx(1 / 3)}
    assert scir_filter([], {})[1]["agreement_rate"] is None
