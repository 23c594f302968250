"""Model loaders for the evaluator's tests, resolved by name inside the worker process.

Each builds the same tiny Llama (fixed seed, so results can be compared in the test process); the
folder name decides how the model misbehaves.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_model(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


class _Exploding(torch.nn.Module):
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("device-side assert triggered")


class _DecodeTrap(torch.nn.Module):
    """A working model that hangs (or aborts the process) on the first one-token forward on top of a
    cache, i.e. only while generating: every other method scores it normally."""

    def __init__(self, inner: LlamaForCausalLM, *, hang: bool) -> None:
        super().__init__()
        self.inner, self.hang = inner, hang

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.inner.get_input_embeddings()

    def forward(self, **kwargs: Any) -> Any:
        ids = kwargs.get("input_ids")
        cached = kwargs.get("cache", kwargs.get("past_key_values")) is not None
        if cached and ids is not None and ids.shape[1] == 1:
            if self.hang:
                time.sleep(3600)
            os.abort()
        return self.inner(**kwargs)


def misbehaving_loader(path: Path, *, device: str, dtype: torch.dtype) -> Any:
    name = path.name
    if name.startswith(("genhang", "genabort")):
        return _DecodeTrap(tiny_model(int(name.split("-")[-1])).to(dtype), hang=name.startswith("genhang"))
    if name.startswith("abort"):
        os.abort()  # what a CUDA device-side assert does to the process
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("raise"):
        raise OSError(f"cannot read {path}")
    if name.startswith("forward"):
        return _Exploding()
    seed = int(name.split("-")[-1])
    return tiny_model(seed).to(dtype)


def local_model(seed: int) -> LlamaForCausalLM:
    """A model of the local competition's shape (its 2k-token vocabulary), random weights of ``seed``."""
    from constants.competitions import LOCAL_ASSETS

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig.from_json_file(str(LOCAL_ASSETS / "config.json")))


def local_loader(path: Path, *, device: str, dtype: torch.dtype) -> Any:
    """``local-N``: :func:`local_model` of seed N."""
    return local_model(int(path.name.split("-")[-1])).to(dtype)
