"""The official SPNet training transforms, transcribed for the tests to compare ours against.

Copied from github.com/Andrew-Qibin/SPNet at commit 5e97da3d055449b7a159cd1d4f333c1cc3b6f8d6,
``util/transform.py`` (semseg's transforms; classes RandScale, RandRotate, RandomGaussianBlur,
RandomHorizontalFlip, Crop, Compose, ToTensor, Normalize) and the training composition of
``tool/train.py``. The ``__call__`` bodies are verbatim (cv2 + numpy + Python's ``random``, which
the tests replace with scripted draws), reformatted only; the constructors keep the official
defaults but drop the argument validation (which uses ``collections.Iterable``, gone since
Python 3.10). The official dataset hands these an RGB float32 image (``np.float32(cv2.imread(...))``) and an
integer label.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
import torch


class Compose:
    def __init__(self, segtransform):
        self.segtransform = segtransform

    def __call__(self, image, label):
        for t in self.segtransform:
            image, label = t(image, label)
        return image, label


class ToTensor:
    def __call__(self, image, label):
        if not isinstance(image, np.ndarray) or not isinstance(label, np.ndarray):
            raise (RuntimeError("segtransform.ToTensor() only handle np.ndarray[eg: data readed by cv2.imread()].\n"))
        if len(image.shape) > 3 or len(image.shape) < 2:
            raise (RuntimeError("segtransform.ToTensor() only handle np.ndarray with 3 dims or 2 dims.\n"))
        if len(image.shape) == 2:
            image = np.expand_dims(image, axis=2)
        if not len(label.shape) == 2:
            raise (RuntimeError("segtransform.ToTensor() only handle np.ndarray labellabel with 2 dims.\n"))

        image = torch.from_numpy(image.transpose((2, 0, 1)))
        if not isinstance(image, torch.FloatTensor):
            image = image.float()
        label = torch.from_numpy(label)
        if not isinstance(label, torch.LongTensor):
            label = label.long()
        return image, label


class Normalize:
    def __init__(self, mean, std=None):
        self.mean = mean
        self.std = std

    def __call__(self, image, label):
        if self.std is None:
            for t, m in zip(image, self.mean):
                t.sub_(m)
        else:
            for t, m, s in zip(image, self.mean, self.std):
                t.sub_(m).div_(s)
        return image, label


class RandScale:
    def __init__(self, scale, aspect_ratio=None):
        self.scale = scale
        self.aspect_ratio = aspect_ratio

    def __call__(self, image, label):
        temp_scale = self.scale[0] + (self.scale[1] - self.scale[0]) * random.random()
        temp_aspect_ratio = 1.0
        if self.aspect_ratio is not None:
            temp_aspect_ratio = self.aspect_ratio[0] + (self.aspect_ratio[1] - self.aspect_ratio[0]) * random.random()
            temp_aspect_ratio = math.sqrt(temp_aspect_ratio)
        scale_factor_x = temp_scale * temp_aspect_ratio
        scale_factor_y = temp_scale / temp_aspect_ratio
        image = cv2.resize(image, None, fx=scale_factor_x, fy=scale_factor_y, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, None, fx=scale_factor_x, fy=scale_factor_y, interpolation=cv2.INTER_NEAREST)
        return image, label


class Crop:
    def __init__(self, size, crop_type="center", padding=None, ignore_label=255):
        self.crop_h, self.crop_w = size
        self.crop_type = crop_type
        self.padding = padding
        self.ignore_label = ignore_label

    def __call__(self, image, label):
        h, w = label.shape
        pad_h = max(self.crop_h - h, 0)
        pad_w = max(self.crop_w - w, 0)
        pad_h_half = int(pad_h / 2)
        pad_w_half = int(pad_w / 2)
        if pad_h > 0 or pad_w > 0:
            if self.padding is None:
                raise (RuntimeError("segtransform.Crop() need padding while padding argument is None\n"))
            image = cv2.copyMakeBorder(
                image, pad_h_half, pad_h - pad_h_half, pad_w_half, pad_w - pad_w_half, cv2.BORDER_CONSTANT,
                value=self.padding,
            )  # fmt: skip
            label = cv2.copyMakeBorder(
                label, pad_h_half, pad_h - pad_h_half, pad_w_half, pad_w - pad_w_half, cv2.BORDER_CONSTANT,
                value=self.ignore_label,
            )  # fmt: skip
        h, w = label.shape
        if self.crop_type == "rand":
            h_off = random.randint(0, h - self.crop_h)
            w_off = random.randint(0, w - self.crop_w)
        else:
            h_off = int((h - self.crop_h) / 2)
            w_off = int((w - self.crop_w) / 2)
        image = image[h_off : h_off + self.crop_h, w_off : w_off + self.crop_w]
        label = label[h_off : h_off + self.crop_h, w_off : w_off + self.crop_w]
        return image, label


class RandRotate:
    def __init__(self, rotate, padding, ignore_label=255, p=0.5):
        self.rotate = rotate
        self.padding = padding
        self.ignore_label = ignore_label
        self.p = p

    def __call__(self, image, label):
        if random.random() < self.p:
            angle = self.rotate[0] + (self.rotate[1] - self.rotate[0]) * random.random()
            h, w = label.shape
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
            image = cv2.warpAffine(
                image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                borderValue=self.padding,
            )  # fmt: skip
            label = cv2.warpAffine(
                label, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                borderValue=self.ignore_label,
            )  # fmt: skip
        return image, label


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, label):
        if random.random() < self.p:
            image = cv2.flip(image, 1)
            label = cv2.flip(label, 1)
        return image, label


class RandomGaussianBlur:
    def __init__(self, radius=5):
        self.radius = radius

    def __call__(self, image, label):
        if random.random() < 0.5:
            image = cv2.GaussianBlur(image, (self.radius, self.radius), 0)
        return image, label


def train_transform(args, mean, std, normalize=True):
    """``train_transform`` of tool/train.py (``mean``, ``std`` already times 255, as there).

    ``normalize=False`` stops after the crop, to compare images in grey levels.
    """
    steps = [
        RandScale([args.scale_min, args.scale_max]),
        RandRotate([args.rotate_min, args.rotate_max], padding=mean, ignore_label=args.ignore_label),
        RandomGaussianBlur(),
        RandomHorizontalFlip(),
        Crop([args.train_h, args.train_w], crop_type="rand", padding=mean, ignore_label=args.ignore_label),
    ]
    if normalize:
        steps += [ToTensor(), Normalize(mean=mean, std=std)]
    return Compose(steps)


def to_official(image: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W) uint8 RGB and (H, W) labels -> what the official dataset yields: HxWx3 float32, HxW labels."""
    return np.float32(image.permute(1, 2, 0).numpy()), mask.numpy().copy()
