"""What differs between the transformers versions synthdx supports (pyproject: >=4.56,<6).

transformers 5.x renames a forward pass's key/value cache argument `past_key_values` -> `cache`
(the old name is deprecated, to be removed in 5.40) and the output field likewise; 4.x knows only
the old names. Every forward call here that passes or reads a cache goes through these two."""

from __future__ import annotations

import functools
import inspect


@functools.lru_cache(maxsize=None)
def _cache_arg(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def cache_kw(model, cache) -> dict:
    """{name: cache}: the keyword under which `model`'s forward takes a KV cache."""
    return {_cache_arg(type(model)): cache}


def returned_cache(output):
    """The KV cache a forward pass with `use_cache=True` returned."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
