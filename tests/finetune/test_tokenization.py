"""tokenize_samples: prompt length, truncation, a single BOS, the fallback format, the local tokenizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from constants.competitions import LOCAL
from finetune.tokenization import (
    FALLBACK_ASSISTANT,
    common_prefix_length,
    load_tokenizer,
    tokenize_samples,
)

CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SAMPLES = [
    ("What is 37 + 48?", "85"),
    ("Reverse the words: red apple tree", "tree apple red"),
    ("Say hi", " leading space\nand a second line"),
    ("unicode: héllo wörld 你好", "ok 🙂"),
]


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with a post-processor that adds BOS (like Llama 3) and a ChatML template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [f"{p}\n{r}\nuser assistant" for p, r in SAMPLES] * 20
    backend.train_from_iterator(corpus, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture(scope="module")
def tiny() -> PreTrainedTokenizerFast:
    return _tiny_tokenizer()


@pytest.fixture(scope="module")
def local() -> PreTrainedTokenizerBase:
    return load_tokenizer(LOCAL, local_files_only=True)


def check_prompt_split(
    tokenizer: PreTrainedTokenizerBase, generation_prompt: str, seq_len: int = 512
) -> None:
    for (prompt, response), (ids, prompt_len) in zip(
        SAMPLES, tokenize_samples(tokenizer, SAMPLES, sequence_length=seq_len), strict=True
    ):
        assert ids.dtype == torch.long and ids.shape == (1, ids.shape[1])
        row = ids[0].tolist()
        head = tokenizer.decode(row[:prompt_len])
        assert head.endswith(generation_prompt) and prompt in head
        assert tokenizer.decode(row[prompt_len:], skip_special_tokens=True).startswith(response)
        assert row.count(tokenizer.bos_token_id) == 1 and row[0] == tokenizer.bos_token_id


def test_prompt_len_ends_at_the_generation_prompt(tiny: PreTrainedTokenizerFast) -> None:
    check_prompt_split(tiny, "<|im_start|>assistant\n")


def test_one_bos_although_template_and_post_processor_both_add_one(tiny: PreTrainedTokenizerFast) -> None:
    assert tiny("x")["input_ids"][0] == tiny.bos_token_id  # the post-processor does add one
    ((ids, _),) = tokenize_samples(tiny, [("q", "a")], sequence_length=64)
    assert ids[0].tolist().count(tiny.bos_token_id) == 1


def test_truncation_and_a_prompt_that_fills_the_sequence(tiny: PreTrainedTokenizerFast) -> None:
    ((full, prompt_len),) = tokenize_samples(tiny, [SAMPLES[1]], sequence_length=10_000)
    length = full.shape[1]
    ((cut, cut_prompt_len),) = tokenize_samples(tiny, [SAMPLES[1]], sequence_length=length - 2)
    assert cut.shape == (1, length - 2) and cut_prompt_len == prompt_len
    assert torch.equal(cut[0], full[0, : length - 2])
    ((short, short_prompt_len),) = tokenize_samples(tiny, [SAMPLES[1]], sequence_length=prompt_len - 1)
    assert short.shape == (1, prompt_len - 1) and short_prompt_len == prompt_len - 1
    with pytest.raises(ValueError):
        tokenize_samples(tiny, SAMPLES, sequence_length=0)


def test_control_tokens_in_text_stay_plain_text(tiny: PreTrainedTokenizerFast) -> None:
    im_end = tiny.convert_tokens_to_ids("<|im_end|>")
    ((ids, _),) = tokenize_samples(tiny, [("q <|im_end|> x", "a")], sequence_length=256)
    assert ids[0].tolist().count(im_end) == 2  # the two turn ends written by the template


def test_prompt_not_a_prefix_falls_back_to_common_prefix(tiny: PreTrainedTokenizerFast) -> None:
    odd = _tiny_tokenizer()
    # The generation prompt says "assistant:" but a rendered assistant turn says "assistant\n".
    odd.chat_template = CHATML.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant:{% endif %}"
    )
    ((ids, prompt_len),) = tokenize_samples(odd, [("q", "a")], sequence_length=64)
    prompt_ids = odd.apply_chat_template([{"role": "user", "content": "q"}], add_generation_prompt=True)[
        "input_ids"
    ]
    assert prompt_len == common_prefix_length(ids[0].tolist(), prompt_ids) < len(prompt_ids)


def test_fallback_format_without_chat_template() -> None:
    plain = _tiny_tokenizer()
    plain.chat_template = None
    check_prompt_split(plain, FALLBACK_ASSISTANT)
    ((ids, _),) = tokenize_samples(plain, [("q", "a")], sequence_length=64)
    assert ids[0, -1].item() == plain.eos_token_id


def test_load_tokenizer_sets_pad_to_eos(tiny: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    assert tiny.pad_token is None
    tiny.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(
        dataclasses.replace(LOCAL, tokenizer=str(tmp_path / "tok")), local_files_only=True
    )
    assert loaded.pad_token == loaded.eos_token == "</s>"
    assert (
        tokenize_samples(loaded, SAMPLES, sequence_length=128)[0][0].tolist()
        == tokenize_samples(tiny, SAMPLES, sequence_length=128)[0][0].tolist()
    )


def test_local_competition_tokenizer(local: PreTrainedTokenizerBase) -> None:
    assert local.pad_token is not None
    check_prompt_split(local, "<|im_start|>assistant\n", seq_len=LOCAL.sequence_length)
    batches = tokenize_samples(local, SAMPLES, sequence_length=LOCAL.sequence_length)
    assert all(ids.shape[1] <= LOCAL.sequence_length and 0 < p < ids.shape[1] for ids, p in batches)
