"""Benchmark 3: one whole iteration (prompts -> sample -> judge -> pairs -> DPO), srlm vs the
naive pipeline, from the same M1 (the embedded model, SFT skipped) and the default config.

Naive: the same stages with one fp32 `generate` call per sample and, for the default config's
expected scoring, one fp32 forward pass per judgment (NaiveBackend in common.py), and DPO with
TRL's defaults (full fine-tune, separate reference model, no precompute, fp32). Both run the
iteration's rows of the stage table as `srlm run` does (common.run_iteration); M1's load is not
timed on either side.
Metric: wall time. Target: >= 5x.
    python benchmarks/bench_iteration.py [--prompts 6]
At the default config's 16 prompts the naive path takes over an hour on 2 cores, so the
default here is 6 prompts (same N, K, token caps, DPO batch and epochs as the default config).
"""

import argparse
import tempfile
import time

import torch

from common import DEMO_M1, NaiveBackend, machine, run_iteration, start_run, table

from srlm import pipeline
from srlm.engines.modeling import ModelRef, load_model, load_tokenizer, set_threads
from srlm.run.config import load_config, packaged_config


def open_backends(cfg, rd, naive: bool) -> pipeline.Backends:
    """The iteration's engines with M1's already loaded, so neither path's model load is timed:
    srlm's the one `srlm run` makes (cfg.backend), the naive path's a NaiveBackend in fp32."""
    backends = pipeline.Backends(cfg)
    m1 = ModelRef(rd.model(1))
    if naive:
        backends.open[str(m1)] = NaiveBackend(load_model(m1, torch.float32), load_tokenizer(m1))
    else:
        backends.get(m1)
    return backends


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
        cfg.output_dir = tempfile.mkdtemp(prefix=f"bench-{variant}-")
        if variant == "naive":
            cfg.model.dtype = "float32"
            cfg.dpo.lora = False
            cfg.dpo.precompute_ref_log_probs = False
            cfg.dpo.per_device_batch_size = 8
            cfg.dpo.batch_size = 8  # same effective batch and epochs as srlm's: the same training
        rd = start_run(cfg, args.m1)
        backends = open_backends(cfg, rd, variant == "naive")
        start = time.perf_counter()
        times, info = run_iteration(cfg, rd, 1, backends)
        times["total"] = time.perf_counter() - start
        results[variant] = (times, info)
        print(variant, {k: round(v, 1) for k, v in times.items()}, "pairs:", info.get("dpo/pairs"), flush=True)
    stages = list(results["srlm"][0])  # the iteration's stages as the table runs them, then total
    rows = [[s] + [f"{results[v][0][s]:.1f}" for v in ("naive", "srlm")] +
            [f"{results['naive'][0][s] / max(results['srlm'][0][s], 1e-9):.1f}x"] for s in stages]
    print(table(rows, ["stage", "naive s", "srlm s", "speed-up"]))
    print(f"RATIO iteration wall time naive/srlm = {results['naive'][0]['total'] / results['srlm'][0]['total']:.2f}x "
          f"(target >= 5x; {args.prompts} prompts)")


if __name__ == "__main__":
    main()
