"""transformers in process: batched sampling with shared prefills.

Three savings over calling `generate` once per sample (the path public implementations take):
1. The prefix shared by every prompt of a call (for judgments, the whole rubric: about 300
   tokens of a 450-token prompt) is prefilled once and its KV cache copied into each batch.
2. A prompt's prefill is computed once and its cache repeated for its n samples (`generate`
   with num_return_sequences repeats the prompt before prefill, so it pays n times).
3. Rows are decoded together, sorted by length to cut padding, and finished rows (EOS, or a
   judgment whose score line is complete) leave the batch.
And three that make a CPU decode step cost what its matmuls cost (profile in docs/LOG.md: at
96 rows x 450 tokens of context they were a quarter of the step):
4. One-token attention as two grouped matmuls (`_decode_attention`) instead of SDPA's CPU
   flash kernel, which takes 2.6-17 ms per layer call in bf16 against 1.5 ms.
5. A KV cache that writes into preallocated room (`_RoomyLayer`) instead of concatenating
   the whole cache every step; finished rows are dropped in batches, not one copy per row.
6. Nucleus sampling over the top 256 tokens (exact: it falls back to a full sort when they
   hold less than top_p of the mass) instead of sorting 49k-entry rows every step.
Greedy decoding gives the same tokens as `model.generate` (tests/test_backend_hf.py).
"""

from __future__ import annotations

import copy
import inspect
import os

import torch
from transformers.cache_utils import DynamicLayer

from srlm import rubric
from srlm.backends.base import SCORE_DIGITS, Chat, Completion, SamplingParams
from srlm.repetition import RepetitionGuard
from srlm.modeling import ModelRef, context_window, load_model, load_tokenizer, pick_dtype, set_threads

MIN_SHARED_PREFIX = 16  # below this a shared prefill saves less than the cache copies cost
TOP_P_CANDIDATES = 256  # nucleus search width before falling back to a full sort
DROP_FRACTION = 8  # drop finished rows once they are 1/8 of the batch (each drop copies the cache)
CACHE_ROOM = 32  # free KV positions added when the cache grows (attention covers them too)
ATTENTION = "srlm_sdpa"


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
        if getattr(model.config, "_attn_implementation", None) == "sdpa" and _register_attention():
            model.set_attn_implementation(ATTENTION)
        self.digit_ids = _digit_token_ids(tokenizer)

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

    def _new_cache(self, room: int):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        # Full-attention layers only (sliding-window and linear-attention layers keep their own logic).
        if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
            cache.layers = [_RoomyLayer(room) for _ in cache.layers]
        return cache

    def _prefill_prefix(self, prefix: list[int]):
        cache = self._new_cache(room=0)
        x = torch.tensor([prefix], device=self.model.device)
        self.model(input_ids=x, use_cache=True, **{self.cache_kw: cache}, logits_to_keep=1)
        return cache

    def _generate_batch(self, suffixes, prefix_len, prefix_cache, params: SamplingParams, gen) -> list[Completion]:
        dev = self.model.device
        B, S, n = len(suffixes), max(len(s) for s in suffixes), params.n
        inp = torch.full((B, S), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, prefix_len + S), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, s in enumerate(suffixes):
            inp[r, S - len(s):] = torch.tensor(s)
            mask[r, prefix_len + S - len(s):] = 1
        room = min(params.max_new_tokens, CACHE_ROOM)
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)  # prefilled with no room: it is copied per row
            for layer in cache.layers:
                if isinstance(layer, _RoomyLayer):
                    layer.room = room
            cache.batch_repeat_interleave(B)
        else:
            cache = self._new_cache(room)
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
        guards = [RepetitionGuard(params.stop_repetition) for _ in range(rows)] if params.stop_repetition else None
        cut_at: dict[int, int] = {}
        # Expected scoring: the digit distribution at the step where a row writes its score digit.
        pending: dict[int, list[float]] = {}
        digit_probs: dict[int, list[float]] = {}
        # Finished rows stay in the batch (their tokens ignored) until they are a DROP_FRACTION of
        # it: each drop copies the whole cache, which costs more than decoding a few extra rows.
        finished = torch.zeros(rows, dtype=torch.bool)
        for step in range(params.max_new_tokens):
            nxt = _sample(logits, params.temperature, params.top_p, gen)
            if params.score_probs and pending:
                probs = self._digit_distribution(logits, [s for s, r in enumerate(alive.tolist()) if r in pending])
                for slot, p in probs.items():
                    pending[int(alive[slot])] = p
            for slot, row in enumerate(alive.tolist()):
                if finished[slot]:
                    continue
                t = int(nxt[slot])
                if row in pending:
                    p = pending.pop(row)
                    if t in self.digit_ids.values_set and row not in digit_probs:
                        digit_probs[row] = p
                if t in self.eos_ids:
                    finished[slot] = True
                    reason[row] = "stop"
                    continue
                tokens[row].append(t)
                if guards is not None:
                    cut = guards[row].push(t)
                    if cut is not None:
                        cut_at[row] = cut
                        finished[slot] = True
                        reason[row] = "repetition"
                        continue
                if params.stop_at_score and self._score_done(tokens[row]):
                    finished[slot] = True
                    reason[row] = "stop"
                elif params.score_probs and row not in digit_probs and self._at_score_prefix(tokens[row]):
                    pending[row] = []  # read the distribution at the next step
            if step == params.max_new_tokens - 1 or finished.all():
                break
            if finished.sum() * DROP_FRACTION >= len(alive):
                keep = (~finished).nonzero().squeeze(1)
                cache.batch_select_indices(keep.to(dev))
                alive, nxt, mask, next_pos = alive[keep], nxt[keep], mask[keep], next_pos[keep]
                finished = finished[keep]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], 1)
            out = self.model(input_ids=nxt[:, None].to(dev), attention_mask=mask.to(dev),
                             position_ids=next_pos[:, None].to(dev), use_cache=True, **{self.cache_kw: cache})
            logits = out.logits[:, -1].float().cpu()
            next_pos = next_pos + 1
        outs = []
        for row in range(rows):
            toks = tokens[row][:cut_at[row]] if row in cut_at else tokens[row]
            text = self.tok.decode(toks, skip_special_tokens=True)
            if params.stop_at_score:
                text = rubric.truncate_after_score(text)
            probs = None
            if params.score_probs and row in digit_probs and rubric.parse_score(text)[0] is not None:
                probs = digit_probs[row]
            outs.append(Completion(text=text, num_tokens=len(tokens[row]), finish_reason=reason[row],
                                   score_probs=probs))
        return outs

    def _at_score_prefix(self, toks: list[int]) -> bool:
        # Cheap tail check first, as in _score_done.
        tail = self.tok.decode(toks[-4:], skip_special_tokens=True)
        if not rubric.SCORE_PREFIX_END.search(tail):
            return False
        return rubric.SCORE_PREFIX_END.search(self.tok.decode(toks, skip_special_tokens=True)) is not None

    def _digit_distribution(self, logits: torch.Tensor, slots: list[int]) -> dict[int, list[float]]:
        """The model's own next-token distribution (temperature 1) over the score digits, summed
        over each digit's token variants and renormalised over the six."""
        if not slots:
            return {}
        probs = torch.softmax(logits[slots].float(), dim=-1)
        mass = torch.stack([probs[:, ids].sum(-1) for ids in self.digit_ids.per_digit], dim=-1)
        total = mass.sum(-1, keepdim=True).clamp_min(1e-30)
        return {s: row.tolist() for s, row in zip(slots, (mass / total))}

    @torch.inference_mode()
    def score_probs(self, chats: list[Chat], prefixes: list[str]) -> list[list[float] | None]:
        """One forward pass per batch over chat + assistant prefix; the last position's digit
        distribution. A prefix that ends in a space is encoded without it when this tokenizer
        writes digits with a leading space (' 3'), so the digit is the next token."""
        if not chats:
            return []
        if self.digit_ids.spaced:
            prefixes = [p.rstrip(" ") for p in prefixes]
        texts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) + p
                 for c, p in zip(chats, prefixes)]
        ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[list[float] | None] = [None] * len(ids)
        dev = self.model.device
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            S = max(len(ids[i]) for i in idx)
            inp = torch.full((len(idx), S), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), S), dtype=torch.long)
            for r, i in enumerate(idx):
                inp[r, S - len(ids[i]):] = torch.tensor(ids[i])
                mask[r, S - len(ids[i]):] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.model(input_ids=inp.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                use_cache=False, logits_to_keep=1).logits[:, -1].float().cpu()
            for r, p in self._digit_distribution(logits, list(range(len(idx)))).items():
                out[idx[r]] = p
        return out

    def _score_done(self, toks: list[int]) -> bool:
        # Cheap tail check first; decode the whole row only when a score line may be ending.
        tail = self.tok.decode(toks[-6:], skip_special_tokens=True)
        if "Score" not in tail:
            return False
        return rubric.score_line_complete(self.tok.decode(toks, skip_special_tokens=True))


class _DigitIds:
    """Token ids that write each score digit: the bare digit, and ' d' where the tokenizer has
    it as one token (SmolLM2 writes 'Score: 3' as 'Score', ':', ' ', '3'; others as '▁3')."""

    def __init__(self, per_digit: list[list[int]], spaced: bool):
        self.per_digit = per_digit
        self.values_set = {t for ids in per_digit for t in ids}
        self.spaced = spaced


def _digit_token_ids(tok) -> _DigitIds:
    per_digit, spaced = [], False
    for d in SCORE_DIGITS:
        ids = set()
        for text in (d, " " + d):
            enc = tok(text, add_special_tokens=False)["input_ids"]
            if len(enc) == 1 and tok.decode(enc).strip() == d:
                ids.add(enc[0])
                spaced |= text.startswith(" ")
        per_digit.append(sorted(ids))
    return _DigitIds(per_digit, spaced)


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
    if top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=gen).squeeze(1)
    top, idx = probs.topk(min(TOP_P_CANDIDATES, probs.shape[-1]), dim=-1)
    if (top.sum(-1) <= top_p).any():
        top, idx = probs.sort(-1, descending=True)  # a flat row: its nucleus may extend past the top k
    # Keep the smallest set whose mass reaches top_p (the top token always survives).
    cum = top.cumsum(-1)
    top = top.masked_fill((cum - top) > top_p, 0.0)
    return idx.gather(-1, torch.multinomial(top, 1, generator=gen)).squeeze(1)


class _RoomyLayer(DynamicLayer):
    """A full-attention KV cache layer with `room` free (zeroed) positions after its tokens, so a
    decode step writes one position in place instead of concatenating the whole cache
    (DynamicLayer's copy is ~1 GB a step at 96 rows x 500 tokens of SmolLM2-135M).

    Like transformers' StaticLayer it hands attention the whole buffer and reports the buffer's
    size as the mask length, so the unfilled positions are masked (a strided view of the filled
    part would be copied by every attention matmul: 5.9 ms vs 2.6 ms per layer call); unlike it,
    it grows when full and supports the batch repeat/select the decode loop needs."""

    def __init__(self, room: int = 0):
        super().__init__()
        self.room = room
        self.length = 0

    def _capacity(self) -> int:
        # Before the first update `keys` is DynamicLayer's empty placeholder, not a buffer.
        return self.keys.shape[-2] if self.is_initialized and self.keys.dim() == 4 else 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.length + new > self._capacity():
            size = self.length + new + self.room
            keys = key_states.new_zeros(key_states.shape[:2] + (size, key_states.shape[-1]))
            values = value_states.new_zeros(value_states.shape[:2] + (size, value_states.shape[-1]))
            if self.length:
                keys[:, :, :self.length] = self.keys[:, :, :self.length]
                values[:, :, :self.length] = self.values[:, :, :self.length]
            self.keys, self.values = keys, values
        self.keys[:, :, self.length:self.length + new] = key_states
        self.values[:, :, self.length:self.length + new] = value_states
        self.length += new
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        # The mask is built before `update`, so report the size the buffer will have after it.
        size, needed = self._capacity(), self.length + query_length
        return (size if needed <= size else needed + self.room), 0

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self.keys = self.keys.repeat_interleave(repeats, dim=0)
            self.values = self.values.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self.keys, self.values = self.keys[indices], self.values[indices]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("srlm's decode loop never crops its cache")

    def reset(self) -> None:
        self.length = 0
        super().reset()


def _decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """One query token per row: softmax(q k^T) v as grouped matmuls on the key/value heads (no
    repeat_kv); everything else (prefill, GPUs, softcapping, sinks) goes to transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    B, H, q_len, D = query.shape
    kv_heads = key.shape[1]
    plain_mask = attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[1] == 1)
    extras = any(kwargs.get(k) is not None for k in ("softcap", "s_aux", "sinks", "position_bias"))
    if q_len != 1 or query.device.type != "cpu" or module.training or extras or not plain_mask or H % kv_heads:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    q = query.reshape(B, kv_heads, H // kv_heads, D)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (scaling if scaling is not None else D ** -0.5)
    if attention_mask is not None:  # [B, 1, 1, L]: bool (True = attend) or additive
        mask = attention_mask[:, :, 0, -scores.shape[-1]:].unsqueeze(2)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = torch.matmul(torch.softmax(scores, dim=-1).to(value.dtype), value)  # [B, kv_heads, groups, D]
    return out.reshape(B, H, 1, D).transpose(1, 2).contiguous(), None


_REGISTERED = []


def _register_attention() -> bool:
    """Make ATTENTION a name transformers accepts: SDPA's mask, `_decode_attention` for compute."""
    if not _REGISTERED:
        try:
            from transformers import AttentionInterface
            from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

            AttentionInterface.register(ATTENTION, _decode_attention)
            ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
            _REGISTERED.append(True)
        except (ImportError, AttributeError):
            _REGISTERED.append(False)
    return _REGISTERED[0]


# Threads are set once per process; tokenizers' own pool would fight torch's for 2 cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
