"""The loss terms a config names (``loss.terms``): names, options, weights. No torch: reading a config
must not import it (utils/losses.py computes the terms)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

# name -> the options a term takes, with their defaults
TERM_OPTIONS: dict[str, dict[str, float]] = {
    "ce": {},
    "ohem": {},
    "focal": {"gamma": 2.0},
    "dice": {"smooth": 1.0},
    "lovasz": {},
}


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One term of the sum: ``weight`` x the loss ``name`` with its ``options`` (``TERM_OPTIONS``)."""

    name: str
    weight: float = 1.0
    options: Mapping[str, float] = dataclasses.field(default_factory=dict)


def parse_terms(terms: Sequence[Mapping[str, Any]], key: str = "loss.terms") -> list[LossTerm]:
    """``[{name: ce, weight: 1.0}, {name: focal, weight: 0.5, gamma: 2}]`` -> terms; a bad entry is a
    ``ValueError`` naming it (``key[i]``) and the fix."""
    parsed = []
    for i, term in enumerate(terms):
        where = f"{key}[{i}]"
        if not isinstance(term, Mapping) or "name" not in term:
            raise ValueError(f"{where} = {term!r} must be a mapping with a name, e.g. {{name: ce, weight: 1.0}}")
        name = term["name"]
        if name not in TERM_OPTIONS:
            raise ValueError(f"{where}.name = {name!r} is not a loss; choose from {sorted(TERM_OPTIONS)}")
        options = {k: v for k, v in term.items() if k not in ("name", "weight")}
        unknown = sorted(set(options) - set(TERM_OPTIONS[name]))
        if unknown:
            takes = ", ".join(TERM_OPTIONS[name]) or "no options"
            raise ValueError(f"{where}: {name} has no option {', '.join(unknown)} (it takes: {takes}, weight)")
        values = {"weight": term.get("weight", 1.0), **options}
        for option, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{where}.{option} = {value!r} must be a number >= 0")
        parsed.append(LossTerm(name, float(values["weight"]), {**TERM_OPTIONS[name], **options}))
    if not parsed:
        raise ValueError(f"{key} is empty: list at least one term, e.g. [{{name: ce, weight: 1.0}}], or set it null")
    return parsed
