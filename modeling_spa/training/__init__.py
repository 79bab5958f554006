"""Training machinery that `recipes/train.py` calls: parameter groups and schedules (`optimization`), the weight
average (`averaging`)."""
