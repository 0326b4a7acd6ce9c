"""Disconnects abort their request, a full queue answers 503, SIGTERM ends the server cleanly."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.server.conftest import MODEL
from tests.server.remote import next_events

LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me a long story."}],
    "max_tokens": -1,
    "ignore_eos": True,
    "stream": True,
}


def _wait_idle(server, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        metrics = server.metrics()
        idle = metrics["purellm:num_requests_running"] == 0
        if idle and metrics["purellm:kv_cache_usage_perc"] == 0 or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


def test_disconnect_mid_stream_aborts_the_request(server):
    aborted = server.metrics()['purellm:request_success_total{finished_reason="abort"}']
    with httpx.stream(
        "POST", server.url("/v1/chat/completions"), json=LONG, headers=server.headers
    ) as response:
        next_events(response.iter_lines(), 3)
    metrics = _wait_idle(server)
    assert metrics["purellm:num_requests_running"] == 0
    assert metrics["purellm:num_requests_waiting"] == 0
    assert metrics["purellm:kv_cache_usage_perc"] == 0
    assert metrics['purellm:request_success_total{finished_reason="abort"}'] == aborted + 1


def test_disconnect_during_non_streaming_request_aborts_it(server):
    body = {**LONG, "stream": False, "n": 4}  # ~1 s of decoding: the client leaves long before
    with pytest.raises(httpx.TimeoutException):
        server.post("/v1/chat/completions", body, timeout=0.1)
    metrics = _wait_idle(server)
    assert metrics["purellm:num_requests_running"] == 0
    assert metrics["purellm:kv_cache_usage_perc"] == 0


def test_full_queue_is_503_and_sigterm_exits_0(one_seq_server):
    server = one_seq_server
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", server.url("/v1/chat/completions"), json=LONG) as running:
            # keep the line iterators: dropping one closes its connection (a disconnect)
            running_lines = running.iter_lines()
            next_events(running_lines, 2)  # the role, then a first token: it runs
            with client.stream("POST", server.url("/v1/chat/completions"), json=LONG) as waiting:
                waiting_lines = waiting.iter_lines()
                next_events(waiting_lines, 1)  # the role only: it waits for the one slot
                time.sleep(0.05)
                busy = httpx.post(server.url("/v1/chat/completions"), json=LONG, timeout=10)
                assert busy.status_code == 503, busy.text
                assert busy.json()["error"]["code"] == 503
    _wait_idle(server)
    short = {**LONG, "max_tokens": 100}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", server.url("/v1/chat/completions"), json=short) as running:
            lines = running.iter_lines()
            next_events(lines, 2)
            server.proc.send_signal(signal.SIGTERM)
            assert "data: [DONE]" in list(lines)  # the in-flight request still finishes
    assert server.proc.wait(60) == 0, server.output
