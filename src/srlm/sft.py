"""Stage 0: M0 -> M1 by supervised fine-tuning on seed IFT + EFT data (paper section 3.1).

IFT teaches instruction following; EFT teaches the judge role: the rendered rubric prompt as
the user turn, a justification ending in `Score: N` as the assistant turn. Both are
prompt-completion conversations, so TRL's SFTTrainer applies the chat template and puts the
loss on the completion only.
Output: DIR/models/M1 (merged, loadable with from_pretrained), DIR/sft_log.json.
"""

from __future__ import annotations

import os
import random

from srlm import data, rubric
from srlm.modeling import ModelRef, save_model
from srlm.parallel import barrier, is_main
from srlm.records import is_done, mark_done, read_json, write_json
from srlm.training import cpu_log_probs, finish, last_checkpoint, load_for_training, log_summary, lora_config, trainer_kwargs


def build_dataset(cfg):
    from datasets import Dataset

    template = rubric.load_template(cfg.judge.template)
    ift = data.load_ift(cfg.data.ift, cfg.data.max_ift)
    eft = data.load_eft(cfg.data.eft, template, cfg.data.max_eft)
    rows = [{"prompt": [{"role": "user", "content": e.prompt}],
             "completion": [{"role": "assistant", "content": e.response}]} for e in ift]
    rows += [{"prompt": [{"role": "user", "content": e.prompt}],
              "completion": [{"role": "assistant", "content": e.judgment}]} for e in eft]
    random.Random(cfg.seed).shuffle(rows)
    return Dataset.from_list(rows), {"sft/ift_examples": len(ift), "sft/eft_examples": len(eft)}


def run(cfg, run_dir: str, m0: ModelRef) -> dict:
    model_dir = os.path.join(run_dir, "models", "M1")
    done_path = model_dir  # marker: models/M1.done
    if not is_done(done_path):
        model, tok = load_for_training(cfg, m0)
        if not cfg.sft.enabled:
            if is_main():
                save_model(model, tok, model_dir)
                mark_done(done_path, {"sft/skipped": 1})
            barrier()
        else:
            from trl import SFTConfig, SFTTrainer

            dataset, counts = build_dataset(cfg)
            ckpt = os.path.join(run_dir, "checkpoints", "sft")
            args = SFTConfig(**trainer_kwargs(cfg, cfg.sft, ckpt), lr_scheduler_type=cfg.sft.lr_scheduler,
                             completion_only_loss=True)
            with cpu_log_probs():
                trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                                     peft_config=lora_config(cfg.sft))
                trainer.train(resume_from_checkpoint=last_checkpoint(ckpt))
            log = finish(trainer, tok, model_dir, ckpt)
            if is_main():
                write_json(os.path.join(run_dir, "sft_log.json"), log)
                mark_done(done_path, counts | log_summary(log, "sft"))
            barrier()
    return read_json(done_path + ".done", {})
