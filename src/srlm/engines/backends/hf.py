"""transformers in process: batched sampling with shared prefills.

Three savings over calling `generate` once per sample (the path public implementations take):
1. The prefix shared by every prompt of a call (for judgments, the whole rubric: about 300
   tokens of a 450-token prompt) is prefilled once and its KV cache copied into each batch.
2. A prompt's prefill is computed once and its cache repeated for its n samples (`generate`
   with num_return_sequences repeats the prompt before prefill, so it pays n times).
3. Rows are decoded together, sorted by length to cut padding, and finished rows (EOS, or a
   judgment whose score line is complete) leave the batch.
And four that make a CPU decode step cost what its matmuls cost (profile in docs/LOG.md: at
96 rows x 450 tokens of context they were a quarter of the step):
4. One-token attention as two grouped matmuls (`_compat.use_decode_attention`) instead of SDPA's
   CPU flash kernel, which takes 2.6-17 ms per layer call in bf16 against 1.5 ms.
5. A KV cache that writes into preallocated room (`_compat.roomy_cache`) instead of concatenating
   the whole cache every step; finished rows are dropped in batches, not one copy per row.
6. Nucleus sampling over the top 256 tokens (exact: it falls back to a full sort when they
   hold less than top_p of the mass) instead of sorting 49k-entry rows every step.
7. On a bf16 CPU model, linear weights reordered once into oneDNN's layout
   (`_compat.pack_linears`) instead of on every matmul: the same results bit for bit.
And for expected scoring (SamplingParams.force_score):
8. A judgment that ends without a score line is fed the forced `Score:` prefix from its own KV
   cache and its digit distribution read there, instead of a second pass over its whole prompt
   (the same tokens that pass would read: tests/test_expected_scoring.py).
And on CUDA, where a small model's step is bound by the host launching kernels, not by the GPU:
9. Each batch's decode steps on a fixed-size cache, one step captured as a CUDA graph and replayed
   (decode_steps.FixedSteps; backend.cuda_graphs), and nucleus sampling without a host sync.
Greedy decoding gives the same tokens as `model.generate` (tests/test_backend_hf.py). 4, 5, 7 and 9 touch
transformers and torch internals (srlm/engines/_compat.py); when a release breaks them they warn and the slower
standard path runs.
"""

from __future__ import annotations

import copy
import os

import torch

from srlm.engines import _compat
from srlm.data import rubric
from srlm.engines.backends.base import Chat, Completion, SamplingParams
from srlm.engines.backends.decode_steps import EagerSteps, FixedSteps
from srlm.engines.backends.scoring import ChoiceTokens, choice_token_ids, digit_token_ids
from srlm.data.repetition import RepetitionGuard
from srlm.engines.modeling import ModelRef, context_window, load_model, load_tokenizer, pick_dtype, set_threads

MIN_SHARED_PREFIX = 16  # below this a shared prefill saves less than the cache copies cost
TOP_P_CANDIDATES = 256  # nucleus search width before falling back to a full sort
DROP_FRACTION = 8  # drop finished rows once they are 1/8 of the batch (each drop copies the cache)
CACHE_ROOM = 32  # free KV positions added when the cache grows (attention covers them too)
# A forced score prefix longer than this is left to the judge's separate pass: fed one token a step,
# it kept the loop running up to max_new_tokens more steps for one or two rows (a judgment whose
# retokenized text differs from its generated tokens near the start, e.g. "S"+"m" against "Sm").
MAX_FORCED_FEED = 16


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class HFBackend:
    def __init__(self, model, tokenizer, batch_size: int = 32, cuda_graphs: bool = True):
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
        self.cache_kw = _compat.cache_kwarg(model)
        # On CUDA: decode steps on a fixed cache, captured as a CUDA graph (decode_steps.FixedSteps).
        # The tests set it on the CPU too, where it runs the same fixed cache without capture.
        self.fixed_steps = cuda_graphs and model.device.type == "cuda"
        _compat.use_decode_attention(model)
        self._packs = _compat.pack_linears(model, self.batch_size)
        self.digit_ids = digit_token_ids(tokenizer)
        self.digit_set = {t for ids in self.digit_ids.per_choice for t in ids}
        self._choice_ids: dict[tuple[str, ...], ChoiceTokens] = {}
        self._pieces: dict[int, str] = {}  # token id -> its text alone (_tail)

    @classmethod
    def from_config(cls, cfg, ref: ModelRef) -> "HFBackend":
        set_threads(cfg.model.threads)
        tok = load_tokenizer(ref)
        model = load_model(ref, dtype=pick_dtype(cfg.model.dtype), device=_device())
        return cls(model, tok, cfg.backend.batch_size, cfg.backend.cuda_graphs)

    @property
    def context_window(self) -> int:
        return context_window(self.model)

    def chat_texts(self, chats: list[Chat]) -> list[str]:
        """Each chat through the chat template, ending where the assistant's turn begins."""
        return [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]

    def encode(self, chats: list[Chat], texts: list[str] | None = None) -> list[list[int]]:
        return [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts or self.chat_texts(chats)]

    def count_prompt_tokens(self, chats: list[Chat]) -> list[int]:
        return [len(x) for x in self.encode(chats)]

    def close(self) -> None:
        self.model = None
        self._packs = {}

    @torch.inference_mode()
    def generate(self, chats: list[Chat], params: SamplingParams, seed: int) -> list[list[Completion]]:
        if not chats:
            return []
        if params.max_new_tokens < 1:  # the decode loop always samples once
            return [[Completion(text="", num_tokens=0, finish_reason="length") for _ in range(params.n)] for _ in chats]
        with _compat.packed_linears(self._packs):
            return self._generate(chats, params, seed)

    def _generate(self, chats: list[Chat], params: SamplingParams, seed: int) -> list[list[Completion]]:
        texts = self.chat_texts(chats)  # kept: a forced score prefix is tokenized after them
        ids = self.encode(chats, texts)
        # On the model's device: sampling there moves `rows` token ids to the host per step, not
        # rows x vocab logits (19 MB a step at 96 rows), which made a GPU decode host-bound.
        gen = torch.Generator(device=self.model.device).manual_seed(seed)
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
            outs = self._generate_batch(suffixes, prefix_len, prefix_cache, params, gen,
                                        prompts=[(texts[i], ids[i]) for i in idx])
            for j, i in enumerate(idx):
                results[i] = outs[j * params.n:(j + 1) * params.n]
        return results

    def _new_cache(self, room: int):
        return _compat.roomy_cache(self.model.config, room)

    def _prefill_prefix(self, prefix: list[int]):
        cache = self._new_cache(room=0)
        x = torch.tensor([prefix], device=self.model.device)
        self.model(input_ids=x, use_cache=True, **{self.cache_kw: cache}, logits_to_keep=1)
        return cache

    def _generate_batch(self, suffixes, prefix_len, prefix_cache, params: SamplingParams, gen,
                        prompts: list[tuple[str, list[int]]] | None = None) -> list[Completion]:
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
            _compat.set_cache_room(cache, room)
            cache.batch_repeat_interleave(B)
        else:
            cache = self._new_cache(room)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=inp.to(dev), attention_mask=mask.to(dev), position_ids=pos[:, prefix_len:].to(dev),
                         use_cache=True, **{self.cache_kw: cache}, logits_to_keep=1)
        logits = out.logits[:, -1].float()  # stays on the device: only sampled ids come back
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
        # Forced score prefixes (params.force_score): a judgment that ends without a score line
        # goes on with the tokens of text + FORCED_PREFIX fed from its own cache instead of a
        # second pass over its whole prompt; the digit distribution is read after the last one.
        force = params.score_probs and params.force_score and prompts is not None
        forcing: dict[int, list[int]] = {}  # row -> forced tokens still to feed
        force_read: set[int] = set()  # rows whose last forced token is being fed this step
        forced_rows: set[int] = set()
        first_col = prefix_len + S  # mask column of each row's first generated token
        # Finished rows stay in the batch (their tokens ignored) until they are a DROP_FRACTION of
        # it: each drop copies the whole cache, which costs more than decoding a few extra rows.
        finished = [False] * rows
        steps = None
        if self.fixed_steps:  # every step the loop can take: the cap, then a forced prefix and its read
            steps = FixedSteps.make(self.model, self.cache_kw, cache, mask, params.max_new_tokens + MAX_FORCED_FEED + 2,
                                    graphs=True)
        steps = steps or EagerSteps(self.model, self.cache_kw, cache, mask)
        del cache, mask  # `steps` owns them (FixedSteps holds a copy)

        def start_forcing(row: int, slot: int) -> bool:  # reads the loop's current tensors and step
            return force and self._force_score(row, row in digit_probs, slot, step, tokens, cut_at, prompts[row // n],
                                               nxt, steps, next_pos, first_col, forcing, force_read)

        step = 0
        while True:
            nxt = _sample(logits, params.temperature, params.top_p, gen).cpu()
            sampled = nxt.tolist()  # read per row as ints: indexing the tensor costs a few µs a row
            alive_rows = alive.tolist()
            if force_read:
                slots = [s for s, r in enumerate(alive_rows) if r in force_read]
                for slot, p in self._digit_distribution(logits, slots).items():
                    digit_probs[alive_rows[slot]] = p
                    forced_rows.add(alive_rows[slot])
                    finished[slot] = True
                force_read.clear()
            if params.score_probs and pending:
                probs = self._digit_distribution(logits, [s for s, r in enumerate(alive_rows) if r in pending])
                for slot, p in probs.items():
                    pending[alive_rows[slot]] = p
            last = step >= params.max_new_tokens - 1  # no sampled token is kept after this step
            for slot, row in enumerate(alive_rows):
                if finished[slot]:
                    continue
                if row in forcing:
                    pending.pop(row, None)
                    nxt[slot] = forcing[row].pop(0)
                    if not forcing[row]:
                        del forcing[row]
                        force_read.add(row)
                    continue
                t = sampled[slot]
                if row in pending:
                    p = pending.pop(row)
                    if t in self.digit_set and row not in digit_probs:
                        digit_probs[row] = p
                if t in self.eos_ids:
                    reason[row] = "stop"
                    finished[slot] = not start_forcing(row, slot)
                    continue
                tokens[row].append(t)
                if guards is not None:
                    cut = guards[row].push(t)
                    if cut is not None:
                        cut_at[row] = cut
                        reason[row] = "repetition"
                        finished[slot] = not start_forcing(row, slot)
                        continue
                if params.stop_at_score and self._score_done(tokens[row]):
                    finished[slot] = True
                    reason[row] = "stop"
                    continue
                if params.score_probs and row not in digit_probs and self._at_score_prefix(tokens[row]):
                    pending[row] = []  # read the distribution at the next step
                if last:  # the length cap: this token is kept but never fed
                    finished[slot] = not start_forcing(row, slot)
            if all(finished) or (last and not forcing and not force_read):
                break
            if steps.can_drop and sum(finished) * DROP_FRACTION >= len(alive):
                keep = torch.tensor([s for s, f in enumerate(finished) if not f])
                steps.drop(keep)
                alive, nxt, next_pos = alive[keep], nxt[keep], next_pos[keep]
                finished = [False] * len(keep)
            logits = steps.step(nxt, next_pos)
            next_pos = next_pos + 1
            step += 1
        outs = []
        for row in range(rows):
            toks = tokens[row][:cut_at[row]] if row in cut_at else tokens[row]
            text = self.tok.decode(toks, skip_special_tokens=True)
            if params.stop_at_score:
                text = rubric.truncate_after_score(text)
            probs = None
            if row in forced_rows:
                probs = digit_probs[row]
            elif params.score_probs and row in digit_probs and rubric.parse_score(text)[0] is not None:
                probs = digit_probs[row]
            outs.append(Completion(text=text, num_tokens=len(tokens[row]), finish_reason=reason[row],
                                   score_probs=probs, score_forced=row in forced_rows))
        return outs

    def _force_score(self, row, scored, slot, step, tokens, cut_at, prompt, nxt, steps, next_pos, first_col, forcing,
                     force_read) -> bool:
        """Start feeding `row` the forced score prefix after its judgment text, from its own cache.

        The token sequence fed is exactly what `score_probs()` would read: the tokenization of
        prompt text + rubric.forced_prefix(judgment text). Its longest common prefix with the
        generated tokens stays in the cache; generated tokens past it (a repetition cut, trailing
        whitespace the prefix strips) are masked out, and positions resume where the common part
        ends. Returns False when the row wrote a score the judge reads from its digit, when the
        prompt's own tokens would not survive re-tokenization, or when more than MAX_FORCED_FEED
        tokens would have to be fed (the judge then makes its pass)."""
        toks = tokens[row][:cut_at[row]] if row in cut_at else tokens[row]
        text = rubric.truncate_after_score(self.tok.decode(toks, skip_special_tokens=True))
        if scored and rubric.parse_score(text)[0] is not None:
            return False  # its written digit's distribution is its score (as in the judge)
        target = rubric.forced_prefix(text)
        if self.digit_ids.spaced:
            target = target.rstrip(" ")
        prompt_text, prompt_ids = prompt
        ref = self.tok(prompt_text + target, add_special_tokens=False)["input_ids"]
        if ref[:len(prompt_ids)] != prompt_ids:
            return False
        want = ref[len(prompt_ids):]
        fed = step  # generated tokens in the cache: all but the one sampled this step
        j = 0
        while j < min(fed, len(want)) and tokens[row][j] == want[j]:
            j += 1
        if j == len(want):
            return False  # nothing left to feed (the prefix ends in "Score:", so never in practice)
        if len(want) - j > MAX_FORCED_FEED:
            return False
        if j < fed:  # drop tokens j..fed-1 from attention; the next fed token takes token j's position
            steps.hide(slot, first_col + j, first_col + fed)
            next_pos[slot] -= fed - j
        rest = list(want[j:])
        nxt[slot] = rest.pop(0)
        if rest:
            forcing[row] = rest
        else:
            force_read.add(row)
        return True

    def _tail(self, toks: list[int], k: int) -> str:
        """The last k tokens' text, each token decoded alone (cached): a precheck that is never
        stricter than decoding them together (the ASCII of "Score:" reads the same either way),
        run every step for every row, so it must cost less than a tokenizer call."""
        out = []
        for t in toks[-k:]:
            piece = self._pieces.get(t)
            if piece is None:
                piece = self._pieces[t] = self.tok.decode([t], skip_special_tokens=True)
            out.append(piece)
        return "".join(out)

    def _at_score_prefix(self, toks: list[int]) -> bool:
        if not self._tail(toks, 4).rstrip(" \t").endswith("Score:"):
            return False
        # Cheap tail check first, as in _score_done.
        tail = self.tok.decode(toks[-4:], skip_special_tokens=True)
        if not rubric.SCORE_PREFIX_END.search(tail):
            return False
        return rubric.SCORE_PREFIX_END.search(self.tok.decode(toks, skip_special_tokens=True)) is not None

    def _digit_distribution(self, logits: torch.Tensor, slots: list[int]) -> dict[int, list[float]]:
        """The model's own next-token distribution (temperature 1) over the score digits, summed
        over each digit's token variants and renormalised over the six."""
        return _choice_mass(logits, slots, self.digit_ids.per_choice)

    @torch.inference_mode()
    def score_probs(self, chats: list[Chat], prefixes: list[str]) -> list[list[float] | None]:
        """One forward pass per batch over chat + assistant prefix; the last position's digit
        distribution. A prefix that ends in a space is encoded without it when this tokenizer
        writes digits with a leading space (' 3'), so the digit is the next token."""
        return self._prefix_distributions(chats, prefixes, self.digit_ids)

    @torch.inference_mode()
    def choice_probs(self, chats: list[Chat], prefixes: list[str], choices: list[str]) -> list[list[float] | None]:
        """As score_probs, over single-token `choices` (e.g. the meta-judge's "A", "B"): each
        choice's probability is summed over the tokens that write it (choice_token_ids) and the
        choices renormalised to sum 1."""
        key = tuple(choices)
        if key not in self._choice_ids:
            ids = choice_token_ids(self.tok, key)
            missing = [c for c, t in zip(key, ids.per_choice) if not t]
            if missing:
                raise ValueError(f"choice_probs: {missing} are not single tokens of this tokenizer")
            self._choice_ids[key] = ids
        return self._prefix_distributions(chats, prefixes, self._choice_ids[key])

    def _prefix_distributions(self, chats: list[Chat], prefixes: list[str],
                              targets: ChoiceTokens) -> list[list[float] | None]:
        if len(chats) != len(prefixes):
            raise ValueError(f"{len(chats)} chats but {len(prefixes)} prefixes")
        if not chats:
            return []
        if targets.spaced:
            prefixes = [p.rstrip(" ") for p in prefixes]
        ids = self.encode(chats, [t + p for t, p in zip(self.chat_texts(chats), prefixes)])
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out: list[list[float] | None] = [None] * len(ids)
        with _compat.packed_linears(self._packs):
            for start in range(0, len(order), self.batch_size):
                self._distributions_batch(ids, order[start:start + self.batch_size], targets, out)
        return out

    def _distributions_batch(self, ids: list[list[int]], idx: list[int], targets: ChoiceTokens, out: list) -> None:
        """One left-padded forward pass over the rows `idx` of `ids`; their choice distributions into `out`."""
        dev = self.model.device
        S = max(len(ids[i]) for i in idx)
        inp = torch.full((len(idx), S), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), S), dtype=torch.long)
        for r, i in enumerate(idx):
            inp[r, S - len(ids[i]):] = torch.tensor(ids[i])
            mask[r, S - len(ids[i]):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=inp.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                            use_cache=False, logits_to_keep=1).logits[:, -1].float()
        for r, p in _choice_mass(logits, list(range(len(idx))), targets.per_choice).items():
            out[idx[r]] = p

    def _score_done(self, toks: list[int]) -> bool:
        # Cheap tail checks first; decode the whole row only when a score line may be ending.
        if "Score" not in self._tail(toks, 6):
            return False
        tail = self.tok.decode(toks[-6:], skip_special_tokens=True)
        if "Score" not in tail:
            return False
        return rubric.score_line_complete(self.tok.decode(toks, skip_special_tokens=True))


def _choice_mass(logits: torch.Tensor, slots: list[int], per_choice: list[list[int]]) -> dict[int, list[float]]:
    """Per slot (row of logits), the softmax mass of each choice's token ids, renormalised over the
    choices: a softmax over each choice's logsumexp, the same numbers without the full softmax's
    underflow when the choices are far from the most likely token."""
    if not slots:
        return {}
    rows = logits[slots].float()
    per = torch.stack([torch.logsumexp(rows[:, ids], dim=-1) for ids in per_choice], dim=-1)
    return {s: row.tolist() for s, row in zip(slots, torch.softmax(per, dim=-1).cpu())}  # one copy to the host


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
    if probs.is_cuda:  # a full sort is cheap there, and the check below would wait for the GPU every step
        top, idx = probs.sort(-1, descending=True)
    else:
        top, idx = probs.topk(min(TOP_P_CANDIDATES, probs.shape[-1]), dim=-1)
        if (top.sum(-1) <= top_p).any():
            top, idx = probs.sort(-1, descending=True)  # a flat row: its nucleus may extend past the top k
    # Keep the smallest set whose mass reaches top_p (the top token always survives).
    cum = top.cumsum(-1)
    top = top.masked_fill((cum - top) > top_p, 0.0)
    return idx.gather(-1, torch.multinomial(top, 1, generator=gen)).squeeze(1)


# Threads are set once per process; tokenizers' own pool would fight torch's for 2 cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
