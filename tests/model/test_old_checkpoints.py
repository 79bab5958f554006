"""Checkpoints saved before the house issue (the library at f7f3285, when every module was a flat file) load with
today's package, every weight and buffer in place, and give the scores that code gave. The fixtures and their scores
were written by `tests/fixtures/make_f7f3285_checkpoints.py` run with that commit's package.

One change is meant: the CNNs' front-ends (cnn14, demo_cnn) framed a short clip in a padded batch over the zeros
after it, where the clip alone is framed over its reflection (issue 14, item 5); they now reflect each clip's end. So
the clip that fills its row is compared with the old scores for every family, and the padded one with the old scores
for the others; CNN14 masks its feature maps too, and scores the padded clip as it scores it alone (the demo CNN
does not: its convolutions still see the padding frames next to a clip's end)."""

import json

import pytest
import torch
from conftest import REPO
from transformers import AutoModel

from modeling_spa import SPAForAudioClassification

FIXTURES = REPO / "tests" / "fixtures" / "checkpoints_f7f3285"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
REFLECTED = {"cnn14", "demo_cnn"}


def inputs(rate: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The generator's inputs: 2 s and 3 s clips in one padded batch, and labels."""
    g = torch.Generator().manual_seed(7)
    waves = 0.1 * torch.randn(2, 3 * rate, generator=g)
    mask = torch.ones_like(waves, dtype=torch.long)
    waves[0, 2 * rate :], mask[0, 2 * rate :] = 0.0, 0
    labels = torch.zeros(2, 5)
    labels[0, 1], labels[1, 4] = 1, 1
    return waves, mask, labels


@pytest.mark.parametrize("family", sorted(EXPECTED["families"]))
@pytest.mark.parametrize("loader", [AutoModel, SPAForAudioClassification])
def test_old_checkpoint_loads_whole_and_scores_the_same(family, loader):
    model, info = loader.from_pretrained(FIXTURES / family, output_loading_info=True)
    assert isinstance(model, SPAForAudioClassification)
    assert not any(info.values()), info  # no missing, unexpected or mismatched key
    expected = EXPECTED["families"][family]
    old = {name: torch.tensor(expected[name]) for name in ("logits", "audio_embeds")}
    waves, mask, labels = inputs(expected["sampling_rate"])
    with torch.no_grad():
        out = model.eval()(input_values=waves, attention_mask=mask, labels=labels)
        alone = model(input_values=waves[:1, : 2 * expected["sampling_rate"]])
    for name in old:
        torch.testing.assert_close(out[name][1], old[name][1], rtol=0, atol=1e-5)  # the full clip
    if family in REFLECTED:
        assert (out.logits[0] - old["logits"][0]).abs().max() > 1e-4
    if family == "cnn14":
        for name in old:
            torch.testing.assert_close(out[name][0], alone[name][0], rtol=0, atol=1e-5)
    if family not in REFLECTED:
        for name in old:
            torch.testing.assert_close(out[name], old[name], rtol=0, atol=1e-5)
        assert out.loss.item() == pytest.approx(expected["loss"], abs=1e-5)
