"""The whole suite runs offline and with `triton` unimportable, in this process and in every
subprocess it starts: purellm's serving path must never need Triton."""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# purellm's own cache (remembered torch probes, converted GGUF tokenizers): one per test session,
# shared by every server the tests start, never the user's.
os.environ.setdefault("PURELLM_CACHE_DIR", tempfile.mkdtemp(prefix="purellm-test-cache-"))

_SHIM = Path(__file__).parent / "shims" / "no_triton"
sys.modules["triton"] = None  # import triton -> ModuleNotFoundError; find_spec -> None
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(_SHIM), os.environ.get("PYTHONPATH")) if p
)
