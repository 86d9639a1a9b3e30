"""IFEval (srlm.data.ifeval_checks, srlm.evaluation.ifeval): the shipped prompts, lm-eval's
checkers offline, the four accuracies and their bootstrap intervals, and a tiny-model answer +
score + summarize run."""

import os
import subprocess
import sys

import pytest

from srlm.data import ifeval_checks
from srlm.evaluation import ifeval
from srlm.run.records import InputError

NAMES = ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose", "score", "score_loose")


def prompt(key: int) -> dict:
    return next(p for p in ifeval_checks.load_prompts() if p["key"] == key)


def verdicts(key: int, response: str) -> tuple[list[bool], list[bool]]:
    (row,) = ifeval_checks.score([{**prompt(key), "response": response}])
    return row["strict_follow"], row["loose_follow"]


# --- data ---------------------------------------------------------------------------------------

def test_shipped_prompts_are_ifeval():
    rows = ifeval_checks.load_prompts()
    assert len(rows) == 541
    assert len({r["key"] for r in rows}) == 541
    assert sum(len(r["instruction_id_list"]) for r in rows) == 834
    assert all(set(r) == {"key", "prompt", "instruction_id_list", "kwargs"} for r in rows)
    assert all(len(r["instruction_id_list"]) == len(r["kwargs"]) for r in rows)
    registry = ifeval_checks._checkers().instructions_registry.INSTRUCTION_DICT
    assert {i for r in rows for i in r["instruction_id_list"]} <= set(registry)
    assert rows[0]["key"] == 1000 and rows[-1]["key"] == 3757  # upstream file order


def test_subset_is_seeded_and_deterministic():
    a = [p["key"] for p in ifeval_checks.load_prompts(20, seed=3)]
    assert a == [p["key"] for p in ifeval_checks.load_prompts(20, seed=3)]
    assert len(set(a)) == 20
    assert a != [p["key"] for p in ifeval_checks.load_prompts(20, seed=4)]
    order = {p["key"]: i for i, p in enumerate(ifeval_checks.load_prompts())}
    assert [order[k] for k in a] == sorted(order[k] for k in a)  # kept in file order
    assert len(ifeval_checks.load_prompts(0)) == len(ifeval_checks.load_prompts(10_000)) == 541
    with pytest.raises(InputError):
        ifeval_checks.load_prompts(-1)


def test_load_prompts_returns_copies():
    ifeval_checks.load_prompts(1)[0]["kwargs"].append({"x": 1})
    assert all({"x": 1} not in p["kwargs"] for p in ifeval_checks.load_prompts())


# --- lm-eval's checkers on hand-written answers ------------------------------------------------

def test_no_comma():
    assert prompt(1001)["instruction_id_list"] == ["punctuation:no_comma"]
    assert verdicts(1001, "Day one we sail to Kyoto and thee shall see the temples.") == ([True], [True])
    assert verdicts(1001, "Day one, we sail to Kyoto.") == ([False], [False])


def test_word_limits():
    assert prompt(1092)["kwargs"] == [{"relation": "less than", "num_words": 300}]
    assert verdicts(1092, "word " * 299) == ([True], [True])
    assert verdicts(1092, "word " * 300) == ([False], [False])
    assert prompt(1072)["kwargs"] == [{"relation": "at least", "num_words": 400}]
    assert verdicts(1072, "hammock " * 400) == ([True], [True])
    assert verdicts(1072, "hammock " * 399) == ([False], [False])


def test_end_phrase_strict_and_loose():
    assert prompt(1220)["kwargs"] == [{"end_phrase": "Is there anything else I can help with?"}]
    poem = "Two strangers meet over coffee.\nThey smile and talk.\n"
    assert verdicts(1220, poem + "Is there anything else I can help with?") == ([True], [True])
    # A trailing line after the phrase fails strict; loose also tries the response without its last line.
    assert verdicts(1220, poem + "Is there anything else I can help with?\n(The end)") == ([False], [True])
    assert verdicts(1220, poem) == ([False], [False])


def test_lowercase_strict_and_loose():
    assert prompt(1051)["instruction_id_list"] == ["change_case:english_lowercase"]
    body = "please go and vote in the election next week because every single voice matters to all of us."
    assert verdicts(1051, body) == ([True], [True])
    # A capitalised first line fails strict; loose also tries the response without its first line.
    assert verdicts(1051, "Dear Friend\n" + body) == ([False], [True])
    assert verdicts(1051, body.capitalize()) == ([False], [False])


def test_empty_response_fails_every_instruction():
    assert verdicts(1001, "") == ([False], [False])  # no commas, but an empty answer never counts


def test_checkers_run_offline_in_a_fresh_process(tmp_path):
    """No network and no NLTK data of the user's: the punkt model comes from the package,
    nothing is downloaded, and sentence counting (number_sentences) works."""
    code = (
        "import socket\n"
        "def no_net(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = no_net\n"
        "socket.create_connection = no_net\n"
        "import nltk\n"
        "nltk.data.path[:] = []\n"
        "from srlm.data import ifeval_checks\n"
        "p = [r for r in ifeval_checks.load_prompts() if r['key'] == 1476][0]\n"
        "assert p['kwargs'][1] == {'relation': 'less than', 'num_sentences': 3}\n"
        "rows = [{**p, 'response': 'Hello Mr. Smith. It is sunny.'}, {**p, 'response': 'Hi. It is sunny. Bye.'}]\n"
        "print([r['strict_follow'] for r in ifeval_checks.score(rows)])\n"
        "from nltk.tokenize.punkt import load_punkt_params\n"
        "from punkt.data import english\n"
        "params = load_punkt_params(nltk.data.find('tokenizers/punkt_tab/english/'))\n"
        "assert params.abbrev_types == set(english.ABBREV_TYPES)\n"
        "assert params.collocations == set(english.COLLOCATIONS)\n"
        "assert params.sent_starters == set(english.SENT_STARTERS)\n"
        "assert dict(params.ortho_context) == dict(english.ORTHO_CONTEXT)\n"
        "assert nltk.data.find('tokenizers/punkt_tab/english/').path.startswith(ifeval_checks._punkt_root.name)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "NLTK_DATA": str(tmp_path / "none")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # No forbidden word in either; fewer than 3 sentences: 2 in the first ("Mr." is an
    # abbreviation in punkt's english model, not a sentence end), 3 in the second.
    assert out.stdout.strip().splitlines()[-1] == "[[True, True], [True, False]]"


def test_a_download_attempt_is_refused():
    with pytest.raises(RuntimeError, match="offline"):
        ifeval_checks._refuse_download("punkt_tab")


# --- aggregation --------------------------------------------------------------------------------

def scored_row(strict: list[bool], loose: list[bool], response: str = "x", finish: str = "stop") -> dict:
    return {"key": 0, "response": response, "finish_reason": finish, "instruction_id_list": ["i"] * len(strict),
            "strict_follow": strict, "strict_follow_all": all(strict),
            "loose_follow": loose, "loose_follow_all": all(loose)}


def test_summary_hand_computed():
    rows = [scored_row([True, True], [True, True], "abcd"),
            scored_row([True, False], [True, True], "ab", finish="length"),
            scored_row([False], [False], "", finish=ifeval.SKIPPED)]
    s = ifeval.summarize(rows, seed=0, bootstrap=200)
    assert s["ifeval/prompt_strict"] == pytest.approx(1 / 3)  # only the first prompt follows all
    assert s["ifeval/inst_strict"] == pytest.approx(3 / 5)  # 3 of 5 instructions
    assert s["ifeval/prompt_loose"] == pytest.approx(2 / 3)
    assert s["ifeval/inst_loose"] == pytest.approx(4 / 5)
    assert s["ifeval/score"] == pytest.approx((1 / 3 + 3 / 5) / 2)  # model card: mean of strict levels
    assert s["ifeval/score_loose"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert s["ifeval/prompts"] == 3 and s["ifeval/instructions"] == 5
    assert s["ifeval/mean_response_chars"] == pytest.approx(2.0)
    assert s["ifeval/truncated"] == 1 and s["ifeval/skipped"] == 1
    for k in NAMES:
        lo, hi = s[f"ifeval/{k}_ci95"]
        assert 0 <= lo <= s[f"ifeval/{k}"] <= hi <= 1
    assert s == ifeval.summarize(rows, seed=0, bootstrap=200)  # seeded


def test_instruction_level_interval_resamples_prompts():
    """Prompt A: 3 instructions, all followed; prompt B: 1, not followed. inst = 3/4.
    Resampling prompts gives 1 (AA), 3/4 (AB, BA) or 0 (BB, probability 1/4), so the 2.5%
    quantile is 0; resampling the 4 instructions on their own would put it at 1/4."""
    rows = [scored_row([True] * 3, [True] * 3), scored_row([False], [False])]
    s = ifeval.summarize(rows, seed=1, bootstrap=2000)
    assert s["ifeval/inst_strict"] == pytest.approx(0.75)
    assert s["ifeval/inst_strict_ci95"] == [0.0, 1.0]
    assert s["ifeval/prompt_strict_ci95"] == [0.0, 1.0]


def test_interval_collapses_when_every_prompt_agrees():
    s = ifeval.summarize([scored_row([True, True], [True, True])] * 5, seed=0, bootstrap=50)
    assert all(s[f"ifeval/{k}_ci95"] == [1.0, 1.0] for k in NAMES)


def test_summary_of_nothing():
    s = ifeval.summarize([])
    assert s["ifeval/prompts"] == 0 and s["ifeval/score"] is None and s["ifeval/inst_loose_ci95"] is None


# --- paired deltas, families, subsets -----------------------------------------------------------

def keyed(key, strict, loose, ids=None) -> dict:
    return {**scored_row(strict, loose), "key": key, "instruction_id_list": ids or ["f:i"] * len(strict)}


T, F = True, False
# A and B on prompts 1-4 (A's prompt 6 and B's prompt 5 have no partner and are left out).
ROWS_A = [keyed(1, [T, T], [T, T]), keyed(2, [F], [T]), keyed(6, [T], [T]), keyed(3, [T, F], [T, F]),
          keyed(4, [F], [F])]
ROWS_B = [keyed(5, [F], [F]), keyed(4, [F], [T]), keyed(3, [T, T], [T, T]), keyed(2, [T], [T]),
          keyed(1, [T, T], [T, T])]


def test_paired_delta_hand_computed():
    d = ifeval.paired_delta(ROWS_A, ROWS_B, seed=0, bootstrap=500)
    # A: prompt strict 1/4, inst strict 3/6, prompt loose 2/4, inst loose 4/6.
    # B: prompt strict 3/4, inst strict 5/6, prompt loose 4/4, inst loose 6/6.
    expected = {"prompt_strict": 2 / 4, "inst_strict": 2 / 6, "prompt_loose": 2 / 4, "inst_loose": 2 / 6,
                "score": (2 / 4 + 2 / 6) / 2, "score_loose": (2 / 4 + 2 / 6) / 2}
    assert d["ifeval/paired_prompts"] == 4
    assert (d["ifeval/prompts_fixed"], d["ifeval/prompts_broken"]) == (2, 0)  # prompts 2 and 3
    for k, v in expected.items():
        assert d[f"ifeval/delta_{k}"] == pytest.approx(v), k
        lo, hi = d[f"ifeval/delta_{k}_ci95"]
        # B follows everything A follows on every prompt: no resample can favour A.
        assert 0 <= lo <= v <= hi <= 1, k
    assert d == ifeval.paired_delta(ROWS_A, ROWS_B, seed=0, bootstrap=500)  # seeded


def test_paired_delta_swapped_negates():
    ab = ifeval.paired_delta(ROWS_A, ROWS_B, seed=3, bootstrap=300)
    ba = ifeval.paired_delta(sorted(ROWS_B, key=lambda r: r["key"]), sorted(ROWS_A, key=lambda r: r["key"]),
                             seed=3, bootstrap=300)
    for k in ifeval.NAMES:
        assert ba[f"ifeval/delta_{k}"] == pytest.approx(-ab[f"ifeval/delta_{k}"])
        assert ba[f"ifeval/delta_{k}_ci95"] == pytest.approx([-x for x in reversed(ab[f"ifeval/delta_{k}_ci95"])])
    assert (ba["ifeval/prompts_fixed"], ba["ifeval/prompts_broken"]) == (0, 2)


def test_paired_delta_of_a_model_with_itself_is_exactly_zero():
    """Both models resampled together: a model against itself has no spread at all (two separate
    bootstraps would give an interval around zero)."""
    rows = [keyed(i, [i % 2 == 0, i % 3 == 0], [i % 2 == 0, True]) for i in range(12)]
    d = ifeval.paired_delta(rows, [dict(r) for r in rows], seed=0, bootstrap=200)
    assert all(d[f"ifeval/delta_{k}"] == 0 and d[f"ifeval/delta_{k}_ci95"] == [0.0, 0.0] for k in ifeval.NAMES)


def test_paired_delta_without_common_prompts():
    d = ifeval.paired_delta([keyed(1, [T], [T])], [keyed(2, [T], [T])])
    assert d["ifeval/paired_prompts"] == 0 and d["ifeval/delta_score"] is None
    assert d["ifeval/delta_score_ci95"] is None


def test_by_family_hand_computed():
    rows = [keyed(1, [T, F], [T, T], ["punctuation:no_comma", "length_constraints:number_words"]),
            keyed(2, [F], [T], ["punctuation:no_comma"]),
            keyed(3, [T, T], [T, T], ["change_case:english_lowercase", "length_constraints:number_sentences"])]
    assert ifeval.by_family(rows) == {
        "change_case": {"instructions": 1, "inst_strict": 1.0, "inst_loose": 1.0},
        "length_constraints": {"instructions": 2, "inst_strict": 0.5, "inst_loose": 1.0},
        "punctuation": {"instructions": 2, "inst_strict": 0.5, "inst_loose": 1.0},
    }
    assert list(ifeval.by_family(rows)) == ["change_case", "length_constraints", "punctuation"]
    assert ifeval.by_family([]) == {}


def test_subset_keeps_rows_whose_every_instruction_is_in_the_set():
    rows = [keyed(1, [T], [T], ["a:x"]), keyed(2, [T, F], [T, F], ["a:x", "b:y"]),
            keyed(3, [T, T], [T, T], ["a:x", "c:z"]), {**keyed(4, [], []), "instruction_id_list": []}]
    assert [r["key"] for r in ifeval.subset(rows, frozenset({"a:x", "b:y"}))] == [1, 2]
    assert [r["key"] for r in ifeval.subset(rows, frozenset({"c:z"}))] == []
    assert ifeval.subset(rows, frozenset()) == []


# --- a tiny model, end to end -------------------------------------------------------------------

def test_tiny_model_answer_score_summarize(tiny_model):
    from srlm.engines.backends.hf import HFBackend
    from srlm.engines.modeling import ModelRef, load_model, load_tokenizer

    ref = ModelRef(tiny_model)
    backend = HFBackend(load_model(ref), load_tokenizer(ref), batch_size=4)
    prompts = ifeval_checks.load_prompts(size=3, seed=0)
    rows = ifeval.answer(backend, prompts, max_new_tokens=8, seed=0)
    assert [r["key"] for r in rows] == [p["key"] for p in prompts]
    assert all(0 < r["num_tokens"] <= 8 and r["finish_reason"] in ("stop", "length") for r in rows)
    assert rows == ifeval.answer(backend, prompts, max_new_tokens=8, seed=1)  # greedy: seed-free
    scored = ifeval_checks.score(rows)
    assert all(len(r["strict_follow"]) == len(r["loose_follow"]) == len(r["instruction_id_list"]) for r in scored)
    s = ifeval.summarize(scored, seed=0, bootstrap=100)
    for k in NAMES:
        assert 0 <= s[f"ifeval/{k}"] <= 1 and len(s[f"ifeval/{k}_ci95"]) == 2
    assert s["ifeval/prompts"] == 3
    assert s["ifeval/instructions"] == sum(len(p["instruction_id_list"]) for p in prompts)
    assert s["ifeval/truncated"] == sum(r["finish_reason"] == "length" for r in rows)
    assert s["ifeval/mean_response_chars"] == pytest.approx(sum(len(r["response"]) for r in rows) / 3)
    assert s["ifeval/skipped"] == 0


def test_score_takes_instructions_from_the_shipped_prompts_by_key():
    p = prompt(1001)
    (row,) = ifeval_checks.score([{"key": 1001, "prompt": p["prompt"], "response": "No commas at all here."}])
    assert row["instruction_id_list"] == ["punctuation:no_comma"] and row["strict_follow"] == [True]
    with pytest.raises(InputError):
        ifeval_checks.score([{"key": -5, "prompt": "?", "response": "x"}])


def test_random_fallback_of_a_checker_is_seeded_per_prompt():
    """Prompt 1122 asks for at least 4 of the 'letter' '#', which lm-eval's letter checker
    rejects and replaces with a random letter: the verdict must not change between runs, loose
    must see the same letter as strict, and the caller's random state must be left alone."""
    import random

    p = prompt(1122)
    assert p["kwargs"][1] == {"let_relation": "at least", "letter": "#", "let_frequency": 4}
    rows = [{**p, "response": "".join(c * 4 for c in "abcdefghijklm")}]  # half the alphabet, 4 each
    verdicts = {tuple(ifeval_checks.score(rows)[0]["strict_follow"] + ifeval_checks.score(rows)[0]["loose_follow"])
                for _ in range(12)}
    assert len(verdicts) == 1  # unseeded: 12 draws of a letter agree on either half w.p. 2 / 2**12
    (v,) = verdicts
    assert v[1] == v[3]  # strict and loose count the same letter
    random.seed(7)
    expected = random.random()
    random.seed(7)
    ifeval_checks.score(rows)
    assert random.random() == expected
