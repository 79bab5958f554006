"""Experiment trackers: an epoch summary as the flat numeric values trackers take."""

from __future__ import annotations

# Epoch summary prefixes -> tracker namespaces. The epoch means of the training losses get their own namespace: the
# step log's `train/<loss>` are running means within the epoch, and one tag must not mix the two at one step.
TRACKER_NAMESPACES = (("eval_ema_", "eval_ema/"), ("eval_", "eval/"), ("train_", "train_epoch/"))


def tracker_scalars(summary: dict, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """An epoch summary (a `history.json` entry) as the flat, numeric values trackers take: `eval_map` -> `eval/map`,
    `eval_ema_omap` -> `eval_ema/omap`, `train_loss` -> `train_epoch/loss`, `seconds` -> `epoch/seconds`, nested
    dicts flattened with "/" (`lr: {heads: ...}` -> `lr/heads`: TensorBoard would draw a dict as a group of runs and
    trackio would store it as an object). `step` is the trackers' x axis, not a value (trackio renames a `step` key);
    lists and other non-numbers are left out; so are the top-level keys in `skip`."""
    flat = {}
    for key, value in summary.items():
        if key in skip or key == "step":
            continue
        name = next((new + key[len(old) :] for old, new in TRACKER_NAMESPACES if key.startswith(old)), key)
        name = "epoch/seconds" if key == "seconds" else name
        if isinstance(value, dict):
            flat |= {f"{name}/{k}": v for k, v in tracker_scalars(value).items()}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat
