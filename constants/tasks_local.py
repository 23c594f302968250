"""The local network's multi-task judging: three tasks a ~1M-parameter model can learn on a CPU.

- ``responses`` (0.5): today's response loss on the held-out synthetic tasks;
- ``choice`` (0.3): multiple choice over the same tasks, the right answer among three wrong ones;
- ``sorting`` (0.2): sort three or four words alphabetically, generated greedily, checked by rule.

Miners cover all three by training on ``SyntheticSource("train", extra_tasks=LOCAL_EXTRA_TASKS)``:
multiple choice rewards the same knowledge as the responses (a lower loss on the right answer), word
sorting needs its own examples. The held-out problems are never in the training split.
"""

from __future__ import annotations

from constants.tasks import EvalTask, Method, SourceSpec, check_tasks

LOCAL_EXTRA_TASKS: tuple[str, ...] = ("word_sorting",)
"""What the synthetic training data adds for these tasks (``SyntheticSource(extra_tasks=...)``)."""

LOCAL_MULTI_TASKS: tuple[EvalTask, ...] = check_tasks(
    (
        EvalTask("responses", SourceSpec("synthetic", {"split": "heldout"}), Method.RESPONSE_LOSS, 0.5),
        EvalTask(
            "choice",
            SourceSpec("synthetic_choice", {"split": "heldout", "choices": 4}),
            Method.MULTIPLE_CHOICE,
            0.3,
            {"samples": 40},
        ),
        EvalTask(
            "sorting",
            SourceSpec("word_sorting", {"split": "heldout", "min_words": 3, "max_words": 4}),
            Method.GENERATION_RULES,
            0.2,
            {"samples": 16, "max_new_tokens": 16},
        ),
    )
)
"""The tasks of a local competition judged three ways (weights sum to 1, checked at import)."""
