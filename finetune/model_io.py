"""Saving the miner's models: a plain safetensors folder (LoRA merged), replaced atomically (the held-out
loss of the kept model is recorded in :class:`finetune.progress.MinerProgress`, never in the folder)."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

logger = logging.getLogger(__name__)


def plain_model(model: torch.nn.Module, *, keep: bool = True) -> PreTrainedModel:
    """The plain transformers model behind ``model``: a LoRA model merged into full weights (a merged copy
    when ``keep``, so training can go on; the copy costs one model's memory)."""
    if hasattr(model, "merge_and_unload"):
        source = copy.deepcopy(model) if keep else model
        merged: PreTrainedModel = source.merge_and_unload()  # type: ignore[operator]
        return merged
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"cannot save a {type(model).__name__}: not a transformers model")
    return model


def save_model(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    folder: Path,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (LoRA merged) and ``tokenizer`` to ``folder`` as safetensors + JSON, replacing what
    was there atomically (a sibling folder renamed over it): no pickle, no optimizer state, no code."""
    folder = Path(folder)
    plain = plain_model(model)
    if state_dict is None and dtype is not None:
        state_dict = plain.state_dict()
    if state_dict is not None and dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    staging = folder.with_name(f".{folder.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    # transformers >= 5 writes safetensors only (there is no pickle format to ask for any more)
    saved_dtype = plain.config.dtype
    if dtype is not None:
        plain.config.dtype = dtype  # what config.json says must match the weights written
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the miner's output
    try:
        plain.save_pretrained(staging, state_dict=state_dict)
    finally:
        plain.config.dtype = saved_dtype
        if bars:
            hf_logging.enable_progress_bar()
    if dtype is not None:
        _record_dtype(staging / "config.json", dtype)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    pickles = [p.name for p in staging.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    if pickles:
        shutil.rmtree(staging)
        raise RuntimeError(f"refusing to keep pickled files {pickles} in a model folder")
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _record_dtype(config_json: Path, dtype: torch.dtype) -> None:
    """Make ``config.json`` name the dtype the weights were written in: transformers >= 5 writes the
    in-memory model's dtype there, whatever the state dict it was given."""
    if not config_json.is_file():
        return
    values = json.loads(config_json.read_text())
    name = str(dtype).removeprefix("torch.")
    values["dtype"] = name
    if "torch_dtype" in values:
        values["torch_dtype"] = name
    config_json.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
