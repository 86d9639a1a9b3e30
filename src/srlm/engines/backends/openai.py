"""Any OpenAI-compatible server: `vllm serve`, llama.cpp's server, TGI, or the OpenAI API.

Requests go through the `openai` client library (its retries with backoff on connection
errors, timeouts and HTTP 408/409/429/5xx, and its error types, mapped here to one-line
RuntimeErrors naming the URL and the server's own message). Chats are sent concurrently
(`backend.concurrency` threads), results in input order. Optionally starts the server itself
from `backend.server_command` (its own process group, stopped by close()).

Judging in `expected` mode (base.py, srlm/loop/judge.py) reads token probabilities: with
SamplingParams.score_probs a chat request asks for `logprobs` with the top 20 alternatives and
the digit distribution is read where the judgment wrote its score digit; `score_probs()`
reads it after a forced score prefix (and `choice_probs()` the meta-judge's A/B after a forced
verdict prefix) through the legacy completions endpoint (prompt rendered with the local
tokenizer's chat template) or, without a local tokenizer, through the chat endpoint continuing
the final assistant message (vLLM's `continue_final_message`). A server
that returns no token probabilities gets None for them and one warning per backend.

The API key is read from the environment variable named by `backend.api_key_env` at
request time and sent only as an `Authorization: Bearer` header (a placeholder when unset:
local servers ignore it); it is never logged or written anywhere.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import openai

from srlm.data import repetition, rubric
from srlm.engines.backends import base, scoring
from srlm.engines.backends.base import Chat, Completion, SamplingParams
from srlm.engines.modeling import ModelRef

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_CONTEXT_WINDOW = 4096
RETRIES = 3  # the library's retries after the first attempt (its default is 2)
TOP_LOGPROBS = 20  # alternatives per token: the most the OpenAI API and vLLM's default allow
NO_KEY = "EMPTY"  # sent when api_key_env is unset: local servers ignore the key, the library needs one
T = TypeVar("T")


class OpenAIBackend:
    stop_grace = 10.0  # seconds between SIGTERM and SIGKILL in close()

    def __init__(self, base_url: str, model: str, ref: ModelRef | None = None, api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout: float = 600.0, server_command: str | None = None,
                 server_ready_timeout: float = 600.0, max_retries: int = RETRIES):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.ref = ref
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        # A callable key: the library calls it for every request, so a key set or changed
        # after construction is used, and nothing but the header ever holds it.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout,
                                    max_retries=self.max_retries)
        self._tok = None
        self._digits: scoring.ChoiceTokens | None = None
        self._tok_bos = False  # the tokenizer adds BOS itself when it encodes (so a server does too)
        self._tok_tried = False
        self._tok_lock = threading.Lock()
        self._warn_lock = threading.Lock()
        self._warned_no_logprobs = False
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

    # -- requests -----------------------------------------------------------------------

    def _api_key(self) -> str:
        return (os.environ.get(self.api_key_env) if self.api_key_env else None) or NO_KEY

    def _call(self, path: str, create: Callable[..., T], **kwargs) -> T:
        """One library call (with the library's retries); its errors as one-line RuntimeErrors."""
        url = f"{self.base_url}{path}"
        try:
            return create(**kwargs)
        except openai.APIStatusError as e:
            raise RuntimeError(f"POST {url} failed: HTTP {e.status_code}: {_server_message(e)}") from None
        except openai.APIConnectionError as e:  # timeouts included
            cause = f" ({e.__cause__})" if e.__cause__ is not None and str(e.__cause__) else ""
            raise RuntimeError(f"POST {url} failed after {self.max_retries + 1} attempts: "
                               f"{e.message}{cause}") from None
        except openai.OpenAIError as e:  # e.g. a response that is not the expected JSON
            raise RuntimeError(f"POST {url} failed: {e}") from None

    def _map(self, fn: Callable[..., T], items: Sequence[tuple]) -> list[T]:
        """fn(*item) for every item on up to `concurrency` threads; results in input order."""
        if not items:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)))
        try:
            futures = [pool.submit(fn, *item) for item in items]
            results = [f.result() for f in futures]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results

    def _warn_no_logprobs(self) -> None:
        with self._warn_lock:
            if self._warned_no_logprobs:
                return
            self._warned_no_logprobs = True
        log.warning("%s returned no token probabilities (logprobs); judging falls back to parsed scores "
                    "(meta-judging to parsed verdicts)", self.base_url)

    # -- Backend interface --------------------------------------------------------------

    def generate(self, chats: list[Chat], params: SamplingParams, seed: int) -> list[list[Completion]]:
        return self._map(self._complete, [(chat, params, seed + i * params.n) for i, chat in enumerate(chats)])

    def _complete(self, chat: Chat, params: SamplingParams, seed: int) -> list[Completion]:
        """params.n completions for one chat. Sample k is drawn with seed + k, so a server that
        ignores `n` (and is asked again for the rest) still gives n different samples."""
        out: list[Completion] = []
        extra = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if params.score_probs else {}
        while len(out) < params.n:
            want = params.n - len(out)
            resp = self._call("/chat/completions", self.client.chat.completions.create, model=self.model,
                              messages=chat, n=want, temperature=params.temperature, top_p=params.top_p,
                              max_tokens=params.max_new_tokens, seed=seed + len(out), **extra)
            choices = sorted(resp.choices or [], key=lambda c: c.index or 0)[:want]
            if not choices:
                raise RuntimeError(f"POST {self.base_url}/chat/completions: response has no choices")
            out += self._to_completions(choices, resp.usage, params)
        return out

    def _to_completions(self, choices: list, usage, params: SamplingParams) -> list[Completion]:
        texts = [(c.message.content if c.message is not None else None) or "" for c in choices]
        tokens = [_content_logprobs(c) for c in choices]  # per choice: its tokens, or None
        used = getattr(usage, "completion_tokens", None)
        # usage.completion_tokens is the total over all choices: exact for one choice; for
        # several, a choice's own token list when logprobs came back, else the local
        # tokenizer, else the total split by text length.
        if isinstance(used, int) and len(choices) == 1:
            counts = [used]
        elif all(t is not None for t in tokens):
            counts = [len(t) for t in tokens]
        elif isinstance(used, int) and self._tokenizer() is None:
            total = sum(len(t) for t in texts) or 1
            counts = [round(used * len(t) / total) for t in texts]
        else:
            counts = [self._count_text_tokens(t) for t in texts]
        outs = []
        for c, raw, toks, n in zip(choices, texts, tokens, counts):
            text, reason = raw, ("length" if c.finish_reason == "length" else "stop")
            if params.stop_at_score and rubric.score_line_complete(text):
                text, reason = rubric.truncate_after_score(text), "stop"  # as if stopped at the score line
            if params.stop_repetition > 0:
                # The server cannot stop early: cut the loop out of what it returned.
                text, cut = repetition.cut_repeated_text(text, params.stop_repetition)
                if cut:
                    reason = "repetition"
            probs = None
            if params.score_probs:
                if toks is None:
                    self._warn_no_logprobs()
                else:
                    probs = _written_score_probs(toks, raw, text, ended=c.finish_reason == "stop")
            outs.append(Completion(text=text, num_tokens=n, finish_reason=reason, score_probs=probs))
        return outs

    def score_probs(self, chats: list[Chat], prefixes: list[str]) -> list[list[float] | None]:
        """The digit distribution after each chat's assistant turn begun with prefixes[i]: one
        greedy token with its top-20 alternatives."""
        return self._prefix_distributions(chats, prefixes, base.SCORE_DIGITS)

    def choice_probs(self, chats: list[Chat], prefixes: list[str], choices: list[str]) -> list[list[float] | None]:
        """As score_probs over single-token `choices` (the meta-judge's "A", "B"); None where the
        server sent no token probabilities or no choice is among the top 20."""
        return self._prefix_distributions(chats, prefixes, tuple(choices))

    def _prefix_distributions(self, chats: list[Chat], prefixes: list[str],
                              choices: Sequence[str]) -> list[list[float] | None]:
        if len(chats) != len(prefixes):
            raise ValueError(f"{len(chats)} chats but {len(prefixes)} prefixes")
        tok = self._tokenizer()
        if tok is not None:
            spaced = (self._digits if tuple(choices) == base.SCORE_DIGITS
                      else scoring.choice_token_ids(tok, choices)).spaced
            read = functools.partial(self._prefix_top_completions, spaced=spaced)
        else:
            read = self._prefix_top_chat
        return [None if e is None else scoring.choice_distribution(e, choices)
                for e in self._map(read, list(zip(chats, prefixes)))]

    def _prefix_top_completions(self, chat: Chat, prefix: str, spaced: bool) -> list[tuple[str, float]] | None:
        """Legacy completions endpoint: the prompt is the chat template rendered here, so the
        assistant turn can be begun with any text on any server that has the endpoint. The next
        token's (token, logprob) alternatives, or None when the server sent none."""
        tok = self._tokenizer()
        if spaced:
            # This tokenizer writes " 3" (" A") as one token: end the prefix before the space so
            # that the digit (with its space) is the next token, as when the model writes it.
            prefix = prefix.rstrip(" ")
        prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + prefix
        if self._tok_bos and prompt.startswith(tok.bos_token):
            prompt = prompt[len(tok.bos_token):]  # the server tokenizes with special tokens: no second BOS
        resp = self._call("/completions", self.client.completions.create, model=self.model, prompt=prompt,
                          max_tokens=1, temperature=0, logprobs=TOP_LOGPROBS)
        lp = resp.choices[0].logprobs if resp.choices else None
        tops = lp.top_logprobs if lp is not None else None
        if not tops or tops[0] is None:
            self._warn_no_logprobs()
            return None
        entries = list(tops[0].items())
        if lp.tokens and lp.token_logprobs and lp.tokens[0] not in tops[0] and lp.token_logprobs[0] is not None:
            entries.append((lp.tokens[0], lp.token_logprobs[0]))
        return entries

    def _prefix_top_chat(self, chat: Chat, prefix: str) -> list[tuple[str, float]] | None:
        """Chat endpoint, the prefix as a final assistant message that the server continues
        (vLLM's continue_final_message; the template is rendered by the server)."""
        messages = [*chat, {"role": "assistant", "content": prefix}]
        resp = self._call("/chat/completions", self.client.chat.completions.create, model=self.model,
                          messages=messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=TOP_LOGPROBS,
                          extra_body={"continue_final_message": True, "add_generation_prompt": False})
        toks = _content_logprobs(resp.choices[0]) if resp.choices else None
        if not toks:
            self._warn_no_logprobs()
            return None
        return _alternatives(toks[0])

    def _tokenizer(self):
        """The model directory's tokenizer if it loads locally, else None (loaded once)."""
        with self._tok_lock:
            if not self._tok_tried:
                self._tok_tried = True
                if self.ref is not None and os.path.isdir(self.ref.path):
                    try:
                        from srlm.engines.modeling import load_tokenizer

                        tok = load_tokenizer(self.ref)
                        self._digits = scoring.digit_token_ids(tok)
                        ids = tok("a")["input_ids"]
                        self._tok_bos = bool(tok.bos_token) and bool(ids) and ids[0] == tok.bos_token_id
                        self._tok = tok
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
        try:
            self.client.with_options(timeout=timeout, max_retries=0).models.list()
        except openai.OpenAIError:
            return False
        return True

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


def _content_logprobs(choice) -> list | None:
    """A chat choice's per-token logprobs (`logprobs.content`), or None when the server sent none."""
    lp = getattr(choice, "logprobs", None)
    return getattr(lp, "content", None) if lp is not None else None


def _alternatives(t) -> list[tuple[str, float]]:
    """(token, logprob) at one position: its top alternatives, and the token itself when the
    server left it out of them."""
    entries = [(a.token, a.logprob) for a in (t.top_logprobs or [])]
    if t.token not in {tok for tok, _ in entries}:
        entries.append((t.token, t.logprob))
    return entries


def _written_score_probs(tokens: list, raw: str, text: str, ended: bool) -> list[float] | None:
    """The digit distribution at the token where the judgment wrote its score digit.

    `raw` is what the server returned and `tokens` its per-token logprobs; `text` is the
    completion after the score-line and repetition cuts, which must still hold a valid score.
    The position is found in the concatenated token texts (vLLM spells a byte-level token
    that splits a character as U+FFFD, so the token texts may differ from `raw` elsewhere)."""
    offset = scoring.score_digit_offset(raw, ended)
    if offset is None or offset >= len(text) or rubric.parse_score(text)[0] is None:
        return None
    joined = [t.token or "" for t in tokens]
    at = scoring.score_digit_offset("".join(joined), ended)
    i = scoring.token_at([len(s) for s in joined], at) if at is not None else None
    if i is None or scoring.digit_of(joined[i]) != int(raw[offset]):
        return None  # token texts that do not spell the digit (e.g. vLLM's token-id mode)
    return scoring.digit_distribution(_alternatives(tokens[i]))


def _server_message(e: openai.APIStatusError) -> str:
    """The server's own message, on one line: OpenAI/vLLM {"error": {"message"}} (the library
    unwraps "error"), TGI {"error": "..."}, FastAPI {"detail"}, or the raw body."""
    body = e.body
    if isinstance(body, dict):
        msg = body.get("message") or body.get("detail") or body.get("error") or body
    elif isinstance(body, str) and body.strip():
        msg = body
    else:
        try:
            msg = e.response.text or e.message
        except Exception:
            msg = e.message
    return " ".join(str(msg).split())[:500]


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
