"""Multiple choice: the model's answer is the choice whose continuation has the lowest mean loss.

A question is a prompt (token ids, the chat template's generation prompt included) and two or more
continuations (the token ids of each choice as the assistant's turn). The loss of a choice is the mean
cross-entropy of its tokens given the prompt, i.e. the response loss of ``prompt + choice``. The
per-question score is 1.0 when the lowest-loss choice (the first one on a tie) is the right one, 0.0
when it is not, and ``nan`` when the question cannot be scored (malformed, out-of-vocabulary ids, or
every choice failed): ``nan`` never wins a comparison.

Batched with the shared prompt: the prompt runs once with the key/value cache on, the cache is
repeated once per choice, and all continuations run together in one right-padded batch on top of it.
The first token of every choice is predicted by the prompt's last position, the others by the
continuation batch. A model whose cache cannot be used so falls back to the response-loss engine
(prompt recomputed per choice, still batched), which gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from finetune.losses import compute_losses
from finetune.tasks.cache import cache_kwargs, cache_of

__all__ = [
    "ChoiceQuestion",
    "choice_losses",
    "choice_losses_reference",
    "multiple_choice_scores",
    "multiple_choice_scores_reference",
    "pick_scores",
]


@dataclass(frozen=True)
class ChoiceQuestion:
    """A tokenized question: prompt ids, each choice's continuation ids, the index of the right one."""

    prompt: tuple[int, ...]
    choices: tuple[tuple[int, ...], ...]
    answer: int

    @classmethod
    def of(cls, prompt: Sequence[int], choices: Sequence[Sequence[int]], answer: int) -> ChoiceQuestion:
        return cls(tuple(map(int, prompt)), tuple(tuple(map(int, c)) for c in choices), int(answer))

    def is_valid(self, vocab: int | None) -> bool:
        """At least one prompt token, two choices of at least one token, an answer among them, and
        (when ``vocab`` is known) only in-vocabulary ids (on CUDA a bad id is a device-side assert)."""
        if not self.prompt or len(self.choices) < 2 or not 0 <= self.answer < len(self.choices):
            return False
        if any(not choice for choice in self.choices):
            return False
        if vocab is None:
            return True
        ids = [*self.prompt, *(token for choice in self.choices for token in choice)]
        return min(ids) >= 0 and max(ids) < vocab


def _vocab(model: nn.Module) -> int | None:
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    rows = getattr(embeddings, "num_embeddings", None)
    return rows if isinstance(rows, int) else None


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _shared_prompt_losses(model: nn.Module, question: ChoiceQuestion, device: torch.device) -> list[float]:
    """Each choice's mean continuation loss, the prompt computed once (see the module docstring)."""
    count, prompt_len = len(question.choices), len(question.prompt)
    prompt = torch.tensor([question.prompt], dtype=torch.long, device=device)
    out = model(input_ids=prompt, use_cache=True)
    first = out.logits[0, -1].float()  # predicts the first token of every choice
    lengths = torch.tensor([len(c) for c in question.choices], device=device)
    firsts = torch.tensor([c[0] for c in question.choices], device=device)
    token_losses = [F.cross_entropy(first.expand(count, -1), firsts, reduction="none")]
    width = int(lengths.max())
    if width > 1:
        cache = cache_of(out)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            raise TypeError("the model returned no repeatable key/value cache")
        cache.batch_repeat_interleave(count)
        ids = torch.zeros(count, width, dtype=torch.long)
        for row, choice in enumerate(question.choices):
            ids[row, : len(choice)] = torch.tensor(choice)
        ids = ids.to(device)
        columns = torch.arange(width, device=device)
        mask = torch.cat(
            [
                torch.ones(count, prompt_len, dtype=torch.long, device=device),
                (columns < lengths[:, None]).long(),
            ],
            dim=1,
        )
        logits = model(
            input_ids=ids, attention_mask=mask, use_cache=True, **cache_kwargs(model, cache)
        ).logits
        scored = columns[: width - 1] < (lengths[:, None] - 1)  # position t predicts token t + 1
        rest = F.cross_entropy(logits[:, :-1][scored].float(), ids[:, 1:][scored], reduction="none")
        token_losses.append(rest)
        segments = torch.cat(
            [
                torch.arange(count, device=device),
                torch.repeat_interleave(torch.arange(count, device=device), lengths - 1),
            ]
        )
    else:
        segments = torch.arange(count, device=device)
    sums = torch.zeros(count, dtype=torch.float32, device=device)
    sums.index_add_(0, segments, torch.cat(token_losses))
    return [_finite(x) for x in (sums / lengths).tolist()]


def _engine_losses(model: nn.Module, question: ChoiceQuestion, device: torch.device) -> list[float]:
    """Each choice's loss through the response-loss engine (prompt recomputed for every choice)."""
    prompt = list(question.prompt)
    samples = [
        (torch.tensor([prompt + list(choice)], dtype=torch.long), len(prompt)) for choice in question.choices
    ]
    return compute_losses(model, samples, device)


def choice_losses(
    model: nn.Module,
    questions: Sequence[ChoiceQuestion],
    device: torch.device | str,
    *,
    shared_prompt: bool = True,
) -> list[list[float]]:
    """Mean continuation loss of every choice of every question (``inf`` where it cannot be scored;
    every choice ``inf`` for an invalid question). ``shared_prompt=False`` uses the response-loss
    engine instead (the prompt recomputed per choice), for comparison."""
    device = torch.device(device)
    vocab = _vocab(model)
    was_training = model.training
    model.eval()
    results: list[list[float]] = []
    try:
        with torch.inference_mode():
            for question in questions:
                if not question.is_valid(vocab):
                    results.append([math.inf] * len(question.choices))
                    continue
                if shared_prompt:
                    try:
                        results.append(_shared_prompt_losses(model, question, device))
                        continue
                    except Exception:  # noqa: BLE001 - a model without a usable cache: the engine path
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                results.append(_engine_losses(model, question, device))
    finally:
        model.train(was_training)
    return results


def pick_scores(losses: Sequence[Sequence[float]], questions: Sequence[ChoiceQuestion]) -> list[float]:
    """1.0 where the lowest-loss choice (first on a tie) is the answer, 0.0 where not, ``nan`` where
    no choice has a finite loss."""
    scores: list[float] = []
    for choice_losses_of_question, question in zip(losses, questions, strict=True):
        finite = [
            (loss, index) for index, loss in enumerate(choice_losses_of_question) if math.isfinite(loss)
        ]
        if not finite:
            scores.append(math.nan)
            continue
        best = min(finite)[1]
        scores.append(1.0 if best == question.answer else 0.0)
    return scores


def multiple_choice_scores(
    model: nn.Module, questions: Sequence[ChoiceQuestion], device: torch.device | str
) -> list[float]:
    """Per-question 1/0 (``nan`` unscorable), choices batched on the shared prompt."""
    return pick_scores(choice_losses(model, questions, device), questions)


def choice_losses_reference(
    model: nn.Module, questions: Sequence[ChoiceQuestion], device: torch.device | str
) -> list[list[float]]:
    """One choice at a time: ``model(prompt + choice, labels=...)`` with the prompt masked out."""
    vocab = _vocab(model)
    model.eval()
    results: list[list[float]] = []
    with torch.no_grad():
        for question in questions:
            if not question.is_valid(vocab):
                results.append([math.inf] * len(question.choices))
                continue
            row: list[float] = []
            for choice in question.choices:
                inputs = torch.tensor([[*question.prompt, *choice]], dtype=torch.long, device=device)
                labels = inputs.clone()
                labels[:, : len(question.prompt)] = -100
                try:
                    row.append(_finite(float(model(inputs, labels=labels).loss)))
                except Exception:  # noqa: BLE001 - as in the engine: a failing choice scores inf
                    row.append(math.inf)
            results.append(row)
    return results


def multiple_choice_scores_reference(
    model: nn.Module, questions: Sequence[ChoiceQuestion], device: torch.device | str
) -> list[float]:
    """Per-question 1/0 from :func:`choice_losses_reference`."""
    return pick_scores(choice_losses_reference(model, questions, device), questions)
