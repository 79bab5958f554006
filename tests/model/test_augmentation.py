"""Training-time augmentation: settings, SpecAugment masks, gain, shift, mixup (labels included), off in evaluation,
and a compiled training step that neither breaks its graph nor recompiles."""

import pytest
import torch
from torch._dynamo.utils import counters

from modeling_spa import SPAConfig, SPAForAudioClassification
from modeling_spa.augmentation import (
    AugmentationConfig,
    band_mask,
    draw_mixup,
    mix,
    mix_mask,
    random_gain,
    spec_augment,
    time_shift,
)
from modeling_spa.frontend import frontend_preset
from modeling_spa.losses import obce_loss

ALL_ON = {"min_gain_db": -6.0, "max_gain_db": 6.0, "time_shift_s": 0.1, "mixup_alpha": 0.3, "freq_masks": 2,
          "freq_mask_width": 8, "time_masks": 2, "time_mask_width": 10}  # fmt: skip


def tiny_model(augmentation=None, num_labels=5) -> SPAForAudioClassification:
    config = SPAConfig(
        backbone="demo_cnn",
        audio_config={"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.0},
        frontend=frontend_preset("tiny"),
        label_mids=[f"/m/{i}" for i in range(num_labels)],
        projection_dim=8,
        text_hidden_size=6,
        spa_alpha=0.3,
        augmentation=augmentation,
    )
    model = SPAForAudioClassification(config)
    with torch.no_grad():
        model.label_text_embeds.normal_(generator=torch.Generator().manual_seed(0))
        hops = torch.randint(1, 6, (num_labels, num_labels), generator=torch.Generator().manual_seed(1))
        model.label_distances.copy_((hops + hops.T).fill_diagonal_(0))
    return model


def batch(seed: int, size: int = 4):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(size, 16000, dtype=torch.long)
    mask[seed % size, 9000:] = 0
    return torch.randn(size, 16000, generator=g) * 0.1, mask, (torch.rand(size, 5, generator=g) < 0.4).float()


def test_settings_are_validated_complete_and_recorded():
    config = SPAConfig(backbone="demo_cnn", audio_config={"num_mel_bins": 64}, augmentation={"mixup_alpha": 0.3})
    assert config.augmentation == AugmentationConfig(mixup_alpha=0.3).to_dict()  # every field written out
    assert SPAConfig.from_dict(config.to_dict()).augmentation == config.augmentation
    config.augmentation = {"freq_masks": 2, "freq_mask_width": 8}  # validated when set, too
    assert config.augmentation["mixup_alpha"] == 0.0 and config.augmentation["freq_masks"] == 2
    with pytest.raises(ValueError, match=r"unknown augmentation settings \['mixup'\]"):
        config.augmentation = {"mixup": 0.3}
    with pytest.raises(ValueError, match="mixup_domain must be one of"):
        AugmentationConfig(mixup_domain="spectrum")
    with pytest.raises(ValueError, match="freq_masks must not be negative"):
        AugmentationConfig(freq_masks=-1)
    assert AugmentationConfig().describe() == "none"
    described = AugmentationConfig.from_dict(ALL_ON).describe()
    assert "mixup Beta(0.3, 0.3) on the log-mel" in described and "2 × ≤ 8 mel bins" in described
    assert "random gain -6 to +6 dB" in described and "time shift ±0.1 s (roll)" in described


def test_spec_augment_masks_bands_of_bounded_width():
    torch.manual_seed(0)
    features = torch.randn(64, 100, 40)
    settings = AugmentationConfig(freq_masks=2, freq_mask_width=8, time_masks=3, time_mask_width=10, mask_value=-7.0)
    out = spec_augment(features, settings.to_dict())
    assert out.shape == features.shape
    masked = out == -7.0
    bins = masked.all(dim=1)  # (B, mels): a masked bin is masked at every frame
    frames = masked.all(dim=2)  # (B, frames)
    assert torch.equal(masked, bins[:, None, :] | frames[:, :, None])  # nothing else changed
    assert torch.equal(out[~masked], features[~masked])
    assert bins.sum(dim=1).max() <= 2 * 8 and frames.sum(dim=1).max() <= 3 * 10
    assert bins.sum(dim=1).float().mean() > 4 and frames.sum(dim=1).float().mean() > 6  # some masking happens
    bands = band_mask(1000, 40, 1, 8, torch.device("cpu"))
    starts = bands.int().diff(dim=1, prepend=torch.zeros(1000, 1, dtype=torch.int)).eq(1).sum(dim=1)
    assert starts.max() == 1 and bands.sum(dim=1).max() == 8 and bands.sum(dim=1).min() == 0  # one band, width 0..8


def test_gain_and_time_shift():
    torch.manual_seed(0)
    wave = torch.randn(200, 50)
    gained = random_gain(wave, -6.0, 6.0)
    db = 20 * torch.log10(gained[:, 0] / wave[:, 0])
    assert db.min() >= -6.0 - 1e-4 and db.max() <= 6.0 + 1e-4 and db.max() - db.min() > 10
    torch.testing.assert_close(gained / wave, (gained[:, :1] / wave[:, :1]).expand_as(wave))  # one gain per clip
    lengths = torch.tensor([50, 30] * 100)
    rolled = time_shift(wave, lengths, 7, "roll")
    for row, length in ((0, 50), (1, 30)):
        shifts = [s for s in range(-7, 8) if torch.equal(rolled[row, :length], wave[row, :length].roll(s))]
        assert shifts, "each clip is a circular shift of its real samples"
    assert torch.equal(rolled[1, 30:], wave[1, 30:])  # padding stays
    padded = time_shift(torch.ones(500, 20), torch.full((500,), 20), 5, "pad")
    silent = (padded == 0).sum(dim=1)
    assert silent.max() == 5 and silent.min() == 0  # the vacated samples are silence, at either end
    assert ((padded[:, 0] == 0) | (padded[:, -1] == 0) | (silent == 0)).all()


def test_mixup_draws_and_mixes_labels():
    torch.manual_seed(0)
    index, lam = draw_mixup(1000, 0.3, 1.0, torch.device("cpu"))
    assert sorted(index.tolist()) == list(range(1000))
    assert lam.min() >= 0.5 and lam.max() <= 1 and (lam < 0.6).float().mean() > 0.05  # Beta(.3, .3), folded
    _, kept = draw_mixup(1000, 0.3, 0.25, torch.device("cpu"))
    assert 0.65 < (kept == 1).float().mean() < 0.85  # mixed with probability 0.25
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])
    index, lam = torch.tensor([1, 2, 0]), torch.tensor([0.75, 1.0, 0.5])
    expected = torch.tensor([[0.75, 0.25, 0], [0, 1, 0], [0.5, 0, 0.5]])
    torch.testing.assert_close(mix(labels, index, lam), expected)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    assert mix_mask(mask, index, lam).tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]
    assert mix_mask(mask, index, torch.tensor([0.5, 0.5, 1.0])).tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]


def test_mixed_soft_labels_reach_every_loss():
    """The model mixes its labels with its inputs: its loss is the loss of the mixed batch with mixed labels."""
    model = tiny_model({"mixup_domain": "waveform"}).eval()  # eval: no random augmentation, explicit mixup only
    values, mask, labels = batch(0)
    index, lam = torch.tensor([1, 0, 3, 2]), torch.tensor([0.7, 0.6, 1.0, 0.8])
    out = model(values, mask, labels=labels, mixup_index=index, mixup_lambda=lam)
    mixed_labels = mix(labels, index, lam)
    reference = model(mix(values, index, lam), mix_mask(mask, index, lam), labels=mixed_labels)
    torch.testing.assert_close(out.loss, reference.loss)
    torch.testing.assert_close(out.obce_loss, obce_loss(out.logits, mixed_labels, model.label_distances, True)[2])
    assert reference.spa_loss > 0 and mixed_labels.unique().numel() > 2  # soft labels, SPA on


def test_augmentation_is_off_in_evaluation_and_on_in_training():
    values, mask, labels = batch(1)
    plain, augmented = tiny_model(), tiny_model(ALL_ON)
    augmented.load_state_dict(plain.state_dict())
    plain.eval(), augmented.eval()
    torch.testing.assert_close(augmented(values, mask, labels=labels).loss, plain(values, mask, labels=labels).loss)
    plain.train(), augmented.train()
    torch.manual_seed(0)
    trained = augmented(values, mask, labels=labels).loss
    torch.manual_seed(0)
    assert not torch.allclose(trained, plain(values, mask, labels=labels).loss)
    torch.manual_seed(0)
    torch.testing.assert_close(augmented(values, mask, labels=labels).loss, trained)  # seeded: the same draw


def test_compiled_training_steps_neither_break_nor_recompile():
    """Training steps on different batches, augmentation and OBCE included: one graph (fullgraph: no host read
    inside the step), no recompilation, and the loss of eager mode. aot_eager traces what inductor compiles, minus
    the code generation (inductor itself: README, measured)."""
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = tiny_model(ALL_ON).train(), tiny_model(ALL_ON).train()
    compiled.load_state_dict(eager.state_dict())
    step = torch.compile(compiled, backend="aot_eager", fullgraph=True)
    for seed in range(3):
        values, mask, labels = batch(seed)
        torch.manual_seed(seed)
        expected = eager(values, mask, labels=labels).loss
        torch.manual_seed(seed)
        loss = step(values, mask, labels=labels).loss
        loss.backward()
        torch.testing.assert_close(loss, expected)
    assert counters["stats"]["unique_graphs"] == 1 and sum(counters["recompiles"].values()) == 0
    assert not counters["graph_break"]
    assert all(p.grad is not None for p in compiled.spa.backbone.parameters())
