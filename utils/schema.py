"""Checking plain data (parsed YAML, flags) against frozen dataclasses: the config's type checker.

A schema is a tree of frozen dataclasses whose annotations are the types a key accepts: ``int``,
``float``, ``str``, ``bool``, ``Literal[...]``, ``tuple[T, ...]`` / ``tuple[T, U]`` (lists in
YAML), ``dict[str, T]``, unions with ``None``, nested sections, and ``NamedArgs`` (one mapping of
keyword arguments per name). ``bounded`` adds value bounds; a section may add a ``check_fields``
class method for what one key's bounds cannot say (it sees every field's value, defaults
included), and ``switch = True`` (a class variable) lets a bare ``true`` / ``false`` stand for
every field of the section. Every error is one ``ConfigError`` line naming the source (file,
override or flag), the dotted key, the value, what it must be and, for a misspelt key or choice,
the nearest valid one.

Why not a library (pydantic): in its lax mode it turns ``depth: true`` into 1 and ``"5"`` into 5,
which this schema refuses; in strict mode it refuses YAML lists for tuple fields and PyYAML's
``1e-4`` (a string in YAML 1.1) for floats; neither mode suggests the nearest key. Its errors
would need an adapter to become our one-line messages, and it is a compiled dependency for ~200
lines of plain Python.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A config file, override or flag that does not fit the schema; the message says where and how to fix it."""


NamedArgs = dict[str, dict[str, Any]]  # name -> keyword arguments of the class that name selects


def bounded(
    default: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    min_items: int | None = None,
    hint: str = "",
    **metadata: Any,
) -> Any:
    """A field whose value (when not null) must lie in [min, max] and above ``above``: checked at load.

    For a list, every item must; ``min_items``: the fewest items it may have. ``metadata`` is kept
    with the bounds (e.g. the command-line flag that sets the field, ``utils/protocol.py``)."""
    bounds = {"min": min, "max": max, "above": above, "min_items": min_items, "hint": hint}
    return field(default=default, metadata={**bounds, **metadata})


def is_switch(cls: Any) -> bool:
    """A section whose fields are all on/off switches, settable at once with ``true`` / ``false``."""
    return dataclasses.is_dataclass(cls) and getattr(cls, "switch", False)


def expand_switch(value: Any, cls: Any) -> Any:
    """``fast: false`` stands for every field of a switch section set to false."""
    if is_switch(cls) and isinstance(value, bool):
        return {f.name: value for f in dataclasses.fields(cls)}
    return value


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation."""
    return typing.get_type_hints(cls)


def merge(base: dict[str, Any], child: dict[str, Any], cls: type) -> dict[str, Any]:
    """Key-by-key merge where the schema has a nested section (or ``NamedArgs``); replacement everywhere else."""
    types_ = hints(cls)
    out = dict(base)
    for key, value in child.items():
        sub = types_.get(key)
        value = expand_switch(value, sub)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, sub)
        elif sub == NamedArgs and isinstance(value, dict) and isinstance(out.get(key), dict):
            named = dict(out[key])
            for name, args in value.items():
                both = isinstance(args, dict) and isinstance(named.get(name), dict)
                named[name] = {**named[name], **args} if both else args
            out[key] = named
        else:
            out[key] = value
    return out


def set_dotted(raw: dict[str, Any], key: str, value: Any, root: type, source: str) -> None:
    """``raw[a][b][c] = value`` for ``key = "a.b.c"``, creating sections; unknown section keys fail here."""
    node, cls = raw, root
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        types_ = hints(cls) if cls is not None else None
        if types_ is not None and part not in types_:
            unknown_key(".".join(parts[: i + 1]), part, list(types_), source)
        sub = types_.get(part) if types_ is not None else None
        node[part] = expand_switch(node.get(part), sub)
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
        cls = sub if dataclasses.is_dataclass(sub) else None
    last = hints(cls).get(parts[-1]) if cls is not None else None
    if isinstance(node.get(parts[-1]), dict) and is_switch(last) and isinstance(value, dict):
        value = merge(node[parts[-1]], value, last)  # train.fast={strip_conv: false} keeps the other fields
    node[parts[-1]] = expand_switch(value, last)


def unknown_key(path: str, key: str, valid: Sequence[str], source: str) -> typing.NoReturn:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{source}: unknown key {path!r}{hint} Valid keys here: {', '.join(valid)}")


def build(cls: type, data: Any, prefix: str, source: str) -> Any:
    """An instance of the section ``cls`` from a mapping, every key and value checked."""
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "top level"
        if is_switch(cls):
            keys = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"{source}: {where} = {data!r} must be true, false or a mapping of {keys}")
        raise ConfigError(f"{source}: {where} must be a mapping, got {data!r}")
    types_ = hints(cls)
    for key in data:
        if key not in types_:
            unknown_key(prefix + str(key), str(key), list(types_), source)
    values = {key: field_value(cls, key, value, prefix + key, source) for key, value in data.items()}
    if hasattr(cls, "check_fields"):
        cls.check_fields({**defaults(cls), **values}, prefix, source)
    return cls(**values)


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value of the section ``cls``."""
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
    }


def field_value(cls: type, key: str, value: Any, path: str, source: str) -> Any:
    """``value`` checked against the type and the bounds of the field ``key`` of ``cls``."""
    value = coerce(value, hints(cls)[key], path, source)
    check_bounds(cls, key, value, path, source)
    return value


def check_bounds(cls: type, key: str, value: Any, path: str, source: str) -> None:
    """The ``bounded`` limits of the field ``key`` of ``cls`` (nothing to check for null)."""
    bounds = next(f.metadata for f in dataclasses.fields(cls) if f.name == key)
    if value is not None and bounds:
        _check_range(value, bounds, path, source)


def _check_range(value: Any, bounds: Mapping[str, Any], path: str, source: str) -> None:
    hint = f" ({bounds['hint']})" if bounds.get("hint") else ""
    if isinstance(value, tuple):
        fewest = bounds.get("min_items")
        if fewest is not None and len(value) < fewest:
            raise ConfigError(f"{source}: {path} = {list(value)} must have at least {fewest} value(s){hint}")
        for i, item in enumerate(value):
            _check_range(item, bounds, f"{path}[{i}]", source)
        return
    low, high, above = bounds.get("min"), bounds.get("max"), bounds.get("above")
    if (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (above is not None and value <= above)
    ):
        lower = f"> {above}" if above is not None else f">= {low}" if low is not None else ""
        upper = f"<= {high}" if high is not None else ""
        raise ConfigError(f"{source}: {path} = {value!r} must be {' and '.join(filter(None, (lower, upper)))}{hint}")


def coerce(value: Any, tp: Any, path: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; turn lists into tuples where asked."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, expand_switch(value, tp), path + ".", source)
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return coerce(value, option, path, source)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: {path} = {value!r} must be {type_name(tp)}")
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{source}: {path} = {value!r} must be one of {list(args)}{hint}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is Any:
        return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(coerce(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            key_type, value_type = args or (Any, Any)
            for k in value:
                if key_type is str and not isinstance(k, str):
                    raise ConfigError(f"{source}: {path} has key {k!r}; keys must be strings (names)")
            if tp == NamedArgs and not all(isinstance(v, dict) for v in value.values()):
                raise ConfigError(
                    f"{source}: {path} holds one mapping of arguments per name, e.g. "
                    f"{path.rsplit('.', 1)[-1]}: {{name: {{argument: value}}}}; got {value!r}"
                )
            return {k: coerce(v, value_type, f"{path}.{k}", source) for k, v in value.items()}
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads 1e-4 without a dot as a string
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - a schema annotation this function does not know
        raise TypeError(f"unsupported config annotation {tp!r} for {path}")
    raise ConfigError(f"{source}: {path} = {value!r} must be {type_name(tp)}")


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def type_name(tp: Any, plural: bool = False) -> str:
    """``tp`` in words, for error messages: "a list of integers or null"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a, plural) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{'lists' if plural else 'a list'} of {type_name(args[0], plural=True)}"
        return f"a list of {len(args)} values"
    if plural:
        if origin is dict or tp is dict:
            return "mappings"
        return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(tp, str(tp))
    if origin is Literal:
        return f"one of {list(args)}"
    if tp is type(None):
        return "null"
    if origin is dict or tp is dict:
        if args and args[1] is not Any:
            return f"a mapping of names to {type_name(args[1], plural=True)}"
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def to_plain(value: Any) -> Any:
    """A dataclass tree as plain dicts and lists (no tuples), fit for YAML, JSON and checkpoints."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
