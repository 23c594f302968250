"""A local network for validator tests: miners that publish tiny models, a validator with a permit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM

from constants.competitions import LOCAL_ASSETS, LOCALNET_SCHEDULE
from finetune.checks import ModelChecker, load_model
from finetune.data import SyntheticSource
from finetune.evaluation import Evaluator
from finetune.publishing import Publisher
from finetune.validator.validator import Validator, ValidatorSettings
from model.cleaner import ModelCleaner
from model.data import ModelId
from model.storage.chain.local_chain import LocalChain
from model.storage.disk.model_store import DiskModelStore
from model.storage.hub.local_hub import LocalHub
from model.tracker import ModelTracker
from model.updater import ModelUpdater
from tests.finetune.zoo import TOKENIZER_FILES, tiny_llama_config

VALIDATOR = "validator-hk"
LOADER = "tests.finetune.validator.localnet:load_or_crash"


def load_or_crash(path: Path, *, device: str, dtype: torch.dtype, **options: Any) -> Any:
    """The real loader, except that a model of a hotkey named ``crash-...`` kills the process, the way
    a CUDA device-side assert does."""
    if any(part.startswith("crash") for part in path.parts):
        os.abort()
    return load_model(path, device=device, dtype=dtype, **options)


def save_tiny(folder: Path, seed: int) -> Path:
    """A valid local-competition model with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copyfile(LOCAL_ASSETS / name, folder / name)
    return folder


class LocalNet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.chain = LocalChain(root / "chain.sqlite", seconds_per_block=1e9)
        self.chain.register(VALIDATOR, stake=1000.0, validator_permit=True)

    def publish(self, hotkey: str, folder: Path, *, salted: bool = False) -> ModelId:
        self.chain.register(hotkey)
        namespace = hotkey.replace("_", "-")
        publisher = Publisher(
            chain=LocalChain(self.chain.path, hotkey=hotkey),
            hub=LocalHub(self.root / "hub", user=namespace),
            hotkey=hotkey,
        )
        return publisher.publish(
            folder, repo_id=f"{namespace}/tiny", competition_id="local", use_hotkey_in_hash=salted
        )

    def validator(
        self, state_dir: Path | None = None, *, max_downloads: int = 8, **settings: Any
    ) -> Validator:
        chain = LocalChain(self.chain.path, hotkey=VALIDATOR)
        state_dir = state_dir or self.root / "state"
        store = DiskModelStore(self.root / "models")
        tracker = ModelTracker.load(state_dir / "tracker.json")
        options: dict[str, Any] = {"samples_per_step": 24, "step_pause_s": 0.0, **settings}
        return Validator(
            chain=chain,
            source=SyntheticSource("heldout"),
            evaluator=Evaluator(["cpu"], loader=LOADER, timeout_s=600),  # generous: CI machines are shared
            store=store,
            tracker=tracker,
            updater=ModelUpdater(
                chain,
                LocalHub(self.root / "hub"),
                store,
                tracker,
                ModelChecker(),
                schedule=LOCALNET_SCHEDULE,
                min_age_blocks=0,
                retry_wait_s=0.01,
                max_downloads=max_downloads,
            ),
            cleaner=ModelCleaner(store, tracker, grace_s=3600),
            settings=ValidatorSettings(state_dir=state_dir, schedule=LOCALNET_SCHEDULE, **options),
        )
