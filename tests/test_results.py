"""utils/results.py: result files are strict JSON, written atomically; no write follows a planted link,
and a full disk names the file."""

from __future__ import annotations

import errno
import json
import logging
import math

import numpy as np
import pytest
from PIL import Image

from utils.results import atomic_npy, json_safe, write_json


def test_one_json_writer_writes_null_for_nan(tmp_path):
    path = write_json(tmp_path / "sub" / "m.json", {"miou": float("nan"), "iou": [0.5, math.inf], "t": (1, 2)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"miou": None, "iou": [0.5, None], "t": [1, 2]}
    assert json_safe({"a": [float("nan")]}) == {"a": [None]}
    assert not list(tmp_path.glob("sub/.*.tmp"))  # the temporary file was renamed, not left behind


def test_a_full_disk_while_writing_results_names_the_file_on_the_console_and_in_train_log(tmp_path, full_disk, capsys):
    """Was: "error: No space left on device", without the path, and the log's traceback without it either."""
    from utils.cli import run
    from utils.logging import setup_logging

    path = tmp_path / "run" / "val_metrics.json"
    path.parent.mkdir()
    path.write_text('{"iter": 10}\n')
    with pytest.raises(OSError) as err:
        write_json(path, {"iter": 20, "miou": 0.5})
    assert err.value.errno == errno.ENOSPC
    assert str(err.value).startswith(f"[Errno 28] no space left on {path} (")
    assert str(err.value).endswith(
        " free there now); the previous val_metrics.json is intact, the partial file was removed"
    )
    assert path.read_text() == '{"iter": 10}\n' and not full_disk[0].exists()

    log = setup_logging(tmp_path / "log", is_main=True)  # train.log on another disk, which has room
    try:
        assert run(lambda argv: write_json(path, {"iter": 20}), []) == 2
    finally:
        for handler in log.handlers:
            handler.close()
        log.handlers.clear()
        logging.getLogger("models").handlers.clear()  # setup_logging shares them with the model builder's logger
    message = f"no space left on {path} ("
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert message in (tmp_path / "log" / "train.log").read_text()


def test_writers_replace_a_planted_symbolic_link_and_leave_its_target_alone(tmp_path):
    """Was: predictions, pictures and config.yaml written through a link into the file it points to."""
    from utils.config import Config, load_config, save_config
    from utils.preemption import StopRequest
    from utils.visualize import save_png

    victim = tmp_path / "precious.txt"
    victim.write_text("not yours to overwrite\n")
    out = tmp_path / "out"
    out.mkdir()
    names = ["m.json", "p.png", "config.yaml", "job.stop"]
    for name in names:
        (out / name).symlink_to(victim)
    write_json(out / "m.json", {"miou": 0.5})
    save_png(np.zeros((4, 6), np.uint8), out / "p.png")
    save_config(Config(), out / "config.yaml")
    stop = StopRequest(out / "job.stop")
    try:
        stop.report("stop requested (x): stopped at iteration 5 of 9, saved")
    finally:
        stop.close()
    assert victim.read_text() == "not yours to overwrite\n"
    assert not any((out / name).is_symlink() for name in names)
    assert json.loads((out / "m.json").read_text()) == {"miou": 0.5}
    assert Image.open(out / "p.png").size == (6, 4)
    assert load_config(out / "config.yaml") == Config()
    assert (out / "job.stop").read_text().startswith("stop requested")
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temporary file left


def test_train_log_is_never_appended_through_a_symbolic_link(tmp_path):
    from utils.logging import log_to_file

    victim = tmp_path / "precious.txt"
    victim.write_text("not yours to append to\n")
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    (work_dir / "train.log").symlink_to(victim)
    logger = logging.getLogger("spnet.test_results")
    with pytest.raises(ValueError) as err:
        log_to_file(logger, work_dir)
    assert str(err.value) == (
        f"{work_dir / 'train.log'} is a symbolic link (to {victim}); a run appends its log to a file of its own "
        "only: remove the link, then start again"
    )
    assert victim.read_text() == "not yours to append to\n" and not logger.handlers


def test_atomic_npy_is_filled_part_by_part_and_appears_only_when_complete(tmp_path):
    """predict.py --save-probs writes (C, H, W) float16 band by band; np.load reads what was written, and a
    failure half-way leaves no file (nor a temporary one) behind."""
    path, expected = tmp_path / "p.npy", np.arange(3 * 5 * 7, dtype=np.float16).reshape(3, 5, 7)
    with atomic_npy(path, (3, 5, 7), np.float16) as array:
        for top in range(0, 5, 2):
            array[:, top : top + 2] = expected[:, top : top + 2]
            assert not path.exists()
    loaded = np.load(path)
    assert loaded.dtype == np.float16 and np.array_equal(loaded, expected)
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_npy(tmp_path / "q.npy", (2, 2), np.float32) as array:
            array[0] = 1
            raise RuntimeError("half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy"]
