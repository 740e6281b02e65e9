"""Name lookup and argument checking for the plain ``name -> class`` tables (no registry magic)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def lookup(table: Mapping[str, T], name: str, key: str) -> T:
    """``table[name]``, or a ``ValueError`` naming the config key, the nearest name and all choices."""
    if name not in table:
        raise ValueError(f"{key}: unknown name {name!r}{_did_you_mean(name, list(table))} Choose from {sorted(table)}")
    return table[name]


def construct(cls: Callable[..., T], key: str, *args: Any, **kwargs: Any) -> T:
    """``cls(*args, **kwargs)``, rejecting keyword arguments ``cls`` does not take with a suggestion.

    ``key`` is the config key the keyword arguments came from, so the error says what to edit.
    """
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # What a config may set: the parameters after those the builder passes positionally.
        options = [n for n in list(params)[len(args) :] if n != "norm_layer"]
        for name in kwargs:
            if name not in params:
                raise ValueError(
                    f"{key}: {getattr(cls, '__name__', cls)} has no argument {name!r}"
                    f"{_did_you_mean(name, options)} Its arguments: {options}"
                )
    return cls(*args, **kwargs)
