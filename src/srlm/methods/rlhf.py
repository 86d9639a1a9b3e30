"""Classical RLHF (method: rlhf; InstructGPT, Ouyang et al. 2022, arXiv:2203.02155, sections 3.5):
a Bradley-Terry reward model trained on human preference pairs, then the policy optimised online
against it with a KL penalty towards the model it starts from. The baseline that separates
"self-rewarding" from "learning from human labels through a reward model".

TRL 1.16 ships no PPO trainer (InstructGPT's optimiser), so the online step is TRL's RLOOTrainer
(REINFORCE leave-one-out, Ahmadian et al. 2024, arXiv:2402.14740: PPO's quality for RLHF without
a value network; rlhf.trainer=rloo, the default) or GRPOTrainer (Shao et al. 2024,
arXiv:2402.03300; rlhf.trainer=grpo), each with the reward model as its reward function.

One iteration, as dpo_human's:
- human_pairs (dpo_human.py): pairs.human_train, evaluation prompts removed -> iter_<t>/pairs.jsonl;
- reward_model: M_t with a scalar head (AutoModelForSequenceClassification, num_labels=1) trained
  by TRL's RewardTrainer (loss -log sigmoid(r(x, chosen) - r(x, rejected))) on a seeded
  1 - rlhf.heldout_fraction of the pairs. Its held-out accuracy (chosen rewarded above rejected,
  ties count half) is reported beside the length heuristic's on the same pairs, as every judge
  figure in srlm is -> iter_<t>/reward_model (merged weights and tokenizer, plus
  heldout_rewards.jsonl);
- rl: rlhf.num_generations completions of M_t per prompt, rewarded by the reward model, trained
  with RLOO or GRPO -> models/M<t+1> (merged, saved as the dpo stage saves), iter_<t>/rl_log.json.
The RL prompts (rlhf.prompts): pairs, the pairs' own prompts (the reward model's distribution, and
the prompts dpo_human trains on: a like-for-like comparison), or ift, the seed IFT prompts with
evaluation prompts removed as human_pairs removes them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from srlm.data import dedup, loaders
from srlm.run import progress
from srlm.run.faults import TrainerFaults
from srlm.run.parallel import barrier, derive_seed, is_main
from srlm.run.records import InputError, PairRecord, read_jsonl, write_json, write_jsonl

HELDOUT_FILE = "heldout_rewards.jsonl"


# -- pure parts ---------------------------------------------------------------------------------

def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float | None:
    """Fraction of pairs whose chosen side scores above its rejected side, a tie counting half
    (a scorer that cannot tell the two apart sits at 0.5, chance); None for no pairs."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen scores for {len(rejected)} rejected ones")
    if not chosen:
        return None
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected))
    return wins / len(chosen)


def length_accuracy(pairs: Sequence[PairRecord]) -> float | None:
    """The length heuristic on the same pairs: the longer answer (characters) wins."""
    return pairwise_accuracy([len(p.chosen) for p in pairs], [len(p.rejected) for p in pairs])


def split_heldout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of n pairs, both sorted: a seeded round(n * fraction) held out,
    at least one when fraction > 0 and at least one left to train on."""
    held = min(max(round(n * fraction), 1 if fraction > 0 else 0), max(n - 1, 0))
    chosen = set(random.Random(derive_seed(seed, "rlhf_heldout")).sample(range(n), held))
    return [i for i in range(n) if i not in chosen], sorted(chosen)


def rl_prompts(cfg, pairs: Sequence[PairRecord]) -> list[str]:
    """The prompts the policy is optimised on (rlhf.prompts), each once, in order, then a seeded
    subset of rlhf.max_prompts of them (0 = all)."""
    if cfg.rlhf.prompts == "pairs":
        prompts = [p.prompt for p in pairs]
    else:
        ift = [ex.prompt for ex in loaders.load_ift(cfg.data.ift, cfg.data.max_ift)]
        prompts, _ = dedup.dedup_against_eval(ift, dedup.eval_prompts(cfg), cfg.eft_build.near_duplicate_threshold)
    prompts = list(dict.fromkeys(prompts))
    limit = cfg.rlhf.max_prompts
    if limit and len(prompts) > limit:
        keep = random.Random(derive_seed(cfg.seed, "rlhf_prompts")).sample(range(len(prompts)), limit)
        prompts = [prompts[i] for i in sorted(keep)]
    return prompts


def reward_log_summary(log: list[dict]) -> dict:
    """rl/reward_first and rl/reward_last: the mean reward of the first and last logged steps
    (TRL logs `reward`, the batch mean of the reward model's scores, each step)."""
    rewards = [r["reward"] for r in log if "reward" in r]
    return {"rl/reward_first": rewards[0], "rl/reward_last": rewards[-1]} if rewards else {}


# -- the reward model ---------------------------------------------------------------------------

def _lora(cfg, task_type: str):
    if not cfg.rlhf.lora:
        return None
    from peft import LoraConfig

    # SEQ_CLS also trains (and saves) the new score head beside the adapter.
    return LoraConfig(r=cfg.rlhf.lora_r, lora_alpha=cfg.rlhf.lora_alpha, lora_dropout=cfg.rlhf.lora_dropout,
                      target_modules="all-linear", task_type=task_type)


def _sections(cfg):
    """trainer_kwargs reads a stage section's batch, epoch, lr and checkpoint fields: the
    reward model's and the policy's views of the rlhf section."""
    from types import SimpleNamespace

    r = cfg.rlhf
    common = dict(gradient_checkpointing=r.gradient_checkpointing, save_steps=r.save_steps, report_to=r.report_to)
    reward = SimpleNamespace(per_device_batch_size=r.reward_per_device_batch_size, batch_size=r.reward_batch_size,
                             epochs=r.reward_epochs, learning_rate=r.reward_learning_rate,
                             max_length=r.reward_max_length, **common)
    policy = SimpleNamespace(per_device_batch_size=r.per_device_batch_size, batch_size=r.batch_size,
                             epochs=r.epochs, learning_rate=r.learning_rate, max_length=None, **common)
    return reward, policy


def preference_dataset(pairs: Sequence[PairRecord]):
    """TRL's conversational preference form, so the chat template wraps prompt and answer as the
    RL trainer wraps them when it scores completions."""
    from datasets import Dataset

    return Dataset.from_list([{
        "prompt": [{"role": "user", "content": p.prompt}],
        "chosen": [{"role": "assistant", "content": p.chosen}],
        "rejected": [{"role": "assistant", "content": p.rejected}],
    } for p in pairs])


def train_reward_model(cfg, start: str, pairs: Sequence[PairRecord], ckpt: str):
    """TRL's RewardTrainer from the causal LM at `start` (a new scalar head), trained on pairs
    (resuming from ckpt if it holds a checkpoint); returns the trainer."""
    import torch
    from trl import RewardConfig, RewardTrainer

    from srlm.engines.modeling import load_tokenizer, ModelRef, set_threads
    from srlm.engines.training import last_checkpoint, trainer_kwargs

    set_threads(cfg.model.threads)
    section, _ = _sections(cfg)
    args = RewardConfig(**trainer_kwargs(cfg, section, ckpt), model_init_kwargs={"dtype": torch.float32})
    trainer = RewardTrainer(model=start, args=args, train_dataset=preference_dataset(pairs),
                            processing_class=load_tokenizer(ModelRef(start)), peft_config=_lora(cfg, "SEQ_CLS"),
                            callbacks=[TrainerFaults()])
    progress.quiet_trainer(trainer)
    trainer.train(resume_from_checkpoint=last_checkpoint(ckpt))
    return trainer


def score(model, tok, prompts: Sequence[str], answers: Sequence[str], max_length: int) -> list[float]:
    """The reward model's scalar for each (prompt, answer), one sequence at a time (no padding to
    get wrong), chat-templated and tokenised as the RL trainers do; a sequence longer than
    max_length keeps its last max_length tokens, since the reward is read at the last token."""
    import torch

    out = []
    model.eval()
    for prompt, answer in zip(prompts, answers):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"][-max_length:]
        with torch.inference_mode():
            out.append(float(model(input_ids=torch.tensor([ids])).logits[0, 0]))
    return out


def load_reward_model(path: str):
    """(model, tokenizer) of a saved reward model, in float32 on the CPU."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from srlm.engines.modeling import ModelRef, load_tokenizer

    return (AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32),
            load_tokenizer(ModelRef(path)))


def run_reward_model(cfg, rd, t: int) -> dict:
    """The reward_model stage: train on the seeded train split of iter_<t>/pairs.jsonl, save the
    merged model to iter_<t>/reward_model, score the held-out split."""
    from srlm.engines.modeling import save_model
    from srlm.engines.training import log_summary

    pairs = read_jsonl(rd.pairs(t), PairRecord)
    train_idx, held_idx = split_heldout(len(pairs), cfg.rlhf.heldout_fraction, cfg.seed)
    if not train_idx:
        raise InputError(f"{rd.pairs(t)}: no pairs to train the reward model on")
    train, held = [pairs[i] for i in train_idx], [pairs[i] for i in held_idx]
    out_dir, ckpt = rd.reward_model(t), rd.stage_checkpoint("reward_model", t)
    trainer = train_reward_model(cfg, rd.model(t), train, ckpt)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tok = trainer.processing_class
    log = list(trainer.state.log_history)
    rc, rr = score(model, tok, [p.prompt for p in held], [p.chosen for p in held], cfg.rlhf.reward_max_length), \
        score(model, tok, [p.prompt for p in held], [p.rejected for p in held], cfg.rlhf.reward_max_length)
    if is_main():
        import shutil

        save_model(model, tok, out_dir)
        write_jsonl(os.path.join(out_dir, HELDOUT_FILE), [
            {"id": p.id, "reward_chosen": c, "reward_rejected": r, "chosen_length": len(p.chosen),
             "rejected_length": len(p.rejected)} for p, c, r in zip(held, rc, rr)])
        write_json(os.path.join(out_dir, "train_log.json"), log)
        shutil.rmtree(ckpt, ignore_errors=True)
    barrier()
    summary = {k: v for k, v in log_summary(log, "reward_model").items() if k != "reward_model/runtime_s"}
    return {"reward_model/train_pairs": len(train), "reward_model/heldout_pairs": len(held),
            "reward_model/heldout_accuracy": pairwise_accuracy(rc, rr),
            "reward_model/length_baseline": length_accuracy(held)} | summary


# -- the policy ---------------------------------------------------------------------------------

def run_rl(cfg, rd, t: int) -> dict:
    """The rl stage: M_t optimised against iter_<t>/reward_model with RLOO or GRPO -> M_{t+1}."""
    from datasets import Dataset

    from srlm.engines.modeling import ModelRef
    from srlm.engines.training import finish, last_checkpoint, load_for_training, log_summary, trainer_kwargs

    prompts = rl_prompts(cfg, read_jsonl(rd.pairs(t), PairRecord))
    if not prompts:
        raise InputError(f"method rlhf: no prompts to optimise on (rlhf.prompts={cfg.rlhf.prompts})")
    model, tok = load_for_training(cfg, ModelRef(rd.model(t)))
    reward_model, reward_tok = load_reward_model(rd.reward_model(t))
    _, section = _sections(cfg)
    kwargs = trainer_kwargs(cfg, section, rd.stage_checkpoint("rl", t))
    kwargs.pop("max_length")  # the RL configs bound completions instead (max_completion_length)
    kwargs["remove_unused_columns"] = False  # TRL's default for RL: reward functions may read extra columns
    r = cfg.rlhf
    rl_args = dict(num_generations=r.num_generations, max_completion_length=r.max_completion_length,
                   temperature=r.temperature, beta=r.beta)
    if r.trainer == "rloo":
        from trl import RLOOConfig as ArgsClass, RLOOTrainer as TrainerClass
    else:
        from trl import GRPOConfig as ArgsClass, GRPOTrainer as TrainerClass
    ckpt = kwargs["output_dir"]
    trainer = TrainerClass(model=model, reward_funcs=reward_model, args=ArgsClass(**kwargs, **rl_args),
                           train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": p}]}
                                                            for p in prompts]),
                           processing_class=tok, reward_processing_classes=reward_tok,
                           peft_config=_lora(cfg, "CAUSAL_LM"), callbacks=[TrainerFaults()])
    progress.quiet_trainer(trainer)
    trainer.train(resume_from_checkpoint=last_checkpoint(ckpt))
    log = finish(trainer, tok, rd.model(t + 1), ckpt)
    if is_main():
        write_json(rd.rl_log(t), log)
    barrier()
    return ({"rl/trainer": r.trainer, "rl/prompts": len(prompts), "rl/start": os.path.basename(rd.model(t))}
            | log_summary(log, "rl") | reward_log_summary(log))
