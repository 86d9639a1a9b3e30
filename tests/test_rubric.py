import pytest

from srlm.data import rubric
from srlm.run.records import InputError


@pytest.mark.parametrize("text,score", [
    ("Relevant and clear.\nScore: 4", 4),
    ("Score: 0", 0),
    ("Score:5", 5),
    ("  Score:   3  \n", 3),
    ("Short.\nScore: 2\nScore: 2", 2),  # repeated but consistent
    ("reasoning...\nScore: 1\n", 1),
])
def test_parse_valid(text, score):
    assert rubric.parse_score(text) == (score, None)


@pytest.mark.parametrize("text,reason", [
    ("", "no 'Score"),
    ("I would give it a four.", "no 'Score"),
    ("Score: four", "no 'Score"),
    ("Score: 4/5", "no 'Score"),
    ("Score: 4.5", "no 'Score"),
    ("score: 4", "no 'Score"),  # case matters: strict format
    ("The final Score: 4 points", "no 'Score"),  # not on its own line
    ("Score: 6", "out of range"),
    ("Score: 10", "out of range"),
    ("Score: 2\nScore: 5", "conflicting"),
    ("Score: -1", "no 'Score"),
])
def test_parse_rejects(text, reason):
    score, err = rubric.parse_score(text)
    assert score is None and reason in err


def test_stop_and_truncate():
    assert not rubric.score_line_complete("Fine.\nScore: 4")  # a 5th digit could still follow
    assert rubric.score_line_complete("Fine.\nScore: 4\n")
    assert rubric.score_line_complete("Score: 4<")
    assert rubric.truncate_after_score("Fine.\nScore: 4\nMore text\nScore: 1") == "Fine.\nScore: 4"
    assert rubric.truncate_after_score("no score here") == "no score here"


def test_template_checks(tmp_path):
    t = rubric.load_template()
    assert t.index("{prompt}") > t.index("Score:")  # constant rubric first: shared prefill
    bad = tmp_path / "t.txt"
    bad.write_text("Rate this: {prompt}")
    with pytest.raises(InputError, match=r"t.txt.*\{response\}"):
        rubric.load_template(str(bad))
    with pytest.raises(InputError, match="not found"):
        rubric.load_template(str(tmp_path / "missing.txt"))


def test_render_keeps_braces():
    out = rubric.render("A {prompt} B {response}", "dict {a: 1}", "use {x}")
    assert out == "A dict {a: 1} B use {x}"
