"""Chat in the terminal with a model of the network: ``python scripts/chat.py --help``.

Pick the model with ``--uid N``, ``--best`` (the highest-incentive model of ``--competition_id``) or
``--model_dir DIR``; every model is checked with the validator's :class:`ModelChecker` before it is
loaded. Conversations use the competition's chat template; ``--prompt TEXT`` answers once and exits.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import PreTrainedModel, PreTrainedTokenizerBase  # noqa: E402

from constants.competitions import LOCALNET_SCHEDULES, MAINNET_SCHEDULE, Competition  # noqa: E402
from finetune import tokenization  # noqa: E402
from finetune.checks import ModelChecker  # noqa: E402
from finetune.cli.types import DTYPE_NAMES, device  # noqa: E402
from finetune.miner_config import choose_competition, torch_dtype  # noqa: E402
from finetune.mining import best_uid, fetch_model, load_checked, model_of_uid  # noqa: E402
from model.network import add_network_args, connect  # noqa: E402
from utilities.errors import ConfigError, FinetuneError  # noqa: E402

Message = dict[str, str]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/chat.py", description="Chat with a model of the finetune subnet.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    add_network_args(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--uid", type=int, help="the model committed by this uid")
    which.add_argument("--best", action="store_true", help="the competition's highest-incentive model")
    which.add_argument("--model_dir", type=Path, help="a model folder on disk")
    parser.add_argument("--competition_id", default=None, help="competition ('local' by default)")
    parser.add_argument("--prompt", default=None, help="answer this one prompt and exit")
    parser.add_argument("--max_new_tokens", type=int, default=128, help="tokens per answer at most")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: sampled")
    parser.add_argument("--top_p", type=float, default=0.95, help="nucleus sampling (with --temperature)")
    parser.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    return parser


def known_competition(competition_id: str) -> Competition:
    local = [entry for schedule in LOCALNET_SCHEDULES.values() for entry in schedule]
    for entry in (*local, *MAINNET_SCHEDULE):
        for competition in entry.competitions:
            if competition.id == competition_id:
                return competition
    raise ConfigError(f"unknown competition {competition_id!r}")


def answer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    history: list[Message],
    args: argparse.Namespace,
) -> str:
    """The model's reply to ``history`` (the last message is the user's)."""
    encoded: Any
    if tokenization.has_chat_template(tokenizer):
        encoded = tokenizer.apply_chat_template(
            history, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:
        text = "".join(
            f"{tokenization.FALLBACK_USER}{m['content']}{tokenization.FALLBACK_ASSISTANT}"
            if m["role"] == "user"
            else m["content"] + "\n"
            for m in history
        )
        encoded = tokenizer(text, return_tensors="pt")
    inputs: dict[str, torch.Tensor] = {k: v.to(model.device) for k, v in encoded.items()}
    sampled = args.temperature > 0
    extra = {"temperature": args.temperature, "top_p": args.top_p} if sampled else {}
    with torch.inference_mode():
        output = model.generate(  # type: ignore[operator]
            **inputs, max_new_tokens=args.max_new_tokens, do_sample=sampled,
            pad_token_id=tokenizer.pad_token_id, **extra,
        )  # fmt: skip
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return str(tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()


def load(args: argparse.Namespace, download_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    checker, dtype = ModelChecker(), torch_dtype(args.dtype)
    if args.model_dir is not None:
        competition = known_competition(args.competition_id or "local")
        folder = args.model_dir.expanduser()
    else:
        network = connect(args, need_wallet=False)
        competition = choose_competition(args, network)
        uid = best_uid(network.chain, competition.id) if args.best else args.uid
        hotkey, model_id = model_of_uid(network.chain, uid)
        print(f"uid {uid}: {model_id.repo_id}@{model_id.commit}")
        folder = fetch_model(
            network.hub, model_id, download_dir / "model", competition, checker, hotkey=hotkey
        )
    model = load_checked(folder, competition, checker, device=args.device, dtype=dtype)
    return model, tokenization.load_tokenizer(competition)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chat-") as download_dir:
        try:
            model, tokenizer = load(args, Path(download_dir))
        except FinetuneError as exc:
            parser.exit(1, f"chat: {exc}\n")
    if args.prompt is not None:
        print(answer(model, tokenizer, [{"role": "user", "content": args.prompt}], args) or "(empty answer)")
        return 0
    history: list[Message] = []
    print("Type a message (empty line or Ctrl-D to quit, /reset to forget the conversation).")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            return 0
        if not text:
            return 0
        if text == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": text})
        reply = answer(model, tokenizer, history, args)
        history.append({"role": "assistant", "content": reply})
        print(f"model> {reply or '(empty answer)'}")


if __name__ == "__main__":
    sys.exit(main())
