"""DPO on human preference pairs (method: dpo_human; DPO as in Rafailov et al. 2023), the baseline
self-rewarding is compared with: the same DPO step from the same M1, but on human labels instead
of the model's own judgments. One offline DPO run, evaluated like any iteration.

The pairs stage of its single iteration reads pairs.human_train:
- pairwise JSONL {prompt, response_a, response_b, label a|b|tie}: the preferred reply is chosen,
  ties carry no preference and are skipped (counted);
- 'oasst:PATH' or 'embedded:oasst': Open Assistant ranked replies of each first-turn prompt, the
  best-ranked reply chosen and the worst-ranked rejected (one pair per prompt, the widest gap).
Groups are read with data/loaders.py's load_groups (as EFT building reads them), and every prompt
that duplicates an evaluation prompt (exactly, or ROUGE-L F1 above eft_build.near_duplicate_threshold)
is dropped first (data/dedup.py): evaluation data never trains anything. pairs.max_human_train
keeps a seeded subset.
Output: DIR/iter_<t>/pairs.jsonl of PairRecord (no judge scores), then the dpo stage as usual.
"""

from __future__ import annotations

import random

from srlm.data import dedup, loaders
from srlm.run.parallel import derive_seed, is_main
from srlm.run.records import InputError, PairRecord, write_jsonl


def build(cfg) -> tuple[list[PairRecord], dict]:
    """(pairs, human_pairs/* stats) from cfg.pairs.human_train."""
    source = cfg.pairs.human_train
    groups, load_stats = loaders.load_groups([source], first_turn_only=True)
    kept, dropped = dedup.dedup_against_eval(groups, dedup.eval_prompts(cfg), cfg.eft_build.near_duplicate_threshold,
                                             prompt=lambda g: g.prompt)
    limit = cfg.pairs.max_human_train
    if limit and len(kept) > limit:
        chosen = random.Random(derive_seed(cfg.seed, "human_pairs")).sample(range(len(kept)), limit)
        kept = [kept[i] for i in sorted(chosen)]
    pairs = [PairRecord(
        id=f"{g.id}-human", prompt_id=g.id, prompt=g.prompt, chosen=g.replies[0], rejected=g.replies[-1],
        chosen_id=f"{g.id}-r0", rejected_id=f"{g.id}-r{len(g.replies) - 1}", score_chosen=None,
        score_rejected=None, chosen_length=len(g.replies[0]), rejected_length=len(g.replies[-1])) for g in kept]
    if not pairs:
        raise InputError(f"{source}: no human pairs left after removing evaluation prompts ({dict(dropped)})")
    stats = {f"human_pairs/{k.removeprefix('eft_build/')}": v for k, v in load_stats.items()}
    stats |= {"human_pairs/groups": len(groups), "human_pairs/kept": len(pairs),
              **{f"human_pairs/dropped_{k}": dropped.get(k, 0)
                 for k in ("exact_duplicate_of_eval", "near_duplicate_of_eval")}}
    return pairs, stats


def run(cfg, rd, t: int) -> dict:
    pairs, stats = build(cfg)
    if is_main():
        write_jsonl(rd.pairs(t), pairs)
    return stats | {"pairs/kept": len(pairs)}
