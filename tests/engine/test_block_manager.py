"""Block manager: reference counts, the prefix hash chain, LRU eviction, no leaks."""

import pytest

from purellm.engine.block_manager import BlockManager
from purellm.engine.sequence import Sequence
from purellm.sampling_params import SamplingParams


def _seq(tokens) -> Sequence:
    return Sequence(list(tokens), SamplingParams())


def _compute(bm: BlockManager, seq: Sequence) -> None:
    """Admit, allocate and 'compute' the whole sequence."""
    bm.admit(seq, bm.find_cached_prefix(seq))
    assert bm.allocate(seq, seq.num_tokens)
    seq.num_computed_tokens = seq.num_tokens
    bm.cache_full_blocks(seq)


def test_allocate_and_free_returns_every_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = _seq(range(10))
    _compute(bm, seq)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 5
    bm.check_integrity([seq])
    bm.free(seq)
    assert bm.num_free_blocks == 8
    bm.check_integrity([])


def test_allocate_fails_without_change_when_full():
    bm = BlockManager(num_blocks=2, block_size=4)
    seq = _seq(range(12))
    assert not bm.allocate(seq, 12)
    assert seq.block_table == [] and bm.num_free_blocks == 2


def test_prefix_hit_shares_blocks_and_counts_refs():
    bm = BlockManager(num_blocks=8, block_size=4)
    a, b = _seq(range(10)), _seq(list(range(8)) + [99, 98, 97])
    _compute(bm, a)
    cached = bm.find_cached_prefix(b)
    assert cached == a.block_table[:2]
    _compute(bm, b)
    assert b.block_table[:2] == a.block_table[:2]
    assert bm.blocks[a.block_table[0]].ref_count == 2
    assert bm.prefix_cache_hits == 8 and bm.prefix_cache_queries == 21
    bm.check_integrity([a, b])
    bm.free(a)
    bm.free(b)
    bm.check_integrity([])


def test_whole_prompt_cached_still_leaves_a_token_to_compute():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = _seq(range(8))
    _compute(bm, a)
    bm.free(a)
    assert len(bm.find_cached_prefix(_seq(range(8)))) == 1
    assert len(bm.find_cached_prefix(_seq(range(9)))) == 2


def test_hash_is_a_chain_not_per_block():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = _seq(list(range(4)) + [7, 7, 7, 7, 1])
    _compute(bm, a)
    other_first_block = _seq([9, 9, 9, 9, 7, 7, 7, 7, 1])
    assert bm.find_cached_prefix(other_first_block) == []


def test_freed_cached_blocks_are_evicted_lru_tail_first():
    bm = BlockManager(num_blocks=4, block_size=2)
    a = _seq(range(5))  # 3 blocks, two of them full
    _compute(bm, a)
    bm.free(a)
    b = _seq([50, 51, 52])  # needs 2 blocks: takes the unhashed one, then a's tail
    bm.admit(b, [])
    assert bm.allocate(b, 3)
    assert len(bm.find_cached_prefix(_seq(range(5)))) == 2
    c = _seq([60, 61])
    bm.admit(c, [])
    assert bm.allocate(c, 2)
    assert len(bm.find_cached_prefix(_seq(range(5)))) == 1
    bm.check_integrity([b, c])


def test_disabled_prefix_caching_never_hits():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a = _seq(range(10))
    _compute(bm, a)
    bm.free(a)
    assert bm.find_cached_prefix(_seq(range(10))) == []


def test_rejects_nonsense_sizes():
    with pytest.raises(ValueError):
        BlockManager(num_blocks=0, block_size=4)
