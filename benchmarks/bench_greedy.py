"""Benchmark 7: greedy evaluation answers (IFEval), srlm vs the naive loop and vs the competent peer.

What evaluation spends its time on: one greedy answer per IFEval prompt
(srlm.data.ifeval_checks.load_prompts(size, seed), as `srlm eval` draws them).
srlm: srlm.evaluation.ifeval.answer, the function `srlm eval` answers with, on the transformers
backend (HFBackend, bf16 on CPUs that have it, --batch-size rows decoded together, rows sorted by
length).
Peer: plain transformers written well (common.peer_generate): a model instance of its own in
srlm's dtype, SDPA attention, left padding, one batched greedy `model.generate` per --batch-size
prompts.
Naive: one fp32 greedy `model.generate` call per prompt (what public implementations do).
The defaults are verified.yaml's evaluation settings (eval.ifeval_max_new_tokens 256,
backend.batch_size 96) on 32 prompts, so that the naive path stays affordable on 2 cores.
Also reported: on how many prompts srlm's answer is the peer's, text for text (bf16 with
different batch padding can tip a greedy choice, so this is a count, not a check).
Metric: generated tokens per second (EOS and padding excluded). Target: >= 3x peer.
    python benchmarks/bench_greedy.py [--prompts 32] [--max-new-tokens 256] [--batch-size 96] [--repeats 3]
        [--seed 42] [--no-naive]
"""

import argparse

from common import (alternate, fitting_ifeval_prompts, machine, median, naive_generate, naive_model, peer_generate,
                    peer_model, srlm_backend, table)

from srlm.evaluation.ifeval import answer
from srlm.run.config import load_config, packaged_config


def main():
    cfg = load_config(packaged_config("verified"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32, help="IFEval prompts (verified.yaml evaluates 320)")
    ap.add_argument("--max-new-tokens", type=int, default=cfg.eval.ifeval_max_new_tokens,
                    help="default: eval.ifeval_max_new_tokens of verified.yaml")
    ap.add_argument("--batch-size", type=int, default=cfg.backend.batch_size,
                    help="rows decoded together by srlm, prompts per generate call of the peer "
                         "(default: backend.batch_size of verified.yaml)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=cfg.seed, help="the prompts' draw (default: verified.yaml's seed)")
    ap.add_argument("--no-naive", action="store_true", help="skip the (slow) naive path")
    args = ap.parse_args()
    print(machine())
    if not args.no_naive:
        model, tok = naive_model()
    peer_m, peer_tok = peer_model()  # loaded before srlm's backend, never passed to it
    backend = srlm_backend(batch_size=args.batch_size)
    prompts, chats = fitting_ifeval_prompts(backend, args.prompts, args.seed, args.max_new_tokens)
    print(f"{len(prompts)} IFEval prompts ({args.prompts - len(prompts)} too long skipped), greedy, "
          f"{args.max_new_tokens} new tokens at most; srlm {backend.model.dtype} "
          f"({backend.model.config._attn_implementation}), batch {args.batch_size} rows; peer {peer_m.dtype} "
          f"({peer_m.config._attn_implementation}), {args.batch_size} prompts per generate call", flush=True)
    texts = {}

    def naive():
        out = [naive_generate(model, tok, c, max_new_tokens=args.max_new_tokens, temperature=0.0, top_p=1.0, seed=0)
               for c in chats]
        texts["naive"] = [t for t, _ in out]
        return sum(n for _, n in out)

    def peer():
        rows, tokens = peer_generate(peer_m, peer_tok, chats, 1, args.max_new_tokens, 0.0, 1.0, seed=0,
                                     batch_prompts=args.batch_size)
        texts["peer"] = [row[0] for row in rows]
        return tokens

    def fast():
        rows = answer(backend, prompts, args.max_new_tokens, seed=0)
        texts["srlm"] = [r["response"] for r in rows]
        return sum(r["num_tokens"] for r in rows)

    fns = ({} if args.no_naive else {"naive": naive}) | {"peer": peer, "srlm": fast}
    times, tokens = alternate(fns, args.repeats)
    rows, rates = [], {}
    for k in times:
        rates[k] = tokens[k] / median(times[k])
        same = sum(a == b for a, b in zip(texts[k], texts["peer"]))
        rows.append([k, len(prompts), tokens[k], f"{median(times[k]):.1f}", f"{rates[k]:.1f}", f"{same}/{len(prompts)}"])
    print(table(rows, ["path", "answers", "generated tokens", "median s", "tokens/s", "same text as the peer"]))
    same = sum(a == b for a, b in zip(texts["srlm"], texts["peer"]))
    print(f"greedy answers identical, srlm vs peer: {same}/{len(prompts)} prompts")
    if "naive" in rates:
        print(f"RATIO greedy-eval tokens/s srlm/naive = {rates['srlm'] / rates['naive']:.2f}x")
    print(f"RATIO greedy-eval tokens/s srlm/peer = {rates['srlm'] / rates['peer']:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
