"""Joint transforms: masks keep only class ids and 255, image and mask stay aligned, padding is ignore."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from datasets.transforms import IMAGENET_MEAN, ScaleRotateBlurFlipCrop, eval_transforms, train_transforms

NUM_CLASSES = 19


def _pair(h: int = 60, w: int = 90):
    """An image whose pixels encode their coordinates, and a blocky mask derived from the same coordinates."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = torch.stack([xx % 256, yy % 256, (xx // 8 + yy // 8) % 256]).to(torch.uint8)
    mask = ((xx // 8 + yy // 8) % NUM_CLASSES).to(torch.uint8)
    mask[:4, :4] = 255
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


FILL = {tv_tensors.Image: IMAGENET_MEAN, tv_tensors.Mask: 255}
STEPS = {
    "scale": ScaleRotateBlurFlipCrop((40, 60), (0.5, 2.0), (0, 0), rotate_prob=0, blur_prob=0, flip_prob=0, fill=FILL),
    "scale_rotate_flip": ScaleRotateBlurFlipCrop(
        (40, 60), (1.0, 2.0), (-10, 10), rotate_prob=1, blur_prob=0, fill=FILL
    ),
    "official": ScaleRotateBlurFlipCrop((40, 60), (0.5, 2.0), (-10, 10), fill=FILL),
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


@pytest.mark.parametrize("step", ["scale", "rotate", "scale_rotate_flip"])
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
        grey = out_image[0] * 255 if out_image.is_floating_point() else out_image[0].float()  # ours: float in [0, 1]
        block_of_image = (grey / 10).round().long()
        assert (block_of_image[inside] == out_mask[inside].long()).float().mean() > 0.95


def test_random_scale_is_relative_to_each_image():
    def size(scale, h, w):
        step = ScaleRotateBlurFlipCrop((8, 8), (scale, scale), (0, 0), fill=FILL)
        params = step.make_params([tv_tensors.Image(torch.zeros(3, h, w, dtype=torch.uint8))])
        return params["height"], params["width"]

    assert size(0.5, 60, 90) == (30, 45)
    assert size(2.0, 33, 21) == (66, 42)


def test_padding_uses_the_mean_and_ignore_around_the_centred_image():
    image, mask = _pair(20, 30)
    mask[mask == 255] = 0  # so that every 255 in the output is padding
    out_image, out_mask = train_transforms(
        crop_size=(64, 64), scale_range=(1, 1), rotate_range=(0, 0), blur_prob=0, flip_prob=0
    )(image, mask)
    # every source pixel survives, centred (the official Crop pads int(pad / 2) before); the rest is padding
    assert torch.equal(out_mask[22:42, 17:47], mask) and (out_mask != 255).sum() == 20 * 30
    padded = out_mask == 255
    assert out_image[:, padded].abs().max() < 1e-6  # the exact mean colour: 0 after normalisation
    assert out_image.shape == (3, 64, 64) and out_image.dtype == torch.float32


def test_eval_transforms_normalise_the_image_and_keep_the_mask():
    image, mask = _pair()
    out_image, out_mask = eval_transforms()(image, mask)
    assert torch.equal(out_mask, mask)
    expected = (image.float() / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor((0.229, 0.224, 0.225))[
        :, None, None
    ]
    torch.testing.assert_close(out_image, expected)


def test_photometric_distortion_is_optional():
    names = [type(t).__name__ for t in train_transforms(crop_size=(8, 8)).transforms]
    assert names == ["ScaleRotateBlurFlipCrop", "Normalize"]
    names = [type(t).__name__ for t in train_transforms(crop_size=(8, 8), photometric=True).transforms]
    assert names == ["ScaleRotateBlurFlipCrop", "RandomPhotometricDistort", "Normalize"]
