"""A tiny SPA model built from a config (demo CNN, 6-dimensional label text with a common component), for tests of the
objective and of the label-space diagnostics."""

import torch

from modeling_spa import SPAConfig, SPAForAudioClassification
from modeling_spa.frontend import frontend_preset


def tiny_model(num_labels: int = 5, **options) -> SPAForAudioClassification:
    config = SPAConfig(
        backbone="demo_cnn",
        audio_config={"hidden_sizes": [4, 8], "num_mel_bins": 64, "dropout": 0.0},
        frontend=frontend_preset("tiny"),
        label_mids=[f"/m/{i}" for i in range(num_labels)],
        projection_dim=8,
        text_hidden_size=6,
        spa_alpha=0.3,
        **options,
    )
    torch.manual_seed(0)
    model = SPAForAudioClassification(config)
    # Text embeddings with a common component, as a text encoder's have: the centre is far from 0.
    text = torch.randn(num_labels, 6, generator=torch.Generator().manual_seed(0)) + torch.arange(6.0)
    model.set_label_text(text)
    hops = torch.randint(1, 6, (num_labels, num_labels), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.label_distances.copy_((hops + hops.T).fill_diagonal_(0))
    return model
