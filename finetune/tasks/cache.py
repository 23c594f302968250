"""The key/value cache across transformers versions: 5.x renamed ``past_key_values`` to ``cache``
(the old name still works until 5.40, with a warning on every call)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def cache_of(output: Any) -> Any:
    """The cache a forward returned, under either name (``None`` if it returned none)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def cache_kwargs(model: nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword argument that hands ``cache`` to ``model``'s forward."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    return {"cache": cache} if "cache" in parameters else {"past_key_values": cache}
