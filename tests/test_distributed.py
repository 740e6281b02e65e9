"""utils/distributed.py: what a user can get wrong when choosing a device."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_asking_for_a_missing_gpu_is_a_user_error_with_the_fix():
    from utils.distributed import init_distributed

    with pytest.raises(ValueError, match=r"^train.device=cuda, but torch sees no GPU .*use train.device=cpu"):
        init_distributed("cuda")
