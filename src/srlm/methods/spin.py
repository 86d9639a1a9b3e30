"""SPIN, Self-Play Fine-Tuning (Chen et al. 2024, arXiv:2401.01335, section 4 and Algorithm 1):
the model learns to tell the human-written answers of its SFT data from its own, with no judge.

Iteration t (method: spin), two stages of their own in the table (stages.py):
- seed_prompts: a seeded subset of prompts.num_prompts seed IFT prompts (data.ift, all of it,
  not only the data.max_ift used in SFT), the same subset every iteration as the paper reuses
  its prompts -> DIR/iter_<t>/prompts.jsonl (PromptRecord, source "seed", id t<t>-seed<IFT index>).
- sample: M_t answers them (the ordinary sample stage).
- spin_pairs: chosen = the seed's gold answer, rejected = M_t's sample (spin_pairs below), the
  first spin.samples_per_prompt samples of each prompt (paper: one); plus the SPIN pairs of the
  spin.replay earlier iterations (paper: iteration t trains on t's and t-1's data)
  -> DIR/iter_<t>/pairs.jsonl (PairRecord fields + kind "spin" + lag, 0 = this iteration's).
- dpo: DPO on them. SPIN's reference is the model the iteration starts from: spin.yaml sets
  dpo.init=previous, so M_{t+1} trains from M_t against M_t.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from srlm.data import loaders
from srlm.loop.pairs import pair_dict
from srlm.run.parallel import derive_seed, is_main
from srlm.run.records import CandidateRecord, InputError, PromptRecord, read_jsonl, write_jsonl

ID_TAG = "-seed"


def seed_subset(n_seed: int, num_prompts: int, seed: int) -> list[int]:
    """Indices of the seed IFT examples SPIN uses: a seeded sample of num_prompts (all when there
    are fewer), in file order; the same in every iteration."""
    k = min(num_prompts, n_seed)
    return sorted(random.Random(derive_seed(seed, "spin", "prompts")).sample(range(n_seed), k))


def prompt_id(t: int, index: int) -> str:
    return f"t{t}{ID_TAG}{index:05d}"


def seed_index(pid: str) -> int:
    return int(pid.rsplit(ID_TAG, 1)[1])


def run_prompts(cfg, rd, t: int, sources: list[str] | None = None) -> dict:
    """The seed_prompts stage; `sources` (default data.ift) is where the prompts and their gold
    answers come from (DNO may take them from a file of a stronger model's answers)."""
    ift = loaders.load_ift(sources or cfg.data.ift)
    recs = [PromptRecord(prompt_id(t, i), ift[i].prompt, "seed", t)
            for i in seed_subset(len(ift), cfg.prompts.num_prompts, cfg.seed)]
    if is_main():
        write_jsonl(rd.prompts(t), recs)
    return {"prompts/seed_examples": len(ift), "prompts/kept": len(recs)}


def gold_for(prompts: list[PromptRecord], ift: list) -> list[tuple[str, str, str]]:
    """(prompt id, prompt, gold answer) for SPIN's prompts, from the seed data they came from."""
    out = []
    for p in prompts:
        i = seed_index(p.id)
        if i >= len(ift) or ift[i].prompt != p.prompt:
            raise InputError(f"{p.id}: not seed IFT example {i} of data.ift any more; redo seed_prompts")
        out.append((p.id, p.prompt, ift[i].response))
    return out


def replay_sources(cfg, rd, t: int) -> list[tuple[int, str]]:
    """(lag, pairs file) of the earlier iterations whose own SPIN pairs iteration t adds."""
    return [(lag, rd.pairs(t - lag)) for lag in range(1, cfg.spin.replay + 1) if t - lag >= 1]


def spin_pairs(prompts_with_gold: Sequence[tuple[str, str, str]], samples: list[CandidateRecord]):
    """SPIN (Chen et al. 2024, arXiv:2401.01335): chosen = the gold (seed) response, rejected =
    the model's own sample for the same prompt. `prompts_with_gold` holds (prompt_id, prompt,
    gold); every sample of a prompt gives one pair (the paper draws one per prompt), id
    "<prompt_id>-spin-c<sample index>". A sample equal to the gold text (after strip) teaches
    nothing and is dropped. Returns dicts: PairRecord's fields (scores None) + kind="spin".
    Stats: dropped_no_sample (prompts), dropped_same_as_gold, unknown_prompt (samples)."""
    gold: dict[str, tuple[str, str]] = {}
    for pid, prompt, answer in prompts_with_gold:
        if pid in gold:
            raise ValueError(f"spin_pairs: duplicate prompt id {pid}")
        gold[pid] = (prompt, answer)
    by_prompt: dict[str, list[CandidateRecord]] = defaultdict(list)
    for s in samples:
        by_prompt[s.prompt_id].append(s)
    pairs = []
    stats = {"prompts": len(gold), "dropped_no_sample": 0, "dropped_same_as_gold": 0,
             "unknown_prompt": sum(len(v) for k, v in by_prompt.items() if k not in gold)}
    for pid in sorted(gold):
        prompt, answer = gold[pid]
        if not by_prompt.get(pid):
            stats["dropped_no_sample"] += 1
            continue
        for s in sorted(by_prompt[pid], key=lambda c: c.index):
            if s.response.strip() == answer.strip():
                stats["dropped_same_as_gold"] += 1
                continue
            pairs.append(pair_dict(f"{pid}-spin-c{s.index}", pid, prompt, f"{pid}-gold", answer, None,
                                    s.id, s.response, None, kind="spin"))
    stats["kept"] = len(pairs)
    return pairs, stats


def run_pairs(cfg, rd, t: int) -> dict:
    prompts = read_jsonl(rd.prompts(t), PromptRecord)
    samples = [c for c in read_jsonl(rd.candidates(t), CandidateRecord) if c.index < cfg.spin.samples_per_prompt]
    pairs, stats = spin_pairs(gold_for(prompts, loaders.load_ift(cfg.data.ift)), samples)
    out = [p | {"lag": 0} for p in pairs]
    replayed = 0
    for lag, path in replay_sources(cfg, rd, t):
        # Only that iteration's own pairs (lag 0 there): its replayed ones would compound.
        own = [p for p in read_jsonl(path) if p.get("lag", 0) == 0]
        out += [p | {"lag": lag} for p in own]
        replayed += len(own)
    if is_main():
        write_jsonl(rd.pairs(t), out)
    return {f"spin/{k}": v for k, v in stats.items()} | {"spin/replayed": replayed, "pairs/kept": len(out)}
