"""Subnet constants: identity, version, hyperparameters of the mechanism (design.md §4).

Competitions live in :mod:`constants.competitions`; a new competition or a schedule change is a data
change there.
"""

from __future__ import annotations

__version__ = "1.0.0"


def _spec_version(version: str) -> int:
    major, minor, patch = (int(part) for part in version.split(".")[:3])
    return 1000 * major + 10 * minor + patch


SPEC_VERSION = _spec_version(__version__)
"""Version key sent with weights: 1000 * major + 10 * minor + patch."""

SUBNET_UID = 6
"""The netuid of this subnet on the main network (finney)."""

SEQUENCE_LENGTH = 2048
MAX_REPO_BYTES = 15 * 1024**3
"""Largest model repository a validator will download (read from hub metadata before downloading)."""

TIMESTAMP_EPSILON = 0.01
"""Loss advantage of the earlier-committed model in a pairwise comparison."""

TEMPERATURE = 0.08
"""Softmax temperature turning win rates into weights."""

ALPHA = 0.9
"""Moving-average factor: ``scores = ALPHA * scores + (1 - ALPHA) * new_weights``."""

SAMPLES_PER_STEP = 400
BLOCKS_PER_EPOCH = 100
"""Weights are set every this many blocks."""

SYNC_INTERVAL_BLOCKS = 180
"""Default sync interval of a competition (~36 min at 12 s a block, the successor subnet's cadence):
each step's samples are seeded from the latest finalized multiple of it, shared by every validator."""

EVAL_DELAY_BLOCKS = 1200
"""Default evaluation delay of a competition (~4 h, the successor subnet's ``eval_block_delay``): a
model takes part only once committed this many blocks before the sync block, so every validator has
seen and downloaded it by then."""

CORTEX_WANDB_PROJECT = "cortex-t/multi-modality"
CORTEX_WANDB_RUN_TYPE = "validator"
CORTEX_MAX_UIDS = 256
