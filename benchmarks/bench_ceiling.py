"""Benchmark 6: the ceiling. This machine's measured matmul rate and memory bandwidth, the
best tokens/s they allow a 135M-parameter model, and srlm's sampling throughput (from
benchmarks/results/sampling.json, written by bench_sampling.py) as a fraction of that.

- batch 1 decoding reads every weight once per token: tokens/s <= bandwidth / weight bytes
- large-batch decoding is compute bound: tokens/s <= matmul FLOP/s / (2 x matmul parameters)
    python benchmarks/bench_ceiling.py
"""

import json
import os
import time

import torch

from common import machine, set_threads, table


def matmul_rate(dtype, n=2048, repeats=5):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def bandwidth(mb=1024, repeats=5):
    src = torch.ones(mb * 2 ** 20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best  # read + write


def main():
    print(machine())
    set_threads(0)
    params = 134_515_008  # SmolLM2-135M; embeddings tied, so the lm_head matmul uses them once more
    matmul_params = params  # body matmuls + lm_head (the embedding lookup itself is free)
    rates = {str(d).split(".")[1]: matmul_rate(d) for d in (torch.float32, torch.bfloat16)}
    bw = bandwidth()
    rows = [[f"matmul {k}", f"{v / 1e9:.1f} GFLOP/s"] for k, v in rates.items()] + [["memory copy", f"{bw / 1e9:.1f} GB/s"]]
    print(table(rows, ["measured", "rate"]))
    ceil = {
        "batch-1 bf16 (bandwidth bound)": bw / (params * 2),
        "batch-1 fp32 (bandwidth bound)": bw / (params * 4),
        "large-batch bf16 (compute bound)": rates["bfloat16"] / (2 * matmul_params),
        "large-batch fp32 (compute bound)": rates["float32"] / (2 * matmul_params),
    }
    print(table([[k, f"{v:.0f}"] for k, v in ceil.items()], ["ceiling", "tokens/s"]))
    path = os.path.join(os.path.dirname(__file__), "results", "sampling.json")
    if os.path.exists(path):
        s = json.load(open(path))["tokens_per_s"]
        frac = s["srlm"] / ceil["large-batch bf16 (compute bound)"]
        naive = (f"; naive: {s['naive']:.0f} tokens/s = "
                 f"{100 * s['naive'] / ceil['batch-1 fp32 (bandwidth bound)']:.0f}% of the batch-1 fp32 ceiling"
                 if "naive" in s else "")  # absent after bench_sampling.py --no-naive
        print(f"srlm sampling: {s['srlm']:.0f} tokens/s = {100 * frac:.0f}% of the large-batch bf16 ceiling{naive}")
        print(f"RATIO srlm sampling / large-batch bf16 ceiling = {frac:.2f}")
    else:
        print("RATIO unavailable: run bench_sampling.py first")


if __name__ == "__main__":
    main()
