"""The measuring parts of benchmarks/gpu_check.sh, on one CUDA GPU (it runs each in its own process,
under its own timeout). Needs srlm and its wheels importable (gpu_check.sh sets that up).

  python benchmarks/gpu_peer.py generate [--repeats 2] [key=value ...]
  python benchmarks/gpu_peer.py profile [--tokens 64] [key=value ...]
  python benchmarks/gpu_peer.py dpo [--steps 2] [key=value ...]
  python benchmarks/gpu_peer.py tiny RUN_DIR [key=value ...]

generate: sampling and judging, srlm against the competent plain-transformers peer, alternated,
median of --repeats after one untimed full-size call of each (the first run of 2026-12-04 showed
the peer's first full call at 3x its second). srlm: `srlm.engines.backends.make_backend` on the
default config (the transformers backend: bf16 and CUDA picked by srlm/modeling.pick_dtype and
backends/hf._device). Peer: the same weights in bf16 on the GPU, SDPA attention, left padding,
one batched `model.generate` per batch with num_return_sequences (each prompt's prefill repeated
n times), judgments stopped at their score line with stop_strings. Same prompts, sizes and
sampling settings: the default config's sampling chunk (24 prompts x N=4 = 96 rows, 192 new tokens
at most) and judging chunk (32 seed answers x K=3 = 96 rows, 128 new tokens at most). Judging is
measured twice for srlm: parsed scores (the same work as the peer) and the default config's
expected scoring with its repetition cut (forced score prefixes the peer does not read). Then
greedy evaluation: IFEval answers as `srlm eval` writes them (--ifeval-prompts, verified.yaml's
token cap) against the peer's greedy generate, with counts of identical answers. srlm runs as it
does by default on CUDA (decode steps replayed from a CUDA graph, backend.cuda_graphs) and once more
with eager steps (backend.cuda_graphs=false), for the graphs' share.
Metric: generated tokens per second (EOS excluded), and judgments per second.
The other benchmarks (bench_sampling.py, bench_judging.py) compare against a naive fp32 loop on
the CPU and have no device option, hence this script.

profile: one sampling chunk of each path (srlm with graphs, srlm with eager steps, the peer; --tokens
decode steps) under torch.profiler, after one
untimed call of each: kernel launches, host<->device copies and synchronisations per decode step,
and the costliest host ops; why srlm trails the peer on a GPU (not in gpu_check.sh's default parts:
GPU_CHECK_PARTS="generate profile").

dpo: one DPO optimizer step per --steps, as the DPO stage builds its trainer (srlm.loop.dpo.train, as
benchmarks/bench_dpo.py times it): the default config's dpo section with dpo.epochs=1 and
dpo.batch_size pairs per step, once with LoRA (the default) and once as a full fine-tune; both
bf16 mixed precision on CUDA (srlm.engines.training.trainer_kwargs). Per step: seconds (CUDA-synchronised
at the callback's step begin/end); setup: trainer construction, tokenising and the reference
log-probs; peak CUDA memory.

tiny: `srlm run --config tiny --output-dir RUN_DIR` in this process (srlm.cli.main), then what it
left: exit status, models, pairs per iteration and the peak CUDA memory it allocated (0 would mean
it never ran on the GPU, which fails this part).

Lines `RATIO ... srlm/peer = ...` are the results; `SUMMARY<TAB>measure<TAB>srlm<TAB>peer<TAB>ratio`
and `RESULT <text>` lines feed gpu_check.sh's closing table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, "..", "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

if not torch.cuda.is_available():
    sys.exit(f"gpu_peer: refused: torch.cuda.is_available() is False (torch {torch.__version__})")

DEV = "cuda"


def summary(measure: str, srlm, peer, ratio) -> None:
    print("SUMMARY\t" + "\t".join(str(x) for x in (measure, srlm, peer, ratio)), flush=True)


def plain_model_dir(cfg, out: str) -> str:
    """The config's M0 as a plain transformers directory (the embedded model is a GGUF file that
    would be dequantised on every load), so both sides load the same weights the plain way."""
    from srlm.engines.modeling import load_model, load_tokenizer, resolve, save_model

    path = os.path.join(out, "M0")
    ref = resolve(cfg.model.name_or_path)
    save_model(load_model(ref), load_tokenizer(ref), path)
    return path


# --- generate ----------------------------------------------------------------------------------

def both_paths(overrides):
    """The default config (with overrides), the peer and srlm's backend on the same plain weights.
    The peer is loaded first: its model never passes through srlm."""
    from srlm.engines.backends import make_backend
    from srlm.engines.modeling import ModelRef
    from srlm.run.config import load_config, packaged_config

    cfg = load_config(packaged_config("default"), overrides)
    model_dir = plain_model_dir(cfg, tempfile.mkdtemp(prefix="srlm-gpu-peer-"))
    return cfg, Peer(model_dir, cfg.backend.batch_size), make_backend(cfg, ModelRef(model_dir))


def eager_steps(backend, fn):
    """`fn` with srlm's backend on eager decode steps (backend.cuda_graphs=false) for the call."""
    def run():
        inner = getattr(backend, "inner", backend)
        was, inner.fixed_steps = inner.fixed_steps, False
        try:
            return fn()
        finally:
            inner.fixed_steps = was
    return run


class CountingBackend:
    """srlm's backend, counting the tokens its generate calls return."""

    def __init__(self, inner):
        self.inner, self.tokens = inner, 0

    def generate(self, chats, params, seed):
        out = self.inner.generate(chats, params, seed)
        self.tokens += sum(c.num_tokens for row in out for c in row)
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Peer:
    """The plain-transformers path a competent user writes on a GPU (generation: common.peer_generate)."""

    def __init__(self, model_dir: str, batch_size: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                          attn_implementation="sdpa").to(DEV).eval()
        self.batch_size = batch_size

    def generate(self, chats, n, max_new_tokens, temperature, top_p, seed, stop_strings=None):
        """(n texts per chat, generated tokens), batch_size // n prompts per `generate` call."""
        from common import peer_generate

        return peer_generate(self.model, self.tok, chats, n, max_new_tokens, temperature, top_p, seed,
                             batch_prompts=self.batch_size // n, stop_strings=stop_strings)


def cmd_generate(args) -> int:
    from common import alternate, eval_prompts, ift_examples, median, table

    from srlm.data import rubric
    from srlm.engines.backends.base import SamplingParams
    from srlm.loop.judge import judge_texts

    cfg, peer, inner = both_paths(args.overrides)
    backend = CountingBackend(inner)
    m = backend.inner.model
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}; srlm backend {type(backend.inner).__name__} "
          f"{m.dtype} on {m.device} (attention {m.config._attn_implementation}); peer {peer.model.dtype} on "
          f"{peer.model.device} (attention {peer.model.config._attn_implementation}); batch {cfg.backend.batch_size} rows",
          flush=True)
    assert m.device.type == "cuda", "srlm's backend did not put the model on the GPU"

    # Sampling: one sampling chunk of the default config.
    s = cfg.sample
    chats = [[{"role": "user", "content": p}] for p in eval_prompts(args.prompts or s.chunk_size)]
    params = SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens)
    print(f"sampling: {len(chats)} prompts x N={s.n}, {s.max_new_tokens} new tokens at most, "
          f"temperature {s.temperature}, top_p {s.top_p}", flush=True)
    warm = SamplingParams(n=2, temperature=s.temperature, top_p=s.top_p, max_new_tokens=8)
    backend.generate(chats[:2], warm, seed=1)
    peer.generate(chats[:2], 2, 8, s.temperature, s.top_p, seed=1)

    def srlm_sample():
        backend.tokens = 0
        backend.generate(chats, params, seed=0)
        return backend.tokens

    def peer_sample():
        return peer.generate(chats, s.n, s.max_new_tokens, s.temperature, s.top_p, seed=0)[1]

    times, toks = alternate({"peer": peer_sample, "srlm": srlm_sample, "srlm (eager steps)":
                             eager_steps(backend, srlm_sample)}, args.repeats, warmup=True)
    rate = {k: toks[k] / median(times[k]) for k in times}
    print(table([[k, toks[k], f"{median(times[k]):.2f}", f"{rate[k]:.0f}"] for k in times],
                ["path", "generated tokens", "median s", "tokens/s"]))
    r, re = rate["srlm"] / rate["peer"], rate["srlm (eager steps)"] / rate["peer"]
    print(f"RATIO sampling tokens/s srlm/peer = {r:.2f}x (eager steps: {re:.2f}x)", flush=True)
    summary("sampling, generated tokens/s", f"{rate['srlm']:.0f}", f"{rate['peer']:.0f}", f"{r:.2f}x")
    summary("sampling, generated tokens/s, eager steps", f"{rate['srlm (eager steps)']:.0f}", f"{rate['peer']:.0f}",
            f"{re:.2f}x")

    # Judging: one judging chunk of the default config.
    j = cfg.judge
    template = rubric.load_template(j.template)
    items = [(e.prompt, e.response) for e in ift_examples(args.candidates or j.chunk_size)]
    jchats = [[{"role": "user", "content": rubric.render(template, p, r)}] for p, r in items]
    parsed_cfg = j.model_copy(update={"scoring": "parsed", "stop_repetition": 0})
    stops = [f"Score: {d}" for d in range(rubric.MAX_SCORE + 1)]
    n_judgments = len(items) * j.k
    print(f"judging: {len(items)} answers x K={j.k} = {n_judgments} judgments, {j.max_new_tokens} new tokens at "
          f"most; srlm default scoring: {j.scoring}, stop_repetition {j.stop_repetition}", flush=True)
    judge_texts(backend, template, items[:2], 2, parsed_cfg.model_copy(update={"max_new_tokens": 8}), seed=1)
    peer.generate(jchats[:2], 2, 8, j.temperature, j.top_p, seed=1, stop_strings=stops)
    judged = {}

    def srlm_judge(jcfg, name):
        def run():
            backend.tokens = 0
            judged[name] = [sc for row in judge_texts(backend, template, items, j.k, jcfg, seed=0) for _, sc, _ in row]
            return backend.tokens
        return run

    def peer_judge():
        rows, tokens = peer.generate(jchats, j.k, j.max_new_tokens, j.temperature, j.top_p, seed=0, stop_strings=stops)
        judged["peer"] = [rubric.parse_score(rubric.truncate_after_score(t))[0] for row in rows for t in row]
        return tokens

    fns = {"peer": peer_judge, "srlm (parsed)": srlm_judge(parsed_cfg, "srlm (parsed)"),
           "srlm (parsed, eager steps)": eager_steps(backend, srlm_judge(parsed_cfg, "srlm (parsed, eager steps)"))}
    default_name = f"srlm (default: {j.scoring}, stop_repetition {j.stop_repetition})"
    if (j.scoring, j.stop_repetition) != ("parsed", 0):
        fns[default_name] = srlm_judge(j, default_name)
    times, toks = alternate(fns, args.repeats, warmup=True)
    jps = {k: n_judgments / median(times[k]) for k in times}
    tps = {k: toks[k] / median(times[k]) for k in times}
    print(table([[k, n_judgments, toks[k], f"{median(times[k]):.2f}", f"{jps[k]:.1f}", f"{tps[k]:.0f}",
                  f"{sum(x is not None for x in judged[k])}/{n_judgments}"] for k in times],
                ["path", "judgments", "generated tokens", "median s", "judgments/s", "tokens/s", "scored"]))
    rj, rt = jps["srlm (parsed)"] / jps["peer"], tps["srlm (parsed)"] / tps["peer"]
    print(f"RATIO judging judgments/s srlm/peer = {rj:.2f}x (parsed scores on both sides)")
    print(f"RATIO judging tokens/s srlm/peer = {rt:.2f}x (parsed scores on both sides)")
    summary("judging, judgments/s (parsed)", f"{jps['srlm (parsed)']:.1f}", f"{jps['peer']:.1f}", f"{rj:.2f}x")
    summary("judging, generated tokens/s (parsed)", f"{tps['srlm (parsed)']:.0f}", f"{tps['peer']:.0f}", f"{rt:.2f}x")
    re = jps["srlm (parsed, eager steps)"] / jps["peer"]
    print(f"RATIO judging judgments/s srlm/peer = {re:.2f}x (parsed scores, eager steps)")
    summary("judging, judgments/s (parsed, eager steps)", f"{jps['srlm (parsed, eager steps)']:.1f}",
            f"{jps['peer']:.1f}", f"{re:.2f}x")
    if default_name in jps:
        rd = jps[default_name] / jps["peer"]
        print(f"RATIO judging judgments/s srlm/peer = {rd:.2f}x ({default_name}: a forward pass per judgment more "
              "than the peer makes)")
        summary(f"judging, judgments/s ({j.scoring})", f"{jps[default_name]:.1f}", f"{jps['peer']:.1f}", f"{rd:.2f}x")
    greedy_eval(args, backend, peer)
    print(f"RESULT peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


def greedy_eval(args, backend, peer) -> None:
    """Greedy IFEval answers as `srlm eval` writes them (srlm.evaluation.ifeval.answer) against the
    peer's one batched greedy `generate` per batch: verified.yaml's token cap, --ifeval-prompts
    prompts; how many answers are the same text on both paths, and on srlm's two step kinds."""
    from common import alternate, fitting_ifeval_prompts, median, table

    from srlm.evaluation.ifeval import answer
    from srlm.run.config import load_config, packaged_config

    cap = args.ifeval_max_new_tokens or load_config(packaged_config("verified")).eval.ifeval_max_new_tokens
    prompts, chats = fitting_ifeval_prompts(backend.inner, args.ifeval_prompts, 42, cap)
    print(f"greedy eval: {len(prompts)} IFEval prompts, {cap} new tokens at most", flush=True)
    texts = {}

    def srlm(name):
        def run():
            rows = answer(backend.inner, prompts, cap, seed=0)
            texts[name] = [r["response"] for r in rows]
            return sum(r["num_tokens"] for r in rows)
        return run

    def peer_greedy():
        rows, tokens = peer.generate(chats, 1, cap, 0.0, 1.0, seed=0)
        texts["peer"] = [r[0] for r in rows]
        return tokens

    times, toks = alternate({"peer": peer_greedy, "srlm": srlm("srlm"),
                             "srlm (eager steps)": eager_steps(backend, srlm("srlm (eager steps)"))},
                            args.repeats, warmup=True)
    rate = {k: toks[k] / median(times[k]) for k in times}
    same = {k: sum(a == b for a, b in zip(texts[k], texts["peer"])) for k in times}
    print(table([[k, toks[k], f"{median(times[k]):.2f}", f"{rate[k]:.0f}", f"{same[k]}/{len(prompts)}"] for k in times],
                ["path", "generated tokens", "median s", "tokens/s", "same text as the peer"]))
    graph_eager = sum(a == b for a, b in zip(texts["srlm"], texts["srlm (eager steps)"]))
    print(f"greedy answers identical, srlm graphs vs srlm eager steps: {graph_eager}/{len(prompts)}")
    r, re = rate["srlm"] / rate["peer"], rate["srlm (eager steps)"] / rate["peer"]
    print(f"RATIO greedy-eval tokens/s srlm/peer = {r:.2f}x (eager steps: {re:.2f}x)", flush=True)
    summary("greedy eval, generated tokens/s", f"{rate['srlm']:.0f}", f"{rate['peer']:.0f}", f"{r:.2f}x")
    summary("greedy eval, generated tokens/s, eager steps", f"{rate['srlm (eager steps)']:.0f}", f"{rate['peer']:.0f}",
            f"{re:.2f}x")
    summary("greedy eval, same text: graphs vs eager; vs peer", f"{graph_eager}/{len(prompts)}",
            f"{same['srlm']}/{len(prompts)}", "")


# --- profile -----------------------------------------------------------------------------------

def cmd_profile(args) -> int:
    """One sampling call of srlm's backend and one of the peer under torch.profiler: per decode
    step, the kernel launches, host<->device copies and synchronisations each path makes, and
    the host ops that cost the most. The question it answers: why is srlm slower than the peer
    on a GPU (docs/BENCHMARKS.md, "GPU check")."""
    from common import eval_prompts

    from torch.profiler import ProfilerActivity, profile

    from srlm.engines.backends.base import SamplingParams

    cfg, peer, backend = both_paths(args.overrides)
    s = cfg.sample
    chats = [[{"role": "user", "content": p}] for p in eval_prompts(s.chunk_size)]
    steps = args.tokens
    params = SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_new_tokens=steps)
    fns = {"srlm": lambda: backend.generate(chats, params, seed=0),
           "srlm (eager steps)": eager_steps(backend, lambda: backend.generate(chats, params, seed=0)),
           "peer": lambda: peer.generate(chats, s.n, steps, s.temperature, s.top_p, seed=0)}
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    watch = {"launches": ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"),
             "copies": ("cudaMemcpyAsync", "cudaMemcpy"), "syncs": ("cudaStreamSynchronize", "cudaDeviceSynchronize"),
             "graph replays": ("cudaGraphLaunch",)}
    print(f"{len(chats)} prompts x N={s.n}, {steps} new tokens at most (rows finishing early make a step shorter)")
    for name, fn in fns.items():
        fn()  # warm: kernel selection and allocator growth out of the trace
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            fn()
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        ev = prof.key_averages()
        per_step = {k: sum(e.count for e in ev if e.key in names) / steps for k, names in watch.items()}
        print(f"\n== {name}: {wall:.2f} s under the profiler; per decode step: "
              + ", ".join(f"{k} {v:.0f}" for k, v in per_step.items()))
        print(ev.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
        summary(f"profile {name}: per step launches, copies, syncs, graph replays", " / ".join(f"{v:.0f}" for v in per_step.values()),
                "", "")
    print("RESULT profile printed (per-step launches / copies / syncs in the summary)")
    return 0


class TimedBackend:
    """srlm's backend, timing (CUDA-synchronised) and counting its generate and score_probs calls."""

    def __init__(self, inner):
        self.inner = inner
        self.reset()

    def reset(self):
        self.secs = {"generate": 0.0, "score_probs": 0.0}
        self.rows = {"generate": 0, "score_probs": 0}

    def _timed(self, name, fn, rows, *a, **kw):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(*a, **kw)
        torch.cuda.synchronize()
        self.secs[name] += time.perf_counter() - t
        self.rows[name] += rows
        return out

    def generate(self, chats, params, seed):
        return self._timed("generate", self.inner.generate, len(chats) * params.n, chats, params, seed)

    def score_probs(self, chats, prefixes):
        return self._timed("score_probs", self.inner.score_probs, len(chats), chats, prefixes)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def cmd_profile_judging(args) -> int:
    """One judging chunk of the default config through srlm (srlm.loop.judge.judge_items), parsed
    against expected scoring, no peer: where expected scoring's extra time goes (decode with forced
    score prefixes, the separate pass over judgments whose forced prefix is too long, the rest of
    the judge on the host), then the expected run under torch.profiler."""
    from common import ift_examples, median

    from torch.profiler import ProfilerActivity, profile

    from srlm.data import rubric
    from srlm.loop.judge import judge_items

    cfg, _, inner = both_paths(args.overrides)
    backend = TimedBackend(inner)
    j = cfg.judge
    template = rubric.load_template(j.template)
    items = [(e.prompt, e.response) for e in ift_examples(j.chunk_size)]
    modes = {"parsed": j.model_copy(update={"scoring": "parsed", "stop_repetition": 0}),
             f"expected, stop_repetition {j.stop_repetition}": j.model_copy(update={"scoring": "expected"})}
    print(f"judging: {len(items)} answers x K={j.k}, {j.max_new_tokens} new tokens at most", flush=True)
    for name, jc in modes.items():
        judge_items(backend, template, items, j.k, jc, seed=0)  # warm
        walls, parts = [], []
        for _ in range(args.repeats):
            backend.reset()
            torch.cuda.synchronize()
            t = time.perf_counter()
            rows = judge_items(backend, template, items, j.k, jc, seed=0)
            torch.cuda.synchronize()
            walls.append(time.perf_counter() - t)
            parts.append((dict(backend.secs), dict(backend.rows)))
        secs, nrows = parts[walls.index(median(walls))] if median(walls) in walls else parts[0]
        js = [jd for row in rows for jd in row]
        forced = sum(jd.forced for jd in js)
        print(f"== {name}: median {median(walls):.3f} s of {len(walls)}; in generate {secs['generate']:.3f} s "
              f"({nrows['generate']} rows), in score_probs {secs['score_probs']:.3f} s ({nrows['score_probs']} rows), "
              f"the rest {median(walls) - secs['generate'] - secs['score_probs']:.3f} s; scored "
              f"{sum(jd.score is not None for jd in js)}/{len(js)}, forced prefixes {forced} "
              f"(of which read in the decode: {forced - nrows['score_probs']})", flush=True)
        summary(f"judging {name}: s (generate, score_probs rows)", f"{median(walls):.3f}",
                f"{secs['generate']:.3f}, {secs['score_probs']:.3f} ({nrows['score_probs']})", "")
    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    jc = modes[list(modes)[-1]]
    with profile(activities=acts) as prof:
        judge_items(backend, template, items, j.k, jc, seed=0)
        torch.cuda.synchronize()
    ev = prof.key_averages()
    print(ev.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60))
    print("RESULT judging profile printed")
    return 0


# --- dpo ---------------------------------------------------------------------------------------

def cmd_dpo(args) -> int:
    from bench_dpo import make_pairs
    from common import table

    from srlm.engines.modeling import ModelRef, load_model, load_tokenizer
    from srlm.loop import dpo
    from srlm.run.config import load_config, packaged_config
    from srlm.run.records import PairRecord

    base = load_config(packaged_config("default"), ["dpo.epochs=1", *args.overrides])
    out = tempfile.mkdtemp(prefix="srlm-gpu-dpo-")
    model_dir = plain_model_dir(base, out)
    per_step = base.dpo.batch_size
    pairs = [PairRecord("p", "p", p["prompt"], p["chosen"], p["rejected"], "c", "r", 1, 0, 1, 1)
             for p in make_pairs(args.steps * per_step)]
    marks: dict[str, list[float]] = {}

    class TimedFaults(dpo.TrainerFaults):
        """dpo.train's own callback, plus CUDA-synchronised marks at each optimizer step's begin/end."""

        def on_step_begin(self, a, state, control, **kw):
            torch.cuda.synchronize()
            marks["begin"].append(time.perf_counter())
            return super().on_step_begin(a, state, control, **kw)

        def on_step_end(self, a, state, control, **kw):
            torch.cuda.synchronize()
            marks["end"].append(time.perf_counter())
            return super().on_step_end(a, state, control, **kw)

    dpo.TrainerFaults = TimedFaults
    rows, failed = [], 0
    for name, override in (("LoRA", "dpo.lora=true"), ("full", "dpo.lora=false")):
        cfg = load_config(packaged_config("default"), ["dpo.epochs=1", *args.overrides, override])
        marks.update(begin=[], end=[])
        try:
            tok = load_tokenizer(ModelRef(model_dir))
            model = load_model(ModelRef(model_dir), torch.float32)  # as training.load_for_training
            model.train()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            trainer = dpo.train(cfg, model, tok, pairs, os.path.join(out, f"ck-{name}"))
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            # A step: from the previous step's end (the first: its own begin) to its end, so the
            # accumulation micro-batches, the optimizer and the logging are all in it.
            ends = marks["end"]
            starts = marks["begin"][:1] + ends[:-1]
            steps = [e - b for b, e in zip(starts, ends)]
            setup = marks["begin"][0] - t0 if marks["begin"] else float("nan")
            peak = torch.cuda.max_memory_allocated() / 2**30
            on = next(trainer.model.parameters()).device
            prec = "bf16 autocast" if trainer.args.bf16 else "fp32"
            first, last = (steps[0], steps[-1]) if steps else (float("nan"), float("nan"))
            rows.append([name, prec, str(on), per_step, len(steps), f"{setup:.2f}", f"{first:.3f}", f"{last:.3f}",
                         f"{wall:.2f}", f"{peak:.2f}"])
            summary(f"DPO {name}: s/step (first, last), {per_step} pairs", f"{first:.3f}, {last:.3f}", "", "")
            summary(f"DPO {name}: peak CUDA GiB", f"{peak:.2f}", "", "")
            if on.type != "cuda":
                print(f"DPO {name}: the trainer's model is on {on}, not on the GPU")
                failed += 1
            del trainer, model
        except Exception as e:  # noqa: BLE001 - report it and still time the other variant
            import traceback

            traceback.print_exc()
            print(f"RESULT DPO {name} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            failed += 1
        gc.collect()
        torch.cuda.empty_cache()
    print(table(rows, ["variant", "precision", "device", "pairs/step", "steps", "setup s", "first step s",
                       "last step s", "train() s", "peak CUDA GiB"]))
    if rows and not failed:
        print("RESULT " + "; ".join(f"{r[0]} {r[7]} s/step ({r[3]} pairs, {r[9]} GiB)" for r in rows))
    return 1 if failed else 0


# --- tiny --------------------------------------------------------------------------------------

def cmd_tiny(args) -> int:
    from srlm.cli import main

    t0 = time.perf_counter()
    rc = main(["run", "--config", "tiny", "--output-dir", args.run_dir, *args.overrides])
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30
    models = sorted(os.listdir(os.path.join(args.run_dir, "models"))) if os.path.isdir(
        os.path.join(args.run_dir, "models")) else []
    metrics = {}
    path = os.path.join(args.run_dir, "metrics.json")
    if os.path.exists(path):
        with open(path) as f:
            metrics = json.load(f)
    pairs = [f"{g}: {v.get('dpo/pairs')} pairs" for g, v in sorted(metrics.items())
             if g.startswith("iter_") and isinstance(v, dict) and "dpo/pairs" in v]
    print(f"srlm run --config tiny: exit {rc}, {wall:.0f} s, models {models}, {'; '.join(pairs) or 'no DPO metrics'}, "
          f"peak CUDA memory {peak:.2f} GiB")
    if rc == 0 and peak == 0:
        print("RESULT ran, but allocated nothing on the GPU: the run did not use CUDA")
        return 1
    print(f"RESULT exit {rc}, {wall:.0f} s, {len(models)} models ({', '.join(models)}), {'; '.join(pairs)}, "
          f"peak CUDA {peak:.2f} GiB")
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="sampling and judging: srlm's backend vs the plain-transformers peer")
    g.add_argument("--repeats", type=int, default=2)
    g.add_argument("--prompts", type=int, default=0, help="sampling prompts (default: sample.chunk_size)")
    g.add_argument("--candidates", type=int, default=0, help="answers to judge (default: judge.chunk_size)")
    g.add_argument("--ifeval-prompts", type=int, default=96, help="IFEval prompts answered greedily")
    g.add_argument("--ifeval-max-new-tokens", type=int, default=0, help="default: verified.yaml's eval cap")
    pr = sub.add_parser("profile", help="srlm's decode against the peer's under torch.profiler: per-step "
                        "kernel launches, copies, syncs and the costliest host ops")
    pr.add_argument("--tokens", type=int, default=64, help="new tokens per row (decode steps)")
    pj = sub.add_parser("profile-judging", help="srlm's judging, parsed against expected scoring: where the "
                        "extra time goes, and the expected run under torch.profiler")
    pj.add_argument("--repeats", type=int, default=3)
    d = sub.add_parser("dpo", help="DPO steps as the DPO stage builds its trainer, LoRA and full fine-tune")
    d.add_argument("--steps", type=int, default=2, help="optimizer steps (dpo.batch_size pairs each)")
    t = sub.add_parser("tiny", help="srlm run --config tiny into RUN_DIR")
    t.add_argument("run_dir")
    for p in (g, pr, pj, d, t):
        p.add_argument("overrides", nargs="*", help="config overrides (default config; tiny: the tiny config)")
    args = ap.parse_args()
    return {"generate": cmd_generate, "profile": cmd_profile, "profile-judging": cmd_profile_judging, "dpo": cmd_dpo,
            "tiny": cmd_tiny}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
