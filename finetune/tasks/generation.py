"""Greedy generation, batched with left padding, bounded in new tokens and in time.

:func:`greedy_generate` returns, for each prompt (token ids, the chat template's generation prompt
included), the ids the model generates after it, up to (not including) the first end-of-sequence id
or ``max_new_tokens`` ids, whichever comes first; ``None`` where the prompt cannot be generated from
(empty, out-of-vocabulary ids, a failure of the model on it alone) or where the time limit passed
before its batch began. The argmax is taken every step (greedy, no sampling): deterministic, so every
validator gets the same text from the same model.

Prompts are sorted by length and run in batches, left-padded (so every row's next token is the last
column), with an attention mask and the positions of the unpadded sequence; the key/value cache makes
each new token cost one position. A batch that raises is retried prompt by prompt. The model's own
``generation_config`` is never read: a miner's file cannot turn sampling or beams on.

:func:`generation_scores` decodes each output and checks it against its prompt's rules
(:mod:`finetune.tasks.rules`): the score is the fraction of rules met, ``nan`` where nothing was
generated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from finetune.tasks.cache import cache_kwargs, cache_of, keep_logits
from finetune.tasks.rules import Rule, rule_score

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_NEW_TOKENS",
    "RulePrompt",
    "generation_scores",
    "greedy_generate",
    "greedy_generate_reference",
    "score_outputs",
]

DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class RulePrompt:
    """A tokenized generation prompt and the rules its answer must meet."""

    prompt: tuple[int, ...]
    rules: tuple[Rule, ...]


def _vocab(model: nn.Module) -> int | None:
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    rows = getattr(embeddings, "num_embeddings", None)
    return rows if isinstance(rows, int) else None


def _valid(prompt: Sequence[int], vocab: int | None) -> bool:
    return bool(prompt) and (vocab is None or (min(prompt) >= 0 and max(prompt) < vocab))


def _cut(ids: Sequence[int], eos: frozenset[int]) -> list[int]:
    """``ids`` up to the first end-of-sequence id."""
    out: list[int] = []
    for token in ids:
        if token in eos:
            break
        out.append(int(token))
    return out


def _generate_batch(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    device: torch.device,
    *,
    eos: frozenset[int],
    pad_id: int,
    max_new_tokens: int,
    deadline: float | None,
) -> list[list[int]]:
    """Greedy continuations of one left-padded batch (see the module docstring)."""
    count, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((count, width), pad_id, dtype=torch.long)
    mask = torch.zeros((count, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    last_only = keep_logits(model, 1)  # left padding: every row's next token is the last column
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_only)
    eos_ids = torch.tensor(sorted(eos), dtype=torch.long, device=device)
    finished = torch.zeros(count, dtype=torch.bool, device=device)
    generated: list[torch.Tensor] = []
    last = positions[:, -1]
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        generated.append(token)
        finished |= torch.isin(token, eos_ids)
        if step + 1 == max_new_tokens or bool(finished.all()):
            break
        if deadline is not None and time.monotonic() > deadline:
            break
        mask = torch.cat([mask, torch.ones((count, 1), dtype=torch.long, device=device)], dim=1)
        last = last + 1
        cache = cache_of(out)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=last[:, None],
            use_cache=True,
            **cache_kwargs(model, cache),
        )
    rows = torch.stack(generated, dim=1).tolist()
    return [_cut(row, eos) for row in rows]


def greedy_generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    device: torch.device | str,
    *,
    eos_ids: Sequence[int],
    pad_id: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    time_limit_s: float | None = None,
) -> list[list[int] | None]:
    """The greedy continuation of each prompt, in input order (see the module docstring)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not eos_ids:
        raise ValueError("greedy generation needs at least one end-of-sequence id")
    device = torch.device(device)
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    eos = frozenset(int(i) for i in eos_ids)
    vocab = _vocab(model)
    results: list[list[int] | None] = [None] * len(prompts)
    order = sorted((i for i, p in enumerate(prompts) if _valid(p, vocab)), key=lambda i: -len(prompts[i]))
    batches = [
        order[start : start + max(1, batch_size)] for start in range(0, len(order), max(1, batch_size))
    ]
    run = partial(
        _generate_batch,
        model,
        device=device,
        eos=eos,
        pad_id=pad_id,
        max_new_tokens=max_new_tokens,
        deadline=deadline,
    )
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                if deadline is not None and time.monotonic() > deadline:
                    break
                try:
                    outputs: list[list[int] | None] = list(run([prompts[i] for i in batch]))
                except Exception:  # noqa: BLE001 - a miner's model may fail in any way: retry one by one
                    outputs = []
                    for index in batch:
                        try:
                            outputs.extend(run([prompts[index]]))
                        except Exception:  # noqa: BLE001 - costs this prompt only
                            outputs.append(None)
                for index, output in zip(batch, outputs, strict=True):
                    results[index] = output
    finally:
        model.train(was_training)
    return results


def greedy_generate_reference(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    device: torch.device | str,
    *,
    eos_ids: Sequence[int],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> list[list[int] | None]:
    """One prompt at a time, no padding, no cache: the whole sequence is run again for every token."""
    eos = frozenset(int(i) for i in eos_ids)
    vocab = _vocab(model)
    model.eval()
    results: list[list[int] | None] = []
    with torch.no_grad():
        for prompt in prompts:
            if not _valid(prompt, vocab):
                results.append(None)
                continue
            sequence = list(prompt)
            generated: list[int] = []
            for _ in range(max_new_tokens):
                logits = model(input_ids=torch.tensor([sequence], device=device), use_cache=False).logits
                token = int(logits[0, -1].argmax())
                if token in eos:
                    break
                generated.append(token)
                sequence.append(token)
            results.append(generated)
    return results


def generation_scores(
    model: nn.Module,
    prompts: Sequence[RulePrompt],
    device: torch.device | str,
    *,
    decode: Callable[[list[int]], str],
    eos_ids: Sequence[int],
    pad_id: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    time_limit_s: float | None = None,
) -> list[float]:
    """Fraction of its rules each prompt's greedy answer meets; ``nan`` where nothing was generated."""
    outputs = greedy_generate(
        model,
        [p.prompt for p in prompts],
        device,
        eos_ids=eos_ids,
        pad_id=pad_id,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        time_limit_s=time_limit_s,
    )
    return score_outputs(outputs, prompts, decode=decode)


def score_outputs(
    outputs: Sequence[Sequence[int] | None],
    prompts: Sequence[RulePrompt],
    *,
    decode: Callable[[list[int]], str],
) -> list[float]:
    """Decode each output and score it against its prompt's rules (``nan`` for ``None``)."""
    return [
        math.nan if output is None else rule_score(decode(list(output)), prompt.rules)
        for output, prompt in zip(outputs, prompts, strict=True)
    ]
