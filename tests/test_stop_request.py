"""utils/preemption.py: what asks a run to stop, and the DataLoader workers that must not decide it."""

from __future__ import annotations

import os
import signal

import torch
from torch.utils.data import DataLoader, Dataset

from conftest import ROOT
from utils.preemption import StopRequest, ignore_stop_signals


def test_a_stop_file_or_a_signal_asks_for_a_stop_and_the_outcome_goes_into_the_file(tmp_path):
    stop_file = tmp_path / "jobs" / "slurm-7.stop"
    stop = StopRequest(stop_file)
    try:
        assert not stop.requested and list(stop.cut(range(3))) == [0, 1, 2]
        stop_file.parent.mkdir()
        stop_file.touch()  # what the job script does on SLURM's USR1
        assert stop.requested and stop.reason == f"stop file {stop_file}" and list(stop.cut(range(3))) == []
        stop.report("stop requested (x): stopped at iteration 5 of 9, saved")
        assert stop_file.read_text() == "stop requested (x): stopped at iteration 5 of 9, saved\n"
        assert list(tmp_path.glob("jobs/.*")) == []  # written through a temporary file, renamed
    finally:
        stop.close()

    before = signal.getsignal(signal.SIGUSR1)
    stop = StopRequest()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested and stop.signal == signal.SIGUSR1 and stop.reason == "SIGUSR1"
        stop.report("ignored without a stop file")
    finally:
        stop.close()
    assert signal.getsignal(signal.SIGUSR1) is before  # handlers given back


class _Pids(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.tensor([os.getpid(), int(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)])


def test_dataloader_workers_ignore_stop_signals():
    loader = DataLoader(_Pids(), batch_size=1, num_workers=2, worker_init_fn=ignore_stop_signals)
    rows = torch.cat(list(loader))
    assert set(rows[:, 0].tolist()).isdisjoint({os.getpid()}) and rows[:, 1].tolist() == [1, 1]
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # the main process keeps its handler


def test_train_refuses_a_stop_file_that_already_exists(tmp_path, capsys):
    """A stale stop file would stop the run, and every resumed run, after one iteration."""
    from train import main
    from utils.cli import run

    stop_file, work_dir = tmp_path / "stop", tmp_path / "run"
    stop_file.touch()
    args = ["--config", str(ROOT / "configs/demo.yaml"), f"train.work_dir={work_dir}", "--stop-file", str(stop_file)]
    assert run(main, args) == 2
    assert capsys.readouterr().err == (
        f"error: --stop-file {stop_file} already exists (left by an earlier stop, it would stop this run after its "
        "first iteration): delete it, then start again\n"
    )
    assert not work_dir.exists() and stop_file.exists()  # nothing written, nothing deleted behind the user's back


def test_a_stop_file_left_by_an_earlier_stop_is_told_from_the_job_scripts_request_to_this_run(tmp_path):
    """SLURM's warning may come while the processes start: the job script's request is then already there."""
    from utils.preemption import REQUEST, left_by_earlier_stop

    stop_file = tmp_path / "slurm-7.stop"
    assert not left_by_earlier_stop(stop_file)
    stop_file.write_text(f"{REQUEST} SLURM time-limit warning (USR1), job 7\n")
    assert not left_by_earlier_stop(stop_file)
    for left in ("stop requested (stop file x): stopped at iteration 5 of 9, saved\n", ""):
        stop_file.write_text(left)
        assert left_by_earlier_stop(stop_file)
    script = (ROOT / "scripts/slurm_train.sh").read_text()
    assert f"""trap 'warned=1; echo "{REQUEST} SLURM time-limit warning (USR1), job $SLURM_JOB_ID" >""" in script
