"""Benchmark 1: the sampling stage, srlm vs the naive loop.

Naive: one fp32 `model.generate` call per sample, no batching (what public implementations do).
srlm: the transformers backend as the sample stage runs it (N samples share their prompt's
prefill, rows batched and sorted by length, bf16 on CPUs that have it).
Metric: generated tokens per second. Target: >= 8x.
    python benchmarks/bench_sampling.py [--prompts 8] [--n 4] [--max-new-tokens 96] [--repeats 3]
"""

import argparse
import json
import os

from common import alternate, eval_prompts, machine, median, naive_generate, naive_model, srlm_backend, table

from srlm.engines.backends.base import SamplingParams


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(machine())
    prompts = eval_prompts(args.prompts)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    model, tok = naive_model()
    backend = srlm_backend(batch_size=32)
    params = SamplingParams(n=args.n, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens)

    def naive():
        toks = 0
        for i, c in enumerate(chats):
            for s in range(args.n):
                toks += naive_generate(model, tok, c, max_new_tokens=args.max_new_tokens, temperature=0.7,
                                       top_p=0.9, seed=1000 * i + s)[1]
        return toks

    def fast():
        return sum(c.num_tokens for comps in backend.generate(chats, params, seed=0) for c in comps)

    times, tokens = alternate({"naive": naive, "srlm": fast}, args.repeats)
    rows, rates = [], {}
    for k in times:
        rates[k] = tokens[k] / median(times[k])
        rows.append([k, tokens[k], f"{median(times[k]):.1f}", f"{rates[k]:.1f}"])
    print(table(rows, ["path", "generated tokens", "median s", "tokens/s"]))
    ratio = rates["srlm"] / rates["naive"]
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "sampling.json"), "w") as f:
        json.dump({"machine": machine(), "args": vars(args), "tokens_per_s": rates, "ratio": ratio}, f, indent=1)
    print(f"RATIO sampling tokens/s srlm/naive = {ratio:.2f}x (target >= 8x)")


if __name__ == "__main__":
    main()
