"""DNO (method: dno): references as judged candidates, the dno_pairs stage's margins, repetition
negatives and replay from earlier iterations' files (hand-computed), and the loop end to end on
the tiny model. dno.dno_pairs and dno.replay_mix themselves: tests/test_pair_builders.py."""

import json
import os

import pytest

from srlm.data import loaders
from srlm.methods import dno, spin
from srlm import stages
from srlm.run.config import load_config
from srlm.loop.pairs import candidate_scores
from srlm.run.records import CandidateRecord, InputError, JudgmentRecord, PromptRecord, read_jsonl, write_jsonl
from srlm.run.rundir import RunDir


def test_references_are_the_seed_answers():
    ift = [loaders.IFTExample("q0", "a0 "), loaders.IFTExample("q1", "a1"), loaders.IFTExample("q2", "a2")]
    prompts = [PromptRecord(spin.prompt_id(2, 2), "q2", "seed", 2), PromptRecord(spin.prompt_id(2, 0), "q0", "seed", 2)]
    refs = dno.references(prompts, ift, index=4)
    assert [(r.id, r.prompt_id, r.prompt, r.response, r.index, r.finish_reason) for r in refs] == [
        ("t2-seed00002-ref", "t2-seed00002", "q2", "a2", 4, "reference"),
        ("t2-seed00000-ref", "t2-seed00000", "q0", "a0", 4, "reference")]  # stripped as samples are
    with pytest.raises(InputError, match="redo seed_prompts"):
        dno.references([PromptRecord(spin.prompt_id(2, 1), "changed", "seed", 2)], ift, index=4)


def test_reference_source_and_judged_files(tmp_path):
    cfg = load_config("dno", [f"output_dir={tmp_path}"])
    rd = RunDir(str(tmp_path))
    assert dno.reference_sources(cfg) == cfg.data.ift == stages.seed_sources(cfg)
    assert stages.judged_files(cfg, rd, 2) == [rd.candidates(2), rd.references(2)]
    judge_inputs = stages.BY_NAME["judge"].inputs(cfg, rd, 2)
    assert rd.references(2) in judge_inputs  # a changed reference makes the judgments stale
    other = load_config("dno", [f"output_dir={tmp_path}", "dno.reference=stronger.jsonl"])
    assert dno.reference_sources(other) == ["stronger.jsonl"] == stages.seed_sources(other)
    assert stages.seed_sources(load_config("spin")) == load_config("spin").data.ift  # SPIN unchanged
    plain = load_config("default", [f"output_dir={tmp_path}"])
    assert stages.judged_files(plain, rd, 2) == [rd.candidates(2)]
    assert dno.replay_sources(cfg, rd, 1) == []
    assert dno.replay_sources(cfg, rd, 3) == [(1, rd.pairs(2)), (2, rd.pairs(1))]
    no_lag2 = load_config("dno", [f"output_dir={tmp_path}", "dno.replay=[0.3,0]"])
    assert dno.replay_sources(no_lag2, rd, 3) == [(1, rd.pairs(2))]


def test_repetitive_samples():
    loop = "the cat sat on the mat and then " * 3  # one 8-word n-gram three times
    cands = [CandidateRecord("a", "p", "q", loop, 0, 1, "length"),
             CandidateRecord("b", "p", "q", "the cat sat on the mat and then left " * 2, 1, 1, "stop")]
    assert dno.repetitive(cands, 8) == {"a"}
    assert dno.repetitive(cands, 0) == set()


def _judgments(scores_by_cand: dict[str, list]) -> list[JudgmentRecord]:
    return [JudgmentRecord(f"{cid}-j{s}", cid, cid.rsplit("-", 1)[0], s, "", score, None)
            for cid, scores in scores_by_cand.items() for s, score in enumerate(scores)]


def test_dno_pairs_stage_by_hand(tmp_path):
    # The paper-scale margins of config.py (dno.yaml's are sized to expected scores); replay [0.3, 0.15].
    cfg = load_config("dno", [f"output_dir={tmp_path}", "dno.margin=1.0", "dno.self_margin=1.5"])
    rd = RunDir(str(tmp_path))
    p, q = "t2-seed00000", "t2-seed00001"

    def cand(pid, i, text):
        return CandidateRecord(f"{pid}-c{i}", pid, "Q " + pid, text, i, 3, "stop")

    loop = "one two three four five six seven eight " * 3
    write_jsonl(rd.candidates(2), [cand(p, 0, "good"), cand(p, 1, "weak"), cand(p, 2, loop),
                                   cand(q, 0, "x"), cand(q, 1, "y"), cand(q, 2, "z")])
    write_jsonl(rd.references(2), dno.references(
        [PromptRecord(p, "Q " + p, "seed", 2), PromptRecord(q, "Q " + q, "seed", 2)],
        [loaders.IFTExample("Q " + p, "gold p"), loaders.IFTExample("Q " + q, "gold q")], index=4))
    # Mean scores: p-c0 4.0, p-c1 2.5, p-c2 5.0 (but repetitive), p-ref 4.5; q: 3.0, 3.0, unscored, ref 3.0.
    write_jsonl(rd.judgments(2), _judgments({
        f"{p}-c0": [4, 4], f"{p}-c1": [3, 2], f"{p}-c2": [5, 5], f"{p}-ref": [5, 4],
        f"{q}-c0": [3, 3], f"{q}-c1": [3, None], f"{q}-c2": [None, None], f"{q}-ref": [3, 3]}))
    # Iteration 1: six own pairs (lag 0) and two it replayed itself (lag 1), which must not come back.
    old = [{"id": f"t1-old{i}", "prompt_id": "t1-seed00000", "prompt": "Q", "chosen": "c", "rejected": "r",
            "chosen_id": "x", "rejected_id": "y", "score_chosen": 4.0, "score_rejected": 1.0, "chosen_length": 1,
            "rejected_length": 1, "lag": int(i >= 6)} for i in range(8)]
    write_jsonl(rd.pairs(1), old)

    stats = dno.run_pairs(cfg, rd, 2)
    pairs = read_jsonl(rd.pairs(2))
    own = [(x["chosen_id"], x["rejected_id"], x["dno_type"]) for x in pairs if x["lag"] == 0]
    assert own == [
        (f"{p}-c0", f"{p}-c1", "self"),        # 4.0 - 2.5 = 1.5 >= self_margin 1.5
        (f"{p}-c0", f"{p}-c2", "repetition"),  # p-c2 scored 5.0, but loops: an automatic negative
        (f"{p}-ref", f"{p}-c1", "reference"),  # 4.5 - 2.5 = 2.0 >= margin 1.0
        (f"{p}-c1", f"{p}-c2", "repetition"),
        (f"{p}-ref", f"{p}-c2", "repetition"),
    ]  # p-c0 vs p-ref: gap 0.5 < 1.0 dropped; q: three ties, q-c2 unscored
    assert pairs[2]["chosen"] == "gold p" and pairs[2]["score_chosen"] == 4.5 and pairs[2]["score_rejected"] == 2.5
    # Replay: floor(0.3 / (1 - 0.3) * 5) = floor(2.14) = 2 from iteration 1's own pairs; there is no
    # iteration 0, so t-2's 15% is not counted.
    replayed = [x for x in pairs if x["lag"] != 0]
    assert len(replayed) == 2 and all(x["lag"] == 1 for x in replayed)
    assert {x["id"] for x in replayed} <= {f"t1-old{i}" for i in range(6)}
    assert stats["dno/kept"] == 5 and stats["pairs/kept"] == 7 and stats["dno/replayed"] == 2
    assert (stats["dno/replay_lag_1"], stats["dno/replay_lag_2"]) == (2, 0)
    assert (stats["dno/pairs_self"], stats["dno/pairs_reference"], stats["dno/pairs_repetition"]) == (1, 1, 3)
    assert (stats["dno/dropped_margin"], stats["dno/dropped_tie"], stats["dno/unscored"]) == (1, 3, 1)
    assert stats["dno/repetition_flagged"] == 1
    assert stats["dno/reference_score_mean"] == pytest.approx((4.5 + 3.0) / 2)
    assert stats["dno/sample_score_mean"] == pytest.approx((4.0 + 2.5 + 5.0 + 3.0 + 3.0) / 5)
    # Without replay the file is the five own pairs; a stricter margin drops the reference pair too.
    strict = load_config("dno", [f"output_dir={tmp_path}", "dno.replay=[]", "dno.margin=2.5",
                                 "dno.self_margin=2.5"])
    stats = dno.run_pairs(strict, rd, 2)
    assert [x["dno_type"] for x in read_jsonl(rd.pairs(2))] == ["repetition"] * 3
    assert stats["pairs/kept"] == 3 and stats["dno/replayed"] == 0


def test_dno_loop_end_to_end(tmp_path, tiny_run_args):
    from srlm.cli import main

    # Small margins: the tiny model's expected scores differ by hundredths of a point (after one
    # SFT epoch instead of the fixture's 12 they all tie and no pair forms).
    assert main(["run", "--config", "tiny", *tiny_run_args, "method=dno", "dpo.init=previous",
                 "dno.margin=0.01", "dno.self_margin=0.02"]) == 0
    run = tiny_run_args[0].split("=", 1)[1]
    ift = {ex.prompt: ex.response for ex in loaders.load_ift([os.path.join(str(tmp_path), "ift.jsonl")])}
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    own_by_iter = {}
    for t in (1, 2):
        it = os.path.join(run, f"iter_{t}")
        prompts = read_jsonl(os.path.join(it, "prompts.jsonl"), PromptRecord)
        assert len(prompts) == 4 and all(p.source == "seed" and p.prompt in ift for p in prompts)
        refs = read_jsonl(os.path.join(it, "references.jsonl"), CandidateRecord)
        assert [r.prompt_id for r in refs] == [p.id for p in prompts]
        assert all(r.response == ift[r.prompt].strip() and r.id == r.prompt_id + "-ref" for r in refs)
        # The judge scored every reference, K=2 times, in the same file as the samples.
        judgments = read_jsonl(os.path.join(it, "judgments.jsonl"), JudgmentRecord)
        scores = candidate_scores(judgments, 1)
        assert all(sum(j.candidate_id == r.id for j in judgments) == 2 and r.id in scores for r in refs)
        cands = read_jsonl(os.path.join(it, "candidates.jsonl"), CandidateRecord)
        assert not any(c.id.endswith("-ref") for c in cands)  # sampling's file stays the samples
        text = {c.id: c.response for c in cands + refs}
        pairs = read_jsonl(os.path.join(it, "pairs.jsonl"))
        own = [x for x in pairs if x["lag"] == 0]
        for x in own:
            assert x["chosen"] == text[x["chosen_id"]] and x["rejected"] == text[x["rejected_id"]]
            if x["dno_type"] != "repetition":
                gap = scores[x["chosen_id"]] - scores[x["rejected_id"]]
                assert gap >= (0.02 if x["dno_type"] == "self" else 0.01)
                with_reference = x["chosen_id"].endswith("-ref") or x["rejected_id"].endswith("-ref")
                assert (x["dno_type"] == "reference") == with_reference
        m = metrics[f"iter_{t}"]
        assert m["pairs/kept"] == len(pairs) == m["dpo/pairs"] and own
        assert m["dno/references"] == 4 and m["dno/reference_score_mean"] is not None
        assert m["dpo/start"] == f"M{t}"  # DNO's reference policy is pi_t
        own_by_iter[t] = own
    # Iteration 2 replays floor(0.3 / 0.7 * C) of iteration 1's own pairs (lag 1; there is no t-2, whose
    # share is not counted), no more than it has.
    replayed = [x for x in read_jsonl(os.path.join(run, "iter_2", "pairs.jsonl")) if x["lag"] == 1]
    expected = min(len(own_by_iter[1]), int(0.3 / 0.7 * len(own_by_iter[2]) + 1e-9))
    assert len(replayed) == expected == metrics["iter_2"]["dno/replayed"] >= 1, \
        (len(own_by_iter[1]), len(own_by_iter[2]), len(replayed))
    assert {x["id"] for x in replayed} <= {x["id"] for x in own_by_iter[1]}
    assert os.path.exists(os.path.join(run, "models", "M3.done"))
