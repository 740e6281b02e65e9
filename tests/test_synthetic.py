"""The synthetic street world: deterministic, consistent with its polygons, and built for strip pooling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.cityscapes import NAME_TO_LABEL
from datasets.synthetic import CLASSES, make_scene, rasterize

IDS = {name: label.id for name, label in NAME_TO_LABEL.items() if label.id >= 0}


def test_same_seed_same_scene_other_seed_other_scene():
    a, b, c = make_scene([0, 0, 5], 64, 128), make_scene([0, 0, 5], 64, 128), make_scene([0, 0, 6], 64, 128)
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    assert not np.array_equal(a.image, c.image)


def test_labels_equal_the_polygon_rasterisation():
    scene = make_scene(3, 96, 192)
    assert np.array_equal(scene.labels(IDS), rasterize(scene.objects, (96, 192), IDS, 0))


def test_every_world_class_appears_and_thin_structures_are_thin():
    seen, aspect = set(), {"pole": [], "wall": [], "fence": []}
    for i in range(12):
        scene = make_scene([1, i], 256, 512)
        seen |= {label for label, _ in scene.objects}
        for label, polygon in scene.objects:
            if label in aspect:
                xs, ys = zip(*polygon)
                aspect[label].append((max(ys) - min(ys) + 1) / (max(xs) - min(xs) + 1))
    assert set(CLASSES) <= seen
    assert min(aspect["pole"]) > 10  # tall and thin
    assert max(aspect["wall"]) < 0.5 and max(aspect["fence"]) < 0.5  # long and low


def test_thin_structures_share_one_grey_so_colour_cannot_tell_them_apart():
    """Poles, walls and fences: same mean grey within a scene; only shape separates them."""
    gaps = []
    for i in range(10):
        scene = make_scene([2, i], 256, 512)
        labels = scene.labels(IDS)
        grey = scene.image.astype(float).mean(-1)
        means = {n: grey[labels == IDS[n]].mean() for n in ("pole", "wall") if (labels == IDS[n]).sum() > 50}
        if len(means) == 2:
            gaps.append(abs(means["pole"] - means["wall"]))
    assert gaps and np.median(gaps) < 12


@pytest.mark.parametrize("split", ["train", "val"])
def test_polygon_files_are_valid_cityscapes_json(synthetic_cityscapes, split):
    from cityscapesscripts.helpers.annotation import Annotation

    files = sorted((synthetic_cityscapes / "gtFine" / split).glob("*/*_polygons.json"))
    assert files
    annotation = Annotation()
    annotation.fromJsonFile(str(files[0]))
    assert (annotation.imgHeight, annotation.imgWidth) == (64, 128)
    assert annotation.objects[0].label == "sky"
    assert json.loads(files[0].read_text())["objects"][0]["polygon"][0] == [0, 0]


def test_instance_ids_follow_the_cityscapes_convention(synthetic_cityscapes):
    from PIL import Image

    for path in sorted((synthetic_cityscapes / "gtFine/train").glob("*/*_instanceIds.png")):
        instances = np.asarray(Image.open(path)).astype(int)
        labels = np.asarray(Image.open(str(path).replace("instanceIds", "labelIds")))
        cars = labels == IDS["car"]
        assert (instances[cars] // 1000 == IDS["car"]).all()  # car instances: 26000 + k
        assert (instances[~cars] == labels[~cars]).all()  # stuff: the label id itself
