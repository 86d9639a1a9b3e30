"""Benchmark 4: DPO, srlm's setup vs TRL's DPOTrainer with its defaults.

srlm: LoRA (reference = adapter disabled), reference log-probs precomputed once, bf16 autocast
on CPUs that have it, unpadded micro-batches of 1 with gradient accumulation, log-probs of the
completion tokens only through a plain log_softmax on CPU (training.cpu_log_probs).
Baseline: DPOTrainer defaults: full fine-tune, a separate reference model, no precompute,
fp32, per-device batch 8.
Both train one epoch on the same pairs at effective batch 8; each variant runs in its own
process so its peak RSS is its own. Metric: seconds per pair and peak RSS.
Target: <= 0.5x time and <= 0.6x memory.
    python benchmarks/bench_dpo.py [--pairs 16] [--repeats 2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import ift_examples, machine, median, peak_rss_mb, table


def make_pairs(n):
    ex = ift_examples(n + 1)
    # chosen: the seed answer; rejected: the answer to a different request (off-topic).
    return [{"prompt": ex[i].prompt, "chosen": ex[i].response, "rejected": ex[i + 1].response} for i in range(n)]


OVERRIDES: list[str] = []


def run_variant(variant, n_pairs):
    import torch
    from trl import DPOConfig, DPOTrainer

    from srlm.loop import dpo
    from srlm.run.config import load_config, packaged_config
    from srlm.loop.dpo import to_conversational
    from srlm.engines.modeling import ModelRef, load_model, load_tokenizer, resolve, save_model, set_threads
    from srlm.run.records import PairRecord

    set_threads(0)
    pairs = [PairRecord("p", "p", p["prompt"], p["chosen"], p["rejected"], "c", "r", 1, 0, 1, 1) for p in make_pairs(n_pairs)]
    ds = to_conversational(pairs)
    out = tempfile.mkdtemp()
    # A plain model directory, as DPO starts from M1 in the loop (TRL reloads the reference from it).
    model_dir = os.path.join(out, "M1")
    ref = resolve("embedded:smollm2-135m-instruct")
    save_model(load_model(ref), load_tokenizer(ref), model_dir)
    base_rss = peak_rss_mb()
    tok = load_tokenizer(ModelRef(model_dir))
    model = load_model(ModelRef(model_dir), torch.float32)
    model.train()
    # Timed from trainer construction: TRL precomputes reference log-probs in __init__.
    t = time.perf_counter()
    if variant == "srlm":
        cfg = load_config(packaged_config("default"), OVERRIDES)
        cfg.dpo.epochs = 1
        dpo.train(cfg, model, tok, pairs, os.path.join(out, "ck"))  # the DPO stage's own setup
    else:
        args = DPOConfig(output_dir=os.path.join(out, "ck"), per_device_train_batch_size=8, num_train_epochs=1,
                         report_to=[], save_strategy="no", use_cpu=not torch.cuda.is_available(), logging_steps=1)
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        trainer.train()
    seconds = time.perf_counter() - t
    return {"variant": variant, "seconds": seconds, "setup_rss_mb": base_rss, "peak_rss_mb": peak_rss_mb()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variant", choices=["srlm", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="config overrides for the srlm setup, e.g. dpo.per_device_batch_size=4")
    args = ap.parse_args()
    OVERRIDES.extend(args.overrides)
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args.variant, args.pairs)))
        return
    print(machine())
    res = {"srlm": [], "trl": []}
    for r in range(args.repeats):
        for v in (["trl", "srlm"] if r % 2 == 0 else ["srlm", "trl"]):
            p = subprocess.run([sys.executable, __file__, "--variant", v, "--pairs", str(args.pairs), *args.overrides],
                               capture_output=True, text=True)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                sys.exit(f"{v} failed:\n{p.stderr[-3000:]}")
            res[v].append(json.loads(line[0][7:]))
            print(f"  repeat {r + 1} {v}: {res[v][-1]['seconds']:.1f}s peak {res[v][-1]['peak_rss_mb']:.0f} MB", flush=True)
    rows = []
    summary = {}
    for v in ("trl", "srlm"):
        s = median([x["seconds"] for x in res[v]]) / args.pairs
        m = median([x["peak_rss_mb"] for x in res[v]])
        summary[v] = (s, m)
        rows.append([v, f"{s:.2f}", f"{m:.0f}"])
    print(table(rows, ["setup", "s/pair", "peak RSS MB"]))
    print(f"RATIO dpo time srlm/trl = {summary['srlm'][0] / summary['trl'][0]:.2f}x (target <= 0.5x), "
          f"memory srlm/trl = {summary['srlm'][1] / summary['trl'][1]:.2f}x (target <= 0.6x)")


if __name__ == "__main__":
    main()
