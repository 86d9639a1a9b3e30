"""Tiny randomly initialised models built locally from a config: no downloads."""

from __future__ import annotations

import json
import os

import torch

from srlm.loop.prompts import INSTRUCTION

# Topics of the tiny seed data: IFT "Write one sentence about T." and EFT "Describe T.".
TOPICS = ["the sea", "a cat", "rain", "coffee", "a train", "winter", "music", "a garden"]
TOKENIZER_CACHE = os.path.join(os.environ.get("SRLM_TEST_CACHE", "/tmp/srlm-test-cache"), "tokenizer")


def tokenizer_dir() -> str:
    """The SmolLM2 tokenizer, converted once from the embedded GGUF and cached on disk."""
    if not os.path.exists(os.path.join(TOKENIZER_CACHE, "tokenizer.json")):
        from srlm.engines.modeling import load_tokenizer, resolve

        tok = load_tokenizer(resolve("embedded:smollm2-135m-instruct"))
        tmp = TOKENIZER_CACHE + f".tmp{os.getpid()}"
        tok.save_pretrained(tmp)
        os.makedirs(os.path.dirname(TOKENIZER_CACHE), exist_ok=True)
        try:
            os.replace(tmp, TOKENIZER_CACHE)
        except OSError:
            pass  # another worker won the race
    return TOKENIZER_CACHE


def make_tiny_model(out_dir: str, seed: int = 0, layers: int = 2, hidden: int = 64) -> str:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def write_seed_files(root: str) -> tuple[str, str, str]:
    """Small IFT and EFT files; EFT judgments are bare score lines so that a tiny model learns
    the format in a few steps and the loop forms real pairs."""
    ift = os.path.join(root, "ift.jsonl")
    eft = os.path.join(root, "eft.jsonl")
    new_topics = ["the moon", "a dog", "snow", "tea", "a bicycle", "summer", "a painting", "a forest"]
    with open(ift, "w") as f:
        for i, t in enumerate(TOPICS):
            f.write(json.dumps({"prompt": f"Write one sentence about {t}.",
                                "response": f"Here is a sentence about {t}: it is lovely."}) + "\n")
        # The self-instruct role too, so that M1 writes requests that pass the prompt filters
        # (a 2-layer model left to generalise from the examples writes answers instead).
        for i, t in enumerate(new_topics):
            shots = "\n".join(f"Request {j + 1}: Write one sentence about {TOPICS[(i + j) % len(TOPICS)]}."
                               for j in range(3))
            f.write(json.dumps({"prompt": INSTRUCTION.format(examples=shots),
                                "response": f"Write one sentence about {t}."}) + "\n")
    with open(eft, "w") as f:
        for i, t in enumerate(TOPICS * 4):
            f.write(json.dumps({"prompt": f"Describe {t}.", "response": f"{t} " * (i % 4 + 1),
                                "judgment": f"Score: {i % 6}", "score": i % 6}) + "\n")
    template = os.path.join(root, "template.txt")
    with open(template, "w") as f:
        f.write("Rate 0-5.\n{prompt}\n{response}")
    return ift, eft, template


def tiny_overrides(root: str, model_dir: str, ift: str, eft: str, template: str) -> list[str]:
    return [
        f"output_dir={os.path.join(root, 'run')}",
        f"model.name_or_path={model_dir}",
        "model.dtype=float32",
        f"data.ift=[{ift}]",
        f"data.eft=[{eft}]",
        f"judge.template={template}",
        "sft.lora=false", "dpo.lora=false", "sft.epochs=12", "sft.learning_rate=0.01", "sft.batch_size=8", "sft.per_device_batch_size=8",
        "sft.max_length=512", "sft.lr_scheduler=constant",
        "prompts.num_prompts=4", "prompts.max_new_tokens=24", "prompts.few_shot=3", "prompts.min_words=1",
        "prompts.max_rounds=3", "prompts.rouge_threshold=0.99",
        "sample.max_new_tokens=12", "sample.chunk_size=2", "judge.k=2", "judge.max_new_tokens=8",
        "judge.chunk_size=8",
        "dpo.learning_rate=0.0001", "dpo.batch_size=4", "dpo.per_device_batch_size=2", "dpo.max_length=512",
        "eval.enabled=false", "backend.batch_size=16", "eval.ifeval_size=4", "eval.ifeval_max_new_tokens=16",
    ]
