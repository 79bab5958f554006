"""Run under `accelerate launch --num_processes 2`: each process scores its shard, the main process computes.

Writes {"distributed": ..., "single": ...} (OmAP results) to the JSON path given as argv[1].
"""

import json
import sys
from pathlib import Path

import evaluate
import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

from modeling_spa.metrics import compute_omap

REPO = Path(__file__).resolve().parents[2]


def data():
    rng = np.random.default_rng(0)
    labels = (rng.random((103, 6)) < 0.3).astype(np.int64)  # 103: uneven across 2 processes
    scores = rng.random((103, 6)) + 0.3 * labels
    distances = np.array([[abs(i - j) for j in range(6)] for i in range(6)])
    return torch.from_numpy(scores), torch.from_numpy(labels), distances


def main(out_path: str) -> None:
    accelerator = Accelerator(cpu=True)
    scores, labels, distances = data()
    loader = accelerator.prepare(DataLoader(TensorDataset(scores, labels), batch_size=8))
    metric = evaluate.load(str(REPO / "metrics" / "omap"), keep_in_memory=True) if accelerator.is_main_process else None
    for batch_scores, batch_labels in loader:
        batch_scores, batch_labels = accelerator.gather_for_metrics((batch_scores, batch_labels))
        if metric is not None:
            metric.add_batch(predictions=batch_scores.numpy(), references=batch_labels.numpy())
    if accelerator.is_main_process:
        result = metric.compute(distances=distances)
        single = compute_omap(labels.numpy(), scores.numpy(), distances)
        out = {
            "distributed": result,
            "single": {k: np.asarray(v).tolist() for k, v in single.items()},
            "processes": accelerator.num_processes,
        }
        Path(out_path).write_text(json.dumps(out))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
