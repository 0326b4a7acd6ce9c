"""Prompt-lookup drafts: the tokens that followed the latest earlier occurrence of the
sequence's last n tokens (n from `max_n` down to `min_n`), in its own prompt and output. An
editor agent's replies copy their context (the file being edited, paths, code), so these
drafts are often right. numpy compares all candidate positions at once; no per-token loop."""

from __future__ import annotations

import numpy as np


class NgramProposer:
    def __init__(self, min_n: int, max_n: int):
        self.min_n, self.max_n = min_n, max_n

    def propose_all(self, wanted: list[tuple[int, np.ndarray, int]]) -> list[list[int]]:
        """Drafts for each (sequence key, its tokens, how many at most)."""
        return [self.propose(tokens, k) for _, tokens, k in wanted]

    def propose(self, tokens: np.ndarray, k: int) -> list[int]:
        """Up to `k` draft tokens to follow `tokens` (1-D int array), or [] with no match."""
        length = len(tokens)
        ends = np.flatnonzero(tokens[: length - 1] == tokens[-1])  # earlier places of the last
        for n in range(min(self.max_n, length - 1), self.min_n - 1, -1):
            starts = ends[ends >= n - 1] - (n - 1)  # windows tokens[s : s + n] ending there
            if not len(starts):
                continue
            tail = tokens[length - n :]
            windows = tokens[starts[:, None] + np.arange(n)]  # [candidates, n]
            hits = starts[(windows == tail).all(axis=1)]
            if len(hits):
                follow = int(hits[-1]) + n  # the latest match: its continuation follows it
                return tokens[follow : follow + k].tolist()
        return []
