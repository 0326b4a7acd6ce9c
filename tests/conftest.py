"""The whole suite runs offline and with `triton` unimportable, in this process and in every
subprocess it starts: purellm's serving path must never need Triton."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_SHIM = Path(__file__).parent / "shims" / "no_triton"
sys.modules["triton"] = None  # import triton -> ModuleNotFoundError; find_spec -> None
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(_SHIM), os.environ.get("PYTHONPATH")) if p
)
