"""The engine on its own thread, for an asyncio server: add a request and iterate its deltas,
abort it by id. Model compute never runs on the event loop."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from purellm.config import EngineConfig
from purellm.engine.llm_engine import LLMEngine
from purellm.loaders.model_files import ModelFiles
from purellm.outputs import DeltaOutput
from purellm.sampling_params import SamplingParams

log = logging.getLogger("purellm")


class EngineDeadError(RuntimeError):
    """The engine thread stopped on an unexpected error; no request can be served."""


@dataclass
class _Add:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: _Stream


@dataclass
class _Abort:
    request_id: str
    error: BaseException | None = None


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue

    def put(self, item: DeltaOutput | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass


class AsyncLLM:
    def __init__(self, config: EngineConfig, files: ModelFiles | None = None):
        self.engine = LLMEngine(config, files)
        self._inbox: queue.Queue = queue.Queue()
        self._streams: dict[str, _Stream] = {}
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="purellm-engine", daemon=True)
        self._thread.start()

    @property
    def is_dead(self) -> bool:
        return self.error is not None

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[DeltaOutput]:
        """Deltas of every choice of the request until all are finished. Leaving the loop early
        (a client that went away, a cancelled task) aborts the request and frees its blocks.
        Raises ValueError for a request the engine refuses, EngineDeadError if it has died."""
        if self.error is not None:
            raise EngineDeadError(str(self.error))
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        self._inbox.put(_Add(request_id, prompt_token_ids, params, stream))
        remaining = params.n
        try:
            while remaining:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    raise item
                remaining -= item.finished
                yield item
        finally:
            if remaining:
                self.abort(request_id)

    def abort(self, request_id: str, error: BaseException | None = None) -> None:
        """Abort the request; with `error`, its stream raises that instead of just ending."""
        self._inbox.put(_Abort(request_id, error))

    def shutdown(self) -> None:
        self._stopping.set()
        self._inbox.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._drain(block=not self.engine.has_unfinished_requests())
                self._route(self.engine.step())
        except BaseException as exc:  # the engine is gone: tell every waiting stream
            log.exception("engine thread died")
            self.error = exc
            for stream in self._streams.values():
                stream.put(EngineDeadError(f"the engine died: {exc!r}"))
            self._streams.clear()

    def _drain(self, block: bool) -> None:
        while True:
            try:
                message = self._inbox.get(block=block, timeout=None)
            except queue.Empty:
                return
            block = False
            if isinstance(message, _Add):
                self._add(message)
            elif isinstance(message, _Abort):
                self.engine.abort_request(message.request_id)
                stream = self._streams.pop(message.request_id, None)
                if stream is not None and message.error is not None:
                    stream.put(message.error)

    def _add(self, message: _Add) -> None:
        try:
            self.engine.add_request(message.request_id, message.prompt_token_ids, message.params)
        except ValueError as exc:
            message.stream.put(exc)
            return
        self._streams[message.request_id] = message.stream

    def _route(self, deltas: list[DeltaOutput]) -> None:
        for delta in deltas:
            stream = self._streams.get(delta.request_id)
            if stream is not None:
                stream.put(delta)
        for request_id in {d.request_id for d in deltas} - self.engine.requests.keys():
            self._streams.pop(request_id, None)
