"""The miner's command line, and the wiring of its parts from it (used by ``neurons/miner.py``)."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import InitProcessGroupKwargs
from rich.console import Console
from rich.table import Table

from constants.competitions import SMOL, Competition, competitions_at
from finetune.data import SampleSource, SyntheticSource, make_source
from finetune.data.heldout import HeldOutSplit
from finetune.mining import Miner, PublishSettings, WandbLog, start_model
from finetune.publishing import Publisher
from finetune.tokenization import load_tokenizer
from finetune.training import TrainConfig, make_accelerator
from model.network import Network, add_network_args
from model.storage.chain.local_chain import LocalChain
from utilities.errors import ConfigError

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FRESH_LR, FINETUNE_LR = 3e-3, 2e-5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurons/miner.py",
        description="Mine the finetune subnet: fine-tune a model on the competition's data, keep the best "
        "one (lowest held-out loss) and publish it (hub, then a commitment on chain). See docs/miner.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_network_args(parser)
    comp = parser.add_argument_group("competition and publishing")
    comp.add_argument(
        "--competition_id", default=None, help="competition to mine (--localnet.competition's on --localnet)"
    )
    comp.add_argument("--list_competitions", action="store_true", help="print the active competitions, exit")
    comp.add_argument("--offline", action="store_true", help="train and keep the best model, never publish")
    comp.add_argument(
        "--hf_repo_id", default=None, help="namespace/name to publish to (needed unless --offline)"
    )
    comp.add_argument(
        "--avg_loss_upload_threshold", type=float, default=0.01,
        help="publish when the held-out loss beats the last published one by this fraction",
    )  # fmt: skip
    comp.add_argument(
        "--use_hotkey_in_hash",
        action="store_true",
        help="salt the committed hash with the hotkey (anti-copy)",
    )
    start = parser.add_argument_group(
        "starting model (at most one; none: a fresh model of the base config, or the pretrained SmolLM2 "
        "for the smol competition)"
    )
    start.add_argument("--load_best", action="store_true", help="the competition's highest-incentive model")
    start.add_argument("--load_uid", type=int, default=None, help="the model committed by this uid")
    start.add_argument("--load_model_dir", type=Path, default=None, help="a model folder on disk (checked)")
    start.add_argument("--load_repo", default=None, help="a hub repository, as namespace/name@revision")
    train = parser.add_argument_group("training")
    train.add_argument("--model_dir", type=Path, default=Path("~/.finetune/miner"), help="best model, state")
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    train.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights while training")
    train.add_argument("--save_dtype", choices=sorted(DTYPES), default="bfloat16", help="weights published")
    train.add_argument("--attn_implementation", default="sdpa", help="attention kernel (sdpa, eager)")
    train.add_argument("--num_epochs", type=int, default=-1, help="epochs to train, -1 for ever")
    train.add_argument(
        "--lr", type=float, default=None, help=f"learning rate (default {FRESH_LR} fresh, {FINETUNE_LR} else)"
    )
    train.add_argument("--accumulation_steps", type=int, default=4, help="micro-batches per optimizer step")
    train.add_argument("--micro_batch_size", type=int, default=4, help="samples per forward, per process")
    train.add_argument("--sequence_length", type=int, default=None, help="(default: the competition's)")
    train.add_argument("--eval_samples", type=int, default=256, help="held-out samples per evaluation")
    train.add_argument("--eval_every", type=int, default=0, help="evaluate every N steps (0: each epoch)")
    train.add_argument("--warmup_steps", type=int, default=0, help="linear learning-rate warmup steps")
    train.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay")
    train.add_argument("--lora_rank", type=int, default=None, help="train a LoRA adapter of this rank")
    train.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations")
    train.add_argument("--seed", type=int, default=0, help="seed of the fresh model and of the samples")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", choices=("cortex", "dataset", "synthetic"), default=None,
        help="sample source (default: cortex on the real network, synthetic on --localnet)",
    )  # fmt: skip
    data.add_argument("--data.path", dest="data_path", default=None, help="dataset name or JSONL file")
    data.add_argument("--cortex_steps", type=int, default=5, help="history steps read from each Cortex.t run")
    data.add_argument("--cortex_samples_per_epoch", type=int, default=4096, help="training samples per epoch")
    report = parser.add_argument_group("wandb")
    report.add_argument("--wandb.project", dest="wandb_project", default="finetune-subnet-miner")
    report.add_argument("--wandb.entity", dest="wandb_entity", default=None)
    report.add_argument("--wandb.off", dest="wandb_off", action="store_true", help="do not log to wandb")
    return parser


def hub_user(args: argparse.Namespace) -> str | None:
    """The namespace the miner writes to (``--hf_repo_id``'s), if any."""
    return str(args.hf_repo_id).split("/")[0] if args.hf_repo_id else None


def check_args(args: argparse.Namespace) -> None:
    """Checks that need no network (run before connecting)."""
    if not args.offline and not args.hf_repo_id and not args.list_competitions:
        raise ConfigError("--hf_repo_id is required to publish (or pass --offline)")
    if (
        sum(
            [args.load_best, args.load_uid is not None, args.load_model_dir is not None, bool(args.load_repo)]
        )
        > 1
    ):
        raise ConfigError("choose one of --load_best, --load_uid, --load_model_dir, --load_repo")


def active_competitions(network: Network) -> tuple[Competition, ...]:
    return competitions_at(network.chain.current_block(), schedule=network.schedule)


def competitions_table(competitions: tuple[Competition, ...]) -> Table:
    table = Table(title="Active competitions")
    for column in ("id", "architectures", "max params", "tokenizer", "reward share"):
        table.add_column(column, overflow="fold")
    for c in competitions:
        table.add_row(
            c.id, ", ".join(c.architectures), f"{c.max_params:,}", c.tokenizer, f"{c.reward_share:.0%}"
        )
    return table


def print_competitions(network: Network, console: Console | None = None) -> None:
    (console or Console()).print(competitions_table(active_competitions(network)))


def choose_competition(args: argparse.Namespace, network: Network) -> Competition:
    """``--competition_id`` among those active now (by default on the local network, the one
    ``--localnet.competition`` names)."""
    active = {c.id: c for c in active_competitions(network)}
    default = getattr(args, "localnet_competition", None) or "local"
    wanted = args.competition_id or (default if network.is_local else None)
    if wanted is None or wanted not in active:
        raise ConfigError(f"choose --competition_id among the active competitions {sorted(active)}")
    return active[wanted]


def build_sources(args: argparse.Namespace, *, local: bool) -> tuple[SampleSource, SampleSource]:
    """(training source, held-out source): disjoint sides of the same data. The synthetic source has its own
    split; Cortex.t and datasets are split by prompt (:class:`~finetune.data.heldout.HeldOutSplit`), so no
    held-out prompt is ever trained on."""
    kind = args.data or ("synthetic" if local else "cortex")
    if kind == "synthetic":
        return SyntheticSource("train"), SyntheticSource("heldout")
    options: dict[str, Any] = {"history_steps": args.cortex_steps} if kind == "cortex" else {}
    if kind == "dataset":
        options = {"path_or_name": args.data_path}
    source = make_source(kind, **options)
    return HeldOutSplit(source, split="train"), HeldOutSplit(source, split="heldout")


def train_config(args: argparse.Namespace, competition: Competition, *, fresh: bool) -> TrainConfig:
    return TrainConfig(
        lr=args.lr if args.lr is not None else (FRESH_LR if fresh else FINETUNE_LR),
        num_epochs=None if args.num_epochs < 0 else args.num_epochs,
        samples_per_epoch=args.cortex_samples_per_epoch,
        accumulation_steps=args.accumulation_steps,
        micro_batch_size=args.micro_batch_size,
        eval_samples=args.eval_samples,
        eval_every=args.eval_every,
        seed=args.seed,
        sequence_length=args.sequence_length or competition.sequence_length,
        gradient_checkpointing=args.gradient_checkpointing,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        lora_rank=args.lora_rank,
        save_dtype=DTYPES[args.save_dtype],
    )


def build_miner(args: argparse.Namespace, network: Network) -> Miner:
    """Every part of the miner, wired from the command line and the network's ports."""
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
    model_dir = Path(args.model_dir).expanduser()
    config = train_config(args, competition, fresh=fresh)
    # other processes wait while the main one publishes (an upload can take long)
    wait = InitProcessGroupKwargs(timeout=timedelta(hours=2))
    accelerator = make_accelerator(config, cpu=args.device == "cpu", kwargs_handlers=[wait])
    model = start_model(
        competition, chain=network.chain, hub=network.hub,
        download_dir=model_dir / "downloads" / f"start-{accelerator.process_index}",
        load_best=args.load_best, load_uid=args.load_uid, load_model_dir=load_model_dir,
        load_repo=args.load_repo, seed=args.seed, device="cpu", dtype=DTYPES[args.dtype],
        attn_implementation=args.attn_implementation,
    )  # fmt: skip
    train_source, heldout_source = build_sources(args, local=network.is_local)
    wandb_log = None
    if not args.wandb_off and accelerator.is_main_process:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        wandb_log = WandbLog(project=args.wandb_project, entity=args.wandb_entity, config=settings)
    return Miner(
        model=model, tokenizer=load_tokenizer(competition), train_source=train_source,
        heldout_source=heldout_source, config=config, model_dir=model_dir, accelerator=accelerator,
        publish=PublishSettings(
            publisher=publisher, repo_id=args.hf_repo_id, competition_id=competition.id,
            threshold=args.avg_loss_upload_threshold, use_hotkey_in_hash=args.use_hotkey_in_hash,
        ),
        wandb_log=wandb_log,
    )  # fmt: skip
