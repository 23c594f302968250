"""The validator's command line, and the wiring of its parts from it (used by ``neurons/validator.py``).

Every flag's default, help and value check is a field of one of the option dataclasses below (written
once; the flags shared with the miner live in :mod:`finetune.cli.shared`). Parsing imports nothing heavy:
torch and the engines are imported by :func:`build_validator`, after the command line was checked."""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from constants import BLOCKS_PER_EPOCH, SAMPLES_PER_STEP
from constants.competitions import SMOL, ScheduleEntry
from finetune.cli import types
from finetune.cli.config_file import expand_config
from finetune.cli.options import add_options, option, read_options
from finetune.cli.shared import (
    DataOptions,
    LoadOptions,
    WandbOptions,
    add_config_arg,
    add_data_args,
    add_wandb_args,
    check_data_args,
    check_network_args,
    default_device,
    require_devices,
)
from finetune.evaluation import Evaluator
from model.network import Network, add_network_args

if TYPE_CHECKING:
    from finetune.data import SampleSource
    from finetune.validator.records import MinerStatus, Reporter, StepReport
    from finetune.validator.validator import Validator, ValidatorSettings
    from model.storage.chain.protocol import Chain
    from model.tracker import ModelTracker

logger = logging.getLogger(__name__)

LOCAL_VALIDATOR_STAKE = 1000.0
EVALUATOR_TIMEOUT_S: float = inspect.signature(Evaluator.__init__).parameters["timeout_s"].default


@dataclass(frozen=True)
class EvaluationOptions:
    device: str | None = option(
        None,
        "device(s), comma separated, one evaluation worker each, e.g. cuda:0,cuda:1 (default: cuda if "
        "this machine has it, else cpu)",
        type=types.device_list,
    )
    dtype: str | None = option(
        None, "evaluation dtype (default: bfloat16 on cuda, float32 on cpu)", choices=types.DTYPE_NAMES
    )
    token_budget: int | None = option(
        None, "padded tokens per batch (default: 2048 on cpu, 8192 on gpu)", type=types.positive_int
    )
    eval_timeout_minutes: float = option(
        EVALUATOR_TIMEOUT_S / 60,
        "time limit of one model's evaluation; past it the worker restarts and the model scores inf",
        type=types.positive_float,
    )
    sample_min: int = option(
        5, "models kept per competition from one step to the next", type=types.positive_int
    )
    max_new_per_step: int = option(
        10, "never-evaluated models added to a step (highest chain incentive first)", type=types.positive_int
    )


@dataclass(frozen=True)
class SampleOptions:
    samples_per_step: int = option(
        SAMPLES_PER_STEP,
        "samples every model is scored on in a step (any --data source)",
        type=types.positive_int,
        aliases=("--latest_cortex_samples",),
    )
    latest_cortex_steps: int = option(
        1, "history steps read from each recent Cortex.t run (--data cortex)", type=types.positive_int
    )


@dataclass(frozen=True)
class WeightsOptions:
    blocks_per_epoch: int = option(
        BLOCKS_PER_EPOCH, "blocks between weight settings", type=types.positive_int
    )
    weights_check_seconds: float = option(
        60.0,
        "how often the weights thread checks whether it is time to set weights (at least 1 s)",
        type=types.float_above(1.0, inclusive=True),
    )
    dont_set_weights: bool = option(False, "evaluate but never set weights")
    offline: bool = option(False, "evaluate without setting weights or logging to wandb")


@dataclass(frozen=True)
class StorageOptions:
    model_dir: Path = option(Path("~/.finetune/models"), "folder of the downloaded models", type=types.folder)
    state_dir: Path = option(
        Path("~/.finetune/validator"), "folder of the state files (scores, tracker)", type=types.folder
    )
    max_model_dir_gb: float = option(
        500.0, "disk budget of the model store, in GiB", type=types.positive_float
    )
    grace_period_minutes: float = option(
        120.0, "models no hotkey references are deleted after this long", type=types.non_negative_float
    )
    update_delay_minutes: float = option(
        5.0,
        "pause between passes of the model updater (at least 0.1)",
        type=types.float_above(0.1, inclusive=True),
    )


@dataclass(frozen=True)
class ReportOptions:
    leaderboard: Path | None = option(
        None, "HTML leaderboard file (default: STATE_DIR/leaderboard.html)", type=Path, metavar="FILE"
    )
    leaderboard_port: int | None = option(
        None,
        "serve the leaderboard (and summary.json) read-only over HTTP on this port",
        flag="--leaderboard.port",
        type=types.int_at_least(0),
    )
    leaderboard_host: str = option(
        "127.0.0.1", "address the leaderboard server listens on (0.0.0.0: every interface)",
        flag="--leaderboard.host", metavar="ADDRESS",
    )  # fmt: skip
    max_steps: int | None = option(None, "stop after this many steps (default: run until stopped)",
                                   type=types.positive_int)  # fmt: skip


GROUPS: tuple[tuple[str, type[Any]], ...] = (
    ("evaluation", EvaluationOptions),
    ("samples", SampleOptions),
    ("weights", WeightsOptions),
    ("storage", StorageOptions),
    ("reports", ReportOptions),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune-validator",
        description="Validate the finetune subnet: download miners' models, score them on fresh "
        "samples and set weights. See docs/validator.md.",
    )
    add_config_arg(parser)
    add_network_args(parser)
    for title, cls in GROUPS:
        group = parser.add_argument_group(title)
        add_options(group, cls)
        if cls is EvaluationOptions:
            add_options(group, LoadOptions)
    add_data_args(parser)
    add_wandb_args(parser, project="finetune-subnet")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across flags, as argparse errors (exit status 2)."""
    check_network_args(parser, args)
    check_data_args(parser, args)
    if args.leaderboard is not None and Path(args.leaderboard).expanduser().is_dir():
        parser.error(f"argument --leaderboard: {args.leaderboard} is a folder; give the HTML file's path")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (with the settings of ``--config FILE.yaml`` under it)."""
    parser = build_parser()
    args = parser.parse_args(expand_config(parser, sys.argv[1:] if argv is None else argv))
    check_args(parser, args)
    return args


def build_source(args: argparse.Namespace, *, local: bool) -> SampleSource:
    from finetune.data import make_source

    data = read_options(args, DataOptions)
    kind = data.kind(local=local)
    options: dict[str, Any] = {}
    if kind == "cortex":
        options = {"history_steps": args.latest_cortex_steps}
    elif kind == "dataset":
        options = data.dataset_options()
    elif kind == "synthetic":
        options = {"split": "heldout"}
    return make_source(kind, **options)


def status_source(tracker: ModelTracker, chain: Chain) -> Callable[[StepReport], tuple[MinerStatus, ...]]:
    """The per-miner status list of a step, from the tracker and the metagraph (empty if the chain
    cannot be read now: the page then shows the evaluated models only)."""
    from finetune.validator.records import miner_statuses
    from utilities.errors import FinetuneError

    cache: dict[int, tuple[MinerStatus, ...]] = {}  # one metagraph read per step for every reporter

    def statuses(report: StepReport) -> tuple[MinerStatus, ...]:
        if report.step not in cache:
            try:
                found = miner_statuses(tracker.records(), chain.metagraph(), report)
            except FinetuneError as exc:
                logger.warning("no miner status list this step: %s", exc)
                found = ()
            cache.clear()
            cache[report.step] = found
        return cache[report.step]

    return statuses


def build_reporters(
    args: argparse.Namespace,
    settings: ValidatorSettings,
    *,
    statuses: Callable[[StepReport], tuple[MinerStatus, ...]] | None = None,
) -> list[Reporter]:
    from finetune.validator.leaderboard import LeaderboardReporter
    from finetune.validator.table import TableReporter

    reporters: list[Reporter] = [
        TableReporter(statuses=statuses),
        LeaderboardReporter(leaderboard_path(args), statuses=statuses),
    ]
    wandb = read_options(args, WandbOptions)
    if not (wandb.wandb_off or args.offline):
        from finetune.validator.wandb_log import WandbReporter

        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        reporters.append(WandbReporter(project=wandb.wandb_project, entity=wandb.wandb_entity, config=config))
    return reporters


def leaderboard_path(args: argparse.Namespace) -> Path:
    if args.leaderboard is not None:
        return Path(args.leaderboard).expanduser()
    return Path(args.state_dir).expanduser() / "leaderboard.html"


def prepare_competitions(schedule: tuple[ScheduleEntry, ...]) -> None:
    """Make local assets a scheduled competition needs (the smol model, converted once)."""
    if any(c.id == SMOL.id for entry in schedule for c in entry.competitions):
        from finetune.smol import ensure_smollm2

        ensure_smollm2()  # ConfigError with the install command when the smol extra is missing


def build_validator(args: argparse.Namespace, network: Network) -> Validator:
    """Every part of the validator, wired from the command line and the network's ports."""
    from constants.competitions import MAINNET_SCHEDULE
    from finetune.checks import ModelChecker
    from finetune.validator.validator import Validator, ValidatorSettings
    from model.cleaner import ModelCleaner
    from model.network import local_schedule
    from model.storage.chain.local_chain import LocalChain
    from model.storage.disk.model_store import DiskModelStore
    from model.tracker import ModelTracker
    from model.updater import ModelUpdater

    evaluation = read_options(args, EvaluationOptions)
    devices = (evaluation.device or default_device()).split(",")
    require_devices(devices)  # ConfigError: cuda asked for and absent
    local = network.is_local
    schedule = local_schedule(args) if local else MAINNET_SCHEDULE
    prepare_competitions(schedule)
    if local and network.wallet is not None and isinstance(network.chain, LocalChain):
        hotkey = network.wallet.hotkey.ss58_address
        if network.chain.metagraph().uid_of(hotkey) is None:  # registration is free on the local network
            network.chain.register(hotkey, stake=LOCAL_VALIDATOR_STAKE, validator_permit=True)
            logger.info("registered validator %s on the local network", hotkey)
    storage = read_options(args, StorageOptions)
    weights = read_options(args, WeightsOptions)
    settings = ValidatorSettings(
        state_dir=Path(storage.state_dir).expanduser(),
        schedule=schedule,
        samples_per_step=args.samples_per_step,
        blocks_per_epoch=weights.blocks_per_epoch,
        sample_min=evaluation.sample_min,
        max_new_per_step=evaluation.max_new_per_step,
        set_weights=not (weights.dont_set_weights or weights.offline),
        sync_interval_s=storage.update_delay_minutes * 60,
        weights_check_interval_s=weights.weights_check_seconds,
    )
    store = DiskModelStore(Path(storage.model_dir).expanduser())
    tracker = ModelTracker.load(settings.tracker_file)
    max_store_bytes = int(storage.max_model_dir_gb * 1024**3)
    updater = ModelUpdater(
        network.chain, network.hub, store, tracker, ModelChecker(),
        schedule=schedule, max_store_bytes=max_store_bytes,
    )  # fmt: skip
    cleaner = ModelCleaner(
        store, tracker, grace_s=storage.grace_period_minutes * 60, max_bytes=max_store_bytes
    )
    evaluator = Evaluator(
        devices,
        dtype=evaluation.dtype or ("bfloat16" if devices[0].startswith("cuda") else "float32"),
        timeout_s=evaluation.eval_timeout_minutes * 60,
        token_budget=evaluation.token_budget,
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
        reporters=build_reporters(args, settings, statuses=status_source(tracker, network.chain)),
    )
