"""weighted_dpo: the confidence-weighted DPO loss by hand, equality with TRL's sigmoid loss at c = 1,
the confidence column reaching the gradient (precomputed reference, LoRA), and the TRL version guard."""

import math

import pytest
import torch

from srlm.engines.weighted_dpo import (ConfidenceCollator, WeightedDPOTrainer, check_trl_version, weighted_dpo_loss,
                                       with_confidence)

TOPICS = ["the sea", "a cat", "rain", "coffee"]


def _pairs(n=4):
    from datasets import Dataset

    return Dataset.from_list([{
        "prompt": [{"role": "user", "content": f"Write one sentence about {t}."}],
        "chosen": [{"role": "assistant", "content": f"Here is a sentence about {t}: it is lovely."}],
        "rejected": [{"role": "assistant", "content": f"{t} no."}],
    } for t in TOPICS[:n]])


def _args(out, **kw):
    from trl import DPOConfig

    base = dict(output_dir=str(out), per_device_train_batch_size=2, max_length=64, beta=0.1, learning_rate=1e-3,
                max_steps=1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                dataloader_num_workers=0, remove_unused_columns=True, disable_tqdm=True)
    return DPOConfig(**(base | kw))


def _model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


# --- the formula ---------------------------------------------------------------------------------

def test_loss_and_gradient_by_hand():
    # beta = 0.1; log-ratios +1 (chosen: -1 vs ref -2) and -1 (rejected: -3 vs ref -2), so D = 2 and
    # beta*D = 0.2; sigmoid(0.2) = 0.549833997; -log sigmoid(0.2) = log(1 + e^-0.2) = 0.598138869,
    # -log sigmoid(-0.2) = log(1 + e^0.2) = 0.798138869.
    # c = 0.75: L = 0.75 * 0.598138869 + 0.25 * 0.798138869 = 0.648138869;
    # dL/dD = beta * (sigmoid(beta D) - c) = 0.1 * (0.549833997 - 0.75) = -0.020016600.
    # c = 1: L = 0.598138869, dL/dD = 0.1 * (0.549833997 - 1) = -0.045016600.
    # c = 0: L = 0.798138869, dL/dD = 0.1 * 0.549833997 = +0.054983400 (opposite sign).
    chosen = torch.tensor([-1.0, -1.0, -1.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([-3.0, -3.0, -3.0], dtype=torch.float64, requires_grad=True)
    ref = torch.full((3,), -2.0, dtype=torch.float64)
    c = torch.tensor([0.75, 1.0, 0.0], dtype=torch.float64)
    losses = weighted_dpo_loss(chosen, rejected, ref, ref, c, beta=0.1)
    torch.testing.assert_close(losses, torch.tensor([0.648138869381592, 0.598138869381592, 0.798138869381592],
                                                    dtype=torch.float64))
    losses.sum().backward()
    expected = torch.tensor([-0.020016600268752, -0.045016600268752, 0.054983399731248], dtype=torch.float64)
    torch.testing.assert_close(chosen.grad, expected)  # dD/d(chosen logp) = +1
    torch.testing.assert_close(rejected.grad, -expected)  # dD/d(rejected logp) = -1


def test_no_confidence_is_plain_dpo_and_d_zero_is_log2():
    chosen, rejected = torch.tensor([-1.0, -5.0]), torch.tensor([-3.0, -4.0])
    ref_c, ref_r = torch.tensor([-2.0, -4.5]), torch.tensor([-2.0, -3.0])
    plain = -torch.nn.functional.logsigmoid(0.1 * ((chosen - ref_c) - (rejected - ref_r)))
    assert torch.equal(weighted_dpo_loss(chosen, rejected, ref_c, ref_r, None, 0.1), plain)
    assert torch.equal(weighted_dpo_loss(chosen, rejected, ref_c, ref_r, torch.ones(2), 0.1), plain)
    # Policy == reference: D = 0 and every confidence gives log 2.
    at_ref = weighted_dpo_loss(chosen, rejected, chosen, rejected, torch.tensor([0.0, 0.3]), 0.1)
    torch.testing.assert_close(at_ref, torch.full((2,), math.log(2)))


def test_with_confidence_and_collator():
    ds = with_confidence(_pairs(3), [0.25, None, 1])
    assert ds["confidence"] == [0.25, 1.0, 1.0]
    assert with_confidence(ds, [0.0, 0.0, 0.0])["confidence"] == [0.0, 0.0, 0.0]  # replaces the column
    with pytest.raises(ValueError, match="3 pairs"):
        with_confidence(_pairs(3), [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        with_confidence(_pairs(2), [1.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        with_confidence(_pairs(2), [float("nan"), 0.5])
    collate = ConfidenceCollator(lambda rows: {"n": len(rows)})
    assert collate([{"confidence": 0.5}, {"confidence": 1.0}])["confidence"].tolist() == [0.5, 1.0]
    assert "confidence" not in collate([{"x": 1}])


# --- guards --------------------------------------------------------------------------------------

def test_version_guard(monkeypatch, tiny_model, tmp_path):
    assert check_trl_version("1.16.0") == "1.16.0"
    assert check_trl_version("1.16.3")
    for bad in ("1.15.2", "1.17.0", "1.17.0.dev0", "2.0.0", "not-a-version"):
        with pytest.raises(RuntimeError, match=r">=1.16,<1.17"):
            check_trl_version(bad)
    import trl

    monkeypatch.setattr(trl, "__version__", "1.17.1")
    with pytest.raises(RuntimeError, match=r"TRL 1\.17\.1"):
        WeightedDPOTrainer(model=tiny_model, args=_args(tmp_path), train_dataset=_pairs())


def test_other_loss_types_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="hinge"):
        WeightedDPOTrainer(model=tiny_model, args=_args(tmp_path, loss_type=["hinge"]), train_dataset=_pairs())


# --- against TRL ---------------------------------------------------------------------------------

def _loss_and_grad(trainer, rows):
    trainer.model.train()
    trainer.model.zero_grad()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grad = trainer.model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    return loss.detach(), grad


def test_confidence_one_reproduces_trl_sigmoid(tiny_model, tiny_tokenizer, tmp_path):
    """Full fine-tuning with a separate (plain) reference model, no precompute: same loss, same
    gradient, same reward metrics as trl.DPOTrainer."""
    from trl import DPOTrainer

    data = with_confidence(_pairs(4), [1.0] * 4)
    theirs = DPOTrainer(model=_model(tiny_model), args=_args(tmp_path / "trl"), train_dataset=data,
                        processing_class=tiny_tokenizer)
    ours = WeightedDPOTrainer(model=_model(tiny_model), args=_args(tmp_path / "ours"), train_dataset=data,
                              processing_class=tiny_tokenizer)
    assert ours.ref_model is not None
    # A random policy is not at its reference unless we move it: perturb both identically so D != 0.
    torch.manual_seed(1)
    for a, b in zip(theirs.model.parameters(), ours.model.parameters(), strict=True):
        noise = torch.randn_like(a) * 0.02
        with torch.no_grad():
            a.add_(noise)
            b.add_(noise)
    loss_t, grad_t = _loss_and_grad(theirs, [0, 1, 2, 3])
    loss_o, grad_o = _loss_and_grad(ours, [0, 1, 2, 3])
    assert abs(loss_o.item() - math.log(2)) > 1e-3  # D != 0, so the comparison means something
    torch.testing.assert_close(loss_o, loss_t)
    torch.testing.assert_close(grad_o, grad_t)
    assert grad_o.abs().max() > 0
    for key in ("rewards/margins", "rewards/chosen", "logps/rejected", "rewards/accuracies"):
        assert ours._confidence_metrics["train"][key] == pytest.approx(theirs._metrics["train"][key])
    assert ours._confidence_metrics["train"]["confidence/mean"] == [1.0]


# --- LoRA, precomputed reference, the column reaching the gradient --------------------------------

@pytest.mark.parametrize("precompute", [True, False])
def test_confidence_reaches_gradient_with_lora(tiny_model, tiny_tokenizer, tmp_path, precompute):
    """At step 0 the LoRA policy equals its reference (B = 0), so dL/dtheta = beta (1/2 - c) dD/dtheta:
    the same pair gives opposite gradients at c = 0 and c = 1, and none at c = 0.5."""
    one = _pairs(1)
    from datasets import concatenate_datasets

    data = with_confidence(concatenate_datasets([one, one, one]), [1.0, 0.0, 0.5])
    trainer = WeightedDPOTrainer(model=_model(tiny_model), args=_args(tmp_path, per_device_train_batch_size=1,
                                                                      precompute_ref_log_probs=precompute),
                                 train_dataset=data, processing_class=tiny_tokenizer, peft_config=_lora())
    assert trainer.ref_model is None  # the reference is the adapter disabled
    assert ("ref_chosen_logps" in trainer.train_dataset.column_names) == precompute
    trainer.model.train()
    grads = {}
    # The training dataloader: remove_unused_columns and the collator must keep the column.
    for batch in trainer.get_train_dataloader():
        c = batch["confidence"].item()
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
        lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n and "q_proj" in n][0]
        grads[c] = lora_b.grad.clone()
    assert sorted(grads) == [0.0, 0.5, 1.0]
    assert grads[1.0].abs().max() > 0
    torch.testing.assert_close(grads[0.0], -grads[1.0])
    assert grads[0.5].abs().max() < 1e-4 * grads[1.0].abs().max()
    assert sorted(trainer._confidence_metrics["train"]["confidence/mean"]) == [0.0, 0.5, 1.0]
    # evaluate() on a new dataset precomputes its reference through the wrapped collator (the
    # column must not reach the model) and logs eval_ metrics; policy == reference, so log 2.
    metrics = trainer.evaluate(with_confidence(_pairs(2), [0.2, 0.6]))
    assert metrics["eval_confidence/mean"] == pytest.approx(0.4)
    assert metrics["eval_loss"] == pytest.approx(math.log(2), abs=1e-4)


@pytest.mark.parametrize("c", [1.0, 0.0])
def test_train_precomputed_lora_moves_margin_by_confidence(tiny_model, tiny_tokenizer, tmp_path, c):
    """loop/dpo.py's setting (LoRA, precomputed reference, cpu_log_probs): a short train() run completes;
    trained on the same two pairs, c = 1 raises the reward margin and c = 0 lowers it."""
    from srlm.engines.training import cpu_log_probs

    data = with_confidence(_pairs(2), [c, c])
    args = _args(tmp_path, max_steps=4, learning_rate=1e-2, precompute_ref_log_probs=True,
                 lr_scheduler_type="constant")
    with cpu_log_probs():
        trainer = WeightedDPOTrainer(model=_model(tiny_model), args=args, train_dataset=data,
                                     processing_class=tiny_tokenizer, peft_config=_lora())
        trainer.train()
    log = [r for r in trainer.state.log_history if "loss" in r]
    assert len(log) == 4
    assert all(r["confidence/mean"] == c for r in log)
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 0
    assert log[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    margin = log[-1]["rewards/margins"]
    assert (margin > 1e-3) if c == 1.0 else (margin < -1e-3)
