"""What a model needs, from metadata only: no torch, no transformers, no weights read.

Finds the model with `purellm.loaders.resolve.locate_model`, as serving does, and reads
GGUF headers (tensor shapes) or config.json plus safetensors headers. Runs inside a probe
subprocess, so a broken file cannot take the doctor down."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_FLOAT_TYPES = ("F32", "F16", "BF16")
"""GGUF tensor types that are not quantized."""


@dataclass(frozen=True)
class ModelFacts:
    name: str
    source: str
    architecture: str
    params: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    context_length: int
    stored_as: str
    """How the weights are stored, e.g. 'GGUF Q4_1' or 'safetensors bfloat16'."""
    file_bytes: int
    checkpoint_dtype: str | None = None
    """The half type the checkpoint was saved in (float16, bfloat16), else None."""
    head_params: int = 0
    """The LM head's parameters (the tied embedding's, if tied) where a GGUF stores it quantized
    (kept in int8 only on the CPU), else 0."""


def read_model_facts(model: str | None) -> ModelFacts:
    from purellm.loaders.resolve import locate_model

    location = locate_model(model)
    if location.kind == "hf_folder":
        return hf_facts(location.path, location.name)
    return gguf_facts(location.path, location.name)


def gguf_facts(path: Path, name: str) -> ModelFacts:
    from purellm.loaders.gguf_header import GGUFHeader

    reader = GGUFHeader(path)
    meta = reader.fields
    arch = meta.get("general.architecture", "unknown")
    heads = int(meta.get(f"{arch}.attention.head_count", 1))
    hidden = int(meta.get(f"{arch}.embedding_length", 0))
    types = [t.tensor_type.name for t in reader.tensors]
    by_name = {t.name: t for t in reader.tensors}
    head = by_name.get("output.weight") or by_name.get("token_embd.weight")  # tied: the one
    head_quantized = head is not None and head.tensor_type.name not in GGUF_FLOAT_TYPES
    return ModelFacts(
        name=name,
        source=f"GGUF file {path}",
        architecture=arch,
        params=sum(int(t.n_elements) for t in reader.tensors),
        num_layers=int(meta.get(f"{arch}.block_count", 0)),
        num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(meta.get(f"{arch}.attention.key_length", hidden // max(heads, 1))),
        context_length=int(meta.get(f"{arch}.context_length", 0)),
        stored_as=f"GGUF {max(set(types), key=types.count)}" if types else "GGUF",
        file_bytes=path.stat().st_size,
        head_params=int(head.n_elements) if head_quantized else 0,
    )


def hf_facts(folder: Path, name: str) -> ModelFacts:
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config", config)
    files = sorted(folder.glob("*.safetensors"))
    counted = _safetensors_params(files)
    heads = int(text.get("num_attention_heads", 1))
    dtype = text.get("dtype") or text.get("torch_dtype") or config.get("torch_dtype")
    return ModelFacts(
        name=name,
        source=f"Hugging Face folder {folder}",
        architecture=(config.get("architectures") or [config.get("model_type", "unknown")])[0],
        params=counted or estimate_params(text),
        num_layers=int(text.get("num_hidden_layers", 0)),
        num_kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or text.get("hidden_size", 0) // max(heads, 1)),
        context_length=int(text.get("max_position_embeddings", 0)),
        stored_as=f"safetensors {dtype or 'unknown dtype'}",
        file_bytes=sum(f.stat().st_size for f in files),
        checkpoint_dtype=dtype if dtype in ("float16", "bfloat16") else None,
    )


def _safetensors_params(files: list[Path]) -> int:
    """Parameter count from the safetensors headers (8-byte length, then JSON)."""
    total = 0
    for file in files:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def estimate_params(config: dict[str, Any]) -> int:
    """A decoder-only transformer's parameters from its config (when no header says)."""
    hidden = int(config.get("hidden_size", 0))
    heads = int(config.get("num_attention_heads", 1))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // max(heads, 1))
    inter = int(config.get("intermediate_size", 0))
    vocab = int(config.get("vocab_size", 0))
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    layer = attention + 3 * hidden * inter + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return int(config.get("num_hidden_layers", 0)) * layer + embeddings + hidden
