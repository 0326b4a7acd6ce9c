"""The serving path never needs Triton: generation works while it is unimportable."""

import subprocess
import sys

import pytest

from tests.checkpoints import write_checkpoint

SCRIPT = """
import importlib.util, sys
assert importlib.util.find_spec("triton") is None
try:
    import triton
except ImportError:
    pass
else:
    raise SystemExit("triton imported")
from purellm import LLM, SamplingParams
llm = LLM(sys.argv[1], dtype="float32", device="cpu", kv_cache_memory=1 << 20)
out = llm.generate("The quick brown fox", SamplingParams(temperature=0, max_tokens=4))
assert len(out[0].outputs[0].token_ids) == 4
assert sys.modules.get("triton") is None
print("ok")
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"), "llama")


def test_generation_in_a_subprocess_with_triton_blocked(folder):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
