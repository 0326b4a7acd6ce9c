"""Speculative decoding, the engine's side: before each step a decoding sequence may get draft
tokens (n-gram lookup in its own tokens, or a draft model's greedy continuation); the runner
computes them with the sequence's last token in the same forward pass and samples after each;
the engine keeps the drafts that equal the samples, plus the sample after the last kept one. A
draft is kept exactly when the target model, sampling as usual, would have produced it, so
outputs are those of plain decoding (greedy: the same tokens; sampled: the same distribution,
as rejection sampling with a one-hot draft reduces to this).

The adaptive rule: no drafts in a step with more than `disable_by_batch_size` running
sequences; none for a constrained (grammar) output or before `min_tokens`; a sequence's draft
length starts at `num_speculative_tokens`, grows by one after a step that kept every draft and
drops to one more than the number kept after a step that did not."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from purellm.config import SpeculativeConfig
from purellm.engine.sequence import Sequence


class Proposer(Protocol):
    def propose_all(self, wanted: list[tuple[int, np.ndarray, int]]) -> list[list[int]]:
        """Drafts for each (sequence key, its tokens, how many at most)."""


class _Tokens:
    """A sequence's tokens as a growing numpy array (appended, never rebuilt)."""

    def __init__(self) -> None:
        self.array = np.empty(256, dtype=np.int64)
        self.length = 0

    def update(self, seq: Sequence) -> np.ndarray:
        new = seq.token_slice(self.length, seq.num_tokens)
        end = self.length + len(new)
        if end > len(self.array):
            grown = np.empty(max(end, 2 * len(self.array)), dtype=np.int64)
            grown[: self.length] = self.array[: self.length]
            self.array = grown
        self.array[self.length : end] = new
        self.length = end
        return self.array[:end]


class Speculator:
    def __init__(self, config: SpeculativeConfig, max_model_len: int, proposer: Proposer):
        self.config = config
        self.max_model_len = max_model_len
        self.proposer = proposer
        self._tokens: dict[int, _Tokens] = {}
        self._lengths: dict[int, int] = {}
        """seq_id -> the draft length the adaptive rule allows now."""

    def propose(self, running: list[Sequence]) -> None:
        """Set every running sequence's drafts for the coming step (often none)."""
        speculate = len(running) <= self.config.disable_by_batch_size
        wanted = []
        for seq in running:
            seq.draft_token_ids = []
            k = self._length(seq) if speculate and _eligible(seq) else 0
            if k >= 1:
                tokens = self._tokens.setdefault(seq.seq_id, _Tokens()).update(seq)
                wanted.append((seq, tokens, k))
        if not wanted:
            return
        drafts = self.proposer.propose_all([(seq.seq_id, t, k) for seq, t, k in wanted])
        for (seq, _, _), proposed in zip(wanted, drafts, strict=True):
            seq.draft_token_ids = proposed

    def _length(self, seq: Sequence) -> int:
        """How many drafts `seq` may take: the adaptive rule's length, within its limits."""
        room = min(seq.max_tokens - seq.num_output_tokens, self.max_model_len - seq.num_tokens)
        return min(self._lengths.get(seq.seq_id, self.config.num_speculative_tokens), room - 1)

    def verified(self, seq: Sequence, num_drafts: int, num_accepted: int) -> None:
        """The adaptive rule, after a step that verified `num_drafts` drafts of `seq`."""
        most = self.config.num_speculative_tokens
        length = self._lengths.get(seq.seq_id, most)
        grown = min(most, length + 1) if num_accepted == num_drafts else num_accepted + 1
        self._lengths[seq.seq_id] = grown

    def forget(self, seq_id: int) -> None:
        self._tokens.pop(seq_id, None)
        self._lengths.pop(seq_id, None)


def _eligible(seq: Sequence) -> bool:
    return (
        seq.num_uncomputed_tokens == 1
        and seq.matcher is None
        and seq.num_output_tokens >= seq.params.min_tokens
    )
