"""Sample cleaning shared by every source: strip, drop empty samples and unwanted responses.

``UNWANTED_PHRASES`` are markers of refusals and of text about the model itself rather than an answer
("As an AI language model...", "I'm sorry, but I cannot..."). Teaching or rewarding them is not the
point of the subnet, so a sample whose *response* contains one (case-insensitive, curly apostrophes
read as straight ones) is dropped. The prompt is not checked: a user may legitimately write these words.
The list is short on purpose: every phrase also drops some legitimate answers.
"""

from __future__ import annotations

from collections.abc import Iterable

from finetune.data.protocol import Sample

UNWANTED_PHRASES: tuple[str, ...] = (
    "as an ai",
    "as a language model",
    "as a large language model",
    "i'm an ai",
    "i am an ai",
    "i'm sorry, but",
    "i am sorry, but",
    "i apologize, but",
    "i cannot",
    "i can't assist",
    "i'm unable to",
    "i am unable to",
    "my knowledge cutoff",
    "openai",
    "<|endoftext|>",
)


def _normalize(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").casefold()


def is_unwanted(text: str, phrases: Iterable[str] = UNWANTED_PHRASES) -> bool:
    """Whether ``text`` contains one of ``phrases`` (case-insensitive)."""
    normalized = _normalize(text)
    return any(_normalize(phrase) in normalized for phrase in phrases)


def clean_sample(prompt: object, response: object) -> Sample | None:
    """The stripped sample, or ``None`` when a side is not text or is blank, or the response is unwanted."""
    if not isinstance(prompt, str) or not isinstance(response, str):
        return None
    prompt, response = prompt.strip(), response.strip()
    if not prompt or not response or is_unwanted(response):
        return None
    return prompt, response


def filter_samples(samples: Iterable[tuple[object, object]]) -> list[Sample]:
    """``clean_sample`` applied to each sample, keeping order and dropping the rejected ones."""
    kept: list[Sample] = []
    for prompt, response in samples:
        cleaned = clean_sample(prompt, response)
        if cleaned is not None:
            kept.append(cleaned)
    return kept
