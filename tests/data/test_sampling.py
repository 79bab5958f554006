"""Class-balanced sampling: PaSST's weights, the class frequencies it draws, reproducibility, DDP shards."""

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from modeling_spa.data.sampling import (
    BalancedSampler,
    balanced_weights,
    class_counts,
    expected_class_frequency,
    label_indices,
    unknown_label_counts,
)


@pytest.fixture(scope="module")
def imbalanced(ontology):
    """3000 clips over 40 real AudioSet classes with Zipf-like frequencies (class 0 ~150x class 39), 1-3 labels each."""
    rng = np.random.default_rng(0)
    mids = ontology.label_mids[:40]
    popularity = 1.0 / np.arange(1, 41) ** 1.4
    clips = [
        list(rng.choice(mids, size=rng.integers(1, 4), replace=False, p=popularity / popularity.sum()))
        for _ in range(3000)
    ]
    return mids, clips


def test_weights_are_passts(ontology):
    mids = ontology.label_mids[:3]
    labels = label_indices([[mids[0]], [mids[0], mids[1]], [mids[1], mids[2]], []], mids)
    np.testing.assert_array_equal(class_counts(labels, 3), [2, 2, 1])
    # PaSST: sum over the clip's labels of 1000 / (count + 100); a clip without labels weighs 0.
    expected = [1000 / 102, 1000 / 102 + 1000 / 102, 1000 / 102 + 1000 / 101, 0.0]
    np.testing.assert_allclose(balanced_weights(labels, 3), expected)
    np.testing.assert_allclose(balanced_weights(labels, 3, reduce="max"), [1000 / 102, 1000 / 102, 1000 / 101, 0])
    with pytest.raises(ValueError, match=r"clip #1: labels \['/m/nope'\]"):
        label_indices([[mids[0]], ["/m/nope"]], mids)
    with pytest.raises(ValueError, match=r"clip yt-2: labels \['/m/nope'\] are not among the model's 3 classes"):
        label_indices([[mids[0]], ["/m/nope"]], mids, ["yt-1", "yt-2"])


def test_unknown_labels_can_be_left_out_and_counted(ontology):
    # Held-out classes (zero-shot): their mids are dropped from each clip, the clip and its other labels stay.
    mids, odd = ontology.label_mids[:3], ["/m/nope", "/m/other"]
    clips = [[mids[2], odd[0]], [odd[0], odd[0], odd[1]], [mids[0]]]
    labels = label_indices(clips, mids, ignore_unknown=True)
    assert [clip.tolist() for clip in labels] == [[2], [], [0]]
    assert all(clip.dtype == np.int64 for clip in labels)
    # A clip counts once per mid, however often the mid is repeated in it.
    assert unknown_label_counts(clips, mids) == {"/m/nope": 2, "/m/other": 1}
    assert unknown_label_counts([[mids[0]]], mids) == {}


def test_sampled_class_frequencies_match_the_expected_ones(imbalanced):
    mids, clips = imbalanced
    labels = label_indices(clips, mids)
    weights = balanced_weights(labels, len(mids), offset=10.0)
    expected = expected_class_frequency(labels, weights, len(mids))
    # By hand: the weight share of the clips that carry each class.
    by_hand = np.array([sum(w for w, clip in zip(weights, labels, strict=True) if c in clip) for c in range(40)])
    np.testing.assert_allclose(expected, by_hand / weights.sum())

    draws = 60000
    sampler = BalancedSampler(weights, num_samples=draws, seed=3)
    drawn = np.fromiter(sampler, dtype=np.int64)
    assert len(drawn) == draws and len(sampler) == draws
    observed = class_counts([labels[i] for i in drawn], len(mids)) / draws
    sigma = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(observed - expected) < 5 * sigma), np.abs(observed - expected) / sigma
    # And it balances: the data's most/least frequent class ratio is ~100, the drawn one far smaller.
    data = class_counts(labels, len(mids)) / len(labels)
    assert data.max() / data.min() > 50 and observed.max() / observed.min() < data.max() / data.min() / 5


def test_the_draw_depends_on_seed_and_epoch_only():
    weights = np.arange(1.0, 21.0)
    a, b = BalancedSampler(weights, 50, seed=7), BalancedSampler(weights, 50, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(BalancedSampler(weights, 50, seed=8)) != list(b)
    with pytest.raises(ValueError, match="no labelled clip"):
        BalancedSampler(np.zeros(5))


def test_ddp_shards_split_one_global_draw():
    weights = np.random.default_rng(1).random(30)
    shards = []
    for rank in range(2):  # a plain DDP loop: each rank takes every second index of the global draw
        shard = BalancedSampler(weights, 41, seed=5, num_replicas=2, rank=rank)
        shard.set_epoch(2)
        shards.append(list(shard))
    assert len(shards[0]) == len(shards[1]) == 21  # 41 rounded up to 42, 21 each
    np.testing.assert_array_equal(np.stack(shards, axis=1).ravel(), shard.global_draw())
    # What the recipe does: one sampler on every rank, drawing whole rounds of batches (batch 4 x 2 processes), and
    # Accelerate deals its batches out in turn.
    whole = BalancedSampler(weights, 41, seed=5, multiple_of=4 * 2)
    whole.set_epoch(2)
    assert len(whole) == 48  # 41 rounded up to 6 rounds of 8
    batches = list(BatchSampler(whole, batch_size=4, drop_last=False))
    dealt = [list(BatchSamplerShard(BatchSampler(whole, 4, False), 2, rank)) for rank in range(2)]
    assert dealt[0] == batches[0::2] and dealt[1] == batches[1::2]  # 6 full batches each: nothing to even out
    np.testing.assert_array_equal(np.ravel(list(zip(*dealt, strict=True))), whole.global_draw())  # each position once
    # Without the rounding, Accelerate completes the short last round from the start of the draw: positions used twice.
    short = BalancedSampler(weights, 41, seed=5)
    short.set_epoch(2)
    dealt = [list(BatchSamplerShard(BatchSampler(short, 4, False), 2, rank)) for rank in range(2)]
    assert dealt[0][5] == short.global_draw()[40:].tolist() + short.global_draw()[:3].tolist()
    with pytest.raises(ValueError, match="multiple_of must be at least 1"):
        BalancedSampler(weights, multiple_of=0)


def test_sampler_in_a_dataloader_is_reproducible():
    weights = torch.rand(12).numpy()
    loader = torch.utils.data.DataLoader(range(12), batch_size=3, sampler=BalancedSampler(weights, 9, seed=1))
    first = [b.tolist() for b in loader]
    assert [b.tolist() for b in loader] == first and len(first) == 3
