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
    spec_drafts: int = 0
    """Sequence steps that carried drafts."""
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    spec_accepted_per_pos: list[int] = field(default_factory=list)
    """How often the draft at each position (0 first) was accepted."""

    def on_verified(self, num_drafts: int, num_accepted: int) -> None:
        self.spec_drafts += 1
        self.spec_draft_tokens += num_drafts
        self.spec_accepted_tokens += num_accepted
        missing = num_drafts - len(self.spec_accepted_per_pos)
        self.spec_accepted_per_pos += [0] * max(0, missing)
        for pos in range(num_accepted):
            self.spec_accepted_per_pos[pos] += 1

    def on_add(self, num_prompt_tokens: int) -> None:
        self.prompt_tokens += num_prompt_tokens

    def on_finish(self, reason: str) -> None:
        self.finished[reason] += 1
