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


def test_unwanted_phrases_match_case_sensitively_and_accept_curly_apostrophes() -> None:
    assert is_unwanted("As an AI language model, I think...")
    assert is_unwanted("Well, as an AI, I would not.")
    assert is_unwanted("I\u2019m sorry, but that is not possible.")
    assert is_unwanted("Sure. I cannot answer that, though.")
    assert is_unwanted("It's important to note that results vary.")
    assert not is_unwanted("AS AN AI-free zone, this forum is quiet.")  # another casing: kept
    assert not is_unwanted("The capital of France is Paris.")
    assert clean_sample("Tell me a joke", "As an AI, I do not joke.") is None


def test_unwanted_phrases_match_on_word_boundaries() -> None:
    assert not is_unwanted("The project has an aim: to map the coast.")  # "as an ai" inside words
    assert not is_unwanted("Hawaii cannot be reached by car.")  # "i cannot" inside a word
    assert not is_unwanted("Kiwi cannot fly; neither can the emu.")
    assert not is_unwanted("The moon has an AIRY glow.")
    assert is_unwanted("Tokens like <|endoftext|>leak from scraped data.")  # no boundary needed there
    assert is_unwanted("(As an AI) I have no opinion.")


def test_every_casing_of_gpt_is_unwanted() -> None:
    for text in ("Ask GPT.", "gpt-4 says hi", "Made with ChatGPT", "I am gPt", "GpT"):
        assert is_unwanted(text), text
    assert not is_unwanted("Egypt is in Africa.")


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


def test_phrase_list_is_non_empty_and_has_no_duplicates() -> None:
    assert UNWANTED_PHRASES and len(set(UNWANTED_PHRASES)) == len(UNWANTED_PHRASES)
    assert all(phrase == phrase.strip() and phrase for phrase in UNWANTED_PHRASES)
