"""Run under `accelerate launch --num_processes 2`: the training loader recipes/train.py builds and prepares, shuffled
uniformly and balanced, for two epochs and for the last one resumed after its first batch.

argv[1]: the JSON file to write; the other arguments are recipes/train.py's, with --balanced_sampling and
--epoch_length for the balanced loader (the uniform one is the same run without them). Writes, per loader: the clip ids
each process took, batch by batch, per epoch (`epochs[e][process]`), those of the resumed epoch (`resumed`), and for
the balanced loader the clip ids of the sampler's global draw of each epoch (`draws`).
"""

import dataclasses
import json
import sys
from pathlib import Path

from accelerate.utils import gather_object, set_seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for recipe_loader
from recipe_loader import load_recipe  # noqa: E402

from modeling_spa.training.accelerator import make_accelerator  # noqa: E402
from modeling_spa.training.inputs import data_plan, map_loaders  # noqa: E402
from modeling_spa.training.loop import epoch_loader  # noqa: E402
from modeling_spa.training.model_setup import build_model  # noqa: E402

EPOCHS = 2
RESUMED_AFTER = 1  # batches of the last epoch done before the resume


def clip_ids(recipe, accelerator, loader, epoch: int, batches_done: int = 0) -> list[list[str]]:
    """The clip ids of each batch this process takes in `epoch`, as the training loop reads the loader."""
    return [batch["clip_ids"] for batch in epoch_loader(accelerator, loader, epoch, batches_done)]


def loader_record(recipe, accelerator, model, data_args, args, plan) -> dict:
    loader, _ = map_loaders(model, data_args, args, plan, {"num_workers": 0}, False, accelerator.num_processes)
    sampler, ids = loader.sampler, loader.dataset["video_id"]
    prepared = accelerator.prepare(loader)
    epochs = [clip_ids(recipe, accelerator, prepared, epoch) for epoch in range(EPOCHS)]
    resumed = clip_ids(recipe, accelerator, prepared, EPOCHS - 1, RESUMED_AFTER)
    record = {"epochs": [gather_object([epoch]) for epoch in epochs], "resumed": gather_object([resumed])}
    if data_args.balanced_sampling:
        record["draws"] = []
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            record["draws"].append([ids[i] for i in sampler.global_draw()])
    return record


def main(out_path: str, argv: list[str]) -> None:
    recipe = load_recipe("train")
    model_args, data_args, augmentation, args = recipe.parse_arguments(argv)
    accelerator = make_accelerator(args)
    set_seed(args.seed)  # as run_training does: a seedable shuffling sampler takes the seed when it is prepared
    model = build_model(model_args, data_args, augmentation)
    plan = data_plan(data_args)
    uniform = dataclasses.replace(data_args, balanced_sampling=False, epoch_length=None)
    records = {name: loader_record(recipe, accelerator, model, variant, args, plan)
               for name, variant in (("uniform", uniform), ("balanced", data_args))}  # fmt: skip
    if accelerator.is_main_process:
        Path(out_path).write_text(json.dumps(records))
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
