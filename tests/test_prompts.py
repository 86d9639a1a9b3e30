import random
from types import SimpleNamespace

import pytest
from rouge_score import rouge_scorer

from srlm.data.dedup import NearDuplicateIndex, rouge_l, rouge_tokens, words
from srlm.loop.prompts import clean, filter_prompt, is_degenerate

LIB = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)  # Self-Instruct's scorer


def lib(a: str, b: str) -> float:
    return LIB.score(a, b)["rougeL"].fmeasure


# (a, b, hand-computed ROUGE-L F1 = 2 LCS / (|a| + |b|) on rouge_score's tokens)
CASES = [
    ("the cat sat on the mat", "the cat lay on a mat", 2 * 4 / (6 + 6)),  # LCS: the cat on mat
    ("Write a poem about the sea", "write a short poem about the deep blue sea", 2 * 6 / (6 + 9)),
    ("a b c d", "d c b a", 2 * 1 / (4 + 4)),  # every word shared, order reversed: LCS 1
    # rouge_score's tokenizer: '_' and "'" separate, so snake_case is two tokens and don't is [don, t]
    ("snake_case names", "snake case names", 1.0),
    ("Don't stop!", "dont stop", 2 * 1 / (3 + 2)),
    # non-ASCII letters separate too: café -> [caf]
    ("café au lait", "cafe au lait", 2 * 2 / (3 + 3)),
    ("中文 only", "中文", 0.0),  # no alphanumeric token on one side
    ("", "anything", 0.0),
]


@pytest.mark.parametrize("a,b,expected", CASES)
def test_rouge_l_hand_computed_matches_library(a, b, expected):
    assert rouge_l(a, b) == pytest.approx(expected)
    assert lib(a, b) == pytest.approx(expected)
    # Token lists from words() score as their texts do.
    assert rouge_l(words(a), words(b)) == pytest.approx(expected)


def test_rouge_tokens_are_the_librarys():
    assert rouge_tokens("Don't snake_case Café 42!") == ["don", "t", "snake", "case", "caf", "42"]
    assert words("Don't snake_case Café 42!") == ["don", "t", "snake_case", "café", "42"]
    assert rouge_tokens(words("Don't snake_case Café 42!")) == rouge_tokens("Don't snake_case Café 42!")


def test_near_duplicate_index_matches_library_bruteforce():
    rng = random.Random(0)
    vocab = "write a poem about the sea sky blue short list three uses of vinegar".split()
    kept = [[rng.choice(vocab) for _ in range(rng.randint(3, 9))] for _ in range(20)]
    idx = NearDuplicateIndex(0.7)
    for t in kept:
        idx.add(" ".join(t))
    # Queries: kept texts with one word changed or added (often near-duplicates), and new texts.
    queries = []
    for t in kept:
        q = list(t)
        if rng.random() < 0.5:
            q.insert(rng.randrange(len(q) + 1), rng.choice(vocab))
        else:
            q[rng.randrange(len(q))] = rng.choice(vocab)
        queries += [q, rng.sample(t, len(t)), [rng.choice(vocab) for _ in range(rng.randint(3, 9))]]
    hits = 0
    for q in queries:
        expected = any(lib(" ".join(q), " ".join(t)) > 0.7 for t in kept)
        assert idx.is_near_duplicate(" ".join(q)) == expected
        assert idx.is_near_duplicate(q) == expected
        hits += expected
    assert 0 < hits < len(queries)  # both outcomes exercised


def test_near_duplicate_index_bound_is_only_a_prefilter():
    idx = NearDuplicateIndex(0.7)
    idx.add(words("Write a poem about the sea"))
    assert idx.is_near_duplicate("write a poem about the sea please")  # 2*6/13 = 0.92
    assert not idx.is_near_duplicate("the sea about poem a write")  # all shared, LCS 2: 2*2/12
    assert not idx.is_near_duplicate("Describe the history of the printing press")
    idx2 = NearDuplicateIndex(0.7)
    idx2.add("snake case names")
    assert idx2.is_near_duplicate("snake_case names")  # the library's tokens, not \w+ words


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
