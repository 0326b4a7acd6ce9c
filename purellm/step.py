"""What the engine asks the runner to compute in a step and what it gets back: plain typed data
without torch, so that neither side imports the other (engine/ schedules and postprocesses,
runner/ runs). The runner reads these and never writes them."""

from __future__ import annotations

from dataclasses import dataclass

from purellm.sampling_params import SamplingParams


@dataclass(frozen=True)
class SampleSpec:
    """What sampling a sequence's next token needs."""

    key: int
    """The sequence's id: the runner keeps per-sequence state (a seeded generator) under it
    until the engine releases the key."""
    params: SamplingParams
    seed: int | None
    """The sequence's own seed (the request's seed plus the choice's index), or None."""
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    """For the repetition penalties: what has been generated so far."""
    banned_token_ids: list[int]
    """Tokens that may not be sampled now (end-of-sequence tokens before `min_tokens`)."""
    allowed_tokens: bytes | None = None
    """A grammar's bitmask of the tokens that may be sampled (32 a little-endian int32 word)."""


@dataclass(frozen=True)
class SeqWork:
    """One sequence's share of a step: new tokens to compute, from position `start`."""

    token_ids: list[int]
    start: int
    block_table: list[int]
    """The sequence's KV-cache blocks, in order; position p lives in block_table[p // size]."""
    sample: SampleSpec | None
    """Set when these tokens end the sequence's known tokens, so a next one is sampled."""
    num_drafts: int = 0
    """The last `num_drafts` of `token_ids` are speculated: the runner samples after each of
    them too (num_drafts + 1 tokens in order), each as if the drafts before it were output."""

    @property
    def draft_token_ids(self) -> list[int]:
        return self.token_ids[len(self.token_ids) - self.num_drafts :]

    @property
    def context_len(self) -> int:
        """Tokens of context the last new token attends to (itself included)."""
        return self.start + len(self.token_ids)


@dataclass(frozen=True)
class SampledToken:
    """One sampled token; a sequence with drafts gets one after each position it samples."""

    token_id: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
