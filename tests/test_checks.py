"""checks.check_inputs: every input the config names is validated before any model loads, and
every problem is reported in one InputError naming file and line."""

import json

import pytest

from srlm import checks
from srlm.data import loaders
from srlm.run.config import load_config
from srlm.run.records import InputError, iter_jsonl


def jl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def pair(label="a", **kw) -> dict:
    return {"prompt": "Which is better?", "response_a": "one", "response_b": "two", "label": label, **kw}


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if anything loads a model or tokenizer."""
    import transformers

    def refuse(*a, **k):
        raise AssertionError("check_inputs must not load a model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)


def test_packaged_default_passes_and_counts(no_model_loads):
    counts = checks.check_inputs(load_config(None))
    # Every record of the shipped files: one per non-blank line.
    def lines(source):
        return sum(1 for path in loaders.source_files(source) for line in open(path, encoding="utf-8") if line.strip())
    assert counts["data/ift_examples"] == lines("embedded:ift") > 0
    assert counts["data/eft_examples"] == lines("embedded:eft") > 0
    assert counts["eval/human_pairs/human_prefs"] == lines("embedded:human_prefs") > 0
    assert counts["eval/prompts"] == lines("embedded:eval_prompts") > 0
    assert counts["data/ift_empty"] == 0 and counts["eval/human_pairs_empty/human_prefs"] == 0
    # 2 IFT + 2 EFT + human prefs + eval prompts + the judge template
    assert counts["checks/files"] == 7
    assert counts["checks/over_long_chars"] == 4 * load_config(None).sft.max_length
    assert counts["checks/notes"] == []


def test_every_problem_at_once_with_file_and_line(tmp_path, no_model_loads):
    ift = tmp_path / "ift_latin1.jsonl"
    good = jl({"prompt": "a", "response": "b"})
    ift.write_bytes(good.encode() + b'{"prompt": "caf' + b"\xe9" + b'", "response": "x"}\n')
    # the bad byte follows line 1 (32 characters and a newline) and '{"prompt": "caf' (15): 48
    eft = tmp_path / "eft.jsonl"
    eft.write_text(jl({"prompt": "p", "response": "r", "judgment": "Score: 3", "score": 3},
                      {"prompt": "p", "response": "r", "judgment": "Score: 4", "score": 4},
                      '{"prompt": "p", "response"'))
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(jl(pair("a"), pair("A")))
    panda = tmp_path / "panda.json"
    panda.write_text(json.dumps([{"instruction": "i", "response1": "x", "response2": "y",
                                  "annotator1": 1, "annotator2": 1, "annotator3": 2},
                                 {"instruction": "i", "response1": "x", "response2": "y",
                                  "annotator1": 1, "annotator2": 3, "annotator3": 2}]))
    template = tmp_path / "tpl.txt"
    template.write_text("Rate this response: {response}")
    cfg = load_config(None, [f"data.ift=[{ift}]", f"data.eft=[{eft}]", f"judge.template={template}",
                             f"eval.human_prefs=[{prefs},pandalm:{panda}]", f"eval.prompts={tmp_path}/nope.jsonl",
                             "model.name_or_path=./no/such/model"])
    with pytest.raises(InputError) as e:
        checks.check_inputs(cfg)
    msg = str(e.value)
    expected = [
        "[model.name_or_path] ./no/such/model: model path does not exist",
        f"[judge.template] {template}: judge template must contain {{prompt}} exactly once (found 0)",
        f"[data.ift] {ift}:2: not UTF-8 at byte 48",
        f"[data.eft] {eft}:3: malformed JSON",  # found although the template is broken
        f"[eval.human_prefs] {prefs}:2: 'label' must be 'a', 'b' or 'tie' (got 'A')",
        f"[eval.human_prefs] {panda} record 1: annotator labels must be 0, 1 or 2",
        f"[eval.prompts] {tmp_path}/nope.jsonl: file not found",
    ]
    for line in expected:
        assert line in msg
    assert msg.startswith("7 problems in the inputs")
    assert len([x for x in msg.splitlines() if x.startswith("  [")]) == 7


def test_counts_hand_computed(tmp_path):
    # sft.max_length=8 -> over-long above 4 * 8 = 32 characters
    ift = tmp_path / "ift.jsonl"
    ift.write_text(jl({"prompt": "p" * 10, "response": "r" * 22}, "",  # 32: not over
                      {"prompt": "p" * 10, "response": "r" * 23}, "   "))  # 33: over; 2 blank lines
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(jl(pair("a"), pair("tie", response_b="x" * 40), "", pair("b")))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(jl(json.dumps("a plain string prompt"), {"prompt": "q" * 33}))
    panda = tmp_path / "panda.json"
    votes = [(1, 1, 2), (0, 0, 0), (1, 2, 0), (2, 2, 1)]  # a, tie, no majority, b
    panda.write_text(json.dumps([{"instruction": "i", "response1": "x", "response2": "" if k == 3 else "y",
                                  "annotator1": v[0], "annotator2": v[1], "annotator3": v[2]}
                                 for k, v in enumerate(votes)]))
    cfg = load_config(None, [f"data.ift=[{ift}]", "sft.max_length=8", f"eval.human_prefs=[{prefs},pandalm:{panda}]",
                             "prompts.source=file", f"prompts.file={prompts}"])
    counts = checks.check_inputs(cfg)
    assert counts["checks/over_long_chars"] == 32
    assert (counts["data/ift_examples"], counts["data/ift_empty"], counts["data/ift_over_long"]) == (2, 2, 1)
    assert counts["eval/human_pairs/prefs"] == 3
    assert counts["eval/human_pairs_empty/prefs"] == 1
    assert counts["eval/human_pairs_over_long/prefs"] == 1  # 16 + 40 characters
    assert counts["eval/human_pairs/panda"] == 2  # record 3 has an empty response2
    assert counts["eval/human_pairs_no_majority/panda"] == 1
    assert counts["eval/human_pairs_empty/panda"] == 1
    assert (counts["prompts/file"], counts["prompts/file_empty"], counts["prompts/file_over_long"]) == (2, 0, 1)


def test_hf_sources_and_hub_ids_are_noted_not_refused(no_model_loads):
    cfg = load_config(None, ["data.ift=[hf:someone/ift,embedded:ift]",
                             "model.name_or_path=HuggingFaceTB/SmolLM2-135M-Instruct"])
    counts = checks.check_inputs(cfg)
    assert any("hf:someone/ift not checked" in n for n in counts["checks/notes"])
    assert any("taken as a Hugging Face Hub id" in n for n in counts["checks/notes"])
    assert counts["data/ift_examples"] > 0


def test_eft_build_sources_and_judge(tmp_path):
    pairs = tmp_path / "ranked.jsonl"
    pairs.write_text(jl(pair("a"), pair("tie"), pair("x")))
    cfg = load_config(None, ["eft_build.enabled=true", f"eft_build.sources=[embedded:oasst,{pairs}]",
                             f"eft_build.judge={tmp_path}/no_judge/", "eft_build.max_chars=100"])
    with pytest.raises(InputError) as e:
        checks.check_inputs(cfg)
    msg = str(e.value)
    assert f"[eft_build.sources] {pairs}:3: 'label' must be 'a', 'b' or 'tie' (got 'x')" in msg
    assert f"[eft_build.judge] {tmp_path}/no_judge/: model path does not exist" in msg
    assert msg.startswith("2 problems")

    pairs.write_text(jl(pair("a"), pair("tie"), pair("b", response_a="y" * 100)))
    counts = checks.check_inputs(cfg.model_copy(update={"eft_build": cfg.eft_build.model_copy(
        update={"judge": "M0"})}))
    oasst_groups = len(loaders.oasst_ranked_groups(loaders.source_files("embedded:oasst")[0]))
    assert counts["eft_build/groups"] == oasst_groups + 2 and counts["eft_build/ties_skipped"] == 1
    # max_chars=100: the pair with a 100-character reply (16 + 100) and every long oasst group
    long_oasst = sum(len(p) + max(map(len, r)) > 100
                     for p, r in loaders.oasst_ranked_groups(loaders.source_files("embedded:oasst")[0]))
    assert counts["eft_build/groups_over_long"] == long_oasst + 1


def test_one_problem_is_one_line(tmp_path):
    cfg = load_config(None, [f"eval.prompts={tmp_path}/missing.jsonl"])
    with pytest.raises(InputError) as e:
        checks.check_inputs(cfg)
    assert str(e.value) == f"[eval.prompts] {tmp_path}/missing.jsonl: file not found"


def test_iter_jsonl_reports_bad_bytes_with_offset(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"b": "\xff"}\n')  # 9 + 1 + 7 bytes before the bad one
    with pytest.raises(InputError, match=r"x\.jsonl:3: not UTF-8 at byte 17$"):
        list(iter_jsonl(str(p)))
    p.write_bytes(b'{"a": "caf\xc3\xa9"}\r\n\n{"b": 2}\n')  # valid UTF-8, CRLF and a blank line
    assert list(iter_jsonl(str(p))) == [(1, {"a": "café"}), (3, {"b": 2})]


def test_bad_bytes_in_whole_file_json_and_template(tmp_path):
    panda = tmp_path / "panda.json"
    panda.write_bytes(b'[{"instruction": "\x80"}]')  # json.load would raise UnicodeDecodeError
    template = tmp_path / "tpl.txt"
    template.write_bytes(b"{prompt}\n{response}\n\xfe")
    cfg = load_config(None, [f"eval.human_prefs=[pandalm:{panda}]", f"judge.template={template}"])
    with pytest.raises(InputError) as e:
        checks.check_inputs(cfg)
    assert f"[judge.template] {template}:3: not UTF-8 at byte 20" in str(e.value)  # 9 + 11 bytes before
    assert f"[eval.human_prefs] {panda}:1: not UTF-8 at byte 18" in str(e.value)  # after '[{"instruction": "' (18 bytes)


def test_frozen_judge_and_human_train_are_checked_before_compute(tmp_path, no_model_loads):
    bad = tmp_path / "human.jsonl"
    bad.write_text(jl(pair("a"), pair("maybe")))
    cfg = load_config(None, ["method=dpo_human", f"pairs.human_train={bad}", "iterations=1",
                             f"judge.model={tmp_path}/no_judge/"])
    with pytest.raises(InputError) as e:
        checks.check_inputs(cfg)
    msg = str(e.value)
    assert f"[pairs.human_train] {bad}:2: 'label' must be 'a', 'b' or 'tie' (got 'maybe')" in msg
    assert f"[judge.model] {tmp_path}/no_judge/: model path does not exist" in msg
    # A model of the run itself (M1) exists only later: not checked here.
    bad.write_text(jl(pair("a"), pair("b")))
    counts = checks.check_inputs(load_config(None, ["method=dpo_human", f"pairs.human_train={bad}",
                                                    "iterations=1", "judge.model=M1"]))
    assert counts["human_pairs/groups_in"] == 2
