import random
import statistics

import pytest

from srlm.loop.pairs import build_pairs, length_controlled_pairs
from srlm.methods.dno import dno_pairs, replay_mix
from srlm.methods.spin import spin_pairs
from srlm.run.records import CandidateRecord, PairRecord


def cand(pid, i, text="x"):
    return CandidateRecord(f"{pid}-c{i}", pid, "prompt " + pid, text, i, 3, "stop")


def group(pid, rows):
    """rows: (score, length) per candidate index -> (cands, scores)."""
    cands = [cand(pid, i, "w" * n) for i, (_, n) in enumerate(rows)]
    return cands, {c.id: s for c, (s, _) in zip(cands, rows) if s is not None}


# --- length control -----------------------------------------------------------------------------

def test_length_control_tiers_by_hand():
    cands, scores = group("a", [(5.0, 10), (4.5, 3), (4.0, 2), (1.0, 4), (1.5, 8), (3.0, 20)])
    # rho = 0.25: top tier [0.75*5 + 0.25*1, 5] = [4, 5] -> c0, c1, c2, shortest c2 (2 chars);
    # bottom tier [1, 0.75*1 + 0.25*5] = [1, 2] -> c3, c4, longest c4 (8 chars).
    pairs, stats = length_controlled_pairs(cands, scores, 0.25)
    p = pairs[0]
    assert (p.chosen_id, p.rejected_id, p.score_chosen, p.score_rejected) == ("a-c2", "a-c4", 4.0, 1.5)
    assert (p.chosen_length, p.rejected_length, p.id) == (2, 8, "a-pair")
    assert stats == {"prompts": 1, "dropped_tie": 0, "dropped_unscored": 0, "dropped_same": 0, "kept": 1}
    # rho = 0.1: top [4.6, 5] -> c0 only; bottom [1, 1.4] -> c3 only.
    pairs, _ = length_controlled_pairs(cands, scores, 0.1)
    assert (pairs[0].chosen_id, pairs[0].rejected_id) == ("a-c0", "a-c3")
    # rho = 1: both tiers are everything: shortest overall (c2) vs longest overall (c5).
    pairs, _ = length_controlled_pairs(cands, scores, 1.0)
    assert (pairs[0].chosen_id, pairs[0].rejected_id) == ("a-c2", "a-c5")


def test_length_control_ties_and_drops():
    # Equal lengths in a tier -> the lowest index, for chosen and for rejected.
    cands, scores = group("t", [(2.0, 5), (5.0, 4), (4.8, 4), (1.0, 6), (1.2, 6)])
    pairs, _ = length_controlled_pairs(cands, scores, 0.1)  # top [4.6, 5], bottom [1, 1.4]
    assert (pairs[0].chosen_id, pairs[0].rejected_id) == ("t-c1", "t-c3")
    # Overlapping tiers (rho 0.6): top [2.6, 5] = c0, c1 -> c1 (10 chars); bottom [1, 3.4] =
    # c1, c2 -> c1 (10 chars): the same candidate, dropped.
    cands, scores = group("s", [(5.0, 20), (3.0, 10), (1.0, 5)])
    pairs, stats = length_controlled_pairs(cands, scores, 0.6)
    assert pairs == [] and stats["dropped_same"] == 1
    # rho 0.5: top [3, 5] = c0, c1, c3 -> c1 (1 char); bottom [1, 3] = c1, c2, c3 -> c3 (8 chars),
    # both score 3: their own gap is 0 <= min_margin, dropped as a tie.
    cands, scores = group("g", [(5.0, 9), (3.0, 1), (1.0, 2), (3.0, 8)])
    pairs, stats = length_controlled_pairs(cands, scores, 0.5)
    assert pairs == [] and stats["dropped_tie"] == 1 and stats["dropped_same"] == 0
    # All tied, and a prompt with one scored candidate.
    cands, scores = group("u", [(3.0, 1), (3.0, 2)])
    c2, s2 = group("v", [(3.0, 1), (None, 2)])
    _, stats = length_controlled_pairs(cands + c2, scores | s2, 0.3)
    assert stats == {"prompts": 2, "dropped_tie": 1, "dropped_unscored": 1, "dropped_same": 0, "kept": 0}
    with pytest.raises(ValueError):
        length_controlled_pairs(cands, scores, 1.5)


def test_length_control_min_margin_and_float_bounds():
    cands, scores = group("m", [(4.0, 1), (3.0, 9), (2.5, 3)])
    # rho 0.5: top [3.25, 4] = c0; bottom [2.5, 3.25] = c1, c2 -> c1 (9 chars); gap 1.0.
    assert length_controlled_pairs(cands, scores, 0.5, min_margin=0.99)[0][0].rejected_id == "m-c1"
    assert length_controlled_pairs(cands, scores, 0.5, min_margin=1.0)[1]["dropped_tie"] == 1
    # Means of integer scores landing on a tier bound are in the tier despite float rounding:
    # Smax = 13/3, Smin = 1/3, rho 0.5 -> both bounds 7/3, which c1 (mean of 2, 2, 3) sits on
    # (in floats 2.3333333333333335 > 2.333333333333333). Top: c0, c1 -> c0 (9 chars);
    # bottom: c1, c2, c3 -> c1 (10 chars).
    rows = [(statistics.fmean([4, 4, 5]), 9), (statistics.fmean([2, 2, 3]), 10),
            (statistics.fmean([0, 0, 1]), 2), (statistics.fmean([1, 1, 2]), 5)]
    cands, scores = group("f", rows)
    pairs, _ = length_controlled_pairs(cands, scores, 0.5)
    assert (pairs[0].chosen_id, pairs[0].rejected_id) == ("f-c0", "f-c1")


def random_case(seed):
    rng = random.Random(seed)
    cands, scores = [], {}
    for p in range(6):
        n = rng.randint(1, 5)
        c, s = group(f"p{p}", [(rng.choice([None, 1.0, 2.0, 2.0, 3.5, 5.0]), rng.randint(1, 9)) for _ in range(n)])
        cands += c
        scores |= s
    rng.shuffle(cands)
    return cands, scores


def test_rho_zero_is_exactly_build_pairs():
    # The hand case of test_pairs.py: a-c1 and a-c3 tie for the best, the lower index wins even
    # though a-c3 is shorter (the paper's rule at rho 0 would pick the shorter one).
    cands = [cand("a", i, t) for i, t in enumerate(["aa", "bbbb", "c", "dd"])] + [cand("b", i) for i in range(4)]
    scores = {"a-c0": 3.0, "a-c1": 4.5, "a-c2": 1.0, "a-c3": 4.5, "b-c0": 2.0, "b-c1": 2.0, "b-c2": 2.0, "b-c3": 2.0}
    pairs, stats = length_controlled_pairs(cands, scores, 0.0)
    assert pairs == build_pairs(cands, scores)[0] and pairs[0].chosen_id == "a-c1"
    assert stats == {**build_pairs(cands, scores)[1], "dropped_same": 0}
    # Ties at the minimum too: lowest index.
    c, s = group("m", [(4.0, 1), (1.0, 2), (1.0, 9)])
    assert length_controlled_pairs(c, s, 0.0)[0] == build_pairs(c, s)[0]
    assert build_pairs(c, s)[0][0].rejected_id == "m-c1"
    for seed in range(5):
        c, s = random_case(seed)
        for margin in (0.0, 1.0):
            assert length_controlled_pairs(c, s, 0.0, margin)[0] == build_pairs(c, s, margin)[0]


def test_tiny_rho_tiers_match_build_pairs_without_ties():
    # The tier code itself agrees with max-vs-min when the extremes are unique.
    c, s = group("x", [(3.0, 5), (4.5, 7), (1.0, 2), (2.0, 9)])
    c2, s2 = group("y", [(0.0, 1), (5.0, 8)])
    assert length_controlled_pairs(c + c2, s | s2, 1e-6)[0] == build_pairs(c + c2, s | s2)[0]


# --- DNO --------------------------------------------------------------------------------------

def test_dno_pairs_by_hand():
    cands, scores = group("p", [(4.0, 4), (3.5, 3), (2.0, 2), (4.5, 45), (None, 1)])
    ref = CandidateRecord("p-gold", "p", "prompt p", "gold answer", 9, 0, "stop")
    cands.append(ref)
    scores["p-gold"] = 5.0
    pairs, stats = dno_pairs(cands, scores, {"p-gold"}, margin=1.0, self_margin=1.5,
                             repetition_flags={"p-c3": True, "p-c0": False})
    got = [(p["chosen_id"], p["rejected_id"], p["dno_type"]) for p in pairs]
    assert got == [
        ("p-c0", "p-c2", "self"),  # gap 2.0 >= 1.5 (c0 vs c1: 0.5 < 1.5, dropped)
        ("p-gold", "p-c0", "reference"),  # gap 1.0 >= margin 1.0 (not the stricter 1.5)
        ("p-c0", "p-c3", "repetition"),  # c3 scored 4.5 but repeats: below everything
        ("p-c1", "p-c2", "self"),  # gap 1.5 >= 1.5
        ("p-gold", "p-c1", "reference"),
        ("p-c1", "p-c3", "repetition"),
        ("p-gold", "p-c2", "reference"),
        ("p-c2", "p-c3", "repetition"),
        ("p-gold", "p-c3", "repetition"),
    ]
    assert stats == {"prompts": 1, "unscored": 1, "dropped_tie": 0, "dropped_margin": 1, "pairs_reference": 3,
                     "pairs_self": 2, "pairs_repetition": 4, "kept": 9}
    p = pairs[1]
    assert (p["id"], p["chosen"], p["score_chosen"], p["score_rejected"], p["chosen_length"], p["kind"]) == \
        ("p-gold-over-p-c0", "gold answer", 5.0, 4.0, 11, "actor")
    assert pairs[2]["score_rejected"] is None and pairs[2]["score_chosen"] == 4.0
    assert all(p["chosen_id"] != "p-c3" for p in pairs)  # a repetitive sample is never chosen


def test_dno_ties_margins_and_flags():
    cands, scores = group("q", [(3.0, 1), (3.0, 2), (2.0, 3)])
    # margin 0: strict improvement still needed (a tie is never a pair).
    pairs, stats = dno_pairs(cands, scores, set(), margin=0.0, self_margin=0.0)
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("q-c0", "q-c2"), ("q-c1", "q-c2")]
    assert stats["dropped_tie"] == 1
    _, stats = dno_pairs(cands, scores, set(), margin=0.5, self_margin=1.5)
    assert stats["kept"] == 0 and stats["dropped_margin"] == 2 and stats["dropped_tie"] == 1
    # Two flagged samples are not paired with each other; an unscored flagged one is still a negative.
    cands, scores = group("r", [(4.0, 1), (None, 2), (1.0, 3)])
    pairs, _ = dno_pairs(cands, scores, {}, margin=0.0, self_margin=0.5, repetition_flags={"r-c1", "r-c2"})
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("r-c0", "r-c1"), ("r-c0", "r-c2")]
    with pytest.raises(ValueError):
        dno_pairs(cands, scores, set(), margin=1.0, self_margin=0.5)


# --- replay -------------------------------------------------------------------------------------

def pairs_of(tag, n):
    return [PairRecord(f"{tag}-{i}", f"{tag}-p{i}", "q", "c", "r", "ci", "ri", 4.0, 1.0, 1, 1) for i in range(n)]


def test_replay_proportions_exact():
    cur, prev1, prev2 = pairs_of("t3", 55), pairs_of("t2", 100), pairs_of("t1", 100)
    mixed, stats = replay_mix(cur, {1: prev1, 2: prev2}, {1: 0.3, 2: 0.15}, seed=7)
    # n1 = floor(0.3 / 0.55 * 55) = 30 (floats would give 29.999... -> 29), n2 = 15: 30% and 15% of 100.
    assert stats == {"current": 55, "lag_1": 30, "lag_2": 15, "total": 100}
    lags = [m["lag"] for m in mixed]
    assert lags == [0] * 55 + [1] * 30 + [2] * 15
    assert [m["id"] for m in mixed[:55]] == [p.id for p in cur]
    replayed = [m["id"] for m in mixed[55:85]]
    assert len(set(replayed)) == 30 and all(r.startswith("t2-") for r in replayed)
    assert replayed == sorted(replayed, key=lambda r: int(r.split("-")[1]))  # original order kept
    assert mixed[60]["score_chosen"] == 4.0 and mixed[0]["prompt"] == "q"  # PairRecord fields as a dict
    # Deterministic for a seed; another seed samples other pairs.
    assert replay_mix(cur, {1: prev1, 2: prev2}, {1: 0.3, 2: 0.15}, seed=7)[0] == mixed
    assert replay_mix(cur, {1: prev1, 2: prev2}, {1: 0.3, 2: 0.15}, seed=8)[0] != mixed


def test_replay_limits():
    cur = pairs_of("t3", 10)
    # floor(6/11 * 10) = 5, floor(3/11 * 10) = 2: 5/17 <= 0.3, 2/17 <= 0.15.
    _, stats = replay_mix(cur, {1: pairs_of("t2", 50), 2: pairs_of("t1", 50)}, {1: 0.3, 2: 0.15}, seed=0)
    assert (stats["lag_1"], stats["lag_2"], stats["total"]) == (5, 2, 17)
    # Too few earlier pairs: all of them; a missing lag gives none.
    _, stats = replay_mix(cur, {1: pairs_of("t2", 3)}, {1: 0.3, 2: 0.15}, seed=0)
    assert (stats["lag_1"], stats["lag_2"], stats["total"]) == (3, 0, 13)
    # Iteration 2 of the DNO run: 53 own pairs, 36 from t-1, no t-2. The 15% of t-2 must not go to
    # t-1: floor(0.3 / 0.7 * 53) = 22 (22/75 = 29.3%), where counting t-2's share gave
    # floor(0.3 / 0.55 * 53) = 28 (28/81 = 34.6%, above the paper's 30%).
    _, stats = replay_mix(pairs_of("t3", 53), {1: pairs_of("t2", 36), 2: []}, {1: 0.3, 2: 0.15}, seed=0)
    assert (stats["lag_1"], stats["lag_2"], stats["total"]) == (22, 0, 75)
    # A short lag 2 (2 pairs, share 2/T): fixed at 2, then T = (53 + 2) / 0.7 -> n1 = floor(0.3 * 55 / 0.7) = 23.
    _, stats = replay_mix(pairs_of("t3", 53), {1: pairs_of("t2", 36), 2: pairs_of("t1", 2)}, {1: 0.3, 2: 0.15},
                          seed=0)
    assert (stats["lag_1"], stats["lag_2"], stats["total"]) == (23, 2, 78)
    assert 23 / 78 <= 0.3 and 2 / 78 <= 0.15
    mixed, stats = replay_mix([{"id": "a", "x": 1}], {}, {}, seed=0)
    assert mixed == [{"id": "a", "x": 1, "lag": 0}] and stats == {"current": 1, "total": 1}
    with pytest.raises(ValueError):
        replay_mix(cur, {}, {1: 0.6, 2: 0.4}, seed=0)
    with pytest.raises(ValueError):
        replay_mix(cur, {1: pairs_of("t3", 20)}, {1: 0.5}, seed=0)  # same ids as current


# --- SPIN ---------------------------------------------------------------------------------------

def test_spin_pairs():
    gold = [("p2", "Q2", "G2"), ("p1", "Q1", "G1"), ("p3", "Q3", "G3")]
    samples = [CandidateRecord("p1-c0", "p1", "Q1", "S1", 0, 2, "stop"),
               CandidateRecord("p2-c1", "p2", "Q2", "other", 1, 2, "stop"),
               CandidateRecord("p2-c0", "p2", "Q2", " G2\n", 0, 2, "stop"),
               CandidateRecord("p9-c0", "p9", "Q9", "stray", 0, 2, "stop")]
    pairs, stats = spin_pairs(gold, samples)
    assert pairs == [
        {"id": "p1-spin-c0", "prompt_id": "p1", "prompt": "Q1", "chosen": "G1", "rejected": "S1",
         "chosen_id": "p1-gold", "rejected_id": "p1-c0", "score_chosen": None, "score_rejected": None,
         "chosen_length": 2, "rejected_length": 2, "kind": "spin"},
        {"id": "p2-spin-c1", "prompt_id": "p2", "prompt": "Q2", "chosen": "G2", "rejected": "other",
         "chosen_id": "p2-gold", "rejected_id": "p2-c1", "score_chosen": None, "score_rejected": None,
         "chosen_length": 2, "rejected_length": 5, "kind": "spin"},
    ]
    assert stats == {"prompts": 3, "dropped_no_sample": 1, "dropped_same_as_gold": 1, "unknown_prompt": 1, "kept": 2}
    assert spin_pairs(list(reversed(gold)), list(reversed(samples)))[0] == pairs  # ids and order stable
    with pytest.raises(ValueError):
        spin_pairs(gold + [("p1", "Q", "G")], samples)
