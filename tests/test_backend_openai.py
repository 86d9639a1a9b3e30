"""OpenAIBackend against a real local chat-completions server (tests/openai_server.py) whose
answers are real generations of a tiny model (HFBackend): no client library is mocked."""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
import tempfile
import time
import urllib.request

import pytest
import torch

from openai_server import ChatServer
from tiny import make_tiny_model
from srlm.backends import make_backend
from srlm.backends.base import SamplingParams
from srlm.backends.hf import HFBackend
from srlm.backends.openai import OpenAIBackend
from srlm.config import Config
from srlm.modeling import ModelRef, load_model, load_tokenizer

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
    b.retry_backoff = 0.01
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


def test_api_key_sent_only_when_set_and_never_written(server, model_dir, monkeypatch, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # anything written to temp lands in tmp_path
    key = "sk-srlm-test-" + os.urandom(8).hex()
    monkeypatch.delenv(KEY_ENV, raising=False)
    b = client(server, model_dir)
    b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=3), seed=0)
    assert "Authorization" not in server.requests[-1]["headers"]

    monkeypatch.setenv(KEY_ENV, key)  # read at request time, not at construction
    b.generate(CHATS[:2], SamplingParams(n=1, max_new_tokens=3), seed=0)
    assert [r["headers"].get("Authorization") for r in server.requests[-2:]] == [f"Bearer {key}"] * 2
    server.fail_next = [503, 400]  # a retry warning and an error message: neither may carry the key
    with pytest.raises(RuntimeError) as err:
        b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=3), seed=0)
    assert key not in str(err.value)
    assert "503" in caplog.text

    monkeypatch.delenv(KEY_ENV)
    b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=3), seed=0)
    assert "Authorization" not in server.requests[-1]["headers"]
    b.close()
    out = capsys.readouterr()
    assert key not in caplog.text and key not in out.out and key not in out.err
    assert files_containing(tmp_path, key) == []


def test_transient_503_is_retried(server, model_dir, caplog):
    b = client(server, model_dir)
    server.fail_next = [503]
    out = b.generate(CHATS[:1], SamplingParams(n=2, max_new_tokens=4), seed=5)
    assert len(out[0]) == 2 and all(isinstance(c.text, str) for c in out[0])
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2
    assert "HTTP 503" in caplog.text


def test_retries_give_up_after_three(server, model_dir):
    b = client(server, model_dir)
    server.fail_next = [502, 503, 429, 500]
    with pytest.raises(RuntimeError, match=r"HTTP 500: injected failure 500"):
        b.generate(CHATS[:1], SamplingParams(n=1, max_new_tokens=4), seed=5)
    assert len(server.requests) == 4


def test_connection_refused_is_retried_then_reported():
    b = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=5)
    b.retry_backoff = 0.01
    with pytest.raises(RuntimeError, match="failed after 4 attempts"):
        b.generate(CHATS[:1], SamplingParams(n=1), seed=0)


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
