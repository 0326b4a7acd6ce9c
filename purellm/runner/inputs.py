"""Turn a scheduled step into the flat input tensors and the attention metadata."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from purellm.engine.scheduler import ScheduledSeq
from purellm.layers.attention import AttentionGroup, AttentionMetadata


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    """[num_tokens]"""
    positions: torch.Tensor
    """[num_tokens]"""
    meta: AttentionMetadata
    logits_indices: torch.Tensor
    """[num_sampling] row of each sampling sequence's last token, in scheduled order."""
    sampling: list[ScheduledSeq]
    """The sequences that sample this step, in scheduled order."""


def prepare_inputs(
    scheduled: list[ScheduledSeq],
    block_size: int,
    device: torch.device,
    dtype: torch.dtype,
    sliding_window: int | None = None,
) -> StepInputs:
    """Decodes (one new token) go first as one batched group; each longer chunk follows as a
    group of its own."""
    decodes = [s for s in scheduled if s.num_new_tokens == 1]
    chunks = [s for s in scheduled if s.num_new_tokens > 1]
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    last_row: dict[int, int] = {}
    for item in decodes + chunks:
        seq, start = item.seq, item.seq.num_computed_tokens
        end = start + item.num_new_tokens
        input_ids += seq.token_slice(start, end)
        positions += range(start, end)
        table = seq.block_table
        slots += [table[p // block_size] * block_size + p % block_size for p in range(start, end)]
        last_row[id(item)] = len(input_ids) - 1
    groups = []
    if decodes:
        groups.append(_group(decodes, 1, block_size, device, dtype, sliding_window))
    groups += [
        _group([c], c.num_new_tokens, block_size, device, dtype, sliding_window) for c in chunks
    ]
    sampling = [s for s in scheduled if s.samples]
    as_long = {"dtype": torch.long, "device": device}
    return StepInputs(
        input_ids=torch.tensor(input_ids, **as_long),
        positions=torch.tensor(positions, **as_long),
        meta=AttentionMetadata(torch.tensor(slots, **as_long), groups),
        logits_indices=torch.tensor([last_row[id(s)] for s in sampling], **as_long),
        sampling=sampling,
    )


def _group(
    items: list[ScheduledSeq],
    query_len: int,
    block_size: int,
    device: torch.device,
    dtype: torch.dtype,
    sliding_window: int | None,
) -> AttentionGroup:
    """Key slots and mask for sequences that each compute `query_len` new tokens."""
    context_lens = [s.seq.num_computed_tokens + s.num_new_tokens for s in items]
    width = -(-max(context_lens) // block_size)
    tables = [s.seq.block_table[:width] + [0] * (width - len(s.seq.block_table)) for s in items]
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
