"""`srlm compare --h2h-judge`: win rates across runs by one judge (report/cross.py).

Hand-written runs whose judge verdicts are already cached in OUT/cross/ (no model: a judge that
had to load would fail on the empty model directory), the refusals, and one tiny-model run."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from srlm.cli import main
from srlm.evaluation import evaluate, report
from srlm.evaluation.report.cross import comparisons
from srlm.run.records import InputError, mark_done, write_jsonl

CONFIG = "method: {method}\nseed: 42\niterations: 2\neval:\n  prompts: embedded:eval_prompts\n  k: 2\n"
PROMPTS = [f"Question {i}?" for i in range(4)]


def fake_run(root: str, method: str, lengths: list[int], prompts: list[str] = PROMPTS) -> str:
    """config.yaml, finished (empty) models M1..M3, and eval answers of M1 (10 chars each) and M3."""
    os.makedirs(root)
    with open(os.path.join(root, "config.yaml"), "w") as f:
        f.write(CONFIG.format(method=method))
    for k in (1, 2, 3):
        os.makedirs(os.path.join(root, "models", f"M{k}"))
        mark_done(os.path.join(root, "models", f"M{k}"))
    for model, lens in (("M1", [10] * 4), ("M3", lengths)):
        path = os.path.join(root, "eval", f"answers_{model}.jsonl")
        write_jsonl(path, [{"id": f"p{i}", "category": "", "prompt": p, "answer": "x" * n, "num_tokens": n}
                           for i, (p, n) in enumerate(zip(prompts, lens))])
        mark_done(path)
    return root


def cached(path: str, rows: list[dict]) -> None:
    write_jsonl(path, rows)
    mark_done(path)  # no settings recorded: any judge's settings match (evaluate._cached)


def scores(*per_prompt) -> list[dict]:
    return [{"id": f"p{i}", "scores": s} for i, s in enumerate(per_prompt)]


def verdicts(pairs: list[tuple], len_x: list[int], len_y: list[int]) -> list[dict]:
    return [{"id": f"p{i}", "verdict_xy": ab, "verdict_yx": ba, "len_x": lx, "len_y": ly}
            for i, ((ab, ba), lx, ly) in enumerate(zip(pairs, len_x, len_y))]


SR, DNO = [10, 20, 30, 40], [20, 20, 10, 40]  # answer lengths of each run's M3


def write_cache(out: str) -> None:
    """The judge's verdicts. Mean scores per prompt: self_rewarding 4.5, 3, unparsed, 3;
    dno 4, 5, 1, 3; M1 1.5, 3, 2, 2."""
    c = os.path.join(out, "cross")
    cached(os.path.join(c, "pointwise_self_rewarding.jsonl"), scores([4, 5], [3, 3], [None, None], [2, 4]))
    cached(os.path.join(c, "pointwise_dno.jsonl"), scores([4, 4], [5, None], [1, 1], [3, 3]))
    cached(os.path.join(c, "pointwise_M1.jsonl"), scores([1, 2], [3, 3], [2, 2], [None, 2]))
    cached(os.path.join(c, "h2h_self_rewarding_vs_dno.jsonl"),
           verdicts([("A", "B"), ("B", "A"), ("A", "A"), (None, "B")], SR, DNO))
    cached(os.path.join(c, "h2h_self_rewarding_vs_M1.jsonl"), verdicts([("A", "B")] * 4, SR, [10] * 4))
    cached(os.path.join(c, "h2h_dno_vs_M1.jsonl"), verdicts([("tie", "tie")] * 4, DNO, [10] * 4))


def rows(page: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", page)]


def test_comparisons_order():
    assert comparisons(["a", "b", "c", "M1"]) == [("a", "b"), ("a", "c"), ("b", "c"), ("a", "M1"), ("b", "M1"),
                                                  ("c", "M1")]


def test_cross_win_rates_hand_computed(tmp_path):
    a = fake_run(str(tmp_path / "a"), "self_rewarding", SR)
    b = fake_run(str(tmp_path / "b"), "dno", DNO)
    out = str(tmp_path / "cmp")
    write_cache(out)
    page = open(report.build_compare([a, b], out, h2h_judge="M1"), encoding="utf-8").read()
    res = json.load(open(os.path.join(out, "cross", "win_rates.json")))
    assert res["judge_model"] == os.path.abspath(os.path.join(a, "models", "M1"))
    assert (res["judge"], res["scoring"], res["k"], res["prompts"]) == ("M1", "parsed", 2, 4)
    assert [(e["name"], e["model"]) for e in res["entries"]] == [("self_rewarding", "M3"), ("dno", "M3"), ("M1", "M1")]
    got = {(r["x"], r["y"]): r for r in res["comparisons"]}
    assert list(got) == [("self_rewarding", "dno"), ("self_rewarding", "M1"), ("dno", "M1")]

    def wtl(r):
        return r["wins"], r["ties"], r["losses"], r["compared"], r["win_rate"]

    # Pointwise, self_rewarding vs dno: p0 4.5 > 4 win, p1 3 < 5 loss, p2 unparsed (left out),
    # p3 3 = 3 tie -> 1.5 / 3; relative length differences (10-20)/15, 0, 0.
    p = got[("self_rewarding", "dno")]["pointwise"]
    assert wtl(p) == (1, 1, 1, 3, 0.5) and p["unparsed_prompts"] == 1
    assert (p["mean_score_x"], p["mean_score_y"]) == (pytest.approx(3.5), pytest.approx(4.0))
    assert p["win_rate_at_equal_length"] == pytest.approx(
        evaluate.win_rate_at_equal_length([1.0, 0.0, 0.5], [-10 / 15, 0.0, 0.0]))
    assert p["win_rate_ci95"] == pytest.approx(evaluate.bootstrap_ci([1.0, 0.0, 0.5], 42))
    # self_rewarding vs M1: win (4.5 > 1.5), tie (3 = 3), p2 left out, win (3 > 2) -> 2.5 / 3.
    p = got[("self_rewarding", "M1")]["pointwise"]
    assert wtl(p) == (2, 1, 0, 3, pytest.approx(2.5 / 3))
    assert p["mean_score_y"] == pytest.approx((1.5 + 3 + 2) / 3)
    # dno vs M1: 4 > 1.5, 5 > 3, 1 < 2, 3 > 2 -> 3 / 4.
    p = got[("dno", "M1")]["pointwise"]
    assert wtl(p) == (3, 0, 1, 4, 0.75) and p["mean_score_x"] == pytest.approx(3.25)
    # Pairwise, both orders combined: p0 A then B (x both times), p1 B then A (y), p2 A, A (one
    # each: tie), p3 unparsed then B (x) -> 2.5 / 4; the first-shown answer picked in 4 of 7.
    h = got[("self_rewarding", "dno")]["pairwise"]
    assert wtl(h) == (2, 1, 1, 4, 0.625) and h["unparsed_verdicts"] == 1
    assert h["position_bias_first"] == pytest.approx(4 / 7)
    h = got[("self_rewarding", "M1")]["pairwise"]
    assert wtl(h) == (4, 0, 0, 4, 1.0) and h["win_rate_ci95"] == [1.0, 1.0] and h["position_bias_first"] == 0.5
    assert wtl(got[("dno", "M1")]["pairwise"]) == (0, 4, 0, 4, 0.5)

    # The page: one table per judge, a plot, and the entries.
    assert ">Win rates across runs, one judge</h2>" in page
    table = rows(page)
    assert ["self_rewarding vs dno", "1 / 1 / 1", "3 / 4", "50.0%"] == table_row(table, "self_rewarding vs dno")[:4]
    assert ["dno vs M1", "3 / 0 / 1", "4 / 4", "75.0%"] == table_row(table, "dno vs M1")[:4]
    assert ["self_rewarding vs M1", "4 / 0 / 0", "4 / 4", "100.0%", "[100.0, 100.0]%"] in [
        r[:5] for r in table]
    assert page.count("data:image/png;base64,") == 1  # the runs have no metrics.json: this plot only
    md = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    assert "\n## Win rates across runs, one judge\n" in md and "compare_cross_win_rates.png" in md


def table_row(table: list[list[str]], first: str) -> list[str]:
    """The first row (of the pointwise table, which comes first) starting with `first`."""
    return next(r for r in table if r and r[0] == first)


def test_cross_without_judge_reads_nothing_new(tmp_path):
    a = fake_run(str(tmp_path / "a"), "self_rewarding", SR)
    b = fake_run(str(tmp_path / "b"), "dno", DNO)
    page = open(report.build_compare([a, b], str(tmp_path / "cmp")), encoding="utf-8").read()
    assert "Win rates across runs" not in page and not os.path.exists(str(tmp_path / "cmp" / "cross"))


def test_cross_refusals(tmp_path, capsys):
    a = fake_run(str(tmp_path / "a"), "self_rewarding", SR)
    b = fake_run(str(tmp_path / "b"), "dno", DNO)
    out = str(tmp_path / "cmp")
    os.remove(os.path.join(b, "eval", "answers_M3.jsonl.done"))
    assert main(["compare", a, b, "--out", out, "--h2h-judge", "M1"]) == 2
    err = capsys.readouterr().err
    assert f"{b}: no eval answers of its model M3" in err and f"srlm eval {b} --models M3" in err
    assert not os.path.exists(os.path.join(out, "index.html"))

    c = fake_run(str(tmp_path / "c"), "dno", DNO, prompts=PROMPTS[:3] + ["Another question?"])
    with pytest.raises(InputError, match=r"eval prompts differ: .*/c \(M3, 4 prompts\) and .*/a \(M3, 4 prompts\) "
                                         r"share 3"):
        report.build_compare([a, c], out, h2h_judge="M1")
    with pytest.raises(InputError, match="model not found"):
        report.build_compare([a, fake_run(str(tmp_path / "d"), "dno", DNO)], out, h2h_judge="M7")
    with pytest.raises(InputError, match="expected openai:MODEL@BASE_URL"):
        report.build_compare([a, str(tmp_path / "d")], out, h2h_judge="openai:judge")
    with pytest.raises(InputError, match="does not exist"):
        report.build_compare([a, str(tmp_path / "d")], out, h2h_judge=str(tmp_path / "no" / "model"))


def test_cross_tiny_run(tmp_path, tiny_run, tiny_model, monkeypatch):
    """Two copies of the finished tiny run (SFT + 2 iterations: final model M3), with hand-written
    eval answers, judged by the tiny base model; a rerun loads no model."""
    dirs = []
    for name in ("one", "two"):
        d = str(tmp_path / name)
        shutil.copytree(tiny_run, d, ignore=shutil.ignore_patterns("eval"))
        for model in ("M1", "M3"):
            path = os.path.join(d, "eval", f"answers_{model}.jsonl")
            write_jsonl(path, [{"id": f"p{i}", "category": "", "prompt": p,
                                "answer": f"{name} {model} answer {i}" * (i + 1), "num_tokens": 4}
                               for i, p in enumerate(PROMPTS[:3])])
            mark_done(path)
        dirs.append(d)
    out = str(tmp_path / "cmp")
    args = ["compare", *dirs, "--out", out, "--h2h-judge", tiny_model]
    assert main(args) == 0
    res = json.load(open(os.path.join(out, "cross", "win_rates.json")))
    names = [e["name"] for e in res["entries"]]
    assert len(names) == 3 and names[-1] == "M1" and all(e["model"] == "M3" for e in res["entries"][:2])
    assert [(r["x"], r["y"]) for r in res["comparisons"]] == [(names[0], names[1]), (names[0], "M1"),
                                                              (names[1], "M1")]
    for r in res["comparisons"]:
        for kind in ("pointwise", "pairwise"):
            assert r[kind]["prompts"] == 3, (kind, r[kind])
    firsts = [r[0] for r in rows(open(os.path.join(out, "index.html"), encoding="utf-8").read()) if r]
    for r in res["comparisons"]:
        assert firsts.count(f"{r['x']} vs {r['y']}") == 2  # in the pointwise and the pairwise table

    def no_model(*a, **k):
        raise AssertionError("the rerun loaded a model")

    monkeypatch.setattr(evaluate, "make_backend", no_model)
    monkeypatch.setattr(evaluate, "make_judge", no_model)
    assert main(args) == 0
    assert json.load(open(os.path.join(out, "cross", "win_rates.json")))["comparisons"] == res["comparisons"]


def test_eval_wrappers_read_their_caches(tmp_path):
    """evaluate.compare and pointwise_scores, which share score_answers and pairwise_h2h with
    cross.py, still read DIR/eval/h2h_<x>_vs_<y>.jsonl and pointwise_<model>_by_<judge>.jsonl."""
    from srlm.run.config import load_config

    a = fake_run(str(tmp_path / "a"), "self_rewarding", SR)
    cfg = load_config(os.path.join(a, "config.yaml"))
    cached(os.path.join(a, "eval", "h2h_M3_vs_M1.jsonl"), verdicts([("A", "B"), ("B", "A"), ("A", "B"), ("tie", "tie")],
                                                                  SR, [10] * 4))
    h = evaluate.compare(cfg, a, "M3", "M1", None)  # None: a judge would be needed only if not cached
    assert (h["wins"], h["ties"], h["losses"], h["win_rate"]) == (2, 1, 1, 0.625)
    cached(os.path.join(a, "eval", "pointwise_M3_by_M3.jsonl"), scores([4, 5], [3, 3], [None, None], [2, 4]))
    assert evaluate.pointwise_scores(cfg, a, "M3", "M3", None) == {"p0": [4, 5], "p1": [3, 3], "p2": [None, None],
                                                                  "p3": [2, 4]}


def test_cross_pointwise_only(tmp_path):
    """--no-h2h-pairwise: the same pointwise figures, no pairwise judge asked, no pairwise table rows."""
    a = fake_run(str(tmp_path / "a"), "self_rewarding", SR)
    b = fake_run(str(tmp_path / "b"), "dno", DNO)
    out = str(tmp_path / "cmp")
    write_cache(out)
    page = open(report.build_compare([a, b], out, h2h_judge="M1", h2h_pairwise=False), encoding="utf-8").read()
    res = json.load(open(os.path.join(out, "cross", "win_rates.json")))
    got = {(r["x"], r["y"]): r for r in res["comparisons"]}
    assert all(r["pairwise"] is None for r in got.values())
    p = got[("self_rewarding", "dno")]["pointwise"]
    assert (p["wins"], p["ties"], p["losses"], p["win_rate"]) == (1, 1, 1, 0.5)
    table = rows(page)
    assert sum(1 for r in table if r and r[0] == "self_rewarding vs dno") == 1  # the pointwise row only
