"""The local competition's shipped tokenizer and tiny model config (``constants/local/``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from constants.competitions import LOCAL, LOCAL_ASSETS

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_local_assets.py"

SAMPLES = [
    ("What is 37 + 48?", "85"),
    ("Reverse the words: red apple tree", "tree apple red"),
    ("Sort these numbers in ascending order: 9, 3, 27", "3, 9, 27"),
    ("Remember: apple=7, tiger=12. What is the value of apple?", "The value of apple is 7."),
    ('How many times does the letter "r" appear in "strawberry"?', "3"),
    ("Say hi", " leading space\nand a second line"),
    ("Ends with a newline\n", "\n\nstarts with newlines"),
    ("unicode: héllo wörld 你好 🙂", "ok 🙂"),
]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_local_assets", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(LOCAL_ASSETS, local_files_only=True)


@pytest.fixture(scope="module")
def config() -> AutoConfig:
    return AutoConfig.from_pretrained(LOCAL_ASSETS, local_files_only=True)


def test_folder_holds_only_data_files() -> None:
    names = {p.name for p in LOCAL_ASSETS.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"} <= names
    assert not [n for n in names if n.endswith((".py", ".pkl", ".pickle", ".bin", ".pt"))]


def test_tokenizer_matches_config(tokenizer: PreTrainedTokenizerBase, config: AutoConfig) -> None:
    assert len(tokenizer) == config.vocab_size == 2048
    assert tokenizer.bos_token_id == config.bos_token_id
    assert tokenizer.eos_token_id == config.eos_token_id
    assert tokenizer.pad_token_id == config.pad_token_id
    assert len({config.bos_token_id, config.eos_token_id, config.pad_token_id}) == 3
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") != tokenizer.unk_token_id
    assert config.architectures == list(LOCAL.architectures)
    assert config.max_position_embeddings >= LOCAL.sequence_length


@pytest.mark.parametrize(("prompt", "response"), SAMPLES)
def test_generation_prompt_is_a_prefix_of_the_conversation(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str
) -> None:
    user = [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True)["input_ids"]
    full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": response}], tokenize=True)[
        "input_ids"
    ]
    assert full[: len(head)] == head
    assert len(full) > len(head)
    assert tokenizer.decode(full[len(head) :]) == response + "<|im_end|>\n"


def test_chat_template_renders_chatml(tokenizer: PreTrainedTokenizerBase) -> None:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|endoftext|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "What is 37 + 48?",
        "  spaces   and\ttabs\n\n",
        "héllo wörld ß ΩΣ 你好世界 🙂👍🏽 \u200b\x00\x7f",
        "a" * 300,
    ],
)
def test_tokenizer_round_trips_any_text(tokenizer: PreTrainedTokenizerBase, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_digits_are_single_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    tokens = tokenizer.tokenize("12345")
    assert tokens == ["1", "2", "3", "4", "5"]


def test_model_from_config_fits_the_competition(
    tokenizer: PreTrainedTokenizerBase, config: AutoConfig
) -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    assert LOCAL.min_params <= params <= LOCAL.max_params
    batch = tokenizer(["What is 2 + 2? 4", "Reverse the words: a b c"], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)


def test_committed_files_match_the_script(tmp_path: Path) -> None:
    written = _load_script().build_assets(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in LOCAL_ASSETS.iterdir())
    for path in written:
        assert path.read_bytes() == (LOCAL_ASSETS / path.name).read_bytes(), (
            f"{path.name} differs: rerun scripts/make_local_assets.py"
        )
