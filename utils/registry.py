"""Name lookup and argument checking for the plain ``name -> class`` tables (no registry magic).

Errors carry the config key they come from (``BuildError.key``). A class built from a config may
itself build parts from its own arguments (a head builds its context module from
``context_args``); an error raised there is re-raised by the outer ``construct`` under the outer
key, so the message names the full path: ``model.head_args.ppm.context_args: ...``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class BuildError(ValueError):
    """A config value that does not fit what it selects; ``key`` is its (dotted) config key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message

    def under(self, prefix: str) -> BuildError:
        return BuildError(f"{prefix}.{self.key}" if self.key else prefix, self.message)


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def lookup(table: Mapping[str, T], name: str, key: str, renamed: Mapping[str, str] | None = None) -> T:
    """``table[name]``, or a ``BuildError`` naming the config key, the nearest name and all choices.

    ``renamed`` maps former names to the line that says what replaced them, so an old config fails
    with the new name rather than with "unknown name".
    """
    if renamed and name in renamed:
        raise BuildError(key, renamed[name])
    if name not in table:
        raise BuildError(
            key, f"unknown name {name!r}{did_you_mean(name, list(table)) or '.'} Choose from {sorted(table)}"
        )
    return table[name]


def describe(cls: Callable[..., Any]) -> str:
    """The name an error shows for ``cls``, e.g. ``SPHead``."""
    return getattr(cls, "__name__", repr(cls))


def options_of(cls: Callable[..., Any], num_positional: int) -> list[str]:
    """The keyword arguments a config may set: the parameters after the positional ones."""
    params = list(inspect.signature(cls).parameters.values())[num_positional:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name not in CODE_ARGUMENTS]


# Passed by the builders (models' norms, datasets' transforms), never by a config: not offered as choices.
CODE_ARGUMENTS = ("norm_layer", "transforms")


def check_options(
    cls: Callable[..., Any], key: str, options: Mapping[str, Any], num_positional: int, unknown_hint: str = ""
) -> None:
    """Raise a ``BuildError`` for an option ``cls`` does not take, with a suggestion and the choices;
    ``unknown_hint`` ends the message when no choice is close (so the name is no typo)."""
    choices = options_of(cls, num_positional)
    for name in options:
        if name not in choices:
            close = did_you_mean(name, choices)
            hint = "" if close or not unknown_hint else f"; {unknown_hint}"
            raise BuildError(
                key, f"{describe(cls)} has no argument {name!r}{close or '.'} Its arguments: {choices}{hint}"
            )


def construct(
    cls: Callable[..., T],
    key: str,
    *args: Any,
    options: Mapping[str, Any] | None = None,
    offered: Mapping[str, Any] | None = None,
    unknown_hint: str = "",
    **kwargs: Any,
) -> T:
    """``cls(*args, **kwargs, **options)``, plus each ``offered`` keyword that ``cls`` takes.

    ``options`` come from the config under ``key``; a name ``cls`` does not take, or one the code
    already passes in ``kwargs``, is a ``BuildError`` naming ``key``. ``offered`` keywords (e.g.
    ``norm_layer``) go only to classes whose signature has them, so a module without norms needs
    no unused argument. Plain ``ValueError``/``TypeError`` raised while building become ``BuildError``s
    under ``key``. ``unknown_hint``: see ``check_options``.
    """
    options = dict(options or {})
    reserved = [name for name in options if name in kwargs]
    if reserved:
        raise BuildError(key, f"{reserved} are set by the code that builds it, not by the config; remove them")
    check_options(cls, key, options, len(args), unknown_hint)
    accepted = inspect.signature(cls).parameters
    extra = {name: value for name, value in (offered or {}).items() if name in accepted and name not in options}
    try:
        return cls(*args, **kwargs, **extra, **options)
    except BuildError as err:
        raise err.under(key) from err
    except (ValueError, TypeError) as err:
        if type(err) not in (ValueError, TypeError):
            raise  # a specific error (e.g. DatasetError) already says what is wrong and where
        raise BuildError(key, f"{describe(cls)}: {err}") from err
