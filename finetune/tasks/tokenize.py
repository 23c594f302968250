"""Tokenizing each task's samples once per step, with the competition's tokenizer.

- text passages: the tokenizer's plain encoding (its special tokens included), truncated;
- multiple choice: the prompt rendered as the user turn with the generation prompt, and each choice
  as the assistant's answer after it (:func:`finetune.tokenization.conversation_ids`); a question
  whose prompt plus longest choice does not fit the sequence length is left out, for every model;
- generation: the prompt with the generation prompt; one that leaves fewer than ``max_new_tokens``
  of the sequence length is left out.

Control tokens written inside a sample are encoded as plain text, as for responses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from finetune.data.task_samples import ChoiceSample, RuleSample
from finetune.tasks.choice import ChoiceQuestion
from finetune.tasks.generation import RulePrompt
from finetune.tokenization import common_prefix_length, conversation_ids

__all__ = ["decoder", "end_of_turn_ids", "tokenize_choices", "tokenize_rule_prompts", "tokenize_texts"]


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, sequence_length: int
) -> list[torch.Tensor]:
    """Each passage as ids of shape ``[1, T]``, ``T <= sequence_length``."""
    out: list[torch.Tensor] = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]
        out.append(torch.tensor([list(ids)[:sequence_length]], dtype=torch.long))
    return out


def tokenize_choices(
    tokenizer: PreTrainedTokenizerBase, samples: Sequence[ChoiceSample], *, sequence_length: int
) -> list[ChoiceQuestion]:
    """Each question that fits ``sequence_length`` as a :class:`ChoiceQuestion` (order kept)."""
    questions: list[ChoiceQuestion] = []
    for sample in samples:
        rendered = [conversation_ids(tokenizer, sample.prompt, choice) for choice in sample.choices]
        prompt_ids = rendered[0][1]
        # the prefix every choice shares with the generation prompt (the whole prompt, for templates
        # that render the last turn like the others)
        shared = min(common_prefix_length(full, prompt_ids) for full, _ in rendered)
        continuations = [full[shared:] for full, _ in rendered]
        if shared < 1 or any(not c for c in continuations):
            continue
        if shared + max(len(c) for c in continuations) > sequence_length:
            continue
        questions.append(ChoiceQuestion.of(prompt_ids[:shared], continuations, sample.answer))
    return questions


def tokenize_rule_prompts(
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[RuleSample],
    *,
    sequence_length: int,
    max_new_tokens: int,
) -> list[RulePrompt]:
    """Each prompt that leaves room for ``max_new_tokens`` as a :class:`RulePrompt` (order kept)."""
    prompts: list[RulePrompt] = []
    for sample in samples:
        _, prompt_ids = conversation_ids(tokenizer, sample.prompt, "")
        if prompt_ids and len(prompt_ids) + max_new_tokens <= sequence_length:
            prompts.append(RulePrompt(tuple(prompt_ids), sample.rules))
    return prompts


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end a generated answer: the EOS token and, when the vocabulary has them, the usual
    end-of-turn tokens of chat templates (``<|im_end|>``, ``<|eot_id|>``, ``<|end|>``, ``</s>``)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>", "<|endoftext|>"):
        if token in vocab:
            ids.add(int(vocab[token]))
    return sorted(ids)


def decoder(tokenizer: PreTrainedTokenizerBase) -> Callable[[list[int]], str]:
    """``ids -> text`` without special tokens, for checking generated answers against rules."""

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    return decode
