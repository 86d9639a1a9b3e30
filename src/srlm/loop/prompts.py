"""Stage 1 of an iteration: new prompts by few-shot self-instruct (paper section 3.1).

Each request shows the model `few_shot` (paper: 8) seed prompts and asks for one new task.
Generated prompts are filtered as Self-Instruct does: too short or too long, degenerate
(repetitive) text, and prompts whose ROUGE-L F1 (rouge_score's scorer, no stemming, as
Self-Instruct; data/dedup.py) with any seed or already kept prompt exceeds the threshold (0.7)
are dropped, each drop counted by reason in metrics.json.
prompts.source=seed draws the seed IFT prompts instead (no model). With prompts.verifiable_max
each prompt then carries 1-3 verifiable instructions (verifier.py) after base prompts that
duplicate an evaluation prompt (IFEval's, eval.prompts, eval.human_prefs; data/dedup.py) are
dropped.
Output: DIR/iter_<t>/prompts.jsonl of PromptRecord.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from srlm.data import dedup, ifeval_checks, loaders
from srlm.data.dedup import NearDuplicateIndex, words
from srlm.engines.backends import Backend, SamplingParams
from srlm.run.parallel import barrier, derive_seed, is_main
from srlm.run.records import InputError, PromptRecord, append_jsonl, read_jsonl, read_partial, write_jsonl

INSTRUCTION = (
    "Here are some requests that users have sent to an AI assistant:\n\n{examples}\n\n"
    "Write one new request that a user might send. Make it different from the examples in topic "
    "and wording, specific, and answerable in a few paragraphs. Reply with the request only."
)
# Openers of an answer, not a request: a small model asked for a new task often replies to
# the examples instead (seen in 10 of 24 prompts of a default run before this filter).
NOT_A_REQUEST = re.compile(
    r"^(certainly|sure|of course|here('s| is| are)|i('d| would| will| can| have)|as an ai|"
    r"the (original |new )?(request|question|response|answer)|a:|answer:|response:)|request \d+:|response:",
    re.IGNORECASE)


def clean(text: str) -> str:
    # Self-Instruct keeps one task per generation: stop at the first blank line.
    text = text.strip().split("\n\n")[0].strip()
    text = re.sub(r"^(new\s+)?(request|task|prompt)\s*\d*\s*[:.]\s*", "", text, flags=re.IGNORECASE)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def is_degenerate(toks: list[str]) -> bool:
    if len(toks) < 4:
        return False
    trigrams = Counter(zip(toks, toks[1:], toks[2:]))
    return max(trigrams.values()) >= 3 or len(set(toks)) / len(toks) < 0.4


def filter_prompt(text: str, index: NearDuplicateIndex, cfg, seen: set) -> str | None:
    """Return the drop reason, or None to keep."""
    toks = words(text)
    if not text or len(toks) < cfg.prompts.min_words:
        return "too_short"
    if len(toks) > cfg.prompts.max_words:
        return "too_long"
    if is_degenerate(toks):
        return "degenerate"
    if NOT_A_REQUEST.search(text):
        return "not_a_request"
    key = " ".join(toks)
    if key in seen:
        return "duplicate"
    if index.is_near_duplicate(text):
        return "near_duplicate"
    return None


def seed_prompts(cfg) -> list[str]:
    return [ex.prompt for ex in loaders.load_ift(cfg.data.ift)]


def run(cfg, rd, t: int, backend: Backend | None) -> dict:
    out = rd.prompts(t)
    stats: dict = {}
    if is_main():
        if cfg.prompts.source == "seed":
            stats = _from_seed(cfg, out, t)
        elif cfg.prompts.source == "file":
            stats = _from_file(cfg, out, t)
        else:
            stats = _self_instruct(cfg, out, t, backend)
        if cfg.prompts.verifiable_max:
            stats |= _make_verifiable(cfg, out, t)
    barrier()
    recs = read_jsonl(out, PromptRecord)
    return {f"prompts/{k}": v for k, v in stats.items()} | {"prompts/kept": len(recs)}


def without_eval_duplicates(cfg, texts: list[str]) -> tuple[list[str], Counter]:
    """Training prompts minus exact and ROUGE-L near-duplicates (prompts.rouge_threshold) of every
    evaluation prompt: IFEval's 541, eval.prompts and the human-preference files."""
    held = [p["prompt"] for p in ifeval_checks.load_prompts()] + dedup.eval_prompts(cfg)
    return dedup.dedup_against_eval(texts, held, cfg.prompts.rouge_threshold)


def _from_seed(cfg, out: str, t: int) -> dict:
    """num_prompts of the seed IFT prompts, a fresh seeded draw per iteration (a pool smaller than
    num_prompts is drawn again, each copy getting its own instructions)."""
    pool, dropped = without_eval_duplicates(cfg, list(dict.fromkeys(seed_prompts(cfg))))
    if not pool:
        raise InputError(f"prompts.source=seed: no seed IFT prompt of {cfg.data.ift} is left after removing "
                         f"evaluation prompts ({dict(dropped)})")
    rng = random.Random(derive_seed(cfg.seed, t, "prompts", "seed"))
    drawn: list[str] = []
    while len(drawn) < cfg.prompts.num_prompts:
        drawn += rng.sample(pool, min(len(pool), cfg.prompts.num_prompts - len(drawn)))
    write_jsonl(out, [PromptRecord(f"t{t}-p{i:05d}", p, "seed", t) for i, p in enumerate(drawn)])
    return {"generated": len(drawn), "seed_pool": len(pool),
            **{f"dropped_{k}": v for k, v in dropped.items()}}


def _make_verifiable(cfg, out: str, t: int) -> dict:
    """Attach seeded verifiable instructions to the prompts in `out` (rewritten in place), after
    dropping those that duplicate an evaluation prompt."""
    from srlm.loop import verifier

    recs = read_jsonl(out, PromptRecord)
    kept_texts, dropped = without_eval_duplicates(cfg, [r.prompt for r in recs])
    kept = set(kept_texts)
    allowed = verifier.trainable_ids(cfg.prompts.verifiable_families, cfg.prompts.holdout_families, cfg.seed)
    rng = random.Random(derive_seed(cfg.seed, t, "prompts", "verifiable"))
    lo, hi = cfg.prompts.verifiable_min, cfg.prompts.verifiable_max
    new, per_prompt = [], Counter()
    for r in recs:
        if r.prompt not in kept:
            continue
        text, ids, kwargs = verifier.attach(r.prompt, rng, rng.randint(lo, hi), allowed)
        per_prompt[len(ids)] += 1
        new.append(PromptRecord(r.id, text, r.source, r.iteration, ids, kwargs))
    if not new:
        raise InputError(f"{out}: every prompt duplicates an evaluation prompt ({dict(dropped)})")
    write_jsonl(out, new)
    return {"verifiable": len(new), "verifiable_instructions": dict(sorted(per_prompt.items())),
            **{f"verifiable_dropped_{k}": v for k, v in dropped.items()}}


def _from_file(cfg, out: str, t: int) -> None:
    rows = loaders.load_prompts(cfg.prompts.file)
    recs = [PromptRecord(f"t{t}-p{i:05d}", r["prompt"], "file", t) for i, r in enumerate(rows)]
    if cfg.prompts.num_prompts:
        recs = recs[: cfg.prompts.num_prompts]
    write_jsonl(out, recs)
    return {"generated": len(rows)}


def _self_instruct(cfg, out: str, t: int, backend: Backend | None) -> None:
    if backend is None:
        raise InputError("prompt generation needs a model backend")
    seeds = seed_prompts(cfg)
    index = NearDuplicateIndex(cfg.prompts.rouge_threshold)
    seen: set = set()
    for s in seeds:
        index.add(words(s))
        seen.add(" ".join(words(s)))
    partial = out + ".partial.0"
    kept: list[str] = []
    stats: Counter = Counter()
    # Replay finished rounds from a killed run: same prompts, same filters, same order.
    rounds = read_partial(partial)
    for rnd in rounds:
        for p in rnd["kept"]:
            kept.append(p)
            index.add(words(p))
            seen.add(" ".join(words(p)))
        stats.update(rnd["stats"])
    max_prompt_tokens = backend.context_window - cfg.sample.max_new_tokens
    rounds_run = len(rounds)
    for r in range(len(rounds), cfg.prompts.max_rounds):
        need = cfg.prompts.num_prompts - len(kept)
        if need <= 0:
            break
        rounds_run = r + 1
        rng = random.Random(derive_seed(cfg.seed, t, "prompts", r))
        # Ask for three times what is missing: M1 of the default run keeps 35-46% of what it
        # writes (docs/LOG.md), and on CPU a batch of 48 rows decodes in little more time
        # than one of 16, while another round costs a whole decode loop.
        asks = max(16, 3 * need)
        chats = []
        for _ in range(asks):
            shots = rng.sample(seeds, min(cfg.prompts.few_shot, len(seeds)))
            examples = "\n".join(f"Request {i + 1}: {s.strip()}" for i, s in enumerate(shots))
            chats.append([{"role": "user", "content": INSTRUCTION.format(examples=examples)}])
        params = SamplingParams(n=1, temperature=cfg.prompts.temperature, top_p=cfg.prompts.top_p,
                                max_new_tokens=cfg.prompts.max_new_tokens)
        outs = backend.generate(chats, params, derive_seed(cfg.seed, t, "prompts", r, "gen"))
        round_kept, round_stats = [], Counter()
        for comps in outs:
            text = clean(comps[0].text)
            round_stats["generated"] += 1
            reason = filter_prompt(text, index, cfg, seen)
            if reason is None and backend.count_prompt_tokens([[{"role": "user", "content": text}]])[0] > max_prompt_tokens:
                reason = "over_context"
            if reason is None and len(kept) + len(round_kept) >= cfg.prompts.num_prompts:
                reason = "surplus"
            if reason:
                round_stats[f"dropped_{reason}"] += 1
                continue
            round_kept.append(text)
            index.add(words(text))
            seen.add(" ".join(words(text)))
        append_jsonl(partial, [{"round": r, "kept": round_kept, "stats": dict(round_stats)}])
        kept += round_kept
        stats.update(round_stats)
    recs = [PromptRecord(f"t{t}-p{i:05d}", p, "self_instruct", t) for i, p in enumerate(kept)]
    stats["rounds"] = rounds_run
    if not recs:
        raise RuntimeError(f"{out}: self-instruct kept no prompts in {cfg.prompts.max_rounds} rounds "
                           f"(drops: {dict(stats)}); raise prompts.max_rounds or use prompts.source=file")
    write_jsonl(out, recs)
    return dict(stats)
