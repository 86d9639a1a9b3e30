"""Benchmark 5: scaling. (a) One srlm iteration at growing prompt counts: seconds per prompt
should stay within +-20%. (b) Peak RSS over a 3-iteration run: growth from the end of
iteration 1 to the end of iteration 3 should be under 10%.
    python benchmarks/bench_scaling.py [--sizes 16,32,64] [--rss-prompts 4]
The sizes are the issue's; on 2 cores they take ~20 minutes (4,8,16 is a quicker look).
"""

import argparse
import resource
import tempfile
import time

from common import machine, run_iteration, start_run, table

from srlm.run.config import load_config, packaged_config


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16,32,64")
    ap.add_argument("--rss-prompts", type=int, default=4)
    args = ap.parse_args()
    print(machine())
    rows, per_prompt = [], []
    for n in [int(x) for x in args.sizes.split(",")]:
        cfg = load_config(packaged_config("default"), [f"prompts.num_prompts={n}", "sft.enabled=false", "eval.enabled=false",
                                                       "iterations=1"])
        cfg.output_dir = tempfile.mkdtemp(prefix=f"scale{n}-")
        run_dir = start_run(cfg)
        t = time.perf_counter()
        run_iteration(cfg, run_dir, 1)
        dt = time.perf_counter() - t
        per_prompt.append(dt / n)
        rows.append([n, f"{dt:.1f}", f"{dt / n:.2f}"])
        print(rows[-1], flush=True)
    print(table(rows, ["prompts", "iteration s", "s/prompt"]))
    spread = max(per_prompt) / min(per_prompt) - 1
    cfg = load_config(packaged_config("default"), [f"prompts.num_prompts={args.rss_prompts}", "sft.enabled=false",
                                                   "eval.enabled=false", "iterations=3"])
    cfg.output_dir = tempfile.mkdtemp(prefix="rss-")
    run_dir = start_run(cfg)
    peaks = []
    for t in (1, 2, 3):
        run_iteration(cfg, run_dir, t)
        peaks.append(rss_mb())
    print(table([[t + 1, f"{p:.0f}"] for t, p in enumerate(peaks)], ["after iteration", "peak RSS MB"]))
    growth = peaks[2] / peaks[0] - 1
    print(f"RATIO s/prompt spread = {100 * spread:.0f}% (target <= 20%); peak RSS growth iteration 1->3 = "
          f"{100 * growth:.1f}% (target < 10%)")


if __name__ == "__main__":
    main()
