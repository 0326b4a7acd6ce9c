"""How a step's decodes are grouped for attention: by context length, when the padding a
shared group would read costs more than another group's own ops, and into parts whose keys fit
in the CPU's cache."""

from __future__ import annotations

import itertools
import random

from purellm.runner.inputs import cap_groups, split_by_length
from purellm.step import SeqWork


def _decodes(contexts: list[int]) -> list[SeqWork]:
    """One new token each, after `context - 1` computed ones."""
    return [SeqWork([7], n - 1, [], None) for n in contexts]


def _contexts(groups: list[list[SeqWork]]) -> list[list[int]]:
    return [[d.context_len for d in group] for group in groups]


def _cost(groups: list[list[int]], block_size: int, group_cost: int) -> int:
    return sum(group_cost + len(g) * -(-max(g) // block_size) * block_size for g in groups)


def test_equal_contexts_are_one_group():
    assert _contexts(split_by_length(_decodes([32] * 64), 16, 1024)) == [[32] * 64]
    assert split_by_length([], 16, 1024) == []


def test_one_long_context_is_not_everyone_s_padding():
    groups = _contexts(split_by_length(_decodes([2000] + [32] * 63), 16, 1024))
    assert groups == [[32] * 63, [2000]]
    assert _contexts(split_by_length(_decodes([2000] + [32] * 63), 16, 1 << 40)) == [
        [32] * 63 + [2000]
    ]  # a group costing more than any padding: one group


def test_the_split_is_the_cheapest_one_over_runs_of_similar_widths():
    rng = random.Random(0)
    for _ in range(200):
        contexts = [
            rng.choice([5, 16, 17, 40, 90, 100, 300, 700]) for _ in range(rng.randint(1, 9))
        ]
        cost = rng.choice([0, 16, 64, 256, 1024])
        groups = _contexts(split_by_length(_decodes(contexts), 16, cost))
        assert sorted(c for g in groups for c in g) == sorted(contexts)  # each exactly once
        assert all(max(a) <= min(b) for a, b in itertools.pairwise(groups))  # shortest first
        ordered = sorted(contexts)
        best = min(  # every split of the sorted contexts into consecutive groups
            _cost([ordered[i:j] for i, j in itertools.pairwise((0, *cuts, len(ordered)))], 16, cost)
            for k in range(len(ordered))
            for cuts in itertools.combinations(range(1, len(ordered)), k)
        )
        # within 1/8 of a width a run stays together, so the split may pay that much padding
        assert _cost(groups, 16, cost) <= best * 9 / 8 + cost, (contexts, cost, groups)


def test_groups_are_cut_to_fit_the_key_budget():
    rng = random.Random(1)
    for _ in range(200):
        contexts = sorted(rng.randint(1, 3000) for _ in range(rng.randint(1, 40)))
        max_keys = rng.choice([16, 500, 4096, 20_000])
        groups = split_by_length(_decodes(contexts), 16, rng.choice([0, 1024]))
        capped = _contexts(cap_groups(groups, 16, max_keys))
        assert [c for g in capped for c in g] == [c for g in _contexts(groups) for c in g]
        for group in capped:  # each within the budget, or a sequence alone
            keys = len(group) * -(-max(group) // 16) * 16
            assert keys <= max_keys or len(group) == 1, (group, max_keys)
        needed = sum(  # as many parts as the longest context's width needs
            -(-len(g) // max(1, max_keys // (-(-max(g) // 16) * 16))) for g in _contexts(groups)
        )
        assert len(capped) == needed


def test_a_group_within_the_budget_stays_whole():
    groups = split_by_length(_decodes([32] * 64), 16, 1024)
    assert _contexts(cap_groups(groups, 16, 64 * 32)) == [[32] * 64]
    assert _contexts(cap_groups(groups, 16, 64 * 32 - 1)) == [[32] * 32, [32] * 32]
