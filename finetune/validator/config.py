"""The validator's command line, and the wiring of its parts from it (used by ``neurons/validator.py``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from constants import BLOCKS_PER_EPOCH, SAMPLES_PER_STEP
from constants.competitions import MAINNET_SCHEDULE, SMOL, ScheduleEntry
from finetune.checks import ModelChecker
from finetune.data import SampleSource, make_source
from finetune.evaluation import Evaluator
from finetune.validator.records import Reporter
from finetune.validator.validator import Validator, ValidatorSettings
from model.cleaner import ModelCleaner
from model.network import Network, add_network_args, local_schedule
from model.storage.chain.local_chain import LocalChain
from model.storage.disk.model_store import DiskModelStore
from model.tracker import ModelTracker
from model.updater import ModelUpdater

logger = logging.getLogger(__name__)

LOCAL_VALIDATOR_STAKE = 1000.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurons/validator.py",
        description="Validate the finetune subnet: download miners' models, score them on fresh "
        "samples and set weights.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_network_args(parser)
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--device", default=None, help="device(s), comma separated, one worker each (cuda if present)"
    )
    evaluation.add_argument(
        "--dtype", default=None, help="dtype of evaluation (bfloat16 on cuda, float32 on cpu)"
    )
    evaluation.add_argument("--attn_implementation", default="sdpa", help="attention kernel (sdpa, eager)")
    evaluation.add_argument(
        "--token_budget", type=int, default=None, help="padded tokens per batch (2048 on cpu, 8192 on gpu)"
    )
    evaluation.add_argument(
        "--eval_timeout_minutes", type=float, default=20.0, help="time limit for one model's evaluation"
    )
    evaluation.add_argument("--sample_min", type=int, default=5, help="models kept per competition")
    evaluation.add_argument(
        "--max_new_per_step", type=int, default=10, help="never-evaluated models added to a step"
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", choices=("cortex", "dataset", "synthetic"), default=None,
        help="sample source (default: cortex on the real network, synthetic on --localnet)",
    )  # fmt: skip
    data.add_argument("--data.path", dest="data_path", default=None, help="dataset name or JSONL file")
    data.add_argument(
        "--latest_cortex_steps", type=int, default=1, help="history steps read from each Cortex.t run"
    )
    data.add_argument("--latest_cortex_samples", type=int, default=SAMPLES_PER_STEP, help="samples per step")
    weights = parser.add_argument_group("weights")
    weights.add_argument(
        "--blocks_per_epoch", type=int, default=BLOCKS_PER_EPOCH, help="blocks between weight settings"
    )
    weights.add_argument(
        "--weights_check_seconds", type=float, default=60.0, help="how often the weights thread looks"
    )
    weights.add_argument("--dont_set_weights", action="store_true", help="evaluate but never set weights")
    weights.add_argument(
        "--offline", action="store_true", help="evaluate without setting weights or logging to wandb"
    )
    storage = parser.add_argument_group("storage")
    storage.add_argument("--model_dir", type=Path, default=Path("~/.finetune/models"), help="model store")
    storage.add_argument("--state_dir", type=Path, default=Path("~/.finetune/validator"), help="state files")
    storage.add_argument("--max_model_dir_gb", type=float, default=500.0, help="disk budget of the store")
    storage.add_argument(
        "--grace_period_minutes", type=float, default=120.0, help="keep unreferenced models this long"
    )
    storage.add_argument(
        "--update_delay_minutes", type=float, default=5.0, help="pause between passes of the model updater"
    )
    storage.add_argument(
        "--min_model_age_blocks", type=int, default=10, help="models younger than this wait a pass"
    )
    report = parser.add_argument_group("reports")
    report.add_argument("--wandb.project", dest="wandb_project", default="finetune-subnet")
    report.add_argument("--wandb.entity", dest="wandb_entity", default=None)
    report.add_argument("--wandb.off", dest="wandb_off", action="store_true", help="do not log to wandb")
    report.add_argument("--leaderboard", type=Path, default=None, help="HTML file (default: STATE_DIR/...)")
    return parser


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_source(args: argparse.Namespace, *, local: bool) -> SampleSource:
    kind = args.data or ("synthetic" if local else "cortex")
    options: dict[str, Any] = {}
    if kind == "cortex":
        options = {"history_steps": args.latest_cortex_steps}
    elif kind == "dataset":
        options = {"path_or_name": args.data_path}
    elif kind == "synthetic":
        options = {"split": "heldout"}
    return make_source(kind, **options)


def build_reporters(args: argparse.Namespace, settings: ValidatorSettings) -> list[Reporter]:
    from finetune.validator.leaderboard import LeaderboardReporter
    from finetune.validator.table import TableReporter

    reporters: list[Reporter] = [
        TableReporter(),
        LeaderboardReporter(args.leaderboard or settings.state_dir / "leaderboard.html"),
    ]
    if not (args.wandb_off or args.offline):
        from finetune.validator.wandb_log import WandbReporter

        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        reporters.append(WandbReporter(project=args.wandb_project, entity=args.wandb_entity, config=config))
    return reporters


def prepare_competitions(schedule: tuple[ScheduleEntry, ...]) -> None:
    """Make local assets a scheduled competition needs (the smol model, converted once)."""
    if any(c.id == SMOL.id for entry in schedule for c in entry.competitions):
        from finetune.smol import ensure_smollm2

        ensure_smollm2()  # ConfigError with the install command when the smol extra is missing


def build_validator(args: argparse.Namespace, network: Network) -> Validator:
    """Every part of the validator, wired from the command line and the network's ports."""
    local = network.is_local
    schedule = local_schedule(args) if local else MAINNET_SCHEDULE
    prepare_competitions(schedule)
    if local and network.wallet is not None and isinstance(network.chain, LocalChain):
        hotkey = network.wallet.hotkey.ss58_address
        if network.chain.metagraph().uid_of(hotkey) is None:  # registration is free on the local network
            network.chain.register(hotkey, stake=LOCAL_VALIDATOR_STAKE, validator_permit=True)
            logger.info("registered validator %s on the local network", hotkey)
    state_dir = Path(args.state_dir).expanduser()
    settings = ValidatorSettings(
        state_dir=state_dir,
        schedule=schedule,
        samples_per_step=args.latest_cortex_samples,
        blocks_per_epoch=args.blocks_per_epoch,
        sample_min=args.sample_min,
        max_new_per_step=args.max_new_per_step,
        set_weights=not (args.dont_set_weights or args.offline),
        sync_interval_s=args.update_delay_minutes * 60,
        weights_check_interval_s=args.weights_check_seconds,
    )
    store = DiskModelStore(Path(args.model_dir).expanduser())
    tracker = ModelTracker.load(settings.tracker_file)
    max_store_bytes = int(args.max_model_dir_gb * 1024**3)
    updater = ModelUpdater(
        network.chain, network.hub, store, tracker, ModelChecker(),
        schedule=schedule, min_age_blocks=args.min_model_age_blocks, max_store_bytes=max_store_bytes,
    )  # fmt: skip
    cleaner = ModelCleaner(
        store, tracker, grace_s=args.grace_period_minutes * 60, max_bytes=max_store_bytes
    )
    devices = [d.strip() for d in (args.device or default_device()).split(",") if d.strip()]
    evaluator = Evaluator(
        devices,
        dtype=args.dtype or ("bfloat16" if devices[0].startswith("cuda") else "float32"),
        timeout_s=args.eval_timeout_minutes * 60,
        token_budget=args.token_budget,
        loader_kwargs={"attn_implementation": args.attn_implementation},
    )
    return Validator(
        chain=network.chain,
        source=build_source(args, local=local),
        evaluator=evaluator,
        store=store,
        tracker=tracker,
        updater=updater,
        cleaner=cleaner,
        settings=settings,
        reporters=build_reporters(args, settings),
    )
