"""`report.build_compare`: one page over several run directories, on two hand-written runs
(config.yaml + metrics.json only, no models): values in the tables are hand-computed."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from srlm.evaluation import report
from srlm.evaluation.report.compare import labels, total_wall_s
from srlm.evaluation.report.load import load_run
from srlm.run.records import InputError

IMG = re.compile(r'<img[^>]*\ssrc="data:image/png;base64,([A-Za-z0-9+/=]+)"')
HEADINGS = ["Runs", "Judge-human agreement", "Head-to-head win rates", "Answer length", "Preference pairs",
            "Wall time"]


def write_run(root: str, config: str, metrics: dict) -> str:
    os.makedirs(root)
    with open(os.path.join(root, "config.yaml"), "w") as f:
        f.write(config)
    with open(os.path.join(root, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    return root


def run_a(root: str) -> str:
    """Named by config `method`; full eval with a length heuristic; SFT 10 s + 30 s + 45 s."""
    return write_run(root, "method: self_rewarding\nseed: 42\niterations: 2\neval:\n  prompts: embedded\n", {
        "sft": {"sft/runtime_s": 10.0},
        "iter_1": {"pairs/kept": 5, "iteration/wall_s": 30.0},
        "iter_2": {"pairs/kept": 3, "iteration/wall_s": 45.0},
        "eval": {
            "judge_agreement": {"human_prefs": {"M0": {"accuracy": 0.5}, "M1": {"accuracy": 0.6},
                                                "M2": {"accuracy": 0.65}, "M3": {"accuracy": None}}},
            "baselines": {"human_prefs": {"length": {"accuracy": 0.675, "n": 40}}},
            "length": {"M1": {"mean_chars": 100.0, "mean_tokens": 25.0}, "M3": {"mean_chars": 180.0, "mean_tokens": 44.5}},
            "win_rate": {"M3_vs_M1": {"wins": 9, "ties": 2, "losses": 5, "win_rate": 0.625,
                                      "win_rate_ci95": [0.4375, 0.8125], "win_rate_at_equal_length": 0.55,
                                      "position_bias_first": 0.5}},
        }})


def run_b(root: str, seed: int = 42) -> str:
    """Named by its directory (no `method`); no eval group; iteration 2 still running (no wall time)."""
    return write_run(root, f"seed: {seed}\niterations: 3\neval:\n  prompts: embedded\n", {
        "sft": {"sft/runtime_s": 20.0},
        "iter_1": {"pairs/kept": 7, "iteration/wall_s": 120.0},
        "iter_2": {"pairs/kept": 0},
    })


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def rows(page: str) -> list[list[str]]:
    """Every table row of the page as its cells' text."""
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", page)]


def test_compare_two_runs(tmp_path):
    a, b = run_a(str(tmp_path / "a")), run_b(str(tmp_path / "run_b"))
    out = str(tmp_path / "cmp")
    index = report.build_compare([a, b], out)
    assert index == os.path.join(out, "index.html")
    page = read(index)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "<link" not in page
    for attr in re.findall(r'\s(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("data:image/png;base64,", "#")), attr[:60]
    for h in HEADINGS:
        assert f">{h}</h2>" in page, h
    assert "share a seed and an evaluation set" in page
    table = rows(page)
    # Method from config.yaml, else the directory name; the length heuristic next to the models.
    assert ["self_rewarding", "50.0%", "60.0%", "65.0%", "-", "67.5%"] in table
    assert ["run_b", "-", "-", "-", "-", "-"] in table
    assert "<th>length heuristic</th>" in page
    assert ["M3 vs M1", "self_rewarding", "9 / 2 / 5", "62.5%", "[43.8, 81.2]%", "55.0%", "50.0%"] in table
    assert ["M3", "44.5 tokens · 180 chars", "-"] in table
    # Pairs and wall time per iteration; totals add SFT: 10 + 30 + 45 = 85 s, 20 + 120 = 140 s.
    assert ["iter_1", "5", "7"] in table and ["iter_2", "3", "0"] in table
    assert ["iter_1", "30.0 s", "2:00"] in table and ["iter_2", "45.0 s", "-"] in table
    assert ["total", "1:25", "2:20"] in table
    pngs = [base64.b64decode(x) for x in IMG.findall(page)]
    assert len(pngs) == 5 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    md = read(os.path.join(out, "report.md"))
    for h in HEADINGS:
        assert f"\n## {h}\n" in md, h
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(refs) == 5 and all(os.path.isfile(os.path.join(out, r)) for r in refs)
    assert "| iter_1 | 5 | 7 |" in md


def test_compare_warns_when_runs_differ_and_tolerates_no_eval(tmp_path, capsys):
    a, b = run_b(str(tmp_path / "x")), run_b(str(tmp_path / "y"), seed=7)
    page = read(report.build_compare([a, b], str(tmp_path / "cmp")))
    assert "differ in <code>seed</code> (42; 7)" in page
    assert "differ in seed (42; 7)" in capsys.readouterr().err
    assert "No run has judge-human agreement results" in page and "No run has head-to-head win rates" in page
    assert "Not plotted" in page and len(IMG.findall(page)) == 2  # pairs and wall time


def test_compare_names_and_totals(tmp_path):
    x = load_run(run_b(str(tmp_path / "one" / "run")))
    y = load_run(run_b(str(tmp_path / "two" / "run")))
    z = load_run(run_a(str(tmp_path / "z")))
    assert labels([z, x]) == ["self_rewarding", "run"]
    assert labels([x, y, z]) == ["run (run)", "run (run) #2", "self_rewarding"]
    assert total_wall_s(z) == 85.0 and total_wall_s(x) == 140.0


def test_compare_rejects_bad_input(tmp_path):
    a = run_a(str(tmp_path / "a"))
    with pytest.raises(InputError):
        report.build_compare([a], str(tmp_path / "cmp"))
    with pytest.raises(InputError):
        report.build_compare([a, str(tmp_path / "missing")], str(tmp_path / "cmp"))
