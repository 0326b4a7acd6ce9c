"""Counters the engine keeps for /metrics and logs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class EngineStats:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: Counter = field(default_factory=Counter)
    """finish reason -> number of sequences that ended with it."""
    constrained_requests: int = 0
    """Requests whose output followed a grammar (structured outputs, forced tool calls)."""
    grammar_mask_seconds: float = 0.0
    """Time spent computing grammar masks, on the engine's thread."""

    def on_add(self, num_prompt_tokens: int) -> None:
        self.prompt_tokens += num_prompt_tokens

    def on_finish(self, reason: str) -> None:
        self.finished[reason] += 1
