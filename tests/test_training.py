"""training.cpu_log_probs: the CPU log-prob path must give TRL's numbers, only faster."""

import pytest
import torch

from srlm.engines._compat import _PlainLogProbs
from srlm.engines.training import cpu_log_probs

chunked = pytest.importorskip("trl.kernels.chunked_logprob")


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_plain_log_probs_match_trl_kernel(softcap):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64).float().requires_grad_()
    weight = (torch.randn(500, 16) * 0.3).requires_grad_()
    targets = torch.randint(0, 500, (37,))
    outputs = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    args = (targets, 0.7, 128, softcap, 1.3, outputs)
    ours = _PlainLogProbs.apply(hidden, weight, None, *args)
    theirs = chunked.ChunkedLogProbFunction.apply(hidden, weight, None, *args)
    for a, b in zip(ours, theirs, strict=True):
        if a.dtype == torch.bool:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    g = torch.randn(37)
    grads = []
    for fn in (_PlainLogProbs, chunked.ChunkedLogProbFunction):
        hidden.grad = weight.grad = None
        (fn.apply(hidden, weight, None, *args)[0] * g).sum().backward()
        grads.append((hidden.grad.clone(), weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-5)


def test_fused_head_under_cpu_log_probs_scores_only_completion(tiny_model):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    add_fused_lm_head(model, outputs=("entropy",))
    ids = torch.randint(0, 1000, (2, 12))
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[1, 10:] = -100  # padding
    ref = model(input_ids=ids, labels=labels, fused_lm_head=True)
    with cpu_log_probs():
        got = model(input_ids=ids, labels=labels, fused_lm_head=True)
    torch.testing.assert_close(got.log_probs, ref.log_probs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.entropy, ref.entropy, rtol=1e-4, atol=1e-4)
    # Outside the context the original TRL path is back.
    import trl.trainer.utils as tu

    assert tu._ChunkedLogProbFunction is chunked.ChunkedLogProbFunction
