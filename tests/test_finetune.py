"""Fine-tuning into a new label set (models/weights.py): the classifiers the model names are re-initialised or
get the rows train.class_map matches, everything else loads strictly; and train.py end to end."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest
import torch

import train
from conftest import ROOT, tiny_config
from datasets import stored_class_info
from datasets.cityscapes import Cityscapes
from models import build_model
from models.heads import HEADS
from models.weights import IncompatibleWeightsError, load_model_weights
from utils.config import config_to_dict

OLD = ["road", "car", "sky", "pole", "sign"]
fine_tune = functools.partial(load_model_weights, fine_tune=True)  # as train.load_from loads
NEW = ["pothole", "car", "road"]


def _model(num_classes, **model):
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes, **model))
    return build_model(cfg, load_pretrained=False)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(1)
    model = _model(len(OLD))
    path = tmp_path / "old.pth"
    torch.save({"model": model.state_dict(), "classes": OLD, "palette": [[i, i, i] for i in range(5)]}, path)
    return path, model.state_dict()


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_names_its_classifier(head):
    model = _model(7, head=head)
    layers = model.classifier_layers()
    assert list(layers) == ["head.classifier", "aux_head.classifier"]
    assert all(layer.out_channels == 7 for layer in layers.values())


def test_by_name_copies_the_matching_rows_and_loads_the_rest_strictly(checkpoint):
    path, old = checkpoint
    torch.manual_seed(2)
    model = _model(len(NEW))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    report = fine_tune(model, path, classes=NEW, class_map="by_name")
    new = model.state_dict()
    for layer in ("head.classifier", "aux_head.classifier"):
        for part in ("weight", "bias"):
            key = f"{layer}.{part}"
            torch.testing.assert_close(new[key][1], old[key][1], rtol=0, atol=0)  # car <- car
            torch.testing.assert_close(new[key][2], old[key][0], rtol=0, atol=0)  # road <- road
            torch.testing.assert_close(new[key][0], init[key][0], rtol=0, atol=0)  # pothole: its own init
    others = [k for k in new if ".classifier." not in k]
    assert all(torch.equal(new[k], old[k]) for k in others)
    assert (
        "classifier 5 -> 3 classes (head.classifier, aux_head.classifier): rows copied for car, road; "
        "re-initialised: pothole"
    ) in str(report)


def test_an_explicit_table_by_names_and_ids(checkpoint):
    path, old = checkpoint
    model = _model(len(NEW))
    report = fine_tune(model, path, classes=NEW, class_map={"pothole": "road", 2: 0})
    weight = model.state_dict()["head.classifier.weight"]
    torch.testing.assert_close(weight[0], old["head.classifier.weight"][0], rtol=0, atol=0)
    torch.testing.assert_close(weight[2], old["head.classifier.weight"][0], rtol=0, atol=0)
    assert "rows copied for pothole <- road, road; re-initialised: car" in str(report)


def test_without_a_map_another_class_count_starts_the_classifiers_fresh(checkpoint):
    path, old = checkpoint
    torch.manual_seed(3)
    model = _model(len(NEW))
    init = model.state_dict()["head.classifier.weight"].clone()
    report = fine_tune(model, path, classes=NEW)
    assert torch.equal(model.state_dict()["head.classifier.weight"], init)
    assert torch.equal(model.state_dict()["head.bottleneck.0.weight"], old["head.bottleneck.0.weight"])
    assert "rows copied for none; re-initialised: pothole, car, road (train.class_map copies" in str(report)


@pytest.mark.parametrize(
    "class_map, message",
    [
        ({"potholes": "road"}, r"train.class_map: 'potholes' is not a class of the dataset being trained \(its "),
        (
            {"pothole": "crack"},
            r"train.class_map: 'crack' is not a class of the checkpoint .*old.pth \(its classes: road",
        ),
        ({"pothole": 9}, r"train.class_map: 9 is not a class of the checkpoint"),
        ("by_nam", r"train.class_map = 'by_nam' must be by_name or a table"),
    ],
)
def test_a_map_naming_a_class_its_side_does_not_have_is_refused(checkpoint, class_map, message):
    with pytest.raises(ValueError, match=message):
        fine_tune(_model(len(NEW)), checkpoint[0], classes=NEW, class_map=class_map)


def test_by_name_needs_stored_names_or_a_known_dataset(checkpoint, tmp_path):
    path, old = checkpoint
    bare = tmp_path / "bare.pth"
    torch.save({"model": old}, bare)
    with pytest.raises(ValueError, match=r"by_name: .*bare.pth stores no class names .* give an explicit table"):
        fine_tune(_model(3), bare, classes=NEW, class_map="by_name", stored_classes=train.stored_classes)
    # a checkpoint written before the names were stored, whose config names Cityscapes: its 19 classes
    model19 = _model(19)
    cfg = dataclasses.replace(tiny_config(), model=dataclasses.replace(tiny_config().model, num_classes=19))
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": model19.state_dict(), "config": config_to_dict(cfg)}, legacy)
    assert stored_class_info(torch.load(legacy, weights_only=True)) == (Cityscapes.classes, Cityscapes.palette)
    model = _model(3)
    report = fine_tune(model, legacy, classes=NEW, class_map="by_name", stored_classes=train.stored_classes)
    assert "classifier 19 -> 3 classes" in str(report) and "rows copied for car, road" in str(report)
    car = Cityscapes.classes.index("car")
    torch.testing.assert_close(model.head.classifier.weight[1], model19.head.classifier.weight[car], rtol=0, atol=0)


def test_without_fine_tune_another_class_count_is_an_error(checkpoint):
    """eval.py and the inference API load strictly: a checkpoint of another label set is an error."""
    with pytest.raises(IncompatibleWeightsError, match=r"shape mismatches:\n    head.classifier.weight: file \(5,"):
        load_model_weights(_model(len(NEW)), checkpoint[0])


def test_any_other_difference_stays_an_error_naming_the_keys(checkpoint):
    one_mpm = _model(len(NEW), head_args={"sp": {"num_context": 1}})
    with pytest.raises(IncompatibleWeightsError, match=r"unexpected in the file:\n    head.context.1.") as err:
        fine_tune(one_mpm, checkpoint[0], classes=NEW, class_map="by_name")
    assert "classifier" not in str(err.value)  # the classifiers' class count is no difference here
    no_aux = _model(len(NEW), aux_head=None)
    with pytest.raises(IncompatibleWeightsError, match=r"unexpected in the file:\n    aux_head"):
        fine_tune(no_aux, checkpoint[0], classes=NEW, class_map="by_name")


FOLDER_CLASSES = "[road, sidewalk, building, wall, fence, pole, traffic sign, vegetation, terrain, sky, pothole]"


@pytest.mark.slow
def test_train_fine_tunes_a_cityscapes_run_into_a_folder_label_set(synthetic_cityscapes, synthetic_folder, tmp_path):
    """A 19-class run's last.pth -> an 11-class folder dataset by name: the report, training, the stored labels."""
    from test_train import TINY

    common = [*TINY, "train.eval_interval=0", "train.checkpoint_interval=2", "model.backbone.pretrained=null"]
    first = tmp_path / "city"
    city = [f"data.root={synthetic_cityscapes}", f"train.work_dir={first}", "train.max_iters=2"]
    assert train.main(["--config", str(ROOT / "configs/demo.yaml"), *common, *city]) == 0
    state = torch.load(first / "last.pth", weights_only=True)
    assert state["classes"] == list(Cityscapes.classes) and state["palette"] == [list(c) for c in Cityscapes.palette]
    assert torch.load(first / "best.pth", weights_only=True)["classes"] == list(Cityscapes.classes)

    second = tmp_path / "folder"
    folder = [
        f"data.root={synthetic_folder}", f"data.dataset_args.classes={FOLDER_CLASSES}",
        f"train.load_from={first / 'last.pth'}", "train.class_map=by_name", f"train.work_dir={second}",
        "train.max_iters=3",
    ]  # fmt: skip
    assert train.main(["--config", str(ROOT / "configs/custom_folder.yaml"), *common, *folder]) == 0
    log = (second / "train.log").read_text()
    assert (
        "classifier 19 -> 11 classes (head.classifier, aux_head.classifier): rows copied for road, sidewalk, "
        "building, wall, fence, pole, traffic sign, vegetation, terrain, sky; re-initialised: pothole"
    ) in log
    losses = [float(x) for x in re.findall(r"iter \d+/3 loss ([\d.]+)", log)]
    assert len(losses) == 3 and all(0 < x < 10 for x in losses)
    last = torch.load(second / "last.pth", weights_only=True)
    assert last["classes"][-1] == "pothole" and len(last["palette"]) == 11
    assert last["model"]["head.classifier.weight"].shape[0] == 11


@pytest.fixture(scope="module")
def demo_checkpoints(tmp_path_factory):
    """The demo model's weights with class names, with none, and a model of another backbone width."""
    from utils.config import load_config

    folder = tmp_path_factory.mktemp("ckpt")
    model = build_model(load_config(ROOT / "configs/demo.yaml"), load_pretrained=False)
    torch.save({"model": model.state_dict(), "classes": list(Cityscapes.classes)}, folder / "named.pth")
    torch.save({"model": model.state_dict()}, folder / "bare.pth")
    other = build_model(
        load_config(ROOT / "configs/demo.yaml", ["model.backbone.base_width=16"]), load_pretrained=False
    )
    torch.save({"model": other.state_dict(), "classes": list(Cityscapes.classes)}, folder / "narrow.pth")
    return folder


@pytest.mark.parametrize(
    "extra, error",
    [
        (["loss.class_weight=[1, 2, 3]"], r"loss.class_weight has 3 weights but the model has 19 classes"),
        (["train.load_from=CKPT/named.pth", "train.class_map={pothole: road}"], r"'pothole' is not a class of the "),
        (["train.load_from=CKPT/named.pth", "train.class_map={road: crack}"], r"'crack' is not a class of the check"),
        (["train.load_from=CKPT/bare.pth", "train.class_map=by_name"], r"stores no class names .* explicit table"),
        (["train.load_from=CKPT/narrow.pth", "train.class_map=by_name"], r"shape mismatches:\n    backbone.conv1.0"),
        (["train.class_map=by_name"], r"train.class_map maps the classes of train.load_from"),
    ],
)
def test_bad_fine_tuning_and_loss_settings_fail_before_anything_is_written(
    synthetic_cityscapes, demo_checkpoints, tmp_path, extra, error
):
    work_dir = tmp_path / "run"
    extra = [e.replace("CKPT", str(demo_checkpoints)) for e in extra]
    argv = ["--config", str(ROOT / "configs/demo.yaml"), f"data.root={synthetic_cityscapes}", "train.batch_size=2"]
    with pytest.raises(ValueError, match=error):
        train.main([*argv, f"train.work_dir={work_dir}", *extra])
    assert not work_dir.exists()
