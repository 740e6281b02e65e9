"""utils/results.py: result files are strict JSON, written atomically."""

from __future__ import annotations

import json
import math

from utils.results import json_safe, write_json


def test_one_json_writer_writes_null_for_nan(tmp_path):
    path = write_json(tmp_path / "sub" / "m.json", {"miou": float("nan"), "iou": [0.5, math.inf], "t": (1, 2)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"miou": None, "iou": [0.5, None], "t": [1, 2]}
    assert json_safe({"a": [float("nan")]}) == {"a": [None]}
    assert not list(tmp_path.glob("sub/.*.tmp"))  # the temporary file was renamed, not left behind
