"""How much the updater reads to verify one downloaded model, before and after the single pass.

    python scripts/benchmark_read.py --gb 2 --repeats 2

Builds a Llama-shaped model of about ``--gb`` GB (bfloat16, random weights, 2 shards, a matching
config) in a temporary folder, then verifies it both ways, interleaved, each from a cold page cache
(``posix_fadvise(DONTNEED)`` on every file, no root needed):

- before: the directory hash, the checker's reading scan (every tensor through safetensors' memory
  map), and the old weights hash (each safetensors file's SHA-256): three reads of the weights;
- after: ``digest_folder`` with the checker's ``StreamScan`` (both hashes and the scan in one read),
  then ``check_folder(scan=...)``, which reads only headers and JSON.

Prints bytes read (``rchar`` of ``/proc/self/io`` for ``read()`` calls, plus the bytes the memory-mapped
scan touches), seconds and seconds per GB of model; the best of ``--repeats``. Deletes the model after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

from constants.competitions import L3, LOCAL, LOCAL_ASSETS
from finetune.checks import ModelChecker
from finetune.safetensors_scan import read_safetensors_header
from model.hashing import digest_folder, hash_directory, hash_file

HIDDEN, INTERMEDIATE, VOCAB, HEADS, KV_HEADS = 2048, 5632, 32000, 16, 4


def build(folder: Path, gb: float) -> int:
    """A Llama model of about ``gb`` GB in two shards with an index; returns its parameter count."""
    kv = HIDDEN * KV_HEADS // HEADS
    per_layer = 2 * HIDDEN * HIDDEN + 2 * kv * HIDDEN + 3 * HIDDEN * INTERMEDIATE  # q, o; k, v; the MLP
    layers = max(1, round((gb * 1e9 / 2 - 2 * VOCAB * HIDDEN) / per_layer))
    config = json.loads((LOCAL_ASSETS / "config.json").read_text())
    config.update(
        hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=layers, vocab_size=VOCAB,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HIDDEN // HEADS,
    )  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (VOCAB, HIDDEN),
        "lm_head.weight": (VOCAB, HIDDEN),
    }
    shapes["model.norm.weight"] = (HIDDEN,)
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,)}
        shapes |= {
            p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
        }
        shapes |= {p + "self_attn.k_proj.weight": (kv, HIDDEN), p + "self_attn.v_proj.weight": (kv, HIDDEN)}
        shapes |= {
            p + "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            p + "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
        }
        shapes |= {p + "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE)}
    names = list(shapes)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2]}
    halves["model-00002-of-00002.safetensors"] = names[len(names) // 2 :]
    generator = torch.Generator().manual_seed(0)
    for shard, shard_names in halves.items():
        tensors = {
            n: (torch.randn(shapes[n], generator=generator) * 0.02).to(torch.bfloat16) for n in shard_names
        }
        save_file(tensors, folder / shard, metadata={"format": "pt"})
    weight_map = {n: shard for shard, shard_names in halves.items() for n in shard_names}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copyfile(LOCAL_ASSETS / name, folder / name)
    return sum(int(torch.Size(s).numel()) for s in shapes.values())


def rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def drop_cache(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:  # clean pages only: the files were written and closed long ago
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def measure(folder: Path, run: Callable[[], int]) -> tuple[float, int]:
    """Seconds and bytes read (``read()`` calls plus what ``run`` reports it memory-mapped)."""
    drop_cache(folder)
    before, start = rchar(), time.perf_counter()
    mapped = run()
    return time.perf_counter() - start, rchar() - before + mapped


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, default=2.0, help="approximate model size")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs of each way")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to build the model (a temporary folder)"
    )
    args = parser.parse_args()
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="benchmark-read-", dir=args.dir))
    try:
        folder = root / "model"
        t0 = time.perf_counter()
        params = build(folder, args.gb)
        size = sum(p.stat().st_size for p in folder.iterdir())
        weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        console.print(
            f"built {params / 1e9:.2f} B parameters, {size / 1e9:.2f} GB in {time.perf_counter() - t0:.0f} s"
        )
        competition = LOCAL.replace(max_params=10**11, max_repo_bytes=10**12, norm_rule=L3.norm_rule)
        checker = ModelChecker()

        def scanned_bytes() -> int:
            total = 0
            for shard in folder.glob("*.safetensors"):
                header = read_safetensors_header(shard, max_header_bytes=10**8)
                total += sum(int(torch.Size(shape).numel()) * 2 for _, shape in header.values())
            return total

        tensor_bytes = scanned_bytes()

        def before() -> int:
            plain = hash_directory(folder)
            checker.check_folder(folder, competition)
            old_weights = [hash_file(p) for p in sorted(folder.glob("*.safetensors"))]
            assert plain and old_weights
            return tensor_bytes  # the reading scan goes through safetensors' memory map

        def after() -> int:
            scan = checker.stream_scan()
            digest = digest_folder(folder, visitor=scan)
            checker.check_folder(folder, competition, scan=scan)
            assert digest.directory_hash == hash_directory_cached
            return 0

        hash_directory_cached = hash_directory(folder)
        results: dict[str, list[tuple[float, int]]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            results["before"].append(measure(folder, before))
            results["after"].append(measure(folder, after))
        table = Table(
            title=f"verifying one {size / 1e9:.2f} GB model ({weights / 1e9:.2f} GB of weights), cold cache"
        )
        for column in ("pipeline", "bytes read", "reads of the weights", "seconds", "s per GB"):
            table.add_column(column, justify="right")
        best = {name: min(runs) for name, runs in results.items()}
        for name, (seconds, read) in best.items():
            table.add_row(
                name,
                f"{read / 1e9:.2f} GB",
                f"{read / weights:.2f}",
                f"{seconds:.1f}",
                f"{seconds / (size / 1e9):.2f}",
            )
        console.print(table)
        console.print(
            f"after / before: {best['after'][1] / best['before'][1]:.2f}x the bytes, "
            f"{best['after'][0] / best['before'][0]:.2f}x the time"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
