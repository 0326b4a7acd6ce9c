"""Build a model on the meta device, then fill it one checkpoint tensor at a time."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from purellm.layers.linear import MergedLinear
from purellm.layers.quantization import Int4Linear, Int8Linear, quantize_vocabulary, replace_module
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
    twins: bool = False,
) -> nn.Module:
    """`twins` (a quantized GGUF, `quantization="gguf"`): beside its dense weight, each linear
    stored quantized gets a weight-only twin for small steps (QuantizedTwins)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = model_class(files.config)(files.config, max_position)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=device)
    builder = QuantizedTwins(model, files.quantized) if twins else None
    load_weights(model, files, builder)
    model.tie_weights()
    if builder is not None:
        int4, int8 = builder.finish()
        log.info(
            "gguf: small steps use the file's 4-bit weights in %d linears, int8 in %d", int4, int8
        )
    model.model.rotary_emb.init_buffers(device)
    return model.eval()


def load_weights(model: nn.Module, files: ModelFiles, packer: QuantizedTwins | None = None) -> None:
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


class QuantizedTwins:
    """Builds an Int4Linear for each linear as soon as the 4-bit weights of all its shards have
    streamed by (Q4_0/Q4_1/Q4_K). `finish` puts them in place once the dense weights are loaded,
    gives every other linear with a quantized shard (Q8_0, K-quants) an Int8Linear twin, and
    the LM head one too; a vocabulary matrix the file stores quantized is kept in int8 only."""

    def __init__(self, model: nn.Module, quantized: frozenset[str]):
        self.model = model
        self.pending: dict[str, dict[int | None, Q4Weight]] = {}
        self.packed: dict[str, Int4Linear] = {}
        self.quantized_modules = {_target(model, name)[0].rsplit(".", 1)[0] for name in quantized}

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
    def finish(self) -> tuple[int, int]:
        """(linears on the int4 kernel, linears with an int8 twin), the LM head not counted. A
        fused linear with a shard that is not Q4 gets an int8 twin."""
        for module_name, layer in self.packed.items():
            replace_module(self.model, module_name, layer)
        int8 = sorted(
            name
            for name in self.quantized_modules - set(self.packed)
            if isinstance(self.model.get_submodule(name), nn.Linear) and name != "lm_head"
        )
        for module_name in int8:
            linear = self.model.get_submodule(module_name)
            replace_module(self.model, module_name, Int8Linear.from_linear(linear, keep_dense=True))
        embedding = "model.embed_tokens" in self.quantized_modules
        tied = getattr(self.model, "tie_word_embeddings", False)
        head = embedding if tied else "lm_head" in self.quantized_modules
        quantize_vocabulary(self.model, head, embedding)
        return len(self.packed), len(int8)


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
