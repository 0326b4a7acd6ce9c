"""Build a model with its quantization methods in place, then fill it one checkpoint tensor at a
time through each parameter's `weight_loader`."""

from __future__ import annotations

import logging
import re
import time

import torch
from torch import nn

from purellm.layers.quant.base import default_loader
from purellm.layers.quant.builder import LayerBuilder
from purellm.layers.quant.config import QuantConfig
from purellm.loaders.model_files import ModelFiles
from purellm.models.registry import model_class

log = logging.getLogger("purellm")


def build_model(
    files: ModelFiles,
    device: torch.device,
    dtype: torch.dtype,
    max_position: int,
    quant: QuantConfig | None = None,
) -> nn.Module:
    """Parameters are created empty on `device` (nothing initialised, so untouched CPU pages
    cost nothing) in the form the quantization method keeps them, then loaded."""
    tied = bool(getattr(files.config, "tie_word_embeddings", False))
    layers = LayerBuilder(quant or QuantConfig(), dtype, tied)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(files.config)(files.config, max_position, layers)
    finally:
        torch.set_default_dtype(previous)
    load_weights(model, files)
    model.model.rotary_emb.init_buffers(device)
    model.scratch = layers.scratch  # the dequantize-then-matmul buffer all layers share
    return model.eval()


def held_bytes(model: nn.Module) -> int:
    """The weights the model holds, as doctor counts them: parameters and buffers (each storage
    once, the rotary tables aside) and the shared scratch buffer as the steps so far grew it."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    held = {t.data_ptr(): t.numel() * t.element_size() for n, t in tensors if "rotary" not in n}
    buffer = model.scratch.buffer
    return sum(held.values()) + (0 if buffer is None else buffer.numel())


def load_weights(model: nn.Module, files: ModelFiles) -> None:
    """Route every checkpoint tensor to its parameter's weight loader (with the shard of a
    fused one), fail on anything missing or left over, and let each module's method prepare
    its tensors as soon as all of them are in, so converted and raw forms never pile up."""
    names = {name for name, _ in model.named_parameters()}  # no references: raw forms go
    pending = _expected_slots(model)
    expected = sum(len(slots) for slots in pending.values())
    started = last_report = time.monotonic()
    loaded = 0
    for name, tensor in files.weights():
        target, shard, expert = _target(model, name)
        if target not in names:
            if name.startswith("lm_head.") or "rotary_emb" in name:
                continue  # a tied head's copy, or buffers that are computed
            raise ValueError(
                f"{files.source}: tensor {name!r} has no place in {type(model).__name__}"
            )
        param = _parameter(model, target, files.source, name)
        load = getattr(param, "weight_loader", default_loader)
        try:
            if expert is None:  # a whole tensor (all of a GGUF's experts, stacked)
                load(param, tensor, shard)
            else:
                load(param, tensor, shard, expert=expert)
        except ValueError as error:
            raise ValueError(f"{files.source}: tensor {name!r}: {error}") from error
        module_name = target.rpartition(".")[0]
        slots = pending.get(module_name)
        if slots is not None:  # None: an optional tensor of a module already complete
            if expert is None:  # every slot of (target, shard): one, or all experts' stacked
                slots.difference_update({s for s in slots if s[:2] == (target, shard)})
            else:
                slots.discard((target, shard, expert))
            if not slots:
                _process(model, module_name)
                del pending[module_name]
        loaded += 1
        if time.monotonic() - last_report > 2:
            last_report = time.monotonic()
            log.info("loading weights: %d/%d tensors", loaded, expected)
    missing = sorted(_checkpoint_name(model, *slot) for slots in pending.values() for slot in slots)
    if missing:
        raise ValueError(
            f"{files.source} lacks {len(missing)} tensors, e.g. {', '.join(missing[:3])}"
        )
    model.tie_weights()
    for module_name in reversed(list(pending)):  # the tied head, before its embedding
        _process(model, module_name)
    log.info("loaded %d tensors in %.1fs", loaded, time.monotonic() - started)


def _parameter(model: nn.Module, target: str, source: str, name: str) -> nn.Parameter:
    try:
        return model.get_parameter(target)
    except AttributeError:  # its module's method already replaced it
        raise ValueError(f"{source}: tensor {name!r} comes after its layer was prepared") from None


def _process(model: nn.Module, module_name: str) -> None:
    module = model.get_submodule(module_name)
    method = getattr(module, "method", None)
    with torch.no_grad():
        if method is not None:
            method.process_after_loading(module)
        elif hasattr(module, "process_after_loading"):  # stacked experts
            module.process_after_loading()


_EXPERT = re.compile(r"\.experts\.(?:(\d+)\.)?(\w+)\.weight$")
"""One expert's projection (`experts.3.gate_proj.weight`) or all experts' stacked (a GGUF's
`experts.gate_proj.weight`, expert None)."""


def _target(model: nn.Module, name: str) -> tuple[str, int | None, int | None]:
    """Checkpoint name -> (parameter name, shard of a fused parameter, expert), each None
    where it does not apply."""
    for checkpoint_part, here in getattr(model, "checkpoint_renames", {}).items():
        name = name.replace(f".{checkpoint_part}.", f".{here}.")
    match = _EXPERT.search(name)
    experts = getattr(model, "expert_mapping", {})
    if match is not None and match[2] in experts:
        stacked, shard = experts[match[2]]
        expert = None if match[1] is None else int(match[1])
        return f"{name[: match.start()]}.experts.{stacked}", shard, expert
    for checkpoint_part, (fused, shard) in getattr(model, "packed_modules_mapping", {}).items():
        if f".{checkpoint_part}." in name:
            return name.replace(f".{checkpoint_part}.", f".{fused}."), shard, None
    return name, None, None


def _checkpoint_name(model: nn.Module, name: str, shard: int | None, expert: int | None) -> str:
    """(parameter name, shard, expert) -> the checkpoint's name for it."""
    if expert is not None:
        prefix, _, stacked = name.rpartition(".")
        parts = getattr(model, "expert_mapping", {}).items()
        part = next(p for p, (fused, index) in parts if (fused, index) == (stacked, shard))
        name = f"{prefix}.{expert}.{part}.weight"
    else:
        mapping = getattr(model, "packed_modules_mapping", {}).items()
        for checkpoint_part, (fused, index) in mapping:
            if index == shard and f".{fused}." in name:
                name = name.replace(f".{fused}.", f".{checkpoint_part}.")
                break
    for checkpoint_part, here in getattr(model, "checkpoint_renames", {}).items():
        name = name.replace(f".{here}.", f".{checkpoint_part}.")
    return name


def _expected_slots(model: nn.Module) -> dict[str, set[tuple[str, int | None, int | None]]]:
    """Module name -> the (parameter, shard, expert) slots the checkpoint must fill; a tied LM
    head's module is listed with none."""
    tied = getattr(model, "tie_word_embeddings", False)
    slots: dict[str, set[tuple[str, int | None, int | None]]] = {}
    for module_name, module in model.named_modules():
        own = slots.setdefault(module_name, set())
        if tied and module_name == "lm_head":
            continue
        if hasattr(module, "expected_slots"):  # stacked experts
            own.update(module.expected_slots(module_name))
            continue
        sharded = len(getattr(module, "output_sizes", ())) > 1
        for kind, param in module.named_parameters(recurse=False):
            if getattr(param, "optional", False):
                continue
            name = f"{module_name}.{kind}" if module_name else kind
            if sharded:
                own.update((name, i, None) for i in range(len(module.output_sizes)))
            else:
                own.add((name, None, None))
    return {name: own for name, own in slots.items() if own or name == "lm_head"}
