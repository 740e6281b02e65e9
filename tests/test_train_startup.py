"""train.py checks everything before it writes anything: a run that cannot start leaves the work dir as it was."""

from __future__ import annotations

import pytest
import torch

import train
from conftest import ROOT


def _args(work_dir, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "configs/demo.yaml"), f"train.work_dir={work_dir}", "train.batch_size=2", *extra]


def _files(work_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in work_dir.iterdir()}


@pytest.mark.parametrize(
    "files, held",
    [
        (["last.pth", "iter_0000004.pth", "best.pth"], "last.pth at iteration 4"),
        (["iter_0000004.pth"], "iter_0000004.pth"),
        (["best.pth"], "best.pth"),
    ],
)
def test_a_fresh_run_refuses_a_work_dir_that_holds_a_run(tmp_path, files, held):
    work_dir = tmp_path / "t1"
    work_dir.mkdir()
    for name in files:
        torch.save({"iter": 4, "model": {}}, work_dir / name)
    (work_dir / "config.yaml").write_text("the old run's config\n")
    before = _files(work_dir)
    with pytest.raises(ValueError) as error:
        train.main(_args(work_dir, "train.max_iters=2"))
    assert str(error.value) == (
        f"{work_dir} already holds a run ({held}); resume it with --resume auto, or pick another train.work_dir=..."
    )
    assert _files(work_dir) == before  # no config.yaml, train.log, tb/ or checkpoint written


def test_a_bad_name_in_the_config_writes_nothing(synthetic_cityscapes, tmp_path):
    """Names are checked when the model is built; the work dir files are written only after that."""
    work_dir = tmp_path / "t1"
    work_dir.mkdir()
    (work_dir / "config.yaml").write_text("the old run's config\n")
    with pytest.raises(ValueError, match="model.head: unknown name 'foo'"):
        train.main(_args(work_dir, f"data.root={synthetic_cityscapes}", "model.head=foo"))
    assert _files(work_dir) == {"config.yaml": b"the old run's config\n"}
    with pytest.raises(ValueError, match="train.amp=fp16 needs a GPU"):  # the last check of the build
        train.main(_args(tmp_path / "t2", f"data.root={synthetic_cityscapes}", "train.amp=fp16", "train.device=cpu"))
    assert not (tmp_path / "t2").exists()


def test_max_iters_typed_under_epochs_is_refused_not_ignored(tmp_path, capsys):
    """train.epochs sets the length; a smoke test's train.max_iters=5 would have run the whole schedule."""
    with pytest.raises(ValueError) as error:
        train.main(_args(tmp_path / "t1", "train.epochs=2", "train.max_iters=5"))
    assert str(error.value) == (
        "train.max_iters=5 has no effect: train.epochs = 2.0 sets the run's length; "
        "add train.epochs=null to count in iterations"
    )
    assert not (tmp_path / "t1").exists()
    assert (
        train.main(_args(tmp_path / "t1", "train.epochs=2", "train.max_iters=5", "train.epochs=null", "--print-config"))
        == 0
    )
    assert "# train.epochs" not in capsys.readouterr().out
    assert train.main(_args(tmp_path / "t1", "train.epochs=2", "--print-config")) == 0
    printed = capsys.readouterr().out
    assert "\nepochs: 2.0\n" not in printed and "  epochs: 2.0\n" in printed
    assert printed.endswith("the train log's first lines give the iterations\n")


def test_print_config_shows_what_differs_from_the_defaults(capsys):
    """About 100 lines in full; the demo's differences fit a screen, and the fast paths appear only when changed."""
    assert train.main(["--config", str(ROOT / "configs/demo.yaml"), "--print-config"]) == 0
    short = capsys.readouterr().out
    assert short.startswith("# the keys set to other values than the defaults")
    assert "  depth: 18\n" in short and "  max_iters: 200\n" in short and "fast" not in short
    assert len(short.splitlines()) < 50
    assert train.main(["--config", str(ROOT / "configs/demo.yaml"), "--print-config", "train.fast=false",
                       "eval.fast.strip_conv=false"]) == 0  # fmt: skip
    changed = capsys.readouterr().out
    assert "  fast: false\n" in changed and "  fast:\n    strip_conv: false\n" in changed
    assert train.main(["--config", str(ROOT / "configs/demo.yaml"), "--print-full-config"]) == 0
    full = capsys.readouterr().out
    assert "  fast:\n    reuse_memory: true\n" in full and "  crop_size: [256, 256]\n" in full
    assert len(full.splitlines()) > 2 * len(short.splitlines())
