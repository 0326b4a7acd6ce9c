"""Build a model on the meta device, then fill it one checkpoint tensor at a time."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from purellm.layers.linear import MergedLinear
from purellm.layers.quantization import Int4Linear, Int8Linear, replace_module
from purellm.loaders.gguf_quants import Q4Weight
from purellm.loaders.model_files import ModelFiles
from purellm.models.registry import model_class

log = logging.getLogger("purellm")
Q4_FIELDS = ("q", "scales", "mins")


def build_model(
    files: ModelFiles,
    device: torch.device,
    dtype: torch.dtype,
    max_position: int,
    keep_q4: bool = False,
) -> nn.Module:
    """`keep_q4` (a Q4 GGUF): linears whose checkpoint tensors are all Q4_0/Q4_1 also get their
    exact 4-bit weights (Int4Linear), and the LM head an int8 twin, for small steps."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = model_class(files.config)(files.config, max_position)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=device)
    packer = Int4Packer(model) if keep_q4 else None
    load_weights(model, files, packer)
    model.tie_weights()
    if packer is not None:
        log.info("gguf: %d linears use the file's 4-bit weights for small steps", packer.finish())
    model.model.rotary_emb.init_buffers(device)
    return model.eval()


def load_weights(model: nn.Module, files: ModelFiles, packer: Int4Packer | None = None) -> None:
    """Copy every checkpoint tensor into its parameter (or its shard of a fused one), checking
    shapes, and fail on anything missing or left over. With a packer, 4-bit tensors also go to
    it, in the same pass over the file."""
    params = dict(model.named_parameters())
    expected = _expected_slots(model)
    started = last_report = time.monotonic()
    loaded: set[tuple[str, int | None]] = set()
    stream = files.weights(keep_q4=True) if packer is not None else files.weights()
    for name, tensor in stream:
        target, shard = _target(model, name)
        if isinstance(tensor, Q4Weight):
            packer.add(module_name=target.rsplit(".", 1)[0], shard=shard, weight=tensor)
            tensor = tensor.dequantize()
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


class Int4Packer:
    """Builds an Int4Linear for each linear as soon as the 4-bit weights of all its shards have
    streamed by; `finish` puts them in place (and gives the LM head its int8 twin) once the
    dense weights are loaded."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.pending: dict[str, dict[int | None, Q4Weight]] = {}
        self.packed: dict[str, Int4Linear] = {}

    @torch.no_grad()
    def add(self, module_name: str, shard: int | None, weight: Q4Weight) -> None:
        shards = self.pending.setdefault(module_name, {})
        shards[shard] = weight
        linear = self.model.get_submodule(module_name)
        wanted = range(len(linear.output_sizes)) if isinstance(linear, MergedLinear) else [None]
        if set(shards) == set(wanted):
            parts = [shards[i] for i in wanted]
            q, scales, mins = (torch.cat([getattr(p, f) for p in parts]) for f in Q4_FIELDS)
            self.packed[module_name] = Int4Linear(linear, q, scales, mins)
            del self.pending[module_name]

    @torch.no_grad()
    def finish(self) -> int:
        """Returns how many linears are int4 (a fused one with a non-Q4 shard stays dense)."""
        for module_name, layer in self.packed.items():
            replace_module(self.model, module_name, layer)
        lm_head = Int8Linear.from_linear(self.model.lm_head, keep_dense=True)
        replace_module(self.model, "lm_head", lm_head)
        return len(self.packed)


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
