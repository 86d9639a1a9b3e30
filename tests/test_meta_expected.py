"""meta.scoring=expected: Backend.choice_probs on the transformers backend against the model's
own logits, the forced verdict prefix on awkward texts, verdicts from [P(A), P(B)] (ties stay
undecided), the meta/* metrics, and the meta_judge stage on the tiny model in both modes."""

import dataclasses
import math

import pytest
import torch

from srlm.methods import meta_rewarding
from srlm.engines.backends import scoring
from srlm.engines.backends.hf import HFBackend
from srlm.run.config import Config, with_overrides
from srlm.methods.meta_rewarding import FORCED_VERDICT_PREFIX, decide_verdict, forced_verdict_prefix, parse_meta_verdict
from srlm.engines.modeling import ModelRef, load_model, load_tokenizer
from srlm.run.records import CandidateRecord, JudgmentRecord, MetaJudgmentRecord, read_jsonl, write_jsonl
from srlm.run.rundir import RunDir

CHATS = [
    [{"role": "user", "content": "Which grading is better? Think briefly."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compare the two gradings."}],
    [{"role": "user", "content": "A or B?"}],
]


@pytest.fixture(scope="module")
def hf(tiny_model):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ref = ModelRef(tiny_model)
    model = load_model(ref, dtype=torch.float32)
    with torch.no_grad():
        # A random tiny model's next-token distribution is almost flat; scaling the final norm
        # spreads its logits so that P(A) and P(B) differ clearly between prompts.
        model.model.norm.weight.mul_(10.0)
    yield HFBackend(model, load_tokenizer(ref), batch_size=2)
    torch.set_num_threads(threads)


def choice_probs_by_hand(backend, chat, assistant_text, choices):
    """Reference: one unbatched forward pass over chat + assistant_text, softmax over the whole
    vocabulary, each choice's mass summed over every vocabulary token whose text (leading spaces
    stripped) is the choice, renormalised over the choices."""
    tok = backend.tok
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + assistant_text
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p = torch.softmax(backend.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    vocab = {c: [i for i in range(len(tok)) if tok.decode([i]).lstrip(" ") == c] for c in choices}
    mass = [float(p[vocab[c]].sum()) for c in choices]
    return [m / sum(mass) for m in mass], vocab


def test_choice_probs_match_the_logits(hf):
    prefixes = [forced_verdict_prefix(t) for t in ("A is careful.\nWinner: Judgement B", "", "Both are fine.\n")]
    got = hf.choice_probs(CHATS, prefixes, ["A", "B"])
    # SmolLM2 writes " A" as one token: the distribution is read after "Judgement" (no space),
    # where the model itself would write " A" or " B".
    assert scoring.choice_token_ids(hf.tok, ["A", "B"]).spaced
    for chat, prefix, probs in zip(CHATS, prefixes, got):
        assert prefix.endswith("Winner: Judgement ")
        want, vocab = choice_probs_by_hand(hf, chat, prefix.rstrip(" "), ["A", "B"])
        assert probs == pytest.approx(want, abs=1e-5) and math.isclose(sum(probs), 1.0, rel_tol=1e-6)
    # The whole-vocabulary scan finds exactly the bare and the spaced letter.
    assert [sorted(hf.tok.decode([i]) for i in vocab[c]) for c in "AB"] == [[" A", "A"], [" B", "B"]]
    # The model is not flat here, so the comparison above can fail.
    assert max(abs(p[0] - q[0]) for p in got for q in got) > 0.05
    # Batching with left padding changes nothing: one chat at a time gives the same.
    for chat, prefix, probs in zip(CHATS, prefixes, got):
        assert hf.choice_probs([chat], [prefix], ["A", "B"])[0] == pytest.approx(probs, abs=1e-5)
    # Another choice set, order kept; digits agree with score_probs.
    ba = hf.choice_probs(CHATS[:1], prefixes[:1], ["B", "A"])[0]
    assert ba == pytest.approx(got[0][::-1], abs=1e-6)
    digits = hf.choice_probs(CHATS[:1], ["Good.\nScore: "], list("012345"))[0]
    assert digits == pytest.approx(hf.score_probs(CHATS[:1], ["Good.\nScore: "])[0], abs=1e-6)
    assert hf.choice_probs([], [], ["A", "B"]) == []
    with pytest.raises(ValueError, match="not single tokens"):
        hf.choice_probs(CHATS[:1], prefixes[:1], ["A", "Judgement A"])
    with pytest.raises(ValueError, match="2 chats but 1 prefixes"):
        hf.choice_probs(CHATS[:2], prefixes[:1], ["A", "B"])


def test_choice_distribution_by_hand():
    ln = math.log
    # A: .3 (" A") + .1 ("A") + .1 ("\u0120A"), B: .25; "AB", "a" and "Judgement" ignored.
    entries = [(" A", ln(0.3)), ("A", ln(0.1)), ("\u0120A", ln(0.1)), ("B", ln(0.25)), ("AB", ln(0.1)),
               ("a", ln(0.1)), ("Judgement", ln(0.05))]
    assert scoring.choice_distribution(entries, ("A", "B")) == pytest.approx([0.5 / 0.75, 0.25 / 0.75])
    assert scoring.choice_distribution([(" A", ln(0.2))], ("A", "B")) == pytest.approx([1.0, 0.0])
    assert scoring.choice_distribution([("x", 0.0)], ("A", "B")) is None


def test_forced_verdict_prefix_on_awkward_texts():
    f = FORCED_VERDICT_PREFIX
    assert f == "Winner: Judgement "
    cases = {
        "A checks every point.\nWinner: Judgement A": "A checks every point.\n" + f,  # a valid verdict line
        "Reasoning only, no verdict.\n\n": "Reasoning only, no verdict.\n" + f,  # none: the whole text
        "R.\nWinner: Judgement B\nWinner: Judgement A": "R.\n" + f,  # two lines: before the first
        "R.\nWinner: Judgement C\nmore text": "R.\n" + f,  # an invalid letter
        "R.\n  **Winner:** Judgement B": "R.\n" + f,  # markdown around it
        "R.\r\nwinner: judgement a": "R.\n" + f,  # any case, CRLF
        "- Winner: the first one is quick.\nIt is.": f,  # nothing before the verdict line
        "The winner is A.\nWinner: Judgement A": "The winner is A.\n" + f,  # "winner" inside a line stays
        "Winners all round.": "Winners all round.\n" + f,  # another word
        "Winner: Judgement A": f,
        "": f,
        "  \n": f,
    }
    for text, want in cases.items():
        assert forced_verdict_prefix(text) == want, text
    # The strict parser is unchanged: the conflict and the invalid letter are not verdicts.
    assert parse_meta_verdict("R.\nWinner: Judgement B\nWinner: Judgement A")[0] is None
    assert parse_meta_verdict("R.\nWinner: Judgement C")[0] is None


def test_decide_verdict_ties_stay_undecided():
    assert decide_verdict([0.7, 0.3]) == "A" and decide_verdict([0.3, 0.7]) == "B"
    assert decide_verdict([0.5000001, 0.4999999]) == "A"
    assert decide_verdict([0.5, 0.5]) is None


class FakeBackend:
    """choice_probs from a table keyed by the forced prefix; records its calls."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def choice_probs(self, chats, prefixes, choices):
        self.calls.append((chats, prefixes, choices))
        return [self.table[p] for p in prefixes]


def _rec(i, text, verdict=None, error=None):
    if verdict is None and error is None:
        verdict, error = parse_meta_verdict(text)
    return MetaJudgmentRecord(id=f"m{i}", prompt_id="p", candidate_id="p-c0", judgment_a="a", judgment_b="b",
                              text=text, verdict=verdict, error=error, parsed_verdict=verdict)


def test_expected_verdicts_and_metrics():
    recs = [
        _rec(0, "Fine.\nWinner: Judgement A"),  # parsed A, probabilities say B
        _rec(1, "No verdict here."),  # forced: A
        _rec(2, "Winner: Judgement C"),  # forced, a tie: undecided
        _rec(3, "", error=meta_rewarding.OVER_CONTEXT),  # never read
        _rec(4, "Hmm.\nWinner: Judgement B"),  # the engine has no probabilities: parsed B stays
    ]
    f = FORCED_VERDICT_PREFIX
    backend = FakeBackend({"Fine.\n" + f: [0.25, 0.75], "No verdict here.\n" + f: [0.9, 0.1], f: [0.5, 0.5],
                           "Hmm.\n" + f: None})
    chats = [[{"role": "user", "content": f"chat {i}"}] for i in range(5)]
    meta_rewarding.expected_verdicts(backend, chats, recs)
    (called, prefixes, choices), = backend.calls
    assert called == [chats[i] for i in (0, 1, 2, 4)] and choices == ["A", "B"]
    assert prefixes == ["Fine.\n" + f, "No verdict here.\n" + f, f, "Hmm.\n" + f]
    got = [(r.verdict, r.parsed_verdict, r.mode, r.verdict_probs, r.verdict_forced) for r in recs]
    assert got == [("B", "A", "expected", [0.25, 0.75], False), ("A", None, "expected", [0.9, 0.1], True),
                   (None, None, "expected", [0.5, 0.5], True), (None, None, "parsed", None, False),
                   ("B", "B", "parsed", None, False)]
    assert recs[1].error == "no 'Winner: Judgement A|B' line"  # the parse error is kept
    stats = meta_rewarding.summarize([dataclasses.asdict(r) for r in recs])
    # Parsed verdicts: m0 and m4 -> 3 failures. Final: B, A, None, None, B -> first-position rate 1/3.
    assert stats["meta/meta_judgments"] == 5 and stats["meta/parse_failures"] == 3
    assert stats["meta/parse_failure_rate"] == pytest.approx(0.6) and stats["meta/undecided"] == 2
    assert stats["meta/verdicts_forced"] == 2 and stats["meta/over_context"] == 1
    assert stats["meta/mean_verdict_confidence"] == pytest.approx((0.75 + 0.9 + 0.5) / 3)
    assert stats["meta/position_bias"] == pytest.approx(1 / 3)
    # Parsed-mode records (no mode field: files from before expected mode): unchanged metrics.
    old = [{k: v for k, v in dataclasses.asdict(r).items() if k in ("verdict", "error")} for r in
           (_rec(0, "Winner: Judgement A"), _rec(1, "x"))]
    stats = meta_rewarding.summarize(old)
    assert (stats["meta/parse_failures"], stats["meta/undecided"], stats["meta/verdicts_forced"]) == (1, 1, 0)
    assert stats["meta/mean_verdict_confidence"] is None and stats["meta/position_bias"] == 1.0


def test_old_meta_judgment_files_still_read(tmp_path):
    path = str(tmp_path / "m.jsonl")
    with open(path, "w") as f:
        f.write('{"id": "m", "prompt_id": "p", "candidate_id": "c", "judgment_a": "a", "judgment_b": "b", '
                '"text": "Winner: Judgement A", "verdict": "A", "error": null}\n')
    (r,) = read_jsonl(path, MetaJudgmentRecord)
    assert (r.verdict, r.mode, r.verdict_probs, r.verdict_forced) == ("A", "parsed", None, False)


def _stage_inputs(rd: RunDir):
    cands = [CandidateRecord(id=f"p{i}-c0", prompt_id=f"p{i}", prompt=f"Describe {t}.", response=f"{t} is nice.",
                             index=0, num_tokens=4, finish_reason="stop") for i, t in enumerate(("rain", "tea"))]
    judgments = [JudgmentRecord(id=f"{c.id}-j{s}", candidate_id=c.id, prompt_id=c.prompt_id, sample=s,
                                text=f"Point {s}.\nScore: {s + 2}", score=s + 2, error=None, parsed_score=s + 2)
                 for c in cands for s in range(3)]
    write_jsonl(rd.candidates(1), cands)
    write_jsonl(rd.judgments(1), judgments)


@pytest.mark.parametrize("scoring", ["expected", "parsed"])
def test_meta_judge_stage_on_the_tiny_model(tmp_path, hf, scoring):
    """3 judgments per candidate, 2 candidates: 12 meta-judgments. expected decides every one
    (the random model writes no verdict line), with the probabilities read after the forced
    prefix (checked by hand on one); parsed keeps the paper's behaviour."""
    rd = RunDir(str(tmp_path / "run"))
    _stage_inputs(rd)
    cfg = with_overrides(Config(), ["method=meta_rewarding", f"meta.scoring={scoring}", "meta.max_new_tokens=8",
                                    "meta.chunk_size=5"])
    stats = meta_rewarding.run(cfg, rd, 1, hf)
    recs = read_jsonl(rd.meta_judgments(1), MetaJudgmentRecord)
    assert len(recs) == stats["meta/meta_judgments"] == 12 and stats["meta/selected"] == 2
    assert stats["meta/parse_failures"] == sum(r.parsed_verdict is None for r in recs)
    if scoring == "parsed":
        assert all(r.mode == "parsed" and r.verdict == r.parsed_verdict and r.verdict_probs is None
                   and not r.verdict_forced for r in recs)
        assert stats["meta/undecided"] == stats["meta/parse_failures"]
        assert stats["meta/mean_verdict_confidence"] is None and stats["meta/verdicts_forced"] == 0
        return
    assert all(r.verdict in ("A", "B") and r.mode == "expected" for r in recs), "a comparison left undecided"
    for r in recs:
        p_a, p_b = r.verdict_probs
        assert math.isclose(p_a + p_b, 1.0, rel_tol=1e-6) and r.verdict == ("A" if p_a > p_b else "B")
        assert r.verdict_forced == (r.parsed_verdict is None)
    assert stats["meta/undecided"] == 0 and stats["meta/verdicts_forced"] == sum(r.verdict_forced for r in recs) > 0
    assert stats["meta/mean_verdict_confidence"] == pytest.approx(
        sum(max(r.verdict_probs) for r in recs) / 12) and stats["meta/mean_verdict_confidence"] >= 0.5
    assert stats["meta/position_bias"] == pytest.approx(sum(r.verdict == "A" for r in recs) / 12)
    # One record by hand: the meta-judge chat rebuilt, its text cut and the prefix forced.
    from srlm.data import rubric
    from srlm.methods.meta_rewarding import META_JUDGE_TEMPLATE, render_meta

    cands = {c.id: c for c in read_jsonl(rd.candidates(1), CandidateRecord)}
    juds = {j.id: j for j in read_jsonl(rd.judgments(1), JudgmentRecord)}
    r = recs[-1]
    c = cands[r.candidate_id]
    chat = [{"role": "user", "content": render_meta(META_JUDGE_TEMPLATE, meta_rewarding.rubric_of(rubric.load_template()),
                                                    c.prompt, c.response, juds[r.judgment_a].text,
                                                    juds[r.judgment_b].text)}]
    want, _ = choice_probs_by_hand(hf, chat, forced_verdict_prefix(r.text).rstrip(" "), ["A", "B"])
    assert r.verdict_probs == pytest.approx(want, abs=1e-5)
