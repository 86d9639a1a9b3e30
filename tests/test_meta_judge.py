"""Meta-Rewarding wired into the loop (methods/meta_rewarding.py): which judgments are meta-judged, judge
pairs from fake verdicts on a hand-computed case (position weights, Bradley-Terry, length
filter), the judge/actor mix, the schedule, and a tiny end-to-end run."""

import json
import math
import os

import pytest

from srlm.methods import meta_rewarding
from srlm.data import rubric
from srlm import stages
from srlm.run.config import Config, ConfigError, load_config, with_overrides
from srlm.methods.meta_rewarding import parse_meta_verdict, render_meta
from srlm.run.records import (CandidateRecord, JudgePairRecord, JudgmentRecord, MetaJudgmentRecord, PairRecord,
                              read_jsonl, write_jsonl)
from srlm.run.rundir import RunDir

TEMPLATE = "Rate 0-5.\n<request>\n{prompt}\n</request>\n{response}"


def _cand(cid, pid, index, response="an answer"):
    return CandidateRecord(id=cid, prompt_id=pid, prompt=f"request {pid}", response=response, index=index,
                           num_tokens=3, finish_reason="stop")


def _jud(cid, sample, score, text=None, parsed=True):
    return JudgmentRecord(id=f"{cid}-j{sample}", candidate_id=cid, prompt_id=cid.split("-")[0], sample=sample,
                          text=text or f"judgment {sample} of {cid}\nScore: {score}", score=score,
                          error=None if parsed else "no 'Score: N' line", parsed_score=score if parsed else None,
                          mode="expected" if not parsed else "parsed")


def _meta(cid, a, b, verdict):
    return MetaJudgmentRecord(id=f"{cid}-m{a}v{b}", prompt_id=cid.split("-")[0], candidate_id=cid,
                              judgment_a=f"{cid}-j{a}", judgment_b=f"{cid}-j{b}", text="", verdict=verdict,
                              error=None if verdict else "no 'Winner: Judgement A|B' line")


def test_rubric_of_templates():
    embedded = rubric.load_template()
    text = meta_rewarding.rubric_of(embedded)
    assert text.startswith("Grade how well") and text.endswith("Score: <an integer from 0 to 5>")
    assert "<request>" not in text and "{prompt}" not in text
    assert meta_rewarding.rubric_of(TEMPLATE) == "Rate 0-5."
    assert meta_rewarding.rubric_of("{prompt}\n{response}\nRate it.") == ""


def test_select_judgments_most_varied_candidate_with_score_lines():
    cands = [_cand("p1-c0", "p1", 0), _cand("p1-c1", "p1", 1), _cand("p1-c2", "p1", 2),
             _cand("p2-c0", "p2", 0), _cand("p2-c1", "p2", 1)]
    judgments = [
        _jud("p1-c0", 0, 3), _jud("p1-c0", 1, 4),                         # variance 0.25
        _jud("p1-c1", 0, 1), _jud("p1-c1", 1, 5), _jud("p1-c1", 2, 3),    # variance 8/3: selected
        # c2 would vary most (0 vs 5) but its 5 has no score line: one scored judgment is not enough.
        _jud("p1-c2", 0, 0), _jud("p1-c2", 1, 5, parsed=False),
        _jud("p2-c0", 0, 2), _jud("p2-c1", 0, 4), _jud("p2-c1", 1, 4, parsed=False),  # nobody has two
    ]
    got = meta_rewarding.select_judgments(cands, judgments)
    assert [(c.id, [j.sample for j in js]) for c, js in got] == [("p1-c1", [0, 1, 2])]


def _fake_iteration():
    """Three candidates' meta-judgments with fake verdicts (see test_judge_pairs_hand_computed)."""
    cands = [_cand("p1-c0", "p1", 0, "answer X"), _cand("p2-c0", "p2", 0, "answer W"),
             _cand("p3-c0", "p3", 0, "answer Y")]
    judgments = [_jud("p1-c0", s, s) for s in range(3)]
    judgments += [_jud("p2-c0", 0, 5, text="one two three four five\nScore: 5"), _jud("p2-c0", 1, 1)]
    judgments += [_jud("p3-c0", 0, 2), _jud("p3-c0", 1, 4)]
    metas = [
        # X: j0 beats j1 and j2, j1 beats j2, whichever is shown first (3 A, 3 B verdicts).
        _meta("p1-c0", 0, 1, "A"), _meta("p1-c0", 1, 0, "B"), _meta("p1-c0", 0, 2, "A"),
        _meta("p1-c0", 2, 0, "B"), _meta("p1-c0", 1, 2, "A"), _meta("p1-c0", 2, 1, "B"),
        # W: j0 wins shown first; the swapped order did not parse.
        _meta("p2-c0", 0, 1, "A"), _meta("p2-c0", 1, 0, None),
        # Y: the first-shown judgment always wins: pure position bias.
        _meta("p3-c0", 0, 1, "A"), _meta("p3-c0", 1, 0, "A"),
    ]
    return cands, judgments, metas


def test_judge_pairs_hand_computed():
    cands, judgments, metas = _fake_iteration()
    # Iteration-wide wins: first position 6 (X: 3, W: 1, Y: 2), second 3 (X) ->
    # w1 = 3/9 = 1/3 for a first-position win, w2 = 6/9 = 2/3 for a second-position win.
    # X: B01 = w1 + w2 = 1, B02 = 1, B12 = 1: j0 > j1 > j2 -> chosen j0, rejected j2.
    # W: B01 = w1 = 1/3, B10 = 0. Two items with prior 0.1: e0 - e1 = ln((1/3 + 0.1) / 0.1) = ln(13/3),
    #    mean zero -> e0 = ln(13/3)/2, e1 = -ln(13/3)/2.
    # Y: B01 = w1 (j0 first wins), B10 = w1 (j1 first wins): a tie -> dropped.
    pairs, stats = meta_rewarding.build_judge_pairs(cands, judgments, metas, TEMPLATE, max_chosen_words=0)
    assert stats["weight_first"] == pytest.approx(1 / 3) and stats["weight_second"] == pytest.approx(2 / 3)
    assert [(p.candidate_id, p.chosen_id, p.rejected_id) for p in pairs] == [
        ("p1-c0", "p1-c0-j0", "p1-c0-j2"), ("p2-c0", "p2-c0-j0", "p2-c0-j1")]
    assert stats["candidates"] == 3 and stats["dropped_tie"] == 1 and stats["dropped_too_long"] == 0
    w = pairs[1]
    assert w.score_chosen == pytest.approx(math.log(13 / 3) / 2, abs=1e-9)
    assert w.score_rejected == pytest.approx(-math.log(13 / 3) / 2, abs=1e-9)
    assert w.prompt == "Rate 0-5.\n<request>\nrequest p2\n</request>\nanswer W"  # the judge prompt
    assert w.chosen == "one two three four five\nScore: 5" and w.chosen_words == 7
    assert w.chosen_length == len(w.chosen) and w.kind == "judge"
    # X's strengths are ordered j0 > j1 > j2.
    assert pairs[0].score_chosen > 0 > pairs[0].score_rejected
    # Length filter: W's chosen judgment has 7 words.
    pairs, stats = meta_rewarding.build_judge_pairs(cands, judgments, metas, TEMPLATE, max_chosen_words=6)
    assert [p.candidate_id for p in pairs] == ["p1-c0"] and stats["dropped_too_long"] == 1
    pairs, _ = meta_rewarding.build_judge_pairs(cands, judgments, metas, TEMPLATE, max_chosen_words=7)
    assert len(pairs) == 2


def test_unparsed_verdicts_give_no_pairs():
    cands, judgments, metas = _fake_iteration()
    for m in metas:
        m.verdict = None
    pairs, stats = meta_rewarding.build_judge_pairs(cands, judgments, metas, TEMPLATE, 0)
    assert pairs == [] and stats["dropped_tie"] == 3 and (stats["weight_first"], stats["weight_second"]) == (0, 0)


def test_summarize_position_bias():
    _, _, metas = _fake_iteration()
    stats = meta_rewarding.summarize([m.__dict__ for m in metas])
    assert stats["meta/meta_judgments"] == 10 and stats["meta/parse_failures"] == 1
    assert stats["meta/position_bias"] == pytest.approx(6 / 9)


def test_cap_judge_pairs():
    five = list("abcde")
    # 0.25 / 0.75 * 6 actor pairs = 2 judge pairs at most (2 of 8 = 25%).
    kept, dropped = meta_rewarding.cap_judge_pairs(five, 6, 0.25, "s")
    assert len(kept) == 2 and dropped == 3 and kept == sorted(kept) and set(kept) <= set(five)
    assert kept == meta_rewarding.cap_judge_pairs(five, 6, 0.25, "s")[0]  # seeded
    assert meta_rewarding.cap_judge_pairs(five, 6, None, "s") == (five, 0)
    assert meta_rewarding.cap_judge_pairs(five, 5, 0.5, "s") == (five, 0)  # cap 5: all fit
    assert meta_rewarding.cap_judge_pairs(five, 0, 0.5, "s") == ([], 5)


def test_schedule_and_dpo_inputs():
    cfg = with_overrides(Config(), ["method=meta_rewarding", "iterations=3"])
    names = [(s.name, t) for s, t in stages.schedule(cfg)]
    for t in (1, 2):
        it = [n for n, ti in names if ti == t]
        assert it.index("judge") < it.index("meta_judge") < it.index("pairs") < it.index("judge_pairs") < it.index("dpo")
    assert "meta_judge" not in [n for n, ti in names if ti == 3]
    rd = RunDir("/tmp/x")
    dpo = stages.BY_NAME["dpo"]
    assert rd.judge_pairs(1) in dpo.inputs(cfg, rd, 1) and rd.judge_pairs(3) not in dpo.inputs(cfg, rd, 3)
    plain = with_overrides(Config(), ["iterations=3"])
    assert not {"meta_judge", "judge_pairs"} & {s.name for s, _ in stages.schedule(plain)}
    assert dpo.inputs(plain, rd, 1) == [rd.pairs(1), rd.model(1)]
    with pytest.raises(ConfigError, match="meta_rewarding trains M_t as its own judge"):
        load_config("tiny", ["method=meta_rewarding", "judge.model=M1"])
    packaged = load_config("meta-rewarding")
    assert packaged.method == "meta_rewarding" and packaged.meta.judge_iterations == [1, 2]


def test_meta_prompt_round_trip():
    text = render_meta("{rubric}|{prompt}|{response}|{judgment_a}|{judgment_b}", " R ", "P", "{response}", "A", "B")
    assert text == "R|P|{response}|A|B"
    assert parse_meta_verdict("because\nWinner: Judgement B") == ("B", None)


def test_meta_rewarding_tiny_run(tmp_path, tiny_run_args):
    """One iteration of method meta_rewarding on the tiny model. Its meta verdicts are mostly
    unparsed, so the counts are checked; then the verdicts are replaced by fake ones and the rerun
    rebuilds judge_pairs and DPO (not the meta-judging) and trains on actor + judge pairs."""
    from srlm.cli import main

    args = [*tiny_run_args, "method=meta_rewarding", "iterations=1", "meta.max_new_tokens=16", "--no-eval"]
    assert main(["run", "--config", "tiny", *args]) == 0
    rd = RunDir(os.path.join(str(tmp_path), "run"))
    metrics = json.load(open(rd.metrics))["iter_1"]
    metas = read_jsonl(rd.meta_judgments(1), MetaJudgmentRecord)
    judgments = {j.id: j for j in read_jsonl(rd.judgments(1), JudgmentRecord)}
    assert metrics["meta/selected"] > 0, "no candidate had two scored judgments: the test would prove nothing"
    per_cand: dict[str, set] = {}
    for m in metas:
        per_cand.setdefault(m.candidate_id, set()).update({m.judgment_a, m.judgment_b})
        assert judgments[m.judgment_a].candidate_id == judgments[m.judgment_b].candidate_id == m.candidate_id
        assert (m.verdict is None) == (m.error is not None)
    # Every ordered pair of each selected candidate's judgments, once.
    assert len(per_cand) == metrics["meta/selected"]
    assert len(metas) == len({m.id for m in metas}) == sum(len(s) * (len(s) - 1) for s in per_cand.values())
    assert metrics["meta/meta_judgments"] == len(metas)
    assert metrics["meta/parse_failures"] == sum(m.verdict is None for m in metas)
    judge_pairs = read_jsonl(rd.judge_pairs(1), JudgePairRecord)
    actor_pairs = read_jsonl(rd.pairs(1), PairRecord)
    assert metrics["meta/judge_pairs"] == len(judge_pairs)
    assert metrics["meta/candidates"] == len(judge_pairs) + metrics["meta/dropped_tie"] + metrics["meta/dropped_too_long"]
    assert metrics["dpo/actor_pairs"] == len(actor_pairs) and metrics["dpo/judge_pairs"] == len(judge_pairs)
    assert metrics["dpo/pairs"] == len(actor_pairs) + len(judge_pairs)
    assert rd.judge_pairs(1).replace(rd.root + "/", "") in rd.read_marker(rd.model(2))["inputs"]

    # Fake verdicts: the lower-numbered judgment wins in both orders.
    for m in metas:
        a, b = judgments[m.judgment_a].sample, judgments[m.judgment_b].sample
        m.verdict, m.error = ("A" if a < b else "B"), None
    write_jsonl(rd.meta_judgments(1), metas)
    meta_mtime = os.path.getmtime(rd.meta_judgments(1))
    assert main(["run", "--config", rd.config, "--no-eval"]) == 0
    assert os.path.getmtime(rd.meta_judgments(1)) == meta_mtime  # meta-judging was not redone
    metrics = json.load(open(rd.metrics))["iter_1"]
    judge_pairs = read_jsonl(rd.judge_pairs(1), JudgePairRecord)
    assert len(judge_pairs) == metrics["meta/judge_pairs"] == metrics["meta/selected"] - metrics["meta/dropped_too_long"]
    assert judge_pairs, "fake verdicts formed no judge pair"
    for p in judge_pairs:
        assert judgments[p.chosen_id].sample < judgments[p.rejected_id].sample
        assert p.prompt.startswith("Rate 0-5.")  # the tiny run's judge template
    assert metrics["dpo/judge_pairs"] == len(judge_pairs) > 0
    assert metrics["dpo/pairs"] == metrics["dpo/actor_pairs"] + len(judge_pairs)
    assert "dpo/loss" in metrics


def test_soft_battle_matrix_hand_computed():
    from srlm.methods.meta_rewarding import soft_battle_matrix

    # (0 first, P(A)=0.9) and (1 first, P(A)=0.7): B01 = 0.9 + (1 - 0.7) = 1.2, B10 = 0.1 + 0.7 = 0.8.
    # (0, 2) has no swapped order: a lone order keeps its position bias, so it counts nowhere.
    b = soft_battle_matrix(3, [(0, 1, 0.9), (1, 0, 0.7), (0, 2, 0.99)])
    assert b[0][1] == pytest.approx(1.2) and b[1][0] == pytest.approx(0.8)
    assert b[0][2] == b[2][0] == 0.0 and b[1][2] == b[2][1] == 0.0
    with pytest.raises(ValueError):
        soft_battle_matrix(2, [(0, 1, 1.5), (1, 0, 0.5)])


def test_expected_verdicts_rank_an_a_always_meta_judge():
    """The 135M meta-judge says A in every order: hard verdicts weigh nothing (a tie, no pair),
    its probabilities over both orders still rank j0 above j1."""
    cands = [_cand("p1-c0", "p1", 0)]
    judgments = [_jud("p1-c0", 0, 4), _jud("p1-c0", 1, 2)]
    metas = [_meta("p1-c0", 0, 1, "A"), _meta("p1-c0", 1, 0, "A")]
    pairs, stats = meta_rewarding.build_judge_pairs(cands, judgments, metas, TEMPLATE, 0)
    assert pairs == [] and stats["dropped_tie"] == 1 and stats["soft_ranked"] == 0
    for m, p_a in zip(metas, (0.9, 0.7)):
        m.mode, m.verdict_probs = "expected", [p_a, 1 - p_a]
    pairs, stats = meta_rewarding.build_judge_pairs(cands, judgments, metas, TEMPLATE, 0)
    assert stats["soft_ranked"] == 1 and stats["dropped_tie"] == 0
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [("p1-c0-j0", "p1-c0-j1")]
    # Bradley-Terry with 0.1 pseudo-wins: e0 - e1 = ln((1.2 + 0.1) / (0.8 + 0.1)) = ln(13/9).
    assert pairs[0].score_chosen == pytest.approx(math.log(13 / 9) / 2, abs=1e-9)
    # Equal pulls in both orders (0.8 and 0.8): no preference beyond position -> a tie.
    for m in metas:
        m.verdict_probs = [0.8, 0.2]
    pairs, stats = meta_rewarding.build_judge_pairs(cands, judgments, metas, TEMPLATE, 0)
    assert pairs == [] and stats["dropped_tie"] == 1
