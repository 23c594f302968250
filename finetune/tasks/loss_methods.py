"""The loss methods: response loss (today's engine, unchanged) and text loss over a whole passage.

Both return one float per sample, lower is better, ``inf`` where a sample cannot be scored.

Text loss is the mean cross-entropy of every token of a passage but the first, i.e. what
``model(ids, labels=ids).loss`` gives. That is the response loss of the same ids with a one-token
"prompt" (the first token is never predicted), so the batched engine of :mod:`finetune.losses` computes
it as is: sorted by length, packed under a token budget, head applied to scored positions only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from finetune.losses import Sample, compute_losses

__all__ = ["response_losses", "text_losses", "text_losses_reference"]


def response_losses(
    model: nn.Module,
    samples: Sequence[Sample],
    device: torch.device | str,
    *,
    token_budget: int | None = None,
) -> list[float]:
    """Mean response cross-entropy of each ``(ids [1, T], prompt_len)`` sample: ``compute_losses``."""
    return compute_losses(model, samples, device, token_budget=token_budget)


def _as_text_sample(ids: torch.Tensor) -> Sample:
    return ids.reshape(1, -1), 1


def text_losses(
    model: nn.Module,
    passages: Sequence[torch.Tensor],
    device: torch.device | str,
    *,
    token_budget: int | None = None,
) -> list[float]:
    """Mean cross-entropy over each passage (``ids`` of shape ``[1, T]`` or ``[T]``), in input order;
    ``inf`` for a passage of fewer than two tokens, with out-of-vocabulary ids, or that fails."""
    samples = [_as_text_sample(ids) if isinstance(ids, torch.Tensor) else (ids, 0) for ids in passages]
    return compute_losses(model, samples, device, token_budget=token_budget)


def text_losses_reference(
    model: nn.Module, passages: Sequence[torch.Tensor], device: torch.device | str
) -> list[float]:
    """One passage at a time, the plain Hugging Face way: ``model(ids, labels=ids).loss``."""
    losses: list[float] = []
    model.eval()
    with torch.no_grad():
        for ids in passages:
            inputs = ids.reshape(1, -1).to(device)
            if inputs.shape[1] < 2:
                losses.append(math.inf)
                continue
            try:
                loss = float(model(inputs, labels=inputs).loss)
            except Exception:  # noqa: BLE001 - the reference scores a failing passage inf, like the engine
                loss = math.inf
            losses.append(loss if math.isfinite(loss) else math.inf)
    return losses
