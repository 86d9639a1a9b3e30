import math

import pytest

from srlm.methods import meta_rewarding
from srlm.methods.meta_rewarding import Battle


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# --- template ---------------------------------------------------------------------------------

def test_template_placeholders_and_rendering():
    t = meta_rewarding.META_JUDGE_TEMPLATE
    for name in ("{rubric}", "{prompt}", "{response}", "{judgment_a}", "{judgment_b}"):
        assert t.count(name) == 1, name
    assert t.index("{rubric}") < t.index("{prompt}")  # constant part first: shared prefill
    assert "Winner: Judgement A\nWinner: Judgement B" in t
    out = meta_rewarding.render_meta(t, " R ", "Write {json}: {response}", "{\"a\": 1}", "Ja {x}\nScore: 3", "Jb\nScore: 1")
    # Inserted texts are never substituted again, even a literal "{response}" in the request.
    assert "<request>\nWrite {json}: {response}\n</request>" in out
    assert "<response>\n{\"a\": 1}\n</response>" in out
    assert "<judgement A>\nJa {x}\nScore: 3\n</judgement A>" in out
    assert "<judgement B>\nJb\nScore: 1\n</judgement B>" in out
    assert "<rubric>\nR\n</rubric>" in out
    assert "{judgment_a}" not in out and "{rubric}" not in out


# --- verdict parsing ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,verdict", [
    ("A is closer to the rubric.\nWinner: Judgement A", "A"),
    ("Winner: Judgement B", "B"),
    ("  Winner:   Judgement   B  \n", "B"),
    ("Reasoning.\nWinner: Judgment A", "A"),  # US spelling accepted (documented)
    ("Winner: Judgement A\nWinner: Judgment A", "A"),  # repeated but consistent
])
def test_parse_valid(text, verdict):
    assert meta_rewarding.parse_meta_verdict(text) == (verdict, None)


@pytest.mark.parametrize("text,reason", [
    ("", "no 'Winner"),
    ("Judgement A is better.", "no 'Winner"),
    ("winner: judgement a", "no 'Winner"),  # case matters
    ("Winner: Judgement a", "no 'Winner"),
    ("Winner: judgement A", "no 'Winner"),
    ("Winner: Judgement A and B", "no 'Winner"),  # both letters on one line
    ("Winner: Judgement AB", "no 'Winner"),
    ("Winner: Judgement A.", "no 'Winner"),  # trailing text
    ("Winner: Judgement A (clearly)", "no 'Winner"),
    ("**Winner: Judgement A**", "no 'Winner"),  # markdown bold
    ("Winner: **Judgement A**", "no 'Winner"),
    ("The Winner: Judgement A", "no 'Winner"),  # not on its own line
    ("Winner: A", "no 'Winner"),  # the pairwise template's format, not this one's
    ("Winner: Judgement C", "no 'Winner"),
    ("Winner: tie", "no 'Winner"),
    ("Winner: Judgement A\nOn reflection:\nWinner: Judgement B", "conflicting"),
    ("Winner: Judgement B\nWinner: Judgment A", "conflicting"),
])
def test_parse_rejects(text, reason):
    verdict, err = meta_rewarding.parse_meta_verdict(text)
    assert verdict is None and reason in err


def test_stop_and_truncate():
    assert not meta_rewarding.meta_stop_complete("Fine.\nWinner: Judgement A")  # "A and B" could still follow
    assert not meta_rewarding.meta_stop_complete("Fine.\nWinner: Judgement A and")
    assert not meta_rewarding.meta_stop_complete("Winner: Judgement A.\n")  # never a valid line: no early stop
    assert meta_rewarding.meta_stop_complete("Fine.\nWinner: Judgement A\n")
    assert meta_rewarding.meta_stop_complete("Winner: Judgment B  \nmore")
    assert meta_rewarding.truncate_after_verdict("Ok.\nWinner: Judgement B\nWinner: Judgement A\n") == "Ok.\nWinner: Judgement B"
    assert meta_rewarding.truncate_after_verdict("no verdict here") == "no verdict here"
    # Truncation never turns an invalid line into a valid one.
    text = "Winner: Judgement A and B\nmore"
    assert meta_rewarding.truncate_after_verdict(text) == text and meta_rewarding.parse_meta_verdict(text)[0] is None


# --- battles, position weights, Bradley-Terry --------------------------------------------------

def test_battle_orders():
    assert meta_rewarding.battle_orders(3) == [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)]
    assert meta_rewarding.battle_orders(1) == []


def hand_battles():
    # A meta-judge that prefers the first position: 5 of 6 decisive wins are for position A.
    return [Battle(0, 1, "A"), Battle(1, 0, "A"), Battle(0, 2, "A"), Battle(2, 0, "B"),
            Battle(1, 2, "A"), Battle(2, 1, "A"), Battle(1, 2, None)]


def test_position_weights_and_matrix_by_hand():
    bs = hand_battles()
    w1, w2 = meta_rewarding.position_weights(bs)
    # win_1st = 5, win_2nd = 1 (the unparsed battle counts nowhere): w1 = 1/6, w2 = 5/6.
    assert (w1, w2) == pytest.approx((1 / 6, 5 / 6))
    assert 5 * w1 == pytest.approx(1 * w2)  # both positions carry the same total weight
    b = meta_rewarding.battle_matrix(3, bs, (w1, w2))
    expected = [[0, 1 / 6, 1 / 6 + 5 / 6],  # 0 beat 2 from A (w1) and from B (w2)
                [1 / 6, 0, 1 / 6],
                [0, 1 / 6, 0]]
    for row, exp in zip(b, expected):
        assert row == pytest.approx(exp)


def test_position_weights_degenerate():
    always_a = [Battle(0, 1, "A"), Battle(1, 0, "A")]
    assert meta_rewarding.position_weights(always_a) == (0.0, 1.0)
    # Pure position bias carries no information: every verdict weighs 0, strengths all tie.
    assert meta_rewarding.elo_scores(2, always_a) == [0.0, 0.0]
    assert meta_rewarding.position_weights([Battle(0, 1, None)]) == (0.0, 0.0)
    with pytest.raises(ValueError):
        meta_rewarding.battle_matrix(2, [Battle(0, 0, "A")], (0.5, 0.5))
    with pytest.raises(ValueError):
        meta_rewarding.battle_matrix(2, [Battle(0, 1, "tie")], (0.5, 0.5))


def test_two_items_closed_form():
    # Judgment 0 wins in both orders: w = (1/2, 1/2), B01 = 1, B10 = 0. With 0.1 pseudo-wins each
    # way the MLE has sigmoid(e0 - e1) = 1.1 / 1.2, i.e. e0 - e1 = ln 11, centred at 0.
    e = meta_rewarding.elo_scores(2, [Battle(0, 1, "A"), Battle(1, 0, "B")], prior=0.1)
    assert e == pytest.approx([math.log(11) / 2, -math.log(11) / 2], abs=1e-9)
    # Unbeaten stays finite and the prior sets how far: prior 0.5 -> ln 3.
    e = meta_rewarding.elo_scores(2, [Battle(0, 1, "A"), Battle(1, 0, "B")], prior=0.5)
    assert e[0] - e[1] == pytest.approx(math.log(3), abs=1e-9)


def test_bradley_terry_recovers_known_strengths():
    # Strengths p = (4, 2, 1) with 3 games per pair (pseudo-wins included) give expected wins
    # 3 p_i / (p_i + p_j): 2|1, 2.4|0.6, 2|1. Subtract the 0.1 prior from each; the MLE is
    # then exactly log p centred: (ln 2, 0, -ln 2).
    wins = [[0, 1.9, 2.3], [0.9, 0, 1.9], [0.5, 0.9, 0]]
    e = meta_rewarding.bradley_terry(wins, prior=0.1)
    assert e == pytest.approx([math.log(2), 0.0, -math.log(2)], abs=1e-9)


def test_bradley_terry_cycle_and_edge_cases():
    cycle = [[0, 1, 0], [0, 0, 1], [1, 0, 0]]  # 0 > 1 > 2 > 0, equal weights: all equal
    assert meta_rewarding.bradley_terry(cycle) == pytest.approx([0, 0, 0], abs=1e-9)
    assert meta_rewarding.bradley_terry([]) == [] and meta_rewarding.bradley_terry([[0]]) == [0.0]
    with pytest.raises(ValueError):
        meta_rewarding.bradley_terry([[0, 1], [0, 0]], prior=0)


def test_elo_on_hand_battles_satisfies_likelihood_equations():
    bs = hand_battles()
    e = meta_rewarding.elo_scores(3, bs, prior=0.1)
    assert e[0] > e[1] > e[2] and sum(e) == pytest.approx(0, abs=1e-9)
    # Stationarity of the objective: each item's weighted wins equal its expected wins.
    raw = meta_rewarding.battle_matrix(3, bs, meta_rewarding.position_weights(bs))
    b = [[x + (0.1 if i != j else 0) for j, x in enumerate(row)] for i, row in enumerate(raw)]
    for i in range(3):
        observed = sum(b[i][j] for j in range(3) if j != i)
        expected = sum((b[i][j] + b[j][i]) * sigmoid(e[i] - e[j]) for j in range(3) if j != i)
        assert observed == pytest.approx(expected, abs=1e-9)


def test_iteration_weights_override():
    # Same two battles, but iteration-wide rates say position A wins 3x as often as B:
    # w = (1/4, 3/4). 0 won as A (1/4), 1 won as B (3/4): 1 is the stronger judgment.
    bs = [Battle(0, 1, "A"), Battle(0, 1, "B")]
    e = meta_rewarding.elo_scores(2, bs, weights=(0.25, 0.75), prior=0.1)
    # sigmoid(e1 - e0) = (0.75 + 0.1) / (1 + 0.2)
    assert e[1] - e[0] == pytest.approx(math.log(0.85 / 0.35), abs=1e-9)
    assert meta_rewarding.elo_scores(2, bs) == pytest.approx([0, 0], abs=1e-12)  # own rates: 1-1, tie


# --- response selection and judge pairs --------------------------------------------------------

def test_select_response():
    # Variances: 0, 8/3, 1, (one score: skipped).
    assert meta_rewarding.select_response([[4, 4, 4], [1, 5, 3], [2, 4], [5]]) == 1
    assert meta_rewarding.select_response([[1, 3], [2, 4], [0, 2]]) == 0  # ties -> lowest index
    assert meta_rewarding.select_response([[3, 3], [2, 2]]) == 0  # all agree: still an index
    assert meta_rewarding.select_response([[5], []]) is None


def test_judge_pair():
    js = ["short", "longer judgment", "mid one", "x" * 15]
    assert meta_rewarding.judge_pair(js, [0.5, 1.0, -1.0, 1.0], None) == ((1, 2), None)  # 1 and 3 tie: lowest
    assert meta_rewarding.judge_pair(js, [0.5, 1.0, -1.0, 1.0], 15) == ((1, 2), None)  # 15 chars: not longer
    assert meta_rewarding.judge_pair(js, [0.5, 1.0, -1.0, 1.0], 14) == (None, "chosen judgment too long")
    assert meta_rewarding.judge_pair(js, [-1.0, 0.5, -1.0, 0.2], 5) == (None, "chosen judgment too long")
    assert meta_rewarding.judge_pair(js, [0.0, 0.0, 0.0, 0.0], None) == (None, "strengths tie")
    assert meta_rewarding.judge_pair(["a"], [0.0], None) == (None, "fewer than 2 judgments")
    with pytest.raises(ValueError):
        meta_rewarding.judge_pair(js, [0.0], None)


def test_end_to_end_from_verdicts():
    # 3 judgments of one response; the meta-judge prefers judgment 2 in every order.
    verdicts = {(0, 1): "A", (1, 0): "B", (0, 2): "B", (2, 0): "A", (1, 2): "B", (2, 1): "A"}
    bs = [Battle(m, n, verdicts[(m, n)]) for m, n in meta_rewarding.battle_orders(3)]
    e = meta_rewarding.elo_scores(3, bs)
    assert meta_rewarding.judge_pair(["j0", "j1", "j2"], e, 100) == ((2, 1), None)
