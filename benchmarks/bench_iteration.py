"""Benchmark 3: one whole iteration (prompts -> sample -> judge -> pairs -> DPO), srlm vs the
naive pipeline, from the same M1 (the embedded model, SFT skipped) and the default config.

Naive: the same stages with one fp32 `generate` call per sample (NaiveBackend in common.py)
and DPO with TRL's defaults (full fine-tune, separate reference model, no precompute, fp32).
Metric: wall time. Target: >= 5x.
    python benchmarks/bench_iteration.py [--prompts 6]
At the default config's 16 prompts the naive path takes over an hour on 2 cores, so the
default here is 6 prompts (same N, K, token caps, DPO batch and epochs as the default config).
"""

import argparse
import tempfile
import time

import torch

from common import DEMO_M1, NaiveBackend, machine, place_m1, table

from srlm.loop import dpo, judge, pairs, prompts, sample
from srlm.run.config import load_config, packaged_config
from srlm.engines.backends.hf import HFBackend
from srlm.engines.modeling import ModelRef, load_model, load_tokenizer, pick_dtype, set_threads


def one_iteration(cfg, run_dir, backend):
    times = {}
    for name, stage in (("prompts", prompts), ("sample", sample), ("judge", judge)):
        t = time.perf_counter()
        stage.run(cfg, run_dir, 1, backend)
        times[name] = time.perf_counter() - t
    t = time.perf_counter()
    times["pairs"] = (pairs.run(cfg, run_dir, 1), time.perf_counter() - t)[1]
    t = time.perf_counter()
    info = dpo.run(cfg, run_dir, 1)
    times["dpo"] = time.perf_counter() - t
    return times, info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--m1", default=DEMO_M1,
                    help="the SFT'd model both pipelines start from (default: the demo run's M1; "
                         "without it the embedded M0 is used, which never writes a score line, so no pairs form)")
    args = ap.parse_args()
    print(machine())
    set_threads(0)
    results = {}
    for variant in ("srlm", "naive"):
        cfg = load_config(packaged_config("default"), [f"prompts.num_prompts={args.prompts}", "sft.enabled=false",
                                                       "eval.enabled=false"])
        run_dir = tempfile.mkdtemp(prefix=f"bench-{variant}-")
        cfg.output_dir = run_dir
        m1 = ModelRef(place_m1(cfg, run_dir, args.m1))
        if variant == "srlm":
            backend = HFBackend(load_model(m1, pick_dtype("auto")), load_tokenizer(m1), cfg.backend.batch_size)
        else:
            backend = NaiveBackend(load_model(m1, torch.float32), load_tokenizer(m1))
            cfg.model.dtype = "float32"
            cfg.dpo.lora = False
            cfg.dpo.precompute_ref_log_probs = False
            cfg.dpo.per_device_batch_size = 8
            cfg.dpo.batch_size = 8  # same effective batch and epochs as srlm's: the same training
        start = time.perf_counter()
        times, info = one_iteration(cfg, run_dir, backend)
        times["total"] = time.perf_counter() - start
        results[variant] = (times, info)
        print(variant, {k: round(v, 1) for k, v in times.items()}, "pairs:", info.get("dpo/pairs"), flush=True)
    stages = ["prompts", "sample", "judge", "pairs", "dpo", "total"]
    rows = [[s] + [f"{results[v][0][s]:.1f}" for v in ("naive", "srlm")] +
            [f"{results['naive'][0][s] / max(results['srlm'][0][s], 1e-9):.1f}x"] for s in stages]
    print(table(rows, ["stage", "naive s", "srlm s", "speed-up"]))
    print(f"RATIO iteration wall time naive/srlm = {results['naive'][0]['total'] / results['srlm'][0]['total']:.2f}x "
          f"(target >= 5x; {args.prompts} prompts)")


if __name__ == "__main__":
    main()
