"""Resolving Ollama model names against a store laid out in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from purellm.loaders.gguf import load_gguf
from purellm.loaders.ollama import parse_ollama_name, resolve_ollama
from tests.loaders.test_gguf import LLAMA_META, VOCAB, f32, write_gguf

HEX = "ab" * 32
MODEL_LAYER = "application/vnd.ollama.image.model"


def add_model(
    root: Path,
    name: str,
    tag: str,
    namespace: str = "library",
    layers: list[dict] | None = None,
    blob: bytes | None = b"GGUF...",
) -> Path:
    """A manifest for namespace/name:tag and (unless blob is None) its model blob."""
    manifest = root / "manifests" / "registry.ollama.ai" / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    if layers is None:
        layers = [
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "cd" * 32},
            {"mediaType": MODEL_LAYER, "digest": f"sha256:{HEX}", "size": 7},
        ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    path = root / "blobs" / f"sha256-{HEX}"
    if blob is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return path


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


def test_resolves_with_and_without_tag(store: Path) -> None:
    blob = add_model(store, "smollm2", "latest")
    add_model(store, "smollm2", "135m")
    assert resolve_ollama("smollm2") == blob
    assert resolve_ollama("smollm2:latest") == blob
    assert resolve_ollama("smollm2:135m") == blob
    assert resolve_ollama("SmolLM2:135M") == blob  # Ollama names are case-insensitive


def test_namespace_and_host(store: Path) -> None:
    blob = add_model(store, "mymodel", "q4", namespace="someone")
    assert resolve_ollama("someone/mymodel:q4") == blob
    assert resolve_ollama("registry.ollama.ai/someone/mymodel:q4") == blob
    assert resolve_ollama("mymodel:q4") is None  # that would be library/mymodel


def test_missing_names_are_none(store: Path) -> None:
    assert resolve_ollama("smollm2") is None  # no store at all
    add_model(store, "smollm2", "latest")
    assert resolve_ollama("smollm2:1.7b") is None
    assert resolve_ollama("qwen3") is None
    assert resolve_ollama("HuggingFaceTB/SmolLM2-135M-Instruct") is None  # an HF repo id
    for odd in ["../smollm2", "a/b/c/d", "smollm2:", "", "/etc/passwd", "smollm2:../x"]:
        assert resolve_ollama(odd) is None, odd


def test_parse_names() -> None:
    assert parse_ollama_name("llama3.2") == ("registry.ollama.ai", "library", "llama3.2", "latest")
    assert parse_ollama_name("ns/m:1b-q4_K_M") == ("registry.ollama.ai", "ns", "m", "1b-q4_K_M")
    assert parse_ollama_name("localhost:11434/ns/m") == ("localhost:11434", "ns", "m", "latest")


@pytest.mark.parametrize(
    ("layers", "blob", "message"),
    [
        (
            [{"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:00"}],
            b"x",
            "no layer",
        ),
        ([{"mediaType": MODEL_LAYER, "digest": "md5:1234"}], b"x", "malformed model digest"),
        ([{"mediaType": MODEL_LAYER}], b"x", "unreadable"),
        (None, None, "missing"),
    ],
)
def test_broken_store_is_a_clear_error(store: Path, layers, blob, message: str) -> None:
    add_model(store, "broken", "latest", layers=layers, blob=blob)
    with pytest.raises(ValueError, match=message):
        resolve_ollama("broken")


def test_invalid_json_manifest(store: Path) -> None:
    add_model(store, "broken", "latest")
    (store / "manifests/registry.ollama.ai/library/broken/latest").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        resolve_ollama("broken:latest")


def test_load_gguf_from_an_ollama_blob(store: Path, tmp_path: Path) -> None:
    """A blob has no .gguf suffix; the loader must not care."""
    gguf = write_gguf(
        tmp_path / "m.gguf", "qwen3", LLAMA_META, {"token_embd.weight": f32(np.ones((VOCAB, 64)))}
    )
    blob = add_model(store, "tiny", "latest", blob=gguf.read_bytes())
    model = load_gguf(resolve_ollama("tiny"), name="tiny")
    assert model.name == "tiny" and model.source == f"GGUF file {blob}"
    assert model.config.model_type == "qwen3"
    ids = model.tokenizer.encode("hello the world")
    assert model.tokenizer.decode(ids) == "hello the world"
    assert model.tokenizer.convert_tokens_to_ids("Ġthe") in ids
    assert [name for name, _ in model.weights()] == ["model.embed_tokens.weight"]
