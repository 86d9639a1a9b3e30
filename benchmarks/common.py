"""Shared by the benchmark scripts: the embedded model on both paths, fixed prompts, timing.

Every benchmark measures srlm and its baseline in the same process run, alternating, and
reports the median of several repeats, then a final `RATIO ...` line.
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

from srlm.data import loaders  # noqa: E402
from srlm.engines.backends.hf import HFBackend  # noqa: E402
from srlm.engines.modeling import load_model, load_tokenizer, pick_dtype, resolve, set_threads  # noqa: E402
from srlm.loop import sft  # noqa: E402
from srlm.run.config import EMBEDDED_EVAL_PROMPTS, EMBEDDED_IFT, EMBEDDED_MODEL  # noqa: E402
from srlm.run.records import mark_done  # noqa: E402

DEMO_M1 = os.path.join(os.path.dirname(__file__), "..", "runs", "default", "models", "M1")


def place_m1(cfg, run_dir: str, m1_dir: str = DEMO_M1) -> str:
    """Give run_dir its M1: a copy of the demo run's SFT'd model, so judgments parse and DPO
    trains; without that run, the embedded M0 saved as M1 (cfg has sft.enabled=false)."""
    path = os.path.join(run_dir, "models", "M1")
    if os.path.isdir(m1_dir):
        shutil.copytree(m1_dir, path)
        mark_done(path)
    else:
        sft.run(cfg, run_dir, resolve(cfg.model.name_or_path))
    return path


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


def alternate(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Run each callable `repeats` times, alternating, return {name: [seconds...]}."""
    times = {k: [] for k in fns}
    results = {k: None for k in fns}
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
    `model.generate` call per sample, no batching, no prefix reuse, no early stop."""

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

    def close(self):
        pass
