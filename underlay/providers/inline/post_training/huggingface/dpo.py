"""Direct preference optimisation: the loss, on log-probabilities of whole answers.

DPO trains on pairs (a prompt, a preferred and a non-preferred answer) with no reward model: the
policy's implicit reward for an answer is ``beta`` times how much more likely the policy makes it than
a frozen reference does, and the loss pushes the preferred answer's reward above the other's:

    loss = -log σ(β · ((log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻))))

Each ``log π(y)`` is the sum of the answer's token log-probabilities given the prompt (prompt tokens
and padding carry the label ``-100`` and count for nothing). The reference here is the base model
itself: the trainer computes it with the LoRA adapter switched off, so DPO costs no second copy of the
weights. This module is the arithmetic alone (tensors in, tensors out), so it is tested on tiny
tensors without a model; it imports torch and is only loaded by the training process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from underlay.providers.inline.post_training.huggingface.data import IGNORE


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row, the summed log-probability of the labelled tokens (``labels`` ≠ ``-100``).

    ``logits[:, t]`` predicts token ``t + 1``, so logits and labels are shifted by one against each other.
    Only the labelled positions go through the log-softmax: a row of prompt, a short answer and padding
    costs the answer's length in vocabulary-sized rows, not the whole sequence's.
    """
    predicted = logits[:, :-1, :]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    rows = keep.nonzero(as_tuple=True)[0]
    picked = predicted[keep].float()
    wanted = targets[keep]
    token_logps = picked.gather(-1, wanted.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    out = torch.zeros(logits.shape[0], dtype=token_logps.dtype, device=logits.device)
    return out.index_add(0, rows, token_logps)


@dataclass
class DpoTerms:
    """One batch's loss (a scalar to backpropagate) and each pair's implicit rewards (detached)."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def accuracy(self) -> float:
        """The share of pairs whose preferred answer has the higher reward (ties count as misses)."""
        return float((self.chosen_rewards > self.rejected_rewards).float().mean())

    @property
    def margin(self) -> float:
        return float((self.chosen_rewards - self.rejected_rewards).mean())


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> DpoTerms:
    """The mean DPO loss over a batch of pairs, from the four per-pair sequence log-probabilities."""
    chosen = policy_chosen - reference_chosen
    rejected = policy_rejected - reference_rejected
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return DpoTerms(loss, (beta * chosen).detach(), (beta * rejected).detach())
