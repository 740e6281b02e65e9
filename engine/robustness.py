"""Robustness to common corruptions: mIoU clean and under each corruption at severities 1-5, and its table.

The scoring itself (a dataset, the model, a protocol) is the caller's: ``sweep`` takes it as a
function of the corruption, so that one model load serves every evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from datasets.corruptions import CORRUPTIONS, SEVERITIES, Corruption

KEPT = ("miou", "pixel_accuracy", "mean_accuracy")  # of each evaluation's metrics


def corruption_names(requested: Sequence[str]) -> list[str]:
    """The corruptions ``--corruptions`` names, in the table's order; "all" is every one."""
    if "all" in requested:
        return list(CORRUPTIONS)
    return [name for name in CORRUPTIONS if name in requested]


def sweep(
    score: Callable[[Corruption | None], dict[str, Any]],
    names: Sequence[str],
    seed: int,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Scores clean (``score(None)``) and under every corruption and severity: ``{"clean": metrics,
    "corruptions": {name: {"1": metrics, ..., "5": metrics, "mean_miou": m}}, "mean_corruption_miou":
    mean over the names of their mean_miou, "relative_miou": that / clean mIoU}``."""
    metrics = score(None)
    clean = {key: metrics[key] for key in KEPT}
    log(f"clean: mIoU {100 * clean['miou']:.2f}")
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        row: dict[str, Any] = {}
        for severity in SEVERITIES:
            metrics = score(Corruption(name, severity, seed))
            row[str(severity)] = {key: metrics[key] for key in KEPT}
            log(f"{name} {severity}: mIoU {100 * metrics['miou']:.2f}")
        row["mean_miou"] = sum(row[str(s)]["miou"] for s in SEVERITIES) / len(SEVERITIES)
        table[name] = row
    mean = sum(row["mean_miou"] for row in table.values()) / len(table)
    relative = mean / clean["miou"] if clean["miou"] else float("nan")
    return {"clean": clean, "corruptions": table, "mean_corruption_miou": mean, "relative_miou": relative}


def format_table(results: dict[str, Any]) -> str:
    """Rows: corruptions; columns: mIoU (%) at severities 1-5 and their mean; then clean against corrupted."""
    width = max(len("corruption"), *map(len, results["corruptions"]))
    lines = [f"{'corruption':<{width}}" + "".join(f"{s:>8}" for s in (*map(str, SEVERITIES), "mean"))]
    for name, row in results["corruptions"].items():
        values = [row[str(s)]["miou"] for s in SEVERITIES] + [row["mean_miou"]]
        lines.append(f"{name:<{width}}" + "".join(f"{100 * v:8.2f}" for v in values))
    lines.append(
        f"clean mIoU {100 * results['clean']['miou']:.2f}; mean corruption mIoU "
        f"{100 * results['mean_corruption_miou']:.2f} ({100 * results['relative_miou']:.1f}% of clean)"
    )
    return "\n".join(lines)
