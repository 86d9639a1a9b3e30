from types import SimpleNamespace

import pytest

from srlm.prompts import NearDuplicateIndex, clean, filter_prompt, is_degenerate, rouge_l, words


def test_rouge_l_hand_computed():
    a, b = words("the cat sat on the mat"), words("the cat lay on a mat")
    # LCS = the cat on mat (4); P = 4/6, R = 4/6
    assert rouge_l(a, b) == pytest.approx(4 / 6)
    assert rouge_l(a, a) == 1.0
    assert rouge_l([], a) == 0.0
    assert rouge_l(words("x y"), words("p q")) == 0.0


def test_near_duplicate_index_matches_bruteforce():
    texts = ["Write a poem about the sea", "Explain how rainbows form", "List three uses of vinegar"]
    idx = NearDuplicateIndex(0.7)
    for t in texts:
        idx.add(words(t))
    assert idx.is_near_duplicate(words("write a poem about the sea please"))
    assert not idx.is_near_duplicate(words("Describe the history of the printing press"))


def test_clean_and_degenerate():
    assert clean('Request 9: "Name three rivers in Africa."') == "Name three rivers in Africa."
    assert clean("New task: Plan a picnic") == "Plan a picnic"
    assert clean("Plan a picnic for four.\n\nRequest 10: more") == "Plan a picnic for four."
    assert is_degenerate(words("buy now buy now buy now buy now"))
    assert not is_degenerate(words("Explain why the sky looks blue during the day"))


def test_filter_reasons():
    cfg = SimpleNamespace(prompts=SimpleNamespace(min_words=3, max_words=10))
    idx = NearDuplicateIndex(0.7)
    idx.add(words("Write a haiku about autumn leaves"))
    seen = {"name a color"}
    assert filter_prompt("", idx, cfg, seen) == "too_short"
    assert filter_prompt("Hi there", idx, cfg, seen) == "too_short"
    assert filter_prompt("word " * 11, idx, cfg, seen) == "too_long"
    assert filter_prompt("go go go go go go go", idx, cfg, seen) == "degenerate"
    assert filter_prompt("Name a color", idx, cfg, seen) == "duplicate"
    assert filter_prompt("Write a haiku about autumn leaves falling", idx, cfg, seen) == "near_duplicate"
    assert filter_prompt("Certainly! Here is a new request", idx, cfg, seen) == "not_a_request"
    assert filter_prompt("Plan a trip. Request 3: name a fish", idx, cfg, seen) == "not_a_request"
    assert filter_prompt("Suggest a name for a bakery", idx, cfg, seen) is None
