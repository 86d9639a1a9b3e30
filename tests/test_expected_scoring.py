"""judge.scoring=expected on the transformers backend, checked against hand computations from
the model's logits, and the repetition cut."""

import math
import os
from collections import Counter

import pytest
import torch

from srlm.data import rubric
from srlm.engines.backends.base import SamplingParams
from srlm.engines.backends.hf import HFBackend
from srlm.data.repetition import RepetitionGuard, cut_repeated_text, find_repetition


def digit_distribution_by_hand(backend, chat, assistant_text):
    """Teacher-forced: P(next token) after chat + assistant_text, summed per digit, renormalised."""
    text = backend.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + assistant_text
    ids = backend.tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = backend.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    p = torch.softmax(logits, -1)
    mass = [float(p[backend.tok.convert_tokens_to_ids(d)]) for d in "012345"]
    return [m / sum(mass) for m in mass]


@pytest.fixture(scope="module")
def m1_backend(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m1 = os.path.join(tiny_run, "models", "M1")
    return HFBackend(AutoModelForCausalLM.from_pretrained(m1).eval(), AutoTokenizer.from_pretrained(m1), batch_size=4)


def test_forced_prefix_matches_logits(m1_backend):
    chats = [[{"role": "user", "content": f"Rate 0-5.\nDescribe {t}.\n{t}"}] for t in ("rain", "a cat", "coffee")]
    prefixes = [rubric.forced_prefix(x) for x in ("It is fine.", "", "Short.\n\n")]
    assert prefixes[1] == "Score: " and prefixes[0] == "It is fine.\nScore: "
    got = m1_backend.score_probs(chats, prefixes)
    for chat, prefix, probs in zip(chats, prefixes, got):
        assert len(probs) == 6 and math.isclose(sum(probs), 1.0, rel_tol=1e-6)
        expected = digit_distribution_by_hand(m1_backend, chat, prefix)
        assert probs == pytest.approx(expected, abs=1e-4)


def test_expected_scores_in_judging(m1_backend, tiny_run):
    """Judgments that write a score line carry the distribution at their digit (checked by a
    teacher-forced forward pass); the others are scored from a forced prefix; none is lost."""
    from srlm.run.config import JudgeConfig, load_config
    from srlm.loop.judge import judge_items

    from tiny import TOPICS

    cfg = load_config(os.path.join(tiny_run, "config.yaml"))
    template = rubric.load_template(cfg.judge.template)
    items = [(f"Describe {t}.", f"{t} " * (i % 4 + 1)) for i, t in enumerate(TOPICS)]
    jcfg = JudgeConfig(temperature=0.0, max_new_tokens=12, scoring="expected")
    rows = judge_items(m1_backend, template, items, 1, jcfg, seed=0)
    written = forced = 0
    for (p, r), row in zip(items, rows):
        jd = row[0]
        assert jd.mode == "expected" and jd.score is not None
        assert math.isclose(sum(jd.probs), 1.0, rel_tol=1e-6)
        assert jd.score == pytest.approx(sum(d * q for d, q in enumerate(jd.probs)))
        chat = [{"role": "user", "content": rubric.render(template, p, r)}]
        if jd.forced:
            forced += 1
            assert jd.parsed is None
            expected = digit_distribution_by_hand(m1_backend, chat, rubric.forced_prefix(jd.text))
        else:
            written += 1
            assert jd.parsed is not None
            # The text up to (not including) the score digit the model wrote.
            m = rubric.SCORE_LINE.search(jd.text)
            expected = digit_distribution_by_hand(m1_backend, chat, jd.text[:m.start(1)])
        assert jd.probs == pytest.approx(expected, abs=1e-4)
    assert written > 0, "the tiny M1 should write some score lines, or this compares nothing"
    # Parsed mode on the same items gives the same texts, and scores only the parseable ones.
    parsed_rows = judge_items(m1_backend, template, items, 1, JudgeConfig(temperature=0.0, max_new_tokens=12), seed=0)
    for row, prow in zip(rows, parsed_rows):
        assert prow[0].text == row[0].text and prow[0].score == row[0].parsed and prow[0].probs is None


@pytest.mark.parametrize("max_new_tokens,stop_repetition,n,fixed", [(3, 0, 1, False), (16, 1, 3, False),
                                                                    (12, 0, 2, False), (16, 1, 3, True)])
def test_forced_prefix_read_in_the_same_decode(m1_backend, tiny_run, max_new_tokens, stop_repetition, n, fixed,
                                               monkeypatch):
    """force_score: a judgment that ends without a score line (length cap, repetition cut, EOS)
    is fed its forced prefix from its own cache; the distribution must equal the separate pass
    over the whole prompt (score_probs), which teacher-forces the same text. `fixed`: on the fixed
    cache CUDA decodes with (FixedSteps; its `hide` masks the cut tokens)."""
    from srlm.run.config import load_config

    from srlm.engines.backends.decode_steps import FixedSteps

    monkeypatch.setattr(m1_backend, "fixed_steps", fixed)
    hidden, real_hide = [], FixedSteps.hide

    def counting_hide(self, *cols):
        hidden.append(cols)
        real_hide(self, *cols)

    monkeypatch.setattr(FixedSteps, "hide", counting_hide)

    from tiny import TOPICS

    cfg = load_config(os.path.join(tiny_run, "config.yaml"))
    template = rubric.load_template(cfg.judge.template)
    chats = [[{"role": "user", "content": rubric.render(template, f"Describe {t}.", f"{t} " * (i % 3 + 1))}]
             for i, t in enumerate(TOPICS)]
    params = SamplingParams(n=n, temperature=0.7, top_p=0.9, max_new_tokens=max_new_tokens, stop_at_score=True,
                            score_probs=True, force_score=True, stop_repetition=stop_repetition)
    outs = m1_backend.generate(chats, params, seed=5 if fixed else 3)  # seeds whose sampling cuts a repetition
    forced = Counter()
    for chat, comps in zip(chats, outs):
        for c in comps:
            text = rubric.truncate_after_score(c.text)
            if c.score_forced:
                forced[c.finish_reason] += 1
                separate = m1_backend.score_probs([chat], [rubric.forced_prefix(text)])[0]
                assert c.score_probs == pytest.approx(separate, abs=1e-4)
            elif c.score_probs is None:  # the judge's separate pass would read these
                assert rubric.parse_score(text)[0] is None
    assert sum(forced.values()) > 0, "no judgment was forced, so this compares nothing"
    if max_new_tokens == 3:
        assert forced["length"] > 0
    if stop_repetition:
        assert forced["repetition"] > 0, "no repetition cut was forced"
    if fixed:
        assert hidden, "no cut token was masked in the fixed cache"
    # Greedy, with and without force_score, the texts are the same: the forced tokens are not
    # text. (Sampled texts may differ: rows that stay longer in the batch shift the RNG stream.)
    greedy = {**vars(params), "temperature": 0.0}
    texts = [[[c.text for c in r] for r in m1_backend.generate(chats, SamplingParams(**{**greedy, "force_score": f}),
                                                                seed=3)] for f in (False, True)]
    assert texts[0] == texts[1]


def test_long_forced_feeds_left_to_the_separate_pass(m1_backend, tiny_run, monkeypatch):
    """A forced prefix longer than MAX_FORCED_FEED tokens is not fed from the cache (one token a
    step would keep the loop running for one row): the judgment comes back unscored, for the
    judge's separate pass (greedy, so the texts do not depend on which rows stay in the batch)."""
    from srlm.engines.backends import hf
    from srlm.run.config import load_config

    from tiny import TOPICS

    cfg = load_config(os.path.join(tiny_run, "config.yaml"))
    template = rubric.load_template(cfg.judge.template)
    chats = [[{"role": "user", "content": rubric.render(template, f"Describe {t}.", t)}] for t in TOPICS]
    params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=6, stop_at_score=True,
                            score_probs=True, force_score=True)

    def forced_and_unscored():
        outs = m1_backend.generate(chats, params, seed=5)
        comps = [c for row in outs for c in row]
        return sum(c.score_forced for c in comps), sum(c.score_probs is None for c in comps)

    forced, unscored = forced_and_unscored()
    assert forced > 0
    monkeypatch.setattr(hf, "MAX_FORCED_FEED", 0)
    forced0, unscored0 = forced_and_unscored()
    assert forced0 == 0 and unscored0 == unscored + forced


def test_repetition_guard_hand_cases():
    # "a b c" three times: the 3-gram (a, b, c) reaches 3 occurrences; cut at its 2nd start.
    assert find_repetition(list("abcabcabc"), 3) == 3
    assert find_repetition(list("abcabcab"), 3) is None
    assert find_repetition(list("aaaa"), 2) == 1  # overlapping runs count
    assert find_repetition(list("abcdef"), 0) is None
    g = RepetitionGuard(2)
    assert [g.push(x) for x in "xyxyx"] == [None, None, None, None, None]
    assert g.push("y") == 2
    text = "The answer is fine. The answer is fine. The answer is fine. The answer"
    cut, was_cut = cut_repeated_text(text, 4)
    assert was_cut and cut == "The answer is fine."
    assert cut_repeated_text("no loop here at all", 4) == ("no loop here at all", False)


def test_hf_generation_stops_repetition(tiny_model):
    """A random tiny model with shrunken weights repeats one token: the guard cuts it early and
    keeps one copy of the loop."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    b = HFBackend(model, AutoTokenizer.from_pretrained(tiny_model), batch_size=4)
    chats = [[{"role": "user", "content": "hello there"}]]
    full = b.generate(chats, SamplingParams(n=1, temperature=0.0, max_new_tokens=40), seed=0)[0][0]
    ids = b.tok(full.text, add_special_tokens=False)["input_ids"]
    cut_index = find_repetition(ids, 3)
    assert cut_index is not None, "the greedy tiny model should loop, or this test checks nothing"
    cut = b.generate(chats, SamplingParams(n=1, temperature=0.0, max_new_tokens=40, stop_repetition=3), seed=0)[0][0]
    assert cut.finish_reason == "repetition" and cut.num_tokens < full.num_tokens
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)
