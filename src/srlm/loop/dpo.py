"""Stage 5 of an iteration: DPO on the iteration's pairs -> M_{t+1} (paper section 3.2:
beta 0.1, learning rate 1e-6 decaying linearly to 1e-7, batch size 16).

Training starts from the SFT anchor M1 (dpo.init=anchor, as the seed describes) or from M_t
(dpo.init=previous); the DPO reference model is the model training starts from. With LoRA the
reference is the same network with the adapter disabled; reference log-probabilities are
computed once before training (precompute_ref_log_probs), so no second model is held.
When any pair carries a `confidence` (CREAM's consistency, or a user's own column), training
uses the confidence-weighted loss of engines/weighted_dpo.py (pairs without one count as 1.0); otherwise
TRL's DPOTrainer as it is.
In Meta-Rewarding's judge-training iterations the set also holds iter_<t>/judge_pairs.jsonl
(methods/meta_rewarding.py; the stage table passes it). Output: DIR/models/M<t+1> (merged), DIR/iter_<t>/dpo_log.json.
"""

from __future__ import annotations

import os

from srlm.run import progress
from srlm.run.faults import TrainerFaults
from srlm.engines.modeling import ModelRef, save_model
from srlm.run.parallel import barrier, is_main
from srlm.run.records import PairRecord, read_jsonl, write_json
from srlm.engines.training import cpu_log_probs, finish, last_checkpoint, load_for_training, log_summary, lora_config, trainer_kwargs


def to_conversational(pairs: list[PairRecord]):
    """pairs.jsonl keeps plain strings for people and tools; the trainer gets TRL's
    conversational form so the chat template wraps prompt and answers as at sampling time."""
    from datasets import Dataset

    return Dataset.from_list([{
        "prompt": [{"role": "user", "content": p.prompt}],
        "chosen": [{"role": "assistant", "content": p.chosen}],
        "rejected": [{"role": "assistant", "content": p.rejected}],
    } for p in pairs])


def start_model(cfg, rd, t: int) -> ModelRef:
    return ModelRef(rd.model(1 if cfg.dpo.init == "anchor" else t))


def is_weighted(pairs: list[PairRecord]) -> bool:
    """Whether the pairs need the weighted loss: any of them carries a confidence."""
    return any(p.confidence is not None for p in pairs)


def train(cfg, model, tok, pairs: list[PairRecord], ckpt: str):
    """TRL's DPOTrainer with the config's settings (WeightedDPOTrainer when is_weighted(pairs)),
    trained (resuming from ckpt if it holds a checkpoint); returns the trainer.
    benchmarks/bench_dpo.py times exactly this."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        **trainer_kwargs(cfg, cfg.dpo, ckpt),
        beta=cfg.dpo.beta,
        # Linear decay from learning_rate to final_learning_rate (paper: 1e-6 -> 1e-7).
        lr_scheduler_type="polynomial",
        lr_scheduler_kwargs={"lr_end": cfg.dpo.final_learning_rate, "power": 1.0},
        precompute_ref_log_probs=cfg.dpo.precompute_ref_log_probs,
        precompute_ref_batch_size=cfg.dpo.precompute_batch_size or None,
    )
    dataset, trainer_cls = to_conversational(pairs), DPOTrainer
    if is_weighted(pairs):
        from srlm.engines.weighted_dpo import WeightedDPOTrainer, with_confidence

        dataset, trainer_cls = with_confidence(dataset, [p.confidence for p in pairs]), WeightedDPOTrainer
    with cpu_log_probs():
        trainer = trainer_cls(model=model, args=args, train_dataset=dataset,
                              processing_class=tok, peft_config=lora_config(cfg.dpo), callbacks=[TrainerFaults()])
        progress.quiet_trainer(trainer)
        trainer.train(resume_from_checkpoint=last_checkpoint(ckpt))
    return trainer


def run(cfg, rd, t: int, judge_pairs: str | None = None) -> dict:
    """The dpo stage. judge_pairs: a file of judge pairs trained on in the same DPO set as the
    actor pairs (Meta-Rewarding's iter_<t>/judge_pairs.jsonl, which the stage table passes in
    the iterations where the judge trains)."""
    model_dir = rd.model(t + 1)
    pairs = read_jsonl(rd.pairs(t), PairRecord)
    judge = read_jsonl(judge_pairs, PairRecord) if judge_pairs else []
    mix = {"dpo/actor_pairs": len(pairs), "dpo/judge_pairs": len(judge)} if judge_pairs else {}
    pairs = pairs + judge
    start = start_model(cfg, rd, t)
    model, tok = load_for_training(cfg, start)
    if not pairs:
        # Nothing to learn from: M_{t+1} is the start model, and metrics say so loudly.
        print(f"WARNING: iteration {t} produced no preference pairs; M{t + 1} = {os.path.basename(start.path)}")
        if is_main():
            save_model(model, tok, model_dir)
        barrier()
        return {"dpo/pairs": 0, "dpo/skipped_no_pairs": 1} | mix
    ckpt = rd.stage_checkpoint("dpo", t)
    trainer = train(cfg, model, tok, pairs, ckpt)
    log = finish(trainer, tok, model_dir, ckpt)
    if is_main():
        write_json(rd.dpo_log(t), log)
    barrier()
    # dpo/weighted only for weighted runs: a plain run's metrics stay as they were.
    weighted = {"dpo/weighted": 1} if is_weighted(pairs) else {}
    return ({"dpo/pairs": len(pairs), "dpo/start": os.path.basename(start.path)} | weighted | mix
            | log_summary(log, "dpo"))
