"""engine/run_lock.py: one training run per work dir, whatever the other run is doing or how it ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from engine.run_lock import LOCK_FILE, RunLock, RunLockedError, check_unlocked

HOLD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from engine.run_lock import RunLock
    lock = RunLock(sys.argv[1]).acquire()  # kept: a closed file would release it
    print("held", flush=True)
    time.sleep(600)
    """
).format(root=str(ROOT))


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path / 'run'``."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()


def test_a_held_work_dir_is_refused_naming_the_holder(tmp_path, holder):
    work_dir = tmp_path / "run"
    with pytest.raises(RunLockedError) as err:
        RunLock(work_dir).acquire()
    assert str(err.value).startswith(f"{work_dir} is in use by another training run (pid {holder.pid} on ")
    assert str(err.value).endswith("; wait for it to end, or pick another train.work_dir=...")
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        check_unlocked(work_dir)  # the early check, which writes nothing


def test_a_clean_release_frees_the_folder_and_leaves_no_holder(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    assert f"pid {os.getpid()} on " in (tmp_path / "run" / LOCK_FILE).read_text()
    lock.release()
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""
    check_unlocked(tmp_path / "run")
    again = RunLock(tmp_path / "run").acquire()
    assert again.stale == ""  # released cleanly: nothing to report
    again.release()
    check_unlocked(tmp_path / "missing")  # no folder, no lock


def test_a_killed_holder_leaves_a_free_lock_that_is_said_to_be_stale(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)  # kill -9: no release ran; the kernel dropped the lock
    holder.wait()
    lock = RunLock(tmp_path / "run").acquire()
    assert lock.stale.startswith(f"pid {holder.pid} on ")
    lock.release()


@pytest.mark.slow
def test_train_refuses_a_work_dir_in_use_before_touching_it(tmp_path, holder):
    """A second run (fresh or --resume auto) used to delete the first one's temporary checkpoint at start."""
    import train

    work_dir = tmp_path / "run"
    in_progress = work_dir / ".iter_0000004.pth.k2j4n8q1.tmp"  # the holder's save, half written
    in_progress.write_bytes(b"x" * 100)
    args = ["--config", str(ROOT / "configs/demo.yaml"), f"train.work_dir={work_dir}"]
    for extra in ([], ["--resume", "auto"]):
        with pytest.raises(RunLockedError, match=f"is in use by another training run \\(pid {holder.pid} on "):
            train.main([*args, *extra])
    assert in_progress.read_bytes() == b"x" * 100
    assert sorted(p.name for p in work_dir.iterdir()) == sorted([LOCK_FILE, in_progress.name])


def _lock_in_a_process_group(rank: int, work_dir: str, store: str, out: str) -> None:
    import torch.distributed as dist

    from engine.run_lock import lock_run

    dist.init_process_group("gloo", store=dist.FileStore(store, 2), rank=rank, world_size=2)
    try:
        lock_run(work_dir, is_main=rank == 0)
        outcome = "locked"
    except RunLockedError as err:
        outcome = str(err)
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        f.write(outcome)


def test_under_torchrun_every_process_stops_when_the_main_one_finds_the_lock_held(tmp_path, holder):
    """Only rank 0 takes the lock; the others learn of its refusal instead of waiting in the next collective."""
    import torch.multiprocessing as mp

    out = tmp_path / "outcome"
    args = (str(tmp_path / "run"), str(tmp_path / "store"), str(out))
    mp.spawn(_lock_in_a_process_group, args=args, nprocs=2, join=True)
    outcomes = [(tmp_path / f"outcome.{rank}").read_text() for rank in (0, 1)]
    assert outcomes[0] == outcomes[1]
    assert f"is in use by another training run (pid {holder.pid} on " in outcomes[0]


def test_the_processes_of_one_job_checking_at_the_same_instant_do_not_refuse_each_other(tmp_path):
    """Was: the early check probed with an exclusive lock, so a rank that checked while another rank of its
    job was mid-probe refused the job (seen under load on 2 cores: rank 1 exited with code 2 before DDP)."""
    work_dir = tmp_path / "run"
    RunLock(work_dir).acquire().release()  # a finished run: the lock file exists, free
    probing = textwrap.dedent(
        """
        import fcntl, sys, time
        f = open(sys.argv[1])
        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # the other rank, stopped in the middle of its check
        print("probing", flush=True)
        time.sleep(600)
        """
    )
    command = [sys.executable, "-c", probing, str(work_dir / LOCK_FILE)]
    other = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "probing"
        check_unlocked(work_dir)  # this rank's check at the same instant
    finally:
        other.kill()
        other.wait()
