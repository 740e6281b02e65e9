"""utils/checkpoint.py: layering, resuming past a truncated last.pth, stale temporaries, full disk, CUDA RNG."""

from __future__ import annotations

import ast
import errno
import os
import random
import re
import shutil
import tempfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from utils import checkpoint
from utils.checkpoint import (
    TRAINING_KEYS,
    CheckpointReadError,
    find_resume_checkpoint,
    read_training_checkpoint,
    remove_stale_temporaries,
    rng_states,
    save_atomic,
    save_training_checkpoint,
    set_rng_states,
)

# ---------------------------------------------------------------- layering


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in the file, function-local ones and import_module("x") too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module.split(".")[0]))
            elif node.level >= 2:  # "from ..datasets import x" leaves utils
                found.append((node.lineno, (node.module or "..").split(".")[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def test_utils_imports_neither_datasets_nor_models():
    files = sorted((ROOT / "utils").glob("*.py"))
    assert len(files) > 10 and ROOT / "utils/checkpoint.py" in files
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in _imported_modules(ast.parse(path.read_text(), str(path)))
        if module in ("datasets", "models")
    ]
    assert upward == []


def test_the_layering_check_sees_function_local_imports():
    source = (
        "import os\ndef f():\n    from models.weights import x\n    import datasets.base\n"
        "importlib.import_module('models')\n"
    )
    assert _imported_modules(ast.parse(source)) == [(1, "os"), (3, "models"), (4, "datasets"), (5, "models")]


def test_moved_names_stay_importable_from_their_old_homes():
    import datasets
    import datasets.base
    import models.weights
    import utils.losses

    assert datasets.IGNORE_INDEX == datasets.base.IGNORE_INDEX == utils.losses.IGNORE_INDEX == 255
    assert callable(models.weights.read_checkpoint)


def test_weights_reader_keeps_its_error_type_and_download_hint(tmp_path):
    from models.weights import IncompatibleWeightsError, read_checkpoint

    (tmp_path / "w.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(IncompatibleWeightsError) as err:
        read_checkpoint(tmp_path / "w.pth", "backbone weights file")
    message = str(err.value)
    assert message.startswith(f"cannot read {tmp_path / 'w.pth'} as a PyTorch checkpoint: truncated, corrupt")
    assert "(23 bytes; UnpicklingError: Weights only load failed" in message
    assert message.endswith("is the download complete? Compare its checksum with the published one.")
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match="backbone weights file not found: .*missing.pth"):
        read_checkpoint(tmp_path / "missing.pth", "backbone weights file")


class _Planted:
    """Unpickled in full, it creates ``marker``: the stand-in for code a planted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_file_of_objects_that_are_not_weights_says_so_to_every_reader(tmp_path):
    """Not "truncated or corrupt, is the download complete?": the file is whole, and nothing of it is built."""
    from models.weights import IncompatibleWeightsError, load_model_weights
    from models.weights import read_checkpoint as read_weights
    from utils.checkpoint import NotWeightsError, read_checkpoint

    marker, planted = tmp_path / "the planted code ran", tmp_path / "model.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "hook": _Planted(marker)}, planted)
    expected = (
        f"cannot read {planted} as a PyTorch checkpoint: it contains objects that are not weights (io.open), which "
        "are not loaded: unpickling them could run code from the file. If you trust its source, load it with "
        "torch.load(..., weights_only=False) and torch.save only its tensors (a state_dict)"
    )
    with pytest.raises(NotWeightsError) as err:
        read_checkpoint(planted)
    assert str(err.value) == expected
    for read in (lambda: read_weights(planted, "backbone weights file"), lambda: load_model_weights(None, planted)):
        with pytest.raises(IncompatibleWeightsError) as err:
            read()
        assert str(err.value) == expected  # no "is the download complete?"
    import argparse

    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "reference.pth")  # torchvision's recipe
    with pytest.raises(NotWeightsError, match=r"it contains objects that are not weights \(argparse.Namespace\)"):
        read_checkpoint(tmp_path / "reference.pth")

    work_dir = _run_dir(tmp_path / "run", iterations=(10, 20))
    (work_dir / "last.pth").unlink()
    shutil.copyfile(planted, work_dir / "last.pth")
    warnings = []
    path, state = find_resume_checkpoint("auto", work_dir, warn=warnings.append)
    assert (path.name, state["iter"]) == ("iter_0000020.pth", 20)
    assert f"{work_dir / 'last.pth'} is unusable: it contains objects that are not weights (io.open)" in warnings[0]
    assert not marker.exists()


# ---------------------------------------------------------------- resume


def _training_state(iteration: int) -> dict:
    state = {key: {} for key in TRAINING_KEYS}
    state.update(iter=iteration, best_miou=0.25, model={"w": torch.full((3,), float(iteration))}, rng=[])
    return state


def _run_dir(tmp_path: Path, iterations=(10, 20, 30), keep: int = 3) -> Path:
    for it in iterations:
        save_training_checkpoint(_training_state(it), tmp_path, it, keep)
    return tmp_path


def _truncate(path: Path, fraction: float = 0.5) -> None:
    """Rewrite in place (a hard-linked twin sees the damage too, as after a crash mid-write)."""
    data = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(int(len(data) * fraction))


def test_auto_resume_takes_an_intact_last_pth_and_reads_nothing_else(tmp_path, monkeypatch):
    work_dir = _run_dir(tmp_path)
    read = []
    original = checkpoint.read_checkpoint
    monkeypatch.setattr(checkpoint, "read_checkpoint", lambda p, *a: read.append(Path(p).name) or original(p, *a))
    path, state = find_resume_checkpoint("auto", work_dir, warn=pytest.fail)
    assert (path.name, state["iter"], read) == ("last.pth", 30, ["last.pth"])
    assert state["model"]["w"].tolist() == [30.0, 30.0, 30.0]
    assert find_resume_checkpoint(None, work_dir) is None
    assert find_resume_checkpoint("auto", tmp_path / "empty") is None


def test_truncated_last_pth_falls_back_to_the_newest_intact_iter_file(tmp_path, monkeypatch):
    work_dir = _run_dir(tmp_path)
    _truncate(work_dir / "last.pth")  # also truncates iter_0000030.pth, its hard link
    read = []
    original = checkpoint.read_checkpoint
    monkeypatch.setattr(checkpoint, "read_checkpoint", lambda p, *a: read.append(Path(p).name) or original(p, *a))
    warnings = []
    path, state = find_resume_checkpoint("auto", work_dir, warn=warnings.append)
    assert (path, state["iter"]) == (work_dir / "iter_0000020.pth", 20)
    assert state["model"]["w"].tolist() == [20.0, 20.0, 20.0]
    assert read == ["last.pth", "iter_0000020.pth"]  # the hard-linked twin of last.pth is not read again
    assert len(warnings) == 1
    assert re.fullmatch(
        rf"--resume auto: {re.escape(str(work_dir / 'last.pth'))} is unusable: truncated, corrupt or not a "
        rf"PyTorch file \(\d+ bytes; \w+: .*\); {re.escape(str(work_dir / 'iter_0000030.pth'))} is unusable: "
        rf"the same file as last.pth. Resuming from {re.escape(str(path))} \(iteration 20\) instead",
        warnings[0],
    )
    # the default reports through warnings.warn
    with pytest.warns(UserWarning, match=r"last.pth is unusable: .* Resuming from .*iter_0000020.pth"):
        assert find_resume_checkpoint("auto", work_dir)[0] == work_dir / "iter_0000020.pth"


def test_a_copied_last_pth_that_is_not_a_training_checkpoint_is_skipped(tmp_path):
    work_dir = _run_dir(tmp_path, iterations=(10,))
    (work_dir / "last.pth").unlink()
    torch.save({"model": {}}, work_dir / "last.pth")  # a separate file now, not the iter file's link
    warnings = []
    path, state = find_resume_checkpoint("auto", work_dir, warn=warnings.append)
    assert (path.name, state["iter"]) == ("iter_0000010.pth", 10)
    assert "last.pth is unusable: not a training checkpoint (missing ['optimizer'," in warnings[0]


def test_every_checkpoint_unreadable_is_one_error_listing_them(tmp_path):
    work_dir = _run_dir(tmp_path, iterations=(10, 20))
    _truncate(work_dir / "last.pth")
    (work_dir / "iter_0000010.pth").write_bytes(b"")
    with pytest.raises(CheckpointReadError) as err:
        find_resume_checkpoint("auto", work_dir, warn=pytest.fail)
    lines = str(err.value).splitlines()
    assert lines[0] == f"--resume auto: no intact training checkpoint in {work_dir}:"
    assert lines[1].startswith(f"  {work_dir / 'last.pth'}: truncated, corrupt or not a PyTorch file (")
    assert lines[2] == f"  {work_dir / 'iter_0000020.pth'}: the same file as last.pth"
    assert lines[3] == (
        f"  {work_dir / 'iter_0000010.pth'}: truncated, corrupt or not a PyTorch file (0 bytes; EOFError)"
    )
    assert lines[4] == "Move these files away to start from scratch, or pass --resume PATH"


def test_an_explicit_corrupt_resume_path_is_a_one_line_error_naming_it(tmp_path):
    work_dir = _run_dir(tmp_path, iterations=(10, 20))
    _truncate(work_dir / "iter_0000010.pth")
    bad = work_dir / "iter_0000010.pth"
    for call in (lambda: find_resume_checkpoint(str(bad), work_dir), lambda: read_training_checkpoint(bad)):
        with pytest.raises(CheckpointReadError) as err:
            call()
        message = str(err.value)
        assert message.startswith(f"cannot read {bad} as a PyTorch checkpoint: truncated, corrupt or not a PyTorch")
        assert "\n" not in message and "download" not in message
    path, state = find_resume_checkpoint(str(work_dir / "iter_0000020.pth"), work_dir)
    assert (path, state["iter"]) == (work_dir / "iter_0000020.pth", 20)
    with pytest.raises(FileNotFoundError, match="--resume nope.pth: no such checkpoint"):
        find_resume_checkpoint("nope.pth", work_dir)
    torch.save({"model": {}}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="is not a training checkpoint .* use train.load_from="):
        find_resume_checkpoint(str(tmp_path / "weights.pth"), work_dir)


# ---------------------------------------------------------------- temporaries


def test_remove_stale_temporaries_removes_only_what_our_writers_leave(tmp_path):
    stale = [".iter_0000030.pth.k2x_9abc.tmp", ".best.pth.a1b2c3d4.tmp", ".last.pth.tmp"]
    kept = [
        "iter_0000030.pth", "last.pth", "best.pth", "train.log", "val_metrics.json",
        ".val_metrics.json.a1b2c3d4.tmp",  # not a checkpoint writer's
        ".iter_0000030.pth.tmp", ".best.pth.ABCDEFGH.tmp", ".best.pth.a1b2.tmp", ".notes.pth.a1b2c3d4.tmp",
        "iter_0000030.pth.a1b2c3d4.tmp", ".last.pth.tmp.bak",
    ]  # fmt: skip
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".last.pth.tmp").write_bytes(b"x")  # only the work dir itself is cleaned
    (tmp_path / ".best.pth.dir12345.tmp").mkdir()  # a folder is never removed
    assert remove_stale_temporaries(tmp_path) == sorted(tmp_path / name for name in stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "sub", ".best.pth.dir12345.tmp"])
    assert (tmp_path / "sub" / ".last.pth.tmp").is_file()
    assert remove_stale_temporaries(tmp_path) == []
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_the_patterns_match_the_names_save_atomic_really_uses(tmp_path, monkeypatch):
    names = []
    original = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = original(*args, **kwargs)
        names.append(Path(name).name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    save_training_checkpoint(_training_state(7), tmp_path, 7, keep=1)
    save_atomic({"miou": 0.5}, tmp_path / "best.pth")
    assert [re.sub(r"\.[a-z0-9_]{8}\.tmp$", ".*.tmp", n) for n in names] == [
        ".iter_0000007.pth.*.tmp",
        ".best.pth.*.tmp",
    ]
    assert all(checkpoint.TEMPORARY_FILES.fullmatch(n) for n in [*names, ".last.pth.tmp"])


# ---------------------------------------------------------------- full disk


@pytest.mark.parametrize("numel", [4, 1_000_000])  # a small write fails at flush, a large one inside torch.save
def test_a_full_disk_is_a_clear_enospc_and_the_old_file_stays(tmp_path, full_disk, numel):
    target = tmp_path / "iter_0000030.pth"
    torch.save({"old": torch.arange(5)}, target)
    before = target.read_bytes()
    with pytest.raises(OSError) as err:
        save_atomic({"w": torch.zeros(numel)}, target)
    assert err.value.errno == errno.ENOSPC
    message = str(err.value)
    assert message.startswith(f"[Errno 28] no space left on {target} (")
    assert message.endswith(" free there now); the previous iter_0000030.pth is intact, the partial file was removed")
    assert target.read_bytes() == before
    assert len(full_disk) == 1 and not full_disk[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_0000030.pth"]


def test_a_full_disk_during_a_training_save_keeps_last_pth(tmp_path, full_disk):
    shutil.copyfile(__file__, tmp_path / "last.pth")
    with pytest.raises(OSError) as err:
        save_training_checkpoint(_training_state(40), tmp_path, 40, keep=2)
    assert err.value.errno == errno.ENOSPC
    assert re.fullmatch(
        rf"\[Errno 28\] no space left on {re.escape(str(tmp_path / 'iter_0000040.pth'))} \(.*\); no iter_0000040.pth "
        rf"was written, the partial file was removed; {re.escape(str(tmp_path / 'last.pth'))} still holds the "
        "previous checkpoint",
        str(err.value),
    )
    assert (tmp_path / "last.pth").read_bytes() == Path(__file__).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]


def test_the_exception_torch_save_raises_on_a_full_disk_is_translated(tmp_path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    f = open("/dev/full", "wb")  # noqa: SIM115
    try:
        torch.save({"w": torch.zeros(1_000_000)}, f)
    except RuntimeError as err:
        raised = err
    finally:
        with pytest.raises(OSError):
            f.close()  # the buffered rest fails too
    # what torch 2.x raises: its stream writer swallows the OSError (kept as __context__)
    assert "unexpected pos" in str(raised) and raised.__context__.errno == errno.ENOSPC

    def torch_save(obj, file):
        raise raised

    monkeypatch.setattr(checkpoint.torch, "save", torch_save)
    with pytest.raises(OSError, match=r"^\[Errno 28\] no space left on .*a.pth .*no a.pth was written") as err:
        save_atomic({}, tmp_path / "a.pth")
    assert err.value.__cause__ is raised
    assert list(tmp_path.iterdir()) == []


def test_a_bare_unexpected_pos_counts_as_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    def torch_save(obj, file):
        file.write(b"x" * 3000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint.torch, "save", torch_save)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(OSError) as err:
        save_atomic({}, tmp_path / "a.pth")
    assert str(err.value) == (
        f"[Errno 28] no space left on {tmp_path / 'a.pth'} (the write stopped after 3000 bytes, 4096 bytes free "
        "there now); no a.pth was written, the partial file was removed"
    )
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # another failure: unchanged
        save_atomic({}, tmp_path / "a.pth")
    assert list(tmp_path.iterdir()) == []


def test_quota_exceeded_is_reported_as_such(tmp_path, monkeypatch):
    def torch_save(obj, file):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(checkpoint.torch, "save", torch_save)
    with pytest.raises(OSError, match=r"disk quota exceeded writing .*a.pth") as err:
        save_atomic({}, tmp_path / "a.pth")
    assert err.value.errno == errno.EDQUOT and list(tmp_path.iterdir()) == []


def test_other_save_errors_are_unchanged_and_leave_no_temporary(tmp_path):
    with pytest.raises(Exception, match="[Pp]ickle|lambda"):
        save_atomic({"f": lambda: 0}, tmp_path / "a.pth")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- RNG states


class FakeCuda:
    """torch.cuda's RNG functions for ``count`` devices, this process on ``current``."""

    def __init__(self, monkeypatch, count: int, current: int) -> None:
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}
        self.current = current
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.states[self._index(device)])
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("reads every GPU"))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("sets every GPU"))

        def set_rng_state(state, device="cuda"):
            self.states[self._index(device)] = state.clone()

        monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)

    def _index(self, device) -> int:
        return self.current if device == "cuda" else int(device)


def _cpu_states(seed: int) -> dict:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return rng_states()


def _draws() -> tuple:
    return torch.rand(2).tolist(), np.random.rand(2).tolist(), [random.random() for _ in range(2)]


def test_rng_states_save_and_restore_only_the_current_device(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=4, current=2)
    cuda.states[2] = torch.arange(16, dtype=torch.uint8)
    states = _cpu_states(1)
    assert states["cuda"].tolist() == list(range(16))
    expected = _draws()
    cuda.states[2] = torch.zeros(16, dtype=torch.uint8)
    _cpu_states(2)
    assert set_rng_states(states) == []
    assert cuda.states[2].tolist() == list(range(16))
    assert [cuda.states[i].tolist() for i in (0, 1, 3)] == [[i] * 16 for i in (0, 1, 3)]  # others untouched
    assert _draws() == expected

    other = FakeCuda(monkeypatch, count=1, current=0)  # a node whose process sees one GPU
    assert set_rng_states(states) == []
    assert other.states[0].tolist() == list(range(16))


def test_old_checkpoints_with_one_state_per_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=2, current=1)
    states = _cpu_states(3)
    states["cuda"] = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 9, dtype=torch.uint8)]
    assert set_rng_states(states) == []
    assert cuda.states[1].tolist() == [9] * 16 and cuda.states[0].tolist() == [0] * 16

    cuda.current = 5  # no entry for this device: skipped, no crash
    cuda.states[5] = torch.full((16,), 5, dtype=torch.uint8)
    assert set_rng_states(states) == ["cuda"]
    assert cuda.states[5].tolist() == [5] * 16
    assert set_rng_states({**states, "cuda": []}) == []  # written without CUDA


def test_a_cpu_machine_resumes_a_gpu_checkpoint(monkeypatch):
    FakeCuda(monkeypatch, count=2, current=0)
    states = _cpu_states(4)
    expected = _draws()
    FakeCuda(monkeypatch, count=0, current=0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *a, **k: pytest.fail("no CUDA here"))
    assert rng_states()["cuda"] is None
    _cpu_states(5)
    assert set_rng_states(states) == ["cuda"]
    assert _draws() == expected
    old = {**states, "cuda": [torch.zeros(16, dtype=torch.uint8)]}
    assert set_rng_states(old) == ["cuda"]
    assert set_rng_states({**states, "cuda": None}) == []


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    states = _cpu_states(6)
    expected = _draws()
    save_atomic({"rng": [states]}, tmp_path / "s.pth")
    _cpu_states(7)
    loaded = torch.load(tmp_path / "s.pth", weights_only=True)["rng"][0]
    assert set_rng_states(loaded) == []
    assert _draws() == expected


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_the_permissions_open_would_give(tmp_path, umask):
    """mkstemp's 0600 would make checkpoints and results unreadable to a team on a shared disk."""
    from utils.checkpoint import save_atomic
    from utils.results import write_json

    old = os.umask(umask)
    try:
        save_atomic({"x": 1}, tmp_path / "best.pth")
        write_json(tmp_path / "eval_val.json", {"miou": 0.5})
        (tmp_path / "plain.txt").write_text("as open makes it")
    finally:
        os.umask(old)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in ("best.pth", "eval_val.json", "plain.txt")}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_rng_untouched_gives_every_generator_back_as_it_was():
    """Validation runs inside it: whatever it draws (modules built while folding do), training does not see."""
    import random

    import numpy as np

    from utils.checkpoint import rng_untouched

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    with rng_untouched():
        torch.nn.Conv2d(8, 8, 3)  # initialising weights draws from torch's generator
        np.random.rand(5), random.random()
    got = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
