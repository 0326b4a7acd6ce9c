"""Continuous batching with chunked prefill and preemption by recomputation. Plain Python.

There is no prefill or decode phase: each step gives every running sequence, oldest first,
up to its uncomputed tokens within the token budget, then admits waiting sequences. When blocks
run out the newest running sequence is preempted: its blocks are freed and it waits again to be
recomputed (its prefix usually comes back from the prefix cache).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from purellm.engine.block_manager import BlockManager
from purellm.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class ScheduledSeq:
    seq: Sequence
    num_new_tokens: int
    """Known tokens computed this step (drafts not included)."""
    samples: bool
    """Whether this step computes the sequence's last token, so a new token is sampled."""
    draft_token_ids: tuple[int, ...] = ()
    """Speculated tokens computed after them, each verified by a sample (a decode only)."""

    @classmethod
    def of(cls, seq: Sequence, num_new_tokens: int, drafts: list[int] | None = None):
        samples = seq.num_computed_tokens + num_new_tokens == seq.num_tokens
        return cls(seq, num_new_tokens, samples, tuple(drafts or ()))

    @property
    def num_tokens(self) -> int:
        """What the step computes for it: new tokens and drafts."""
        return self.num_new_tokens + len(self.draft_token_ids)


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    num_preempted: int = 0

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self._schedule_running(out, self.max_num_batched_tokens)
        if out.num_preempted == 0:
            self._schedule_waiting(out, budget)
        self.num_preemptions += out.num_preempted
        return out

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_new = min(seq.num_uncomputed_tokens, budget)
            drafts = (
                seq.draft_token_ids[: budget - num_new] if seq.num_uncomputed_tokens == 1 else []
            )
            while not self.block_manager.allocate(
                seq, seq.num_computed_tokens + num_new + len(drafts)
            ):
                self._preempt(self.running.pop())
                out.num_preempted += 1
                if i == len(self.running):
                    return budget
            item = ScheduledSeq.of(seq, num_new, drafts)
            out.scheduled.append(item)
            budget -= item.num_tokens
            i += 1
        return budget

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> None:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            cached = bm.find_cached_prefix(seq)
            num_new = min(seq.num_tokens - len(cached) * bm.block_size, budget)
            if not bm.can_admit(cached, len(cached) * bm.block_size + num_new):
                return
            self.waiting.popleft()
            bm.admit(seq, cached)
            if seq.num_cached_tokens is None:
                seq.num_cached_tokens = seq.num_computed_tokens
            bm.allocate(seq, seq.num_computed_tokens + num_new)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSeq.of(seq, num_new))
            budget -= num_new

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """End a sequence (done, stopped or aborted) and free its blocks at once."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def update(self, out: SchedulerOutput) -> None:
        """Account for a step the runner has computed (drafts count once accepted)."""
        for item in out.scheduled:
            item.seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.cache_full_blocks(item.seq)

    def accept_drafts(self, seq: Sequence, num_accepted: int) -> None:
        """Keep the KV of the first `num_accepted` drafts of the last step (now output tokens);
        the rest is forgotten, and blocks that held only rejected drafts are freed. The prefix
        cache only ever sees accepted tokens."""
        seq.num_computed_tokens += num_accepted
        self.block_manager.cache_full_blocks(seq)
        self.block_manager.shrink(seq, seq.num_tokens)
