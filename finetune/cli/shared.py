"""What the miner's and the validator's command lines share, declared once: the data source, wandb,
the attention kernel, ``--config``; the checks of the network flags; and the start-up check that the
device asked for exists."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from finetune.cli import types
from finetune.cli.options import add_options, option, read_options
from utilities.errors import ConfigError

DATA_SOURCES = ("cortex", "dataset", "synthetic")


@dataclass(frozen=True)
class DataOptions:
    data: str | None = option(
        None,
        "sample source: cortex (Cortex.t on wandb; the default on the real network), dataset (needs "
        "--data.path) or synthetic (generated tasks; the default on --localnet)",
        choices=DATA_SOURCES,
    )
    data_path: str | None = option(
        None,
        "Hugging Face dataset name or JSONL file, for --data dataset",
        flag="--data.path",
        metavar="PATH",
    )

    data_revision: str | None = option(
        None,
        "commit id (40 hex digits) of the Hugging Face dataset --data.path names; a Hub dataset needs "
        "one, so every validator reads the same rows",
        flag="--data.revision",
        type=types.commit_id,
        metavar="COMMIT",
    )

    def kind(self, *, local: bool) -> str:
        return self.data or ("synthetic" if local else "cortex")

    def dataset_options(self) -> dict[str, str | None]:
        """The :class:`~finetune.data.DatasetSource` arguments these flags give (``--data dataset``)."""
        return {"path_or_name": self.data_path, "revision": self.data_revision}


@dataclass(frozen=True)
class WandbOptions:
    wandb_project: str = option(
        "finetune-subnet", "wandb project to log to", flag="--wandb.project", metavar="NAME"
    )
    wandb_entity: str | None = option(
        None,
        "wandb team or user that owns the project (default: your wandb account)",
        flag="--wandb.entity",
        metavar="NAME",
    )
    wandb_off: bool = option(False, "do not log to wandb", flag="--wandb.off")


@dataclass(frozen=True)
class LoadOptions:
    attn_implementation: str = option(
        "sdpa", "attention kernel transformers uses", choices=types.ATTN_IMPLEMENTATIONS
    )


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="read settings from a YAML file (keys are flag names, e.g. 'wallet.name: alice'); "
        "the command line overrides it",
    )


def add_data_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The data flags, in a group ``data`` (returned, for the neuron's own data flags)."""
    group = parser.add_argument_group("data")
    add_options(group, DataOptions)
    return group


def add_wandb_args(parser: argparse.ArgumentParser, *, project: str) -> None:
    add_options(parser.add_argument_group("wandb"), WandbOptions, defaults={"wandb_project": project})


def check_data_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    data = read_options(args, DataOptions)
    if data.data == "dataset" and not data.data_path:
        parser.error("--data dataset needs --data.path (a Hugging Face dataset name or a JSONL file)")
    if data.data_path and data.data != "dataset":
        parser.error("--data.path is read only with --data dataset")
    if data.data_revision and data.data != "dataset":
        parser.error("--data.revision is read only with --data dataset")


def check_network_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks of the network flags (declared in :func:`model.network.add_network_args`), as argparse
    errors: wallet names are plain names, folders are folders."""
    for flag, dest in (("--wallet.name", "wallet_name"), ("--wallet.hotkey", "wallet_hotkey")):
        try:
            types.key_name(str(getattr(args, dest)))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument {flag}: {exc}")
    for flag, dest in (("--localnet", "localnet"), ("--wallet.path", "wallet_path")):
        value = getattr(args, dest, None)
        if value is not None:
            try:
                types.folder(str(value))
            except argparse.ArgumentTypeError as exc:
                parser.error(f"argument {flag}: {exc}")
    if getattr(args, "netuid", 0) < 0:
        parser.error(f"argument --netuid: must be an integer >= 0, got {args.netuid}")
    if not str(getattr(args, "subtensor_network", "x")).strip():
        parser.error("argument --subtensor.network: empty")


def cuda_problem(device: str) -> str | None:
    """Why ``device`` cannot be used on this machine, or None (imports torch)."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            return (
                f"--device {device}: no CUDA device is usable (torch {torch.__version__} is {build}); "
                "use --device cpu or install the CUDA build of torch (see docs)"
            )
        count = torch.cuda.device_count()
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            return f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    if device == "mps" and not torch.backends.mps.is_available():
        return "--device mps: Apple's MPS backend is not available here"
    return None


def require_devices(devices: list[str]) -> None:
    """Refuse, with one clear line, a device that does not exist here (raises :class:`ConfigError`)."""
    for device in devices:
        problem = cuda_problem(device)
        if problem:
            raise ConfigError(problem)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
