"""Paged KV blocks: allocation, reference counts and the prefix cache. Plain Python: no torch.

Full blocks are named by a hash chain, hash(previous block's hash, this block's token ids), so a
block is reusable only after the same prefix. A freed block keeps its hash until it is reused:
the free queue is the LRU order in which cached blocks are evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from purellm.engine.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    block_hash: int | None = None
    token_ids: tuple[int, ...] = ()


def chain_hash(prev_hash: int | None, token_ids: tuple[int, ...]) -> int:
    return hash((prev_hash, token_ids))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached: dict[int, int] = {}
        """block hash -> block id of every full block whose contents are known."""
        self.seq_hashes: dict[int, list[int]] = {}
        """seq_id -> hashes of that sequence's full blocks so far."""
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_queue)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def find_cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids holding the longest cached prefix of `seq`; leaves at least one token to
        compute, since the last prompt token's logits are needed. Changes nothing."""
        if not self.enable_prefix_caching:
            return []
        hits: list[int] = []
        prev: int | None = None
        for i in range((seq.num_tokens - 1) // self.block_size):
            tokens = tuple(seq.token_slice(i * self.block_size, (i + 1) * self.block_size))
            prev = chain_hash(prev, tokens)
            block_id = self.cached.get(prev)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
        return hits

    def can_admit(self, cached: list[int], num_tokens: int) -> bool:
        """Whether blocks for `num_tokens` tokens fit, reusing the `cached` prefix blocks."""
        reused_free = sum(1 for b in cached if self.blocks[b].ref_count == 0)
        new = self.blocks_needed(num_tokens) - len(cached)
        return new + reused_free <= self.num_free_blocks

    def admit(self, seq: Sequence, cached: list[int]) -> None:
        """Give a waiting sequence its cached prefix blocks and count the query."""
        for block_id in cached:
            self._take(block_id)
        seq.block_table = list(cached)
        seq.num_computed_tokens = len(cached) * self.block_size
        self.seq_hashes[seq.seq_id] = [self.blocks[b].block_hash for b in cached]
        if self.enable_prefix_caching:
            self.prefix_cache_queries += seq.num_tokens
            self.prefix_cache_hits += seq.num_computed_tokens

    def allocate(self, seq: Sequence, num_tokens: int) -> bool:
        """Grow `seq`'s block table to hold `num_tokens` tokens; False (and no change) when
        there are not enough free blocks."""
        missing = self.blocks_needed(num_tokens) - len(seq.block_table)
        if missing > self.num_free_blocks:
            return False
        for _ in range(missing):
            block_id, _ = self.free_queue.popitem(last=False)
            self._evict(block_id)
            self.blocks[block_id].ref_count = 1
            seq.block_table.append(block_id)
        return True

    def shrink(self, seq: Sequence, num_tokens: int) -> None:
        """Free the blocks past those `num_tokens` tokens need (they held speculated tokens
        that were rejected)."""
        keep = self.blocks_needed(num_tokens)
        while len(seq.block_table) > keep:
            self._release(seq.block_table.pop())

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the blocks that computing the sequence's tokens has filled."""
        if not self.enable_prefix_caching:
            return
        hashes = self.seq_hashes.setdefault(seq.seq_id, [])
        num_full = seq.num_computed_tokens // self.block_size
        for i in range(len(hashes), num_full):
            tokens = tuple(seq.token_slice(i * self.block_size, (i + 1) * self.block_size))
            block_hash = chain_hash(hashes[-1] if hashes else None, tokens)
            hashes.append(block_hash)
            block = self.blocks[seq.block_table[i]]
            if block.block_hash is None and block_hash not in self.cached:
                block.block_hash, block.token_ids = block_hash, tokens
                self.cached[block_hash] = block.block_id

    def free(self, seq: Sequence) -> None:
        """Release a sequence's blocks. Its tail goes first into the queue, so under pressure
        the tail is evicted before the shared prefix."""
        for block_id in reversed(seq.block_table):
            self._release(block_id)
        seq.block_table = []
        self.seq_hashes.pop(seq.seq_id, None)

    def _release(self, block_id: int) -> None:
        """One reference fewer; an unreferenced block joins the free queue: first to be
        reused when it holds nothing cached, last (LRU) when its contents may be hit again."""
        block = self.blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free_queue[block_id] = None
            if block.block_hash is None:
                self.free_queue.move_to_end(block_id, last=False)

    def check_integrity(self, live: list[Sequence]) -> None:
        """Raise if reference counts or the free queue disagree with the live sequences."""
        expected = [0] * self.num_blocks
        for seq in live:
            for block_id in seq.block_table:
                expected[block_id] += 1
        for block in self.blocks:
            if block.ref_count != expected[block.block_id]:
                raise RuntimeError(f"block {block.block_id}: ref_count {block.ref_count}")
            if (block.ref_count == 0) != (block.block_id in self.free_queue):
                raise RuntimeError(f"block {block.block_id}: free queue disagrees")
        for block_hash, block_id in self.cached.items():
            if self.blocks[block_id].block_hash != block_hash:
                raise RuntimeError(f"cached hash of block {block_id} is stale")

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_queue[block_id]
        block.ref_count += 1

    def _evict(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.block_hash is not None:
            del self.cached[block.block_hash]
            block.block_hash, block.token_ids = None, ()
