"""What the SFT and DPO stages share: trainer arguments, LoRA, resume, merge-and-save, and (from
srlm.engines._compat) the CPU log-prob path `cpu_log_probs`."""

from __future__ import annotations

import os
import re
import shutil

import torch

# cpu_log_probs is re-exported: loop/sft.py and loop/dpo.py enter it around their trainers.
from srlm.engines._compat import checkpointing_arg, cpu_log_probs  # noqa: F401
from srlm.engines.modeling import ModelRef, load_model, load_tokenizer, pick_dtype, save_model, set_threads
from srlm.run.parallel import is_main, world

# transformers 5.x renamed gradient_checkpointing to activation_checkpointing (probed in _compat).
_CHECKPOINTING_ARG = checkpointing_arg()


def trainer_kwargs(cfg, section, out_dir: str) -> dict:
    """Arguments common to TRL's SFTConfig and DPOConfig for one stage's config section."""
    _, size = world()
    per_device = section.per_device_batch_size
    accum = max(1, section.batch_size // (per_device * size))
    use_bf16 = pick_dtype(cfg.model.dtype) == torch.bfloat16
    return dict(
        output_dir=out_dir,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        num_train_epochs=section.epochs,
        learning_rate=section.learning_rate,
        max_length=section.max_length,
        logging_steps=1,
        save_strategy="steps",
        save_steps=section.save_steps,
        save_total_limit=1,
        report_to=list(getattr(section, "report_to", [])) or "none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        # Mixed precision: fp32 master weights, bf16 matmuls (1.6x faster per step on this
        # project's AVX512-BF16 CPU; the default on GPUs that support it).
        bf16=use_bf16,
        use_cpu=not torch.cuda.is_available(),
        **{_CHECKPOINTING_ARG: section.gradient_checkpointing},
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        remove_unused_columns=True,
        disable_tqdm=not is_main(),
    )


def lora_config(section):
    if not section.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=section.lora_r, lora_alpha=section.lora_alpha, lora_dropout=section.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def load_for_training(cfg, ref: ModelRef):
    set_threads(cfg.model.threads)
    tok = load_tokenizer(ref)
    model = load_model(ref, dtype=torch.float32)
    model.train()
    return model, tok


def last_checkpoint(out_dir: str) -> str | None:
    if not os.path.isdir(out_dir):
        return None
    # The newest checkpoint the Trainer finished writing: trainer_state.json is its last file, so a
    # kill during a save leaves a newer, incomplete checkpoint-N that must not be resumed from.
    done = []
    for name in os.listdir(out_dir):
        m = re.fullmatch(r"checkpoint-(\d+)", name)
        if m and os.path.exists(os.path.join(out_dir, name, "trainer_state.json")):
            done.append((int(m.group(1)), os.path.join(out_dir, name)))
    return max(done)[1] if done else None


def finish(trainer, tokenizer, model_dir: str, ckpt_dir: str) -> list[dict]:
    """Merge a LoRA adapter if any, save the model where from_pretrained loads it, return the log."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if is_main():
        model.config.use_cache = True
        save_model(model, tokenizer, model_dir)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return list(trainer.state.log_history)


def log_summary(log: list[dict], prefix: str) -> dict:
    """Final values of TRL's logged metrics as `prefix/name` (e.g. dpo/rewards/accuracies)."""
    train = [r for r in log if "loss" in r]
    out: dict = {}
    if train:
        last = train[-1]
        for k, v in last.items():
            if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                out[f"{prefix}/{k}"] = v
        out[f"{prefix}/first_loss"] = train[0]["loss"]
        out[f"{prefix}/steps"] = last.get("step", len(train))
    summary = [r for r in log if "train_runtime" in r]
    if summary:
        out[f"{prefix}/runtime_s"] = summary[-1]["train_runtime"]
    return out
