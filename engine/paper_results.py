"""Published numbers the paper tables print next to ours, each with where it was read.

A number is recorded here only when its source was read; the source is named in ``source``, and
docs/paper_tables.md ("The paper's numbers") lists them all. A table cell without one says
``NOT_RECORDED``; the tables never fill one in.
"""

from __future__ import annotations

from dataclasses import dataclass

NOT_RECORDED = "not recorded here (docs/paper_tables.md, 'The paper's numbers')"
PAPER = "SPNet paper (Hou et al., CVPR 2020, arXiv:2003.13328)"
OFFICIAL_README = (
    "the official repository's README (github.com/Andrew-Qibin/SPNet), section 'Better Results', "
    "added after the paper in April 2020 and removed in May 2020"
)
LISTINGS = (
    "benchmark listings derived from Papers with Code, e.g. https://www.wizwand.com/paper/68fa673d1e209131cea1521b; "
    "not read in the paper itself"
)


@dataclass(frozen=True)
class PaperResult:
    method: str
    dataset: str
    split: str
    value: str  # as the source prints it, so its precision stays ("45.60", "82.0")
    source: str  # where the number was read
    metric: str = "mIoU (%)"
    backbone: str | None = None  # None: the source does not say
    protocol: str | None = None  # the test protocol; None: the source does not say

    @property
    def number(self) -> float:
        return float(self.value)


ADE20K_VAL_R101 = PaperResult(
    "SPNet", "ADE20K", "val", "45.60", f"{PAPER}; the official README quotes it too", backbone="ResNet-101"
)

# After the paper the README reported more for a strip pooling module that upsamples its strips by
# bilinear interpolation instead of expanding them: 46.25 on 2020-04-06, then 46.31 on 2020-04-11.
ADE20K_VAL_LATER = tuple(
    PaperResult("SPNet, strips upsampled bilinearly", "ADE20K", "val", value, f"{OFFICIAL_README} ({date})")
    for value, date in [("46.25", "2020-04-06"), ("46.31", "2020-04-11")]
)

CITYSCAPES_TEST_R101 = PaperResult("SPNet", "Cityscapes", "test", "82.0", f"{PAPER}, Table 6", backbone="ResNet-101")

# The other methods of Table 6, as the paper quotes them (each with its own recipe and backbone).
CITYSCAPES_TEST_OTHERS = tuple(
    PaperResult(method, "Cityscapes", "test", value, f"{PAPER}, Table 6, quoting {method}")
    for method, value in [
        ("DANet", "81.5"), ("CCNet", "81.4"), ("APNB", "81.3"), ("SPGNet", "81.1"), ("DenseASPP", "80.6"),
        ("PSANet", "80.1"), ("DUC-HDC", "80.1"), ("DFN", "79.3"), ("BiSeNet", "78.9"), ("DepthSeg", "78.2"),
        ("SAC", "78.1"), ("DSSPN", "77.8"),
    ]
)  # fmt: skip

# Listed for SPNet outside the paper; no table uses them until someone reads them in the paper.
CITYSCAPES_VAL = PaperResult("SPNet", "Cityscapes", "val", "81.9", LISTINGS)
PASCAL_CONTEXT = PaperResult("SPNet", "Pascal Context (60 classes)", "test", "54.5", LISTINGS)

ALL = (
    ADE20K_VAL_R101,
    *ADE20K_VAL_LATER,
    CITYSCAPES_TEST_R101,
    *CITYSCAPES_TEST_OTHERS,
    CITYSCAPES_VAL,
    PASCAL_CONTEXT,
)
