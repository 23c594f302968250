"""A local network for validator tests: miners that publish tiny models, a validator with a permit."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM

from constants.competitions import LOCAL, LOCAL_ASSETS, LOCALNET_SCHEDULE, ScheduleEntry
from finetune.checks import ModelChecker, load_model
from finetune.data import SampleSource, SyntheticSource
from finetune.evaluation import Evaluator
from finetune.publishing import Publisher
from finetune.rules import sync_window
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
    a CUDA device-side assert does, and one named ``sleep-...`` touches ``$SLEEP_MARKER`` and hangs."""
    if any(part.startswith("crash") for part in path.parts):
        os.abort()
    if any(part.startswith("sleep") for part in path.parts):
        Path(os.environ["SLEEP_MARKER"]).touch()
        time.sleep(3600)
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

    def ripen(self) -> int:
        """Advance the chain to the first block whose sync window (local competition) admits every
        commitment made so far, so the finalized block sits exactly on the sync block; returns it."""
        last = max((c.block for c in self.chain.commitments().values()), default=0)
        while sync_window(self.chain.finalized_block(), LOCAL).cutoff < last:
            self.chain.advance(1)
        return self.chain.current_block()

    def next_window(self) -> int:
        """Advance the chain until the finalized block starts a new sync window (local competition);
        returns that sync block."""
        self.chain.advance(1)
        while self.chain.finalized_block() % LOCAL.sync_interval_blocks:
            self.chain.advance(1)
        return self.chain.finalized_block()

    def publish(
        self, hotkey: str, folder: Path, *, salted: bool = False, competition_id: str = "local"
    ) -> ModelId:
        self.chain.register(hotkey)
        namespace = hotkey.replace("_", "-")
        publisher = Publisher(
            chain=LocalChain(self.chain.path, hotkey=hotkey),
            hub=LocalHub(self.root / "hub", user=namespace),
            hotkey=hotkey,
        )
        return publisher.publish(
            folder, repo_id=f"{namespace}/tiny", competition_id=competition_id, use_hotkey_in_hash=salted
        )

    def validator(
        self,
        state_dir: Path | None = None,
        *,
        max_downloads: int = 8,
        source: SampleSource | None = None,
        schedule: tuple[ScheduleEntry, ...] = LOCALNET_SCHEDULE,
        **settings: Any,
    ) -> Validator:
        chain = LocalChain(self.chain.path, hotkey=VALIDATOR)
        # a validator of its own (state_dir given) has its own store too, as on separate machines
        store = DiskModelStore(self.root / "models" if state_dir is None else state_dir / "models")
        state_dir = state_dir or self.root / "state"
        tracker = ModelTracker.load(state_dir / "tracker.json")
        options: dict[str, Any] = {"samples_per_step": 24, "step_pause_s": 0.0, **settings}
        return Validator(
            chain=chain,
            source=source or SyntheticSource("heldout"),
            evaluator=Evaluator(["cpu"], loader=LOADER, timeout_s=600),  # generous: CI machines are shared
            store=store,
            tracker=tracker,
            updater=ModelUpdater(
                chain,
                LocalHub(self.root / "hub"),
                store,
                tracker,
                ModelChecker(),
                schedule=schedule,
                retry_wait_s=0.01,
                max_downloads=max_downloads,
            ),
            cleaner=ModelCleaner(store, tracker, grace_s=3600),
            settings=ValidatorSettings(state_dir=state_dir, schedule=schedule, **options),
        )
