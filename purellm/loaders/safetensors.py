"""Hugging Face folders: config.json, *.safetensors (sharded or not), tokenizer files,
generation_config.json."""

from __future__ import annotations

import json
from pathlib import Path

from purellm.layers.quant.config import CheckpointQuant, checkpoint_quant
from purellm.loaders.model_files import ModelFiles, WeightStream


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} has config.json but no *.safetensors weights")
    return files


def iter_safetensors(files: list[Path]) -> WeightStream:
    """Yield tensors one at a time from memory-mapped files."""
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def read_generation_config(folder: Path) -> dict:
    path = folder / "generation_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def read_quantization(folder: Path) -> CheckpointQuant | None:
    """config.json's `quantization_config` (or an older GPTQ's quantize_config.json)."""
    config = json.loads((folder / "config.json").read_text())
    found = config.get("quantization_config")
    legacy = folder / "quantize_config.json"
    if found is None and legacy.is_file():
        found = {"quant_method": "gptq", **json.loads(legacy.read_text())}
    try:
        return checkpoint_quant(found)
    except ValueError as error:
        raise ValueError(f"{folder / 'config.json'}: {error}") from error


def load_hf_folder(folder: Path, name: str | None = None) -> ModelFiles:
    from transformers import AutoConfig, AutoTokenizer

    files = safetensors_files(folder)
    quantization = read_quantization(folder)
    return ModelFiles(
        name=name or folder.name,
        source=f"Hugging Face folder {folder}",
        config=AutoConfig.from_pretrained(str(folder)),
        tokenizer=AutoTokenizer.from_pretrained(str(folder)),
        weights=lambda: iter_safetensors(files),
        generation_config=read_generation_config(folder),
        quantization=quantization,
    )
