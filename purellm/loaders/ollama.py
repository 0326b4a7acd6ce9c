"""Find the GGUF blob behind an Ollama model name in a local Ollama store (no Ollama needed).

Store layout: <root>/manifests/<host>/<namespace>/<model>/<tag> is a JSON manifest whose layer of
mediaType application/vnd.ollama.image.model names the GGUF at <root>/blobs/sha256-<hex>."""

from __future__ import annotations

import json
import re
from pathlib import Path

from purellm.env import ollama_model_roots

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(:[0-9]+)?")
_DIGEST = re.compile(r"sha256:([0-9a-fA-F]+)")


def parse_ollama_name(name: str) -> tuple[str, str, str, str] | None:
    """`[host/][namespace/]model[:tag]` -> (host, namespace, model, tag), or None if the string
    cannot be an Ollama model name."""
    name = name.strip()
    if ":" in name.rpartition("/")[2]:  # a colon before the last slash is a host's port
        path, _, tag = name.rpartition(":")
    else:
        path, tag = name, DEFAULT_TAG
    parts = path.split("/")
    if not 1 <= len(parts) <= 3 or not _PART.fullmatch(tag):
        return None
    host = parts[0] if len(parts) == 3 else DEFAULT_HOST
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    if not _HOST.fullmatch(host) or not all(_PART.fullmatch(p) for p in (namespace, parts[-1])):
        return None
    if any(part in (".", "..") or ".." in part for part in (host, namespace, parts[-1], tag)):
        return None
    return host, namespace, parts[-1], tag


def resolve_ollama(name: str) -> Path | None:
    """The GGUF blob of an Ollama model, or None when no store under ollama_model_roots() has
    it. Raises ValueError when a manifest exists but is broken or its model blob is missing."""
    parsed = parse_ollama_name(name)
    if parsed is None:
        return None
    host, namespace, model, tag = parsed
    for root in ollama_model_roots():
        manifests = root / "manifests" / host
        candidates = [manifests / namespace / model / tag]
        lowered = manifests / namespace.lower() / model.lower() / tag.lower()
        if lowered != candidates[0]:
            candidates.append(lowered)  # Ollama names are case-insensitive; stores hold lowercase
        for manifest in candidates:
            if manifest.is_file():
                return _model_blob(root, manifest, name)
    return None


def _model_blob(root: Path, manifest: Path, name: str) -> Path:
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8"))["layers"]
        digests = [
            layer["digest"] for layer in layers if layer.get("mediaType") == MODEL_MEDIA_TYPE
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"Ollama manifest {manifest} for {name!r} is unreadable: {error}"
        ) from error
    if not digests:
        raise ValueError(
            f"Ollama manifest {manifest} for {name!r} has no layer of mediaType {MODEL_MEDIA_TYPE}"
        )
    match = _DIGEST.fullmatch(str(digests[0]))
    if match is None:
        raise ValueError(f"Ollama manifest {manifest} has a malformed model digest {digests[0]!r}")
    blob = root / "blobs" / f"sha256-{match[1]}"
    if not blob.is_file():
        raise ValueError(
            f"Ollama model {name!r}: manifest {manifest} names blob {blob}, which is missing "
            "(incomplete download? try `ollama pull` again)"
        )
    return blob
