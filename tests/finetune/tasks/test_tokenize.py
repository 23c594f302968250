"""Tokenizing task samples with the local competition's real tokenizer (ChatML template)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from constants.competitions import LOCAL_ASSETS
from finetune.data.generated import SyntheticChoiceSource, WordSortingSource
from finetune.data.task_samples import ChoiceSample
from finetune.losses import compute_losses
from finetune.tasks.choice import choice_losses
from finetune.tasks.tokenize import (
    decoder,
    end_of_turn_ids,
    tokenize_choices,
    tokenize_rule_prompts,
    tokenize_texts,
)
from finetune.tokenization import tokenize_samples


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(LOCAL_ASSETS))


def test_a_choices_loss_is_the_response_loss_of_that_choice_as_the_answer(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
        )
    )
    samples = SyntheticChoiceSource().sample(6, seed=1)
    questions = tokenize_choices(tokenizer, samples, sequence_length=512)
    assert len(questions) == 6
    for sample, question, losses in zip(
        samples, questions, choice_losses(model, questions, "cpu"), strict=True
    ):
        assert question.answer == sample.answer
        as_responses = tokenize_samples(
            tokenizer, [(sample.prompt, c) for c in sample.choices], sequence_length=512
        )
        assert losses == pytest.approx(compute_losses(model, as_responses, "cpu"), abs=1e-5)


def test_questions_and_prompts_that_do_not_fit_are_left_out(tokenizer: PreTrainedTokenizerBase) -> None:
    long = ChoiceSample("word " * 300, ("a", "b"), 0)
    short = ChoiceSample("Pick a.", ("a", "b"), 0)
    assert [q.answer for q in tokenize_choices(tokenizer, [long, short], sequence_length=64)] == [0]
    prompts = WordSortingSource().sample(3, seed=0)
    kept = tokenize_rule_prompts(tokenizer, prompts, sequence_length=512, max_new_tokens=32)
    assert len(kept) == 3
    assert (
        tokenize_rule_prompts(tokenizer, prompts, sequence_length=len(kept[0].prompt) + 8, max_new_tokens=32)
        == []
    )


def test_generation_prompts_end_with_the_assistant_turn_and_decode_drops_specials(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    (prompt,) = tokenize_rule_prompts(
        tokenizer, WordSortingSource().sample(1, seed=4), sequence_length=512, max_new_tokens=8
    )
    text = tokenizer.decode(list(prompt.prompt))
    assert text.endswith("<|im_start|>assistant\n") and "Sort the following words" in text
    eos = end_of_turn_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos
    ids = tokenizer("apple fig", add_special_tokens=False)["input_ids"]
    assert decoder(tokenizer)([*ids, tokenizer.convert_tokens_to_ids("<|im_end|>")]) == "apple fig"


def test_text_passages_are_truncated(tokenizer: PreTrainedTokenizerBase) -> None:
    long, short = tokenize_texts(tokenizer, ["river " * 200, "river"], sequence_length=16)
    assert long.shape == (1, 16) and short.shape[0] == 1 and 1 <= short.shape[1] < 16
