"""transformers in process: batched sampling with shared prefills.

Three savings over calling `generate` once per sample (the path public implementations take):
1. The prefix shared by every prompt of a call (for judgments, the whole rubric: about 300
   tokens of a 450-token prompt) is prefilled once and its KV cache copied into each batch.
2. A prompt's prefill is computed once and its cache repeated for its n samples (`generate`
   with num_return_sequences repeats the prompt before prefill, so it pays n times).
3. Rows are decoded together, sorted by length to cut padding, and finished rows (EOS, or a
   judgment whose score line is complete) leave the batch at once.
Greedy decoding gives the same tokens as `model.generate` (tests/test_backend_hf.py).
"""

from __future__ import annotations

import copy
import inspect
import os

import torch

from srlm import rubric
from srlm.backends.base import Chat, Completion, SamplingParams
from srlm.modeling import ModelRef, context_window, load_model, load_tokenizer, pick_dtype, set_threads

MIN_SHARED_PREFIX = 16  # below this a shared prefill saves less than the cache copies cost


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class HFBackend:
    def __init__(self, model, tokenizer, batch_size: int = 32):
        self.model = model
        self.tok = tokenizer
        self.batch_size = max(1, batch_size)
        eos = set()
        for v in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            if isinstance(v, int):
                eos.add(v)
            elif isinstance(v, (list, tuple)):
                eos.update(int(x) for x in v)
        self.eos_ids = eos
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
        # transformers 5.x renamed forward's `past_key_values` to `cache`; accept both.
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def from_config(cls, cfg, ref: ModelRef) -> "HFBackend":
        set_threads(cfg.model.threads)
        tok = load_tokenizer(ref)
        model = load_model(ref, dtype=pick_dtype(cfg.model.dtype), device=_device())
        return cls(model, tok, cfg.backend.batch_size)

    @property
    def context_window(self) -> int:
        return context_window(self.model)

    def encode(self, chats: list[Chat]) -> list[list[int]]:
        texts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        return [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]

    def count_prompt_tokens(self, chats: list[Chat]) -> list[int]:
        return [len(x) for x in self.encode(chats)]

    def close(self) -> None:
        self.model = None

    @torch.inference_mode()
    def generate(self, chats: list[Chat], params: SamplingParams, seed: int) -> list[list[Completion]]:
        if not chats:
            return []
        ids = self.encode(chats)
        gen = torch.Generator().manual_seed(seed)
        prefix_len = _common_prefix_len(ids) if len(ids) > 1 else 0
        if prefix_len < MIN_SHARED_PREFIX:
            prefix_len = 0
        prefix_cache = self._prefill_prefix(ids[0][:prefix_len]) if prefix_len else None
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        per_batch = max(1, self.batch_size // params.n)
        results: list[list[Completion]] = [[] for _ in chats]
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            suffixes = [ids[i][prefix_len:] for i in idx]
            outs = self._generate_batch(suffixes, prefix_len, prefix_cache, params, gen)
            for j, i in enumerate(idx):
                results[i] = outs[j * params.n:(j + 1) * params.n]
        return results

    def _prefill_prefix(self, prefix: list[int]):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        x = torch.tensor([prefix], device=self.model.device)
        self.model(input_ids=x, use_cache=True, **{self.cache_kw: cache}, logits_to_keep=1)
        return cache

    def _generate_batch(self, suffixes, prefix_len, prefix_cache, params: SamplingParams, gen) -> list[Completion]:
        from transformers import DynamicCache

        dev = self.model.device
        B, S, n = len(suffixes), max(len(s) for s in suffixes), params.n
        inp = torch.full((B, S), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, prefix_len + S), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, s in enumerate(suffixes):
            inp[r, S - len(s):] = torch.tensor(s)
            mask[r, prefix_len + S - len(s):] = 1
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(B)
        else:
            cache = DynamicCache(config=self.model.config)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=inp.to(dev), attention_mask=mask.to(dev), position_ids=pos[:, prefix_len:].to(dev),
                         use_cache=True, **{self.cache_kw: cache}, logits_to_keep=1)
        logits = out.logits[:, -1].float().cpu()
        # Share each prompt's prefill across its n samples: repeat the cache, not the prompt.
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, 0)
            mask = mask.repeat_interleave(n, 0)
        next_pos = pos[:, -1].repeat_interleave(n, 0) + 1
        rows = B * n
        alive = torch.arange(rows)  # original row of each batch slot
        tokens: list[list[int]] = [[] for _ in range(rows)]
        reason = ["length"] * rows
        for step in range(params.max_new_tokens):
            nxt = _sample(logits, params.temperature, params.top_p, gen)
            finished = torch.zeros(len(alive), dtype=torch.bool)
            for slot, row in enumerate(alive.tolist()):
                t = int(nxt[slot])
                if t in self.eos_ids:
                    finished[slot] = True
                    reason[row] = "stop"
                    continue
                tokens[row].append(t)
                if params.stop_at_score and self._score_done(tokens[row]):
                    finished[slot] = True
                    reason[row] = "stop"
            if step == params.max_new_tokens - 1:
                break
            if finished.any():
                keep = (~finished).nonzero().squeeze(1)
                if len(keep) == 0:
                    break
                cache.batch_select_indices(keep.to(dev))
                alive, nxt, mask, next_pos = alive[keep], nxt[keep], mask[keep], next_pos[keep]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], 1)
            out = self.model(input_ids=nxt[:, None].to(dev), attention_mask=mask.to(dev),
                             position_ids=next_pos[:, None].to(dev), use_cache=True, **{self.cache_kw: cache})
            logits = out.logits[:, -1].float().cpu()
            next_pos = next_pos + 1
        outs = []
        for row in range(rows):
            text = self.tok.decode(tokens[row], skip_special_tokens=True)
            if params.stop_at_score:
                text = rubric.truncate_after_score(text)
            outs.append(Completion(text=text, num_tokens=len(tokens[row]), finish_reason=reason[row]))
        return outs

    def _score_done(self, toks: list[int]) -> bool:
        # Cheap tail check first; decode the whole row only when a score line may be ending.
        tail = self.tok.decode(toks[-6:], skip_special_tokens=True)
        if "Score" not in tail:
            return False
        return rubric.score_line_complete(self.tok.decode(toks, skip_special_tokens=True))


def _common_prefix_len(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs) - 1  # every row keeps at least one token to prefill
    for i in range(max(0, n)):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return max(0, n)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, sorted_i = probs.sort(-1, descending=True)
        cum = sorted_p.cumsum(-1)
        # Keep the smallest set whose mass reaches top_p (the top token always survives).
        drop = (cum - sorted_p) > top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, sorted_i, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


# Threads are set once per process; tokenizers' own pool would fight torch's for 2 cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
