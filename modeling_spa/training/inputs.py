"""The data of a run: its splits (the hold-out rule), the loaders of downloaded or streamed splits, the class
statistics of the balanced sampler and the classifier's prior."""

from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader

from ..data import AudioSetCollator, load_audioset
from ..data.loaders import evaluation_loader, on_device, own_generator
from ..data.sampling import BalancedSampler, balanced_weights, class_counts, expected_class_frequency, label_indices
from ..data.splits import SplitSpec, resolve_splits, select, split_names
from ..data.streaming import (
    Rows,
    StreamBatchSampler,
    StreamPosition,
    StreamReader,
    batches_per_epoch,
    open_part,
    part_labels,
    part_size,
    training_stream,
)
from ..hub.cards import dataset_id
from .checkpointing import resumed_stream, stream_record
from .optimization import set_prior_bias


def data_plan(data_args) -> dict[str, SplitSpec | None]:
    """The train, validation and test parts of the dataset (`modeling_spa.data.splits`: the default rule)."""
    available = split_names(data_args.dataset, data_args.dataset_config)
    return resolve_splits(available, data_args.train_split, data_args.eval_split, data_args.test_split,
                          data_args.validation_fraction, data_args.validation_seed, data_args.dataset)  # fmt: skip


def load_part(data_args, spec: SplitSpec):
    """A part of the plan as a map-style dataset (the hold-out is an index over the split's rows)."""
    return select(load_audioset(data_args.dataset, spec.source, data_args.dataset_config), spec)


def label_statistics(dataset, model, data_args) -> tuple[np.ndarray | None, np.ndarray]:
    """The balanced sampler's clip weights (None without it) and the class frequencies training draws: under balanced
    sampling, the expected share of drawn clips that carry each class, else the split's. `dataset`: a map-style
    dataset, or the (clip ids, label lists) of a stream."""
    # The labels column alone: no audio is decoded.
    if isinstance(dataset, tuple):
        ids, clip_labels = dataset
    else:
        ids = dataset["video_id"] if "video_id" in dataset.column_names else None
        clip_labels = dataset["labels"]
    labels = label_indices(
        clip_labels, model.config.label_mids, ids, ignore_unknown=data_args.unknown_labels == "ignore"
    )
    num_classes = model.config.num_labels
    if not data_args.balanced_sampling:
        return None, class_counts(labels, num_classes) / max(len(labels), 1)
    weights = balanced_weights(labels, num_classes, data_args.sampling_offset, reduce=data_args.sampling_reduce)
    return weights, expected_class_frequency(labels, weights, num_classes)


def collator_for(model, data_args, train: bool, seed: int) -> AudioSetCollator:
    return AudioSetCollator(
        sampling_rate=model.config.frontend["sampling_rate"],
        label_mids=model.config.label_mids,
        max_length_s=data_args.max_length_s,
        train=train,
        seed=seed,
        min_samples=model.spa.frontend.min_samples,
        ignore_unknown_labels=data_args.unknown_labels == "ignore",
    )


def make_loader(
    dataset,
    model,
    data_args,
    batch_size: int,
    train: bool,
    seed: int,
    sampler=None,
    drop_last: bool = False,
    options: dict | None = None,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,  # the balanced sampler draws from (seed, epoch) alone: resumable, and the same on every rank
        collate_fn=collator_for(model, data_args, train, seed),
        drop_last=drop_last,
        **(options or {"num_workers": 0}),
        # (Random crop offsets are not resumed exactly: the collator's generators are not checkpointed.)
        generator=own_generator(seed),
    )


def map_loaders(model, data_args, args, plan: dict, options: dict, new_classifier: bool, num_processes: int = 1):
    """The training loader and the evaluation loaders (by split name) of downloaded splits.

    Under several processes an epoch is whole rounds of full batches (batch size x processes clips), so that
    Accelerate, which deals the batches out in turn, has nothing to even out: by default it completes a short last
    round from the start of the epoch's order, and those clips would be used twice. The balanced draw is rounded up
    (`BalancedSampler`); a uniform shuffle cannot grow without repeating clips, so its last incomplete round is
    dropped (fewer than batch x processes clips, others every epoch as the order changes). One process has nothing
    to even out: its epoch ends with a short batch, as given. Gradient accumulation needs no rounding: a window cut
    short by the epoch's end steps there (Accelerate's end of dataloader), and no clip is used twice.
    """
    train_split = load_part(data_args, plan["train"])
    if data_args.balanced_sampling or new_classifier:
        weights, frequency = label_statistics(train_split, model, data_args)
        if new_classifier:  # a resumed or fine-tuned model keeps its own
            set_prior_bias(model.classifier, frequency)
    several = num_processes > 1
    rounds = args.batch_size * num_processes if several else 1
    sampler = (BalancedSampler(weights, data_args.epoch_length, args.seed, multiple_of=rounds)
               if data_args.balanced_sampling else None)  # fmt: skip
    # A compiled step must also see one batch shape: drop the last, smaller batch of an epoch.
    drop_last = several or args.torch_compile
    clips = len(sampler if sampler is not None else train_split)
    if drop_last and clips < args.batch_size * num_processes:
        raise ValueError(f"{plan['train'].describe()}: an epoch of {clips} clips does not fill one batch of "
                         f"{args.batch_size} on each of {num_processes} process(es): lower --batch_size.")  # fmt: skip
    train_loader = make_loader(train_split, model, data_args, args.batch_size, True, args.seed, sampler,
                               drop_last=drop_last, options=options)  # fmt: skip
    eval_loaders = {
        spec.name: make_loader(
            load_part(data_args, spec), model, data_args, args.eval_batch_size, False, args.seed, options=options
        )  # fmt: skip
        for spec in (plan["eval"], plan["test"])
        if spec is not None
    }
    return train_loader, eval_loaders


def stream_loaders(
    accelerator, model, data_args, args, plan: dict, options: dict, resumed: dict | None, new_classifier
):
    """The loaders of streamed splits (`modeling_spa.data.streaming`), each process reading its own share, prepared for
    the device only (Accelerate must not shard them again); and the stream's sampler and record, for checkpoints."""
    source, config = data_args.dataset, data_args.dataset_config
    epoch_length = data_args.epoch_length
    if new_classifier:  # one pass over the ids and labels (no audio) for the prior; it counts the clips too
        ids, labels = part_labels(source, plan["train"], config)
        set_prior_bias(model.classifier, label_statistics((ids, labels), model, data_args)[1])
        epoch_length = epoch_length or len(ids)
    if resumed is not None:
        current = stream_record(data_args, args, accelerator, plan, 0)
        record = resumed_stream(resumed.get("stream"), current, data_args.epoch_length)
    else:
        if epoch_length is None:
            accelerator.print(f"Sizing {plan['train'].describe()} (--epoch_length skips this)")
            epoch_length = part_size(source, plan["train"], config)
        record = stream_record(data_args, args, accelerator, plan, epoch_length) | {"batches": 0, "positions": None}
    per_epoch = batches_per_epoch(record["epoch_length"], args.batch_size, accelerator.num_processes)
    positions = record["positions"]
    position = StreamPosition(*positions[accelerator.process_index]) if positions else StreamPosition()
    stream = training_stream(open_part(source, plan["train"], config), args.seed, data_args.shuffle_buffer,
                             accelerator.process_index, accelerator.num_processes)  # fmt: skip
    in_epoch = resumed["batches_in_epoch"] if resumed is not None else 0
    sampler = StreamBatchSampler(
        StreamReader(stream, position), args.batch_size, per_epoch, record["batches"], in_epoch
    )
    train = DataLoader(Rows(per_epoch * args.batch_size), batch_sampler=sampler, generator=own_generator(args.seed),
                       collate_fn=collator_for(model, data_args, True, args.seed), **options)  # fmt: skip
    collator = collator_for(model, data_args, False, args.seed)
    evals = {}
    for spec in (plan["eval"], plan["test"]):
        if spec is not None:
            stream, size = open_part(source, spec, config), part_size(source, spec, config)
            batch = args.eval_batch_size
            evals[spec.name] = evaluation_loader(accelerator, stream, collator, batch, options, args.seed, size)
    return on_device(accelerator, train), evals, {"sampler": sampler, "record": record}


def describe_plan(plan: dict, data_args) -> str:
    """One line for the log and the model card: which clips each split of the run holds."""
    parts = [f"train on {plan['train'].describe()}", f"validate on {plan['eval'].describe()}"]
    parts.append(f"test on {plan['test'].describe()}" if plan["test"] is not None else "no test split")
    read = f"streamed (shuffle buffer {data_args.shuffle_buffer})" if data_args.streaming else "downloaded"
    config = f" ({data_args.dataset_config})" if data_args.dataset_config else ""
    return f"Data: {dataset_id(data_args.dataset)}{config}, {read}: {'; '.join(parts)}."  # a build by its name only
