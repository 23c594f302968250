"""The batched loss engine equals the one-sample-at-a-time Hugging Face loss, sample by sample."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PreTrainedModel,
    StableLmConfig,
    StableLmForCausalLM,
)

from finetune import validation
from finetune.losses import _split_head, compute_losses, compute_losses_reference, training_loss

VOCAB = 1000
TOLERANCE = 1e-4
CPU = torch.device("cpu")
DECODER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def _llama() -> PreTrainedModel:
    return LlamaForCausalLM(LlamaConfig(**DECODER, num_key_value_heads=2, vocab_size=VOCAB))


def _gpt2() -> PreTrainedModel:
    config = GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_positions=256, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


def _stablelm() -> PreTrainedModel:
    return StableLmForCausalLM(StableLmConfig(**DECODER, num_key_value_heads=2, vocab_size=VOCAB))


def _gemma2_softcapped() -> PreTrainedModel:
    """Final-logit softcapping: the engine must apply it after its response-only head."""
    config = Gemma2Config(
        **DECODER, num_key_value_heads=2, head_dim=16, vocab_size=VOCAB, final_logit_softcapping=0.5
    )
    return Gemma2ForCausalLM(config)


def _opt() -> PreTrainedModel:
    """Not on the split-head list: exercises the full-forward path."""
    config = OPTConfig(
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=VOCAB,
        word_embed_proj_dim=64,
    )
    return OPTForCausalLM(config)


BUILDERS: dict[str, Callable[[], PreTrainedModel]] = {
    "llama": _llama,
    "gpt2": _gpt2,
    "stablelm": _stablelm,
    "gemma2": _gemma2_softcapped,
    "opt": _opt,
}


@pytest.fixture(scope="module")
def models() -> dict[str, PreTrainedModel]:
    torch.manual_seed(0)
    return {name: build().eval() for name, build in BUILDERS.items()}


def _samples(count: int, seed: int, max_len: int = 120) -> list[tuple[torch.Tensor, int]]:
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(count):
        length = int(torch.randint(2, max_len, (1,), generator=generator))
        prompt_len = int(torch.randint(1, length, (1,), generator=generator))
        samples.append((torch.randint(0, VOCAB, (1, length), generator=generator), prompt_len))
    return samples


def _assert_close(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        if math.isinf(want):
            assert math.isinf(got)
        else:
            assert abs(got - want) < TOLERANCE, (got, want)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_batched_equals_reference(models: dict[str, PreTrainedModel], name: str) -> None:
    samples = _samples(24, seed=1)
    expected = compute_losses_reference(models[name], samples, CPU)
    assert all(math.isfinite(loss) for loss in expected)
    _assert_close(compute_losses(models[name], samples, CPU, token_budget=600), expected)


def test_split_head_used_for_known_architectures(models: dict[str, PreTrainedModel]) -> None:
    assert all(_split_head(models[name]) is not None for name in ("llama", "gpt2", "stablelm", "gemma2"))
    assert _split_head(models["opt"]) is None


def test_reference_is_the_hugging_face_loss(models: dict[str, PreTrainedModel]) -> None:
    ids, prompt_len = _samples(1, seed=2)[0]
    labels = ids.clone()
    labels[:, :prompt_len] = -100
    with torch.no_grad():
        direct = float(models["llama"](ids, labels=labels).loss)
    assert compute_losses_reference(models["llama"], [(ids, prompt_len)], CPU) == [pytest.approx(direct)]


def test_order_preserved_and_independent_of_batching(models: dict[str, PreTrainedModel]) -> None:
    model = models["llama"]
    samples = _samples(16, seed=3)
    batched = compute_losses(model, samples, CPU)
    assert compute_losses(model, samples[::-1], CPU) == pytest.approx(batched[::-1], abs=TOLERANCE)
    one_per_batch = compute_losses(model, samples, CPU, token_budget=1)
    tiny_batches = compute_losses(model, samples, CPU, max_batch_size=2, logits_chunk=3 * VOCAB)
    assert one_per_batch == pytest.approx(batched, abs=TOLERANCE)
    assert tiny_batches == pytest.approx(batched, abs=TOLERANCE)


def test_unscorable_samples_are_inf_without_affecting_others(models: dict[str, PreTrainedModel]) -> None:
    model = models["gpt2"]
    good = _samples(6, seed=4)
    bad = [
        (torch.randint(0, VOCAB, (1, 10)), 0),  # prompt_len 0
        (torch.randint(0, VOCAB, (1, 10)), 10),  # prompt_len == T
        (torch.randint(0, VOCAB, (1, 10)), 12),  # prompt_len > T
        (torch.randint(0, VOCAB, (1, 1)), 1),  # length-1 ids
        (torch.zeros(1, 0, dtype=torch.long), 1),  # empty ids
        (torch.tensor([[1, 2, VOCAB + 5, 3]]), 1),  # out-of-vocabulary id
        (torch.randint(0, VOCAB, (2, 10)), 3),  # not one sample
    ]
    mixed = [sample for pair in zip(good, bad, strict=False) for sample in pair] + bad[len(good) :]
    losses = compute_losses(model, mixed, CPU)
    reference = compute_losses_reference(model, mixed, CPU)
    expected_good = compute_losses(model, good, CPU)
    assert [loss for loss, sample in zip(losses, mixed, strict=True) if any(sample is b for b in bad)] == [
        math.inf
    ] * len(bad)
    assert [loss for loss in losses if math.isfinite(loss)] == pytest.approx(expected_good, abs=TOLERANCE)
    _assert_close(losses, reference)
    assert compute_losses(model, [], CPU) == []


def test_failing_batch_costs_only_the_failing_sample(models: dict[str, PreTrainedModel]) -> None:
    """A body that raises whenever a sequence of one particular length is in its input."""
    model = models["llama"]
    samples = _samples(12, seed=5, max_len=60)
    cursed = 73
    samples.insert(5, (torch.randint(0, VOCAB, (1, cursed)), 30))
    expected = compute_losses_reference(model, samples, CPU)

    def raise_on_cursed_length(
        _module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
    ) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        assert isinstance(ids, torch.Tensor)
        lengths = (
            mask.sum(dim=1) if isinstance(mask, torch.Tensor) else torch.full((ids.shape[0],), ids.shape[1])
        )
        if bool((lengths == cursed).any()):
            raise RuntimeError("cursed length")

    handle = model.model.register_forward_pre_hook(raise_on_cursed_length, with_kwargs=True)
    try:
        losses = compute_losses(model, samples, CPU)  # one batch: it fails, then its samples run singly
        reference = compute_losses_reference(model, samples, CPU)
    finally:
        handle.remove()
    assert math.isinf(losses[5]) and math.isinf(reference[5])
    _assert_close(losses[:5] + losses[6:], expected[:5] + expected[6:])


def test_non_finite_loss_is_inf_and_training_mode_restored() -> None:
    torch.manual_seed(0)
    model = _llama()
    model.train()
    samples = _samples(4, seed=6)
    finite = compute_losses(model, samples, CPU)
    assert model.training
    with torch.no_grad():
        model.lm_head.weight[7].fill_(math.nan)  # every logits row now has a NaN: every loss is NaN
    assert all(math.isfinite(loss) for loss in finite)
    assert compute_losses(model, samples, CPU) == [math.inf] * 4
    assert compute_losses_reference(model, samples, CPU) == [math.inf] * 4


def test_bfloat16_model_matches_reference_closely() -> None:
    """In bf16 batching changes rounding, so only closeness is expected (head in bf16, CE in float32)."""
    torch.manual_seed(0)
    model = _llama().to(torch.bfloat16).eval()
    samples = _samples(12, seed=7)
    expected = compute_losses_reference(model, samples, CPU)
    assert compute_losses(model, samples, CPU) == pytest.approx(expected, abs=5e-3)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_the_training_loss_is_the_validators_loss_with_gradients(
    models: dict[str, PreTrainedModel], name: str
) -> None:
    """The miner trains on exactly what validators score: the mean over samples of each sample's mean
    response-token cross-entropy (prompt tokens and padding never count), here with gradients."""
    model = models[name]
    samples = _samples(8, seed=7, max_len=60)
    loss = training_loss(model, samples, CPU)
    scores = validation.compute_losses(model, samples, CPU)
    assert float(loss.detach()) == pytest.approx(sum(scores) / len(scores), abs=TOLERANCE)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    model.zero_grad(set_to_none=True)


def test_the_training_loss_ignores_what_follows_a_sample(models: dict[str, PreTrainedModel]) -> None:
    """Right padding never changes a sample's loss: a short sample scores the same alone or beside a long
    one, in training as in evaluation."""
    model = models["llama"]
    short, long = _samples(1, seed=8, max_len=20)[0], _samples(1, seed=9, max_len=120)[0]
    with torch.no_grad():
        alone = float(training_loss(model, [short], CPU))
        together = float(training_loss(model, [short, long], CPU))
        long_alone = float(training_loss(model, [long], CPU))
    assert together == pytest.approx((alone + long_alone) / 2, abs=TOLERANCE)
