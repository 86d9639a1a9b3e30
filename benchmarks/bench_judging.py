"""Benchmark 2: the judging stage, srlm vs the naive loop and vs the competent peer.

Naive: one fp32 `model.generate` call per judgment sample, the whole rubric prompt prefilled
every time, generation until EOS or the token cap.
Peer: plain transformers written well (common.peer_generate): a model instance of its own in
srlm's dtype, SDPA attention, left padding, one batched `model.generate` per --batch-size // K
rubric prompts with num_return_sequences=K, stopped at the score line with stop_strings
("Score: 0" .. "Score: 5"), scores parsed with rubric.parse_score (parsed scoring).
srlm: the judge stage's path (rubric prefix prefilled once and its KV cache shared, K samples
share each candidate's prefill, batched, stop at the completed score line, bf16 where fast), with
the default config's scoring: expected (the score-digit distribution read where the judgment
wrote its digit; one that stops without a score line is fed a forced `Score:` prefix from its
own KV cache) and judgments cut once they repeat. The naive path only generates and parses, so
with --scoring expected the ratios understate srlm's advantage; --scoring parsed
--stop-repetition 0 is the same work as the peer's. --separate-pass also times the judge as it
was before the forced prefixes came from the cache (a second pass over each prompt).
Metric: judgments per second. Targets: >= 10x naive, >= 3x peer.
    python benchmarks/bench_judging.py [--model DIR] [--candidates 32] [--k 3] [--batch-size 96] [--repeats 3]
        [--scoring expected|parsed] [--stop-repetition 8] [--no-naive] [--separate-pass]
The default size is one judging chunk of the default config (32 candidates x K=3 = 96 rows).
--model defaults to the embedded M0; pass an SFT'd model (e.g. runs/default/models/M1) to
measure the judge as the loop uses it, with score lines to stop at.
"""

import argparse
import dataclasses
from collections import Counter

import torch

from common import alternate, ift_examples, machine, median, peer_generate, peer_model, table

from srlm.data import rubric
from srlm.engines.backends.hf import HFBackend
from srlm.run.config import JudgeConfig
from srlm.loop.judge import judge_texts
from srlm.engines.modeling import ModelRef, load_model, load_tokenizer, pick_dtype, resolve, set_threads


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--candidates", type=int, default=32, help="default: one judging chunk of the default config")
    ap.add_argument("--batch-size", type=int, default=96, help="rows decoded together (default config: 96)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scoring", choices=["expected", "parsed"], default="expected",
                    help="srlm's judge.scoring (default.yaml: expected)")
    ap.add_argument("--stop-repetition", type=int, default=8, help="srlm's judge.stop_repetition (default.yaml: 8)")
    ap.add_argument("--separate-pass", action="store_true",
                    help="with --scoring expected, also time srlm with the forced score prefixes read by a second "
                         "pass over each judgment's prompt (the judge before they were read from the generation's "
                         "cache)")
    ap.add_argument("--no-naive", action="store_true", help="skip the (slow) naive path")
    args = ap.parse_args()
    print(machine(), "model:", args.model or "embedded M0", "srlm scoring:", args.scoring)
    set_threads(0)
    ref = ModelRef(args.model) if args.model else resolve("embedded:smollm2-135m-instruct")
    tok = load_tokenizer(ref)
    naive_m = None if args.no_naive else load_model(ref, torch.float32)
    peer_m, peer_tok = peer_model(ref)  # loaded before srlm's backend, never passed to it
    backend = HFBackend(load_model(ref, pick_dtype("auto")), tok, batch_size=args.batch_size)
    template = rubric.load_template()
    items = [(e.prompt, e.response) for e in ift_examples(args.candidates)]
    jcfg = JudgeConfig(k=args.k, max_new_tokens=args.max_new_tokens, scoring=args.scoring,
                       stop_repetition=args.stop_repetition)

    def naive():
        out = []
        for i, (p, r) in enumerate(items):
            ids = tok.apply_chat_template([{"role": "user", "content": rubric.render(template, p, r)}],
                                          add_generation_prompt=True, return_tensors="pt", return_dict=True)
            for s in range(args.k):
                torch.manual_seed(100 * i + s)
                with torch.inference_mode():
                    g = naive_m.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=True, temperature=0.7,
                                         top_p=0.9, pad_token_id=tok.pad_token_id)
                out.append(rubric.parse_score(tok.decode(g[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))[0])
        return out

    jchats = [[{"role": "user", "content": rubric.render(template, p, r)}] for p, r in items]
    stops = [f"Score: {d}" for d in range(rubric.MAX_SCORE + 1)]

    def peer():
        rows, _ = peer_generate(peer_m, peer_tok, jchats, args.k, args.max_new_tokens, jcfg.temperature, jcfg.top_p,
                                seed=0, batch_prompts=args.batch_size // args.k, stop_strings=stops)
        return [rubric.parse_score(rubric.truncate_after_score(t))[0] for row in rows for t in row]

    def fast():
        return [s for row in judge_texts(backend, template, items, args.k, jcfg, seed=0) for _, s, _ in row]

    class SeparatePass:  # the judge before force_score: forced prefixes read by a second pass
        def __getattr__(self, name):
            return getattr(backend, name)

        def generate(self, chats, params, seed):
            return backend.generate(chats, dataclasses.replace(params, force_score=False), seed)

    def separate():
        return [s for row in judge_texts(SeparatePass(), template, items, args.k, jcfg, seed=0) for _, s, _ in row]

    fns = ({} if args.no_naive else {"naive": naive}) | {"peer": peer, "srlm": fast}
    if args.scoring == "expected" and args.separate_pass:
        fns["srlm, separate forced pass"] = separate
    times, scores = alternate(fns, args.repeats)
    n = len(items) * args.k
    rows, rates = [], {}
    for k in times:
        rates[k] = n / median(times[k])
        parsed = [s for s in scores[k] if s is not None]
        rows.append([k, n, f"{median(times[k]):.1f}", f"{rates[k]:.2f}", f"{len(parsed)}/{n}",
                     dict(sorted(Counter(round(x) for x in parsed).items()))])
    print(table(rows, ["path", "judgments", "median s", "judgments/s", "scored", "scores (rounded)"]))
    if "naive" in rates:
        print(f"RATIO judging judgments/s srlm/naive = {rates['srlm'] / rates['naive']:.2f}x (target >= 10x)")
    print(f"RATIO judging judgments/s srlm/peer = {rates['srlm'] / rates['peer']:.2f}x (target >= 3x; srlm scoring: "
          f"{args.scoring}, peer: parsed)")


if __name__ == "__main__":
    main()
