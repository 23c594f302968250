"""The shared sample filter: strip, drop blank or non-text samples and unwanted responses."""

from __future__ import annotations

from finetune.data.filters import UNWANTED_PHRASES, clean_sample, filter_samples, is_unwanted


def test_blank_and_non_text_samples_are_dropped() -> None:
    samples: list[tuple[object, object]] = [
        ("", "answer"),
        ("question", "   \n\t"),
        (None, "answer"),
        ("question", float("nan")),
        ("question", 12),
        ("  keep me ", "\nfine\n"),
    ]
    assert filter_samples(samples) == [("keep me", "fine")]


def test_unwanted_phrases_are_case_insensitive_and_accept_curly_apostrophes() -> None:
    assert is_unwanted("AS AN AI language model, I think...")
    assert is_unwanted("I\u2019m sorry, but that is not possible.")
    assert is_unwanted("Well. I Cannot answer that.")
    assert not is_unwanted("The capital of France is Paris.")
    assert clean_sample("Tell me a joke", "As an AI, I do not joke.") is None


def test_only_the_response_is_checked_and_order_is_kept() -> None:
    samples = [
        ("As an AI, what would you say?", "Hello!"),
        ("q1", "I'm sorry, but no."),
        ("q2", "a2"),
        ("q3", "a3"),
    ]
    assert filter_samples(samples) == [
        ("As an AI, what would you say?", "Hello!"),
        ("q2", "a2"),
        ("q3", "a3"),
    ]


def test_phrase_list_is_lower_case_and_non_empty() -> None:
    assert UNWANTED_PHRASES
    assert all(phrase and phrase == phrase.lower() for phrase in UNWANTED_PHRASES)
