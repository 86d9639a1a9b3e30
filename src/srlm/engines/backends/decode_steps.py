"""One decode step of HFBackend's loop: feed each row one token, get the next-token logits.

Two ways, one interface (`step`, `hide`, `drop`):
- `EagerSteps` (CPUs, and GPUs with backend.cuda_graphs off): the model's forward with a 2D mask
  that grows by one column a step, on the roomy KV cache; finished rows can be dropped.
- `FixedSteps` (CUDA by default): the KV cache copied once into fixed-size buffers written at a
  device-held position (`_compat.fixed_cache`), a 4D mask buffer, and input buffers, so every step
  launches the same kernels on the same memory. On CUDA the second step is captured as a CUDA graph
  and every later step replays it: at 135M on an H200 an eager step is bound by the host launching
  ~1100 kernels, not by the GPU. Rows stay in the batch to the end (a finished row is fed and ignored).
Both give the same logits up to reduction order (tests/test_backend_hf.py runs FixedSteps on the
CPU, without capture, against `model.generate`).
"""

from __future__ import annotations

import warnings

import torch

from srlm.engines import _compat


def capture_step(step):
    """(graph, output, result): `step()` (a function of static input buffers returning a tensor)
    run once on a side stream (the warm-up CUDA graphs need; a real step, whose `result` is
    returned), then captured as a CUDA graph whose `output` each replay rewrites. (None, None,
    result) with a warning when capture fails: the caller goes on with eager calls."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        result = step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = step()
    except Exception as e:  # noqa: BLE001 - any failure means eager steps, and says so
        warnings.warn(f"srlm: capturing a decode step as a CUDA graph failed ({type(e).__name__}: {e}); this batch "
                      "goes on with eager steps (slower). backend.cuda_graphs=false skips the attempt.", RuntimeWarning,
                      stacklevel=2)
        return None, None, result
    return graph, out, result


class EagerSteps:
    can_drop = True

    def __init__(self, model, cache_kw: str, cache, mask: torch.Tensor):
        self.model, self.cache_kw, self.cache, self.mask = model, cache_kw, cache, mask

    def step(self, nxt: torch.Tensor, next_pos: torch.Tensor) -> torch.Tensor:
        """Feed `nxt` (host ids, one per row) at `next_pos`; the float logits of the next token."""
        dev = self.model.device
        self.mask = torch.cat([self.mask, torch.ones((len(nxt), 1), dtype=torch.long)], 1)
        out = self.model(input_ids=nxt[:, None].to(dev), attention_mask=self.mask.to(dev),
                         position_ids=next_pos[:, None].to(dev), use_cache=True, **{self.cache_kw: self.cache})
        return out.logits[:, -1].float()

    def hide(self, row: int, start: int, end: int) -> None:
        """Mask cache columns start..end-1 of one row from every later step."""
        self.mask[row, start:end] = 0

    def drop(self, keep: torch.Tensor) -> None:
        self.cache.batch_select_indices(keep.to(self.model.device))
        self.mask = self.mask[keep]


class FixedSteps:
    can_drop = False

    def __init__(self, model, cache_kw: str, cache, mask: torch.Tensor, steps: int, graphs: bool):
        """`cache` and `mask` (rows x columns so far) as the prefill left them; room for `steps` more
        tokens; `graphs`: capture a step as a CUDA graph (CUDA only). None from `make` when the
        cache cannot be fixed."""
        dev = model.device
        self.model, self.cache_kw, self.cache = model, cache_kw, cache
        rows, cols = mask.shape
        self.mask = torch.zeros((rows, 1, 1, cols + steps), dtype=torch.bool, device=dev)
        self.mask[:, 0, 0, :cols] = mask.to(dev).bool()
        self.col = cols  # the column the next fed token is written to
        self.ids = torch.zeros((rows, 1), dtype=torch.long, device=dev)
        self.pos = torch.zeros((rows, 1), dtype=torch.long, device=dev)
        self.capture = graphs and dev.type == "cuda"
        self.graph = self.out = None

    @classmethod
    def make(cls, model, cache_kw: str, cache, mask: torch.Tensor, steps: int, graphs: bool) -> "FixedSteps | None":
        fixed = _compat.fixed_cache(model.config, cache, mask.shape[1] + steps)
        return None if fixed is None else cls(model, cache_kw, fixed, mask, steps, graphs)

    def _forward(self) -> torch.Tensor:
        return self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=self.pos, use_cache=True,
                          **{self.cache_kw: self.cache}).logits

    def step(self, nxt: torch.Tensor, next_pos: torch.Tensor) -> torch.Tensor:
        if self.col >= self.mask.shape[-1]:
            raise RuntimeError(f"srlm: decode step {self.col} is past the fixed cache's {self.mask.shape[-1]} columns")
        self.mask[:, 0, 0, self.col] = True
        self.col += 1
        self.ids.copy_(nxt[:, None])
        self.pos.copy_(next_pos[:, None])
        if self.graph is not None:
            self.graph.replay()
            return self.out[:, -1].float()
        if self.capture:
            self.capture = False  # one try per batch; on failure the rest of the batch runs eager
            self.graph, self.out, logits = capture_step(self._forward)
        else:
            logits = self._forward()
        return logits[:, -1].float()

    def hide(self, row: int, start: int, end: int) -> None:
        self.mask[row, 0, 0, start:end] = False

    def drop(self, keep: torch.Tensor) -> None:
        raise NotImplementedError("FixedSteps keeps every row to the end of the batch")
