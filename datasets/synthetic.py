"""A synthetic street world written in the real on-disk formats (Cityscapes, ADE20K, Pascal Context, folder).

It is the embedded dataset of the demo and the data of every end-to-end test, so the real loaders
read it. Each scene is a list of labelled polygons drawn back to front (sky, buildings, terrain,
sidewalks, road, walls, fences, vegetation, poles, traffic signs, cars, ego vehicle). Labels are
rasterised exactly as ``cityscapesscripts`` rasterises ``*_gtFine_polygons.json`` (PIL polygon
fill, later objects on top), and the image is painted from the same rasterisation, so image,
labels and polygons agree pixel for pixel.

What makes it a test of strip pooling rather than of colour: poles, fences, walls, sign backs,
sidewalks and grey buildings share one concrete-grey texture distribution, so a small window
cannot tell them apart; a pole is a long vertical strip, a wall a long horizontal band, a fence a
band with a lattice, a sign a plate on top of a pole. Noise and per-image colour shifts keep
colour alone from solving the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .cityscapes import NAME_TO_LABEL

# The classes the world contains (Cityscapes names); "ego vehicle" is void (ignored).
CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "car",
)
VOID = ("ego vehicle",)
ADE20K_IDS = {  # the ADE20K class (1-based file value) of each world class
    "road": 7, "sidewalk": 12, "building": 2, "wall": 1, "fence": 33, "pole": 94, "traffic sign": 44,
    "vegetation": 5, "terrain": 10, "sky": 3, "car": 21, "ego vehicle": 0,
}  # fmt: skip
FOLDER_IDS = {**{name: i for i, name in enumerate(CLASSES)}, "ego vehicle": 255}

Polygon = list[tuple[int, int]]


@dataclass
class Scene:
    objects: list[tuple[str, Polygon]]  # (Cityscapes label name, polygon), back to front
    index: np.ndarray  # (H, W) uint8: which object is visible at each pixel
    image: np.ndarray  # (H, W, 3) uint8

    def labels(self, values: dict[str, int]) -> np.ndarray:
        """(H, W) uint8 label image with ``values[label]`` per object, equal to ``rasterize``."""
        return np.array([values[label] for label, _ in self.objects], dtype=np.uint8)[self.index]


def rasterize(
    objects: list[tuple[str, Polygon]], size: tuple[int, int], values: dict[str, int], background: int
) -> np.ndarray:
    """Label image as cityscapesscripts' json2labelImg draws it: PIL polygons in order, later on top."""
    height, width = size
    image = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(image)
    for label, polygon in objects:
        draw.polygon(polygon, fill=values[label])
    return np.asarray(image)


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise with features about ``cell`` pixels wide, roughly unit variance."""
    grid = torch.from_numpy(rng.standard_normal((1, 1, h // cell + 2, w // cell + 2)).astype(np.float32))
    return F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)[0, 0].numpy()


def _poly(*points: tuple[float, float]) -> Polygon:
    """Integer pixel coordinates, as in Cityscapes polygon files."""
    return [(round(x), round(y)) for x, y in points]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return _poly((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _layout(rng: np.random.Generator, h: int, w: int) -> list[tuple[str, Polygon]]:
    horizon = h * rng.uniform(0.38, 0.5)
    vanish = w * rng.uniform(0.35, 0.65)
    objects: list[tuple[str, Polygon]] = [("sky", _rect(0, 0, w - 1, h - 1))]
    x = -rng.uniform(0, w * 0.1)
    while x < w:  # a street front of buildings with gaps of sky
        bw = w * rng.uniform(0.08, 0.3)
        if rng.random() < 0.85:
            objects.append(("building", _rect(x, h * rng.uniform(0.03, 0.3), x + bw, horizon + h * 0.04)))
        x += bw + (w * rng.uniform(0.02, 0.08) if rng.random() < 0.3 else 0)
    objects.append(("terrain", _rect(0, horizon, w - 1, h - 1)))
    road_half = w * rng.uniform(0.02, 0.05)
    left, right = w * rng.uniform(-0.1, 0.2), w * rng.uniform(0.8, 1.1)
    for side in (-1, 1):  # sidewalks along the road, terrain beyond them
        near = left if side < 0 else right
        width_bottom = w * rng.uniform(0.15, 0.45)
        sidewalk = _poly(
            (vanish + side * road_half * 3, horizon),
            (vanish, horizon),
            (near, h - 1),
            (near + side * width_bottom, h - 1),
        )
        objects.append(("sidewalk", sidewalk))
    road = _poly((vanish - road_half, horizon), (vanish + road_half, horizon), (right, h - 1), (left, h - 1))
    objects.append(("road", road))
    for _ in range(rng.integers(0, 3)):  # walls: long, low, horizontal
        y = horizon + h * rng.uniform(-0.02, 0.06)
        x0 = w * rng.uniform(-0.1, 0.7)
        objects.append(("wall", _rect(x0, y - h * rng.uniform(0.04, 0.09), x0 + w * rng.uniform(0.2, 0.5), y)))
    for _ in range(rng.integers(1, 4)):  # fences: long bands with a lattice texture
        y = horizon + h * rng.uniform(-0.01, 0.08)
        x0 = w * rng.uniform(-0.1, 0.7)
        objects.append(("fence", _rect(x0, y - h * rng.uniform(0.05, 0.1), x0 + w * rng.uniform(0.2, 0.5), y)))
    for _ in range(rng.integers(2, 6)):  # tree crowns: noisy blobs
        cx, cy, r = w * rng.uniform(0, 1), horizon - h * rng.uniform(0.02, 0.15), h * rng.uniform(0.05, 0.14)
        angles = np.linspace(0, 2 * np.pi, 18, endpoint=False)
        radii = r * rng.uniform(0.75, 1.2, size=angles.size)
        crown = _poly(*((cx + rr * np.cos(a) * 1.3, cy + rr * np.sin(a)) for a, rr in zip(angles, radii)))
        objects.append(("vegetation", crown))
    thick = max(2, round(w * 0.007))
    for _ in range(rng.integers(5, 12)):  # poles: long, thin, vertical; some carry a sign
        px = w * rng.uniform(0.02, 0.98)
        base = horizon + (h - horizon) * rng.uniform(0.05, 0.5)
        top = base - h * rng.uniform(0.3, 0.55)
        objects.append(("pole", _rect(px, top, px + thick, base)))
        if rng.random() < 0.55:
            size = h * rng.uniform(0.04, 0.07)
            sign = _rect(px + thick / 2 - size * 0.7, top - size * 0.2, px + thick / 2 + size * 0.7, top + size)
            objects.append(("traffic sign", sign))
    for depth in sorted(rng.uniform(0.15, 0.9, size=rng.integers(0, 4))):  # cars, far to near
        y = horizon + (h - horizon) * depth
        half = (road_half + (right - left) / 2 * depth) * rng.uniform(0.25, 0.45)
        cx = vanish + (left + (right - left) * rng.uniform(0.25, 0.75) - vanish) * depth
        body_top, roof_top = y - half * 0.55, y - half * 0.95
        car = _poly(
            (cx - half, y), (cx + half, y), (cx + half, body_top),
            (cx + half * 0.6, roof_top), (cx - half * 0.6, roof_top), (cx - half, body_top),
        )  # fmt: skip
        objects.append(("car", car))
    if rng.random() < 0.5:  # the ego vehicle's bonnet, a void region as in Cityscapes
        bonnet = _poly((0, h - 1), (w - 1, h - 1), (w - 1, h * 0.93), (w / 2, h * 0.9), (0, h * 0.93))
        objects.append(("ego vehicle", bonnet))
    return objects


def _paint(rng: np.random.Generator, objects: list[tuple[str, Polygon]], index: np.ndarray) -> np.ndarray:
    """Paint the image from the rasterised object index map, one texture per class."""
    h, w = index.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fine = rng.standard_normal((h, w)).astype(np.float32)
    grey = rng.uniform(105, 175)  # the shared concrete grey: poles, walls, fences, sign backs, sidewalks
    concrete = grey + 14 * _noise(rng, h, w, 6) + 8 * fine
    textures = {
        "sky": np.stack([110 + 60 * yy / h, 150 + 50 * yy / h, 225 + 10 * yy / h], -1)
        + 25 * _noise(rng, h, w, 24)[..., None],
        "building": rng.uniform(80, 190) + 12 * _noise(rng, h, w, 8) - 55 * (((yy % 14) > 7) & ((xx % 12) > 6)),
        "terrain": np.array([130, 160, 85]) * rng.uniform(0.8, 1.2) + 25 * _noise(rng, h, w, 3)[..., None],
        "sidewalk": grey + rng.uniform(-10, 10) + 10 * fine - 35 * (((yy % 10) < 1) | ((xx % 16) < 1)),
        "road": rng.uniform(55, 95) + 10 * _noise(rng, h, w, 4) + 8 * fine,
        "wall": concrete,
        "fence": np.where(((xx % 9) < 2) | ((yy % 7) < 2), concrete, concrete * 0.55),
        "vegetation": np.array([60, 115, 45]) * rng.uniform(0.7, 1.2) + 35 * _noise(rng, h, w, 2)[..., None],
        "pole": concrete,
        "traffic sign": concrete,
        "car": np.full((h, w), 150.0),
        "ego vehicle": 35 + 20 * yy / h,
    }
    image = np.zeros((h, w, 3), np.float32)
    for i, (label, polygon) in enumerate(objects):
        mask = index == i
        if not mask.any():
            continue
        texture = textures[label]
        texture = texture[mask] if texture.ndim == 3 else texture[mask][:, None].repeat(3, 1)
        if label in ("car", "building") or (label == "traffic sign" and rng.random() < 0.6):
            tint = rng.uniform(0.4, 1.6, 3) if label != "building" else rng.uniform(0.85, 1.15, 3)
            if label == "traffic sign":  # a coloured sign face; the rest show their grey back
                tint = np.array([(1.5, 1.4, 0.2), (0.3, 0.6, 1.6), (1.6, 0.3, 0.3)][rng.integers(0, 3)])
            texture = texture * tint
        if label == "car":  # dark windows in the upper part of the car
            ys = np.nonzero(mask)[0]
            texture[ys < ys.min() + 0.35 * (ys.max() - ys.min() + 1)] *= 0.3
        if label == "road":  # lane markings: a dashed centre line
            ys, xs = np.nonzero(mask)
            centre = np.abs(
                xs - np.interp(ys, [ys.min(), ys.max()], [polygon[0][0] + 1, (polygon[2][0] + polygon[3][0]) / 2])
            )
            texture[(centre < 1 + 4 * (ys - ys.min()) / h) & ((ys // 9) % 2 == 0)] = 225
        image[mask] = texture
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15) + 4 * rng.standard_normal((h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_scene(seed: int | list[int], height: int = 256, width: int = 512) -> Scene:
    """One deterministic scene: the same seed always gives the same image and polygons."""
    rng = np.random.default_rng(seed)
    objects = _layout(rng, height, width)
    assert len(objects) < 256, "the object index map is uint8"
    index = rasterize(
        [(str(i), p) for i, (_, p) in enumerate(objects)], (height, width), {str(i): i for i in range(len(objects))}, 0
    )
    return Scene(objects, index, _paint(rng, objects, index))


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)  # fast; PNG is lossless at any level


def write_cityscapes(out: Path, counts: dict[str, int], size: tuple[int, int], seed: int = 0) -> None:
    """leftImg8bit + gtFine (labelIds, color, instanceIds, polygons.json) as Cityscapes ships them.

    Test images come without annotations, as the benchmark withholds them.
    """
    ids = {name: label.id for name, label in NAME_TO_LABEL.items() if label.id >= 0}
    color = np.zeros((256, 3), np.uint8)
    for label in NAME_TO_LABEL.values():
        if label.id >= 0:
            color[label.id] = label.color
    for split_index, (split, count) in enumerate(counts.items()):
        for i in _progress(range(count), f"cityscapes {split}"):
            city = f"synth{split}{i % 3}"
            stem = f"{city}_{i:06d}_000019"
            scene = make_scene([seed, split_index, i], *size)
            _save_png(scene.image, out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            if split == "test":
                continue
            gt = out / "gtFine" / split / city / stem
            label_ids = scene.labels(ids)
            _save_png(label_ids, Path(f"{gt}_gtFine_labelIds.png"))
            _save_png(color[label_ids], Path(f"{gt}_gtFine_color.png"))
            instance = label_ids.astype(np.uint16)
            for k, (label, _) in enumerate(scene.objects):
                if NAME_TO_LABEL[label].has_instances:
                    instance[scene.index == k] = NAME_TO_LABEL[label].id * 1000 + k
            _save_png(instance, Path(f"{gt}_gtFine_instanceIds.png"))
            polygons = {
                "imgHeight": size[0],
                "imgWidth": size[1],
                "objects": [
                    {"id": k, "label": label, "polygon": [list(p) for p in polygon], "deleted": 0, "verified": 0}
                    for k, (label, polygon) in enumerate(scene.objects)
                ],
            }
            Path(f"{gt}_gtFine_polygons.json").write_text(json.dumps(polygons))


def write_ade20k(out: Path, counts: dict[str, int], size: tuple[int, int], seed: int = 0) -> None:
    """ADEChallengeData2016/{images,annotations}/{training,validation}; annotations 0 = other, 1..150."""
    root = out / "ADEChallengeData2016"
    for split_index, (split, count) in enumerate(counts.items()):
        folder, prefix = {"train": ("training", "ADE_train"), "val": ("validation", "ADE_val")}[split]
        for i in _progress(range(count), f"ade20k {split}"):
            scene = make_scene([seed, split_index, i], *size)
            image_path = root / "images" / folder / f"{prefix}_{i + 1:08d}.jpg"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene.image).save(image_path, quality=95)
            _save_png(scene.labels(ADE20K_IDS), root / "annotations" / folder / f"{prefix}_{i + 1:08d}.png")


def write_folder(out: Path, counts: dict[str, int], size: tuple[int, int], seed: int = 0) -> None:
    """images/<split>/*.jpg + masks/<split>/*.png with ids 0..10 in ``CLASSES`` order, 255 for void."""
    for split_index, (split, count) in enumerate(counts.items()):
        for i in _progress(range(count), f"folder {split}"):
            scene = make_scene([seed, split_index, i], *size)
            image_path = out / "images" / split / f"street_{i:05d}.jpg"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene.image).save(image_path, quality=95)
            _save_png(scene.labels(FOLDER_IDS), out / "masks" / split / f"street_{i:05d}.png")


# The 5-class colour-mask export (``write_folder_rgb``): (name, colour, world classes), background first.
FOLDER_RGB_CLASSES = (
    ("background", (0, 0, 0), ()),  # everything else: buildings, walls, fences, terrain, sky, the ego vehicle
    ("road", (128, 64, 128), ("road",)),
    ("sidewalk", (244, 35, 232), ("sidewalk",)),
    ("car", (0, 0, 142), ("car",)),
    ("vegetation", (107, 142, 35), ("vegetation",)),
    ("thin structure", (220, 220, 0), ("pole", "traffic sign")),
)


def write_folder_rgb(out: Path, counts: dict[str, int], size: tuple[int, int], seed: int = 0) -> None:
    """The folder layout with RGB colour masks of 6 classes (``FOLDER_RGB_CLASSES``) and ``classes.yaml``
    naming each class's colour: the input of a fine-tuning walk-through (``mask_format: rgb``)."""
    code = {world: i for i, (_, _, worlds) in enumerate(FOLDER_RGB_CLASSES) for world in worlds}
    values = {name: code.get(name, 0) for name in (*CLASSES, *VOID)}
    palette = np.array([color for _, color, _ in FOLDER_RGB_CLASSES], np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    classes = [{"name": name, "color": list(color)} for name, color, _ in FOLDER_RGB_CLASSES]
    (out / "classes.yaml").write_text("".join(f"- {json.dumps(c)}\n" for c in classes))  # JSON lines are YAML
    for split_index, (split, count) in enumerate(counts.items()):
        for i in _progress(range(count), f"folder-rgb {split}"):
            scene = make_scene([seed, split_index, i], *size)
            image_path = out / "images" / split / f"street_{i:05d}.jpg"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene.image).save(image_path, quality=95)
            _save_png(palette[scene.labels(values)], out / "masks" / split / f"street_{i:05d}.png")


# The Pascal Context class (by name; its file value is the index in CLASSES_60) of each world class;
# poles have no Pascal Context class and the ego vehicle is void: both background (0).
PASCAL_CONTEXT_NAMES = {
    "road": "road", "sidewalk": "sidewalk", "building": "building", "wall": "wall", "fence": "fence",
    "pole": "background", "traffic sign": "sign", "vegetation": "tree", "terrain": "grass", "sky": "sky",
    "car": "car", "ego vehicle": "background",
}  # fmt: skip


def write_pascal_context(out: Path, counts: dict[str, int], size: tuple[int, int], seed: int = 0) -> None:
    """VOCdevkit/VOC2010 with JPEGImages and the masks in both layouts: PyTorch-Encoding's {split}.pth and
    MMSegmentation's SegmentationClassContext/*.png + ImageSets/SegmentationContext/{split}.txt (0..59, 0 = background).
    """
    from .pascal_context import CLASSES_60

    values = {name: CLASSES_60.index(context) for name, context in PASCAL_CONTEXT_NAMES.items()}
    root = out / "VOCdevkit" / "VOC2010"
    for split_index, (split, count) in enumerate(counts.items()):
        names, masks = [], {}
        for i in _progress(range(count), f"pascal_context {split}"):
            scene = make_scene([seed, split_index, i], *size)
            name = f"{2008 + split_index}_{i:06d}"  # VOC names; PyTorch-Encoding's key is the name's digits
            image_path = root / "JPEGImages" / f"{name}.jpg"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene.image).save(image_path, quality=95)
            labels = scene.labels(values)
            _save_png(labels, root / "SegmentationClassContext" / f"{name}.png")
            names.append(name)
            masks[int(name.replace("_", ""))] = Image.fromarray(labels)
        listing = root / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("".join(f"{n}\n" for n in names))
        torch.save(masks, root / f"{split}.pth")


WRITERS = {
    "cityscapes": write_cityscapes,
    "ade20k": write_ade20k,
    "folder": write_folder,
    "folder-rgb": write_folder_rgb,
    "pascal_context": write_pascal_context,
}


def _progress(iterable, description: str):
    from tqdm import tqdm

    return tqdm(iterable, desc=description, unit="img", leave=False, disable=None)
