"""engine/run_dir.py: a fresh run never overwrites another, a finished run is left alone, best.pth decides."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT
from engine.run_dir import best_saved_miou, finished_message, refuse_existing_run
from utils.config import load_config, save_config

DEMO = ROOT / "configs/demo.yaml"


def _held_run(work_dir, *overrides: str):
    work_dir.mkdir()
    torch.save({"iter": 4, "model": {}}, work_dir / "last.pth")
    save_config(load_config(DEMO, list(overrides)), work_dir / "config.yaml")


def test_the_same_model_is_offered_the_resume(tmp_path):
    _held_run(tmp_path / "run")
    with pytest.raises(ValueError) as err:
        refuse_existing_run(tmp_path / "run", load_config(DEMO, ["optim.lr=0.5"]))  # a recipe change: the same model
    assert str(err.value) == (
        f"{tmp_path / 'run'} already holds a run (last.pth at iteration 4); resume it with --resume auto, or pick "
        "another train.work_dir=..."
    )


def test_a_changed_model_is_sent_to_a_folder_of_its_own(tmp_path):
    """The README's module swaps run after the demo: --resume auto would load the demo's weights into another
    model, so it is not offered; the message names what changed."""
    _held_run(tmp_path / "run")
    cfg = load_config(DEMO, ["model.head=ppm", "model.backbone.attention=cbam"])
    with pytest.raises(ValueError) as err:
        refuse_existing_run(tmp_path / "run", cfg)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'run'} already holds a run (last.pth at iteration 4) of another model (")
    assert "model.backbone.attention: strip -> cbam" in message and "model.head: sp -> ppm" in message
    assert message.endswith(f"give this one a folder of its own: train.work_dir={tmp_path / 'run'}_<name>")
    assert "--resume" not in message


def test_an_empty_folder_is_no_run(tmp_path):
    (tmp_path / "run").mkdir()
    refuse_existing_run(tmp_path / "run", load_config(DEMO))  # nothing to refuse
    refuse_existing_run(tmp_path / "missing", load_config(DEMO))


def test_a_run_is_finished_only_when_trained_and_validated_at_its_end(tmp_path):
    state = {"iter": 4, "best_miou": 0.5}
    assert finished_message(tmp_path, state, 4) is None  # never validated at 4
    (tmp_path / "val_metrics.json").write_text(json.dumps({"iter": 2, "miou": 0.4}))
    assert finished_message(tmp_path, state, 4) is None  # the final validation is owed
    (tmp_path / "val_metrics.json").write_text(json.dumps({"iter": 4, "miou": 0.45}))
    assert finished_message(tmp_path, state, 6) is None  # a longer schedule: more to train
    assert finished_message(tmp_path, None, 4) is None  # a fresh start
    torch.save({"miou": 0.61}, tmp_path / "best.pth")  # newer than the checkpoint's best
    assert finished_message(tmp_path, state, 4) == (
        f"{tmp_path}: the run is complete (iteration 4 of 4; final mIoU 45.00%, best 61.00% in best.pth). Nothing "
        "to do; to train longer, raise train.max_iters and add --allow-config-change."
    )


def test_best_pth_wins_over_the_checkpoint_copy_unless_unreadable(tmp_path):
    assert best_saved_miou(tmp_path, 0.3) == 0.3  # no best.pth
    torch.save({"miou": 0.7}, tmp_path / "best.pth")
    assert best_saved_miou(tmp_path, 0.3) == 0.7
    (tmp_path / "best.pth").write_bytes(b"truncated")
    assert best_saved_miou(tmp_path, 0.3) == 0.3


def test_resume_refuses_a_change_of_data_classes_or_schedule_unless_allowed():
    from engine.run_dir import check_resume_config
    from utils.config import config_to_dict

    saved = config_to_dict(load_config(DEMO))
    assert check_resume_config(saved, load_config(DEMO), allow=False) == ([], False)  # nothing changed
    notes, data_changed = check_resume_config(saved, load_config(DEMO, ["optim.lr=0.05", "train.seed=3"]), False)
    assert notes == ["the config changed since the checkpoint was written: optim.lr: 0.02 -> 0.05; train.seed: 0 -> 3"]
    assert not data_changed  # the recipe may change: said, not refused
    for override, change in (
        ("data.root=elsewhere", "data.root: data/synthetic_cityscapes -> elsewhere"),
        ("train.max_iters=400", "train.max_iters: 200 -> 400"),
        ("train.batch_size=4", "train.batch_size: 8 -> 4"),
        ("model.num_classes=5", "model.num_classes: 19 -> 5"),
    ):
        with pytest.raises(ValueError) as err:
            check_resume_config(saved, load_config(DEMO, [override]), allow=False)
        assert str(err.value) == (
            f"the run was trained with other values of keys that change what it means ({change}): resume with its "
            "config, or add --allow-config-change to go on with the new values"
        )
    notes, data_changed = check_resume_config(saved, load_config(DEMO, ["data.root=elsewhere"]), allow=True)
    assert data_changed and notes[-1].startswith("the data changed: best.pth, chosen on the old validation data")
