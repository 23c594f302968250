"""The miner's command line, and the wiring of its parts from it (used by ``neurons/miner.py``).

Every flag's default, help and value check is a field of one of the option dataclasses below (written
once; the flags shared with the validator live in :mod:`finetune.cli.shared`). Parsing imports nothing
heavy: torch, accelerate and the training recipe are imported by :func:`build_miner`."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from constants.competitions import SMOL, Competition, ScheduleEntry, competitions_at
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
from model.network import Network, add_network_args
from utilities.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from rich.console import Console
    from rich.table import Table

    from finetune.data import SampleSource
    from finetune.mining import Miner
    from finetune.training import TrainConfig

logger = logging.getLogger(__name__)

FRESH_LR, FINETUNE_LR = 3e-3, 2e-5
CHAIN_ANSWER_S = 5.0
"""How long ``--list_competitions`` waits for the chain's current block before printing without it."""


@dataclass(frozen=True)
class CompetitionOptions:
    competition_id: str | None = option(
        None,
        "competition to mine (default on --localnet: --localnet.competition's; required otherwise)",
        metavar="ID",
    )
    list_competitions: bool = option(False, "print the schedule of competitions (active ones marked), exit")
    offline: bool = option(False, "train and keep the best model, never publish")
    hf_repo_id: str | None = option(
        None, "namespace/name of the repository to publish to (required unless --offline)", type=types.repo_id
    )
    avg_loss_upload_threshold: float = option(
        0.01,
        "publish when the held-out loss beats the last published one by this fraction",
        type=types.non_negative_float,
    )
    use_hotkey_in_hash: bool = option(False, "salt the committed hash with the hotkey (anti-copy)")


@dataclass(frozen=True)
class StartOptions:
    load_best: bool = option(False, "the competition's highest-incentive model")
    load_uid: int | None = option(None, "the model committed by this uid", type=types.non_negative_int)
    load_model_dir: Path | None = option(
        None, "a model folder on disk (checked like any other)", type=Path, metavar="DIR"
    )
    load_repo: str | None = option(
        None, "a hub repository, as namespace/name[@revision]", type=types.repo_ref
    )


@dataclass(frozen=True)
class TrainOptions:
    model_dir: Path = option(
        Path("~/.finetune/miner"), "folder of the best model, checkpoints and downloads", type=types.folder
    )
    device: str | None = option(None, "cpu, cuda or cuda:N (default: cuda if present, else cpu)",
                                type=types.device)  # fmt: skip
    dtype: str = option("float32", "weights while training", choices=types.DTYPE_NAMES)
    save_dtype: str = option("bfloat16", "weights of the published model", choices=types.DTYPE_NAMES)
    num_epochs: int = option(-1, "epochs to train; -1 trains until stopped", type=types.epochs)
    lr: float | None = option(
        None, f"learning rate (default: {FRESH_LR:g} for a fresh model, {FINETUNE_LR:g} otherwise)",
        type=types.positive_float,
    )  # fmt: skip
    accumulation_steps: int = option(4, "micro-batches per optimizer step", type=types.positive_int)
    micro_batch_size: int = option(4, "samples per forward pass, per process", type=types.positive_int)
    sequence_length: int | None = option(
        None, "tokens per sample at most (default: the competition's)", type=types.positive_int
    )
    eval_samples: int = option(256, "held-out samples per evaluation", type=types.positive_int)
    eval_every: int = option(0, "evaluate every N optimizer steps (0: after each epoch)",
                             type=types.non_negative_int)  # fmt: skip
    warmup_steps: int = option(0, "linear learning-rate warmup steps", type=types.non_negative_int)
    weight_decay: float = option(0.0, "AdamW weight decay", type=types.non_negative_float)
    lora_rank: int | None = option(
        None, "train a LoRA adapter of this rank (needs peft)", type=types.positive_int
    )
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    seed: int = option(0, "seed of a fresh model and of the samples", type=types.non_negative_int)


@dataclass(frozen=True)
class MinerDataOptions:
    samples_per_epoch: int = option(
        4096, "training samples per epoch (any --data source)", type=types.positive_int,
        aliases=("--cortex_samples_per_epoch",),
    )  # fmt: skip
    cortex_steps: int = option(
        5, "history steps read from each recent Cortex.t run (--data cortex)", type=types.positive_int
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune-miner",
        description="Mine the finetune subnet: fine-tune a model on the competition's data, keep the best "
        "one (lowest held-out loss) and publish it (hub, then a commitment on chain). See docs/miner.md.",
    )
    add_config_arg(parser)
    add_network_args(parser)
    add_options(parser.add_argument_group("competition and publishing"), CompetitionOptions)
    add_options(
        parser.add_argument_group(
            "starting model",
            "at most one; none: a fresh model of the competition's base config (the pretrained SmolLM2 for "
            "the smol competition)",
        ),
        StartOptions,
    )
    train = parser.add_argument_group("training")
    add_options(train, TrainOptions)
    add_options(train, LoadOptions)
    add_options(add_data_args(parser), MinerDataOptions)
    add_wandb_args(parser, project="finetune-subnet-miner")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across flags that need no network, as argparse errors (exit status 2)."""
    check_network_args(parser, args)
    check_data_args(parser, args)
    if not args.offline and not args.hf_repo_id and not args.list_competitions:
        parser.error("--hf_repo_id is required to publish (or pass --offline)")
    start = read_options(args, StartOptions)
    chosen = [
        start.load_best,
        start.load_uid is not None,
        start.load_model_dir is not None,
        bool(start.load_repo),
    ]
    if sum(chosen) > 1:
        parser.error("choose one of --load_best, --load_uid, --load_model_dir, --load_repo")
    if start.load_model_dir is not None and not Path(start.load_model_dir).expanduser().is_dir():
        parser.error(f"argument --load_model_dir: no such folder: {start.load_model_dir}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (with the settings of ``--config FILE.yaml`` under it)."""
    parser = build_parser()
    args = parser.parse_args(expand_config(parser, sys.argv[1:] if argv is None else argv))
    check_args(parser, args)
    return args


def hub_user(args: argparse.Namespace) -> str | None:
    """The namespace the miner writes to (``--hf_repo_id``'s), if any."""
    return str(args.hf_repo_id).split("/")[0] if args.hf_repo_id else None


def torch_dtype(name: str) -> torch.dtype:
    import torch

    if name not in types.DTYPE_NAMES:
        raise ConfigError(f"unknown dtype {name!r}: use one of {', '.join(types.DTYPE_NAMES)}")
    dtype: torch.dtype = getattr(torch, name)
    return dtype


def active_competitions(network: Network) -> tuple[Competition, ...]:
    return competitions_at(network.chain.current_block(), schedule=network.schedule)


def current_block_within(args: argparse.Namespace, timeout_s: float = CHAIN_ANSWER_S) -> int | None:
    """The chain's current block, or None when it does not answer within ``timeout_s`` (never raises)."""
    from model.network import connect
    from utilities.errors import FinetuneError

    if args.localnet is not None:  # a file on this machine: it always answers, no thread needed
        from model.storage.chain.local_chain import LocalChain

        folder = Path(args.localnet).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return LocalChain(folder / "chain.sqlite", netuid=args.netuid).current_block()
    answer: list[int] = []

    def ask() -> None:
        try:
            answer.append(connect(args, need_wallet=False).chain.current_block())
        except (FinetuneError, OSError, RuntimeError, ValueError) as exc:
            logger.info("the chain did not answer: %s", exc)

    thread = threading.Thread(target=ask, name="list-competitions", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        logger.info("the chain did not answer within %.0f s", timeout_s)
    return answer[0] if answer else None


def schedule_table(schedule: Sequence[ScheduleEntry], block: int | None) -> Table:
    """Every entry of the schedule with its start block; with ``block``, the entry active then is marked."""
    from rich.table import Table

    active_start = (
        max((e.start_block for e in schedule if e.start_block <= block), default=None)
        if block is not None
        else None
    )
    title = "Competitions by block" + (f" (current block {block})" if block is not None else "")
    table = Table(title=title)
    for column in ("from block", "id", "architectures", "max params", "tokenizer", "reward share", "active"):
        table.add_column(column, overflow="fold")
    for entry in sorted(schedule, key=lambda e: e.start_block):
        active = "" if block is None else ("yes" if entry.start_block == active_start else "")
        for c in entry.competitions:
            table.add_row(
                str(entry.start_block), c.id, ", ".join(c.architectures), f"{c.max_params:,}", c.tokenizer,
                f"{c.reward_share:.0%}", active,
            )  # fmt: skip
    return table


def print_schedule(args: argparse.Namespace, console: Console | None = None) -> bool:
    """``--list_competitions``: the whole schedule of this network, marked when the chain answers.
    Returns whether the chain answered."""
    from rich.console import Console

    from constants.competitions import MAINNET_SCHEDULE
    from model.network import local_schedule

    schedule = local_schedule(args) if args.localnet is not None else MAINNET_SCHEDULE
    block = current_block_within(args)
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    console.print(schedule_table(schedule, block))
    if block is None:
        console.print("the chain did not answer: active competitions are not marked")
    return block is not None


def choose_competition(args: argparse.Namespace, network: Network) -> Competition:
    """``--competition_id`` among those active now (by default on the local network, the one
    ``--localnet.competition`` names)."""
    active = {c.id: c for c in active_competitions(network)}
    default = getattr(args, "localnet_competition", None) or "local"
    wanted = args.competition_id or (default if network.is_local else None)
    if wanted is None or wanted not in active:
        raise ConfigError(f"choose --competition_id among the active competitions {sorted(active)}")
    return active[wanted]


def training_extras(competition: Competition | None) -> tuple[str, ...]:
    """The synthetic tasks a competition's evaluation tasks judge beyond the responses (a task whose
    source kind is one of ``SyntheticSource``'s extra tasks, e.g. ``word_sorting``): what the miner's
    synthetic training data mixes in."""
    from finetune.data.synthetic import EXTRA_TASKS

    tasks = () if competition is None else competition.tasks
    return tuple(dict.fromkeys(t.source.kind for t in tasks if t.source.kind in EXTRA_TASKS))


def build_sources(
    args: argparse.Namespace, *, local: bool, competition: Competition | None = None
) -> tuple[SampleSource, SampleSource]:
    """(training source, held-out source): disjoint sides of the same data. The synthetic source has its own
    split (and covers the synthetic tasks ``competition`` judges: :func:`training_extras`); Cortex.t and
    datasets are split by prompt (:class:`~finetune.data.heldout.HeldOutSplit`), so no held-out prompt is
    ever trained on."""
    from finetune.data import SyntheticSource, make_source
    from finetune.data.heldout import HeldOutSplit

    data = read_options(args, DataOptions)
    kind = data.kind(local=local)
    if kind == "synthetic":
        extras = training_extras(competition)
        return SyntheticSource("train", extra_tasks=extras), SyntheticSource("heldout", extra_tasks=extras)
    options: dict[str, Any] = {"history_steps": args.cortex_steps} if kind == "cortex" else {}
    if kind == "dataset":
        options = data.dataset_options()
    source = make_source(kind, **options)
    return HeldOutSplit(source, split="train"), HeldOutSplit(source, split="heldout")


def train_config(args: argparse.Namespace, competition: Competition, *, fresh: bool) -> TrainConfig:
    from finetune.training import TrainConfig

    train = read_options(args, TrainOptions)
    return TrainConfig(
        lr=train.lr if train.lr is not None else (FRESH_LR if fresh else FINETUNE_LR),
        num_epochs=None if train.num_epochs < 0 else train.num_epochs,
        samples_per_epoch=args.samples_per_epoch,
        accumulation_steps=train.accumulation_steps,
        micro_batch_size=train.micro_batch_size,
        eval_samples=train.eval_samples,
        eval_every=train.eval_every,
        seed=train.seed,
        sequence_length=train.sequence_length or competition.sequence_length,
        gradient_checkpointing=train.gradient_checkpointing,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_steps,
        lora_rank=train.lora_rank,
        save_dtype=torch_dtype(train.save_dtype),
    )


def check_load_uid(network: Network, uid: int | None) -> None:
    """``--load_uid`` must name a uid of the subnet (a clear error instead of a traceback)."""
    if uid is None:
        return
    graph = network.chain.metagraph()
    if uid not in {int(u) for u in graph.uids}:
        top = f"0 to {int(max(graph.uids))}" if graph.n else "none"
        raise ConfigError(
            f"--load_uid {uid}: no such uid on this subnet at block {graph.block} (uids: {top})"
        )


def build_miner(args: argparse.Namespace, network: Network) -> Miner:
    """Every part of the miner, wired from the command line and the network's ports."""
    from datetime import timedelta

    from accelerate import InitProcessGroupKwargs

    from finetune.mining import Miner, PublishSettings, WandbLog, start_model
    from finetune.publishing import Publisher
    from finetune.tokenization import load_tokenizer
    from finetune.training import make_accelerator
    from model.storage.chain.local_chain import LocalChain

    train = read_options(args, TrainOptions)
    device = train.device or default_device()
    require_devices([device])  # ConfigError: cuda asked for and absent
    check_load_uid(network, args.load_uid)
    competition = choose_competition(args, network)
    fresh = not (args.load_best or args.load_uid is not None or args.load_model_dir or args.load_repo)
    load_model_dir = args.load_model_dir
    if competition.id == SMOL.id:
        from finetune.smol import ensure_smollm2

        base = ensure_smollm2()  # ConfigError with the install command when the smol extra is missing
        if fresh:  # a miner fine-tunes the real pretrained model, never a random init of its shape
            load_model_dir, fresh = base, False
    hotkey = network.wallet.hotkey.ss58_address if network.wallet is not None else ""
    publisher = None
    if not args.offline:
        publisher = Publisher(chain=network.chain, hub=network.hub, hotkey=hotkey)
        publisher.check_access(args.hf_repo_id, competition.id)  # name, token, write access: before training
        if isinstance(network.chain, LocalChain) and hotkey:
            network.chain.register(hotkey)  # registration is free on the local network
    model_dir = Path(train.model_dir).expanduser()
    config = train_config(args, competition, fresh=fresh)
    # other processes wait while the main one publishes (an upload can take long)
    wait = InitProcessGroupKwargs(timeout=timedelta(hours=2))
    accelerator = make_accelerator(config, cpu=device == "cpu", kwargs_handlers=[wait])
    model = start_model(
        competition, chain=network.chain, hub=network.hub,
        download_dir=model_dir / "downloads" / f"start-{accelerator.process_index}",
        load_best=args.load_best, load_uid=args.load_uid, load_model_dir=load_model_dir,
        load_repo=args.load_repo, seed=train.seed, device="cpu", dtype=torch_dtype(train.dtype),
        attn_implementation=args.attn_implementation,
    )  # fmt: skip
    train_source, heldout_source = build_sources(args, local=network.is_local, competition=competition)
    wandb = read_options(args, WandbOptions)
    wandb_log = None
    if not wandb.wandb_off and accelerator.is_main_process:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        wandb_log = WandbLog(project=wandb.wandb_project, entity=wandb.wandb_entity, config=settings)
    return Miner(
        model=model, tokenizer=load_tokenizer(competition), train_source=train_source,
        heldout_source=heldout_source, config=config, model_dir=model_dir, accelerator=accelerator,
        publish=PublishSettings(
            publisher=publisher, repo_id=args.hf_repo_id, competition_id=competition.id,
            threshold=args.avg_loss_upload_threshold, use_hotkey_in_hash=args.use_hotkey_in_hash,
        ),
        wandb_log=wandb_log,
    )  # fmt: skip
