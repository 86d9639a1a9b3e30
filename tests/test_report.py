"""`srlm report`: a self-contained HTML page and a Markdown file with PNG plots, on a real tiny
run, on the same run without eval, and on a hand-written run directory with awkward content."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil

import pytest

from srlm.cli import main
from srlm.evaluation import report
from srlm.run.records import InputError

IMG = re.compile(r'<img[^>]*\ssrc="data:image/png;base64,([A-Za-z0-9+/=]+)"')
MD_PNG = re.compile(r"!\[[^\]]*\]\(([^)]+\.png)\)")
HEADINGS = ["Run", "Judge-free evaluation (IFEval)", "Iteration metrics", "SFT", "Evaluation", "Plots", "Example answers", "Example preference pairs"]


def check_self_contained(page: str) -> None:
    """Inline CSS, no scripts, nothing fetched: every src/href is a data: URI or an anchor."""
    assert page.startswith("<!DOCTYPE html>")
    tags = " ".join(re.findall(r"<[a-zA-Z][^>]*>", page))
    assert "<link" not in tags and "<script" not in tags and "<iframe" not in tags
    assert "@import" not in page and "url(" not in page
    for attr in re.findall(r'\s(?:src|href)="([^"]*)"', page):
        assert attr.startswith(("data:image/png;base64,", "#")), attr[:60]


def images(page: str) -> list[bytes]:
    out = [base64.b64decode(b) for b in IMG.findall(page)]
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in out)
    return out


def md_pngs(run_dir: str) -> list[str]:
    md_path = os.path.join(run_dir, "report", "report.md")
    with open(md_path, encoding="utf-8") as f:
        refs = MD_PNG.findall(f.read())
    for ref in refs:
        assert os.path.isfile(os.path.join(run_dir, "report", ref)), ref
    return refs


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- a real tiny loop ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated_run(tiny_run, tmp_path_factory) -> str:
    """A copy of the session's tiny loop (conftest.tiny_run: SFT + 2 iterations, eval off) with
    `srlm eval` run on M0, M1 and M2 at the smallest sizes, so every report section has data."""
    run_dir = str(tmp_path_factory.mktemp("report") / "run")
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("checkpoints", "report"))
    assert main(["eval", run_dir, "--models", "M0,M1,M2", "eval.human_prefs=[embedded:human_prefs]",
                 "eval.max_human_pairs=4", "eval.max_prompts=3", "eval.max_new_tokens=12", "eval.k=1"]) == 0
    return run_dir


def test_report_on_tiny_run(evaluated_run, capsys):
    tiny_run = evaluated_run
    capsys.readouterr()
    assert main(["report", tiny_run]) == 0
    index = capsys.readouterr().out.strip().splitlines()[-1]
    assert index == os.path.join(tiny_run, "report", "index.html")
    assert os.path.isfile(index)
    page = read(index)
    for h in HEADINGS:
        assert f">{h}</h2>" in page, h
    for h in ("Judge-human agreement", "Answer length", "Head-to-head win rates", "Resolved config"):
        assert h in page
    assert "<details>" in page and "iterations: 2" in page  # the config, collapsible
    assert len(images(page)) >= 5
    check_self_contained(page)
    assert len(md_pngs(tiny_run)) >= 5
    md = read(os.path.join(tiny_run, "report", "report.md"))
    for h in HEADINGS:
        assert f"## {h}\n" in md, h
    assert "```yaml" in md
    # The tables hold the run's own numbers.
    metrics = json.load(open(os.path.join(tiny_run, "metrics.json")))
    assert "iter_1" in page and "judge/score_hist" in page and "sft/loss" in page
    assert report.fmt(metrics["iter_1"]["prompts/kept"]) in page
    assert set(metrics["eval"]["length"]) == {"M0", "M1", "M2"}
    assert ">M2<" in page and "M2 vs M1" in page


def test_report_without_eval(tiny_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("models", "checkpoints", "report"))
    shutil.rmtree(os.path.join(run_dir, "eval"), ignore_errors=True)
    path = os.path.join(run_dir, "metrics.json")
    metrics = json.load(open(path))
    metrics.pop("eval", None)
    json.dump(metrics, open(path, "w"))

    page = read(report.build(run_dir))
    for h in HEADINGS:
        assert f">{h}</h2>" in page, h
    assert "No evaluation results" in page
    assert 'id="plot-agreement"' not in page and 'id="plot-win_rates"' not in page
    assert "Not plotted" in page
    assert len(images(page)) >= 3  # score histogram, pairs, SFT loss at least
    check_self_contained(page)
    assert "agreement.png" not in md_pngs(run_dir)


# --- a hand-written run directory ------------------------------------------------------------------

EVIL = '<script>alert("x")</script> & <b>bold</b> | `tick` ```fence'


def make_fake_run(root: str, iterations: int = 2, with_eval: bool = True) -> str:
    """A schema-correct run directory without models: two iterations (the second with no pairs
    and nulls), eval with two human sets and win rates, and text that needs escaping."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "config.yaml"), "w") as f:
        f.write(f"output_dir: {root}\nseed: 42\niterations: {iterations}\nmodel:\n  name_or_path: fake/m0\n"
                "judge:\n  k: 3\n")
    steps = [{"loss": 2.0 / (i + 1), "step": i + 1, "learning_rate": 1e-5} for i in range(20)]
    json.dump(steps + [{"train_runtime": 5.0, "train_loss": 0.5, "step": 20}], open(os.path.join(root, "sft_log.json"), "w"))
    metrics = {"sft": {"sft/ift_examples": 170, "sft/eft_examples": 168, "sft/loss": 0.1, "sft/first_loss": 2.0,
                       "sft/steps": 20, "sft/runtime_s": 5.0, "sft/num_tokens": 123456.0}}
    for t in range(1, iterations + 1):
        it = os.path.join(root, f"iter_{t}")
        os.makedirs(it, exist_ok=True)
        has_pairs = t == 1
        prompts = [{"id": f"t{t}-p{i}", "prompt": f"Prompt {i} {EVIL}", "source": "self_instruct", "iteration": t}
                   for i in range(4)]
        cands = [{"id": f"t{t}-p{i}-c{c}", "prompt_id": f"t{t}-p{i}", "prompt": f"Prompt {i} {EVIL}",
                  "response": f"Answer {c} to {i}: {EVIL}\nsecond line", "index": c, "num_tokens": 10,
                  "finish_reason": "stop"} for i in range(4) for c in range(2)]
        judg = [{"id": f"{c['id']}-j{s}", "candidate_id": c["id"], "prompt_id": c["prompt_id"], "sample": s,
                 "text": f"The response is fine {EVIL}.\nScore: {c['index'] * 4 if has_pairs else 2}",
                 "score": (c["index"] * 4 if has_pairs else 2) if s < 2 else None,
                 "error": None if s < 2 else "no 'Score: N' line"} for c in cands for s in range(3)]
        pairs = [{"id": f"t{t}-p{i}-pair", "prompt_id": f"t{t}-p{i}", "prompt": f"Prompt {i} {EVIL}",
                  "chosen": f"Answer 1 to {i}: {EVIL}", "rejected": f"Answer 0 to {i}: {EVIL}",
                  "chosen_id": f"t{t}-p{i}-c1", "rejected_id": f"t{t}-p{i}-c0", "score_chosen": 4.0,
                  "score_rejected": 0.0, "chosen_length": 40 + i, "rejected_length": 30} for i in range(4)] if has_pairs else []
        for name, rows in (("prompts", prompts), ("candidates", cands), ("judgments", judg), ("pairs", pairs)):
            with open(os.path.join(it, f"{name}.jsonl"), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        m = {"prompts/kept": 4, "sample/candidates": 8, "judge/judgments": 24, "judge/parsed": 16,
             "judge/parse_failures": 8, "judge/parse_failure_rate": 8 / 24,
             "judge/failure_reasons": {"no 'Score: N' line": 8},
             "judge/score_mean": 2.0, "judge/score_std": 2.0 if has_pairs else 0.0,
             "judge/score_hist": {"0": 8, "1": 0, "2": 0, "3": 0, "4": 8, "5": 0} if has_pairs
             else {"0": 0, "1": 0, "2": 16, "3": 0, "4": 0, "5": 0},
             "pairs/kept": len(pairs), "pairs/dropped_tie": 0 if has_pairs else 4, "pairs/dropped_unscored": 0,
             "pairs/mean_chosen_length": 41.5 if has_pairs else None,
             "pairs/mean_rejected_length": 30.0 if has_pairs else None,
             "iteration/wall_s": 12.5}
        if has_pairs:
            m |= {"dpo/pairs": 4, "dpo/start": "M1", "dpo/loss": 0.6, "dpo/rewards/accuracies": 0.75,
                  "dpo/rewards/margins": 0.2}
            log = [{"loss": 0.69 - 0.02 * s, "rewards/margins": 0.05 * s, "rewards/accuracies": 0.5, "step": s + 1}
                   for s in range(8)]
            json.dump(log, open(os.path.join(it, "dpo_log.json"), "w"))
        else:
            m |= {"dpo/pairs": 0, "dpo/skipped_no_pairs": 1, "dpo/loss": None}
        metrics[f"iter_{t}"] = m
    if with_eval:
        models = [f"M{i}" for i in range(iterations + 2)]
        agreement = {src: {mm: {"pairs": 40, "human_non_tie": 38, "correct": 20 + 3 * i, "judge_ties": 5,
                                "unparsed": 2, "accuracy": (20 + 3 * i) / 38, "accuracy_decided": 0.7,
                                "parse_failure_rate": 0.05, "score_hist": {"0": 1, "1": 2, "2": 3, "3": 4, "4": 5, "5": 6},
                                "human_ties": 2, "tie_agreement": None}
                           for i, mm in enumerate(models)} for src in ("human_prefs", "oasst")}
        agreement["oasst"]["M0"]["accuracy"] = None
        metrics["eval"] = {
            "judge_agreement": agreement,
            "ifeval": {mm: {"ifeval/prompt_strict": 0.2 + 0.01 * i, "ifeval/prompt_strict_ci95": [0.15, 0.3],
                            "ifeval/inst_strict": 0.3, "ifeval/inst_strict_ci95": [0.25, 0.35], "ifeval/prompts": 64}
                       for i, mm in enumerate(models)},
            "length": {mm: {"mean_chars": 100.0 + 50 * i, "median_chars": 90, "mean_tokens": 25.0 + 10 * i,
                            "median_tokens": 22} for i, mm in enumerate(models)},
            "win_rate": {"M2_vs_M1": {"prompts": 16, "compared": 16, "wins": 9, "ties": 2, "losses": 5,
                                      "unparsed_verdicts": 0, "win_rate": 0.625, "position_bias_first": 0.55,
                                      "win_rate_ci95": [0.4375, 0.8125], "length_controlled_win_rate": 0.58,
                                      "mean_relative_length_diff": 0.12},
                         "M3_vs_M1": {"prompts": 16, "compared": 0, "wins": 0, "ties": 0, "losses": 0,
                                      "unparsed_verdicts": 32, "win_rate": None, "position_bias_first": None}},
        }
        ev = os.path.join(root, "eval")
        os.makedirs(ev, exist_ok=True)
        for i, mm in enumerate(models):
            with open(os.path.join(ev, f"answers_{mm}.jsonl"), "w") as f:
                for k, cat in enumerate(["writing", "math", "advice", "writing"]):
                    f.write(json.dumps({"id": f"eval-00{k}", "category": cat, "prompt": f"Eval prompt {k} {EVIL}",
                                        "answer": f"{mm} answers {k}: {EVIL}" + " more" * 30 * i,
                                        "num_tokens": 10 + i, "finish_reason": "length" if i == 3 else "stop"}) + "\n")
        with open(os.path.join(ev, "h2h_M2_vs_M1.jsonl"), "w") as f:
            for k in range(4):
                f.write(json.dumps({"id": f"eval-00{k}", "verdict_xy": "A", "verdict_yx": ["B", "tie", None, "A"][k],
                                    "text_xy": "Winner: A", "text_yx": "", "len_x": 30, "len_y": 20}) + "\n")
    json.dump(metrics, open(os.path.join(root, "metrics.json"), "w"), indent=1)
    return root


def test_report_on_written_run(tmp_path):
    run_dir = make_fake_run(str(tmp_path / "run"))
    page = read(report.build(run_dir))
    check_self_contained(page)
    # Every plot has data, and the judge-free section's IFEval and proxy-vs-gold plots (no checker here).
    assert len(images(page)) == len(report.PLOTS) + 2
    assert 'id="plot-judge_vs_checker"' not in page and "No judgment records both a checker verdict" in page
    # Every text is escaped: no tag from the data survives, the escaped form is shown.
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    # Nulls and missing keys are "-", never "None"/"null".
    assert ">None<" not in page and ">null<" not in page and "<td>-</td>" in page
    # Both human sets side by side per model; win rate with CI and the win rate at equal length,
    # read from the old key `length_controlled_win_rate` that this run was written with.
    assert "oasst" in page and "human_prefs" in page
    assert "62.5%" in page and "[43.8, 81.2]%" in page and "58.0%" in page
    assert "win rate at equal length (logistic fit)" in page and "length-controlled" not in page.lower()
    # Examples: 3 eval prompts with all 4 models, pairs with scores and a parsed judgment.
    assert page.count('class="card"') == 3 + 2
    assert "M2 vs M1: M2 shown first → M2 wins; M1 shown first → M2 wins" in page
    assert "(score 4)" in page and "mean score 4" in page
    md = read(os.path.join(run_dir, "report", "report.md"))
    assert "| M2 vs M1 |" in md
    assert "````text" in md  # a fence longer than the ``` inside the text
    assert len(md_pngs(run_dir)) == len(images(page))


# --- the positive control: IFEval caches, held-out families, checker verdicts on judgments ----------

HELD, TRAINED = "punctuation:no_comma", "change_case:english_lowercase"
CHECKER = [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 0.5, 1.0]  # the checker's share followed, per candidate of an iteration


def ifeval_row(key: int, ids: list[str], follow: list[bool]) -> dict:
    return {"key": key, "prompt": f"IFEval prompt {key}", "response": "r" * 10 * key, "finish_reason": "stop",
            "instruction_id_list": ids, "kwargs": [{}] * len(ids), "strict_follow": follow,
            "strict_follow_all": all(follow), "loose_follow": follow, "loose_follow_all": all(follow)}


def add_control(run_dir: str) -> str:
    """make_fake_run's run as a positive-control run: punctuation held out of training; judgments
    with the checker's verdicts beside the rubric's score (iteration 1: the self-judge's mean is
    2v + 1 for checker share v, iteration 2: 5 - 2v); scored IFEval rows per model (M0 follows
    nothing, M1 the trained instructions, M2 and M3 everything); self-judged eval answers for
    M1-M3; the eval group's IFEval breakdown made by evaluate.ifeval_breakdown itself."""
    from types import SimpleNamespace

    from srlm.evaluation.evaluate import ifeval_breakdown
    from srlm.run.records import mark_done, write_jsonl

    with open(os.path.join(run_dir, "config.yaml"), "a") as f:
        f.write("prompts:\n  holdout_families: [punctuation]\n")
    for t, judge in ((1, lambda v: [4 * v + 1, 1, None]), (2, lambda v: [5 - 2 * v, 5 - 2 * v, 5 - 2 * v])):
        path = os.path.join(run_dir, f"iter_{t}", "judgments.jsonl")
        rows = [json.loads(line) for line in open(path)]
        for r in rows:
            c = int(r["candidate_id"].split("-p")[1][0]) * 2 + int(r["candidate_id"][-1])
            v = CHECKER[c]
            r |= {"verifier": [v == 1.0, v > 0], "verifier_score": v, "judge_score": judge(v)[r["sample"]]}
        rows.append({**rows[0], "id": "unchecked", "candidate_id": "t-unchecked", "verifier": None,
                     "verifier_score": None})
        write_jsonl(path, rows)
    ev = os.path.join(run_dir, "eval")
    follows = {"M0": (False, False), "M1": (False, True), "M2": (True, True), "M3": (True, True)}
    for m, (held, trained) in follows.items():
        rows = [ifeval_row(1, [HELD], [held]), ifeval_row(2, [HELD], [True]), ifeval_row(3, [TRAINED], [trained]),
                ifeval_row(4, [TRAINED], [trained]), ifeval_row(5, [HELD, TRAINED], [held, trained]),
                ifeval_row(6, [TRAINED], [False])]
        write_jsonl(os.path.join(ev, f"ifeval_{m}.jsonl"), rows)
        mark_done(os.path.join(ev, f"ifeval_{m}.jsonl"), {"size": 0})
        if m != "M0":  # M0 never judges its own answers
            write_jsonl(os.path.join(ev, f"pointwise_{m}_by_{m}.jsonl"),
                        [{"id": f"eval-00{k}", "scores": [3 + int(m[1:]) * 0.5, None, 4]} for k in range(4)])
    write_jsonl(os.path.join(ev, "pointwise_M1_by_M2.jsonl"), [{"id": "eval-000", "scores": [0]}])  # not self
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    group = metrics["eval"]["ifeval"] = {}
    cfg = SimpleNamespace(seed=42, prompts=SimpleNamespace(holdout_families=["punctuation"], verifiable_families=[]))
    metrics["eval"]["ifeval_delta"] = ifeval_breakdown(cfg, run_dir, group)
    metrics["eval"]["baselines"] = {"human_prefs": {"length": {"accuracy": 0.617, "n": 38}}}
    json.dump(metrics, open(os.path.join(run_dir, "metrics.json"), "w"), indent=1)
    return run_dir


def cells(page: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", page)]


def test_report_of_a_positive_control_run(tmp_path):
    run_dir = add_control(make_fake_run(str(tmp_path / "run"), iterations=2))
    page = read(report.build(run_dir))
    check_self_contained(page)
    assert '<section id="judge_free"><h2>Judge-free evaluation (IFEval)</h2>' in page
    # The headline cards lead with IFEval: M3 follows all but prompt 6 ((5/6 + 6/7) / 2); M0 only prompt 2.
    cards = re.findall(r'<div class="stat"><div class="k">(.*?)</div><div class="v">(.*?)</div>'
                       r'<div class="d">(.*?)</div>', page)
    assert cards[0][:2] == ("IFEval score (no judge)", f"{100 * (5 / 6 + 6 / 7) / 2:.1f}%")
    assert cards[0][2].startswith("M3, 95% CI [")
    assert f"vs M0 +{100 * (4 / 6 + 5 / 7) / 2:.1f} pts [" in cards[0][2]
    assert "(paired, 6 prompts)" in cards[0][2]
    assert cards[1][0] == "judge agreement (human_prefs)" and cards[1][2].endswith("longer answer wins: 62%")
    rows = cells(page)
    # Deltas: whole set, then the held-out (prompts 1, 2) and trained (3, 4, 6) subsets.
    delta = [r for r in rows if r and r[0] == "M1 vs M0"]
    assert [r[1] for r in delta] == ["6", "2", "3"]
    assert delta[0][4].startswith("+33.3 pts [") and delta[1][2] == "+0.0 pts" and delta[2][4].startswith("+66.7 pts")
    assert delta[0][7] == "2 / 0"  # prompts 3 and 4 fixed
    assert [r[0] for r in rows if len(r) > 2 and r[0].endswith("vs M1") and r[2].endswith("pts")] == [
        "M2 vs M1", "M3 vs M1"] * 3
    assert "held out of training: every instruction" in page
    # Held-out vs trained per model; per family with the held-out family marked.
    split = {r[0]: r for r in rows if len(r) == 8 and r[0] in ("M0", "M1", "M2", "M3") and r[1] == "2"}
    assert set(split) == {"M0", "M1", "M2", "M3"}
    assert split["M1"][2].startswith("50.0%") and split["M1"][4].startswith("66.7%")
    assert split["M1"][6].startswith("+0.0 pts") and split["M1"][7].startswith("+66.7 pts")
    assert ["punctuation", "3", "yes", "33.3%", "33.3%", "100.0%", "100.0%"] in rows
    assert ["change_case", "4", "no", "0.0%", "75.0%", "75.0%", "75.0%"] in rows
    # Judge vs checker: each candidate's judgments averaged, then correlated over 8 candidates
    # (mean checker share 4.5 / 8; self-judge means 2v + 1 and 5 - 2v).
    assert ["iter_1", "8", "1", "1", "2.125", "0.5625"] in rows and ["iter_2", "8", "-1", "-1", "3.875", "0.5625"] in rows
    for name in ("ifeval", "proxy_vs_gold", "judge_vs_checker"):
        assert f'id="plot-{name}"' in page, name
    assert "Missing: self-judged scores for M0" in page
    md = read(os.path.join(run_dir, "report", "report.md"))
    assert "## Judge-free evaluation (IFEval)\n" in md and "### Does the judge see what the checker sees?" in md
    assert {"proxy_vs_gold.png", "judge_vs_checker.png", "ifeval.png"} <= set(md_pngs(run_dir))


def test_ifeval_deltas_of_a_run_evaluated_before_they_were_recorded(tmp_path):
    """No eval.ifeval_delta and no by_family in metrics.json: the report computes both from the
    scored rows, for the whole prompt set."""
    run_dir = add_control(make_fake_run(str(tmp_path / "run")))
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    recorded = metrics["eval"].pop("ifeval_delta")
    for v in metrics["eval"]["ifeval"].values():
        v.pop("ifeval/by_family")
    json.dump(metrics, open(os.path.join(run_dir, "metrics.json"), "w"))
    run = report.load_run(run_dir)
    computed = run.ifeval_deltas()
    assert sorted(computed) == sorted(recorded)
    assert computed["M3_vs_M1"]["ifeval/delta_score"] == pytest.approx(recorded["M3_vs_M1"]["ifeval/delta_score"])
    page = read(report.build(run_dir))
    assert ["punctuation", "3", "yes", "33.3%", "33.3%", "100.0%", "100.0%"] in cells(page)


def test_report_handles_partial_runs(tmp_path, capsys):
    # Eval missing, second iteration half-done (no metrics yet), malformed JSONL line, null values.
    run_dir = make_fake_run(str(tmp_path / "run"), with_eval=False)
    report.build(run_dir)
    assert os.path.exists(os.path.join(run_dir, "report", "sft_loss.png"))
    os.makedirs(os.path.join(run_dir, "iter_3"))
    for name in ("pairs", "judgments"):  # a crash mid-write leaves a torn last line
        with open(os.path.join(run_dir, "iter_1", f"{name}.jsonl"), "a") as f:
            f.write('{"id": "torn", "prompt": ')
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    metrics["iter_1"]["judge/score_mean"] = None
    metrics["sft"] = {}
    json.dump(metrics, open(os.path.join(run_dir, "metrics.json"), "w"))
    os.remove(os.path.join(run_dir, "sft_log.json"))
    capsys.readouterr()
    page = read(report.build(run_dir))
    assert "iter_3" in page and "No evaluation results" in page and "No SFT metrics" in page
    assert page.count('class="card"') == 2 and "(score 4)" in page  # pair examples despite the torn lines
    err = capsys.readouterr().err  # each torn file is named, with the records kept
    assert "pairs.jsonl:5: malformed JSON" in err and "using the 4 records before it" in err
    assert 'id="plot-sft_loss"' not in page
    assert len(images(page)) == 4  # score histogram, pairs, pair lengths, DPO
    # A rebuild removes plots that no longer have data.
    assert not os.path.exists(os.path.join(run_dir, "report", "sft_loss.png"))
    # Only a metrics.json: still a report.
    only = tmp_path / "only"
    only.mkdir()
    (only / "metrics.json").write_text("{}")
    assert os.path.isfile(report.build(str(only)))


def test_corrupt_files_warn_and_count_as_missing(tmp_path, capsys):
    run_dir = make_fake_run(str(tmp_path / "run"))
    with open(os.path.join(run_dir, "sft_log.json"), "w") as f:
        f.write('[{"loss": 2.0, "step": 1}, {"lo')
    with open(os.path.join(run_dir, "iter_1", "dpo_log.json"), "wb") as f:
        f.write(b'[{"loss": 0.69, "step": 1}]\xff')  # not UTF-8
    capsys.readouterr()
    page = read(report.build(run_dir))
    err = capsys.readouterr().err
    assert "sft_log.json: unreadable" in err and "dpo_log.json: unreadable" in err
    assert 'id="plot-sft_loss"' not in page and 'id="plot-dpo_loss"' not in page
    assert "No SFT training log" in page and "No DPO training logs" in page
    assert 'id="plot-agreement"' in page  # the rest of the report is there
    # A corrupt metrics.json: no metrics at all, the files still give iterations and examples.
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        f.write("{")
    page = read(report.build(run_dir))
    assert "metrics.json: unreadable" in capsys.readouterr().err
    assert "No SFT metrics" in page and "No evaluation results" in page and "No iteration has recorded metrics" in page
    assert page.count('class="card"') == 3 + 2


def test_win_rate_at_equal_length_key_and_old_agreement_shape(tmp_path):
    run_dir = make_fake_run(str(tmp_path / "run"))
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    wr = metrics["eval"]["win_rate"]["M2_vs_M1"]
    wr["win_rate_at_equal_length"] = 0.61  # the new key wins over the old one
    metrics["eval"]["judge_agreement"] = {"M1": {"accuracy": 0.25}, "M2": {"accuracy": 0.75}}  # no human-set level
    json.dump(metrics, open(os.path.join(run_dir, "metrics.json"), "w"))
    page = read(report.build(run_dir))
    assert "<td>61.0%</td>" in page and "58.0%" not in page and "at equal length 61.0%" in page
    assert "Judge-human agreement (human_prefs)" in page and "25% → 75%" in page


def test_adding_a_section_is_one_function(tmp_path, monkeypatch):
    """A new section (table, plot, example) appears in both files; a failing one becomes a note."""
    from srlm.evaluation.report import sections
    from srlm.evaluation.report.examples import Example, Panel

    def ifeval_section(run):
        return sections.Section("ifeval", "IFEval <accuracy>", intro="From `eval.ifeval`.",
                                tables=[report.Table("per model", ["model", "accuracy"], [["M1", "50.0%"]])],
                                plots=[report.Plot("ifeval", "IFEval", note="no data yet")],
                                examples=[Example("ex-1", "a prompt", [Panel("M1", "an answer")])])

    def broken_section(run):
        raise KeyError("boom")

    monkeypatch.setattr(sections, "SECTIONS", sections.SECTIONS + [ifeval_section, broken_section])
    run_dir = make_fake_run(str(tmp_path / "run"), with_eval=False)
    page = read(report.build(run_dir))
    assert '<section id="ifeval"><h2>IFEval &lt;accuracy&gt;</h2>' in page and '<a href="#ifeval">' in page
    assert "From <code>eval.ifeval</code>." in page and "<h3>per model</h3>" in page
    assert "<b>IFEval</b>: no data yet" in page and page.count('class="card"') == 2 + 1
    assert "This section failed: KeyError: &#39;boom&#39;" in page
    md = read(os.path.join(run_dir, "report", "report.md"))
    assert "## IFEval <accuracy>\n\nFrom `eval.ifeval`.\n\n### per model\n\n| model | accuracy |" in md
    assert "- *IFEval*: not plotted. no data yet" in md and "### ex-1\n" in md


def test_report_rejects_a_non_run_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    with pytest.raises(InputError):
        report.build(str(tmp_path / "missing"))
    with pytest.raises(InputError):
        report.build(str(tmp_path))


def test_fmt():
    assert report.fmt(None) == "-"
    assert report.fmt(float("nan")) == "-"
    assert report.fmt(3.0) == "3"
    assert report.fmt(0.123456) == "0.1235"
    assert report.fmt(123456.0) == "123,456"
    assert report.fmt({"0": 1, "1": 2}) == "0:1 1:2"
    assert report.fmt(True) == "yes"
    assert report.pct(0.5) == "50.0%" and report.pct(None) == "-"
    md = report.md_table(report.Table("", ["a", "b"], [["x|y", "1\n2"]]))
    assert md.splitlines()[:3] == ["| a | b |", "|:---|---:|", "| x\\|y | 1<br>2 |"]
    assert report.md_table(report.Table("T", ["a"], [], empty="nothing yet")) == "### T\n\nnothing yet\n\n"
    html = report.html_table(report.Table("", ["a", "b"], [["<b>", "1"]], groups={0: "g"}, key_column=True))
    assert '<tr class="group"><td colspan="2">g</td></tr>' in html
    assert '<tr><td class="key">&lt;b&gt;</td><td>1</td></tr>' in html
