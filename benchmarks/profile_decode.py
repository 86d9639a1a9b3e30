"""Where a decode step's time goes: torch.profiler over srlm's transformers backend on the
embedded model, as the sample stage (N=4 per prompt, nucleus sampling) or IFEval's greedy
answers run it. Prints the top operators by self CPU time and the share of wall time spent
outside torch operators (Python bookkeeping, sampling loop, tokenizer).
    python benchmarks/profile_decode.py [--mode sample|greedy] [--prompts 24] [--max-new-tokens 128]
"""

import argparse
import time

import torch
from common import eval_prompts, machine, srlm_backend
from torch.profiler import ProfilerActivity, profile

from srlm.data import ifeval_checks
from srlm.engines.backends.base import SamplingParams


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["sample", "greedy"], default="sample")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=96)
    ap.add_argument("--rows", type=int, default=30, help="operators to print")
    args = ap.parse_args()
    print(machine(), vars(args))
    backend = srlm_backend(batch_size=args.batch_size)
    if args.mode == "sample":
        chats = [[{"role": "user", "content": p}] for p in eval_prompts(args.prompts)]
        params = SamplingParams(n=4, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens)
    else:
        chats = [[{"role": "user", "content": p["prompt"]}] for p in ifeval_checks.load_prompts(args.prompts, 42)]
        params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    backend.generate(chats[:2], SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=4), 0)  # warm-up
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        outs = backend.generate(chats, params, 0)
    wall = time.perf_counter() - t0
    toks = sum(c.num_tokens for row in outs for c in row)
    avgs = prof.key_averages()
    print(avgs.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    # Self times of top-level ops only would double count nothing: sum of every op's self time.
    op_self = sum(e.self_cpu_time_total for e in avgs) / 1e6
    print(f"wall {wall:.1f} s (profiled), {toks} tokens, {toks / wall:.1f} tokens/s; torch ops' self time "
          f"{op_self:.1f} s; outside torch ops {wall - op_self:.1f} s ({(wall - op_self) / wall:.0%})")


if __name__ == "__main__":
    main()
