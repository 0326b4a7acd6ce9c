"""What a model needs, from metadata only: no torch, no transformers, no weights read.

Finds the model with `purellm.loaders.resolve.locate_model`, as serving does, and reads GGUF
headers (tensor shapes and types) or config.json plus safetensors headers. Runs inside a
probe subprocess, so a broken file cannot take the doctor down."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from purellm.layers.quant.config import checkpoint_quant
from purellm.layers.quant.footprint import TensorInfo
from purellm.loaders.gguf_names import hf_name


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
    """How the weights are stored, e.g. 'GGUF Q4_1' (the type of most matrix weights) or
    'safetensors bfloat16'."""
    file_bytes: int
    checkpoint_dtype: str | None = None
    """The half type the checkpoint was saved in (float16, bfloat16), else None."""
    hidden_size: int = 0
    vocab_size: int = 0
    tied: bool = False
    """The LM head shares the input embedding (a GGUF without output.weight)."""
    tensors: tuple[TensorInfo, ...] = ()
    """A GGUF's tensors under their Hugging Face names (empty for other models)."""
    config: dict[str, Any] | None = None
    """A Hugging Face folder's config.json (its quantization_config, if any, says how)."""
    active_params: int | None = None
    """A mixture of experts: the parameters one token uses (all experts stay resident)."""

    def __post_init__(self) -> None:  # tensors come back from the probe's JSON as dicts
        tensors = tuple(
            t
            if isinstance(t, TensorInfo)
            else TensorInfo(t["name"], t["kind"], tuple(t["shape"]), t["nbytes"])
            for t in self.tensors
        )
        object.__setattr__(self, "tensors", tensors)

    @property
    def quantization_config(self) -> dict[str, Any] | None:
        config = self.config or {}
        return config.get("quantization_config") or config.get("text_config", {}).get(
            "quantization_config"
        )

    @property
    def vocab_params(self) -> int:
        """The embedding's weights, and the LM head's unless tied."""
        return self.vocab_size * self.hidden_size * (1 if self.tied else 2)


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
    weights: dict[str, int] = {}  # GGUF type -> matrix weights stored in it
    for tensor in reader.tensors:
        if len(tensor.shape) == 2:
            kind = tensor.tensor_type.name
            weights[kind] = weights.get(kind, 0) + int(tensor.n_elements)
    names = {t.name for t in reader.tensors}
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    params = sum(int(t.n_elements) for t in reader.tensors)
    experts = int(meta.get(f"{arch}.expert_count", 0) or 0)
    used = int(meta.get(f"{arch}.expert_used_count", 0) or 0)
    stacked = sum(int(t.n_elements) for t in reader.tensors if "_exps." in t.name)
    idle = stacked * (experts - used) // experts if experts else 0
    return ModelFacts(
        name=name,
        source=f"GGUF file {path}",
        architecture=arch,
        params=params,
        active_params=params - idle if idle else None,
        num_layers=int(meta.get(f"{arch}.block_count", 0)),
        num_kv_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(meta.get(f"{arch}.attention.key_length", hidden // max(heads, 1))),
        context_length=int(meta.get(f"{arch}.context_length", 0)),
        stored_as=f"GGUF {max(weights, key=weights.__getitem__)}" if weights else "GGUF",
        file_bytes=path.stat().st_size,
        hidden_size=hidden,
        vocab_size=int(embedding.shape[-1]) if embedding is not None else 0,
        tied="output.weight" not in names,
        tensors=tuple(gguf_tensor_infos(reader.tensors)),
    )


def gguf_tensor_infos(tensors: list[Any]) -> list[TensorInfo]:
    """GGUF header tensors as TensorInfo: Hugging Face names and order, bytes in the file."""
    from gguf import GGML_QUANT_SIZES

    infos = []
    for tensor in tensors:
        hf = hf_name(tensor.name)
        if hf is None:
            continue  # not a parameter of the model (rope_freqs)
        block, type_bytes = GGML_QUANT_SIZES[tensor.tensor_type]
        shape = tuple(int(d) for d in reversed(tensor.shape))
        nbytes = int(tensor.n_elements) * type_bytes // block
        infos.append(TensorInfo(hf, tensor.tensor_type.name, shape, nbytes))
    return infos


def hf_facts(folder: Path, name: str) -> ModelFacts:
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config", config)
    files = sorted(folder.glob("*.safetensors"))
    quant = checkpoint_quant(text.get("quantization_config") or config.get("quantization_config"))
    counted = 0 if quant is not None else _safetensors_params(files)  # packed shapes mislead
    heads = int(text.get("num_attention_heads", 1))
    dtype = text.get("dtype") or text.get("torch_dtype") or config.get("torch_dtype")
    stored = f"{quant.method} {quant.bits}-bit" if quant else dtype or "unknown dtype"
    params = counted or estimate_params(text)
    idle = idle_expert_params(text)
    return ModelFacts(
        name=name,
        source=f"Hugging Face folder {folder}",
        architecture=(config.get("architectures") or [config.get("model_type", "unknown")])[0],
        params=params,
        active_params=params - idle if idle else None,
        num_layers=int(text.get("num_hidden_layers", 0)),
        num_kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or text.get("hidden_size", 0) // max(heads, 1)),
        context_length=int(text.get("max_position_embeddings", 0)),
        stored_as=f"safetensors {stored}",
        file_bytes=sum(f.stat().st_size for f in files),
        checkpoint_dtype=dtype if dtype in ("float16", "bfloat16") else None,
        hidden_size=int(text.get("hidden_size", 0)),
        vocab_size=int(text.get("vocab_size", 0)),
        tied=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        config=config,
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
    layers = int(config.get("num_hidden_layers", 0))
    dense = layers * (attention + 3 * hidden * inter + 2 * hidden)
    experts, _, moe_inter, moe_layers = _moe_shape(config)
    moe = moe_layers * (experts * 3 * hidden * moe_inter + experts * hidden - 3 * hidden * inter)
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return dense + moe + embeddings + hidden


def idle_expert_params(config: dict[str, Any]) -> int:
    """A mixture of experts: the expert weights one token does not use (0 if dense)."""
    experts, top_k, inter, moe_layers = _moe_shape(config)
    return moe_layers * (experts - top_k) * 3 * int(config.get("hidden_size", 0)) * inter


def _moe_shape(config: dict[str, Any]) -> tuple[int, int, int, int]:
    """(experts, active experts, expert intermediate size, MoE layers); zeros if dense."""
    experts = int(config.get("num_experts") or config.get("num_local_experts") or 0)
    if not experts:
        return 0, 0, 0, 0
    inter = int(config.get("moe_intermediate_size") or config.get("intermediate_size", 0))
    step = int(config.get("decoder_sparse_step") or 1)
    dense = set(config.get("mlp_only_layers") or [])
    layers = range(int(config.get("num_hidden_layers", 0)))
    moe_layers = sum(1 for i in layers if i not in dense and (i + 1) % step == 0)
    return experts, int(config.get("num_experts_per_tok", 0)), inter, moe_layers
