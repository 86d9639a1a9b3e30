import json
from collections import Counter

import pytest

from srlm.data import loaders, rubric
from srlm.run.config import EMBEDDED_EFT, EMBEDDED_EVAL_PROMPTS, EMBEDDED_IFT
from srlm.run.records import InputError

TEMPLATE = "Rate.\n{prompt}\n{response}"


def write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return str(path)


def test_embedded_seed_data_is_valid_and_balanced():
    ift = loaders.load_ift([EMBEDDED_IFT])
    eft = loaders.load_eft([EMBEDDED_EFT], rubric.load_template())
    assert len(ift) >= 150 and len(eft) >= 150
    assert set(Counter(e.score for e in eft)) == set(range(6))
    assert len({e.prompt for e in ift}) == len(ift)
    prompts = loaders.load_prompts(EMBEDDED_EVAL_PROMPTS)
    assert len(prompts) >= 40
    train = {e.prompt for e in ift}
    assert not train & {p["prompt"] for p in prompts}  # held out


def test_ift_formats(tmp_path):
    p = write(tmp_path / "ift.jsonl", [
        {"prompt": "Say hi", "response": "Hi!"},
        "",
        {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "Q"},
                      {"role": "assistant", "content": "A"}]},
    ])
    out = loaders.load_ift([p])
    assert [(e.prompt, e.response) for e in out] == [("Say hi", "Hi!"), ("Q", "A")]
    assert len(loaders.load_ift([p], limit=1)) == 1


@pytest.mark.parametrize("line,msg", [
    ('{"prompt": "x", "response": ', ":1: malformed JSON"),
    ({"prompt": "x"}, ":1: missing field 'response'"),
    ({"prompt": "   ", "response": "y"}, ":1: field 'prompt' is empty"),
    ({"prompt": 3, "response": "y"}, ":1: field 'prompt' must be a string"),
    ([1, 2], ":1: expected a JSON object"),
    ({"messages": [{"role": "user", "content": "a"}]}, ":1: 'messages' must be one user turn"),
])
def test_ift_errors_name_file_and_line(tmp_path, line, msg):
    p = write(tmp_path / "bad.jsonl", [line])
    with pytest.raises(InputError) as e:
        loaders.load_ift([p])
    assert "bad.jsonl" in str(e.value) and msg in str(e.value)


def test_error_line_number_counts_blank_lines(tmp_path):
    p = write(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, "", "{oops"])
    with pytest.raises(InputError, match=r"bad.jsonl:3: malformed JSON"):
        loaders.load_ift([p])


def test_missing_file():
    with pytest.raises(InputError, match="nope.jsonl: file not found"):
        loaders.load_ift(["nope.jsonl"])


def test_eft_checks_score_against_judgment(tmp_path):
    good = {"prompt": "p", "response": "r", "judgment": "Fine.\nScore: 3", "score": 3}
    out = loaders.load_eft([write(tmp_path / "e.jsonl", [good])], TEMPLATE)
    assert out[0].score == 3 and out[0].prompt == "Rate.\np\nr"
    with pytest.raises(InputError, match=r"e2.jsonl:1: field 'score' is 4 but the judgment says Score: 3"):
        loaders.load_eft([write(tmp_path / "e2.jsonl", [dict(good, score=4)])], TEMPLATE)
    with pytest.raises(InputError, match=r"e3.jsonl:1: judgment is not parseable"):
        loaders.load_eft([write(tmp_path / "e3.jsonl", [dict(good, judgment="I like it")])], TEMPLATE)


def oasst_tree():
    def msg(text, role, rank=None, replies=(), deleted=False):
        return {"message_id": text, "text": text, "role": role, "lang": "en", "rank": rank,
                "deleted": deleted, "replies": list(replies)}
    follow = msg("follow-up", "prompter", replies=[msg("f0", "assistant", "0"), msg("f1", "assistant", 1)])
    root = msg("What is 2+2?", "prompter", replies=[
        msg("It is 5.", "assistant", 2), msg("4.", "assistant", 0, replies=[follow]),
        msg("Four, because 2+2=4.", "assistant", 1), msg("gone", "assistant", 3, deleted="True")])
    return {"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": root}


def test_oasst_loaders(tmp_path):
    p = write(tmp_path / "tree.jsonl", [oasst_tree()])
    assert loaders.oasst_first_turn_best(p) == [("What is 2+2?", "4.")]
    assert loaders.load_ift([f"oasst:{p}"])[0].response == "4."
    groups = loaders.oasst_ranked_groups(p)
    assert groups == [("What is 2+2?", ["4.", "Four, because 2+2=4.", "It is 5."])]
    assert len(loaders.oasst_ranked_groups(p, first_turn_only=False)) == 2
    pairs, stats = loaders.load_human_pairs(f"oasst:{p}")
    assert stats["pairs"] == 2
    for hp in pairs:  # the better reply is on the labelled side, whichever side that is
        better = hp.response_a if hp.label == "a" else hp.response_b
        worse = hp.response_b if hp.label == "a" else hp.response_a
        assert ["4.", "Four, because 2+2=4.", "It is 5."].index(better) < ["4.", "Four, because 2+2=4.", "It is 5."].index(worse)
    assert {hp.label for hp in pairs} == {"a", "b"}


def test_oasst_rejects_other_formats(tmp_path):
    p = write(tmp_path / "x.jsonl", [{"text": "hi"}])
    with pytest.raises(InputError, match=r"x.jsonl:1: not an Open Assistant tree"):
        loaders.oasst_first_turn_best(p)


def test_pandalm_majority(tmp_path):
    recs = [
        {"idx": 0, "instruction": "Fix", "input": "teh", "response1": "the", "response2": "teh",
         "annotator1": 1, "annotator2": 1, "annotator3": 2},
        {"idx": 1, "instruction": "Q", "input": "", "response1": "a", "response2": "b",
         "annotator1": 0, "annotator2": 0, "annotator3": 1},
        {"idx": 2, "instruction": "Q", "input": "", "response1": "a", "response2": "b",
         "annotator1": 0, "annotator2": 1, "annotator3": 2},
    ]
    recs.append({"idx": 3, "instruction": "", "input": "", "response1": "a", "response2": "b",
                 "annotator1": 1, "annotator2": 1, "annotator3": 1})
    recs.append({"idx": 4, "instruction": "Is it?", "input": "", "response1": True, "response2": "no",
                 "annotator1": 1, "annotator2": 1, "annotator3": 1})
    p = tmp_path / "p.json"
    p.write_text(json.dumps(recs))
    pairs, stats = loaders.load_human_pairs(f"pandalm:{p}")
    assert [(x.label, x.prompt) for x in pairs] == [("a", "Fix\n\nteh"), ("tie", "Q"), ("a", "Is it?")]
    assert pairs[2].response_a == "True"
    assert stats == {"skipped_no_majority": 1, "skipped_empty": 1, "pairs": 3}
    recs[0]["annotator1"] = 7
    p.write_text(json.dumps(recs))
    with pytest.raises(InputError, match="record 0: annotator labels"):
        loaders.load_human_pairs(f"pandalm:{p}")


def test_generic_pairs(tmp_path):
    ok = {"prompt": "q", "response_a": "x", "response_b": "y", "label": "b"}
    pairs, _ = loaders.load_human_pairs(write(tmp_path / "h.jsonl", [ok, dict(ok, label="tie")]))
    assert [p.label for p in pairs] == ["b", "tie"]
    with pytest.raises(InputError, match=r"h2.jsonl:1: 'label' must be"):
        loaders.load_human_pairs(write(tmp_path / "h2.jsonl", [dict(ok, label="B")]))


def test_prompt_sets(tmp_path):
    mt = write(tmp_path / "question.jsonl", [{"question_id": 81, "category": "writing", "turns": ["T1", "T2"]}])
    assert loaders.load_prompts(f"mt_bench:{mt}") == [{"id": "mtbench-81", "prompt": "T1", "category": "writing"}]
    al = tmp_path / "alpaca.json"
    al.write_text(json.dumps([{"instruction": "Do X", "dataset": "helpful_base"}]))
    assert loaders.load_prompts(f"alpaca_eval:{al}")[0]["prompt"] == "Do X"
    plain = write(tmp_path / "p.jsonl", ['"just a string"', {"prompt": "obj"}])
    assert [p["prompt"] for p in loaders.load_prompts(plain)] == ["just a string", "obj"]
    with pytest.raises(InputError, match=r"e.jsonl:1: empty prompt"):
        loaders.load_prompts(write(tmp_path / "e.jsonl", ['""']))
