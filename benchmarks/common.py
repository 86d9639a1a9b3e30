"""Shared by the benchmark scripts: the embedded model on every path, fixed prompts, timing.

Every benchmark measures srlm and its baselines in the same process run, alternating, and
reports the median of several repeats, then final `RATIO ...` lines. Two baselines:
naive (what public implementations do: fp32, one `model.generate` per sample) and the peer
(what a competent plain-transformers user writes: srlm's dtype, SDPA attention, left padding,
one batched `model.generate` per batch with num_return_sequences).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from srlm import pipeline  # noqa: E402
from srlm.data import loaders  # noqa: E402
from srlm.engines.backends.hf import HFBackend  # noqa: E402
from srlm.engines.modeling import load_model, load_tokenizer, pick_dtype, resolve, set_threads  # noqa: E402
from srlm.loop import sft  # noqa: E402
from srlm.run.config import EMBEDDED_EVAL_PROMPTS, EMBEDDED_IFT, EMBEDDED_MODEL  # noqa: E402
from srlm.run.records import mark_done  # noqa: E402
from srlm.run.rundir import RunDir  # noqa: E402
from srlm.stages import schedule  # noqa: E402

DEMO_M1 = os.path.join(os.path.dirname(__file__), "..", "runs", "default", "models", "M1")


def place_m1(cfg, run_dir: str, m1_dir: str = DEMO_M1) -> str:
    """Give run_dir its M1: a copy of the demo run's SFT'd model, so judgments parse and DPO
    trains; without that run, the embedded M0 saved as M1 (cfg has sft.enabled=false)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    path = rd.model(1)
    if os.path.isdir(m1_dir):
        shutil.copytree(m1_dir, path)
    else:
        sft.run(cfg, rd, resolve(cfg.model.name_or_path))
    mark_done(path)
    return path


def start_run(cfg, m1_dir: str = DEMO_M1) -> RunDir:
    """cfg.output_dir prepared as `srlm run` prepares it (config saved), with its M1 placed."""
    rd = pipeline.prepare(cfg)
    place_m1(cfg, rd, m1_dir)
    return rd


def run_iteration(cfg, rd: RunDir, t: int, backends: pipeline.Backends | None = None) -> tuple[dict, dict]:
    """Iteration t's rows of the stage table, as `srlm run` runs them (one backend shared by the
    stages that generate with M_t, closed before training). `backends` may come with M_t's engine
    already open (its load then outside the timing). Returns ({stage: wall seconds}, the stages'
    stats merged)."""
    backends = backends or pipeline.Backends(cfg)
    times, stats = {}, {}
    try:
        for stage, ti in schedule(cfg):
            if ti != t:
                continue
            if stage.model is None:
                backends.close()
            start = time.perf_counter()
            out, _ = pipeline.run_stage(stage, cfg, rd, t, backends)
            times[stage.name] = time.perf_counter() - start
            stats.update(out)
    finally:
        backends.close()
    return times, stats


def machine() -> str:
    cpu = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:  # noqa: BLE001
        pass
    return f"nproc={os.cpu_count()} cpu={cpu!r} torch={torch.__version__} date={time.strftime('%Y-%m-%d')}"


def embedded_ref():
    return resolve(EMBEDDED_MODEL)


def naive_model():
    """The path public implementations take: fp32, one `generate` call per sample."""
    set_threads(0)
    ref = embedded_ref()
    return load_model(ref, torch.float32), load_tokenizer(ref)


def srlm_backend(batch_size: int = 32) -> HFBackend:
    set_threads(0)
    ref = embedded_ref()
    return HFBackend(load_model(ref, pick_dtype("auto")), load_tokenizer(ref), batch_size)


def eval_prompts(n: int) -> list[str]:
    return [p["prompt"] for p in loaders.load_prompts(EMBEDDED_EVAL_PROMPTS, n)]


def fitting_ifeval_prompts(backend, n: int, seed: int, max_new_tokens: int) -> tuple[list[dict], list]:
    """(prompts, chats): the first n IFEval prompts of the draw `seed` (as `srlm eval` draws them)
    that leave room for max_new_tokens in the backend's context (ifeval.answer skips the others),
    so every path answers the same prompts."""
    from srlm.data.ifeval_checks import load_prompts

    drawn = load_prompts(n, seed)
    chats = [[{"role": "user", "content": p["prompt"]}] for p in drawn]
    room = backend.context_window - max_new_tokens
    fits = [k <= room for k in backend.count_prompt_tokens(chats)]
    return [p for p, ok in zip(drawn, fits) if ok], [c for c, ok in zip(chats, fits) if ok]


def ift_examples(n: int):
    return loaders.load_ift([EMBEDDED_IFT], n)


def naive_generate(model, tok, chat, *, max_new_tokens, temperature, top_p, seed, stop_strings=None):
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                             temperature=temperature if temperature > 0 else None, top_p=top_p if temperature > 0 else None,
                             pad_token_id=tok.pad_token_id)
    new = out[0][ids["input_ids"].shape[1]:]
    return tok.decode(new, skip_special_tokens=True), int((new != tok.pad_token_id).sum())


def peer_model(ref=None, device: str | None = None):
    """The competent plain-transformers peer's model and tokenizer: the same weights in the dtype
    srlm picks (pick_dtype("auto"): bf16 on a GPU or a CPU with fast bf16, else fp32), SDPA
    attention, a tokenizer that pads on the left. A model instance of its own, which never
    passes through HFBackend, so srlm's decode-attention patch (_compat.use_decode_attention)
    is not on it."""
    set_threads(0)
    ref = ref or embedded_ref()
    model = load_model(ref, pick_dtype("auto"), device=device)
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        model.set_attn_implementation("sdpa")
    tok = load_tokenizer(ref)
    tok.padding_side = "left"
    return model, tok


def peer_eos(model, tok) -> list[int]:
    """The tokens that end a generation: the tokenizer's EOS and the generation config's."""
    eos = {tok.eos_token_id}
    g = model.generation_config.eos_token_id
    eos.update(g if isinstance(g, (list, tuple)) else [g] if g is not None else [])
    return sorted(int(x) for x in eos if x is not None)


@torch.inference_mode()
def peer_generate(model, tok, chats, n, max_new_tokens, temperature, top_p, seed, batch_prompts,
                  stop_strings=None):
    """The peer's generation: per batch of `batch_prompts` chats one `model.generate` call,
    left-padded, num_return_sequences=n (each prompt's prefill repeated n times); sampling with
    temperature and top_p alone (no top-k, as srlm), greedy when temperature == 0; stopped at any
    of `stop_strings` if given. Returns (n texts per chat, generated tokens), the tokens counted
    up to and not including the first EOS or pad."""
    eos = peer_eos(model, tok)
    ends = torch.tensor(sorted(set(eos) | {tok.pad_token_id}), device=model.device)
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    batch_prompts = max(1, batch_prompts)
    torch.manual_seed(seed)
    out, tokens = [], 0
    for s in range(0, len(texts), batch_prompts):
        enc = tok(texts[s:s + batch_prompts], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        kw = dict(stop_strings=stop_strings, tokenizer=tok) if stop_strings else {}
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        g = model.generate(**enc, max_new_tokens=max_new_tokens, num_return_sequences=n,
                           pad_token_id=tok.pad_token_id, eos_token_id=eos, **kw)
        new = g[:, enc["input_ids"].shape[1]:]
        tokens += int((torch.isin(new, ends).cumsum(1) == 0).sum())
        decoded = tok.batch_decode(new, skip_special_tokens=True)
        out += [decoded[i * n:(i + 1) * n] for i in range(len(decoded) // n)]
    return out, tokens


def alternate(fns: dict, repeats: int, warmup: bool = False) -> dict[str, list[float]]:
    """Run each callable `repeats` times, alternating, return {name: [seconds...]}. warmup: one
    untimed full-size call of each first (on a GPU the first call at a new shape can take 3x as
    long: kernel selection and allocator growth)."""
    times = {k: [] for k in fns}
    results = {k: None for k in fns}
    if warmup:
        for k in fns:
            t = time.perf_counter()
            fns[k]()
            print(f"  warm-up {k}: {time.perf_counter() - t:.1f}s (not counted)", flush=True)
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for k in order:
            t = time.perf_counter()
            results[k] = fns[k]()
            times[k].append(time.perf_counter() - t)
            print(f"  repeat {r + 1} {k}: {times[k][-1]:.1f}s", flush=True)
    return times, results


def median(xs):
    return statistics.median(xs)


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NaiveBackend:
    """The baseline generation path behind srlm's backend interface: fp32, one
    `model.generate` call per sample, no batching, no prefix reuse, no early stop; expected
    scoring (judge.scoring=expected) by one more fp32 forward pass per judgment."""

    def __init__(self, model, tok):
        self.model, self.tok = model, tok

    @property
    def context_window(self):
        return int(self.model.config.max_position_embeddings)

    def count_prompt_tokens(self, chats):
        return [len(self.tok.apply_chat_template(c, add_generation_prompt=True, return_dict=False)) for c in chats]

    def generate(self, chats, params, seed):
        from srlm.data import rubric
        from srlm.engines.backends.base import Completion

        out = []
        for i, c in enumerate(chats):
            row = []
            for s in range(params.n):
                text, n = naive_generate(self.model, self.tok, c, max_new_tokens=params.max_new_tokens,
                                         temperature=params.temperature, top_p=params.top_p, seed=seed + 1000 * i + s)
                if params.stop_at_score:
                    text = rubric.truncate_after_score(text)
                row.append(Completion(text, n, "length" if n >= params.max_new_tokens else "stop"))
            out.append(row)
        return out

    @torch.inference_mode()
    def score_probs(self, chats, prefixes):
        """Per chat, the assistant turn begun with its prefix (a judgment ending in 'Score: '):
        the next-token mass on each score digit, over srlm's digit tokens, renormalised; one
        forward pass over the whole sequence per judgment."""
        from srlm.engines.backends.scoring import digit_token_ids

        digits = digit_token_ids(self.tok)
        out = []
        for c, p in zip(chats, prefixes):
            text = self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            text += p.rstrip(" ") if digits.spaced else p  # a spaced tokenizer writes " 3" as one token
            ids = self.tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.model.device)
            logits = self.model(input_ids=ids).logits[0, -1].float()
            mass = torch.stack([torch.logsumexp(logits[ids_], dim=-1) for ids_ in digits.per_choice])
            out.append(torch.softmax(mass, dim=-1).tolist())
        return out

    def close(self):
        pass
