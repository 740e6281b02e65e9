"""MMSegmentation's test-time code, transcribed for tests: resize sizes and ``EncoderDecoder.aug_test``.

Transcribed (read, not imported: neither package is installed here) from
  mmcv v1.7.2 (commit 4c01b026f0afa5a91a5f54aea313788da1e40f95), mmcv/image/geometric.py:
    ``_scale_size``, ``rescale_size`` (as ``imrescale`` calls it);
  mmsegmentation 0.30.0 (the last 0.x release, the PyPI wheel):
    mmseg/datasets/pipelines/test_time_aug.py ``MultiScaleFlipAug``,
    mmseg/datasets/pipelines/transforms.py ``Resize._resize_img`` (keep_ratio), ``RandomFlip``,
    mmseg/models/segmentors/encoder_decoder.py ``slide_inference``, ``whole_inference``, ``inference``,
    ``aug_test``;
  mmcv v2.2.0 (commit 3a5fb4b96ab1b241e7379adf7c326ef6edef6515), mmcv/transforms/processing.py
    ``Resize.transform`` with ``scale_factor``: the size in mmsegmentation 1.x's ``TestTimeAug``.
``cv2.resize`` is ``mmcv.imresize``'s default backend. mmseg resizes the uint8 image and normalises
it after; here the image is already normalised (float), as our loaders give it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def _scale_size(size, scale):
    if isinstance(scale, (float, int)):
        scale = (scale, scale)
    w, h = size
    return int(w * float(scale[0]) + 0.5), int(h * float(scale[1]) + 0.5)


def rescale_size(old_size, scale):
    """(w, h) of ``imrescale`` with a (long, short) tuple ``scale``."""
    w, h = old_size
    max_long_edge = max(scale)
    max_short_edge = min(scale)
    scale_factor = min(max_long_edge / max(h, w), max_short_edge / min(h, w))
    return _scale_size((w, h), scale_factor)


def multi_scale_flip_aug_scales(h, w, img_scale, img_ratios):
    """``MultiScaleFlipAug``'s ``scale`` per ratio: mode 1 (img_scale None) and mode 2 (a tuple)."""
    if img_scale is None:
        return [(int(w * ratio), int(h * ratio)) for ratio in img_ratios]
    return [(int(img_scale[0] * ratio), int(img_scale[1] * ratio)) for ratio in img_ratios]


def size_0x(h, w, img_scale, ratio):
    """(H, W) of the view at ``ratio`` in mmseg 0.x."""
    (scale,) = multi_scale_flip_aug_scales(h, w, img_scale, [ratio])
    new_w, new_h = rescale_size((w, h), scale)
    return new_h, new_w


def size_1x_tta(h, w, ratio):
    """(H, W) of the view at ``ratio`` in mmseg 1.x's ``TestTimeAug``: ``Resize(scale_factor=ratio,
    keep_ratio=True)`` of the original image (its ``tta_pipeline`` has no ``img_scale`` resize)."""
    scale = _scale_size((w, h), ratio)
    new_w, new_h = rescale_size((w, h), scale)
    return new_h, new_w


def slide_inference(encode_decode, img, img_meta, test_cfg, align_corners):
    h_stride, w_stride = test_cfg["stride"]
    h_crop, w_crop = test_cfg["crop_size"]
    batch_size, _, h_img, w_img = img.size()
    preds = img.new_zeros((batch_size, test_cfg["out_channels"], h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_seg_logit = encode_decode(img[:, :, y1:y2, x1:x2])
            preds += F.pad(crop_seg_logit, (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2)))
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    preds = preds / count_mat
    resize_shape = img_meta["img_shape"][:2]
    preds = preds[:, :, : resize_shape[0], : resize_shape[1]]
    return F.interpolate(preds, size=img_meta["ori_shape"][:2], mode="bilinear", align_corners=align_corners)


def whole_inference(encode_decode, img, img_meta, align_corners):
    seg_logit = encode_decode(img)
    resize_shape = img_meta["img_shape"][:2]
    seg_logit = seg_logit[:, :, : resize_shape[0], : resize_shape[1]]
    return F.interpolate(seg_logit, size=img_meta["ori_shape"][:2], mode="bilinear", align_corners=align_corners)


def inference(encode_decode, img, img_meta, test_cfg, align_corners=False):
    if test_cfg["mode"] == "slide":
        seg_logit = slide_inference(encode_decode, img, img_meta, test_cfg, align_corners)
    else:
        seg_logit = whole_inference(encode_decode, img, img_meta, align_corners)
    output = F.softmax(seg_logit, dim=1)
    if img_meta["flip"]:
        output = output.flip(dims=(3,))
    return output


def aug_test(encode_decode, img, img_scale, img_ratios, flip, test_cfg):
    """Averaged softmax (1, C, H, W) of the views ``MultiScaleFlipAug`` makes of ``img`` (H, W, 3)."""
    h, w = img.shape[:2]
    imgs, img_metas = [], []
    for scale in multi_scale_flip_aug_scales(h, w, img_scale, img_ratios):
        for flipped in [False, True] if flip else [False]:
            new_w, new_h = rescale_size((w, h), scale)
            view = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)  # Resize (keep_ratio)
            if flipped:
                view = np.flip(view, axis=1)  # RandomFlip: mmcv.imflip, horizontal
            imgs.append(torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1)))[None])
            img_metas.append({"ori_shape": img.shape, "img_shape": view.shape, "flip": flipped})
    seg_logit = inference(encode_decode, imgs[0], img_metas[0], test_cfg)
    for i in range(1, len(imgs)):
        seg_logit += inference(encode_decode, imgs[i], img_metas[i], test_cfg)
    seg_logit /= len(imgs)
    return seg_logit
