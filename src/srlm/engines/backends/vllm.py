"""vLLM in process (optional extra: pip install 'srlm[vllm]'), with prefix caching so the
shared judge rubric is prefilled once.

Untested: vLLM needs a GPU and cannot be installed on the CPU machines this project is
developed on; tests cover the OpenAI-server path (backends/openai.py), which `vllm serve`
also speaks. Chat i is sampled with seed + i*n (vLLM gives sample k of a request seed + k).
"""

from __future__ import annotations

import gc

from srlm.data import rubric
from srlm.engines.backends.base import Chat, Completion, SamplingParams
from srlm.engines.modeling import ModelRef


class VLLMBackend:
    def __init__(self, llm, sampling_params_cls):
        self.llm = llm
        self._sp = sampling_params_cls
        self.tok = llm.get_tokenizer()

    @classmethod
    def from_config(cls, cfg, ref: ModelRef | str) -> "VLLMBackend":
        try:
            import vllm
        except ImportError:
            raise ImportError("backend.name=vllm needs vLLM: pip install 'srlm[vllm]' "
                              "(or serve the model with `vllm serve` and use backend.name=openai)") from None
        if isinstance(ref, str):
            ref = ModelRef(ref)
        kwargs = {"tokenizer": ref.path} if ref.gguf_file else {}  # GGUF: file as model, tokenizer from its folder
        llm = vllm.LLM(model=str(ref), enable_prefix_caching=True, seed=cfg.seed, dtype=cfg.model.dtype, **kwargs)
        return cls(llm, vllm.SamplingParams)

    def generate(self, chats: list[Chat], params: SamplingParams, seed: int) -> list[list[Completion]]:
        if not chats:
            return []
        sps = [self._sp(n=params.n, temperature=params.temperature, top_p=params.top_p,
                        max_tokens=params.max_new_tokens, seed=seed + i * params.n) for i in range(len(chats))]
        outs = self.llm.chat(chats, sps, use_tqdm=False)
        results = []
        for req in outs:
            comps = []
            for o in sorted(req.outputs, key=lambda o: o.index):
                text, reason = o.text, "length" if o.finish_reason == "length" else "stop"
                if params.stop_at_score and rubric.score_line_complete(text):
                    text, reason = rubric.truncate_after_score(text), "stop"
                comps.append(Completion(text=text, num_tokens=len(o.token_ids), finish_reason=reason))
            results.append(comps)
        return results

    def choice_probs(self, chats: list[Chat], prefixes: list[str], choices: list[str]) -> list[list[float] | None]:
        raise NotImplementedError(
            "meta.scoring=expected needs next-token probabilities, which the in-process vllm backend does not "
            "read yet: use backend.name=transformers, or `vllm serve` with backend.name=openai")

    def count_prompt_tokens(self, chats: list[Chat]) -> list[int]:
        texts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        return [len(self.tok(t, add_special_tokens=False)["input_ids"]) for t in texts]

    @property
    def context_window(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def close(self) -> None:
        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
