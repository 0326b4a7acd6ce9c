"""`purellm serve` / `purellm chat` from the command line."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.server.remote import ROOT


def _run(args, tmp_path=None, no_torch=False, stdin=None, timeout=120):
    env = dict(os.environ)
    if no_torch:
        shim = tmp_path / "shim" / "torch"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text("raise ImportError('torch is broken here')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(shim.parent), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "purellm", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_version_and_help_without_torch(tmp_path):
    version = _run(["--version"], tmp_path, no_torch=True)
    assert version.returncode == 0 and version.stdout.startswith("purellm "), version.stderr
    for command in ("serve", "chat"):
        helped = _run([command, "--help"], tmp_path / command, no_torch=True)
        assert helped.returncode == 0, helped.stderr
    serve_help = _run(["serve", "--help"], tmp_path / "again", no_torch=True).stdout
    for flag in ("--served-model-name", "--kv-cache-memory", "--tool-call-parser", "--api-key"):
        assert flag in serve_help


def test_bad_flags_exit_2():
    assert _run(["serve", "--kv-cache-memory", "lots"]).returncode == 2
    bad_parser = _run(["serve", "--tool-call-parser", "nope"])
    assert bad_parser.returncode == 2 and "unknown tool parser" in bad_parser.stderr


def test_model_that_fails_to_load_exits_1(tmp_path):
    result = _run(["serve", str(tmp_path / "missing"), "--port", "0"], timeout=120)
    assert result.returncode == 1
    assert "failed to load" in result.stderr


def test_chat_streams_replies_until_exit(tiny_checkpoint):
    result = _run(
        ["chat", str(tiny_checkpoint), "--max-tokens", "4", "--dtype", "float32"],
        stdin="Hello\n\n/reset\nHow are you?\n/exit\nnever read\n",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("purellm chat:") and len(lines) >= 3


def test_server_package_never_imports_torch(tmp_path):
    script = (
        "import sys\n"
        "import purellm.server.app, purellm.server.serving_chat\n"
        "import purellm.server.serving_completions, purellm.server.serving_models\n"
        "import purellm.commands.serve, purellm.commands.chat\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
