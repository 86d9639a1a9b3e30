"""A small OpenAI-compatible chat-completions server for tests, backed by a real Backend.

Speaks the wire format of `vllm serve` / the OpenAI API: POST /v1/chat/completions and
GET /v1/models, errors as {"error": {"message", "type", "param", "code"}}. Generations come
from the wrapped backend (an HFBackend over a tiny model in the tests), so responses are
real model output. Knobs for failure modes: `honour_n=False` (a server that ignores n),
`fail_next` (statuses to answer the next requests with), `reply` (fixed text, with
`reply_finish_reason`).

    server = ChatServer(backend, model="m").start()
    ... OpenAIBackend(server.base_url, "m") ...
    server.stop()
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from srlm.backends.base import SamplingParams


class ChatServer:
    def __init__(self, backend, model: str | None = None, honour_n: bool = True, reply: str | None = None,
                 reply_finish_reason: str = "stop", host: str = "127.0.0.1", port: int = 0):
        self.backend = backend
        self.model = model  # None: accept any model name
        self.honour_n = honour_n
        self.reply = reply
        self.reply_finish_reason = reply_finish_reason
        self.fail_next: list[int] = []
        self.requests: list[dict] = []  # {method, path, headers, body} of every request received
        self._lock = threading.Lock()  # the backend decodes one request at a time
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.state = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ChatServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="chat-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- endpoints ------------------------------------------------------------------------

    def models(self) -> tuple[int, dict]:
        name = self.model or "default"
        return 200, {"object": "list",
                     "data": [{"id": name, "object": "model", "created": int(time.time()), "owned_by": "srlm-tests"}]}

    def chat_completions(self, body) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        if self.model is not None and body.get("model") != self.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            return _error(400, "messages must be a non-empty list of {role, content}", param="messages")
        n = body.get("n", 1)
        temperature = body.get("temperature", 1.0)
        top_p = body.get("top_p", 1.0)
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(n, int) or n < 1:
            return _error(400, f"n must be at least 1, got {n}.", param="n")
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            return _error(400, f"temperature must be in [0, 2], got {temperature}.", param="temperature")
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            return _error(400, f"top_p must be in (0, 1], got {top_p}.", param="top_p")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens")
        if not self.honour_n:
            n = 1
        seed = body.get("seed")
        params = SamplingParams(n=n, temperature=float(temperature), top_p=float(top_p), max_new_tokens=max_tokens)
        with self._lock:
            prompt_tokens = self.backend.count_prompt_tokens([messages])[0]
            completions = self.backend.generate([messages], params, seed if isinstance(seed, int) else 0)[0]
        choices, used = [], 0
        for i, c in enumerate(completions):
            text, reason, ntok = c.text, c.finish_reason, c.num_tokens
            if self.reply is not None:
                text, reason, ntok = self.reply, self.reply_finish_reason, max(1, len(self.reply) // 4)
            used += ntok
            choices.append({"index": i, "message": {"role": "assistant", "content": text},
                            "logprobs": None, "finish_reason": reason})
        return 200, {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model"), "choices": choices,
                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": used,
                               "total_tokens": prompt_tokens + used}}


def _error(status: int, message: str, type_: str = "BadRequestError", param: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": type_, "param": param, "code": status}}


class _Handler(BaseHTTPRequestHandler):
    server_version = "srlm-test-openai/1.0"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body) -> bool:
        """Record the request; answer it with a queued failure status if one is pending."""
        state: ChatServer = self.server.state
        with state._lock:
            state.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "body": body})
            status = state.fail_next.pop(0) if state.fail_next else None
        if status is not None:
            self._send(*_error(status, f"injected failure {status}", "ServiceUnavailableError"))
            return True
        return False

    def do_GET(self):
        if self.path.rstrip("/") != "/v1/models":
            self._send(*_error(404, f"no route {self.path}", "NotFoundError"))
            return
        if not self._record(None):
            self._send(*self.server.state.models())

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(*_error(400, "request body is not valid JSON"))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(*_error(404, f"no route {self.path}", "NotFoundError"))
            return
        if not self._record(body):
            self._send(*self.server.state.chat_completions(body))
