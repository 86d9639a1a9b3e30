"""Provenance: a stage's marker records its inputs, config and overrides; changed inputs
rebuild, --redo removes (and lists) everything downstream, stage commands never rewrite
config.yaml."""

import json
import os
import shutil

from srlm.cli import main
from srlm.pipeline import freshness
from srlm.run.config import load_config
from srlm.run.records import read_jsonl
from srlm.run.rundir import RunDir
from srlm.stages import BY_NAME


def copy_run(tiny_run, tmp_path) -> str:
    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    return run


def test_markers_record_provenance(tiny_run):
    rd = RunDir(tiny_run)
    cfg = load_config(rd.config)
    for name, t in (("sft", 0), ("prompts", 1), ("judge", 2), ("dpo", 2)):
        stage = BY_NAME[name]
        marker = rd.read_marker(stage.output(rd, t))
        assert {"stats", "inputs", "config", "overrides", "digest"} <= marker.keys()
        assert freshness(stage, cfg, rd, t) == (True, "")
    # M2's marker digest is what iteration 2's stages recorded as their model input.
    m2 = rd.read_marker(rd.model(2))["digest"]
    assert rd.read_marker(rd.candidates(2))["inputs"]["models/M2"] == "marker:" + m2


def test_changed_input_is_stale(tiny_run, tmp_path):
    rd = RunDir(copy_run(tiny_run, tmp_path))
    cfg = load_config(rd.config)
    lines = open(rd.pairs(1)).read().splitlines(keepends=True)
    with open(rd.pairs(1), "w") as f:  # a hand edit: drop a pair (or add a blank line if none)
        f.writelines(lines[1:] if lines else ["\n"])
    fresh, why = freshness(BY_NAME["dpo"], cfg, rd, 1)
    assert not fresh and "inputs changed" in why and "pairs.jsonl" in why
    assert freshness(BY_NAME["pairs"], cfg, rd, 1) == (True, "")  # upstream of the edit is untouched
    fresh, why = freshness(BY_NAME["pairs"], cfg.model_copy(update={"pairs": cfg.pairs.model_copy(
        update={"min_margin": 0.5})}), rd, 1)
    assert not fresh and why == "config changed"


def test_redo_one_stage_invalidates_downstream(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    rd = RunDir(run)
    config_before = open(rd.config, "rb").read()
    judge_before = read_jsonl(rd.judgments(2))
    assert main(["judge", run, "-t", "2", "judge.k=1", "--redo"]) == 0
    out = capsys.readouterr().out
    assert "removing" in out and "iter_2/pairs.jsonl" in out and "models/M3" in out
    assert open(rd.config, "rb").read() == config_before  # never rewritten by a stage command
    marker = rd.read_marker(rd.judgments(2))
    assert marker["overrides"] == ["judge.k=1"]
    judgments = read_jsonl(rd.judgments(2))
    assert len(judgments) == len(read_jsonl(rd.candidates(2))) != len(judge_before)  # k=1 now
    assert not os.path.exists(rd.pairs(2)) and not os.path.exists(rd.model(3))
    metrics = json.load(open(rd.metrics))
    # The old iteration-2 numbers went with the removed outputs; only the new judging is there.
    assert metrics["iter_2"]["judge/judgments"] == len(judgments) and "pairs/kept" not in metrics["iter_2"]
    # The run resumes: judge(2) with its overrides is fresh; pairs(2) and dpo(2) are rebuilt.
    mtime = os.path.getmtime(rd.judgments(2))
    assert main(["run", "--config", rd.config, "--output-dir", run]) == 0
    assert os.path.getmtime(rd.judgments(2)) == mtime
    assert os.path.exists(rd.pairs(2) + ".done") and os.path.exists(rd.model(3) + ".done")
    assert read_jsonl(rd.pairs(1)) == read_jsonl(os.path.join(tiny_run, "iter_1", "pairs.jsonl"))


def test_stage_command_on_new_directory_uses_packaged_default(tmp_path, monkeypatch):
    """A stage command on a new directory starts from the same default as `srlm run`; the
    failure (no M1 yet) comes before any model loads."""
    run = str(tmp_path / "fresh")
    assert main(["sample", run, "-t", "1"]) == 2
    saved = load_config(os.path.join(run, "config.yaml"))
    assert saved == load_config(None).model_copy(update={"output_dir": run})


def test_unreadable_marker_means_not_built(tiny_run, tmp_path):
    rd = RunDir(copy_run(tiny_run, tmp_path))
    cfg = load_config(rd.config)
    with open(rd.marker_path(rd.pairs(2)), "wb") as f:
        f.write(b"\x00\xffnot json")
    assert freshness(BY_NAME["pairs"], cfg, rd, 2) == (False, "not built")
    os.remove(rd.marker_path(rd.pairs(2)))
    assert freshness(BY_NAME["pairs"], cfg, rd, 2) == (False, "not built")


def test_a_key_added_by_a_newer_srlm_does_not_make_finished_stages_stale(tiny_run, tmp_path):
    from srlm.run.config import with_overrides

    run = copy_run(tiny_run, tmp_path)
    rd = RunDir(run)
    cfg = load_config(rd.config)
    stage, t = BY_NAME["judge"], 2
    out = stage.output(rd, t)
    marker = rd.read_marker(out)
    assert marker["config_values"]["judge"]["model"] == ""
    # As an older srlm wrote it: no judge.model key, so a different digest.
    old = json.loads(json.dumps(marker["config_values"]))
    del old["judge"]["model"]
    rd.write_marker(out, marker["stats"], marker["inputs"], "digest-of-fewer-keys", marker["overrides"], old)
    assert freshness(stage, cfg, rd, t) == (True, "")
    # A key the record lacks that this run sets away from its default is a change.
    assert cfg.judge.stop_repetition != 0
    unset = json.loads(json.dumps(marker["config_values"]))
    del unset["judge"]["stop_repetition"]
    rd.write_marker(out, marker["stats"], marker["inputs"], "x", marker["overrides"], unset)
    assert freshness(stage, cfg, rd, t) == (False, "config changed")
    rd.write_marker(out, marker["stats"], marker["inputs"], "x", marker["overrides"], old)
    # A value that differs is a change; so is a recorded key the config no longer has.
    assert freshness(stage, with_overrides(cfg, ["judge.k=5"]), rd, t) == (False, "config changed")
    gone = json.loads(json.dumps(marker["config_values"]))
    gone["judge"]["retired_key"] = 1
    rd.write_marker(out, marker["stats"], marker["inputs"], marker["config"], marker["overrides"], gone)
    assert freshness(stage, cfg, rd, t) == (False, "config changed")
    # Markers from before values were recorded compare by digest.
    rd.write_marker(out, marker["stats"], marker["inputs"], marker["config"], marker["overrides"])
    assert freshness(stage, cfg, rd, t) == (True, "")
    rd.write_marker(out, marker["stats"], marker["inputs"], "other", marker["overrides"])
    assert freshness(stage, cfg, rd, t) == (False, "config changed")


def test_stage_command_of_another_method_is_refused(tmp_path, capsys):
    # judge-prev belongs to CREAM: on a self-rewarding run its output would feed nothing.
    assert main(["judge-prev", str(tmp_path / "run"), "--iteration", "1"]) == 2
    assert "has no judge_prev stage" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "iter_1")
