"""Build a model on the meta device, then fill it one checkpoint tensor at a time."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from purellm.layers.linear import MergedLinear
from purellm.loaders.model_files import ModelFiles
from purellm.models.registry import model_class

log = logging.getLogger("purellm")


def build_model(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, max_position: int
) -> nn.Module:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = model_class(files.config)(files.config, max_position)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=device)
    load_weights(model, files)
    model.tie_weights()
    model.model.rotary_emb.init_buffers(device)
    return model.eval()


def load_weights(model: nn.Module, files: ModelFiles) -> None:
    """Copy every checkpoint tensor into its parameter (or its shard of a fused one), checking
    shapes, and fail on anything missing or left over."""
    params = dict(model.named_parameters())
    expected = _expected_slots(model)
    started = last_report = time.monotonic()
    loaded: set[tuple[str, int | None]] = set()
    for name, tensor in files.weights():
        target, shard = _target(model, name)
        if target not in params:
            if name == "lm_head.weight" or "rotary_emb" in name:
                continue
            raise ValueError(f"checkpoint tensor {name!r} has no place in {type(model).__name__}")
        _copy(model, params[target], target, shard, tensor)
        loaded.add((target, shard))
        if time.monotonic() - last_report > 2:
            last_report = time.monotonic()
            log.info("loading weights: %d/%d tensors", len(loaded), len(expected))
    missing = sorted(f"{n}[{s}]" if s is not None else n for n, s in expected - loaded)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    log.info("loaded %d tensors in %.1fs", len(loaded), time.monotonic() - started)


def _target(model: nn.Module, name: str) -> tuple[str, int | None]:
    """Checkpoint name -> (parameter name, shard of a fused parameter or None)."""
    for checkpoint_part, (fused, shard) in getattr(model, "packed_modules_mapping", {}).items():
        if f".{checkpoint_part}." in name:
            return name.replace(f".{checkpoint_part}.", f".{fused}."), shard
    return name, None


def _expected_slots(model: nn.Module) -> set[tuple[str, int | None]]:
    slots: set[tuple[str, int | None]] = set()
    for module_name, module in model.named_modules():
        for kind, _ in module.named_parameters(recurse=False):
            name = f"{module_name}.{kind}" if module_name else kind
            if isinstance(module, MergedLinear):
                slots.update((name, i) for i in range(len(module.output_sizes)))
            else:
                slots.add((name, None))
    if getattr(model, "tie_word_embeddings", False):
        slots.discard(("lm_head.weight", None))
    return slots


@torch.no_grad()
def _copy(model, param, name: str, shard: int | None, tensor: torch.Tensor) -> None:
    if shard is None:
        destination = param
    else:
        module = model.get_submodule(name.rsplit(".", 1)[0])
        destination = param[module.shard_rows(shard)]
    if tuple(tensor.shape) != tuple(destination.shape):
        raise ValueError(
            f"{name}: checkpoint shape {tuple(tensor.shape)}, model {tuple(destination.shape)}"
        )
    destination.copy_(tensor)
