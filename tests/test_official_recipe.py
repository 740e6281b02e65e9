"""Our training data pipeline against the official one (tests/official_transforms.py, run through OpenCV).

Both sides get the same random draws: ours draws its parameters (``make_params``), and the official
classes' ``random`` is replaced by a script that returns the values giving the same parameters.
Images are compared in grey levels before normalisation; masks exactly, where the two are meant to
agree (the one documented difference: our masks are resized nearest-exact).
"""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

import official_transforms as official
from conftest import ROOT
from datasets.sampler import iterations_per_epoch
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ScaleRotateBlurFlipCrop, train_transforms
from utils.config import load_config

FILL = {tv_tensors.Image: IMAGENET_MEAN, tv_tensors.Mask: 255}
MEAN_255 = [m * 255 for m in IMAGENET_MEAN]  # tool/train.py: mean and std times value_scale 255
STD_255 = [s * 255 for s in IMAGENET_STD]


class ScriptedRandom:
    """Stands in for Python's ``random`` in the official classes: returns the given draws, in order."""

    def __init__(self, randoms: list[float], randints: list[int]) -> None:
        self.randoms, self.randints = list(randoms), list(randints)

    def random(self) -> float:
        return self.randoms.pop(0)

    def randint(self, low: int, high: int) -> int:
        value = self.randints.pop(0)
        assert low <= value <= high, (low, value, high)  # the same range as ours
        return value


def official_pipeline(monkeypatch, step: ScaleRotateBlurFlipCrop, params: dict, normalize: bool = False):
    """tool/train.py's train_transform for ``step``'s settings, scripted to draw ``params``.

    RandScale and RandRotate compute ``low + (high - low) * random()``; feeding them the inverse gives
    our scale and angle up to one rounding (about 1e-16 relative).
    """
    (s0, s1), (r0, r1) = step.scale_range, step.rotate_range
    randoms = [(params["scale"] - s0) / (s1 - s0) if s1 > s0 else 0.0]
    randoms += [0.0, (params["angle"] - r0) / (r1 - r0)] if params["angle"] is not None else [0.99]
    randoms += [0.0 if params["blur"] else 0.99, 0.0 if params["flip"] else 0.99]  # coins: random() < p
    script = ScriptedRandom(randoms, [params["top"], params["left"]])
    monkeypatch.setattr(official, "random", script)
    args = SimpleNamespace(
        scale_min=s0, scale_max=s1, rotate_min=r0, rotate_max=r1, ignore_label=255, train_h=step.size[0],
        train_w=step.size[1],
    )  # fmt: skip

    def run(image, mask):
        out = official.train_transform(args, MEAN_255, STD_255, normalize)(*official.to_official(image, mask))
        assert not script.randoms and not script.randints  # the official code drew exactly as often as ours
        return out

    return run


class RandScaleNearestExact(official.RandScale):
    """RandScale with our one documented difference: the label is resized nearest-exact."""

    def __call__(self, image, label):
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * official.random.random()
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        if image.shape[:2] != label.shape:  # cv2.resize copies when the size is unchanged
            rows = np.minimum(((np.arange(image.shape[0]) + 0.5) / scale).astype(int), label.shape[0] - 1)
            cols = np.minimum(((np.arange(image.shape[1]) + 0.5) / scale).astype(int), label.shape[1] - 1)
            label = label[rows][:, cols]
        return image, label


def rotation_ties(step: ScaleRotateBlurFlipCrop, params: dict) -> np.ndarray:
    """Crop pixels whose nearest-neighbour source in RandRotate lies within 1e-4 pixel of a rounding tie.

    There OpenCV's and torch's float arithmetic may round to different neighbours; nowhere else.
    """
    crop_h, crop_w = step.size
    h, w = params["height"], params["width"]
    ties = np.zeros((crop_h, crop_w), dtype=bool)
    if params["angle"] is None:
        return ties
    inverse = cv2.invertAffineTransform(cv2.getRotationMatrix2D((w / 2, h / 2), params["angle"], 1))
    i, j = np.mgrid[:crop_h, :crop_w]
    y = params["top"] + i - max(crop_h - h, 0) // 2  # the padded crop's rows and columns in the rotated image
    x = params["left"] + j - max(crop_w - w, 0) // 2
    x = w - 1 - x if params["flip"] else x
    for coordinate in inverse @ np.stack([x.ravel(), y.ravel(), np.ones(x.size)]):
        ties |= (np.abs(coordinate % 1 - 0.5) < 1e-4).reshape(crop_h, crop_w)
    return ties


def noise_pair(h: int, w: int, seed: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Uniform noise image and labels: the hardest case, every pixel differs from its neighbours."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    mask = torch.randint(0, 19, (h, w), dtype=torch.uint8, generator=gen)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def assert_images_agree(ours: torch.Tensor, theirs: np.ndarray) -> None:
    """Within 1 grey level after rounding both to uint8, every pixel (and within 0.05 before rounding)."""
    ours = ours.permute(1, 2, 0).numpy().astype(np.float64) * 255
    assert np.abs(np.round(ours) - np.round(theirs)).max() <= 1
    assert np.abs(ours - theirs).max() < 0.05


CASES = {  # image size, crop, scale range, rotation range
    "larger": ((90, 120), (48, 64), (0.5, 2.0), (-10, 10)),
    "smaller, odd padding": ((21, 30), (32, 41), (0.9, 1.3), (-10, 10)),
    "mixed": ((100, 40), (64, 64), (0.5, 1.75), (-1, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_draws_give_the_official_output(monkeypatch, case):
    size, crop, scale_range, rotate_range = CASES[case]
    step = ScaleRotateBlurFlipCrop(crop, scale_range, rotate_range, fill=FILL)
    excluded, combinations = 0, set()
    for seed in range(32):
        image, mask = noise_pair(*size, seed)
        torch.manual_seed(seed)
        params = step.make_params([image, mask])
        combinations.add((params["angle"] is not None, params["blur"], params["flip"]))
        official_image, _ = official_pipeline(monkeypatch, step, params)(image, mask)
        assert_images_agree(step.transform(image, params), official_image)

        with monkeypatch.context() as patch:
            patch.setattr(official, "RandScale", RandScaleNearestExact)
            _, official_mask = official_pipeline(patch, step, params)(image, mask)
        ties = rotation_ties(step, params)
        ours = step.transform(mask, params).numpy()
        assert np.array_equal(ours[~ties], official_mask[~ties])
        excluded += ties.sum()
    assert excluded < 0.001 * 32 * crop[0] * crop[1]
    assert len(combinations) == 8  # with and without each of rotation, blur, flip


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_masks_equal_the_official_nearest_at_integer_upscaling(monkeypatch, scale):
    """cv2.INTER_NEAREST samples under the output pixel's corner, nearest-exact under its centre:
    the same source pixel when each source pixel becomes a whole number of output pixels."""
    step = ScaleRotateBlurFlipCrop((48, 64), (1.0, 2.0), (-10, 10), fill=FILL)
    for seed in range(8):
        image, mask = noise_pair(30, 50, seed)
        torch.manual_seed(seed)
        params = step.make_params([image, mask])
        params.update(scale=scale, height=round(30 * scale), width=round(50 * scale))
        params["top"] = min(params["top"], max(params["height"] - 48, 0))
        params["left"] = min(params["left"], max(params["width"] - 64, 0))
        official_image, official_mask = official_pipeline(monkeypatch, step, params)(image, mask)
        assert_images_agree(step.transform(image, params), official_image)
        ties = rotation_ties(step, params)
        assert np.array_equal(step.transform(mask, params).numpy()[~ties], official_mask[~ties])


def test_masks_differ_from_cv2_nearest_only_by_the_sampling_point():
    """The documented difference, at scale 0.6: cv2.INTER_NEAREST takes floor(i / s), we floor((i + 0.5) / s)."""
    step = ScaleRotateBlurFlipCrop((30, 48), (0.6, 0.6), (0, 0), rotate_prob=0, blur_prob=0, flip_prob=0, fill=FILL)
    _, mask = noise_pair(50, 80, 0)
    ours = step(mask).numpy()
    corners = cv2.resize(mask.numpy(), None, fx=0.6, fy=0.6, interpolation=cv2.INTER_NEAREST)
    rows, cols = (np.arange(30) / 0.6).astype(int), (np.arange(48) / 0.6).astype(int)
    assert np.array_equal(corners, mask.numpy()[rows][:, cols])
    rows, cols = ((np.arange(30) + 0.5) / 0.6).astype(int), ((np.arange(48) + 0.5) / 0.6).astype(int)
    assert np.array_equal(ours, mask.numpy()[rows][:, cols])
    assert not np.array_equal(ours, corners)


def test_the_full_pipeline_matches_the_official_normalised_tensor(monkeypatch):
    pipeline = train_transforms(crop_size=(48, 64), scale_range=(0.5, 2.0), rotate_range=(-10, 10))
    step = pipeline.transforms[0]
    for seed in range(6):
        image, mask = noise_pair(60, 90, seed)
        torch.manual_seed(seed)
        params = step.make_params([image, mask])
        torch.manual_seed(seed)  # the pipeline draws the same parameters
        ours, _ = pipeline(image, mask)
        theirs, _ = official_pipeline(monkeypatch, step, params, normalize=True)(image, mask)
        grey_levels = (ours - theirs).abs() * torch.tensor(STD_255)[:, None, None]
        assert grey_levels.max() < 0.05


def test_rotation_has_the_official_probability():
    """RandRotate rotates when random() < p, p = 0.5 (its default; tool/train.py does not set it)."""
    official_p = inspect.signature(official.RandRotate).parameters["p"].default
    assert official_p == 0.5
    assert inspect.signature(train_transforms).parameters["rotate_prob"].default == official_p
    step = train_transforms(crop_size=(8, 8)).transforms[0]
    assert step.rotate_prob == step.blur_prob == step.flip_prob == official_p  # blur and flip: 0.5 as well
    image = tv_tensors.Image(torch.zeros(3, 8, 8, dtype=torch.uint8))
    draws = [step.make_params([image]) for _ in range(4000)]
    for key in ("angle", "blur", "flip"):
        rate = np.mean([d[key] not in (None, False) for d in draws])
        assert abs(rate - 0.5) < 0.03, (key, rate)  # 4 standard deviations
    angles = [d["angle"] for d in draws if d["angle"] is not None]
    assert -10 <= min(angles) < -9.5 and 9.5 < max(angles) <= 10


@pytest.mark.parametrize("flip", [False, True])
def test_smaller_images_are_padded_symmetrically(monkeypatch, flip):
    """Crop pads int(pad / 2) before and the rest after, after the flip: the image stays centred."""
    step = ScaleRotateBlurFlipCrop((32, 41), (1.0, 1.0), (0, 0), rotate_prob=0, blur_prob=0, fill=FILL)
    image, mask = noise_pair(21, 30, 0)
    params = dict(scale=1.0, height=21, width=30, angle=None, blur=False, flip=flip, top=0, left=0)
    ours = step.transform(mask, params).numpy()
    inside = np.argwhere(ours != 255)
    assert inside.min(0).tolist() == [5, 5] and inside.max(0).tolist() == [25, 34]  # 11 rows: 5 + 6, 11 cols: 5 + 6
    expected = mask.numpy()[:, ::-1] if flip else mask.numpy()
    assert np.array_equal(ours[5:26, 5:35], expected)
    official_image, official_mask = official_pipeline(monkeypatch, step, params)(image, mask)
    assert np.array_equal(ours, official_mask)
    assert_images_agree(step.transform(image, params), official_image)


def test_downscaling_does_not_antialias():
    """cv2.INTER_LINEAR, not antialiased: at scale 0.6 the two are 24 grey levels apart on average on noise."""
    step = ScaleRotateBlurFlipCrop((60, 120), (0.6, 0.6), (0, 0), rotate_prob=0, blur_prob=0, flip_prob=0, fill=FILL)
    image, _ = noise_pair(100, 200, 0)
    ours = step(image)
    official_image = cv2.resize(official.to_official(image, image[0])[0], None, fx=0.6, fy=0.6)
    assert_images_agree(ours, official_image)
    antialiased = F.resize(image, [60, 120], InterpolationMode.BILINEAR, antialias=True).float()
    assert (ours * 255 - antialiased).abs().mean() > 15


def test_the_blur_never_mixes_padding_into_the_image(monkeypatch):
    """The official blur comes before the padding: a flat image stays flat up to its edge."""
    step = ScaleRotateBlurFlipCrop((32, 40), (1.0, 1.0), (0, 0), rotate_prob=0, blur_prob=1, fill=FILL)
    image = tv_tensors.Image(torch.full((3, 20, 30), 200, dtype=torch.uint8))
    out = step(image)
    inside = torch.zeros(32, 40, dtype=torch.bool)
    inside[6:26, 5:35] = True
    assert torch.allclose(out[:, inside], torch.tensor(200 / 255))
    assert torch.equal(out[:, ~inside], torch.tensor(IMAGENET_MEAN)[:, None].expand(3, int((~inside).sum())))


@pytest.mark.parametrize("blur", [False, True])
def test_the_blur_sees_the_neighbours_outside_the_crop(monkeypatch, blur):
    """The official blur acts on the whole image: a crop inside it is blurred with its real neighbours."""
    step = ScaleRotateBlurFlipCrop((40, 50), (1.0, 1.0), (0, 0), rotate_prob=0, blur_prob=float(blur), fill=FILL)
    image, mask = noise_pair(80, 100, 1)
    params = dict(scale=1.0, height=80, width=100, angle=None, blur=blur, flip=False, top=17, left=23)
    official_image, _ = official_pipeline(monkeypatch, step, params)(image, mask)
    assert_images_agree(step.transform(image, params), official_image)


@pytest.mark.parametrize(
    "images, batch, replicas", [(2975, 8, 4), (20210, 16, 4), (2975, 8, 1), (23, 4, 2), (10, 6, 3)]
)
def test_iterations_per_epoch_is_the_official_loader_length(images, batch, replicas):
    """tool/train.py: DistributedSampler(train_data) per process, DataLoader(batch / processes, drop_last=True)."""
    loaders = [
        DataLoader(range(images), batch_size=batch // replicas, drop_last=True,
                   sampler=DistributedSampler(range(images), num_replicas=replicas, rank=rank))
        for rank in range(replicas)
    ]  # fmt: skip
    assert {len(loader) for loader in loaders} == {iterations_per_epoch(images, batch, replicas)}


@pytest.mark.parametrize(
    "config, images, epochs",
    [
        ("cityscapes/spnet_r50.yaml", 2975, 180),
        ("cityscapes/spnet_r101.yaml", 2975, 180),
        ("cityscapes/pspnet_r101.yaml", 2975, 180),
        ("ade20k/spnet_r50.yaml", 20210, 120),
        ("ade20k/spnet_r101.yaml", 20210, 120),
    ],
)
def test_configs_train_the_official_number_of_iterations(config, images, epochs):
    """The official runs: 4 GPUs, 180 epochs of Cityscapes train / 120 of ADE20K train."""
    train = load_config(ROOT / "configs" / config).train
    assert train.batch_size // train.per_device_batch == 4
    assert train.max_iters == epochs * iterations_per_epoch(images, train.batch_size, 4)


def test_cityscapes_epoch_is_372_iterations():
    assert iterations_per_epoch(2975, 8, 4) == 372 and math.ceil(2975 / 4) == 744
    with pytest.raises(ValueError, match="multiple"):
        iterations_per_epoch(2975, 6, 4)
