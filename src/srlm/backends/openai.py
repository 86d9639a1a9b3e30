"""Any OpenAI-compatible chat-completions server: `vllm serve`, llama.cpp's server, TGI.

Standard library only (urllib + json): one POST {base_url}/chat/completions per chat, sent
concurrently, results in input order. Optionally starts the server itself from
`backend.server_command` (its own process group, stopped by close()).

The API key is read from the environment variable named by `backend.api_key_env` at
request time and sent only as an `Authorization: Bearer` header; it is never logged or
written anywhere (error messages name the URL and status, never the headers).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from srlm import rubric
from srlm.backends.base import Chat, Completion, SamplingParams
from srlm.modeling import ModelRef

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_CONTEXT_WINDOW = 4096
RETRIES = 3  # retries after the first attempt, for connection errors and HTTP 429/5xx
TRANSIENT_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)


class OpenAIBackend:
    retry_backoff = 0.5  # seconds before the first retry; doubles each time
    stop_grace = 10.0  # seconds between SIGTERM and SIGKILL in close()

    def __init__(self, base_url: str, model: str, ref: ModelRef | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 600.0, server_command: str | None = None,
                 server_ready_timeout: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.ref = ref
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self._tok = None
        self._tok_tried = False
        self._tok_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._log_dir: str | None = None
        self._log_file = None
        if server_command:
            self._start_server(server_command, server_ready_timeout)

    @classmethod
    def from_config(cls, cfg, ref: ModelRef | str) -> "OpenAIBackend":
        if isinstance(ref, str):
            ref = ModelRef(ref)
        b = cfg.backend
        base_url = b.base_url or (DEFAULT_BASE_URL if b.server_command else None)
        if not base_url:
            raise ValueError("backend.name=openai needs backend.base_url (e.g. http://127.0.0.1:8000/v1) "
                             "or backend.server_command")
        return cls(base_url, b.served_model or str(ref), ref=ref, api_key_env=b.api_key_env,
                   concurrency=b.concurrency, timeout=b.timeout, server_command=b.server_command,
                   server_ready_timeout=b.server_ready_timeout)

    # -- HTTP ---------------------------------------------------------------------------

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _request(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> dict:
        """One call with retries on connection errors and HTTP 429/5xx; returns the decoded JSON."""
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(RETRIES + 1):
            req = urllib.request.Request(url, data=data, headers=self._headers(), method=method)
            try:
                with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw)
                except ValueError:
                    raise RuntimeError(f"{method} {url}: server sent invalid JSON: {raw[:200]!r}") from None
            except urllib.error.HTTPError as e:
                status, message = e.code, _error_message(e)
                if (status == 429 or status >= 500) and attempt < RETRIES:
                    wait = _retry_after(e, self.retry_backoff * 2 ** attempt)
                    log.warning("%s %s: HTTP %d (%s); retrying in %.1fs", method, url, status, message, wait)
                    time.sleep(wait)
                    continue
                raise RuntimeError(f"{method} {url} failed: HTTP {status}: {message}") from None
            except TRANSIENT_ERRORS as e:
                if attempt < RETRIES:
                    wait = self.retry_backoff * 2 ** attempt
                    log.warning("%s %s: %s; retrying in %.1fs", method, url, _reason(e), wait)
                    time.sleep(wait)
                    continue
                raise RuntimeError(f"{method} {url} failed after {RETRIES + 1} attempts: {_reason(e)}") from None
        raise AssertionError("unreachable")

    # -- Backend interface --------------------------------------------------------------

    def generate(self, chats: list[Chat], params: SamplingParams, seed: int) -> list[list[Completion]]:
        if not chats:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(chats)))
        try:
            futures = [pool.submit(self._complete, chat, params, seed + i * params.n) for i, chat in enumerate(chats)]
            results = [f.result() for f in futures]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results

    def _complete(self, chat: Chat, params: SamplingParams, seed: int) -> list[Completion]:
        """params.n completions for one chat. Sample k is drawn with seed + k, so a server that
        ignores `n` (and is asked again for the rest) still gives n different samples."""
        out: list[Completion] = []
        while len(out) < params.n:
            want = params.n - len(out)
            body = {"model": self.model, "messages": chat, "n": want, "temperature": params.temperature,
                    "top_p": params.top_p, "max_tokens": params.max_new_tokens, "seed": seed + len(out)}
            resp = self._request("POST", "/chat/completions", body)
            choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))[:want]
            if not choices:
                raise RuntimeError(f"POST {self.base_url}/chat/completions: response has no choices")
            out += self._to_completions(choices, resp.get("usage"), params)
        return out

    def _to_completions(self, choices: list[dict], usage: dict | None, params: SamplingParams) -> list[Completion]:
        texts = [((c.get("message") or {}).get("content") or "") for c in choices]
        used = (usage or {}).get("completion_tokens")
        # usage.completion_tokens is the total over all choices: exact for one choice; for
        # several, count with the local tokenizer, else split the total by text length.
        if isinstance(used, int) and len(choices) == 1:
            counts = [used]
        elif isinstance(used, int) and self._tokenizer() is None:
            total = sum(len(t) for t in texts) or 1
            counts = [round(used * len(t) / total) for t in texts]
        else:
            counts = [self._count_text_tokens(t) for t in texts]
        outs = []
        for c, text, n in zip(choices, texts, counts):
            reason = "length" if c.get("finish_reason") == "length" else "stop"
            if params.stop_at_score and rubric.score_line_complete(text):
                text, reason = rubric.truncate_after_score(text), "stop"  # as if stopped at the score line
            outs.append(Completion(text=text, num_tokens=n, finish_reason=reason))
        return outs

    def _tokenizer(self):
        """The model directory's tokenizer if it loads locally, else None (loaded once)."""
        with self._tok_lock:
            if not self._tok_tried:
                self._tok_tried = True
                if self.ref is not None and os.path.isdir(self.ref.path):
                    try:
                        from srlm.modeling import load_tokenizer

                        self._tok = load_tokenizer(self.ref)
                    except Exception as e:  # a remote-only model: estimate instead
                        log.info("%s: no local tokenizer (%s); estimating token counts", self.ref, e)
            return self._tok

    def _count_text_tokens(self, text: str) -> int:
        tok = self._tokenizer()
        if tok is None:
            return max(1, len(text) // 4) if text else 0
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def count_prompt_tokens(self, chats: list[Chat]) -> list[int]:
        tok = self._tokenizer()
        if tok is None:
            return [sum(len(m.get("content") or "") for m in chat) // 4 for chat in chats]
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        return [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]

    @property
    def context_window(self) -> int:
        if self.ref is None:
            return DEFAULT_CONTEXT_WINDOW
        try:
            with open(os.path.join(self.ref.path, "config.json"), encoding="utf-8") as f:
                conf = json.load(f)
        except (OSError, ValueError):
            return DEFAULT_CONTEXT_WINDOW
        value = conf.get("max_position_embeddings") or (conf.get("text_config") or {}).get("max_position_embeddings")
        return int(value) if value else DEFAULT_CONTEXT_WINDOW

    # -- server lifecycle ---------------------------------------------------------------

    def _start_server(self, template: str, ready_timeout: float) -> None:
        if self._healthy(timeout=2.0):
            raise RuntimeError(f"{self.base_url} already answers; stop that server or unset backend.server_command")
        model_dir = self.ref.path if self.ref is not None else self.model
        command = template.replace("{model}", shlex.quote(model_dir))
        if "{port}" in command:
            port = urllib.parse.urlsplit(self.base_url).port
            if port is None:
                raise ValueError(f"backend.server_command uses {{port}} but backend.base_url {self.base_url} has no port")
            command = command.replace("{port}", str(port))
        self._log_dir = tempfile.mkdtemp(prefix="srlm-server-")
        log_path = os.path.join(self._log_dir, "server.log")
        self._log_file = open(log_path, "wb")
        log.info("starting server: %s (log: %s)", self._redact(command), log_path)
        try:
            self._proc = subprocess.Popen(shlex.split(command), stdin=subprocess.DEVNULL, stdout=self._log_file,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            self._log_file.close()
            self._log_file = None
            raise RuntimeError(f"cannot start server {self._redact(command)!r}: {e}") from None
        try:
            self._wait_ready(command, log_path, ready_timeout)
        except BaseException:  # not ready, or interrupted while waiting: leave no server behind
            self._stop_server()
            raise

    def _wait_ready(self, command: str, log_path: str, ready_timeout: float) -> None:
        deadline = time.monotonic() + ready_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(f"server {self._redact(command)!r} exited with code {code} before it was ready; "
                                   f"last lines of {log_path}:\n{self._redact(_tail(log_path))}")
            if self._healthy(timeout=min(5.0, max(0.5, deadline - time.monotonic()))):
                log.info("server ready at %s (pid %d)", self.base_url, self._proc.pid)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self._redact(command)!r} not ready at {self.base_url}/models after "
                                   f"{ready_timeout:.0f}s; last lines of {log_path}:\n{self._redact(_tail(log_path))}")
            time.sleep(0.25)

    def _healthy(self, timeout: float) -> bool:
        req = urllib.request.Request(f"{self.base_url}/models", headers=self._headers(), method="GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.HTTPError, *TRANSIENT_ERRORS, OSError):
            return False

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text

    def _stop_server(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the server leads its own process group
            _killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_grace
            try:
                proc.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                pass
            # Workers the server spawned share its group: give them the rest of the grace period.
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(pgid):
                log.warning("server process group %d ignored SIGTERM; sending SIGKILL", pgid)
                _killpg(pgid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        """Stop the server this backend started (if any); nothing to do for an external server."""
        self._stop_server()
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    def __enter__(self) -> "OpenAIBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_proc", None) is not None:
            try:
                self.close()
            except Exception:
                pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _error_message(e: urllib.error.HTTPError) -> str:
    """The server's own message: OpenAI {"error": {"message"}}, TGI {"error": "..."}, FastAPI {"detail"}."""
    try:
        raw = e.read().decode("utf-8", "replace")
    except Exception:
        raw = ""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.strip()[:500] or str(e.reason)
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:500]
    return raw.strip()[:500]


def _retry_after(e: urllib.error.HTTPError, default: float) -> float:
    try:
        return min(30.0, max(0.0, float(e.headers.get("Retry-After"))))
    except (TypeError, ValueError):
        return default


def _reason(e: BaseException) -> str:
    return str(getattr(e, "reason", None) or e) or type(e).__name__


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
