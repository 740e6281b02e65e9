"""ImageNet backbone init and strict loading: formats, the allow-list, the report and every error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import layout, random_state_dict
from models import build_backbone, build_norm_layer
from models.backbones import ResNet
from models.modules import StripPooling
from models.weights import IncompatibleWeightsError, load_backbone_weights
from official_reference import official_backbone
from utils.config import BackboneConfig


@pytest.fixture(scope="module")
def encoding_r50_file(tmp_path_factory):
    sd = random_state_dict(layout("encoding_resnet50_imagenet"), dtype=torch.float32, seed=2)
    path = tmp_path_factory.mktemp("weights") / "encoding_r50.pth"
    torch.save(sd, path)
    return path, sd


def test_encoding_weights_into_spnet_backbone_report(encoding_r50_file):
    path, sd = encoding_r50_file
    backbone = ResNet(50, attention=StripPooling)
    report = load_backbone_weights(backbone, str(path))
    assert len(report.loaded) == len(sd) - 2
    assert report.dropped == ["fc.bias", "fc.weight"]
    assert len(report.kept_init) == 6 * 14  # 6 SPMs x (3 conv tensors + 1 bias + 2 BNs x 5 entries)
    assert all(".attention." in k for k in report.kept_init)
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    text = str(report)
    assert "layer1.2.attention" in text and "layer4.2.attention" in text and "fc.weight" in text
    assert torch.equal(backbone.layer3[4].conv2.weight, sd["layer3.4.conv2.weight"])


def test_encoding_weights_compute_the_official_backbone(encoding_r50_file):
    path, sd = encoding_r50_file
    backbone = ResNet(50, attention=None).double().eval()
    load_backbone_weights(backbone, str(path))
    x = torch.randn(1, 3, 65, 97, dtype=torch.float64)
    reference = official_backbone({k: v.double() for k, v in sd.items()}, x, prefix="")
    with torch.no_grad():
        for ours, theirs in zip(backbone(x), reference):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def test_encoding_r101_layout_fits_our_r101():
    shapes = layout("encoding_resnet101_imagenet")
    with torch.device("meta"):
        backbone = ResNet(101, attention=StripPooling)
    ours = {k: list(v.shape) for k, v in backbone.state_dict().items() if ".attention." not in k}
    assert ours == {k: v for k, v in shapes.items() if not k.startswith("fc.")}


def test_torchvision_weights_reproduce_torchvision_dilated_resnet(tmp_path):
    """Our backbone (7x7 stem, OS 8, no multi-grid) with torchvision weights == torchvision's dilated ResNet."""
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(tv.state_dict(), tmp_path / "resnet50-tv.pth")
    ours = ResNet(50, deep_stem=False, output_stride=8, multi_grid=None).eval()
    report = load_backbone_weights(ours, str(tmp_path / "resnet50-tv.pth"))
    assert report.dropped == ["fc.bias", "fc.weight"] and report.kept_init == []
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        c = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = []
        for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
            c = layer(c)
            expected.append(c)
        for a, b in zip(ours(x), expected):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _in_the_hub_cache(obj, tmp_path, monkeypatch) -> Path:
    """``obj`` saved as torchvision's ResNet-18 file in a hub cache under ``tmp_path``, named as torchvision
    names it after the first digits of its SHA-256 (the weights' URL is changed to that name)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    saved = tmp_path / "saved.pth"
    torch.save(obj, saved)
    sha256 = hashlib.sha256(saved.read_bytes()).hexdigest()
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(weights.value, "url", f"https://download.pytorch.org/models/resnet18-{sha256[:8]}.pth")
    cached = tmp_path / "hub" / "checkpoints" / f"resnet18-{sha256[:8]}.pth"
    cached.parent.mkdir(parents=True, exist_ok=True)
    return saved.rename(cached)


class _Planted:
    """Unpickled in full, it creates ``marker``: the stand-in for code a planted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_torchvision_weights_by_name_from_the_hub_cache(tmp_path, monkeypatch):
    tv = torchvision.models.resnet18()
    _in_the_hub_cache(tv.state_dict(), tmp_path, monkeypatch)
    cfg = BackboneConfig(
        depth=18,
        deep_stem=False,
        output_stride=32,
        multi_grid=None,
        attention=None,
        pretrained="ResNet18_Weights.IMAGENET1K_V1",
    )
    backbone = build_backbone(cfg, build_norm_layer("bn"))
    assert torch.equal(backbone.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)


def test_a_pickle_planted_in_the_hub_cache_never_runs(tmp_path, monkeypatch):
    """torchvision unpickles a cached file in full and checks its hash on download only (issue: code execution
    through model.backbone.pretrained=ResNet18_Weights.IMAGENET1K_V1)."""
    marker = tmp_path / "the planted code ran"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    real_name = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]  # resnet18-f37072fd.pth
    real_name.parent.mkdir(parents=True)
    torch.save({"weights": _Planted(marker)}, real_name)
    backbone = ResNet(18, deep_stem=False, multi_grid=None)
    with pytest.raises(IncompatibleWeightsError) as err:
        load_backbone_weights(backbone, "ResNet18_Weights.IMAGENET1K_V1")
    sha256 = hashlib.sha256(real_name.read_bytes()).hexdigest()
    assert str(err.value) == (
        f"{real_name}: SHA-256 {sha256} does not start with f37072fd, as the name of torchvision's file for "
        "ResNet18_Weights.IMAGENET1K_V1 says: it is not that file (replaced, or damaged). Delete it; it is "
        "downloaded again"
    )
    assert not marker.exists()

    # a file whose name carries its own hash is still read without building its objects
    planted = _in_the_hub_cache({"weights": _Planted(marker)}, tmp_path, monkeypatch)
    with pytest.raises(IncompatibleWeightsError) as err:
        load_backbone_weights(backbone, "ResNet18_Weights.IMAGENET1K_V1")
    message = str(err.value)
    assert message.startswith(
        f"cannot read {planted} as a PyTorch checkpoint: it contains objects that are not weights (io.open), which "
        "are not loaded: unpickling them could run code from the file."
    )
    assert "truncated" not in message and "download" not in message and "\n" not in message
    assert not marker.exists()


def test_torchvision_weights_are_downloaded_with_the_hash_of_their_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    tv = torchvision.models.resnet18()
    downloads = []

    def download(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, Path(dst).name, hash_prefix))
        torch.save(tv.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    backbone = ResNet(18, deep_stem=False, multi_grid=None)
    with pytest.raises(IncompatibleWeightsError, match="does not start with f37072fd"):  # the fake is not the file
        load_backbone_weights(backbone, "ResNet18_Weights.IMAGENET1K_V1")
    assert downloads == [(url, "resnet18-f37072fd.pth", "f37072fd")]  # torch.hub checks the download against it


def test_torchvision_download_failure_explains_the_offline_fix(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    backbone = ResNet(18, deep_stem=False, multi_grid=None)
    with pytest.raises(FileNotFoundError, match="download the file elsewhere and set model.backbone.pretrained"):
        load_backbone_weights(backbone, "ResNet18_Weights.IMAGENET1K_V1")


def _tiny(deep_stem=True, blocks=(1, 1, 2, 1), **kw):
    return ResNet(50, stage_blocks=blocks, base_width=8, deep_stem=deep_stem, multi_grid=None, **kw)


def test_missing_file_and_unknown_name():
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a torchvision weights name"):
        load_backbone_weights(_tiny(), "pretrained/nothing_here.pth")
    with pytest.raises(ValueError, match="unknown torchvision weights"):
        load_backbone_weights(_tiny(), "ResNet50_Weights.NOPE")


def test_stem_mismatch_says_which_flag_to_set(tmp_path):
    torch.save(_tiny(deep_stem=False).state_dict(), tmp_path / "tv.pth")
    with pytest.raises(IncompatibleWeightsError, match="set model.backbone.deep_stem=false"):
        load_backbone_weights(_tiny(deep_stem=True), str(tmp_path / "tv.pth"))
    torch.save(_tiny(deep_stem=True).state_dict(), tmp_path / "enc.pth")
    with pytest.raises(IncompatibleWeightsError, match="set model.backbone.deep_stem=true"):
        load_backbone_weights(_tiny(deep_stem=False), str(tmp_path / "enc.pth"))


def test_depth_and_width_mismatch_are_listed_in_one_message(tmp_path):
    sd = _tiny(blocks=(1, 1, 2, 1)).state_dict()
    sd["fc.weight"] = torch.zeros(10, 256)
    torch.save(sd, tmp_path / "deeper.pth")
    with pytest.raises(IncompatibleWeightsError) as err:
        load_backbone_weights(_tiny(blocks=(1, 1, 1, 1)), str(tmp_path / "deeper.pth"))
    message = str(err.value)
    assert "unexpected in the file" in message and "layer3.1.conv1.weight" in message
    assert "file:  ResNet (blocks 1/1/2/1" in message and "model: ResNet (blocks 1/1/1/1" in message
    torch.save(
        ResNet(50, stage_blocks=(1, 1, 1, 1), base_width=16, multi_grid=None).state_dict(), tmp_path / "wide.pth"
    )
    with pytest.raises(
        IncompatibleWeightsError,
        match=r"shape mismatches:\n    conv1.0.weight: file \(16, 3, 3, 3\) vs model \(8, 3, 3, 3\)",
    ):
        load_backbone_weights(_tiny(blocks=(1, 1, 1, 1)), str(tmp_path / "wide.pth"))


def test_norm_mismatch_is_an_error_not_a_partial_load(tmp_path):
    torch.save(_tiny().state_dict(), tmp_path / "bn.pth")
    gn_backbone = _tiny(norm_layer=build_norm_layer("gn", 4))
    with pytest.raises(IncompatibleWeightsError, match="running_mean"):
        load_backbone_weights(gn_backbone, str(tmp_path / "bn.pth"))


def test_corrupt_and_wrong_checksum_files(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(IncompatibleWeightsError, match="cannot read .*broken.pth as a PyTorch checkpoint"):
        load_backbone_weights(_tiny(), str(tmp_path / "broken.pth"))
    torch.save(_tiny().state_dict(), tmp_path / "resnet50-25c4b509.pth")  # a known name, other content
    with pytest.raises(IncompatibleWeightsError, match="differs from the published 25c4b50959ef"):
        load_backbone_weights(_tiny(), str(tmp_path / "resnet50-25c4b509.pth"))
