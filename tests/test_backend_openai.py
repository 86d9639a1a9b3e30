"""OpenAIBackend against a real local OpenAI-compatible server (tests/openai_server.py) whose
answers and token probabilities are a tiny model's own (HFBackend): neither the `openai`
client library nor the HTTP layer is mocked. Digit distributions are checked against the
model's logits read directly, and the pure helpers (srlm/engines/backends/scoring.py) against
hand-computed numbers."""

from __future__ import annotations

import logging
import math
import os
import shlex
import socket
import sys
import tempfile
import time
import urllib.request
from types import SimpleNamespace

import pytest
import torch

from openai_server import ChatServer
from tiny import make_tiny_model
from srlm.engines.backends import make_backend
from srlm.engines.backends.base import SamplingParams
from srlm.engines.backends import scoring
from srlm.engines.backends.hf import HFBackend
from srlm.engines.backends.openai import OpenAIBackend, _written_score_probs
from srlm.run.config import Config
from srlm.engines.modeling import ModelRef, load_model, load_tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
KEY_ENV = "SRLM_TEST_OPENAI_KEY"
CHATS = [
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "What is 2 + 2?"}],
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return make_tiny_model(str(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def hf(model_dir):
    # One torch thread: the tiny model gains nothing from more, and OpenMP threads spinning
    # against a busy second core made these tests several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ref = ModelRef(model_dir)
    yield HFBackend(load_model(ref, dtype=torch.float32), load_tokenizer(ref), batch_size=8)
    torch.set_num_threads(threads)


@pytest.fixture
def server(hf, model_dir):
    with ChatServer(hf, model=model_dir) as s:
        yield s


def make_cfg(base_url: str | None, **backend) -> Config:
    cfg = Config()
    cfg.backend.name = "openai"
    cfg.backend.base_url = base_url
    cfg.backend.api_key_env = KEY_ENV
    cfg.backend.concurrency = 4
    cfg.backend.timeout = 30.0
    for k, v in backend.items():
        setattr(cfg.backend, k, v)
    return cfg


def client(server: ChatServer, model_dir: str, **backend) -> OpenAIBackend:
    b = make_backend(make_cfg(server.base_url, **backend), ModelRef(model_dir))
    assert isinstance(b, OpenAIBackend)
    return b


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_containing(root, needle: str) -> list[str]:
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    if needle.encode() in f.read():
                        hits.append(path)
            except OSError:
                pass
    return hits


def test_generate_returns_n_real_completions_in_order(server, hf, model_dir, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    b = client(server, model_dir)
    params = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=6)
    out = b.generate(CHATS, params, seed=11)
    assert len(out) == len(CHATS)
    assert all(len(c) == 3 for c in out)
    for i, chat in enumerate(CHATS):
        # The server generated chat i with seed 11 + i*n: the same call in process gives the same text.
        expected = hf.generate([chat], SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=6), 11 + i * 3)[0]
        assert [c.text for c in out[i]] == [e.text for e in expected]
        assert [c.finish_reason for c in out[i]] == [e.finish_reason for e in expected]
        assert all(c.finish_reason in ("stop", "length") and c.num_tokens >= 0 for c in out[i])
    bodies = [r["body"] for r in server.requests]
    assert len(bodies) == len(CHATS)
    assert sorted(r["seed"] for r in bodies) == [11, 14, 17]
    body = next(r for r in bodies if r["seed"] == 11)
    assert body == {"model": model_dir, "messages": CHATS[0], "n": 3, "temperature": 0.7, "top_p": 0.9,
                    "max_tokens": 6, "seed": 11}
    # n=1: num_tokens is the server's usage count, exactly what the model generated.
    one = b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=5), seed=3)[0][0]
    ref = hf.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=5), 3)[0][0]
    assert (one.text, one.num_tokens, one.finish_reason) == (ref.text, ref.num_tokens, ref.finish_reason)
    assert b.generate([], params, seed=0) == []
    # Prompt lengths and context window come from the model directory.
    assert b.count_prompt_tokens(CHATS) == hf.count_prompt_tokens(CHATS)
    assert b.context_window == 2048
    b.close()  # no server_command: nothing to stop, the external server still answers
    assert urllib.request.urlopen(f"{server.base_url}/models", timeout=5).status == 200


def test_estimates_without_local_model():
    b = OpenAIBackend("http://127.0.0.1:9/v1", "org/remote-model", ref=ModelRef("org/remote-model"))
    assert b.count_prompt_tokens([[{"role": "user", "content": "x" * 40}]]) == [10]
    assert b.context_window == 4096


def test_server_ignoring_n_still_gives_n_completions(hf, model_dir):
    with ChatServer(hf, model=model_dir, honour_n=False) as server:
        b = client(server, model_dir)
        out = b.generate(CHATS[:1], SamplingParams(n=3, max_new_tokens=5), seed=100)
    assert len(out) == 1 and len(out[0]) == 3
    bodies = [r["body"] for r in server.requests]
    assert [(r["n"], r["seed"]) for r in bodies] == [(3, 100), (2, 101), (1, 102)]
    for k, c in enumerate(out[0]):  # sample k was drawn with seed 100 + k
        e = hf.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=5), 100 + k)[0][0]
        assert (c.text, c.num_tokens, c.finish_reason) == (e.text, e.num_tokens, e.finish_reason)


def test_api_key_read_at_request_time_and_never_written(server, model_dir, monkeypatch, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # the library's own debug logs too
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # anything written to temp lands in tmp_path
    key = "sk-srlm-test-" + os.urandom(8).hex()
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-one")  # only api_key_env counts
    b = client(server, model_dir)
    b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=3), seed=0)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer EMPTY"  # the placeholder

    monkeypatch.setenv(KEY_ENV, key)  # read at request time, not at construction
    b.generate(CHATS[:2], SamplingParams(n=1, max_new_tokens=3), seed=0)
    assert [r["headers"].get("Authorization") for r in server.requests[-2:]] == [f"Bearer {key}"] * 2
    server.fail_next = [503, 400]  # a retry and an error message: neither may carry the key
    with pytest.raises(RuntimeError) as err:
        b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=3), seed=0)
    assert "HTTP 400: injected failure 400" in str(err.value) and key not in str(err.value)
    assert [r["headers"]["Authorization"] for r in server.requests[-2:]] == [f"Bearer {key}"] * 2

    monkeypatch.delenv(KEY_ENV)
    b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=3), seed=0)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer EMPTY"
    b.close()
    out = capsys.readouterr()
    assert "503" in caplog.text  # the library logged the retry ...
    assert key not in caplog.text and key not in out.out and key not in out.err  # ... without the key
    assert files_containing(tmp_path, key) == []


def test_transient_429_and_5xx_are_retried(server, model_dir):
    b = client(server, model_dir)
    server.fail_next = [503, 429]  # the library's retries (it honours the server's retry-after-ms)
    out = b.generate(CHATS[:1], SamplingParams(n=2, max_new_tokens=4), seed=5)
    assert len(out[0]) == 2 and all(isinstance(c.text, str) for c in out[0])
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 3
    assert [r["body"]["seed"] for r in server.requests] == [5] * 3  # the same request again


def test_retries_give_up_after_three(server, model_dir):
    b = client(server, model_dir)
    server.fail_next = [502, 503, 429, 500]
    with pytest.raises(RuntimeError, match=r"HTTP 500: injected failure 500"):
        b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=4), seed=5)
    assert len(server.requests) == 4


def test_connection_refused_is_retried_then_reported():
    url = f"http://127.0.0.1:{free_port()}/v1"
    b = OpenAIBackend(url, "m", timeout=5, max_retries=1)  # one retry: the library's backoff is ~0.5 s
    with pytest.raises(RuntimeError, match=rf"POST {url}/chat/completions failed after 2 attempts: Connection error"):
        b.generate(CHATS[:1], SamplingParams(n=1), seed=0)
    assert OpenAIBackend(url, "m").max_retries == 3  # the default: three retries, as before


def test_400_raises_with_status_and_message(server, model_dir):
    b = client(server, model_dir)
    with pytest.raises(RuntimeError) as err:
        b.generate(CHATS[:1], SamplingParams(n=1, temperature=5.0, max_new_tokens=4), seed=0)
    msg = str(err.value)
    assert "HTTP 400" in msg and "temperature must be in [0, 2]" in msg
    assert f"{server.base_url}/chat/completions" in msg
    assert len(server.requests) == 1  # a client error is not retried


def test_unknown_model_raises_404(server, model_dir):
    b = client(server, model_dir, served_model="no-such-model")
    with pytest.raises(RuntimeError, match=r"HTTP 404: The model `no-such-model` does not exist"):
        b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=4), seed=0)


def test_stop_at_score_truncates(hf, model_dir):
    with ChatServer(hf, model=model_dir, reply="Good.\nScore: 4\nextra text", reply_finish_reason="length") as server:
        b = client(server, model_dir)
        judged = b.generate(CHATS[:2], SamplingParams(n=2, max_new_tokens=4, stop_at_score=True), seed=0)
        plain = b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=4), seed=0)
    assert [[c.text for c in cs] for cs in judged] == [["Good.\nScore: 4"] * 2] * 2
    assert all(c.finish_reason == "stop" for cs in judged for c in cs)  # it stopped at the score line
    assert (plain[0][0].text, plain[0][0].finish_reason) == ("Good.\nScore: 4\nextra text", "length")


def test_server_command_lifecycle(model_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    key = "sk-srlm-test-" + os.urandom(8).hex()
    monkeypatch.setenv(KEY_ENV, key)
    port = free_port()
    command = f"{shlex.quote(sys.executable)} {shlex.quote(os.path.join(HERE, 'fake_server_main.py'))} --port {{port}} --model {{model}}"
    cfg = make_cfg(f"http://127.0.0.1:{port}/v1", server_command=command, server_ready_timeout=60.0)
    b = make_backend(cfg, ModelRef(model_dir))
    try:
        proc = b._proc
        assert proc is not None and proc.poll() is None
        assert os.getpgid(proc.pid) == proc.pid  # its own process group
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5).status == 200
        out = b.generate(CHATS[:2], SamplingParams(n=2, max_new_tokens=4), seed=1)
        assert [len(c) for c in out] == [2, 2]
        assert files_containing(tmp_path, key) == []  # the server log lives under the temp dir
        assert any(name.startswith("srlm-server-") for name in os.listdir(tmp_path))
    finally:
        b.close()
    assert proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
    assert not any(name.startswith("srlm-server-") for name in os.listdir(tmp_path))  # log dir removed
    b.close()  # idempotent


def test_server_command_that_dies_reports_its_stderr(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    script = "import sys; print('starting'); print('fatal: cannot bind port', file=sys.stderr); sys.exit(3)"
    cfg = make_cfg(f"http://127.0.0.1:{free_port()}/v1", server_command=f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}",
                   server_ready_timeout=30.0)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*fatal: cannot bind port"):
        make_backend(cfg, ModelRef(str(tmp_path)))
    assert time.monotonic() - t0 < 10


def test_server_command_refuses_a_port_already_served(server, model_dir):
    cfg = make_cfg(server.base_url, server_command=f"{shlex.quote(sys.executable)} -c pass")
    with pytest.raises(RuntimeError, match="already answers"):
        make_backend(cfg, ModelRef(model_dir))


STUBBORN_SERVER = """
import http.server, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"object": "list", "data": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_close_kills_a_server_that_ignores_sigterm(tmp_path):
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN_SERVER)
    cfg = make_cfg(f"http://127.0.0.1:{free_port()}/v1", server_command=f"{shlex.quote(sys.executable)} {script} {{port}}",
                   server_ready_timeout=30.0)
    b = make_backend(cfg, ModelRef(str(tmp_path)))
    proc = b._proc
    b.stop_grace = 0.5
    t0 = time.monotonic()
    b.close()
    assert time.monotonic() - t0 < 5
    assert proc.poll() == -9  # SIGKILL after the grace period


def test_server_not_ready_in_time_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    script = "import time; print('loading weights...', flush=True); time.sleep(60)"
    cfg = make_cfg(f"http://127.0.0.1:{free_port()}/v1", server_command=f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}",
                   server_ready_timeout=1.0)
    started = []
    real_popen = __import__("subprocess").Popen
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])
    with pytest.raises(RuntimeError, match=r"(?s)not ready at .*/models after 1s.*loading weights"):
        make_backend(cfg, ModelRef(str(tmp_path)))
    assert started and started[0].poll() is not None  # the slow server was stopped, not left running


# -- token probabilities for expected judge scoring --------------------------------------

REPLY = "Good.\nScore: 3\nThe end."


@pytest.fixture
def digit_bias(hf) -> dict[int, float]:
    """A model that favours the digits 2, 3 and 4 (5 stays unlikely: outside the top 20)."""
    return {hf.tok.convert_tokens_to_ids(d): b for d, b in (("2", 12.0), ("3", 12.5), ("4", 11.5))}


def direct_digit_probs(hf, ids: list[int], bias: dict[int, float], k: int = 20) -> list[float]:
    """The reference, read from the model itself: log-softmax of the biased logits after
    `ids`, its top k, each digit's probability summed over tokens that decode to it."""
    with torch.inference_mode():
        logits = hf.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        logits[list(bias)] += torch.tensor(list(bias.values()))
        lp = torch.log_softmax(logits, -1)
    mass = [0.0] * 6
    for t in lp.topk(k).indices.tolist():
        text = hf.tok.decode([t]).strip()
        if text in "012345" and len(text) == 1:
            mass[int(text)] += math.exp(float(lp[t]))
    return [m / sum(mass) for m in mass]


def test_score_probs_read_where_the_score_digit_is_written(hf, model_dir, digit_bias):
    with ChatServer(hf, model=model_dir, reply=REPLY, reply_finish_reason="length", logit_bias=digit_bias) as server:
        b = client(server, model_dir)
        judged = b.generate(CHATS[:2], SamplingParams(n=2, max_new_tokens=8, stop_at_score=True, score_probs=True),
                            seed=0)
        plain = b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=8, stop_at_score=True), seed=0)
    bodies = [r["body"] for r in server.requests]
    assert all(r["logprobs"] is True and r["top_logprobs"] == 20 for r in bodies[:2])
    assert "logprobs" not in bodies[2] and "top_logprobs" not in bodies[2]
    assert plain[0][0].score_probs is None
    for chat, comps in zip(CHATS[:2], judged):
        prompt = hf.encode([chat])[0]
        # SmolLM2 writes "Score: 3" as "Score", ":", " ", "3": the digit is read after the " ".
        before = hf.tok("Good.\nScore: ", add_special_tokens=False)["input_ids"]
        assert hf.tok(REPLY, add_special_tokens=False)["input_ids"][:len(before) + 1] == [
            *before, hf.tok.convert_tokens_to_ids("3")]
        want = direct_digit_probs(hf, prompt + before, digit_bias)
        one_early = direct_digit_probs(hf, prompt + before[:-1], digit_bias)
        assert max(abs(x - y) for x, y in zip(want, one_early)) > 1e-3  # so the position matters
        assert want[5] == 0 and want[0] == want[1] == 0 and all(want[d] > 0.1 for d in (2, 3, 4))
        for c in comps:
            assert (c.text, c.finish_reason) == ("Good.\nScore: 3", "stop")
            assert c.score_probs == pytest.approx(want, abs=1e-5)
            assert math.fsum(c.score_probs) == pytest.approx(1.0)
            assert c.num_tokens == len(hf.tok(REPLY, add_special_tokens=False)["input_ids"])  # len(content)


def fake_token(token: str, logprob: float = -0.1, top: list[tuple[str, float]] = ()) -> SimpleNamespace:
    """One entry of a chat response's logprobs.content, as the openai library parses it."""
    return SimpleNamespace(token=token, logprob=logprob,
                           top_logprobs=[SimpleNamespace(token=t, logprob=lp) for t, lp in top])


def test_written_score_position_and_distribution_by_hand():
    ln = math.log
    top = [("3", ln(0.5)), ("4", ln(0.2)), (" 2", ln(0.1)), ("x", ln(0.2))]
    toks = [fake_token(t) for t in ("Good", ".", "\n", "Score", ":", " ")] + [fake_token("3", ln(0.5), top),
                                                                             fake_token("\n")]
    raw = "Good.\nScore: 3\n"
    # digits 3: .5, 4: .2, 2: .1 (" 2" counts as 2), "x" ignored; total .8
    assert _written_score_probs(toks, raw, "Good.\nScore: 3", ended=False) == pytest.approx(
        [0, 0, 0.125, 0.625, 0.25, 0])
    # The score digit written as one " 3" token; " 3" and "3" summed: 3: .3 + .1, 4: .4.
    merged = [fake_token("Score"), fake_token(":"),
              fake_token(" 3", ln(0.3), [(" 3", ln(0.3)), (" 4", ln(0.4)), ("3", ln(0.1)), ("\n", ln(0.2))])]
    assert _written_score_probs(merged, "Score: 3", "Score: 3", ended=True) == pytest.approx([0, 0, 0, 0.5, 0.5, 0])
    # Not complete: the model might have gone on to "Score: 34".
    assert _written_score_probs(merged, "Score: 3", "Score: 3", ended=False) is None
    # The written token outside its own top list still counts: 3: .2, 4: .6.
    alone = [fake_token("Score:"), fake_token(" 3", ln(0.2), [(" 4", ln(0.6))]), fake_token("\n")]
    assert _written_score_probs(alone, "Score: 3\n", "Score: 3", ended=False) == pytest.approx([0, 0, 0, 0.25, 0.75, 0])
    # A character split over two byte-level tokens (vLLM writes each half as U+FFFD): the
    # token texts are longer than the content, the position is still found in them.
    split = [fake_token("\ufffd"), fake_token("\ufffd"), fake_token("!\nScore:"), fake_token(" "),
             fake_token("3", ln(0.5), [("3", ln(0.5)), ("1", ln(0.5))])]
    assert _written_score_probs(split, "é!\nScore: 3", "é!\nScore: 3", ended=True) == pytest.approx(
        [0, 0.5, 0, 0.5, 0, 0])
    # No digit among the alternatives but the written one; then not even that (vLLM's -9999);
    # a score cut away (repetition); two digits; no score.
    assert _written_score_probs([fake_token("Score: "), fake_token("3", ln(0.5), [("x", 0.0)]), fake_token("\n")],
                                "Score: 3\n", "Score: 3", ended=False) == pytest.approx([0, 0, 0, 1, 0, 0])
    nodigit = [fake_token("Score: "), fake_token("3", -9999.0, [("x", 0.0)]), fake_token("\n")]
    assert _written_score_probs(nodigit, "Score: 3\n", "Score: 3", ended=False) is None
    assert _written_score_probs(toks, raw, "Good.", ended=False) is None
    assert _written_score_probs([fake_token("Score: 10\n")], "Score: 10\n", "Score: 10", ended=False) is None
    assert _written_score_probs(toks[:3], "Good.\n", "Good.", ended=True) is None
    # Token texts that do not spell the text (vLLM --return-tokens-as-token-ids): no position.
    ids = [fake_token(f"token_id:{i}", top=[("token_id:35", -0.1)]) for i in range(7)]
    assert _written_score_probs(ids, "Score: 3\n", "Score: 3", ended=False) is None


def test_scoring_helpers_by_hand(hf):
    ln = math.log
    assert [scoring.digit_of(t) for t in ("3", " 3", "\u25813", "\u01203", "\t0", "33", " ", "6", "x3", "3 ")] == [
        3, 3, 3, 3, 0, None, None, None, None, None]
    # 3: .4 + .1 ("3" and " 3"), 4: .2, 5: .1; "x" and "33" ignored: total .8
    entries = [(" 3", ln(0.4)), ("3", ln(0.1)), (" 4", ln(0.2)), ("5", ln(0.1)), ("x", ln(0.1)), ("33", ln(0.1))]
    assert scoring.digit_distribution(entries) == pytest.approx([0, 0, 0, 0.625, 0.25, 0.125])
    assert scoring.digit_distribution([("x", 0.0), ("yes", -1.0)]) is None
    assert scoring.digit_distribution([]) is None
    assert scoring.normalise([0, 1, 0, 3, 0, 0]) == [0, 0.25, 0, 0.75, 0, 0]
    assert scoring.score_digit_offset("Good.\nScore: 4\nmore") == 13
    assert scoring.score_digit_offset("Good.\nScore:\t4") is None
    assert scoring.score_digit_offset("Good.\nScore:\t4", ended=True) == 13
    assert scoring.score_digit_offset("My Score: 4\n") is None  # not a score line
    assert scoring.score_digit_offset("Score: 12\n") is None
    assert scoring.score_digit_offset("Score: 2\nScore: 5\n") == 7  # the first line
    assert scoring.token_at([2, 3, 1], 0) == 0 and scoring.token_at([2, 3, 1], 4) == 1
    assert scoring.token_at([2, 3, 1], 5) == 2 and scoring.token_at([2, 3, 1], 6) is None
    # SmolLM2's tokenizer: one token per bare digit, " 3" is " " + "3" (not spaced).
    digits = scoring.digit_token_ids(hf.tok)
    assert digits.per_choice == [[hf.tok.convert_tokens_to_ids(d)] for d in "012345"]
    assert [hf.tok.decode(ids) for ids in digits.per_choice] == list("012345") and not digits.spaced


def test_forced_prefix_read_through_completions_with_local_tokenizer(hf, model_dir, digit_bias):
    prefixes = ["Good.\nScore: ", "It is fine.\nScore: "]
    with ChatServer(hf, model=model_dir, logit_bias=digit_bias) as server:
        b = client(server, model_dir)
        probs = b.score_probs(CHATS[:2], prefixes)
        assert b.score_probs([], []) == []
        assert not b._tok_bos  # SmolLM2's BOS <|im_start|> opens the template and stays in the prompt
        b._digits = scoring.ChoiceTokens(b._digits.per_choice, spaced=True)  # a tokenizer with " 3" tokens
        spaced = b.score_probs(CHATS[:1], prefixes[:1])
        b._tok_bos = True  # a tokenizer that adds BOS itself: the server would add a second one
        b.score_probs(CHATS[:1], prefixes[:1])
    bodies = [r["body"] for r in server.requests]  # the first two in either order: sent concurrently
    assert [r["path"] for r in server.requests] == ["/v1/completions"] * 4
    template = hf.tok.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True)
    assert template.startswith("<|im_start|>")
    assert bodies[3]["prompt"] == template[len("<|im_start|>"):] + "Good.\nScore:"
    for chat, prefix, p in zip(CHATS[:2], prefixes, probs):
        prompt = hf.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + prefix
        assert {"model": model_dir, "prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 20} in bodies[:2]
        want = direct_digit_probs(hf, hf.tok(prompt)["input_ids"], digit_bias)
        assert p == pytest.approx(want, abs=1e-5) and want[5] == 0 and want[3] > 0.1
    assert bodies[2]["prompt"].endswith("\nScore:")  # the digit comes with its space
    assert spaced[0] is not None and spaced[0] != pytest.approx(probs[0], abs=1e-3)
    with pytest.raises(ValueError, match="2 chats but 1 prefixes"):
        b.score_probs(CHATS[:2], prefixes[:1])


def test_forced_prefix_read_through_chat_without_local_tokenizer(hf, model_dir, digit_bias):
    prefixes = ["Good.\nScore: ", "It is fine.\nScore: "]
    with ChatServer(hf, model=model_dir, logit_bias=digit_bias) as server:
        b = OpenAIBackend(server.base_url, model_dir, api_key_env=KEY_ENV)  # no ref: no local tokenizer
        probs = b.score_probs(CHATS[:2], prefixes)
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2
    bodies = [r["body"] for r in server.requests]
    for chat, prefix, p in zip(CHATS[:2], prefixes, probs):
        assert {"model": model_dir, "messages": [*chat, {"role": "assistant", "content": prefix}],
                "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20,
                "continue_final_message": True, "add_generation_prompt": False} in bodies
        # The same text as the completions path renders: chat template, generation prompt, prefix.
        prompt = hf.tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + prefix
        want = direct_digit_probs(hf, hf.tok(prompt)["input_ids"], digit_bias)
        assert p == pytest.approx(want, abs=1e-5) and want[3] > 0.1


def direct_choice_probs(hf, ids: list[int], bias: dict[int, float], choices: str, k: int = 20) -> list[float]:
    """As direct_digit_probs for single-letter choices: the top k of the biased logits after
    `ids`, each choice's probability summed over the tokens that decode to it."""
    with torch.inference_mode():
        logits = hf.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        logits[list(bias)] += torch.tensor(list(bias.values()))
        lp = torch.log_softmax(logits, -1)
    mass = [0.0] * len(choices)
    for t in lp.topk(k).indices.tolist():
        text = hf.tok.decode([t]).strip()
        if len(text) == 1 and text in choices:
            mass[choices.index(text)] += math.exp(float(lp[t]))
    return [m / sum(mass) for m in mass]


def test_choice_probs_through_both_endpoints(hf, model_dir):
    """The meta-judge's A/B after a forced verdict prefix: through the completions endpoint with
    the local tokenizer (which writes " A" as one token, so the prefix ends before the space), and
    through the chat endpoint without one (the prefix as sent)."""
    tok = hf.tok
    bias = {tok.convert_tokens_to_ids("\u0120A"): 12.0, tok.convert_tokens_to_ids("\u0120B"): 12.5,
            tok.convert_tokens_to_ids("A"): 11.0}
    prefixes = ["Both are careful.\nWinner: Judgement ", "Winner: Judgement "]
    with ChatServer(hf, model=model_dir, logit_bias=bias) as server:
        local = client(server, model_dir).choice_probs(CHATS[:2], prefixes, ["A", "B"])
        n_local = len(server.requests)
        remote = OpenAIBackend(server.base_url, model_dir, api_key_env=KEY_ENV).choice_probs(
            CHATS[:2], prefixes, ["A", "B"])
    assert [r["path"] for r in server.requests] == ["/v1/completions"] * n_local + ["/v1/chat/completions"] * 2
    prompts = {r["body"]["prompt"] for r in server.requests[:n_local]}
    for chat, prefix, p_local, p_remote in zip(CHATS[:2], prefixes, local, remote):
        spaced = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + prefix.rstrip(" ")
        assert spaced in prompts
        want = direct_choice_probs(hf, tok(spaced)["input_ids"], bias, "AB")
        assert p_local == pytest.approx(want, abs=1e-5) and 0.05 < want[0] < 0.95
        # The chat path sends the prefix with its space (the server renders the template).
        sent = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + prefix
        assert p_remote == pytest.approx(direct_choice_probs(hf, tok(sent)["input_ids"], bias, "AB"), abs=1e-5)
    with pytest.raises(ValueError, match="2 chats but 1 prefixes"):
        OpenAIBackend("http://127.0.0.1:9/v1", model_dir).choice_probs(CHATS[:2], prefixes[:1], ["A", "B"])


def test_server_without_logprobs_falls_back_with_one_warning(hf, model_dir, caplog):
    caplog.set_level(logging.WARNING, logger="srlm.engines.backends.openai")
    params = SamplingParams(n=2, max_new_tokens=8, stop_at_score=True, score_probs=True)
    with ChatServer(hf, model=model_dir, reply=REPLY, logprobs=False) as server:
        b = client(server, model_dir)
        out = b.generate(CHATS[:2], params, seed=0) + b.generate(CHATS[:1], params, seed=1)
        forced = b.score_probs(CHATS[:2], ["Good.\nScore: "] * 2)
        assert b.choice_probs(CHATS[:1], ["Winner: Judgement "], ["A", "B"]) == [None]
        no_tok = OpenAIBackend(server.base_url, model_dir).score_probs(CHATS[:1], ["Good.\nScore: "])
    assert [c.text for cs in out for c in cs] == ["Good.\nScore: 3"] * 6  # the judgments themselves are kept
    assert all(c.score_probs is None for cs in out for c in cs) and forced == [None, None] and no_tok == [None]
    assert server.requests[0]["body"]["logprobs"] is True  # asked for, ignored by the server
    warnings = [r.getMessage() for r in caplog.records if "no token probabilities" in r.getMessage()]
    assert warnings == [f"{server.base_url} returned no token probabilities (logprobs); judging falls back "
                        "to parsed scores (meta-judging to parsed verdicts)"] * 2  # once per backend instance


def test_stop_repetition_cuts_the_returned_text(hf, model_dir):
    loop = "I like it. I like it. I like it. I like it."
    with ChatServer(hf, model=model_dir, reply=loop, reply_finish_reason="length") as server:
        b = client(server, model_dir)
        cut = b.generate(CHATS[:1], SamplingParams(n=2, max_new_tokens=8, stop_repetition=3), seed=0)[0]
        off = b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=8), seed=0)[0]
    # The trigram "i like it." is seen a third time at word 6: cut before its second occurrence.
    assert [(c.text, c.finish_reason) for c in cut] == [("I like it.", "repetition")] * 2
    assert [(c.text, c.finish_reason) for c in off] == [(loop, "length")]
    # A score line before the loop: stop_at_score cuts first, nothing repeats in what is left.
    with ChatServer(hf, model=model_dir, reply="Good.\nScore: 4\nla la la la la", reply_finish_reason="length") as s:
        c = client(s, model_dir).generate(
            CHATS[:1], SamplingParams(n=1, max_new_tokens=8, stop_at_score=True, stop_repetition=1), seed=0)[0][0]
    assert (c.text, c.finish_reason) == ("Good.\nScore: 4", "stop")
    # A loop before the score line: the score is cut away, so no written score to read.
    with ChatServer(hf, model=model_dir, reply="bad bad bad bad\nScore: 2\n", reply_finish_reason="length") as s:
        c = client(s, model_dir).generate(
            CHATS[:1], SamplingParams(n=1, max_new_tokens=8, stop_at_score=True, stop_repetition=1, score_probs=True),
            seed=0)[0][0]
    assert (c.text, c.finish_reason, c.score_probs) == ("bad", "repetition", None)
