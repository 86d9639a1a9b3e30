"""pairs.rho wired into the pairs stage: Meta-Rewarding's length-controlled tiers on a
hand-computed case, per-iteration lists, and rho = 0 giving exactly today's pairs and metrics."""

import pytest

from srlm.loop import pairs
from srlm.run.config import Config, ConfigError, load_config, with_overrides
from srlm.run.records import CandidateRecord, JudgmentRecord, PairRecord, read_jsonl, write_jsonl
from srlm.run.rundir import RunDir

# Prompt p1, two judgments per candidate (None = unparsed, excluded):
#   c0: 10 chars, scores 5, 5    -> 5.0
#   c1:  4 chars, scores 4, 5    -> 4.5
#   c2: 40 chars, scores 2, 2    -> 2.0
#   c3: 30 chars, scores 1, None -> 1.0
# Prompt p2: every candidate scores 3 -> dropped as a tie whatever rho.
P1 = [("c0", 10, [5, 5]), ("c1", 4, [4, 5]), ("c2", 40, [2, 2]), ("c3", 30, [1, None])]
P2 = [("d0", 5, [3, 3]), ("d1", 9, [3, 3])]


def _write_iteration(rd: RunDir, t: int) -> None:
    cands, judgments = [], []
    for pid, group in (("p1", P1), ("p2", P2)):
        for index, (cid, length, scores) in enumerate(group):
            cands.append(CandidateRecord(id=cid, prompt_id=pid, prompt=f"prompt {pid}", response=cid[0] * length,
                                         index=index, num_tokens=length, finish_reason="stop"))
            for s, score in enumerate(scores):
                judgments.append(JudgmentRecord(id=f"{cid}-j{s}", candidate_id=cid, prompt_id=pid, sample=s,
                                                text=f"Score: {score}", score=score,
                                                error=None if score is not None else "no 'Score: N' line",
                                                parsed_score=score))
    write_jsonl(rd.candidates(t), cands)
    write_jsonl(rd.judgments(t), judgments)


def _run(tmp_path, rho_override: str, t: int):
    rd = RunDir(str(tmp_path))
    _write_iteration(rd, t)
    cfg = with_overrides(Config(), [f"output_dir={tmp_path}", rho_override])
    stats = pairs.run(cfg, rd, t)
    return read_jsonl(rd.pairs(t), PairRecord), stats


def test_rho_zero_is_todays_max_vs_min(tmp_path):
    got, stats = _run(tmp_path, "pairs.rho=0", 1)
    assert [(p.chosen_id, p.rejected_id) for p in got] == [("c0", "c3")]
    assert (got[0].score_chosen, got[0].score_rejected) == (5.0, 1.0)
    assert stats["pairs/kept"] == 1 and stats["pairs/dropped_tie"] == 1 and stats["pairs/prompts"] == 2
    # The paper's rule keeps its metrics exactly: no rho-only keys appear.
    assert "pairs/rho" not in stats and "pairs/dropped_same" not in stats


def test_rho_tiers_hand_computed(tmp_path):
    # rho = 0.25: top tier [0.75*5 + 0.25*1, 5] = [4, 5] = {c0, c1}, shortest c1 (4 chars);
    # bottom tier [1, 0.75*1 + 0.25*5] = [1, 2] = {c2, c3} (c2 sits on the bound), longest c2.
    got, stats = _run(tmp_path, "pairs.rho=0.25", 1)
    assert [(p.chosen_id, p.rejected_id) for p in got] == [("c1", "c2")]
    assert (got[0].score_chosen, got[0].score_rejected) == (4.5, 2.0)
    assert (got[0].chosen_length, got[0].rejected_length) == (4, 40)
    assert stats["pairs/rho"] == 0.25 and stats["pairs/kept"] == 1
    assert stats["pairs/dropped_tie"] == 1 and stats["pairs/dropped_same"] == 0
    assert stats["pairs/mean_chosen_length"] == 4 and stats["pairs/mean_score_margin"] == 2.5
    # rho = 0.1: top [4.6, 5] = {c0}, bottom [1, 1.4] = {c3}: the extremes again.
    got, _ = _run(tmp_path, "pairs.rho=0.1", 1)
    assert [(p.chosen_id, p.rejected_id) for p in got] == [("c0", "c3")]


def test_rho_per_iteration_list(tmp_path):
    for t, expected in ((1, ("c0", "c3")), (2, ("c1", "c2")), (3, ("c1", "c2"))):
        got, stats = _run(tmp_path, "pairs.rho=[0, 0.25]", t)
        assert [(p.chosen_id, p.rejected_id) for p in got] == [expected], t
    assert pairs.rho_at([0.0, 0.25, 0.5], 2) == 0.25 and pairs.rho_at([0.0, 0.25], 7) == 0.25
    assert pairs.rho_at(0.3, 5) == 0.3


@pytest.mark.parametrize("bad", ["pairs.rho=1.5", "pairs.rho=-0.1", "pairs.rho=[0, 2]", "pairs.rho=[]"])
def test_rho_out_of_range_refused(bad):
    with pytest.raises(ConfigError, match="rho must be a number in"):
        load_config("tiny", [bad])
