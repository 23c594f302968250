"""Running any method on plain data: what an evaluation worker does with a task's samples.

Samples cross the pipe to the worker as plain data the validator made (lists of ints), one shape per
method:

- ``response_loss``: ``(ids, prompt_len)`` pairs;
- ``text_loss``: ids lists;
- ``multiple_choice``: ``(prompt ids, [choice ids, ...], answer index)``;
- ``generation_rules``: prompt ids (the rules stay with the validator, which scores the text).

:func:`prepare` turns them into what the method takes, once per step; :func:`run` scores one model and
returns ``(values, outputs)``: per-sample losses or scores, and for generation the generated ids
(``values`` are then ``nan`` until the validator checks the outputs against the rules).
:func:`failed_values` is what a model that could not be scored gets: ``inf`` for a loss, ``nan`` for a
score, so it wins nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from constants.tasks import Method
from finetune.losses import compute_losses
from finetune.tasks.choice import ChoiceQuestion, choice_losses, pick_scores
from finetune.tasks.generation import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, greedy_generate
from finetune.tasks.loss_methods import text_losses

__all__ = ["GENERATION_OPTIONS", "failed_values", "prepare", "run"]

GENERATION_OPTIONS = frozenset({"eos_ids", "pad_id", "max_new_tokens", "batch_size", "time_limit_s"})
"""The options the generation method reads (the validator fills ``eos_ids``/``pad_id`` from the tokenizer)."""

Outputs = list[list[int] | None]


def failed_values(method: Method | str, count: int) -> list[float]:
    """The values of a model that could not be scored: ``inf`` losses or ``nan`` scores."""
    return [math.nan if Method(method).higher_is_better else math.inf] * count


def prepare(method: Method | str, samples: Sequence[Any]) -> list[Any]:
    """The method's inputs from plain data (see the module docstring); ``ValueError`` if malformed."""
    method = Method(method)
    try:
        if method is Method.RESPONSE_LOSS:
            return [(torch.tensor([list(map(int, ids))], dtype=torch.long), int(p)) for ids, p in samples]
        if method is Method.TEXT_LOSS:
            return [torch.tensor([list(map(int, ids))], dtype=torch.long) for ids in samples]
        if method is Method.MULTIPLE_CHOICE:
            return [ChoiceQuestion.of(prompt, choices, answer) for prompt, choices, answer in samples]
        return [tuple(map(int, ids)) for ids in samples]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed {method} samples: {exc}") from exc


def run(
    method: Method | str,
    model: nn.Module,
    prepared: Sequence[Any],
    device: torch.device | str,
    *,
    token_budget: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[list[float], Outputs | None]:
    """Score ``model`` on ``prepared`` samples with ``method``: ``(values, generated ids or None)``."""
    method = Method(method)
    options = dict(options or {})
    if method is Method.RESPONSE_LOSS:
        return compute_losses(model, prepared, device, token_budget=token_budget), None
    if method is Method.TEXT_LOSS:
        return text_losses(model, prepared, device, token_budget=token_budget), None
    if method is Method.MULTIPLE_CHOICE:
        losses = choice_losses(model, prepared, device, token_budget=token_budget)
        return pick_scores(losses, prepared), None
    unknown = set(options) - GENERATION_OPTIONS
    if unknown:
        raise ValueError(f"unknown generation options {sorted(unknown)}")
    outputs = greedy_generate(
        model,
        prepared,
        device,
        eos_ids=options.get("eos_ids", ()),
        pad_id=int(options.get("pad_id", 0)),
        max_new_tokens=int(options.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
        batch_size=int(options.get("batch_size", DEFAULT_BATCH_SIZE)),
        time_limit_s=options.get("time_limit_s"),
    )
    return [math.nan] * len(prepared), outputs
