"""utils/comparison.py and scripts/compare_runs.py: the bootstrap and the permutation test against
naive loops over images and classes, the verdicts of identical and uniformly better runs, the seeds."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from conftest import ROOT
from utils.comparison import Row, bootstrap, compare, load_rows, permutation_p, record_files
from utils.records import Records, load_records, records_path, save_records

sys.path.insert(0, str(ROOT / "scripts"))
CLASSES = ("road", "car", "sky", "pole")


def _records(seed: int, n: int = 9, over_all_classes: bool = False, better: int = 0, path=None) -> Records:
    """Random per-image counts; class 3 occurs in few images, so that resamples often lack it."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(50, 400, size=(n, 4))
    gt[:, 3] = np.where(rng.random(n) < 0.3, rng.integers(1, 20, size=n), 0)
    intersection = (gt * rng.uniform(0.3, 0.9, size=(n, 4))).astype(np.int64)
    union = gt + rng.integers(0, 60, size=(n, 4)) * (gt > 0)
    intersection = np.minimum(intersection + better * (gt > 0), gt)
    return Records(
        names=np.array([f"img{i}" for i in range(n)]), indices=np.arange(n), intersection=intersection, union=union,
        gt_pixels=gt, classes=CLASSES, over_all_classes=over_all_classes, protocol="spnet_whole_s1_flip", path=path,
    )  # fmt: skip


def _naive_miou(inter: list[int], union: list[int], over_all_classes: bool) -> float:
    ious = [i / u if u > 0 else (0.0 if over_all_classes else None) for i, u in zip(inter, union)]
    ious = [x for x in ious if x is not None]
    return sum(ious) / len(ious)


def _naive_sums(records: Records, images) -> tuple[list[int], list[int]]:
    classes = range(len(records.classes))
    inter = [sum(int(records.intersection[i][c]) for i in images) for c in classes]
    union = [sum(int(records.union[i][c]) for i in images) for c in classes]
    return inter, union


def _naive_bootstrap(rows: list[list[Records]], samples: int, seed: int) -> list[list[float]]:
    """Per sample: every row's seeds drawn (rows of one seed draw nothing), then the images; a row's value
    is the mean over its drawn seeds of their dataset mIoU, from summed counts."""
    rng = np.random.default_rng(seed)
    n = len(rows[0][0].names)
    out = []
    for _ in range(samples):
        picks = [list(rng.integers(0, len(row), size=len(row))) if len(row) > 1 else [0] for row in rows]
        images = list(rng.integers(0, n, size=n))
        values = []
        for row, pick in zip(rows, picks):
            mious = [_naive_miou(*_naive_sums(row[s], images), row[s].over_all_classes) for s in pick]
            values.append(sum(mious) / len(mious))
        out.append(values)
    return out


@pytest.mark.parametrize("seeds, over_all_classes", [((1, 1), False), ((1, 1), True), ((3, 3), False), ((3, 2), False)])
def test_bootstrap_equals_a_naive_resampling_loop(seeds, over_all_classes):
    """Exactly: the same draws, sums of integers, class IoUs added in class order. With one seed per row
    this is the plain bootstrap; with seeds, the hierarchical one."""
    groups = [[_records(10 * r + s, over_all_classes=over_all_classes) for s in range(k)] for r, k in enumerate(seeds)]
    rows = [Row(f"r{r}", tuple(g)) for r, g in enumerate(groups)]
    mious, _ = bootstrap(rows, 300, np.random.default_rng(5))
    assert mious.tolist() == _naive_bootstrap(groups, 300, 5)
    result = compare(rows, samples=300, seed=5, level=0.9)
    naive = np.array(_naive_bootstrap(groups, 300, 5))
    assert result["runs"][1]["ci"] == np.quantile(naive[:, 1], [0.05, 0.95]).tolist()
    assert result["runs"][1]["versus_first"]["ci"] == np.quantile(naive[:, 1] - naive[:, 0], [0.05, 0.95]).tolist()
    point = [np.mean([r.miou() for r in g]) for g in groups]
    assert result["runs"][1]["versus_first"]["difference"] == pytest.approx(point[1] - point[0], abs=1e-15)
    assert (result["runs"][1]["versus_first"]["p"] is None) == (seeds[0] != seeds[1])  # pairs seed with seed


def test_one_seed_per_row_is_the_plain_bootstrap_draw_for_draw():
    """A row of one seed draws no seed: the rows' values do not depend on the other rows' seed counts."""
    a, b = _records(1), _records(2)
    alone, _ = bootstrap([Row("a", (a,)), Row("b", (b,))], 200, np.random.default_rng(0))
    assert alone[:, 0].tolist() == [x[0] for x in _naive_bootstrap([[a]], 200, 0)]


@pytest.mark.parametrize("seeds", [1, 2])
def test_permutation_p_equals_a_naive_loop(seeds):
    a = [_records(s) for s in range(seeds)]
    b = [_records(s + 5, better=4) for s in range(seeds)]
    rng = np.random.default_rng(3)
    n = len(a[0].names)

    def mean_miou(runs: list[Records]) -> float:
        return sum(_naive_miou(*_naive_sums(run, range(n)), False) for run in runs) / seeds

    def take(x: Records, y: Records, swap: np.ndarray) -> Records:  # x's records, y's where swapped
        pick = swap[:, None] == 1
        return replace(
            x, intersection=np.where(pick, y.intersection, x.intersection), union=np.where(pick, y.union, x.union)
        )

    observed = mean_miou(b) - mean_miou(a)
    extreme = 0
    for _ in range(400):
        swap = rng.integers(0, 2, size=n)
        new_a, new_b = [take(x, y, swap) for x, y in zip(a, b)], [take(y, x, swap) for x, y in zip(a, b)]
        extreme += abs(mean_miou(new_b) - mean_miou(new_a)) >= abs(observed) * (1 - 1e-12)
    p = permutation_p(Row("a", tuple(a)), Row("b", tuple(b)), 400, np.random.default_rng(3))
    assert p == (1 + extreme) / 401
    assert 0 < p < 1


def test_identical_runs_differ_by_exactly_zero_within_noise():
    a = _records(7)
    result = compare([Row("A", (a,)), Row("B", (a,))], samples=500)
    versus = result["runs"][1]["versus_first"]
    assert versus["difference"] == 0 and versus["ci"] == [0, 0] and versus["p"] == 1
    assert versus["verdict"] == "within noise"
    assert result["runs"][0]["ci"] == result["runs"][1]["ci"] and result["runs"][0]["miou"] == a.miou()


def test_a_run_better_on_every_image_is_better_with_a_small_p():
    a = _records(7, n=20)
    b = _records(7, n=20, better=30)
    assert (b.intersection >= a.intersection).all() and (b.intersection > a.intersection).any(1).all()
    result = compare([Row("A", (a,)), Row("B", (b,))], samples=2000, per_class=True)
    versus = result["runs"][1]["versus_first"]
    assert versus["verdict"] == "B better" and versus["p"] < 0.01 and versus["ci"][0] > 0
    assert versus["difference"] == pytest.approx(b.miou() - a.miou(), abs=1e-15)
    assert all(v["difference"] is None or v["difference"] >= 0 for v in versus["per_class"].values())
    backwards = compare([Row("B", (b,)), Row("A", (a,))], samples=2000)["runs"][1]["versus_first"]
    assert backwards["verdict"] == "B better" and backwards["ci"][1] < 0


def test_records_round_trip_and_the_files_an_argument_names(tmp_path):
    a = _records(1)
    path = save_records(tmp_path / "eval_val_x.records.npz", a)
    back = load_records(path)
    for key in ("names", "indices", "intersection", "union", "gt_pixels"):
        assert np.array_equal(getattr(back, key), getattr(a, key)) and getattr(back, key).dtype == getattr(a, key).dtype
    assert (back.classes, back.over_all_classes, back.protocol) == (CLASSES, False, "spnet_whole_s1_flip")
    assert back.confusion is None  # a file written without the whole matrix (older versions)
    confusion = np.arange(16, dtype=np.int64).reshape(4, 4)
    with_matrix = load_records(save_records(tmp_path / "m.records.npz", replace(a, confusion=confusion)))
    assert np.array_equal(with_matrix.confusion, confusion) and with_matrix.confusion.dtype == np.int64
    assert records_path(tmp_path / "eval_val_x.json") == path
    assert record_files(str(tmp_path / "eval_val_x.json")) == [path]
    for seed in (0, 1):
        save_records(tmp_path / f"seed{seed}" / "val_records.npz", a)
    runs = [tmp_path / "seed0" / "val_records.npz", tmp_path / "seed1" / "val_records.npz"]
    assert record_files(f"{runs[0]},{runs[1]}") == runs
    assert record_files(str(tmp_path / "seed0")) == [runs[0]]
    rows = load_rows([str(path), f"{runs[0]},{runs[1]}"])
    assert [r.label for r in rows] == ["eval_val_x", "seed0"] and len(rows[1].seeds) == 2


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(names=np.array([f"other{i}" for i in range(9)])), "score different images"),
        (dict(classes=("a", "b", "c", "d")), "have different classes"),
        (dict(over_all_classes=True), "average class IoUs into mIoU differently"),
    ],
)
def test_records_of_other_images_classes_or_conventions_are_refused(tmp_path, capsys, change, words):
    import compare_runs

    from utils.cli import run

    a = save_records(tmp_path / "a.records.npz", _records(1))
    b = save_records(tmp_path / "b.records.npz", replace(_records(2), **change))
    assert run(compare_runs.main, [str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {a} and {b} {words}") and err.count("\n") == 1


def test_missing_records_beside_a_json_is_one_line_naming_it(tmp_path, capsys):
    import compare_runs

    from utils.cli import run

    (tmp_path / "eval_val.json").write_text("{}")
    assert run(compare_runs.main, [str(tmp_path / "eval_val.json"), str(tmp_path / "eval_val.json")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'eval_val.json'}: no records beside it (eval_val.records.npz); evaluate again with "
        "this version of eval.py\n"
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--level", "1.5"], "--level 1.5: must lie between 0 and 1 (e.g. 0.95)"),
        (["--samples", "0"], "--samples 0: must be >= 1 (e.g. 10000)"),
        (["--labels", "only-one"], "--labels: 1 label(s) for 2 runs; give one per run"),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag(tmp_path, capsys, extra, message):
    import compare_runs

    from utils.cli import run

    a = str(save_records(tmp_path / "a.records.npz", _records(1)))
    assert run(compare_runs.main, [a, a, *extra]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert run(compare_runs.main, [a, str(tmp_path / "none.npz")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'none.npz'}: no such records file (eval.py writes <results>.records.npz)\n"
    )


def test_class_ious_and_their_intervals_equal_a_naive_resampling_loop():
    """compare(per_class=True): each run's class IoU from summed counts, and its percentile interval over the
    same image draws; a class absent from a resample is left out of that class's interval, not counted 0."""
    a, b = _records(3), _records(4)
    result = compare([Row("A", (a,)), Row("B", (b,))], samples=300, seed=2, level=0.8, per_class=True)
    rng = np.random.default_rng(2)
    n = len(a.names)
    draws = [list(rng.integers(0, n, size=n)) for _ in range(300)]
    for entry, records in zip(result["runs"], (a, b)):
        for c, name in enumerate(CLASSES):
            values = []
            for images in draws:
                inter, union = _naive_sums(records, images)
                if union[c] > 0:
                    values.append(inter[c] / union[c])
            inter, union = _naive_sums(records, range(n))
            assert entry["per_class"][name]["iou"] == pytest.approx(inter[c] / union[c], abs=1e-15)
            assert entry["per_class"][name]["ci"] == pytest.approx(np.quantile(values, [0.1, 0.9]).tolist(), abs=1e-15)
