"""A training run's folder: what it already holds, what it still owes, and its first writes.

``work_dirs/<config path>/`` holds ``config.yaml``, ``train.log``, ``tb/``, the checkpoints
(``iter_*.pth``, ``last.pth``; ``utils/checkpoint.py`` writes them atomically), ``best.pth``
and ``val_metrics.json`` (the newest validation, written after ``best.pth``: its presence marks
that validation as done). A fresh run never overwrites another run's files, and a finished run is
left exactly as it is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from utils.checkpoint import existing_run, remove_stale_temporaries, save_atomic
from utils.config import changed_keys, config_to_dict, save_config
from utils.logging import log_to_file


def work_dir_of(cfg: Any, config_path: str) -> Path:
    """``train.work_dir``, or work_dirs/<path of the config under configs/, without .yaml>."""
    if cfg.train.work_dir:
        return Path(cfg.train.work_dir)
    path = Path(config_path).resolve().with_suffix("")
    parts = path.parts
    return (
        Path("work_dirs", *parts[parts.index("configs") + 1 :]) if "configs" in parts else Path("work_dirs", path.name)
    )


def refuse_existing_run(work_dir: Path, cfg: Any) -> None:
    """A fresh run would overwrite the run ``work_dir`` holds: refused, with the fix.

    ``--resume auto`` continues that run, so it is offered only when the model is the same; a
    changed model (a module swapped on the command line) needs a folder of its own.
    """
    held = existing_run(work_dir)
    if not held:
        return
    changed = _model_changes(work_dir, cfg)
    if changed:
        raise ValueError(
            f"{work_dir} already holds a run ({held}) of another model ({'; '.join(changed)}); give this one a "
            f"folder of its own: train.work_dir={work_dir}_<name>"
        )
    raise ValueError(
        f"{work_dir} already holds a run ({held}); resume it with --resume auto, or pick another train.work_dir=..."
    )


def _model_changes(work_dir: Path, cfg: Any) -> list[str]:
    """``key: old -> new`` for the model keys where ``cfg`` differs from the run's ``config.yaml``."""
    try:
        saved = yaml.safe_load((work_dir / "config.yaml").read_text())["model"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []  # no readable config: nothing to compare
    new = config_to_dict(cfg.model)
    return [f"model.{key}: {_get(saved, key)} -> {_get(new, key)}" for key in changed_keys(saved, new)]


def _get(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


# Keys whose change alters what a resumed run means: its data, its classes, what an iteration is and
# how many there are. Resuming with other values needs --allow-config-change.
MEANING_KEYS = (
    "data.dataset", "data.root", "data.dataset_args", "data.train_split", "data.val_split", "model.num_classes",
    "train.max_iters", "train.epochs", "train.batch_size",
)  # fmt: skip


def check_resume_config(saved: dict[str, Any], cfg: Any, allow: bool) -> tuple[list[str], bool]:
    """Compare the config a run resumes with to the one its checkpoint was written with.

    Refuses a change of ``MEANING_KEYS`` unless ``allow``; returns the log's notes (every changed key
    as ``key: old -> new``) and whether the data changed (then ``best.pth``, chosen on the old
    validation data, is replaced by the next validation). Model changes fail when the weights load.
    """
    new = config_to_dict(cfg)
    keys = changed_keys(saved, new)
    described = {key: f"{key}: {_get(saved, key)} -> {_get(new, key)}" for key in keys}
    meaning = [key for key in keys if any(key == m or key.startswith(m + ".") for m in MEANING_KEYS)]
    if meaning and not allow:
        raise ValueError(
            f"the run was trained with other values of keys that change what it means "
            f"({'; '.join(described[k] for k in meaning)}): resume with its config, or add --allow-config-change "
            "to go on with the new values"
        )
    notes = [f"the config changed since the checkpoint was written: {'; '.join(described.values())}"] if keys else []
    data_changed = any(key.startswith("data.") for key in meaning)
    if data_changed:
        notes.append("the data changed: best.pth, chosen on the old validation data, gives way to the next validation")
    return notes, data_changed


def last_validation(work_dir: Path) -> dict | None:
    """The metrics of the newest validation (``val_metrics.json``), or None."""
    path = work_dir / "val_metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def best_saved_miou(work_dir: Path, fallback: float) -> float:
    """The mIoU stored in ``best.pth``: the checkpoint's copy is older when a run died between
    writing ``best.pth`` and its next checkpoint, and would let a worse model replace it."""
    path = work_dir / "best.pth"
    if not path.is_file():
        return fallback
    try:  # mmap: reads the one number, not the weights
        return float(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["miou"])
    except Exception:  # an unreadable best.pth is replaced by the next better model
        return fallback


def finished_message(work_dir: Path, state: dict | None, max_iters: int) -> str | None:
    """What to say when the run is complete (trained and validated at its last iteration), else None."""
    validated = last_validation(work_dir) if state is not None else None
    if state is None or state["iter"] < max_iters or not validated or validated["iter"] < max_iters:
        return None
    best = best_saved_miou(work_dir, state["best_miou"])  # last.pth was saved before the final validation
    return (
        f"{work_dir}: the run is complete (iteration {state['iter']} of {max_iters}; final mIoU "
        f"{100 * (validated['miou'] or 0):.2f}%, best {100 * best:.2f}% in best.pth). Nothing "
        "to do; to train longer, raise train.max_iters and add --allow-config-change."
    )


def start_writing(work_dir: Path, cfg: Any, log: logging.Logger) -> None:
    """The run's first writes, once every check has passed: ``train.log`` (with the lines logged so
    far), the removal of temporary files a kill left, and ``config.yaml``."""
    log_to_file(log, work_dir)
    for path in remove_stale_temporaries(work_dir):  # left by writes a kill interrupted
        log.info("removed %s (an interrupted write)", path)
    save_config(cfg, work_dir / "config.yaml")


def save_best(
    work_dir: Path, model_state: dict, iteration: int, miou: float, cfg: Any, labels: dict[str, Any] | None = None
) -> None:
    """``best.pth``: the weights of the best validation so far, with their iteration, mIoU and config, and
    ``labels`` (train.py: the ``"classes"`` and ``"palette"`` the model predicts)."""
    best = {"model": model_state, "iter": iteration, "miou": miou, "config": config_to_dict(cfg), **(labels or {})}
    save_atomic(best, work_dir / "best.pth")
