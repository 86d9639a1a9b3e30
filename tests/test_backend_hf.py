"""The fast generation path gives the same tokens as the naive one (model.generate)."""

import pytest
import torch

from srlm.engines.backends.base import SamplingParams
from srlm.engines.backends.hf import HFBackend, _common_prefix_len, _sample

RUBRIC = "You grade answers. Add a point for each criterion that holds. " * 4


def _wide_model(tiny_model):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    # Wider random weights so greedy decoding wanders over the vocabulary instead of repeating.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="module")
def backend(tiny_model):
    from transformers import AutoTokenizer

    return HFBackend(_wide_model(tiny_model), AutoTokenizer.from_pretrained(tiny_model), batch_size=8)


@pytest.fixture(scope="module")
def flat_backend(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return HFBackend(AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model))


def naive(backend, chat, max_new_tokens):
    ids = backend.encode([chat])[0]
    out = backend.model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=sorted(backend.eos_ids), pad_token_id=backend.pad_id)
    return backend.tok.decode(out[0][len(ids):], skip_special_tokens=True)


@pytest.mark.parametrize("shared_prefix,fixed", [(True, False), (False, False), (True, True), (False, True)])
def test_greedy_equals_model_generate(backend, shared_prefix, fixed, monkeypatch):
    """Eager steps, and the fixed cache CUDA runs (decode_steps.FixedSteps, here without graph capture)."""
    monkeypatch.setattr(backend, "fixed_steps", fixed)
    texts = ["hi", "what is two plus two, and why?", "tell me a story about a lighthouse keeper"]
    chats = [[{"role": "user", "content": (RUBRIC if shared_prefix else "") + t}] for t in texts]
    if not shared_prefix:
        chats[1][0]["content"] = "Q: " + chats[1][0]["content"]
    out = backend.generate(chats, SamplingParams(n=2, temperature=0.0, max_new_tokens=24), seed=0)
    assert [len(o) for o in out] == [2, 2, 2]
    for chat, comps in zip(chats, out):
        expected = naive(backend, chat, 24)
        assert len(set(expected.split())) > 3  # a meaningful comparison, not a repeated token
        assert comps[0].text == comps[1].text == expected


def test_sampling_is_seeded_and_varied(flat_backend):
    backend = flat_backend
    chats = [[{"role": "user", "content": RUBRIC + x}] for x in ("a", "b")]
    p = SamplingParams(n=4, temperature=1.0, top_p=0.9, max_new_tokens=12)
    a = backend.generate(chats, p, seed=7)
    assert a == backend.generate(chats, p, seed=7)
    assert a != backend.generate(chats, p, seed=8)
    assert len({c.text for c in a[0]}) > 1
    for comps in a:
        for c in comps:
            assert c.finish_reason in ("stop", "length") and 0 < c.num_tokens <= 12


def test_empty_and_token_counts(backend):
    assert backend.generate([], SamplingParams(), seed=0) == []
    counts = backend.count_prompt_tokens([[{"role": "user", "content": "hello"}]])
    assert counts[0] == len(backend.encode([[{"role": "user", "content": "hello"}]])[0]) > 1


def test_common_prefix_and_top_p():
    assert _common_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert _common_prefix_len([[1, 2], [1, 2]]) == 1  # each row keeps a token to prefill
    logits = torch.tensor([[10.0, 9.0, -50.0, -50.0]] * 200)
    g = torch.Generator().manual_seed(0)
    picks = _sample(logits, 1.0, 0.5, g)
    assert set(picks.tolist()) == {0}  # top_p=0.5 keeps only the top token (p=0.73)
    picks = _sample(logits, 1.0, 0.99, g)
    assert set(picks.tolist()) == {0, 1}
    assert _sample(logits[:1], 0.0, 1.0, g).tolist() == [0]


def test_judge_scores_agree_with_naive_path(tiny_run):
    """Greedy judging on the tiny run's M1 (trained on bare `Score: N` judgments): the fast
    path's early stop and shared rubric prefill give the scores the naive loop parses."""
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srlm.data import rubric
    from srlm.loop.judge import judge_texts
    from srlm.run.config import JudgeConfig, load_config

    m1 = os.path.join(tiny_run, "models", "M1")
    cfg = load_config(os.path.join(tiny_run, "config.yaml"))
    template = rubric.load_template(cfg.judge.template)
    b = HFBackend(AutoModelForCausalLM.from_pretrained(m1).eval(), AutoTokenizer.from_pretrained(m1), batch_size=4)
    from tiny import TOPICS

    # The EFT examples M1 was trained on (tiny.write_seed_files), so that some judgments parse.
    items = [(f"Describe {t}.", f"{t} " * (i % 4 + 1)) for i, t in enumerate(TOPICS)]
    fast = judge_texts(b, template, items, 1, JudgeConfig(temperature=0.0, max_new_tokens=12), seed=0)
    parsed = 0
    for (p, r), row in zip(items, fast):
        chat = [{"role": "user", "content": rubric.render(template, p, r)}]
        naive_text = rubric.truncate_after_score(naive(b, chat, 12))
        assert row[0][0] == naive_text
        assert row[0][1] == rubric.parse_score(naive_text)[0]
        parsed += row[0][1] is not None
    assert parsed > 0, "M1 should produce parseable judgments, or this test compares nothing"


def test_nucleus_sampling_stays_in_the_exact_nucleus():
    """_sample searches the top 256 tokens first; rows whose nucleus is wider (flat
    distributions) must fall back to the full sort, so every draw lies in the exact nucleus."""
    import torch

    from srlm.engines.backends.hf import TOP_P_CANDIDATES, _sample

    torch.manual_seed(0)
    vocab = 4 * TOP_P_CANDIDATES
    peaked = torch.randn(vocab) * 6
    flat = torch.randn(vocab) * 0.01  # nucleus of 0.9 spans ~90% of the vocabulary
    logits = torch.stack([peaked, flat])

    def nucleus(row, top_p):
        p = torch.softmax(row, -1)
        sp, si = p.sort(descending=True)
        return set(si[(sp.cumsum(-1) - sp) <= top_p].tolist())

    gen = torch.Generator().manual_seed(1)
    allowed = [nucleus(r, 0.9) for r in logits]
    assert len(allowed[1]) > TOP_P_CANDIDATES  # the fallback is exercised
    drawn = [set(), set()]
    for _ in range(200):
        for row, tok in enumerate(_sample(logits, 1.0, 0.9, gen).tolist()):
            assert tok in allowed[row]
            drawn[row].add(tok)
    assert len(drawn[1]) > 100  # the flat row really samples widely
    assert (_sample(logits, 1.0, 1e-6, gen) == logits.argmax(-1)).all()  # tiny top_p: the top token only


def test_packed_linears_change_no_token(tiny_model):
    """On a bf16 CPU model the backend computes its linears with oneDNN-packed weights
    (_compat.pack_linears); greedy and seeded sampled outputs must be the same as with plain
    F.linear, and the model's own forward is back afterwards."""
    from transformers import AutoTokenizer

    model = _wide_model(tiny_model).to(torch.bfloat16)
    backend = HFBackend(model, AutoTokenizer.from_pretrained(tiny_model), batch_size=8)
    assert len(backend._packs) == sum(type(m) is torch.nn.Linear for m in model.modules()) > 0
    chats = [[{"role": "user", "content": RUBRIC + t}] for t in ("hi", "what is two plus two?", "a story")]
    runs = {}
    for packed in (True, False):
        packs, backend._packs = backend._packs, (backend._packs if packed else {})
        runs[packed] = [backend.generate(chats, SamplingParams(n=2, temperature=t, top_p=0.9, max_new_tokens=16), 3)
                        for t in (0.0, 1.0)]
        backend._packs = packs
    assert runs[True] == runs[False]
    assert len({c.text for row in runs[True][0] for c in row}) > 1
    assert not any("forward" in vars(m) for m in model.modules())


def test_score_checks_agree_with_the_rubric(backend):
    """The per-step score checks (a cached per-token precheck, then the exact decode) say what the
    rubric's regexes say on the decoded text, for texts that end at or near a score line."""
    from srlm.data import rubric

    texts = ["It is fine.\nScore:", "ok\nScore: ", "Score:\t", "good\nScore: 4\n", "Score: 3.", "no score here",
             "Scores: 3\n", "x Score:", "\n  Score:  ", "Score: 12 points"]
    for text in texts:
        toks = backend.tok(text, add_special_tokens=False)["input_ids"]
        decoded = backend.tok.decode(toks, skip_special_tokens=True)
        assert backend._at_score_prefix(toks) == bool(rubric.SCORE_PREFIX_END.search(decoded)), text
        assert backend._score_done(toks) == rubric.score_line_complete(decoded), text
