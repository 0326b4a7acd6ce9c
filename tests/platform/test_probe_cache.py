"""`purellm serve` remembers the torch probe of a CPU-only torch build (keyed by everything the
result depends on) and never a failed probe."""

import json
import os
import time
from pathlib import Path

from purellm.platform.probe_cache import cached_torch_probe, probe_key

SHIMS = Path(__file__).parent / "shims"


def test_a_cpu_only_probe_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("PURELLM_CACHE_DIR", str(tmp_path))
    first = cached_torch_probe()
    assert first.ok
    saved = list((tmp_path / "probe").glob("torch-*.json"))
    build = first.data["build"]
    if build["cuda"] or build["hip"]:  # a GPU build is probed afresh every time
        assert saved == []
        return
    assert [p.name for p in saved] == [f"torch-{probe_key()}.json"]
    assert json.loads(saved[0].read_text()) == first.data
    start = time.monotonic()
    again = cached_torch_probe()
    assert again.ok and again.data == first.data
    assert time.monotonic() - start < 0.5  # no subprocess importing torch


def test_the_key_follows_what_the_probe_depends_on(monkeypatch):
    base = probe_key()
    assert probe_key() == base
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = probe_key()
    assert threads != base
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", os.environ["PYTHONPATH"]]))
    assert probe_key() not in (base, threads)


def test_a_broken_torch_is_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("PURELLM_CACHE_DIR", str(tmp_path))
    shim = str(SHIMS / "torch_raises")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([shim, os.environ["PYTHONPATH"]]))
    outcome = cached_torch_probe()
    assert not outcome.ok
    assert not list(tmp_path.rglob("*.json"))
