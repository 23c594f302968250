"""Every method against its one-sample-at-a-time reference, on real (tiny, random) Hugging Face models."""

from __future__ import annotations

import math
import random
import time

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from finetune.losses import compute_losses_reference
from finetune.tasks.choice import (
    ChoiceQuestion,
    choice_losses,
    choice_losses_reference,
    multiple_choice_scores,
    multiple_choice_scores_reference,
    pick_scores,
)
from finetune.tasks.generation import (
    RulePrompt,
    generation_scores,
    greedy_generate,
    greedy_generate_reference,
    score_outputs,
)
from finetune.tasks.loss_methods import response_losses, text_losses, text_losses_reference
from finetune.tasks.rules import SortedWords, WordCount

VOCAB = 300
TOLERANCE = 1e-4


def llama(seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def gpt2(seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_positions=256, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


MODELS = {"llama": llama, "gpt2": gpt2}


def random_ids(rng: random.Random, low: int, high: int) -> list[int]:
    return [rng.randrange(VOCAB) for _ in range(rng.randint(low, high))]


def questions(seed: int, n: int) -> list[ChoiceQuestion]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        count = rng.randint(2, 5)
        out.append(
            ChoiceQuestion.of(
                random_ids(rng, 1, 40), [random_ids(rng, 1, 6) for _ in range(count)], rng.randrange(count)
            )
        )
    return out


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_response_loss_is_the_engine_and_equals_the_reference(kind: str) -> None:
    model, rng = MODELS[kind](), random.Random(1)
    samples = []
    for _ in range(12):
        ids = random_ids(rng, 3, 50)
        samples.append((torch.tensor([ids]), rng.randint(1, len(ids) - 1)))
    got = response_losses(model, samples, "cpu")
    assert got == pytest.approx(compute_losses_reference(model, samples, "cpu"), abs=TOLERANCE)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_text_loss_equals_the_plain_hugging_face_loss(kind: str) -> None:
    model, rng = MODELS[kind](), random.Random(2)
    passages = [torch.tensor([random_ids(rng, 2, 80)]) for _ in range(15)] + [torch.tensor([[5]])]
    got = text_losses(model, passages, "cpu", token_budget=256)
    want = text_losses_reference(model, passages, "cpu")
    assert got[-1] == math.inf and want[-1] == math.inf  # one token: nothing to predict
    assert got[:-1] == pytest.approx(want[:-1], abs=TOLERANCE)
    assert all(math.isfinite(x) for x in got[:-1])


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_choice_losses_on_the_shared_prompt_equal_one_choice_at_a_time(kind: str) -> None:
    model, qs = MODELS[kind](), questions(3, 12)
    reference = choice_losses_reference(model, qs, "cpu")
    for shared in (True, False):
        got = choice_losses(model, qs, "cpu", shared_prompt=shared)
        for row, want in zip(got, reference, strict=True):
            assert row == pytest.approx(want, abs=TOLERANCE)
    assert multiple_choice_scores(model, qs[:4], "cpu") == multiple_choice_scores_reference(
        model, qs[:4], "cpu"
    )


def test_the_answer_is_the_lowest_loss_choice() -> None:
    q = [ChoiceQuestion.of([1], [[2], [3], [4]], answer) for answer in (0, 1, 2)]
    losses = [[0.5, 0.2, 0.9], [0.5, 0.2, 0.9], [math.inf, math.nan, math.inf]]
    assert pick_scores(losses, q)[:2] == [0.0, 1.0]
    assert math.isnan(pick_scores(losses, q)[2])  # no finite choice: not scored
    assert pick_scores([[0.3, 0.3, 0.9]], q[:1]) == [1.0]  # a tie goes to the first choice


def test_a_model_that_learned_the_answers_scores_one() -> None:
    """A model trained to prefer one continuation picks it, batched or not."""
    model = llama(4)
    prompt, right, wrong = [7, 8, 9], [20, 21], [30, 31]
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-2)
    for _ in range(15):
        ids = torch.tensor([prompt + right])
        model(ids, labels=ids).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    q = [ChoiceQuestion.of(prompt, [wrong, right], 1), ChoiceQuestion.of(prompt, [right, wrong], 0)]
    assert multiple_choice_scores(model, q, "cpu") == [1.0, 1.0]


def test_invalid_questions_are_not_scored() -> None:
    model = llama()
    bad = [
        ChoiceQuestion.of([], [[1], [2]], 0),  # no prompt
        ChoiceQuestion.of([1], [[1]], 0),  # one choice
        ChoiceQuestion.of([1], [[1], []], 0),  # an empty choice
        ChoiceQuestion.of([1], [[1], [VOCAB]], 0),  # out of vocabulary
        ChoiceQuestion.of([1], [[1], [2]], 2),  # the answer is no choice
    ]
    assert all(math.isnan(s) for s in multiple_choice_scores(model, bad, "cpu"))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_batched_left_padded_generation_equals_one_prompt_at_a_time(kind: str) -> None:
    model, rng = MODELS[kind](), random.Random(5)
    prompts = [random_ids(rng, 1, 30) for _ in range(9)]
    eos = [3, 4, 5, 6, 7, 8]
    got = greedy_generate(model, prompts, "cpu", eos_ids=eos, max_new_tokens=12, batch_size=5)
    want = greedy_generate_reference(model, prompts, "cpu", eos_ids=eos, max_new_tokens=12)
    assert got == want
    assert all(output is not None and len(output) <= 12 for output in got)
    assert all(not set(output or []) & set(eos) for output in got)


def test_generation_ignores_the_models_own_generation_config() -> None:
    model, rng = llama(6), random.Random(6)
    prompts = [random_ids(rng, 2, 10) for _ in range(4)]
    plain = greedy_generate(model, prompts, "cpu", eos_ids=[1], max_new_tokens=6)
    model.generation_config.do_sample = True
    model.generation_config.temperature = 5.0
    model.generation_config.max_new_tokens = 1000
    assert greedy_generate(model, prompts, "cpu", eos_ids=[1], max_new_tokens=6) == plain


def test_generation_stops_at_its_time_limit_and_unstarted_prompts_score_nan() -> None:
    model = llama()

    class Slow(torch.nn.Module):
        """The model, 0.3 s per forward."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def get_input_embeddings(self) -> torch.nn.Module:
            return model.get_input_embeddings()

        def forward(self, **kwargs: object) -> object:
            time.sleep(0.3)  # slow enough that the limit passes during the first batch
            return self.inner(**kwargs)

    prompts = [[1, 2, 3]] * 4
    started = time.monotonic()
    out = greedy_generate(
        Slow(), prompts, "cpu", eos_ids=[0], max_new_tokens=50, batch_size=2, time_limit_s=0.5
    )
    assert time.monotonic() - started < 3.0
    assert out[0] is not None and 1 <= len(out[0]) < 50  # the first batch was cut short
    assert out[2] is None and out[3] is None  # the second batch never began
    scores = score_outputs(out, [RulePrompt((1,), (WordCount(0, 100),))] * 4, decode=lambda ids: "")
    assert scores[:2] == [1.0, 1.0] and all(math.isnan(s) for s in scores[2:])


def test_a_prompt_that_fails_alone_costs_only_itself() -> None:
    model = llama()
    prompts = [[1, 2], [VOCAB + 5], [], [4, 5, 6]]
    out = greedy_generate(model, prompts, "cpu", eos_ids=[0], max_new_tokens=4)
    assert out[1] is None and out[2] is None
    assert out[0] is not None and out[3] is not None


def test_generation_scores_check_the_decoded_text_against_the_rules() -> None:
    model = llama(7)
    prompts = [
        RulePrompt((1, 2, 3), (SortedWords(("b", "a")),)),
        RulePrompt((4, 5), (WordCount(0, 3), WordCount(9, 9))),
    ]
    decoded = {"calls": 0}

    def decode(ids: list[int]) -> str:
        decoded["calls"] += 1
        return "a b"

    scores = generation_scores(model, prompts, "cpu", decode=decode, eos_ids=[0], max_new_tokens=3)
    assert scores == [1.0, 0.5] and decoded["calls"] == 2


def test_a_model_without_a_usable_cache_falls_back_to_the_engine_with_the_same_numbers() -> None:
    model = llama(8)

    class NoCache(torch.nn.Module):
        """Answers every forward without a key/value cache (as some custom decoders do)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.config = model.config

        def get_input_embeddings(self) -> torch.nn.Module:
            return model.get_input_embeddings()

        def forward(self, **kwargs: object) -> object:
            kwargs["use_cache"] = False
            return self.inner(**kwargs)

    qs = questions(9, 5)
    got = choice_losses(NoCache(), qs, "cpu", token_budget=64)
    for row, want in zip(got, choice_losses_reference(model, qs, "cpu"), strict=True):
        assert row == pytest.approx(want, abs=TOLERANCE)
