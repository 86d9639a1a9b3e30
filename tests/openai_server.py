"""A small OpenAI-compatible server for tests, backed by a real HFBackend.

Speaks the wire format of `vllm serve` / the OpenAI API:
- POST /v1/chat/completions, with `logprobs`/`top_logprobs` (choices[].logprobs.content[] of
  {token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}) and vLLM's
  `continue_final_message`/`add_generation_prompt` (the final assistant message is continued);
- POST /v1/completions, the legacy endpoint (prompt text or token ids; `logprobs: k` gives
  choices[].logprobs = {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset},
  each dict holding the top k and the chosen token, as vLLM sends it);
- GET /v1/models; errors as {"error": {"message", "type", "param", "code"}}.
Texts are real generations of the wrapped backend's model (a tiny model in the tests), and
token probabilities are that model's own: the log-softmax of its logits, over the returned
text fed back token by token (as a server reports the probabilities of what it sampled).
Token texts are each token decoded alone, as vLLM writes them.

Knobs for failure modes and fixtures: `honour_n=False` (a server that ignores n),
`fail_next` (statuses to answer the next requests with, carrying a short `retry-after-ms` as
the OpenAI API does on 429), `reply` (fixed text, with `reply_finish_reason`),
`logprobs=False` (a server that ignores the logprobs parameters and sends none, like llama.cpp
builds without them), `logit_bias` ({token id: added logit}, a model that favours some tokens:
applied wherever this server reads probabilities or decodes by itself).

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

import torch

from srlm.engines.backends.base import SamplingParams

MAX_LOGPROBS = 20  # vLLM's default --max-logprobs; also the OpenAI API's top_logprobs limit


class ChatServer:
    def __init__(self, backend, model: str | None = None, honour_n: bool = True, reply: str | None = None,
                 reply_finish_reason: str = "stop", logprobs: bool = True, logit_bias: dict[int, float] | None = None,
                 retry_after_ms: int = 10, host: str = "127.0.0.1", port: int = 0):
        self.backend = backend
        self.model = model  # None: accept any model name
        self.honour_n = honour_n
        self.reply = reply
        self.reply_finish_reason = reply_finish_reason
        self.logprobs = logprobs
        self.logit_bias = dict(logit_bias or {})
        self.retry_after_ms = retry_after_ms
        self.fail_next: list[int] = []
        # {method, path, headers, body} of every request; headers: the parsed message, whose names
        # match in any case (the openai library sends `authorization`)
        self.requests: list[dict] = []
        self._lock = threading.Lock()  # the backend decodes one request at a time
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.state = self
        self._thread: threading.Thread | None = None

    @property
    def tok(self):
        return self.backend.tok

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

    # -- the model's token probabilities ----------------------------------------------------

    @torch.inference_mode()
    def log_probs(self, ids: list[int]) -> torch.Tensor:
        """[len(ids), vocab]: log-probabilities of the next token after each prefix of `ids`."""
        model = self.backend.model
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0].float().cpu()
        for t, bias in self.logit_bias.items():
            logits[:, t] += bias
        return torch.log_softmax(logits, dim=-1)

    def teacher_forced(self, prompt_ids: list[int], ids: list[int]) -> list[torch.Tensor]:
        """The distribution each token of `ids` was drawn from, after the prompt."""
        if not ids:
            return []
        rows = self.log_probs(prompt_ids + ids)
        return list(rows[len(prompt_ids) - 1:len(prompt_ids) - 1 + len(ids)])

    def decode(self, prompt_ids: list[int], max_tokens: int, temperature: float, seed: int):
        """Decode by itself (greedy at temperature 0): (token ids, their distributions, finish reason)."""
        gen = torch.Generator().manual_seed(seed)
        ids: list[int] = []
        rows: list[torch.Tensor] = []
        for _ in range(max_tokens):
            row = self.log_probs(prompt_ids + ids)[-1]
            if temperature == 0:
                t = int(row.argmax())
            else:
                t = int(torch.multinomial(torch.softmax(row / temperature, dim=-1), 1, generator=gen))
            if t in self.backend.eos_ids:
                return ids, rows, "stop"
            ids.append(t)
            rows.append(row)
        return ids, rows, "length"

    def _token(self, t: int, logprob: float) -> dict:
        text = self.tok.decode([t])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def chat_logprobs(self, ids: list[int], rows: list[torch.Tensor], k: int) -> dict:
        content = []
        for t, row in zip(ids, rows):
            top = row.topk(k) if k else None
            alts = [self._token(int(a), float(v)) for v, a in zip(top.values, top.indices)] if k else []
            content.append({**self._token(t, float(row[t])), "top_logprobs": alts})
        return {"content": content}

    def completion_logprobs(self, ids: list[int], rows: list[torch.Tensor], k: int) -> dict:
        tokens, token_logprobs, tops, offsets, pos = [], [], [], [], 0
        for t, row in zip(ids, rows):
            text = self.tok.decode([t])
            top = row.topk(k)
            alts = {self.tok.decode([int(a)]): float(v) for v, a in zip(top.values, top.indices)}
            alts[text] = float(row[t])  # vLLM adds the chosen token to the top k
            tokens.append(text)
            token_logprobs.append(float(row[t]))
            tops.append(alts)
            offsets.append(pos)
            pos += len(text)
        return {"text_offset": offsets, "token_logprobs": token_logprobs, "tokens": tokens, "top_logprobs": tops}

    # -- endpoints ------------------------------------------------------------------------

    def models(self) -> tuple[int, dict]:
        name = self.model or "default"
        return 200, {"object": "list",
                     "data": [{"id": name, "object": "model", "created": int(time.time()), "owned_by": "srlm-tests"}]}

    def _check_sampling(self, body: dict) -> tuple[int, dict] | None:
        if self.model is not None and body.get("model") != self.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError", "model")
        n, temperature = body.get("n", 1), body.get("temperature", 1.0)
        top_p, max_tokens = body.get("top_p", 1.0), body.get("max_tokens", 16)
        if not isinstance(n, int) or n < 1:
            return _error(400, f"n must be at least 1, got {n}.", param="n")
        if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            return _error(400, f"temperature must be in [0, 2], got {temperature}.", param="temperature")
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            return _error(400, f"top_p must be in (0, 1], got {top_p}.", param="top_p")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _error(400, f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens")
        return None

    def chat_completions(self, body) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            return _error(400, "messages must be a non-empty list of {role, content}", param="messages")
        bad = self._check_sampling(body)
        if bad:
            return bad
        want_logprobs, k = body.get("logprobs", False), body.get("top_logprobs")
        if k is not None and (not isinstance(k, int) or not 0 <= k <= MAX_LOGPROBS):
            return _error(400, f"top_logprobs must be between 0 and {MAX_LOGPROBS}, got {k}.", param="top_logprobs")
        if k is not None and not want_logprobs:
            return _error(400, "when using `top_logprobs`, `logprobs` must be set to true.", param="top_logprobs")
        cont, gen_prompt = body.get("continue_final_message", False), body.get("add_generation_prompt", True)
        if cont and gen_prompt:
            return _error(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
        if cont and messages[-1]["role"] != "assistant":
            return _error(400, "continue_final_message needs a final assistant message.", param="messages")
        n = body.get("n", 1) if self.honour_n else 1
        seed = body.get("seed") if isinstance(body.get("seed"), int) else 0
        temperature, max_tokens = float(body.get("temperature", 1.0)), body.get("max_tokens", 16)
        want_logprobs = bool(want_logprobs) and self.logprobs
        outs = []  # (text, finish reason, token ids, their distributions or None, tokens counted)
        with self._lock:
            if cont:
                text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                                    continue_final_message=True)
                prompt_ids = self.tok(text, add_special_tokens=False)["input_ids"]
                for i in range(n):
                    ids, rows, reason = self.decode(prompt_ids, max_tokens, temperature, seed + i)
                    outs.append((self.tok.decode(ids, skip_special_tokens=True), reason, ids,
                                 rows if want_logprobs else None, len(ids)))
            else:
                prompt_ids = self.backend.encode([messages])[0]
                params = SamplingParams(n=n, temperature=temperature, top_p=float(body.get("top_p", 1.0)),
                                        max_new_tokens=max_tokens)
                for c in self.backend.generate([messages], params, seed)[0]:
                    if self.reply is not None:
                        text, reason = self.reply, self.reply_finish_reason
                    else:
                        text, reason = c.text, c.finish_reason
                    # The text's tokens (the backend does not hand out the ids it sampled).
                    ids = self.tok(text, add_special_tokens=False)["input_ids"]
                    ntok = len(ids) if self.reply is not None else c.num_tokens
                    rows = self.teacher_forced(prompt_ids, ids) if want_logprobs else None
                    outs.append((text, reason, ids, rows, ntok))
            choices = [{"index": i, "message": {"role": "assistant", "content": text},
                        "logprobs": self.chat_logprobs(ids, rows, k or 0) if rows is not None else None,
                        "finish_reason": reason}
                       for i, (text, reason, ids, rows, _) in enumerate(outs)]
        used = sum(o[4] for o in outs)
        return 200, {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                     "model": body.get("model"), "choices": choices,
                     "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": used,
                               "total_tokens": len(prompt_ids) + used}}

    def completions(self, body) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        bad = self._check_sampling(body)
        if bad:
            return bad
        prompt, k = body.get("prompt"), body.get("logprobs")
        if not (isinstance(prompt, str) and prompt) and not (
                isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
            return _error(400, "prompt must be a non-empty string or list of token ids", param="prompt")
        if k is not None and (not isinstance(k, int) or not 0 <= k <= MAX_LOGPROBS):
            return _error(400, f"logprobs must be between 0 and {MAX_LOGPROBS}, got {k}.", param="logprobs")
        if body.get("echo") or body.get("n", 1) != 1:
            return _error(400, "this test server supports neither echo nor n > 1")
        with self._lock:
            # Text prompts are tokenized with the tokenizer's special tokens, as vLLM does.
            prompt_ids = self.tok(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
            seed = body.get("seed") if isinstance(body.get("seed"), int) else 0
            ids, rows, reason = self.decode(prompt_ids, body.get("max_tokens", 16),
                                            float(body.get("temperature", 1.0)), seed)
            logprobs = self.completion_logprobs(ids, rows, k) if k is not None and self.logprobs else None
            text = self.tok.decode(ids, skip_special_tokens=True)
        return 200, {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                     "model": body.get("model"),
                     "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason,
                                  "stop_reason": None}],
                     "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(ids),
                               "total_tokens": len(prompt_ids) + len(ids)}}


def _error(status: int, message: str, type_: str = "BadRequestError", param: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": type_, "param": param, "code": status}}


class _Handler(BaseHTTPRequestHandler):
    server_version = "srlm-test-openai/1.0"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body) -> bool:
        """Record the request; answer it with a queued failure status if one is pending."""
        state: ChatServer = self.server.state
        with state._lock:
            state.requests.append({"method": self.command, "path": self.path, "headers": self.headers,
                                   "body": body})
            status = state.fail_next.pop(0) if state.fail_next else None
        if status is not None:
            self._send(*_error(status, f"injected failure {status}", "ServiceUnavailableError"),
                       headers={"retry-after-ms": str(state.retry_after_ms)})
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
        route = {"/v1/chat/completions": self.server.state.chat_completions,
                 "/v1/completions": self.server.state.completions}.get(self.path.rstrip("/"))
        if route is None:
            self._send(*_error(404, f"no route {self.path}", "NotFoundError"))
            return
        if not self._record(body):
            self._send(*route(body))
