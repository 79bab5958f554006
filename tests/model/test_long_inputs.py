"""A clip longer than the model's window, through every public entry point of every backbone family.

In eval mode, `model(x)`, `model.spa(x)` and `model.audioset_scores(x)` score such a clip window by window
(`modeling_spa.windowing`: windows at 0, hop, ... plus one aligned to the end) and aggregate, as `spa-tag` does;
none of them silently scores the first window alone (the front-end of a fixed-length backbone would crop to its
`max_frames`). Hidden states and attentions, which belong to one window, are refused with a message.
"""

import pytest
import torch
from conftest import tiny_ast_config
from peer_utils import randomize_

from modeling_spa import SPAConfig, SPAForAudioClassification
from modeling_spa.backbone_psla import PSLAConfig
from modeling_spa.frontend import frontend_preset
from modeling_spa.windowing import window_settings, window_starts

# Tiny configs of each family, windows of 1-2 s; the families with an original AudioSet head keep a small one.
FAMILIES = {
    "passt": {"audio_config": {"max_length": 200, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                               "intermediate_size": 64}},
    "ast": {"audio_config": tiny_ast_config(num_labels=527)},  # 527 labels: AST keeps its AudioSet classifier
    "htsat": {"audio_config": {"spec_size": 128, "patch_embeds_hidden_size": 8, "depths": [2, 2],
                               "num_attention_heads": [1, 2], "window_size": 4, "max_frames": 101, "num_classes": 7}},
    "psla": {
        "audio_config": PSLAConfig(width_coefficient=0.25, depth_coefficient=1.0, kernel_sizes=[3, 3],
                                   in_channels=[32, 16], out_channels=[16, 24], strides=[1, 2],
                                   num_block_repeats=[1, 1], expand_ratios=[1, 6], depthwise_padding=[],
                                   hidden_dim=320, num_mel_bins=64, max_length=100, attention_heads=2,
                                   num_audioset_classes=7),
        "frontend": {**frontend_preset("psla"), "n_mels": 64, "max_frames": 100},
    },
    "cnn14": {"audio_config": {"hidden_sizes": [4, 8, 8, 16], "embedding_size": 16, "num_audioset_classes": 7},
              "window_length_s": 1.5},
    "demo_cnn": {"audio_config": {"hidden_sizes": [4, 8]}, "window_length_s": 1.0},
}  # fmt: skip


def tiny_model(family: str) -> SPAForAudioClassification:
    torch.manual_seed(0)
    config = SPAConfig(backbone=family, projection_dim=8, label_mids=["a", "b", "c"], **FAMILIES[family])
    model = SPAForAudioClassification(config)
    randomize_(model.spa.backbone, seed=1)  # outputs that differ between windows
    return model.eval()


def windows_of(model, clip: torch.Tensor) -> torch.Tensor:
    """The model's windows of one clip (1, samples), stacked (windows, window)."""
    settings = window_settings(model.config)
    starts = window_starts(clip.shape[-1], settings.length, settings.hop)
    assert len(starts) == 2  # the clip is 1.25 windows long: a first window and one aligned to its end
    return torch.cat([clip[:, start : start + settings.length] for start in starts])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_entry_point_windows_a_long_clip(family):
    model = tiny_model(family)
    window = window_settings(model.config).length
    clip = torch.randn(1, window + window // 4, generator=torch.Generator().manual_seed(2))
    clip *= torch.linspace(0.0, 2.0, clip.shape[-1]) ** 2  # louder towards the end: the windows differ
    windows = windows_of(model, clip)
    with torch.no_grad():
        per_window = model.spa(windows)
        expected_embeds = per_window.audio_embeds.mean(dim=0)
        embeds = model.spa(clip)
        logits = model(clip).logits[0]
        expected_scores = model(windows).logits.sigmoid().mean(dim=0)
    torch.testing.assert_close(embeds.audio_embeds[0], expected_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(embeds.pooled_output[0], per_window.pooled_output.mean(dim=0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits.sigmoid(), expected_scores, rtol=1e-5, atol=1e-6)
    # The two windows differ (by far more than the tolerance): the mean of both is not the first window alone, which
    # a cropping front-end would give.
    assert (per_window.audio_embeds[0] - per_window.audio_embeds[1]).abs().max() > 2e-5
    if hasattr(model.spa.backbone, "audioset_scores"):
        with torch.no_grad():
            scores = model.audioset_scores(clip)[0]
            window_scores = model.audioset_scores(windows)
        torch.testing.assert_close(scores, window_scores.mean(dim=0), rtol=1e-5, atol=1e-6)
        assert (window_scores[0] - window_scores[1]).abs().max() > 2e-5


@pytest.mark.parametrize("family", ["passt", "demo_cnn"])
def test_per_window_outputs_of_a_long_clip_are_refused(family):
    model = tiny_model(family)
    clip = torch.randn(1, window_settings(model.config).length + 1)
    for call in (model, model.spa):
        with pytest.raises(ValueError, match="window by window"):
            call(clip, output_hidden_states=True)
    with torch.no_grad():  # a clip of one window still gives them
        assert model.spa(clip[:, :-1], output_hidden_states=True).hidden_states is not None


def test_a_batch_of_short_and_long_clips_windows_each_row_by_its_mask():
    model = tiny_model("passt")
    window = window_settings(model.config).length
    long = torch.randn(1, window + window // 4, generator=torch.Generator().manual_seed(3))
    short = long[:, : window // 2]
    batch = torch.cat([long, torch.nn.functional.pad(short, (0, long.shape[-1] - short.shape[-1]))])
    mask = torch.ones_like(batch, dtype=torch.long)
    mask[1, short.shape[-1] :] = 0
    with torch.no_grad():
        both = model.spa(batch, mask).audio_embeds
        alone = torch.cat([model.spa(long).audio_embeds, model.spa(short).audio_embeds])
    torch.testing.assert_close(both, alone, rtol=1e-5, atol=1e-5)
