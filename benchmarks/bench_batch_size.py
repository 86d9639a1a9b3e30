"""Rows per decode batch (backend.batch_size) against throughput on 2 cores: half of a decode
step at 96 rows is per-operator overhead that does not grow with the batch (profile in
docs/LOG.md), so more rows per step should buy tokens/s until the matmuls dominate.
Same prompts and settings at each size, alternating, median of --repeats. Greedy mode also
counts how many answers are identical at each size to the first size's (bf16 matmuls blocked
differently can flip a near-tie).
    python benchmarks/bench_batch_size.py [--mode greedy|sample] [--sizes 96,192] [--prompts 192]
"""

import argparse

from common import alternate, eval_prompts, machine, median, srlm_backend, table

from srlm.data import ifeval_checks
from srlm.engines.backends.base import SamplingParams


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["greedy", "sample"], default="greedy")
    ap.add_argument("--sizes", default="96,192")
    ap.add_argument("--prompts", type=int, default=192)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    print(machine(), vars(args))
    sizes = [int(s) for s in args.sizes.split(",")]
    backend = srlm_backend(batch_size=sizes[0])
    if args.mode == "greedy":  # IFEval's answers, as eval runs them (verified.yaml: 256 tokens)
        chats = [[{"role": "user", "content": p["prompt"]}] for p in ifeval_checks.load_prompts(args.prompts, 42)]
        params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    else:  # the sample stage: N=4 per prompt
        chats = [[{"role": "user", "content": p}] for p in eval_prompts(args.prompts)]
        params = SamplingParams(n=4, temperature=0.7, top_p=0.9, max_new_tokens=args.max_new_tokens)

    def run_at(size):
        def f():
            backend.batch_size = size
            outs = backend.generate(chats, params, 0)
            return [[c.text for c in row] for row in outs], sum(c.num_tokens for row in outs for c in row)
        return f

    times, results = alternate({str(s): run_at(s) for s in sizes}, args.repeats)
    first = results[str(sizes[0])]
    rows = []
    for s in sizes:
        texts, toks = results[str(s)]
        same = sum(a == b for a, b in zip(texts, first[0]))
        rows.append([s, toks, f"{median(times[str(s)]):.1f}", f"{toks / median(times[str(s)]):.1f}",
                     f"{same}/{len(texts)}" if args.mode == "greedy" else "-"])
    print(table(rows, ["rows per batch", "tokens", "median s", "tokens/s", "same answers as first"]))
    base = results[str(sizes[0])][1] / median(times[str(sizes[0])])
    for s in sizes[1:]:
        r = results[str(s)][1] / median(times[str(s)])
        print(f"RATIO {args.mode} tokens/s batch {s}/{sizes[0]} = {r / base:.2f}x")


if __name__ == "__main__":
    main()
