"""Joint transforms: masks keep only class ids and 255, image and mask stay aligned, padding is ignore."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from datasets.transforms import IMAGENET_MEAN, RandomRotatedCrop, RandomScale, eval_transforms, train_transforms

NUM_CLASSES = 19


def _pair(h: int = 60, w: int = 90):
    """An image whose pixels encode their coordinates, and a blocky mask derived from the same coordinates."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = torch.stack([xx % 256, yy % 256, (xx // 8 + yy // 8) % 256]).to(torch.uint8)
    mask = ((xx // 8 + yy // 8) % NUM_CLASSES).to(torch.uint8)
    mask[:4, :4] = 255
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


STEPS = {
    "scale": RandomScale((0.5, 2.0)),
    "rotate": v2.RandomRotation([-10, 10], fill={tv_tensors.Image: (124, 116, 104), tv_tensors.Mask: 255}),
    "blur": v2.GaussianBlur(5, sigma=1.1),
    "flip": v2.RandomHorizontalFlip(1.0),
    "crop": v2.RandomCrop([80, 120], pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
    "photometric": v2.RandomPhotometricDistort(p=1.0),
}


@pytest.mark.parametrize("name", sorted(STEPS) + ["all"])
def test_masks_only_hold_class_ids_or_ignore(name):
    transform = STEPS.get(name) or train_transforms(crop_size=(48, 64), photometric=True)
    valid = set(range(NUM_CLASSES)) | {255}
    for seed in range(8):
        torch.manual_seed(seed)
        _, mask = transform(*_pair())
        assert set(torch.unique(mask).tolist()) <= valid
        assert mask.dtype == torch.uint8


def test_flip_and_crop_keep_exact_alignment():
    transform = v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomCrop([40, 50])])
    for seed in range(10):
        torch.manual_seed(seed)
        image, mask = transform(*_pair())
        x, y = image[0].long(), image[1].long()  # the original coordinates of each output pixel
        expected = ((x // 8 + y // 8) % NUM_CLASSES).to(torch.uint8)
        expected[(x < 4) & (y < 4)] = 255
        assert torch.equal(mask, expected)


@pytest.mark.parametrize("step", ["scale", "rotate"])
def test_resampling_steps_keep_alignment(step):
    """Image (bilinear) and mask (nearest) of 32-px blocks agree except along block borders: >= 95%.

    A mask resampled with another size, angle or offset than its image fails this.
    """
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(160), indexing="ij")
    block = (xx // 32 + 2 * (yy // 32)) % NUM_CLASSES
    image = tv_tensors.Image((block * 10).to(torch.uint8).expand(3, -1, -1).clone())
    mask = tv_tensors.Mask(block.to(torch.uint8))
    for seed in range(5):
        torch.manual_seed(seed)
        out_image, out_mask = STEPS[step](image, mask)
        inside = out_mask != 255
        block_of_image = (out_image[0].float() / 10).round().long()
        assert (block_of_image[inside] == out_mask[inside].long()).float().mean() > 0.95


def test_random_scale_is_relative_to_each_image():
    torch.manual_seed(0)
    image, mask = RandomScale((0.5, 0.5))(*_pair(60, 90))
    assert image.shape[-2:] == mask.shape == (30, 45)
    image, _ = RandomScale((2.0, 2.0))(*_pair(33, 21))
    assert image.shape[-2:] == (66, 42)


def test_padding_uses_the_mean_and_ignore():
    image, mask = _pair(20, 30)
    mask[mask == 255] = 0  # so that every 255 in the output is padding
    out_image, out_mask = train_transforms(
        crop_size=(64, 64), scale_range=(1, 1), rotate_range=(0, 0), blur_prob=0, flip_prob=0
    )(image, mask)
    assert (out_mask != 255).sum() == 20 * 30  # every source pixel survives; the rest is padding
    padded = out_mask == 255
    # padding is the mean colour, i.e. ~0 after normalisation (uint8 rounding of the mean)
    assert out_image[:, padded].abs().max() < 0.02
    assert out_image.shape == (3, 64, 64) and out_image.dtype == torch.float32


def test_eval_transforms_normalise_the_image_and_keep_the_mask():
    image, mask = _pair()
    out_image, out_mask = eval_transforms()(image, mask)
    assert torch.equal(out_mask, mask)
    expected = (image.float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor((0.229, 0.224, 0.225))[
        :, None, None
    ]
    torch.testing.assert_close(out_image, expected)


def test_steps_with_zero_probability_are_left_out():
    pipeline = train_transforms(crop_size=(8, 8), rotate_range=(0, 0), blur_prob=0, flip_prob=0)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == ["RandomScale", "RandomCrop", "ToDtype", "Normalize"]
    full = train_transforms(crop_size=(8, 8), rotate_range=(-1, 1), photometric=True)
    names = [type(t).__name__ for t in full.transforms]
    assert names == [
        "RandomScale", "RandomRotatedCrop", "RandomApply", "RandomHorizontalFlip",
        "RandomPhotometricDistort", "ToDtype", "Normalize",
    ]  # fmt: skip


def _rotate_then_crop(x, params, crop, mode, fill):
    """The stock steps: RandomRotation, then RandomCrop(pad_if_needed), which pads both sides by the deficit."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max(0, crop[0] - h), max(0, crop[1] - w)
    x = F.rotate(x, params["angle"], mode, fill=fill)
    x = F.pad(x, [pad_w, pad_h, pad_w, pad_h], fill=fill)
    return F.crop(x, params["top"] + pad_h, params["left"] + pad_w, *crop)


@pytest.mark.parametrize("size", [(200, 300), (60, 90), (100, 40)])  # larger, smaller, mixed vs the crop
def test_rotated_crop_equals_rotation_then_padded_crop(size):
    """Same parameters -> the same mask exactly and the same image up to uint8 rounding, except the
    image's own border pixels, which torchvision blends with the fill quadratically (we blend linearly)."""
    h, w = size
    crop = (80, 120)
    fill = {tv_tensors.Image: (124, 116, 104), tv_tensors.Mask: 255}
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = tv_tensors.Mask(((xx // 7 + yy // 5) % NUM_CLASSES).to(torch.uint8))
    transform = RandomRotatedCrop(crop, (-10, 10), fill)
    for seed in range(6):
        torch.manual_seed(seed)
        params = transform.make_params([image, mask])
        ours_image, ours_mask = transform.transform(image, params), transform.transform(mask, params)

        assert torch.equal(ours_mask, _rotate_then_crop(mask, params, crop, InterpolationMode.NEAREST, 255))
        fill_colour = list(fill[tv_tensors.Image])
        expected = _rotate_then_crop(image, params, crop, InterpolationMode.BILINEAR, fill_colour)
        ones = tv_tensors.Image(torch.ones(1, h, w))  # < 1 on the image's rotated border
        weight = _rotate_then_crop(ones, params, crop, InterpolationMode.BILINEAR, None)[0]
        interior = weight > 0.999
        assert (ours_image.int() - expected.int()).abs()[:, interior].max() <= 1
