"""DPO with a per-pair confidence c_i in [0, 1] (soft preference labels), for the DPO stage.

    L_i = c_i * -log sigmoid(beta * D_i) + (1 - c_i) * -log sigmoid(-beta * D_i)
    D_i = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))

c_i = 1 is the DPO loss of the Self-Rewarding paper (section 3.2; Rafailov et al. 2023, eq. 7);
a constant c_i = 1 - eps is conservative DPO (Mitchell 2023); a per-pair c_i is the soft-label /
consistency-weighted loss of CREAM-, SCIR- and DNO-style variants. Equivalently
L_i = -log sigmoid(beta D_i) + (1 - c_i) beta D_i, and dL_i/d(beta D_i) = sigmoid(beta D_i) - c_i:
at D_i = 0 a pair with c_i = 0.5 pulls nowhere and c_i = 0 pushes opposite to c_i = 1.

`WeightedDPOTrainer` is TRL's DPOTrainer with its loss replaced by `weighted_dpo_loss`, reading the
dataset's optional `confidence` column (absent = 1.0 everywhere). TRL 1.16 has no per-example
weights, so the subclass reuses TRL's tokenisation, collator, fused log-prob head, reference
log-probs (`compute_ref_log_probs`: separate reference model, precomputed columns, or the PEFT
adapter disabled) and only overrides the public `compute_loss`. Logged metrics: TRL's
rewards/{chosen,rejected,accuracies,margins} and logps/{chosen,rejected}, plus confidence/mean;
they land in the trainer's log history (dpo_log.json for the DPO stage). No output file of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOTrainer

# check_trl_version is re-exported: srlm relies on DPOTrainer's collator output keys, its fused-LM-head
# forward and `compute_ref_log_probs`, which TRL changes between minor releases, so outside the tested
# range (_compat.TESTED) WeightedDPOTrainer refuses to run rather than drift silently.
from srlm.engines._compat import check_trl_version, keep_dataset_column

CONFIDENCE = "confidence"


def weighted_dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
                      ref_rejected_logps: torch.Tensor, confidence: torch.Tensor | None, beta: float) -> torch.Tensor:
    """Per-pair losses L_i (shape [B]) from sequence log-probs under the policy and the reference.
    confidence None means c_i = 1 (plain DPO). At c_i = 1 the result equals TRL's `sigmoid` loss bit
    for bit: the log-ratios are formed in the same order and the (1 - c) term is an exact zero."""
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    z = beta * (chosen_logratios - rejected_logratios)
    if confidence is None:
        return -F.logsigmoid(z)
    c = confidence.to(device=z.device, dtype=z.dtype)
    # Two logsigmoids rather than the shorter -logsigmoid(z) + (1 - c) z: each term is bounded
    # below by 0 and stays finite for large |z|.
    return -c * F.logsigmoid(z) - (1 - c) * F.logsigmoid(-z)


def _confidence_list(confidences: Sequence[float | None], n: int) -> list[float]:
    if len(confidences) != n:
        raise ValueError(f"{len(confidences)} confidences for {n} pairs")
    out = [1.0 if c is None else float(c) for c in confidences]
    bad = [c for c in out if not 0.0 <= c <= 1.0]  # NaN fails both comparisons
    if bad:
        raise ValueError(f"confidence must lie in [0, 1]; got {bad[:5]}")
    return out


def with_confidence(dataset, confidences: Sequence[float | None]):
    """`dataset` (a datasets.Dataset of prompt/chosen/rejected rows) with a float `confidence`
    column; None entries mean 1.0 (plain DPO for that pair)."""
    values = _confidence_list(list(confidences), len(dataset))
    if CONFIDENCE in dataset.column_names:
        dataset = dataset.remove_columns(CONFIDENCE)
    return dataset.add_column(CONFIDENCE, values)


@dataclass
class ConfidenceCollator:
    """TRL's preference collator plus a float32 `confidence` tensor [B] when the rows carry one."""

    inner: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        if examples and CONFIDENCE in examples[0]:
            values = _confidence_list([e[CONFIDENCE] for e in examples], len(examples))
            batch[CONFIDENCE] = torch.tensor(values, dtype=torch.float32)
        return batch


def _without_confidence(inputs: dict[str, Any]) -> dict[str, Any]:
    # TRL passes every batch key it does not know to the model's forward (Llama ignores extras; other
    # architectures may not).
    return {k: v for k, v in inputs.items() if k != CONFIDENCE}


# remove_unused_columns=True keeps only TRL's columns; the confidence column must survive it.
@keep_dataset_column(CONFIDENCE)
class WeightedDPOTrainer(DPOTrainer):
    """trl.DPOTrainer whose loss is `weighted_dpo_loss` with the batch's `confidence` (1.0 if the
    dataset has no such column). Only DPOConfig's default loss is supported: loss_type ["sigmoid"],
    f_divergence_type "reverse_kl", no ld_alpha, no WPO weighting, no MoE router loss."""

    def __init__(self, model, ref_model=None, args=None, **kwargs):
        check_trl_version()
        if args is not None:
            found = {"loss_type": list(args.loss_type), "loss_weights": args.loss_weights,
                     "f_divergence_type": str(args.f_divergence_type), "ld_alpha": args.ld_alpha,
                     "use_weighting": args.use_weighting}
            allowed = {"loss_type": [["sigmoid"]], "loss_weights": [None, [1.0]],
                       "f_divergence_type": ["reverse_kl"], "ld_alpha": [None], "use_weighting": [False]}
            wrong = {k: v for k, v in found.items() if v not in allowed[k]}
            if wrong:
                raise ValueError(f"WeightedDPOTrainer implements only the plain sigmoid DPO loss; unsupported: {wrong}")
        super().__init__(model, ref_model=ref_model, args=args, **kwargs)
        if self.aux_loss_enabled:
            raise ValueError("WeightedDPOTrainer does not add the MoE router auxiliary loss; "
                             "set router_aux_loss_coef=0 or use trl.DPOTrainer.")
        # Wrapped after TRL's __init__, so its reference precompute (which runs there) never sees
        # the column; `compute_ref_log_probs` below strips it for later precomputes (evaluate()).
        self.data_collator = ConfidenceCollator(self.data_collator)
        self._confidence_metrics = {"train": defaultdict(list), "eval": defaultdict(list)}

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, _without_confidence(inputs))

    def _sequence_logps(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Summed completion log-probs of the [chosen; rejected] batch under the policy, the way TRL
        1.16 computes them (its fused LM head scores only positions whose label is not -100)."""
        model_kwargs = {k: v for k, v in inputs.items()
                        if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
        model_kwargs["use_cache"] = False
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens; keep the positions of the real ones.
        per_token = outputs.log_probs[:, -(completion_mask.size(1) - 1):]
        chosen, rejected = per_token.sum(dim=1).chunk(2, dim=0)
        return chosen, rejected, model_kwargs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        confidence = inputs.get(CONFIDENCE)
        inputs = _without_confidence(inputs)
        chosen_logps, rejected_logps, model_kwargs = self._sequence_logps(model, inputs)
        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref = self.ref_model if self.ref_model is not None else self.model
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(ref, inputs)
        losses = weighted_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
                                   confidence, self.beta)
        loss = losses.mean()

        gather = self.accelerator.gather
        chosen_rewards = self.beta * (chosen_logps - ref_chosen_logps).detach()
        rejected_rewards = self.beta * (rejected_logps - ref_rejected_logps).detach()
        if confidence is None:
            confidence = torch.ones_like(chosen_rewards)
        m = self._confidence_metrics[mode]
        m["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        m["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        m["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        m["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        m["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        m["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        m["confidence/mean"].append(gather(confidence.to(chosen_rewards)).mean().item())

        if return_outputs:
            # As TRL: prediction_step wants logits, which the fused head never built.
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        logs.update({prefix + k: sum(v) / len(v) for k, v in self._confidence_metrics[mode].items() if v})
        self._confidence_metrics[mode].clear()
        super().log(logs, start_time)
