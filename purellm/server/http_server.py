"""uvicorn, made to end the way vLLM's server does: on SIGTERM or Ctrl-C no request is admitted
any more (503), requests still waiting end at once, running streams get `shutdown_timeout`
seconds to finish, and whatever is left ends with an error event and `[DONE]` before the server
stops. A second signal skips the grace period. HTTP-level errors (a malformed request line, an
oversized header) answer in OpenAI's error shape too."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from purellm.server.errors import APIError, error_body
from purellm.server.state import ServerState

log = logging.getLogger("purellm.server")

FLUSH_SECONDS = 2.0
"""How long ended streams get to send their error event before the server stops."""


async def drain(state: ServerState, timeout: float) -> None:
    """Stop admitting; end waiting requests now and running ones after `timeout` seconds."""
    state.draining = True
    _end(state, waiting_only=True)
    deadline = time.monotonic() + timeout
    while state.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    _end(state, waiting_only=False)
    deadline = time.monotonic() + FLUSH_SECONDS
    while state.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _end(state: ServerState, waiting_only: bool) -> None:
    for stream in list(state.streams.values()):
        if waiting_only and stream.started:
            continue
        why = "had not started" if not stream.started else "had not finished"
        stream.end(APIError(503, f"the server is shutting down; this request {why}"))


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signals = 0
        self._drains: set[asyncio.Task] = set()

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets=None) -> None:
        """The model loads once the port listens, so /health answers 503 from the start (a
        load in the lifespan would race the bind, and could finish before it)."""
        await super().startup(sockets)
        if not self.should_exit:
            self.state.start_loading()

    def handle_exit(self, sig: int, frame) -> None:
        """A signal handler: the first signal drains with the grace period, the second
        without, a third is uvicorn's own (Ctrl-C: quit at once)."""
        self._signals += 1
        if self._loop is None or self._signals > 2:
            super().handle_exit(sig, frame)
            return
        timeout = self.state.config.shutdown_timeout if self._signals == 1 else 0.0
        self._loop.call_soon_threadsafe(self._start_drain, sig, timeout)

    def _start_drain(self, sig: int, timeout: float) -> None:
        if self._signals == 1:
            log.info("shutting down: waiting up to %.1f s for running requests", timeout)
        task = asyncio.ensure_future(self._drain(sig, timeout))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(self, sig: int, timeout: float) -> None:
        try:
            await drain(self.state, timeout)
        finally:
            super().handle_exit(sig, None)  # now uvicorn closes connections and stops


class JSONErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering requests it cannot parse with an OpenAI error body
    rather than plain text."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(error_body(400, f"invalid HTTP request: {msg}")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
