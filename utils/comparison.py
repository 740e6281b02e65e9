"""Compare runs with confidence: bootstrap intervals, a paired permutation test and a verdict.

Every statistic is the one a benchmark reports: per class, the summed intersections over the summed
unions of the images (never a mean of per-image IoUs, which weights a small image like a large one
and is not the number in any table), averaged over classes in the run's convention (utils/records.py).

- Interval of a run's mIoU: a percentile bootstrap over images. A sample draws N image indices with
  replacement, ``rng.integers(0, N, size=N)``, and recomputes the dataset-level mIoU of those images.
- Paired: every run of a sample uses the same drawn images. Two models are scored on the same
  images, and the images' difficulty (which moves both runs alike) cancels from the difference;
  unpaired intervals would be far wider than the uncertainty of the difference.
- p-value of run B against the baseline A: a paired permutation test. Under "no difference" the
  two runs' records of an image are exchangeable; each permutation swaps them per image with
  probability 1/2 and recomputes the difference of the dataset mIoUs;
  p = (1 + #{|permuted difference| >= |observed|}) / (1 + permutations), two-sided.
- Verdict at level L: "<B> better" when the interval of B - A lies above 0 and p < 1 - L,
  "<A> better" when it lies below 0 and p < 1 - L, else "within noise".
- Seeds: a row may hold several runs (seeds) of one configuration, scored on the same images. Its
  statistic is the mean over seeds of their mIoUs, and its interval comes from a hierarchical
  bootstrap (Saravanan, Berman & Sober 2020, "Application of the hierarchical bootstrap to
  multi-level data in neuroscience", Neurons, Behavior, Data analysis and Theory): each sample first
  draws every row's seeds with replacement, ``rng.integers(0, S, size=S)`` (rows of one seed draw
  nothing), then the images, once for all rows and seeds (they are crossed with the seeds, and
  the comparison stays paired). With one seed per row it is the plain bootstrap, draw for draw.
  The permutation test then pairs A's j-th seed with B's j-th seed; rows with other numbers of
  seeds than A's get no p-value, and their verdict rests on the interval alone.

Deterministic given the seed: ``numpy.random.default_rng(seed)`` draws the bootstrap, and
``default_rng((seed, r))`` the permutations of row r. numpy only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .records import Records, load_records, miou, records_path

CHUNK = 256  # bootstrap samples (or permutations) per matrix product


@dataclass(frozen=True)
class Row:
    """One row of a comparison: a label and the records of its seeds (one or more)."""

    label: str
    seeds: tuple[Records, ...]

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Intersections and unions, (S, N, C) float64: integers, exact under any order of summation."""
        return (
            np.stack([s.intersection for s in self.seeds]).astype(np.float64),
            np.stack([s.union for s in self.seeds]).astype(np.float64),
        )

    @property
    def over_all_classes(self) -> bool:
        return self.seeds[0].over_all_classes


def record_files(argument: str) -> list[Path]:
    """The records files one command-line argument names: a records .npz, an eval.py results JSON (its
    records sit beside it), a folder (its .npz files, else its subfolders' val_records.npz), or several
    of these joined by commas (the seeds of one row)."""
    files: list[Path] = []
    for part in filter(None, argument.split(",")):
        path = Path(part)
        if path.is_dir():
            found = sorted(path.glob("*.npz")) or sorted(path.glob("*/val_records.npz"))
            if not found:
                raise FileNotFoundError(f"{path}: a folder without records (*.npz, or */val_records.npz)")
            files += found
        elif path.suffix == ".json":
            beside = records_path(path)
            if not beside.is_file():
                raise FileNotFoundError(
                    f"{path}: no records beside it ({beside.name}); evaluate again with this version of eval.py"
                )
            files.append(beside)
        else:
            files.append(path)
    if not files:
        raise ValueError(f"{argument!r}: names no records file")
    return files


def load_rows(arguments: Sequence[str], labels: Sequence[str] | None = None) -> list[Row]:
    if labels is not None and len(labels) != len(arguments):
        raise ValueError(f"--labels: {len(labels)} label(s) for {len(arguments)} runs; give one per run")
    rows = []
    for i, argument in enumerate(arguments):
        files = record_files(argument)
        label = labels[i] if labels else (files[0].parent.name if files[0].name == "val_records.npz" else files[0].stem)
        rows.append(Row(label.removesuffix(".records"), tuple(load_records(f) for f in files)))
    check_comparable(rows)
    return rows


def check_comparable(rows: Sequence[Row]) -> None:
    """Refuse records of other images, classes or mIoU conventions, naming both files."""
    first = rows[0].seeds[0]
    if len(first.names) == 0:
        raise ValueError(f"{first.path}: records of no image; evaluate on a split with labels")
    for other in (s for row in rows for s in row.seeds):
        where = f"{first.path} and {other.path}"
        if len(first.names) != len(other.names) or not np.array_equal(first.names, other.names):
            raise ValueError(
                f"{where} score different images ({len(first.names)} and {len(other.names)}); compare runs "
                "evaluated on the same split (and the same --max-images)"
            )
        if first.classes != other.classes:
            raise ValueError(f"{where} have different classes; compare runs of the same dataset")
        if first.over_all_classes != other.over_all_classes:
            raise ValueError(f"{where} average class IoUs into mIoU differently; compare runs of the same dataset")


def _statistics(intersection: np.ndarray, union: np.ndarray, over_all_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    """mIoU and class IoUs of summed counts (..., S, C), averaged over the seeds axis."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every seed of a sample: NaN
        iou = np.where(union > 0, intersection / union, np.nan)
        return miou(intersection, union, over_all_classes).mean(-1), np.nanmean(iou, axis=-2)


def bootstrap(rows: Sequence[Row], samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchical, paired bootstrap: mIoU (samples, R) and class IoUs (samples, R, C) of every row."""
    counts = [row.counts() for row in rows]
    n, c = counts[0][0].shape[1:]
    mious, ious = np.empty((samples, len(rows))), np.empty((samples, len(rows), c))
    for start in range(0, samples, CHUNK):
        size = min(CHUNK, samples - start)
        picks, weights = [], np.zeros((size, n))
        for b in range(size):  # draws in a fixed order: every row's seeds, then the images
            picks.append([rng.integers(0, len(r.seeds), size=len(r.seeds)) if len(r.seeds) > 1 else [0] for r in rows])
            weights[b] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        for r, (row, (inter, union)) in enumerate(zip(rows, counts)):
            summed_i = _weighted_sum(weights, inter)  # (size, S, C)
            summed_u = _weighted_sum(weights, union)
            chosen = np.array([p[r] for p in picks])  # (size, S)
            taken = np.arange(size)[:, None]
            m, i = _statistics(summed_i[taken, chosen], summed_u[taken, chosen], row.over_all_classes)
            mious[start : start + size, r], ious[start : start + size, r] = m, i
    return mious, ious


def _weighted_sum(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B, N) weights times (S, N, C) counts -> (B, S, C): a matrix product (BLAS) of integer-valued floats,
    exact in any order of summation while the sums stay below 2**53 (pixel counts are far below)."""
    return np.matmul(weights, counts).transpose(1, 0, 2)


def permutation_p(a: Row, b: Row, permutations: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of the paired permutation test of b against a (seed j of a paired with seed j of b)."""
    if len(a.seeds) != len(b.seeds):
        raise ValueError(
            f"{a.label} has {len(a.seeds)} seed(s) and {b.label} {len(b.seeds)}: the paired permutation test pairs "
            "them seed by seed; give every row the same number of seeds"
        )
    (ia, ua), (ib, ub) = a.counts(), b.counts()
    observed = _difference(a, b, ia.sum(1), ua.sum(1), ib.sum(1), ub.sum(1))
    n = ia.shape[1]
    extreme = 0
    for start in range(0, permutations, CHUNK):
        size = min(CHUNK, permutations - start)
        swaps = np.stack([rng.integers(0, 2, size=n) for _ in range(size)]).astype(np.float64)  # (size, N)
        moved_i = _weighted_sum(swaps, ib - ia)  # what the swapped images move from a to b
        moved_u = _weighted_sum(swaps, ub - ua)
        diff = _difference(a, b, ia.sum(1) + moved_i, ua.sum(1) + moved_u, ib.sum(1) - moved_i, ub.sum(1) - moved_u)
        extreme += int(np.sum(np.abs(diff) >= abs(observed) * (1 - 1e-12)))  # ties up to rounding count
    return (1 + extreme) / (1 + permutations)


def _difference(a: Row, b: Row, ia, ua, ib, ub) -> np.ndarray:
    return _statistics(ib, ub, b.over_all_classes)[0] - _statistics(ia, ua, a.over_all_classes)[0]


def compare(
    rows: Sequence[Row], *, level: float = 0.95, samples: int = 10000, seed: int = 0, per_class: bool = False
) -> dict:
    """Every row's mIoU with its interval; every row against the first: difference, interval, p, verdict."""
    if not 0 < level < 1:
        raise ValueError(f"--level {level}: must lie between 0 and 1 (e.g. 0.95)")
    if samples < 1:
        raise ValueError(f"--samples {samples}: must be >= 1 (e.g. 10000)")
    mious, ious = bootstrap(rows, samples, np.random.default_rng(seed))
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    points = [_statistics(*(x.sum(1) for x in row.counts()), row.over_all_classes) for row in rows]
    classes = rows[0].seeds[0].classes
    result = {"level": level, "samples": samples, "seed": seed, "images": len(rows[0].seeds[0].names), "runs": []}
    for r, row in enumerate(rows):
        entry = {
            "label": row.label, "files": [str(s.path) for s in row.seeds], "protocols": [s.protocol for s in row.seeds],
            "miou": float(points[r][0]), "ci": _interval(mious[:, r], q),
        }  # fmt: skip
        if per_class:  # every class IoU with its interval (None: the class is absent from this run's images)
            entry["per_class"] = {
                name: {"iou": _float(points[r][1][c]), "ci": _interval(ious[:, r, c], q)}
                for c, name in enumerate(classes)
            }
        if r > 0:
            diff = float(points[r][0] - points[0][0])
            paired = len(row.seeds) == len(rows[0].seeds)
            p = permutation_p(rows[0], row, samples, np.random.default_rng((seed, r))) if paired else None
            low, high = _interval(mious[:, r] - mious[:, 0], q)
            significant = p is None or p < 1 - level
            better = low is not None and significant and (low > 0 or high < 0)  # None: mIoU undefined throughout
            verdict = f"{row.label if low > 0 else rows[0].label} better" if better else "within noise"
            entry["versus_first"] = {"difference": diff, "ci": [low, high], "p": p, "verdict": verdict}
            if per_class:
                entry["versus_first"]["per_class"] = {
                    name: {"difference": _float(points[r][1][c] - points[0][1][c]), "ci": _interval(
                        ious[:, r, c] - ious[:, 0, c], q)}
                    for c, name in enumerate(classes)
                }  # fmt: skip
        result["runs"].append(entry)
    return result


def _interval(values: np.ndarray, q: list[float]) -> list[float | None]:
    values = values[~np.isnan(values)]
    return [float(v) for v in np.quantile(values, q)] if values.size else [None, None]


def _float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def format_comparison(result: dict, per_class: bool = False) -> str:
    """The table of ``compare``'s result, in percent with 2 decimals."""
    level = f"{100 * result['level']:g}%"
    width = max(3, *(len(run["label"]) for run in result["runs"]))
    lines = [
        f"{result['images']} images, {result['samples']} paired bootstrap samples and permutations, {level} "
        f"intervals, seed {result['seed']}; differences against {result['runs'][0]['label']}",
        f"{'run':<{width}}  {'mIoU':>6}  {level + ' CI':>16}  {'diff':>6}  {level + ' CI':>16}  {'p':>7}  verdict",
    ]
    for run in result["runs"]:
        line = f"{run['label']:<{width}}  {_pc(run['miou'])}  {_ci(run['ci'])}"
        if "versus_first" in run:
            v = run["versus_first"]
            p = "    n/a" if v["p"] is None else f"{v['p']:7.4f}"
            line += f"  {_pc(v['difference'])}  {_ci(v['ci'])}  {p}  {v['verdict']}"
        lines.append(line)
    if per_class:
        for run in result["runs"][1:]:
            lines.append(f"\nper class, {run['label']} - {result['runs'][0]['label']}:")
            per = run["versus_first"]["per_class"]
            name_width = max(map(len, per))
            for name, v in per.items():
                lines.append(f"{name:<{name_width}}  {_pc(v['difference'])}  {_ci(v['ci'])}")
    return "\n".join(lines)


def _pc(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def _ci(ci: list[float | None]) -> str:
    return f"[{_pc(ci[0])}, {_pc(ci[1])}]"
