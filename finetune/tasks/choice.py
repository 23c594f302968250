"""Multiple choice: the model's answer is the choice whose continuation has the lowest mean loss.

A question is a prompt (token ids, the chat template's generation prompt included) and two or more
continuations (the token ids of each choice as the assistant's turn). The loss of a choice is the mean
cross-entropy of its tokens given the prompt, i.e. the response loss of ``prompt + choice``. The
per-question score is 1.0 when the lowest-loss choice (the first one on a tie) is the right one, 0.0
when it is not, and ``nan`` when the question cannot be scored (malformed, out-of-vocabulary ids, or
every choice failed): ``nan`` never wins a comparison.

Batched with the shared prompt: questions are grouped by prompt length under a token budget; the
group's prompts run once, right-padded, with the key/value cache on; the cache rows are selected once
per choice, and every choice of every question of the group runs in one right-padded batch on top of
it (positions of the unpadded sequence, the prompt's padding masked). The first token of a choice is
predicted by its prompt's last position, the others by the continuation batch. A group that raises is
retried question by question; a model whose cache cannot be used so falls back to the response-loss
engine (the prompt recomputed per choice, still batched), which gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from finetune.losses import ACCELERATOR_TOKEN_BUDGET, CPU_TOKEN_BUDGET, compute_losses
from finetune.tasks.cache import cache_kwargs, cache_of, keep_logits

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


def _groups(order: Sequence[int], widths: Sequence[int], budget: int, max_size: int) -> list[list[int]]:
    """Consecutive groups of ``order`` (sorted by decreasing prompt length) whose padded prompt batch,
    ``len(group) x widths[group[0]]`` tokens, stays within ``budget`` (a long prompt alone)."""
    groups: list[list[int]] = []
    for index in order:
        if groups and (len(groups[-1]) + 1) * widths[groups[-1][0]] <= budget and len(groups[-1]) < max_size:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def _shared_prompt_losses(
    model: nn.Module, questions: Sequence[ChoiceQuestion], device: torch.device
) -> list[list[float]]:
    """Each choice's mean continuation loss for a group of questions, each prompt computed once.

    Pass 1 runs the right-padded prompts (``[Q, Wp]``) with the cache on; the last real position of
    each prompt predicts the first token of each of its choices. The cache rows are then selected
    once per choice (``[R, Wp]``, R choices in all), and pass 2 runs every choice's tokens after it
    (``[R, L]``, right-padded) with the positions of the unpadded sequence and an attention mask that
    hides the prompt's padding slots; position ``t`` of a choice predicts its token ``t + 1``.
    """
    prompt_lengths = torch.tensor([len(q.prompt) for q in questions], device=device)
    counts = torch.tensor([len(q.choices) for q in questions], device=device)
    width = int(prompt_lengths.max())
    prompts = torch.zeros(len(questions), width, dtype=torch.long)
    for row, question in enumerate(questions):
        prompts[row, : len(question.prompt)] = torch.tensor(question.prompt)
    last = prompt_lengths - 1  # the position predicting each question's first choice token
    keep = torch.unique(last)  # sorted; the head runs on these columns only (when the model allows)
    kept = keep_logits(model, keep)
    out = model(input_ids=prompts.to(device), use_cache=True, **kept)
    at = torch.searchsorted(keep, last) if kept else last
    rows = torch.repeat_interleave(torch.arange(len(questions), device=device), counts)  # per choice
    firsts = out.logits[torch.arange(len(questions), device=device), at].float()[rows]  # [R, V]
    choices = [choice for question in questions for choice in question.choices]
    lengths = torch.tensor([len(c) for c in choices], device=device)
    first_tokens = torch.tensor([c[0] for c in choices], device=device)
    token_losses = [F.cross_entropy(firsts, first_tokens, reduction="none")]
    segments = [torch.arange(len(choices), device=device)]
    longest = int(lengths.max())
    if longest > 1:
        cache = cache_of(out)
        if cache is None or not hasattr(cache, "batch_select_indices"):
            raise TypeError("the model returned no selectable key/value cache")
        cache.batch_select_indices(rows)
        ids = torch.zeros(len(choices), longest, dtype=torch.long)
        for row, choice in enumerate(choices):
            ids[row, : len(choice)] = torch.tensor(choice)
        ids = ids.to(device)
        columns = torch.arange(longest, device=device)
        prompt_mask = torch.arange(width, device=device) < prompt_lengths[rows][:, None]
        mask = torch.cat([prompt_mask, columns < lengths[:, None]], dim=1).long()
        positions = prompt_lengths[rows][:, None] + columns
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **cache_kwargs(model, cache),
        ).logits
        scored = columns[: longest - 1] < (lengths[:, None] - 1)
        token_losses.append(
            F.cross_entropy(logits[:, :-1][scored].float(), ids[:, 1:][scored], reduction="none")
        )
        segments.append(torch.repeat_interleave(torch.arange(len(choices), device=device), lengths - 1))
    sums = torch.zeros(len(choices), dtype=torch.float32, device=device)
    sums.index_add_(0, torch.cat(segments), torch.cat(token_losses))
    flat = [_finite(x) for x in (sums / lengths).tolist()]
    out_rows: list[list[float]] = []
    for question in questions:
        out_rows.append(flat[: len(question.choices)])
        flat = flat[len(question.choices) :]
    return out_rows


def _engine_losses(model: nn.Module, question: ChoiceQuestion, device: torch.device) -> list[float]:
    """Each choice's loss through the response-loss engine (prompt recomputed for every choice)."""
    prompt = list(question.prompt)
    samples = [
        (torch.tensor([prompt + list(choice)], dtype=torch.long), len(prompt)) for choice in question.choices
    ]
    return compute_losses(model, samples, device)


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _one_question(model: nn.Module, question: ChoiceQuestion, device: torch.device) -> list[float]:
    """One question on its shared prompt; if that raises (a model without a usable cache), through
    the response-loss engine, which gives the same numbers or ``inf`` for what fails."""
    try:
        return _shared_prompt_losses(model, [question], device)[0]
    except Exception:  # noqa: BLE001 - see above
        _free(device)
        return _engine_losses(model, question, device)


def choice_losses(
    model: nn.Module,
    questions: Sequence[ChoiceQuestion],
    device: torch.device | str,
    *,
    shared_prompt: bool = True,
    token_budget: int | None = None,
    max_questions: int = 32,
) -> list[list[float]]:
    """Mean continuation loss of every choice of every question (``inf`` where it cannot be scored;
    every choice ``inf`` for an invalid question). Questions are grouped by prompt length under
    ``token_budget`` padded prompt tokens (``None``: the engine's default for the device) and at most
    ``max_questions``; a group that raises is retried question by question, then through the
    response-loss engine. ``shared_prompt=False`` uses the engine alone (the prompt recomputed per
    choice), for comparison."""
    device = torch.device(device)
    vocab = _vocab(model)
    results: list[list[float]] = [[math.inf] * len(q.choices) for q in questions]
    valid = [i for i, q in enumerate(questions) if q.is_valid(vocab)]
    if not shared_prompt:
        for index in valid:
            results[index] = _engine_losses(model, questions[index], device)
        return results
    if token_budget is None:
        token_budget = CPU_TOKEN_BUDGET if device.type == "cpu" else ACCELERATOR_TOKEN_BUDGET
    widths = [len(q.prompt) for q in questions]
    order = sorted(valid, key=lambda i: -widths[i])
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for group in _groups(order, widths, max(token_budget, 1), max(max_questions, 1)):
                try:
                    rows = _shared_prompt_losses(model, [questions[i] for i in group], device)
                except Exception:  # noqa: BLE001 - a miner's model may fail in any way: one by one
                    _free(device)
                    rows = [_one_question(model, questions[i], device) for i in group]
                for index, row in zip(group, rows, strict=True):
                    results[index] = row
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
