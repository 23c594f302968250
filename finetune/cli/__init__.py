"""The neurons' command lines: option dataclasses that hold every default once, argparse value checks, the
flags both neurons share and ``--config FILE.yaml``.

Nothing here imports torch, transformers or bittensor, so ``--help`` and argument errors answer at once;
the neurons import the heavy libraries only after the command line has been parsed and checked."""
