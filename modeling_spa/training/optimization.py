"""Fine-tuning a pretrained backbone under new heads: parameter groups, learning rates, weight decay, a frozen-backbone
warm-up, and the classifier's starting bias.

Groups. The backbone f_a (`model.spa.backbone`) takes `backbone_lr`; everything else that trains, the new heads p_a,
c_a and p_t, takes `head_lr` (DESIGN §7: pretrained AudioSet backbones are fine-tuned at ~1e-5 to 5e-5 under heads at
a higher rate). Weight decay skips norms, biases and every other 1-D parameter, and position embeddings and tokens
(`cls_token`, `dist_token`, `*pos_embed*`, `position_embeddings`, `relative_position_bias_table`), as timm does.

Layer-wise decay (BEiT, timm's `param_groups_layer_decay`): a transformer backbone's parameter at depth d of L blocks
takes backbone_lr · decay^(L + 1 − d). A block is found in the parameter's name, by the first of these schemes that the
backbone uses: `layers.N.blocks.M` (HTS-AT's Swin stages, ordered by (N, M)), else `layers.N` (AST in transformers 5),
`encoder.layer.N` (AST before it, transformers' ViTs) or `blocks.N` (PaSST, timm's ViTs); the blocks, in numeric order,
are depths 1..L. A parameter outside every block takes the depth of the last block registered before it: 0 before the
first (patch embedding, tokens, position embeddings), L + 1 after the last (the final norm: the full backbone rate); so
a Swin stage's downsampling layer goes with its stage's last block. A backbone whose modules are registered in another
order than they run names the ones applied after its last block in `output_modules` (the final layer norm of
transformers' pre-norm speech encoders, registered before their layers): they take L + 1. transformers' speech
encoders (backbone "hub") follow these schemes: `encoder.layers.N` (wav2vec2 and its relatives, Whisper) and
`encoder.encoder.layer.N` (SEW-D); their CNN feature encoder (`conv_layers.N`, no block) comes first, at depth 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

NO_DECAY_NAME = re.compile(r"\w*(_token|pos_embed|position_embeddings|position_bias_table)\w*")
BLOCK_PATTERNS = (
    re.compile(r"(?:^|\.)layers\.(\d+)\.blocks\.(\d+)\."),  # Swin stages (HTS-AT)
    # AST, ViTs, PaSST, transformers' speech encoders; not the positional convolutions of Data2Vec-Audio
    re.compile(r"(?:^|(?<!pos_conv_embed)\.)(?:encoder\.layer|blocks|layers)\.(\d+)\."),
)
PRIOR_CLAMP = 1e-4  # class frequencies are clamped to [PRIOR_CLAMP, 1 - PRIOR_CLAMP]: logits within ±9.2


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether weight decay applies: not to 1-D parameters (norms, biases) nor to position embeddings and tokens."""
    return param.ndim > 1 and not NO_DECAY_NAME.fullmatch(name.rsplit(".", 1)[-1])


def block_pattern(names: Sequence[str]) -> re.Pattern:
    """The first of `BLOCK_PATTERNS` that some name matches: a backbone's blocks follow one naming scheme (so Swin's
    `layers.N.downsample` is no block of its own)."""
    for pattern in BLOCK_PATTERNS:
        if any(pattern.search(name) for name in names):
            return pattern
    raise ValueError("layer-wise decay needs a transformer backbone: no block (encoder.layer.N, blocks.N, "
                     f"layers.N[.blocks.M]) among its parameters, e.g. {list(names)[:3]}")  # fmt: skip


def layer_depths(names: Sequence[str], output_modules: Sequence[str] = ()) -> tuple[dict[str, int], int]:
    """Depth of each parameter name (in registration order) and the number of blocks L (see the module docstring);
    names inside `output_modules` take L + 1."""
    pattern = block_pattern(names)
    keys = {name: tuple(map(int, found.groups())) for name in names if (found := pattern.search(name))}
    rank = {key: depth for depth, key in enumerate(sorted(set(keys.values())), start=1)}
    last_block = max(i for i, name in enumerate(names) if name in keys)
    depths, current = {}, 0
    for i, name in enumerate(names):
        current = rank[keys[name]] if name in keys else current
        after = i > last_block or any(name.startswith(f"{module}.") for module in output_modules)
        depths[name] = len(rank) + 1 if after else current
    return depths, len(rank)


def parameter_groups(
    model: nn.Module,
    backbone: nn.Module,
    head_lr: float,
    backbone_lr: float,
    weight_decay: float,
    layer_decay: float | None = None,
) -> list[dict]:
    """AdamW parameter groups of `model`'s trainable parameters (see the module docstring).

    Each group is a dict with `params`, `lr`, `weight_decay`, a `name` ("heads", "backbone", "backbone.layer_3",
    each with ".no_decay" for the undecayed part), and `backbone` (bool, for `freeze_groups`).
    """
    in_backbone = dict(backbone.named_parameters())
    ids = {id(param) for param in in_backbone.values()}
    if layer_decay is not None:
        trainable = [name for name, param in in_backbone.items() if param.requires_grad]
        depths, blocks = layer_depths(trainable, getattr(backbone, "output_modules", ()))
        by_id = {id(param): depths[name] for name, param in in_backbone.items() if param.requires_grad}
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_backbone = id(param) in ids
        lr, key = (backbone_lr, "backbone") if is_backbone else (head_lr, "heads")
        if is_backbone and layer_decay is not None:
            depth = by_id[id(param)]
            lr, key = backbone_lr * layer_decay ** (blocks + 1 - depth), f"backbone.layer_{depth}"
        decay = decays(name, param)
        key += "" if decay else ".no_decay"
        group = {"name": key, "params": [], "lr": lr, "weight_decay": weight_decay if decay else 0.0}
        groups.setdefault(key, group | {"backbone": is_backbone})["params"].append(param)
    return list(groups.values())


def freeze_groups(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Hold the backbone groups' learning rate at 0 for the first `steps` scheduler steps, then follow the schedule.

    The training loop also drops the backbone's gradients during those steps (`drop_gradients`), so that AdamW keeps
    no state for it and the gradient norm is the heads'. The backward pass still runs through the backbone: every
    parameter gets a gradient, so DDP waits for no missing one, and a compiled step keeps one graph throughout.
    """
    if steps <= 0:
        return scheduler
    if not hasattr(scheduler, "lr_lambdas"):
        raise ValueError(f"a frozen-backbone warm-up needs a LambdaLR schedule, not {type(scheduler).__name__}")

    def frozen(schedule: Callable[[int], float]) -> Callable[[int], float]:
        # A plain function, not an object: LambdaLR's state_dict then leaves it out of checkpoints.
        return lambda step: 0.0 if step < steps else schedule(step)

    for i, group in enumerate(scheduler.optimizer.param_groups):
        if group.get("backbone"):
            scheduler.lr_lambdas[i] = frozen(scheduler.lr_lambdas[i])
            group["lr"] = group["initial_lr"] * scheduler.lr_lambdas[i](scheduler.last_epoch)
    return scheduler


def drop_gradients(params: Sequence[torch.Tensor]) -> None:
    """Forget these parameters' gradients: the optimizer then skips them (no update, no decay, no state)."""
    for param in params:
        param.grad = None


def prior_bias(frequency: np.ndarray | torch.Tensor, clamp: float = PRIOR_CLAMP) -> torch.Tensor:
    """Classifier bias from the class prior: the log-odds of each class's frequency, clamped to [clamp, 1 − clamp].

    A new classifier then starts predicting each class's base rate instead of 0.5 for all (logit 0): the first steps
    are not spent pushing 527 biases down, and the rare classes' loss starts near its entropy.
    """
    p = torch.as_tensor(np.asarray(frequency, dtype=np.float64)).clamp(clamp, 1 - clamp)
    return torch.log(p) - torch.log1p(-p)


def set_prior_bias(classifier: nn.Linear, frequency: np.ndarray | torch.Tensor) -> None:
    with torch.no_grad():
        classifier.bias.copy_(prior_bias(frequency).to(classifier.bias.dtype))


__all__ = [
    "block_pattern",
    "decays",
    "drop_gradients",
    "freeze_groups",
    "layer_depths",
    "parameter_groups",
    "prior_bias",
    "set_prior_bias",
]


def make_optimizer(model: nn.Module, args) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`: heads at `args.learning_rate`, the backbone at `args.backbone_learning_rate`
    (default: the heads' rate) with `args.layer_decay`, weight decay `args.weight_decay` where it applies.

    The fused implementation, transformers' `Trainer` default (torch >= 2.8): one kernel per step instead of a dozen
    passes over every parameter; on the demo CNN with SPA at 527 labels the passes over p_t alone took 2.2 ms of a
    step (0.5 ms fused)."""
    backbone_lr = args.backbone_learning_rate if args.backbone_learning_rate is not None else args.learning_rate
    groups = parameter_groups(
        model, model.spa.backbone, args.learning_rate, backbone_lr, args.weight_decay, args.layer_decay
    )
    return torch.optim.AdamW(groups, lr=args.learning_rate, fused=True)


def make_scheduler(optimizer, args, total_steps: int, frozen_steps: int, num_processes: int):
    """`args.lr_scheduler` with `args.warmup_ratio` warm-up over `total_steps` optimizer steps, the backbone's rate held
    at zero for `frozen_steps` (`freeze_groups`). A scheduler prepared by Accelerate steps once per process for every
    optimizer step (its convention), so every count is multiplied by the processes."""
    from transformers import get_scheduler

    scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps) * num_processes,
        num_training_steps=total_steps * num_processes,
    )
    return freeze_groups(scheduler, frozen_steps * num_processes)
