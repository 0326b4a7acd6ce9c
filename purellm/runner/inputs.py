"""Turn a scheduled step into the flat input tensors and the attention metadata."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from purellm.layers.attention import AttentionGroup, AttentionMetadata
from purellm.step import SeqWork


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    """[num_tokens]"""
    positions: torch.Tensor
    """[num_tokens]"""
    meta: AttentionMetadata
    logits_indices: torch.Tensor
    """[num_sampled] the rows whose next token is sampled: each sampling sequence's last token,
    after its drafts' rows (one per draft) when it has drafts; in the step's order."""
    sampling: list[SeqWork]
    """The sequences that sample this step, in the step's order."""


GROUP_COST_TOKENS = {"cpu": 1024, "gpu": 8192}
"""What one more attention group costs (its per-layer ops), in keys that padding makes a group
read: decodes are split by context length when that saves more padded keys than this. CPU:
from the 64-sequence step profile (BENCHMARKS.md, ~3.8 µs per context token per step, ~4 ms per
group); GPU: larger, as padded keys cost little there (not measured yet)."""


def prepare_inputs(
    work: list[SeqWork],
    block_size: int,
    device: torch.device,
    dtype: torch.dtype,
    sliding_window: int | None = None,
    max_group_keys: int | None = None,
) -> StepInputs:
    """Decodes (one new token) go first, batched in groups of similar context length, each
    group reading at most `max_group_keys` keys (None: no limit); each longer chunk follows as
    a group of its own."""
    decodes = [w for w in work if len(w.token_ids) == 1]
    chunks = [w for w in work if len(w.token_ids) > 1]
    group_cost = GROUP_COST_TOKENS["cpu" if device.type == "cpu" else "gpu"]
    decode_groups = split_by_length(decodes, block_size, group_cost)
    if max_group_keys is not None:
        decode_groups = cap_groups(decode_groups, block_size, max_group_keys)
    decodes = [s for group in decode_groups for s in group]
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    last_row: dict[int, int] = {}
    for item in decodes + chunks:
        start, end, table = item.start, item.context_len, item.block_table
        input_ids += item.token_ids
        positions += range(start, end)
        slots += [table[p // block_size] * block_size + p % block_size for p in range(start, end)]
        last_row[id(item)] = len(input_ids) - 1
    groups = [_group(g, 1, block_size, device, dtype, sliding_window) for g in decode_groups]
    groups += [
        _group([c], len(c.token_ids), block_size, device, dtype, sliding_window) for c in chunks
    ]
    sampling = [w for w in work if w.sample is not None]
    # each sampling sequence's last row, after one row per draft when it has drafts
    rows = [r for w in sampling for r in range(last_row[id(w)] - w.num_drafts, last_row[id(w)] + 1)]
    as_long = {"dtype": torch.long, "device": device}
    return StepInputs(
        input_ids=torch.tensor(input_ids, **as_long),
        positions=torch.tensor(positions, **as_long),
        meta=AttentionMetadata(torch.tensor(slots, **as_long), groups),
        logits_indices=torch.tensor(rows, **as_long),
        sampling=sampling,
    )


def split_by_length(
    decodes: list[SeqWork], block_size: int, group_cost: int
) -> list[list[SeqWork]]:
    """The decodes in groups, shortest context first, that minimize what the step reads:
    per group `group_cost` plus its size times its longest context (in whole blocks). Widths
    within 1/8 of each other share a group, which keeps the search small (<= ~50 widths)."""
    if not decodes:
        return []
    blocks = [-(-d.context_len // block_size) for d in decodes]
    order = sorted(range(len(decodes)), key=blocks.__getitem__)
    ends, run_start = [], 0  # the last index (in `order`) of each run of similar widths
    for k in range(1, len(order) + 1):
        if k == len(order) or blocks[order[k]] * 8 > blocks[order[run_start]] * 9:
            ends.append(k - 1)
            run_start = k
    best = {-1: (0, -1)}  # end -> (cost of the groups up to it, end of the group before)
    for i, end in enumerate(ends):
        width = blocks[order[end]] * block_size
        best[end] = min(
            (best[prev][0] + group_cost + (end - prev) * width, prev) for prev in [-1, *ends[:i]]
        )
    groups, end = [], ends[-1]
    while end >= 0:
        prev = best[end][1]
        groups.append([decodes[i] for i in order[prev + 1 : end + 1]])
        end = prev
    return groups[::-1]


def cap_groups(groups: list[list[SeqWork]], block_size: int, max_keys: int) -> list[list[SeqWork]]:
    """Each group, in order, cut into near-equal parts of at most `max_keys` keys each (size
    times the group's longest context, in whole blocks); a sequence alone may exceed it. On a
    CPU a group whose gathered keys and values fit in the cache is read back from it by the
    attention matmuls instead of from memory."""
    capped = []
    for group in groups:
        width = max(-(-w.context_len // block_size) for w in group) * block_size
        parts = -(-len(group) // max(1, max_keys // width))
        capped += [
            group[len(group) * i // parts : len(group) * (i + 1) // parts] for i in range(parts)
        ]
    return capped


def _group(
    items: list[SeqWork],
    query_len: int,
    block_size: int,
    device: torch.device,
    dtype: torch.dtype,
    sliding_window: int | None,
) -> AttentionGroup:
    """Key slots and mask for sequences that each compute `query_len` new tokens."""
    context_lens = [w.context_len for w in items]
    width = -(-max(context_lens) // block_size)
    tables = [w.block_table[:width] + [0] * (width - len(w.block_table)) for w in items]
    tables_t = torch.tensor(tables, dtype=torch.long, device=device)  # [B, width]
    ends = torch.tensor(context_lens, dtype=torch.long, device=device)
    query_pos = ends[:, None] - query_len + torch.arange(query_len, device=device)  # [B, Q]
    key_pos = torch.arange(width * block_size, device=device)  # [L]
    allowed = key_pos <= query_pos[..., None]  # [B, Q, L]
    if sliding_window:
        allowed &= key_pos > query_pos[..., None] - sliding_window
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, float("-inf"))
    from_start = len(items) == 1 and context_lens[0] == query_len > 1
    from_start &= not sliding_window or sliding_window >= query_len
    return AttentionGroup(
        len(items), query_len, tables_t, mask[:, None], from_start=from_start
    )  # mask [B, 1, Q, L]
