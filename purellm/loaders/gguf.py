"""Load a GGUF file (llama.cpp / Ollama) as ModelFiles: HF config, HF tokenizer, HF-named weights.

Weights are read through one memory map one tensor at a time: matrices as their raw blocks
(GGUFRaw, which the model keeps or dequantizes at load), vectors (norms, biases) as float32.
Each tensor's pages are dropped from the process once copied, so loading never holds the
file's pages beside the model's own copy."""

from __future__ import annotations

import functools
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from purellm import env
from purellm.layers.quant.config import CheckpointQuant, gguf_checkpoint
from purellm.layers.quant.gguf_method import GGUFRaw
from purellm.loaders.gguf_header import GGUFHeader, GGUFTensor
from purellm.loaders.gguf_names import SKIPPED, hf_name, llama3_rope_parameters, unpermute_qk
from purellm.loaders.light_config import LightConfig
from purellm.loaders.model_files import ModelFiles, WeightStream

Q = GGMLQuantizationType
SUPPORTED_TYPES = (
    Q.F32,
    Q.F16,
    Q.BF16,
    Q.Q8_0,
    Q.Q4_0,
    Q.Q4_1,
    Q.Q5_0,
    Q.Q5_1,
    Q.Q2_K,
    Q.Q3_K,
    Q.Q4_K,
    Q.Q5_K,
    Q.Q6_K,
)
SUPPORTED_ARCHITECTURES = {
    # general.architecture -> (transformers model_type, HF class); Mistral GGUFs say "llama".
    "llama": ("llama", "LlamaForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "qwen3moe": ("qwen3_moe", "Qwen3MoeForCausalLM"),
}
MIXTRAL = ("mixtral", "MixtralForCausalLM")
"""llama.cpp writes Mixtral as `llama` with experts."""
_REQUIRED = object()


def load_gguf(path: Path, name: str | None = None) -> ModelFiles:
    """Resolve a GGUF file. Raises ValueError for an unsupported architecture, tensor or type
    before anything is streamed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    try:
        header = GGUFHeader(path)
    except Exception as error:  # struct, unicode and value errors on a file that is not GGUF
        raise ValueError(f"{path} is not a readable GGUF file: {error}") from error
    meta = header.fields
    tensors = {tensor.name: tensor for tensor in header.tensors}
    config = build_config(meta, tensors)
    plan = _plan(tensors, meta["general.architecture"], config)
    return ModelFiles(
        name=name or path.stem,
        source=f"GGUF file {path}",
        config=config,
        tokenizer=_tokenizer(path, meta),
        weights=functools.partial(_stream, path, plan),
        generation_config=_generation_config(meta),
        quantization=_checkpoint_quant(plan, tensors),
    )


def _checkpoint_quant(plan: Plan, tensors: dict[str, GGUFTensor]) -> CheckpointQuant:
    found = ((name, tensors[gguf_name]) for name, gguf_name, _ in plan)
    return gguf_checkpoint(
        (name, t.tensor_type.name, len(t.shape), int(t.n_elements))
        for name, t in found
        if len(t.shape) >= 2
    )


def build_config(meta: dict[str, Any], tensors: dict[str, GGUFTensor]) -> Any:
    """The fields of a transformers config (LlamaConfig, Qwen2Config, Qwen3Config) from GGUF
    metadata, as a LightConfig."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported; supported architectures: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (llama also covers Mistral)"
        )
    model_type, hf_class = SUPPORTED_ARCHITECTURES[arch]
    experts = int(meta.get(f"{arch}.expert_count", 0) or 0)
    if arch == "llama" and experts:
        model_type, hf_class = MIXTRAL

    def key(suffix: str, default: Any = _REQUIRED) -> Any:
        full = f"{arch}.{suffix}"
        if full in meta:
            return meta[full]
        if default is _REQUIRED:
            raise ValueError(f"GGUF metadata lacks the required key {full!r}")
        return default

    hidden = key("embedding_length")
    heads = key("attention.head_count")
    head_dim = key("attention.key_length", hidden // heads)
    embedding = tensors.get("token_embd.weight")
    if embedding is not None:
        vocab_size = int(embedding.shape[1])  # GGUF shape [hidden, vocab]
    else:
        vocab_size = meta.get("tokenizer.ggml.tokens") or key("vocab_size")
    kwargs = {
        "architectures": [hf_class],
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": key("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": key("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": _f32(key("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": key("context_length"),
        "rope_parameters": _rope_parameters(key, tensors, head_dim),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": arch == "qwen2" or "blk.0.attn_q.bias" in tensors,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "dtype": torch.float32,
    }
    if experts:
        kwargs.update(_moe_config(key, model_type, experts))
    return LightConfig(model_type=model_type, **kwargs)


def _moe_config(key: Any, model_type: str, experts: int) -> dict[str, Any]:
    """A mixture of experts' config fields (llama.cpp renormalises Qwen3-MoE's top-k)."""
    used = key("expert_used_count")
    if model_type == "mixtral":
        return {"num_local_experts": experts, "num_experts_per_tok": used}
    return {
        "num_experts": experts,
        "num_experts_per_tok": used,
        "moe_intermediate_size": key("expert_feed_forward_length"),
        "norm_topk_prob": bool(key("expert_weights_norm", True)),
    }


def _f32(value: float) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value)))


def _rope_parameters(key: Any, tensors: dict[str, GGUFTensor], head_dim: int) -> dict:
    theta = _f32(key("rope.freq_base", 10000.0))
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
    scaling = key("rope.scaling.type", None)
    factor = key("rope.scaling.factor", None)
    if scaling is None and key("rope.scale_linear", None) is not None:  # older files
        scaling, factor = "linear", key("rope.scale_linear")
    if scaling in ("linear", "yarn"):
        if factor is None:
            raise ValueError(f"GGUF rope scaling {scaling!r} has no rope.scaling.factor")
        rope.update(rope_type=scaling, factor=_f32(factor))
        original = key("rope.scaling.original_context_length", None)
        if original is not None:
            rope["original_max_position_embeddings"] = int(original)
    elif scaling not in (None, "none"):
        raise ValueError(
            f"GGUF rope scaling type {scaling!r} is not supported (linear, yarn, none)"
        )
    rope_freqs = tensors.get("rope_freqs.weight")
    if rope_freqs is not None:  # llama3-style scaling, stored as per-frequency divisors
        _check_type(rope_freqs)
        divisors = dequantize(rope_freqs.data, rope_freqs.tensor_type).reshape(-1)  # [dim/2]
        dim = key("rope.dimension_count", head_dim)
        llama3 = llama3_rope_parameters(divisors, theta, dim)
        if llama3 is not None:
            rope.update(llama3)
    return rope


def _check_type(tensor: GGUFTensor) -> None:
    if tensor.tensor_type not in SUPPORTED_TYPES:
        raise ValueError(
            f"GGUF tensor {tensor.name!r} has type {tensor.tensor_type.name}, which purellm cannot "
            f"dequantize; supported types: {', '.join(t.name for t in SUPPORTED_TYPES)}"
        )


Plan = list[tuple[str, str, int | None]]


def _plan(tensors: dict[str, GGUFTensor], arch: str, config: Any) -> Plan:
    """(hf_name, gguf_name, heads to unpermute by or None) for every tensor, checked up front.
    It holds no tensor data: each stream maps the file again (~60 ms) and unmaps it when done,
    so the file's pages do not stay in the server's resident memory (93 MB for the default
    model)."""
    plan = []
    for gguf_name, tensor in tensors.items():
        if gguf_name in SKIPPED:
            continue
        name = hf_name(gguf_name)
        if name is None:
            raise ValueError(
                f"GGUF tensor {gguf_name!r} has no Hugging Face counterpart for architecture "
                f"{arch!r}; this file is not a plain {arch} model"
            )
        _check_type(tensor)
        heads = None
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            heads = config.num_attention_heads
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            heads = config.num_key_value_heads
        plan.append((name, gguf_name, heads))
    return plan


def _stream(path: Path, plan: Plan) -> WeightStream:
    header = GGUFHeader(path)
    tensors = {tensor.name: tensor for tensor in header.tensors}
    for name, gguf_name, heads in plan:
        tensor = tensors[gguf_name]
        if len(tensor.shape) >= 2:
            yield name, read_raw(tensor, heads)
        else:
            yield name, read_tensor(tensor, heads)
        _release(header, tensor)


def _release(header: GGUFHeader, tensor: GGUFTensor) -> None:
    """Drop a copied tensor's pages from this process (they stay in the page cache)."""
    start = tensor.data.ctypes.data - header.blob.ctypes.data
    aligned = start - start % mmap.PAGESIZE
    length = start - aligned + tensor.data.nbytes
    header.blob._mmap.madvise(mmap.MADV_DONTNEED, aligned, length)


def read_raw(tensor: GGUFTensor, unpermute_heads: int | None = None) -> GGUFRaw:
    """A GGUF matrix (or stack of experts' matrices) as its raw rows in HF layout (a view of
    the file unless rows move)."""
    _check_type(tensor)
    *stack, rows, columns = _hf_shape(tensor)
    data = np.asarray(tensor.data).view(np.uint8).reshape(*stack, rows, -1)  # [(E,) rows, bytes]
    with warnings.catch_warnings():  # a view of the read-only memory map; it is only read
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.from_numpy(data)
    if unpermute_heads is not None:
        raw = raw[unpermute_qk(torch.arange(rows), unpermute_heads)]
    return GGUFRaw(raw, tensor.tensor_type.name, columns)


def _hf_shape(tensor: GGUFTensor) -> tuple[int, ...]:
    return tuple(int(dim) for dim in reversed(tensor.shape.tolist()))


def read_tensor(tensor: GGUFTensor, unpermute_heads: int | None = None) -> torch.Tensor:
    """One GGUF tensor as a float32 torch tensor in HF layout (GGUF shape reversed)."""
    raw = read_raw(_as_matrix(tensor)) if len(tensor.shape) != 2 else read_raw(tensor)
    result = raw.dequantize().reshape(_hf_shape(tensor))  # [out, in] or [n]
    if unpermute_heads is not None:
        result = unpermute_qk(result, unpermute_heads)
    return result


def _as_matrix(tensor: GGUFTensor) -> GGUFTensor:
    """A vector (or any tensor) as one row of its elements."""
    shape = np.array([int(tensor.n_elements), 1])
    return GGUFTensor(tensor.name, tensor.tensor_type, shape, tensor.n_elements, tensor.data)


def _tokenizer(path: Path, meta: dict[str, Any]) -> Any:
    """The GGUF's tokenizer as converted by transformers, kept in purellm's cache folder so that
    later starts load it in ~0.2 s instead of converting it again (~1 s for 49k tokens)."""
    from transformers import PreTrainedTokenizerFast

    saved = env.cache_dir() / "tokenizers" / _tokenizer_key(path)
    tokenizer = None
    if saved.is_dir():
        try:
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(saved), local_files_only=True)
        except Exception:  # a damaged copy (tokenizers raises its own types): convert again
            shutil.rmtree(saved, ignore_errors=True)
    if tokenizer is None:
        tokenizer = _convert_tokenizer(path)
        _save_tokenizer(tokenizer, saved)
    tokenizer.name_or_path = str(path)
    template = meta.get("tokenizer.chat_template")
    if template and not tokenizer.chat_template:
        tokenizer.chat_template = template
    return tokenizer


def _convert_tokenizer(path: Path) -> Any:
    """transformers' own GGUF tokenizer conversion, fed a folder holding only this file: next to a
    GGUF, a tokenizer.json would otherwise take precedence over the GGUF's vocabulary."""
    from transformers import PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory(prefix="purellm-gguf-") as folder:
        link = Path(folder) / "model.gguf"
        try:
            link.symlink_to(path.resolve())
        except OSError:  # no symlinks (e.g. unprivileged Windows): use the file where it is
            link = path
        try:
            return PreTrainedTokenizerFast.from_pretrained(
                str(link.parent), gguf_file=link.name, local_files_only=True
            )
        except Exception as error:
            raise ValueError(f"cannot build a tokenizer from GGUF file {path}: {error}") from error


def _tokenizer_key(path: Path) -> str:
    """The file (path, size, mtime) and the converter's versions."""
    import tokenizers
    import transformers

    stat = path.resolve().stat()
    parts = [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    parts += [transformers.__version__, tokenizers.__version__]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Into a fresh folder renamed into place, so a reader never sees half of it; never fatal."""
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    try:
        tokenizer.save_pretrained(str(partial))
        partial.rename(folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)


def _generation_config(meta: dict[str, Any]) -> dict[str, Any]:
    """bos/eos ids; eos is a list when the file also names end-of-turn / end-of-message tokens."""
    result: dict[str, Any] = {}
    if (bos := meta.get("tokenizer.ggml.bos_token_id")) is not None:
        result["bos_token_id"] = bos
    stops = [
        meta[key]
        for key in (
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        )
        if meta.get(key) is not None
    ]
    stops = list(dict.fromkeys(stops))
    if stops:
        result["eos_token_id"] = stops[0] if len(stops) == 1 else stops
    return result
