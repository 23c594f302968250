"""Forward keyword arguments across models and transformers versions: the key/value cache (5.x renamed
``past_key_values`` to ``cache``; the old name still works until 5.40, with a warning on every call)
and ``logits_to_keep``."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def cache_of(output: Any) -> Any:
    """The cache a forward returned, under either name (``None`` if it returned none)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def accepts(model: nn.Module, name: str) -> bool:
    """Whether ``model``'s forward takes the keyword argument ``name``."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def cache_kwargs(model: nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword argument that hands ``cache`` to ``model``'s forward."""
    return {"cache": cache} if accepts(model, "cache") else {"past_key_values": cache}


def keep_logits(model: nn.Module, positions: Any) -> dict[str, Any]:
    """``logits_to_keep`` (the last ``n`` positions for an int, these columns of every row for a 1-D
    tensor) when the forward takes it, so the LM head runs only where logits are needed; else none."""
    return {"logits_to_keep": positions} if accepts(model, "logits_to_keep") else {}
