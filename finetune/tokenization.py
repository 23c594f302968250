"""Turning (prompt, response) samples into token ids, the same way for miners and validators.

A sample becomes the conversation ``[user: prompt, assistant: response]`` rendered by the tokenizer's
chat template and tokenized in one go (``apply_chat_template(..., tokenize=True)``, which encodes the
rendered text *without* adding special tokens again, so a template that writes ``bos_token`` gives one
BOS, not two). Control tokens written inside a prompt or response (say, a literal ``<|im_end|>``) are
encoded as plain text (``sanitize_control_tokens=True``), so a sample cannot forge turn boundaries.

The prompt length is the length of ``[user: prompt]`` rendered with ``add_generation_prompt=True``: the
tokens the model is conditioned on; the loss is taken on the tokens after it. When those ids are not a
prefix of the full ids (a template that renders the last turn differently), the longest common prefix
is used instead.

Tokenizers without a chat template use a plain format (see ``FALLBACK_USER``/``FALLBACK_ASSISTANT``):
``<special tokens the tokenizer adds>### User:\\n{prompt}\\n### Assistant:\\n`` then the response ids and
the EOS id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from constants.competitions import Competition

logger = logging.getLogger(__name__)

FALLBACK_USER = "### User:\n"
FALLBACK_ASSISTANT = "\n### Assistant:\n"


def load_tokenizer(competition: Competition, **kwargs: Any) -> PreTrainedTokenizerBase:
    """The competition's tokenizer (a hub repository id or a local folder), with a pad token.

    Remote code is never run. A tokenizer without a pad token gets its EOS token as pad token.
    ``kwargs`` go to ``AutoTokenizer.from_pretrained`` (``local_files_only``, ``cache_dir``...).
    """
    kwargs["trust_remote_code"] = False
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(competition.tokenizer, **kwargs)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _input_ids(encoded: Any) -> list[int]:
    ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(token) for token in ids]


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer carries a chat template (otherwise the fallback format is used)."""
    return bool(getattr(tokenizer, "chat_template", None))


def conversation_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str
) -> tuple[list[int], list[int]]:
    """(ids of the whole conversation, ids of the prompt with the generation prompt), untruncated."""
    if not has_chat_template(tokenizer):
        prompt_ids = _input_ids(
            tokenizer(
                f"{FALLBACK_USER}{prompt}{FALLBACK_ASSISTANT}",
                add_special_tokens=True,
                split_special_tokens=True,
            )
        )
        response_ids = _input_ids(tokenizer(response, add_special_tokens=False, split_special_tokens=True))
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        return prompt_ids + response_ids + eos, prompt_ids

    user = {"role": "user", "content": prompt}
    full = tokenizer.apply_chat_template(
        [user, {"role": "assistant", "content": response}],
        tokenize=True,
        return_dict=True,
        sanitize_control_tokens=True,
    )
    prompt_only = tokenizer.apply_chat_template(
        [user], tokenize=True, return_dict=True, add_generation_prompt=True, sanitize_control_tokens=True
    )
    return _input_ids(full), _input_ids(prompt_only)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def tokenize_sample(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, *, sequence_length: int
) -> tuple[torch.Tensor, int]:
    """(ids of shape ``[1, T]``, dtype long, ``T <= sequence_length``; prompt length ``<= T``)."""
    full, prompt_ids = conversation_ids(tokenizer, prompt, response)
    prompt_len = len(prompt_ids)
    if full[:prompt_len] != prompt_ids:
        prompt_len = common_prefix_length(full, prompt_ids)
        logger.debug(
            "prompt ids are not a prefix of the conversation ids; using %d common tokens", prompt_len
        )
    ids = full[:sequence_length]
    return torch.tensor([ids], dtype=torch.long), min(prompt_len, len(ids))


def tokenize_samples(
    tokenizer: PreTrainedTokenizerBase, samples: Iterable[tuple[str, str]], *, sequence_length: int
) -> list[tuple[torch.Tensor, int]]:
    """``tokenize_sample`` of each (prompt, response), in order.

    A sample whose prompt fills the whole sequence is kept with no response token (``prompt_len == T``);
    downstream its loss is infinite (there is nothing to score), which no model can change.
    """
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
    return [
        tokenize_sample(tokenizer, prompt, response, sequence_length=sequence_length)
        for prompt, response in samples
    ]
