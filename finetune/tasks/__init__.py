"""Evaluation tasks: the methods that score a model on a task's samples, the task sources, and how
per-task wins combine into one win rate.

The task spec itself (:class:`constants.tasks.EvalTask`) is data in ``constants``. Modules:
``loss_methods`` (response loss, text loss), ``choice`` (multiple choice), ``generation`` and
``rules`` (greedy generation checked by rules), ``tokenize`` (each task's samples to ids),
``sources`` (a task's source from its spec), ``combine`` (wins per task, combined by weight).
This package imports nothing on import, so ``finetune.data`` may use ``finetune.tasks.rules``.
"""
