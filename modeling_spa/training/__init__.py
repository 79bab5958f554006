"""Training machinery that `recipes/train.py` runs step by step: the run's model (`model_setup`) and data (`inputs`),
the optimizer and schedule (`optimization`), the weight average (`averaging`), one epoch (`loop`) with its step guard
(`guard`), checkpoints and resuming (`checkpointing`), trackers (`trackers`), the Accelerator (`accelerator`) and the
saved model folders (`saving`)."""
