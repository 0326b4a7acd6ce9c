"""Build a model on the meta device, then fill it one checkpoint tensor at a time."""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

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
    params = dict(model.named_parameters())
    expected = set(params)
    if getattr(model, "tie_word_embeddings", False):
        expected.discard("lm_head.weight")
    started, last_report, loaded = time.monotonic(), time.monotonic(), set()
    for name, tensor in files.weights():
        if name not in params:
            if name == "lm_head.weight" or "rotary_emb" in name:
                continue
            raise ValueError(f"checkpoint tensor {name!r} has no place in {type(model).__name__}")
        param = params[name]
        if tuple(tensor.shape) != tuple(param.shape):
            raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)}, model {param.shape}")
        with torch.no_grad():
            param.copy_(tensor)
        loaded.add(name)
        if time.monotonic() - last_report > 2:
            last_report = time.monotonic()
            log.info("loading weights: %d/%d tensors", len(loaded), len(expected))
    missing = expected - loaded
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    log.info("loaded %d tensors in %.1fs", len(loaded), time.monotonic() - started)
