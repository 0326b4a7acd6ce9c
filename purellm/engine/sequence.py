"""One sequence's token progress. Plain Python: no torch."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from purellm.sampling_params import SamplingParams

_counter = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """A prompt and what has been generated for it.

    The scheduler knows no prefill or decode phase: each step it computes some of the tokens in
    `token_ids[num_computed_tokens:]`. A sequence samples a new token once all are computed.
    """

    prompt_token_ids: list[int]
    params: SamplingParams
    request_id: str = ""
    index: int = 0
    """Which of the request's `n` choices this sequence is."""
    seq_id: int = field(default_factory=lambda: next(_counter))
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0
    num_cached_tokens: int | None = None
    """Prompt tokens served from the prefix cache at first admission (None before it)."""
    block_table: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    max_tokens: int = 16
    """Resolved output limit (params.max_tokens, capped by the context length)."""
    matcher: Any = None
    """The structured-output Matcher (engine/structured.py) when the output is constrained."""
    draft_token_ids: list[int] = field(default_factory=list)
    """Speculated next tokens for the coming step (engine/speculator.py), verified by it."""

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def token_slice(self, start: int, stop: int) -> list[int]:
        """token_ids[start:stop] without building the whole list."""
        prompt_len = len(self.prompt_token_ids)
        if stop <= prompt_len:
            return self.prompt_token_ids[start:stop]
        if start >= prompt_len:
            return self.output_token_ids[start - prompt_len : stop - prompt_len]
        return self.prompt_token_ids[start:] + self.output_token_ids[: stop - prompt_len]
