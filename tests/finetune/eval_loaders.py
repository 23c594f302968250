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


def misbehaving_loader(path: Path, *, device: str, dtype: torch.dtype) -> Any:
    name = path.name
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
