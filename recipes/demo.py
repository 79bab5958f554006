"""`make demo`: a mini Table 1 of the SPA paper, offline, on a 2-core CPU.

1. builds a small synthetic AudioSet-format dataset (recipes/build_demo_dataset.py),
2. trains the baseline (α = 0) and SPA (α > 0) with the same seed and backbone through
   `accelerate launch recipes/train.py recipes/configs/demo.yaml`, text encoder all-MiniLM-L6-v2,
3. prints mAP and OmAP with and without SPA, writes the OmAP_λ difference plot (paper Fig. 3),
4. reloads the SPA checkpoint with `AutoModel` and tags one test clip.

Outputs go to outputs/demo/. The numbers are reported as they come, whichever way they go.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import soundfile

from modeling_spa.reporting import (
    format_stat,
    markdown_table,
    omap_lambda_differences,
    paired_difference,
    plot_omap_lambda_difference,
    stat,
)

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "recipes" / "configs" / "demo.yaml"
RUNS = {"baseline": 0.0, "SPA": 0.3}  # α chosen on the validation split (0.1, 0.3 tried)


def run(command: list[str], log: Path) -> None:
    """Run a step, its output to `log`; on failure show the log's end and stop."""
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])} ... failed; the end of {log}:\n" + log.read_text()[-3000:])
    print(f"  done in {time.perf_counter() - started:.0f} s (log: {log.relative_to(REPO)})")


def build_data(out: Path, args) -> Path:
    data = out / "data"
    if (data / "classes.json").is_file():
        print(f"[1/4] dataset: reusing {data.relative_to(REPO)}")
        return data
    print(f"[1/4] building the synthetic AudioSet-format dataset ({args.num_train} train clips of {args.seconds} s)")
    command = [sys.executable, str(REPO / "recipes" / "build_demo_dataset.py"), "--output", str(data),
               "--num-train", str(args.num_train), "--num-validation", str(args.num_eval),
               "--num-test", str(args.num_eval), "--duration", str(args.seconds)]  # fmt: skip
    run(command, out / "build.log")
    return data


def train(out: Path, data: Path, name: str, alpha: float) -> dict:
    run_dir = out / name.lower()
    results = run_dir / "model" / "eval_results.json"
    if not results.is_file():
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "recipes" / "train.py"),
                   str(CONFIG), "--spa_alpha", str(alpha), "--output_dir", str(run_dir),
                   "--dataset", str(data), "--classes", str(data / "classes.json")]  # fmt: skip
        run(command, out / f"train_{name.lower()}.log")
    return json.loads(results.read_text())["test"]


def table(results: dict[str, dict]) -> str:
    base, spa = results["baseline"], results["SPA"]
    cells = {name: {key: stat([r[key]]) for key in ("map", "omap")} for name, r in results.items()}
    difference = {key: paired_difference([spa[key]], [base[key]]) for key in ("map", "omap")}
    rows = [
        ["baseline, (BCE + OBCE)/2", *(format_stat(cells["baseline"][key]) for key in ("map", "omap"))],
        [f"+ SPA (α = {RUNS['SPA']})", *(format_stat(cells["SPA"][key]) for key in ("map", "omap"))],
        ["difference", *(format_stat(difference[key], signed=True) for key in ("map", "omap"))],
    ]
    return markdown_table(["model (demo CNN, synthetic AudioSet-format test set)", "mAP", "OmAP"], rows)


def plot(results: dict[str, dict], path: Path) -> None:
    diff = omap_lambda_differences([results["SPA"]["omap_per_lambda"]], [results["baseline"]["omap_per_lambda"]])
    plot_omap_lambda_difference(diff, path)


def tag_one_clip(out: Path, data: Path) -> None:
    import datasets
    import torch
    from transformers import AutoFeatureExtractor, AutoModel

    import modeling_spa  # noqa: F401  (registers SPA with the Auto classes)

    model_dir = out / "spa" / "model"
    model = AutoModel.from_pretrained(model_dir).eval()
    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    clip = datasets.load_dataset("parquet", data_files=str(data / "data" / "test-*.parquet"), split="train")[0]
    wave, rate = soundfile.read(io.BytesIO(clip["audio"]["bytes"]), dtype="float32")
    with torch.inference_mode():
        scores = model(**extractor(wave, sampling_rate=rate, return_tensors="pt")).logits.sigmoid()[0]
    print(f"\nAutoModel.from_pretrained({model_dir.relative_to(REPO)}) tags test clip {clip['video_id']}")
    print(f"  true labels: {', '.join(clip['human_labels'])}")
    for i in scores.argsort(descending=True)[:5].tolist():
        print(f"  {scores[i]:.3f}  {model.config.id2label[i]:<32s} {model.config.label_paths[i]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "outputs" / "demo"))
    parser.add_argument("--num-train", type=int, default=1200)
    parser.add_argument("--num-eval", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data = build_data(out, args)
    results = {}
    for step, (name, alpha) in enumerate(RUNS.items(), start=2):
        print(f"[{step}/4] training {name} (α = {alpha}) with accelerate launch recipes/train.py")
        results[name] = train(out, data, name, alpha)
    print("\n" + table(results))
    plot(results, out / "omap_lambda_difference.png")
    (out / "table1.md").write_text(table(results) + "\n")
    print(f"\nOmAP_λ difference plot: {(out / 'omap_lambda_difference.png').relative_to(REPO)}")
    tag_one_clip(out, data)
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
