"""IFEval on the embedded M0 (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised), against its model card.

The card reports "IFEval (Average prompt/inst)" 29.9 (lighteval, zero-shot, chat template).
This answers IFEval's prompts with the transformers backend (greedy, bf16 where the CPU has it,
batch 96, 1280 new tokens as lm-eval and lighteval), scores them with srlm's IFEval checkers
(srlm.data.ifeval_checks), and writes to OUT: rows.jsonl (answers, appended per batch; a rerun
resumes), scored.jsonl, summary.json (the ifeval/* metrics, both averages, per-instruction-type
accuracy, settings).
Prompts are answered in a seeded random order, so that the rows of a stopped run are a random
subset: --score-only scores whatever is answered.
    python benchmarks/ifeval_m0.py [--out /work/notes/ifeval_m0] [--size 0] [--batch 96]
                                   [--max-new-tokens 1280] [--dtype auto] [--threads 1] [--score-only]
"""

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from srlm.data import ifeval_checks  # noqa: E402
from srlm.engines.backends.hf import HFBackend  # noqa: E402
from srlm.engines.modeling import load_model, load_tokenizer, pick_dtype, resolve, set_threads  # noqa: E402
from srlm.evaluation import ifeval  # noqa: E402
from srlm.run.config import EMBEDDED_MODEL  # noqa: E402
from srlm.run.records import append_jsonl, read_jsonl, write_json, write_jsonl  # noqa: E402

CARD_SCORE = 29.9  # SmolLM2-135M-Instruct model card, "IFEval (Average prompt/inst)"


def by_type(scored: list[dict]) -> dict:
    """Strict and loose accuracy per instruction id, with counts."""
    acc = defaultdict(lambda: [0, 0, 0])
    for r in scored:
        for i, s, lo in zip(r["instruction_id_list"], r["strict_follow"], r["loose_follow"]):
            acc[i][0] += 1
            acc[i][1] += s
            acc[i][2] += lo
    return {k: {"n": n, "strict": s / n, "loose": lo / n} for k, (n, s, lo) in sorted(acc.items())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/work/notes/ifeval_m0")
    ap.add_argument("--size", type=int, default=0, help="0 = all 541 prompts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--max-new-tokens", type=int, default=ifeval.MAX_NEW_TOKENS)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core machine two threads wait on each other)")
    ap.add_argument("--score-only", action="store_true", help="score the answered rows, generate nothing")
    ap.add_argument("--compare", default=None,
                    help="another run's OUT: its scored rows on this run's prompts are summarised beside")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows_path = os.path.join(args.out, "rows.jsonl")

    set_threads(args.threads)
    ref = resolve(EMBEDDED_MODEL)
    dtype = pick_dtype(args.dtype)
    prompts = ifeval_checks.load_prompts(args.size, args.seed)
    done = {r["key"]: r for r in read_jsonl(rows_path)} if os.path.exists(rows_path) else {}
    todo = [p for p in prompts if p["key"] not in done]
    random.Random(args.seed).shuffle(todo)
    if args.score_only:
        prompts, todo = [p for p in prompts if p["key"] in done], []
    tok = load_tokenizer(ref)
    backend = None if args.score_only else HFBackend(load_model(ref, dtype=dtype), tok, batch_size=args.batch)
    print(f"{len(prompts)} prompts, {len(done)} already answered; dtype={dtype} batch={args.batch} "
          f"max_new_tokens={args.max_new_tokens}", flush=True)
    print("template:", repr(tok.apply_chat_template([{"role": "user", "content": "PROMPT"}], tokenize=False,
                                                    add_generation_prompt=True)), flush=True)
    t0 = time.time()
    for start in range(0, len(todo), args.batch):
        chunk = todo[start:start + args.batch]
        rows = ifeval.answer(backend, chunk, args.max_new_tokens, args.seed)
        append_jsonl(rows_path, rows)
        done.update({r["key"]: r for r in rows})
        print(f"{len(done)}/{len(prompts)} answered, {time.time() - t0:.0f} s", flush=True)

    scored = ifeval_checks.score([done[p["key"]] for p in prompts])
    write_jsonl(os.path.join(args.out, "scored.jsonl"), scored)
    summary = ifeval.summarize(scored, seed=args.seed)
    pct = {k: round(100 * v, 1) for k, v in summary.items()
           if k.split("/")[1] in ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose")}
    summary["card"] = {"score": CARD_SCORE, "metric": "IFEval (Average prompt/inst), lighteval"}
    summary["settings"] = {"model": str(ref), "dtype": str(dtype), "batch": args.batch, "size": args.size,
                           "seed": args.seed, "max_new_tokens": args.max_new_tokens, "greedy": True,
                           "threads": args.threads,
                           "answer_seconds": round(time.time() - t0)}
    summary["by_type"] = by_type(scored)
    if args.compare:
        keys = {r["key"] for r in scored}
        other = [r for r in read_jsonl(os.path.join(args.compare, "scored.jsonl")) if r["key"] in keys]
        summary["compare"] = {"out": args.compare, **ifeval.summarize(other, seed=args.seed)}
        print(f"{args.compare} on the same {len(other)} prompts: score {100 * summary['compare']['ifeval/score']:.1f}"
              f"  loose avg {100 * summary['compare']['ifeval/score_loose']:.1f}")
    write_json(os.path.join(args.out, "summary.json"), summary)
    print(json.dumps(pct))
    print(f"score (strict avg) {100 * summary['ifeval/score']:.1f}  loose avg {100 * summary['ifeval/score_loose']:.1f}"
          f"  card {CARD_SCORE}  truncated {summary['ifeval/truncated']}/{summary['ifeval/prompts']}")


if __name__ == "__main__":
    main()
