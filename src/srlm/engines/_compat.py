"""Every place srlm touches private (underscored or undocumented) names of transformers and TRL.

srlm patches a few library internals so that a CPU run costs what its matmuls cost, and relies on a
few more to save and train models. They are all here, one function per touch, so that a new
library release breaks one module and says so: each fast path checks the names and signatures it
needs and, when its patch cannot be applied, warns (`CompatWarning`) and names the slower path in
use; `check_versions` logs one WARNING per process when an installed release is outside the range
srlm is tested with. No output file of its own.

Tested with transformers 5.24, TRL 1.16, PEFT 0.21 (`TESTED`, the same ranges as pyproject.toml).

Names touched, and why:
- `trl.trainer.utils._ChunkedLogProbFunction`, `trl.trainer.utils._use_triton` (`cpu_log_probs`):
  swapped while trainers run so that on CPU only completion tokens are scored, with one matmul and
  a fused log_softmax (`_PlainLogProbs`): a DPO step 1.8x faster on the 2-core box. Fallback:
  TRL's chunked log-prob kernel, which scores every position.
- `transformers.TrainingArguments` field `activation_checkpointing` / `gradient_checkpointing`
  (`checkpointing_arg`): transformers 5 renamed the field; the present one is probed.
- `transformers.cache_utils.DynamicLayer` internals `keys`, `values`, `is_initialized`,
  `lazy_initialization`, `get_mask_sizes(query_length)` and `DynamicCache.layers` (`roomy_cache`,
  `_RoomyLayer`): a KV cache layer that writes each decode step into preallocated room instead of
  concatenating the whole cache (~1 GB copied a step at 96 rows). Fallback: the concatenating
  DynamicCache.
- the same `DynamicLayer` internals and `DynamicCache.layers` (`fixed_cache`, `_FixedLayer`): on
  CUDA a batch's decode steps write into a fixed-size cache at a device-held position, so one step
  is captured as a CUDA graph (srlm/engines/backends/decode_steps.py) and replayed: a small model
  on a GPU is bound by launching kernels. Fallback: eager steps on the roomy cache.
- `transformers.AttentionInterface.register`, `transformers.masking_utils
  .ALL_MASK_ATTENTION_FUNCTIONS` / `sdpa_mask`, `transformers.integrations.sdpa_attention
  .sdpa_attention_forward`, `config._attn_implementation`, `model.set_attn_implementation`
  (`use_decode_attention`): one-token CPU attention as two grouped matmuls (`_decode_attention`,
  1.5 ms against SDPA's 2.6-17 ms per layer call in bf16). Fallback: SDPA attention.
- the `cache` / `past_key_values` keyword of a model's forward (`cache_kwarg`): renamed in
  transformers 5.x.
- torch's oneDNN ops `torch.ops.mkldnn._reorder_linear_weight` and `_linear_pointwise`
  (`pack_linears`, `packed_linears`): a bf16 CPU model's linear weights reordered once into
  oneDNN's blocked layout, which torch.compile's CPU backend also uses; each generation matmul then
  skips the per-call reorder (10-45% per matmul, bit-identical results, checked on a probe before
  use). Fallback: `F.linear`.
- `model.hf_quantizer`, `model.is_quantized`, `config.quantization_config` (`clear_gguf_quantization`):
  a GGUF load marks the model quantized though its weights are dequantised floats; the mark is
  cleared so a trained model saves as a plain checkpoint.
- `transformers.Trainer._set_signature_columns_if_needed` / `_signature_columns`
  (`keep_dataset_column`): the hook that picks which dataset columns survive
  remove_unused_columns=True; weighted DPO's `confidence` column must survive it.
- TRL's DPOTrainer collator keys, fused-LM-head forward and `compute_ref_log_probs`
  (`check_trl_version`): srlm.engines.weighted_dpo refuses to run outside the tested TRL range.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from importlib import metadata

import torch

log = logging.getLogger(__name__)

# The releases srlm is tested with; pyproject.toml pins the same ranges (tests/test_compat.py checks).
TESTED = {"transformers": ">=5.24,<5.25", "trl": ">=1.16,<1.17", "peft": ">=0.21,<0.22"}


class CompatWarning(RuntimeWarning):
    """A fast path could not be applied to the installed transformers/TRL; a slower one is in use."""


def _fallback(failed: str, slower: str) -> None:
    # stacklevel=2: the registry key is the touch function's line, so each fallback warns once a process.
    warnings.warn(f"srlm: {failed}; using {slower} instead (slower). srlm is tested with "
                  f"transformers {TESTED['transformers']}, TRL {TESTED['trl']}.", CompatWarning, stacklevel=2)


def _params(fn) -> list[str] | None:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


# --- versions --------------------------------------------------------------------------------------

_versions_checked = False


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def version_problems(installed: Mapping[str, str | None]) -> list[str]:
    """'trl 1.17.0 (tested: >=1.16,<1.17)' for each installed distribution outside TESTED."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    out = []
    for dist, spec in TESTED.items():
        version = installed.get(dist)
        if version is None:
            continue  # not installed: the import that needs it fails on its own
        try:
            ok = SpecifierSet(spec).contains(Version(version), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            out.append(f"{dist} {version} (tested: {spec})")
    return out


def check_versions() -> list[str]:
    """On the first call in a process: log one WARNING naming every installed transformers/TRL/PEFT
    release outside TESTED. Returns those problems (empty on later calls)."""
    global _versions_checked
    if _versions_checked:
        return []
    _versions_checked = True
    problems = version_problems({d: installed_version(d) for d in TESTED})
    if problems:
        log.warning("srlm touches private names of these libraries (srlm/engines/_compat.py) and is not tested with "
                    "the installed %s; a fast path that no longer applies warns and falls back.",
                    ", ".join(problems))
    return problems


def check_trl_version(version: str | None = None) -> str:
    """Raise RuntimeError unless the installed (or given) TRL version is in TESTED['trl']:
    srlm.engines.weighted_dpo relies on DPOTrainer internals that TRL changes between minor releases."""
    if version is None:
        import trl

        version = trl.__version__
    if version_problems({"trl": version}):
        raise RuntimeError(f"srlm.engines.weighted_dpo is tested with TRL {TESTED['trl']} but TRL {version} is installed; "
                           "re-check WeightedDPOTrainer against this TRL's DPOTrainer before widening the range "
                           "in srlm/engines/_compat.py and pyproject.toml.")
    return version


# --- training: TrainingArguments field, TRL's fused log-prob head -----------------------------------

def checkpointing_arg(args_cls=None) -> str:
    """The TrainingArguments field that turns on gradient checkpointing: transformers 5.x renamed
    gradient_checkpointing to activation_checkpointing."""
    check_versions()
    if args_cls is None:
        from transformers import TrainingArguments as args_cls
    names = {f.name for f in dataclasses.fields(args_cls)}
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if name in names:
            return name
    warnings.warn("srlm: TrainingArguments has neither activation_checkpointing nor gradient_checkpointing; "
                  "passing gradient_checkpointing, which this transformers may reject.", CompatWarning, stacklevel=2)
    return "gradient_checkpointing"


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


# TRL 1.16's positional call: ChunkedLogProbFunction.apply(hidden, weight, bias, targets, temperature,
# chunk_size, final_logit_softcapping, logit_scale, outputs), and _use_triton(device).
_CHUNKED_FORWARD = ["ctx", "hidden", "weight", "bias", "targets", "temperature", "chunk_size",
                    "final_logit_softcapping", "logit_scale", "outputs"]
_SLOW_LOG_PROBS = "TRL's chunked log-prob kernel (every position scored)"


@contextmanager
def cpu_log_probs():
    """While SFT/DPO trainers are built and trained on CPU: score only completion positions (what
    TRL does on Triton devices) with `_PlainLogProbs`, by swapping trl.trainer.utils'
    `_ChunkedLogProbFunction` and `_use_triton`. If they are missing or their signatures changed,
    warns and leaves TRL's own path in place."""
    check_versions()
    try:
        import trl.trainer.utils as tu
    except ImportError as e:
        _fallback(f"cannot import trl.trainer.utils ({e})", _SLOW_LOG_PROBS)
        yield
        return
    chunked, use_triton = getattr(tu, "_ChunkedLogProbFunction", None), getattr(tu, "_use_triton", None)
    if chunked is None or use_triton is None:
        missing = [n for n, v in (("_ChunkedLogProbFunction", chunked), ("_use_triton", use_triton)) if v is None]
        _fallback(f"trl.trainer.utils has no {' or '.join(missing)}", _SLOW_LOG_PROBS)
        yield
        return
    if _params(getattr(chunked, "forward", None)) != _CHUNKED_FORWARD or _params(use_triton) != ["device"]:
        _fallback("the signature of trl.trainer.utils._ChunkedLogProbFunction.forward or _use_triton changed",
                  _SLOW_LOG_PROBS)
        yield
        return
    _PlainLogProbs.original = chunked
    tu._ChunkedLogProbFunction = _PlainLogProbs
    tu._use_triton = lambda device: device.type == "cpu" or use_triton(device)
    try:
        yield
    finally:
        tu._ChunkedLogProbFunction, tu._use_triton = chunked, use_triton


def keep_dataset_column(column: str):
    """Class decorator for a transformers Trainer subclass: `column` survives
    remove_unused_columns=True, by extending the (private) `_set_signature_columns_if_needed` hook,
    which TRL's trainers override to keep only their own columns."""

    def decorate(cls):
        inherited = getattr(cls, "_set_signature_columns_if_needed", None)
        if inherited is None or _params(inherited) != ["self"]:
            warnings.warn(f"srlm: {cls.__name__} cannot extend transformers' Trainer._set_signature_columns_if_needed "
                          f"(missing or its signature changed): with remove_unused_columns=True the dataset's "
                          f"'{column}' column is removed before batching.", CompatWarning, stacklevel=2)
            return cls

        def _set_signature_columns_if_needed(self):
            super(cls, self)._set_signature_columns_if_needed()
            kept = getattr(self, "_signature_columns", None)
            if not isinstance(kept, list):
                warnings.warn(f"srlm: Trainer._signature_columns is {type(kept).__name__}, not a list; "
                              f"the '{column}' column may be removed before batching.", CompatWarning, stacklevel=2)
                return
            if column not in kept:
                self._signature_columns = [*kept, column]

        cls._set_signature_columns_if_needed = _set_signature_columns_if_needed
        return cls

    return decorate


# --- loading: a GGUF model's quantization mark -----------------------------------------------------

def clear_gguf_quantization(model) -> None:
    """transformers marks GGUF-loaded models as quantized, but the weights are already dequantised
    to float; clear the mark so the trained model can be saved normally."""
    check_versions()
    if not hasattr(model, "hf_quantizer"):
        warnings.warn("srlm: a GGUF-loaded model has no hf_quantizer attribute (transformers changed how it marks "
                      "GGUF models); nothing to clear, but saving the trained model may fail or record a "
                      "quantization_config.", CompatWarning, stacklevel=2)
    try:
        model.hf_quantizer = None
        model.is_quantized = False
    except AttributeError as e:  # e.g. is_quantized became a read-only property
        warnings.warn(f"srlm: cannot clear a GGUF model's quantization mark ({e}); saving it may fail.",
                      CompatWarning, stacklevel=2)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


# --- generation: forward's cache keyword, the roomy KV cache, one-token attention -------------------

def cache_kwarg(model) -> str:
    """The keyword a model's forward takes its KV cache by: transformers 5.x renamed
    `past_key_values` to `cache`; accept both."""
    check_versions()
    params = _params(model.forward) or []
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    warnings.warn(f"srlm: {type(model).__name__}.forward names neither `cache` nor `past_key_values`; passing "
                  "past_key_values, which this model may ignore (then the shared prefill is lost).",
                  CompatWarning, stacklevel=2)
    return "past_key_values"


try:
    from transformers.cache_utils import DynamicLayer as _DynamicLayer
except ImportError:  # renamed: roomy_cache() warns and keeps the concatenating DynamicCache
    _DynamicLayer = object

_SLOW_CACHE = "the concatenating DynamicCache"


class _RoomyLayer(_DynamicLayer):
    """A full-attention KV cache layer with `room` free (zeroed) positions after its tokens, so a
    decode step writes one position in place instead of concatenating the whole cache
    (DynamicLayer's copy is ~1 GB a step at 96 rows x 500 tokens of SmolLM2-135M).

    Like transformers' StaticLayer it hands attention the whole buffer and reports the buffer's
    size as the mask length, so the unfilled positions are masked (a strided view of the filled
    part would be copied by every attention matmul: 5.9 ms vs 2.6 ms per layer call); unlike it,
    it grows when full and supports the batch repeat/select the decode loop needs."""

    def __init__(self, room: int = 0):
        super().__init__()
        self.room = room
        self.length = 0

    def _capacity(self) -> int:
        # Before the first update `keys` is DynamicLayer's empty placeholder, not a buffer.
        return self.keys.shape[-2] if self.is_initialized and self.keys.dim() == 4 else 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.length + new > self._capacity():
            size = self.length + new + self.room
            keys = key_states.new_zeros(key_states.shape[:2] + (size, key_states.shape[-1]))
            values = value_states.new_zeros(value_states.shape[:2] + (size, value_states.shape[-1]))
            if self.length:
                keys[:, :, :self.length] = self.keys[:, :, :self.length]
                values[:, :, :self.length] = self.values[:, :, :self.length]
            self.keys, self.values = keys, values
        self.keys[:, :, self.length:self.length + new] = key_states
        self.values[:, :, self.length:self.length + new] = value_states
        self.length += new
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        # The mask is built before `update`, so report the size the buffer will have after it.
        size, needed = self._capacity(), self.length + query_length
        return (size if needed <= size else needed + self.room), 0

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self.keys = self.keys.repeat_interleave(repeats, dim=0)
            self.values = self.values.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self.keys, self.values = self.keys[indices], self.values[indices]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("srlm's decode loop never crops its cache")

    def reset(self) -> None:
        self.length = 0
        super().reset()


def _roomy_layer_problem() -> str | None:
    """Why `_RoomyLayer` cannot stand in for the installed DynamicLayer, or None."""
    import transformers.cache_utils as cu

    base = getattr(cu, "DynamicLayer", None)
    if base is None or base is not _DynamicLayer:
        return "transformers.cache_utils.DynamicLayer is missing or not the class srlm's cache layer extends"
    for name, params in (("lazy_initialization", ["self", "key_states", "value_states"]),
                         ("get_mask_sizes", ["self", "query_length"]),
                         ("batch_repeat_interleave", ["self", "repeats"]),
                         ("batch_select_indices", ["self", "indices"])):
        if _params(getattr(base, name, None)) != params:
            return f"DynamicLayer.{name} is missing or its signature changed"
    probe = base()
    missing = [n for n in ("keys", "values", "is_initialized") if not hasattr(probe, n)]
    if missing:
        return f"DynamicLayer no longer sets {', '.join(missing)}"
    return None


def roomy_cache(config, room: int):
    """A DynamicCache for `config` whose full-attention layers are `_RoomyLayer`s with `room` free
    positions. Sliding-window and linear-attention layers keep transformers' own logic, so a model
    with any of them gets the plain cache (by design: no warning)."""
    check_versions()
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    layers = getattr(cache, "layers", None)
    if not layers:
        _fallback("DynamicCache has no `layers` list", _SLOW_CACHE)
        return cache
    problem = _roomy_layer_problem()
    if problem:
        _fallback(problem, _SLOW_CACHE)
        return cache
    if all(type(layer) is _DynamicLayer for layer in layers):
        cache.layers = [_RoomyLayer(room) for _ in layers]
    return cache


def set_cache_room(cache, room: int) -> None:
    """Free positions each `_RoomyLayer` of `cache` adds when it grows (a copied prefix cache was
    prefilled with none)."""
    for layer in getattr(cache, "layers", ()):
        if isinstance(layer, _RoomyLayer):
            layer.room = room


class _FixedLayer(_DynamicLayer):
    """A full-attention KV cache layer of fixed size whose write position is a device tensor: every
    decode step launches the same kernels on the same buffers, so one step can be captured as a CUDA
    graph and replayed (transformers' StaticLayer does the same for torch.compile; this one is
    filled from a prefilled cache instead of a prefill). Attention gets the whole buffer; the
    caller's 4D mask hides the unwritten positions."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.position = torch.tensor([length], dtype=torch.long, device=keys.device)  # next write

    def update(self, key_states, value_states, *args, **kwargs):
        at = self.position + torch.arange(key_states.shape[-2], device=self.position.device)
        self.keys.index_copy_(2, at, key_states)
        self.values.index_copy_(2, at, value_states)
        self.position += key_states.shape[-2]  # in place: a captured graph advances it on replay
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return int(self.position.item())  # a host sync: never called when positions and a 4D mask are given

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[-2], 0

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a fixed cache keeps its rows")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("a fixed cache keeps its rows")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("srlm's decode loop never crops its cache")


def fixed_cache(config, cache, size: int):
    """A copy of `cache` (a `roomy_cache` or a plain DynamicCache, every layer full-attention) as a
    cache of `_FixedLayer`s holding `size` positions each, or None when `cache` has other layers
    (sliding window, linear attention) or `size` is too small (the caller keeps its eager steps)."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) not in (_RoomyLayer, _DynamicLayer) or not layer.is_initialized
                         for layer in layers):
        return None
    from transformers import DynamicCache

    fixed = []
    for layer in layers:
        n = layer.length if isinstance(layer, _RoomyLayer) else layer.keys.shape[-2]
        if n > size:
            return None
        keys = layer.keys.new_zeros(layer.keys.shape[:2] + (size, layer.keys.shape[-1]))
        values = layer.values.new_zeros(layer.values.shape[:2] + (size, layer.values.shape[-1]))
        keys[:, :, :n] = layer.keys[:, :, :n]
        values[:, :, :n] = layer.values[:, :, :n]
        fixed.append(_FixedLayer(keys, values, n))
    out = DynamicCache(config=config)
    out.layers = fixed
    return out


_SLOW_LINEAR = "F.linear with weights reordered on every call"


def _packed_linear_problem() -> str | None:
    """Why torch's oneDNN weight reorder and linear ops cannot stand in for F.linear, or None."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn)"
    try:
        reorder, linear = torch.ops.mkldnn._reorder_linear_weight, torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError) as e:
        return f"torch.ops.mkldnn has no _reorder_linear_weight/_linear_pointwise ({e})"
    # Use them only where they give F.linear's exact results: greedy answers must not change.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 64, generator=g).to(torch.bfloat16)
    w = torch.randn(48, 64, generator=g).to(torch.bfloat16)
    b = torch.randn(48, generator=g).to(torch.bfloat16)
    try:
        with torch.inference_mode():
            packed = reorder(w, 8)
            same = all(torch.equal(linear(x, packed, bias, "none", [], ""), torch.nn.functional.linear(x, w, bias))
                       for bias in (None, b))
    except Exception as e:  # noqa: BLE001 - any failure means the fast path is off, and says so
        return f"torch.ops.mkldnn._linear_pointwise failed on a probe ({e!r})"
    return None if same else "torch.ops.mkldnn._linear_pointwise does not reproduce F.linear exactly"


def pack_linears(model, rows: int) -> dict:
    """{module: packed weight} for every plain `nn.Linear` of a bf16 CPU model, each weight
    reordered once into oneDNN's layout for about `rows` input rows (a hint; any row count works).
    Empty for other models (by design: fp32 oneDNN results differ from F.linear's, and GPUs have
    their own kernels) and, with a warning, when the ops are missing or do not reproduce F.linear.
    The packed copies take as much memory again as the linear weights (~270 MB for 135M)."""
    check_versions()
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear and "forward" not in vars(m)
               and m.weight.dtype == torch.bfloat16 and m.weight.device.type == "cpu"]
    if not linears:
        return {}
    problem = _packed_linear_problem()
    if problem:
        _fallback(problem, _SLOW_LINEAR)
        return {}
    with torch.inference_mode():
        return {m: torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), max(1, rows)) for m in linears}


def _packed_linear(weight, bias, x):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@contextmanager
def packed_linears(packs: dict):
    """While inside: each module of `packs` (pack_linears) computes with its packed weight. The
    modules' own forward is back afterwards, so the model is unchanged for anyone else."""
    for m, w in packs.items():
        m.forward = functools.partial(_packed_linear, w, m.bias)
    try:
        yield
    finally:
        for m in packs:
            vars(m).pop("forward", None)


DECODE_ATTENTION = "srlm_sdpa"  # the attention implementation name srlm registers
_SLOW_ATTENTION = "SDPA attention"
_sdpa_forward = None  # transformers' sdpa_attention_forward, bound when DECODE_ATTENTION is registered
# transformers 5.24's attention-interface call (module, query, key, value, attention_mask, dropout, scaling, is_causal).
_ATTENTION_PARAMS = ["module", "query", "key", "value", "attention_mask", "dropout", "scaling", "is_causal"]


def _decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """One query token per row: softmax(q k^T) v as grouped matmuls on the key/value heads (no
    repeat_kv); everything else (prefill, GPUs, softcapping, sinks) goes to transformers' SDPA."""
    B, H, q_len, D = query.shape
    kv_heads = key.shape[1]
    plain_mask = attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[1] == 1)
    extras = any(kwargs.get(k) is not None for k in ("softcap", "s_aux", "sinks", "position_bias"))
    if q_len != 1 or query.device.type != "cpu" or module.training or extras or not plain_mask or H % kv_heads:
        return _sdpa_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                             is_causal=is_causal, **kwargs)
    q = query.reshape(B, kv_heads, H // kv_heads, D)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (scaling if scaling is not None else D ** -0.5)
    if attention_mask is not None:  # [B, 1, 1, L]: bool (True = attend) or additive
        mask = attention_mask[:, :, 0, -scores.shape[-1]:].unsqueeze(2)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    out = torch.matmul(torch.softmax(scores, dim=-1).to(value.dtype), value)  # [B, kv_heads, groups, D]
    return out.reshape(B, H, 1, D).transpose(1, 2).contiguous(), None


def _register_decode_attention() -> bool:
    """Make DECODE_ATTENTION a name transformers accepts: SDPA's mask, `_decode_attention` for
    compute. Registering again is harmless (it sets one mapping entry), so it is not cached."""
    global _sdpa_forward
    try:
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    except ImportError as e:
        _fallback(f"cannot import transformers' attention registries ({e})", _SLOW_ATTENTION)
        return False
    if (_params(sdpa_attention_forward) or [])[:len(_ATTENTION_PARAMS)] != _ATTENTION_PARAMS:
        _fallback("the signature of transformers.integrations.sdpa_attention.sdpa_attention_forward changed",
                  _SLOW_ATTENTION)
        return False
    _sdpa_forward = sdpa_attention_forward  # bound first: `_decode_attention` may run once registered
    try:
        AttentionInterface.register(DECODE_ATTENTION, _decode_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(DECODE_ATTENTION, sdpa_mask)
    except Exception as e:  # noqa: BLE001 - any failure means the fast path is off, and says so
        _fallback(f"registering the '{DECODE_ATTENTION}' attention with transformers failed ({e!r})", _SLOW_ATTENTION)
        return False
    return True


def use_decode_attention(model) -> bool:
    """Switch an SDPA model to `_decode_attention` (the same SDPA for everything but one-token CPU
    decode steps). Models on another attention (eager, flash) are left as they are. True if the
    model now uses it."""
    check_versions()
    impl = getattr(model.config, "_attn_implementation", None)
    if impl == DECODE_ATTENTION:
        return True
    if impl != "sdpa":
        if impl is None:
            _fallback("the model config has no _attn_implementation", "the model's own attention")
        return False
    if not _register_decode_attention():
        return False
    try:
        model.set_attn_implementation(DECODE_ATTENTION)
    except Exception as e:  # noqa: BLE001
        _fallback(f"model.set_attn_implementation('{DECODE_ATTENTION}') failed ({e!r})", _SLOW_ATTENTION)
        return False
    if getattr(model.config, "_attn_implementation", None) != DECODE_ATTENTION:
        _fallback(f"{type(model).__name__} did not take the '{DECODE_ATTENTION}' attention", _SLOW_ATTENTION)
        return False
    return True
