"""Mixture-of-experts feed-forward: a router picks `top_k` of `num_experts` SwiGLU experts per
token, and their outputs are summed with the router's weights.

Experts are stored stacked, `w13` [experts, 2 * intermediate, hidden] (gate rows, then up) and
`w2` [experts, hidden, intermediate], filled from a checkpoint's per-expert tensors through
`weight_loader(param, tensor, shard, expert=e)`. Dispatch uses plain torch ops: the step's
(token, expert) pairs are sorted by expert, each expert that was hit runs one matmul over its
tokens, and the results are scattered back with `index_add_`, so every token sums its experts
in increasing expert order, as transformers does."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from purellm.layers.linear import Linear
from purellm.layers.quant.base import DenseMethod, as_float, check_shape, parameter


@dataclass(frozen=True)
class MoEOptions:
    num_experts: int
    top_k: int
    intermediate_size: int
    renormalize: bool
    """Divide the top-k probabilities by their sum (Mixtral always; Qwen3 `norm_topk_prob`)."""
    float32_scores: bool = False
    """Scale expert outputs by the float32 router weights (Mixtral) rather than by weights cast
    to the activations' dtype first (Qwen3-MoE)."""

    def __post_init__(self) -> None:
        if not 0 < self.top_k <= self.num_experts:
            raise ValueError(f"top_k {self.top_k} must be in 1..{self.num_experts} experts")
        if self.intermediate_size <= 0:
            raise ValueError(f"intermediate_size must be positive, not {self.intermediate_size}")


class Experts(nn.Module):
    def __init__(self, options: MoEOptions, hidden_size: int, dtype: torch.dtype):
        super().__init__()
        experts, inter = options.num_experts, options.intermediate_size
        self.num_experts, self.intermediate_size = experts, inter
        self.w13 = parameter(torch.empty(experts, 2 * inter, hidden_size, dtype=dtype), self.load)
        self.w2 = parameter(torch.empty(experts, hidden_size, inter, dtype=dtype), self.load)

    @torch.no_grad()
    def load(self, param: nn.Parameter, tensor, shard: int | None = None, expert=None) -> None:
        """One expert's tensor, or with `expert` None all experts stacked [experts, out, in]."""
        if expert is not None and not 0 <= expert < self.num_experts:
            raise ValueError(f"expert index {expert} outside 0..{self.num_experts - 1}")
        rows = param if expert is None else param[expert]  # [(E,) out, in]
        if shard is not None:
            inter = self.intermediate_size
            rows = rows[..., shard * inter : (shard + 1) * inter, :]  # gate or up
        tensor = as_float(tensor)
        check_shape("experts" if expert is None else f"expert {expert}", tensor.shape, rows.shape)
        rows.copy_(tensor)

    def gate_up(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """x [n, hidden] -> [n, 2 * inter] through `expert`'s gate and up projections."""
        return nn.functional.linear(x, self.w13[expert])

    def down(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """x [n, inter] -> [n, hidden]."""
        return nn.functional.linear(x, self.w2[expert])

    def expected_slots(self, prefix: str) -> set[tuple[str, int | None, int]]:
        """(parameter, shard, expert) for every checkpoint tensor the experts need."""
        experts = range(self.num_experts)
        gate_up = {(f"{prefix}.w13", shard, e) for shard in (0, 1) for e in experts}
        return gate_up | {(f"{prefix}.w2", None, e) for e in experts}

    def forward(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x [T, hidden], ids and weights [T, top_k] -> [T, hidden]."""
        if x.shape[0] == 1:
            return self._one_token(x, ids, weights)
        top_k = ids.shape[1]
        flat = ids.reshape(-1)  # [T * top_k]
        order = flat.argsort(stable=True)  # pairs grouped by expert, tokens in order
        tokens = order // top_k  # [T * top_k]
        counts = torch.bincount(flat, minlength=self.num_experts).tolist()
        rows = x[tokens]  # [T * top_k, hidden]
        out = torch.empty_like(rows)
        start = 0
        for expert, count in enumerate(counts):
            if count:
                end = start + count
                gate, up = self.gate_up(expert, rows[start:end]).chunk(2, dim=-1)
                out[start:end] = self.down(expert, nn.functional.silu(gate) * up)
                start = end  # gate, up [count, inter]
        out.mul_(weights.reshape(-1)[order, None])  # computed in the weights' dtype, as HF
        return torch.zeros_like(x).index_add_(0, tokens, out)

    def _one_token(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor):
        """A decode step of one sequence: its experts in increasing id order, summed as the
        general path's index_add_ sums them (fewer ops: no sort, count or scatter)."""
        chosen = ids[0].tolist()  # the one host sync
        total = None
        for k in sorted(range(len(chosen)), key=chosen.__getitem__):
            expert = chosen[k]
            gate, up = self.gate_up(expert, x).chunk(2, dim=-1)  # [1, inter] each
            part = (self.down(expert, nn.functional.silu(gate) * up) * weights[0, k]).to(x.dtype)
            total = part if total is None else total + part
        return total


class FusedMoE(nn.Module):
    """`gate` (the router, dense) and `experts`, under the checkpoint's names."""

    def __init__(
        self,
        options: MoEOptions,
        hidden_size: int,
        dtype: torch.dtype,
        experts: Experts | None = None,
    ):
        """`experts`: another storage (a GGUF's blocks) instead of dense `dtype` ones."""
        super().__init__()
        self.options = options
        self.gate = Linear(hidden_size, [options.num_experts], False, DenseMethod(dtype))
        self.experts = experts or Experts(options, hidden_size, dtype)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, hidden] -> (expert ids [T, top_k], their weights [T, top_k])."""
        probs = torch.softmax(self.gate(x).float(), dim=-1)  # [T, experts]
        weights, ids = torch.topk(probs, self.options.top_k, dim=-1)
        if self.options.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return ids, weights if self.options.float32_scores else weights.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, weights = self.route(x)
        return self.experts(x, ids, weights)
