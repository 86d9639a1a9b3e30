"""Stage 0: M0 -> M1 by supervised fine-tuning on seed IFT + EFT data (paper section 3.1).

IFT teaches instruction following; EFT teaches the judge role: the rendered rubric prompt as
the user turn, a justification ending in `Score: N` as the assistant turn. Both are
prompt-completion conversations, so TRL's SFTTrainer applies the chat template and puts the
loss on the completion only.
Output: DIR/models/M1 (merged, loadable with from_pretrained), DIR/sft_log.json.
"""

from __future__ import annotations

import random

from srlm.data import loaders, rubric
from srlm.run import progress
from srlm.run.faults import TrainerFaults
from srlm.engines.modeling import ModelRef, save_model
from srlm.run.parallel import barrier, is_main
from srlm.run.records import write_json
from srlm.engines.training import cpu_log_probs, finish, last_checkpoint, load_for_training, log_summary, lora_config, trainer_kwargs


def build_dataset(cfg, rd=None):
    from datasets import Dataset

    template = rubric.load_template(cfg.judge.template)
    ift = loaders.load_ift(cfg.data.ift, cfg.data.max_ift)
    eft = loaders.load_eft(cfg.data.eft, template, cfg.data.max_eft)
    built = []
    if rd is not None and cfg.eft_build.enabled:
        # EFT built from ranked human data (eft_build stage), judged with the same template.
        built = loaders.load_eft([rd.eft_built], template, cfg.eft_build.max_examples)
    rows = [{"prompt": [{"role": "user", "content": e.prompt}],
             "completion": [{"role": "assistant", "content": e.response}]} for e in ift]
    rows += [{"prompt": [{"role": "user", "content": e.prompt}],
              "completion": [{"role": "assistant", "content": e.judgment}]} for e in eft + built]
    random.Random(cfg.seed).shuffle(rows)
    return Dataset.from_list(rows), {"sft/ift_examples": len(ift), "sft/eft_examples": len(eft) + len(built),
                                     "sft/eft_built_examples": len(built)}


def run(cfg, rd, m0: ModelRef) -> dict:
    model_dir = rd.model(1)
    model, tok = load_for_training(cfg, m0)
    if not cfg.sft.enabled:
        if is_main():
            save_model(model, tok, model_dir)
        barrier()
        return {"sft/skipped": 1}
    from trl import SFTConfig, SFTTrainer

    dataset, counts = build_dataset(cfg, rd)
    ckpt = rd.stage_checkpoint("sft")
    args = SFTConfig(**trainer_kwargs(cfg, cfg.sft, ckpt), lr_scheduler_type=cfg.sft.lr_scheduler,
                     completion_only_loss=True)
    with cpu_log_probs():
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                             peft_config=lora_config(cfg.sft), callbacks=[TrainerFaults()])
        progress.quiet_trainer(trainer)
        trainer.train(resume_from_checkpoint=last_checkpoint(ckpt))
    log = finish(trainer, tok, model_dir, ckpt)
    if is_main():
        write_json(rd.sft_log, log)
    barrier()
    return counts | log_summary(log, "sft")
