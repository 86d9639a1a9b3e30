"""What the SFT and DPO stages share: trainer arguments, LoRA, resume, merge-and-save."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import torch

from srlm.modeling import ModelRef, load_model, load_tokenizer, pick_dtype, save_model, set_threads
from srlm.parallel import is_main, world


def _checkpointing_arg() -> str:
    # transformers 5.x renamed gradient_checkpointing to activation_checkpointing.
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


_CHECKPOINTING_ARG = _checkpointing_arg()


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
        report_to=[],
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


class _PlainLogProbs:
    """Stand-in for TRL's `ChunkedLogProbFunction` on CPU tensors: per-token log-probs (and the
    detached extras TRL logs) from one lm_head matmul and autograd's fused log_softmax.

    Why: TRL's fused head tiles the vocabulary to avoid materialising [tokens, vocab] logits, which
    matters on GPUs; on a CPU without Triton it folds each tile in ~10 elementwise passes and scores
    every position, prompt and padding included. Scoring only completion tokens with a plain
    log_softmax made a DPO step 1.8x faster on the 2-core box (36.3 s -> 20.1 s for 16 pairs of
    SmolLM2-135M, docs/LOG.md); the logits of a 600-token micro-batch are 118 MB."""

    original = None

    @classmethod
    def apply(cls, hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0,
              outputs=()):
        if hidden.device.type != "cpu":
            return cls.original.apply(hidden, weight, bias, targets, temperature, chunk_size, softcap, logit_scale,
                                      outputs)
        z = hidden @ weight.t()
        if bias is not None:
            z = z + bias
        z = z.float() * logit_scale
        if softcap is not None:
            z = softcap * torch.tanh(z / softcap)
        z = z / temperature
        log_p = torch.log_softmax(z, dim=-1)
        log_probs = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        extra = dict.fromkeys(("entropy", "log_sum_sq_probs", "mean_logits", "is_top1"))
        with torch.no_grad():
            if "entropy" in outputs or "log_sum_sq_probs" in outputs:
                p = log_p.exp()
                if "entropy" in outputs:
                    extra["entropy"] = -(p * log_p).sum(-1)
                if "log_sum_sq_probs" in outputs:
                    extra["log_sum_sq_probs"] = torch.log((p * p).sum(-1))
            if "mean_logits" in outputs:
                extra["mean_logits"] = z.mean(-1)
            if "is_top1" in outputs:
                extra["is_top1"] = z.argmax(-1) == targets
        return (log_probs, *extra.values())


@contextmanager
def cpu_log_probs():
    """While SFT/DPO trainers are built and trained on CPU: score only completion positions (what
    TRL does on Triton devices) with `_PlainLogProbs`. TRL internals: if a TRL release renames
    them, this does nothing and training runs TRL's own (slower on CPU) path."""
    try:
        import trl.trainer.utils as tu
    except ImportError:
        yield
        return
    if not (hasattr(tu, "_ChunkedLogProbFunction") and hasattr(tu, "_use_triton")):
        yield
        return
    saved = tu._ChunkedLogProbFunction, tu._use_triton
    _PlainLogProbs.original = saved[0]
    tu._ChunkedLogProbFunction = _PlainLogProbs
    tu._use_triton = lambda device: device.type == "cpu" or saved[1](device)
    try:
        yield
    finally:
        tu._ChunkedLogProbFunction, tu._use_triton = saved


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
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(out_dir)


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
