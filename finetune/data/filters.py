"""Sample cleaning shared by every source: strip, drop empty samples and unwanted responses.

``UNWANTED_PHRASES`` are markers of refusals, of hedging and moralizing, and of text about the model
itself rather than an answer ("As an AI language model...", "I'm sorry, but I cannot...", "It is
important to note..."). Teaching or rewarding them is not the point of the subnet, so a sample whose
*response* holds one is dropped; the prompt is not checked (a user may legitimately write these words).

The rule follows the seed (SN6's Cortex loader) in substance, with a list of our own:

* phrases match **case-sensitively** (so "As an AI" at a sentence start and "as an AI" inside one are
  listed separately, and "an Ai-driven tool" is kept), curly apostrophes read as straight ones;
* phrases match on **word boundaries**: a phrase that begins or ends with a letter or digit must not
  continue a longer word there, so "has an aim" does not hold "as an ai" and "Hawaii cannot" does not
  hold "I cannot" (the seed's plain substring test drops both);
* every casing of "GPT" drops the response, inside words too ("ChatGPT", "gpt-4"), as in the seed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from finetune.data.protocol import Sample

UNWANTED_PHRASES: tuple[str, ...] = (
    # the model talking about itself
    "As an AI",
    "as an AI",
    "AI language model",
    "As a language model",
    "as a language model",
    "As a large language model",
    "as a large language model",
    "I'm an AI",
    "I am an AI",
    "I'm just an AI",
    "I am just an AI",
    "As an artificial intelligence",
    "as an artificial intelligence",
    "I am an artificial intelligence",
    "I'm an artificial intelligence",
    "AI assistant",
    "As a helpful assistant",
    "I am programmed to",
    "I'm programmed to",
    "against my programming",
    "my guidelines",
    "my knowledge cutoff",
    "my knowledge cut-off",
    "my knowledge cut off",
    "my training data",
    "September 2021",
    "OpenAI",
    "I don't have personal",
    "I do not have personal",
    "I don't have feelings",
    "I do not have feelings",
    "I don't have emotions",
    "I do not have emotions",
    "I don't have beliefs",
    "I do not have beliefs",
    "I don't have a physical",
    "I do not have a physical",
    "I don't have the ability",
    "I do not have the ability",
    "I don't have access to real-time",
    "I do not have access to real-time",
    # refusals
    "I'm sorry, but",
    "I am sorry, but",
    "I'm sorry, I",
    "I apologize, but",
    "I cannot",
    "I can't assist",
    "I can't help with",
    "I can't provide",
    "I won't be able to",
    "I'm unable to",
    "I am unable to",
    "I'm not able to",
    "I am not able to",
    "I must decline",
    "cannot provide information",
    "cannot provide guidance",
    "unable to offer assistance",
    "cannot engage in",
    # hedging and moralizing
    "It is important to note",
    "It's important to note",
    "it is important to note",
    "it's important to note",
    "It is important to remember",
    "It's important to remember",
    "it is not appropriate",
    "it's not appropriate",
    "It is not appropriate",
    "It's not appropriate",
    "it is never okay",
    "ethical guidelines",
    "ethical principles",
    "responsible AI",
    "AI principles",
    "prioritize user safety",
    "real-world consequences",
    "potentially harmful",
    "dangerous or harmful",
    "purely hypothetical",
    "for entertainment purposes",
    "Please note that",
    # leftovers of scraped conversations
    "<|endoftext|>",
    "*This conversation is shared from",
    "*This chat conversation is shared from",
)

_GPT = r"[Gg][Pp][Tt]"  # every casing, inside words too


def _normalize(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def _bounded(phrase: str) -> str:
    """``phrase`` as a regex that does not match inside a longer word at an alphanumeric end."""
    body = re.escape(_normalize(phrase))
    start = r"(?<![^\W_])" if phrase[:1].isalnum() else ""
    end = r"(?![^\W_])" if phrase[-1:].isalnum() else ""
    return f"{start}{body}{end}"


@lru_cache(maxsize=8)
def _pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = [_bounded(p) for p in sorted(set(phrases), key=len, reverse=True) if p]
    return re.compile("|".join([*alternatives, _GPT]))


def is_unwanted(text: str, phrases: Iterable[str] = UNWANTED_PHRASES) -> bool:
    """Whether ``text`` holds one of ``phrases`` (case-sensitive, on word boundaries) or any casing of
    "GPT"."""
    return _pattern(tuple(phrases)).search(_normalize(text)) is not None


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
