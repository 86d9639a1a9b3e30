"""Benchmark 1: the sampling stage, srlm vs the naive loop and vs the competent peer.

Naive: one fp32 `model.generate` call per sample, no batching (what public implementations do).
Peer: plain transformers written well (common.peer_generate): a model instance of its own in
srlm's dtype, SDPA attention, left padding, one batched `model.generate` per batch of prompts
with num_return_sequences=N (each prompt's prefill repeated N times), --batch-size // N prompts
per call, the same temperature, top_p (no top-k) and token cap.
srlm: the transformers backend as the sample stage runs it (N samples share their prompt's
prefill, rows batched and sorted by length, bf16 on CPUs that have it).
The default size is one sampling chunk of the default config (24 prompts x N=4 = 96 rows,
192 new tokens at most, temperature 0.7, top_p 0.9).
Metric: generated tokens per second (EOS and padding excluded). Targets: >= 8x naive, >= 3x peer.
    python benchmarks/bench_sampling.py [--prompts 24] [--n 4] [--max-new-tokens 192] [--batch-size 96]
        [--repeats 3] [--no-naive]
"""

import argparse
import json
import os

from common import (alternate, eval_prompts, machine, median, naive_generate, naive_model, peer_generate, peer_model,
                    srlm_backend, table)

from srlm.engines.backends.base import SamplingParams
from srlm.run.config import load_config, packaged_config


def main():
    cfg = load_config(packaged_config("default"))
    s = cfg.sample
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=s.chunk_size, help="default: sample.chunk_size of default.yaml")
    ap.add_argument("--n", type=int, default=s.n, help="samples per prompt (default: sample.n)")
    ap.add_argument("--max-new-tokens", type=int, default=s.max_new_tokens, help="default: sample.max_new_tokens")
    ap.add_argument("--batch-size", type=int, default=cfg.backend.batch_size,
                    help="rows decoded together by srlm; the peer takes batch-size // n prompts per call "
                         "(default: backend.batch_size of default.yaml)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-naive", action="store_true", help="skip the (slow) naive path")
    args = ap.parse_args()
    print(machine())
    prompts = eval_prompts(args.prompts)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    temperature, top_p = s.temperature, s.top_p
    if not args.no_naive:
        model, tok = naive_model()
    peer_m, peer_tok = peer_model()  # loaded before srlm's backend, never passed to it
    backend = srlm_backend(batch_size=args.batch_size)
    params = SamplingParams(n=args.n, temperature=temperature, top_p=top_p, max_new_tokens=args.max_new_tokens)
    print(f"{len(chats)} prompts x N={args.n}, {args.max_new_tokens} new tokens at most, temperature {temperature}, "
          f"top_p {top_p}; srlm {backend.model.dtype} ({backend.model.config._attn_implementation}), batch "
          f"{args.batch_size} rows; peer {peer_m.dtype} ({peer_m.config._attn_implementation}), "
          f"{max(1, args.batch_size // args.n)} prompts per generate call", flush=True)

    def naive():
        toks = 0
        for i, c in enumerate(chats):
            for s in range(args.n):
                toks += naive_generate(model, tok, c, max_new_tokens=args.max_new_tokens, temperature=temperature,
                                       top_p=top_p, seed=1000 * i + s)[1]
        return toks

    def peer():
        return peer_generate(peer_m, peer_tok, chats, args.n, args.max_new_tokens, temperature, top_p, seed=0,
                             batch_prompts=args.batch_size // args.n)[1]

    def fast():
        return sum(c.num_tokens for comps in backend.generate(chats, params, seed=0) for c in comps)

    fns = ({} if args.no_naive else {"naive": naive}) | {"peer": peer, "srlm": fast}
    times, tokens = alternate(fns, args.repeats)
    rows, rates = [], {}
    for k in times:
        rates[k] = tokens[k] / median(times[k])
        rows.append([k, tokens[k], f"{median(times[k]):.1f}", f"{rates[k]:.1f}"])
    print(table(rows, ["path", "generated tokens", "median s", "tokens/s"]))
    ratios = {f"srlm/{k}": rates["srlm"] / rates[k] for k in ("naive", "peer") if k in rates}
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "sampling.json"), "w") as f:
        json.dump({"machine": machine(), "args": vars(args), "tokens_per_s": rates, "ratios": ratios}, f, indent=1)
    if "srlm/naive" in ratios:
        print(f"RATIO sampling tokens/s srlm/naive = {ratios['srlm/naive']:.2f}x (target >= 8x)")
    print(f"RATIO sampling tokens/s srlm/peer = {ratios['srlm/peer']:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
