"""The training data stream: deterministic, resumable, and split across processes without changing batches."""

from __future__ import annotations

import itertools

import pytest

from datasets.sampler import ShardSampler, TrainStream


def _take(stream: TrainStream, micro_batches: int) -> list[list[tuple[int, int]]]:
    return list(itertools.islice(iter(stream), micro_batches))


def test_ranks_together_see_the_single_process_batches():
    single = _take(TrainStream(50, micro_batch=4, seed=3), 20)
    ranks = [_take(TrainStream(50, micro_batch=2, rank=r, world_size=2, seed=3), 20) for r in range(2)]
    for step in range(20):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(single[step])


def test_accumulation_sees_the_same_samples_as_one_big_batch():
    big = _take(TrainStream(50, micro_batch=8, seed=1), 6)
    small = _take(TrainStream(50, micro_batch=4, accumulation=2, seed=1), 12)
    for step in range(6):
        assert sorted(small[2 * step] + small[2 * step + 1]) == sorted(big[step])


@pytest.mark.parametrize("start", [0, 1, 5, 6, 13])
def test_resuming_continues_the_uninterrupted_stream(start):
    full = _take(TrainStream(23, micro_batch=2, accumulation=2, seed=0), 60)
    resumed = _take(TrainStream(23, micro_batch=2, accumulation=2, seed=0, start_step=start), 60 - 2 * start)
    assert resumed == full[2 * start :]


def test_epochs_reshuffle_and_cover_distinct_samples():
    stream = TrainStream(10, micro_batch=3, seed=0)
    assert stream.steps_per_epoch == 3  # 9 of 10 samples per epoch; the incomplete batch is dropped
    batches = _take(stream, 6)
    epoch0 = [i for b in batches[:3] for i, _ in b]
    epoch1 = [i for b in batches[3:] for i, _ in b]
    assert len(set(epoch0)) == 9 and len(set(epoch1)) == 9 and epoch0 != epoch1
    seeds = [s for b in batches for _, s in b]
    assert len(set(seeds)) == len(seeds)  # a fresh augmentation seed for every drawn sample


def test_too_small_a_dataset_is_explained():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        TrainStream(5, micro_batch=4, accumulation=2)


@pytest.mark.parametrize("size, world", [(7, 2), (10, 3), (2, 4)])
def test_evaluation_shards_cover_every_sample_once(size, world):
    seen = [i for rank in range(world) for i in ShardSampler(size, rank, world)]
    assert sorted(seen) == list(range(size))


def test_seeded_samples_reseed_only_the_cpu_generator(monkeypatch):
    """Loading in the main process must not touch the training RNGs: the CPU one is forked, and the
    GPUs' (per-rank dropout seeds) are never reseeded, since fork_rng(devices=[]) would not restore them."""
    import torch

    from datasets.sampler import SeededSamples

    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(seed))
    samples = SeededSamples([None] * 3)
    samples.dataset = type("Draws", (), {"__getitem__": lambda self, i: torch.rand(2), "__len__": lambda self: 3})()
    torch.manual_seed(123)
    reseeded.clear()
    state = torch.get_rng_state()
    first, again = samples[(0, 7)], samples[(1, 7)]
    assert torch.equal(first, again) and not torch.equal(first, samples[(0, 8)])  # a function of the seed only
    assert torch.equal(torch.get_rng_state(), state) and reseeded == []
