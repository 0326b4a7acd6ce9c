"""Batched token sampling in plain PyTorch, with the order and semantics of vLLM's sampler.

`SamplingBatch.build` turns per-row Python data into tensors once per step; `Sampler` then runs
without a single host-device sync: the caller does one `.tolist()` on the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from purellm.sampling_params import SamplingParams

_GREEDY_EPS = 1e-5
"""Temperatures below this are treated as greedy (dividing by them overflows)."""
_NEG_INF = float("-inf")


@dataclass
class SamplingBatch:
    """Per-step sampling state for N rows. A field is None when no row needs it."""

    num_rows: int
    vocab_size: int
    all_greedy: bool
    greedy: torch.Tensor | None
    """[N] bool, which rows take the argmax; None when all or no rows are greedy."""
    temperature: torch.Tensor | None
    """[N] float32; 1.0 on greedy rows."""
    top_k: torch.Tensor | None
    """[N] int64; vocab_size on rows without top-k."""
    top_k_max: int
    top_p: torch.Tensor | None
    """[N] float32."""
    min_p: torch.Tensor | None
    """[N] float32."""
    repetition_penalty: torch.Tensor | None
    """[N] float32."""
    seen_mask: torch.Tensor | None
    """[N, V] bool, tokens in prompt + output (rows with a repetition penalty only)."""
    presence_penalty: torch.Tensor | None
    """[N] float32."""
    frequency_penalty: torch.Tensor | None
    """[N] float32."""
    output_counts: torch.Tensor | None
    """[N, V] float32, how often each token occurs in the output."""
    banned_mask: torch.Tensor | None
    """[N, V] bool, tokens a row may not sample this step (min_tokens)."""
    logit_bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    """(rows, token ids, biases) [B] each, for the rows that ask for a bias: added first."""
    allowed_mask: torch.Tensor | None
    """[N, V] bool, the tokens a row's grammar allows (all on unconstrained rows)."""
    generators: list[torch.Generator | None]
    seeded_rows: list[int]
    """Random (non-greedy) rows that draw from their own generator."""
    any_unseeded_random: bool
    max_num_logprobs: int | None
    """Largest `logprobs` asked for in the batch, None when no row asked."""

    @classmethod
    def build(
        cls,
        params: list[SamplingParams],
        prompt_ids: list[list[int]],
        output_ids: list[list[int]],
        generators: list[torch.Generator | None],
        banned_ids: list[list[int]],
        vocab_size: int,
        device: torch.device,
        allowed: list[bytes | None] | None = None,
    ) -> SamplingBatch:
        greedy = [_is_greedy(p) for p in params]
        random_rows = [i for i, g in enumerate(greedy) if not g]
        seeded = [i for i in random_rows if generators[i] is not None]
        asked = [p.logprobs for p in params if p.logprobs is not None]
        mixed = 0 < len(random_rows) < len(params)
        return cls(
            num_rows=len(params),
            vocab_size=vocab_size,
            all_greedy=not random_rows,
            greedy=_tensor(greedy, torch.bool, device) if mixed else None,
            **_filter_fields(params, greedy, vocab_size, device),
            **_penalty_fields(params, prompt_ids, output_ids, vocab_size, device),
            banned_mask=_row_mask(banned_ids, vocab_size, device) if any(banned_ids) else None,
            logit_bias=_logit_bias(params, device),
            allowed_mask=_allowed_mask(allowed, vocab_size, device),
            generators=list(generators),
            seeded_rows=seeded,
            any_unseeded_random=len(seeded) < len(random_rows),
            max_num_logprobs=max(asked) if asked else None,
        )

    @property
    def needs_processing(self) -> bool:
        """Whether the logits change before argmax / sampling (else greedy is a bare argmax)."""
        penalties = (self.banned_mask, self.repetition_penalty, self.output_counts, self.logit_bias)
        return not self.all_greedy or any(t is not None for t in (*penalties, self.allowed_mask))


def _allowed_mask(
    rows: list[bytes | None] | None, vocab_size: int, device: torch.device
) -> torch.Tensor | None:
    """[N, V] bool from grammar bitmasks (bit j of little-endian int32 word w: token 32w + j);
    rows without one allow everything, tokens past a bitmask's end nothing."""
    if rows is None or all(r is None for r in rows):
        return None
    words = -(-vocab_size // 32)
    packed = torch.full((len(rows), words), -1, dtype=torch.int32)
    for i, row in enumerate(rows):
        if row is not None:
            given = torch.frombuffer(bytearray(row), dtype=torch.int32)[:words]
            packed[i].zero_()[: len(given)] = given
    shifts = torch.arange(32, dtype=torch.int32)
    bits = (packed.unsqueeze(-1) >> shifts) & 1  # [N, W] -> [N, W, 32]
    mask = bits.view(len(rows), words * 32)[:, :vocab_size]  # [N, W * 32] -> [N, V]
    return mask.bool().to(device, non_blocking=True)


def _logit_bias(params: list[SamplingParams], device: torch.device):
    """Only the biased (row, token) pairs: nothing the size of the vocabulary per step."""
    entries = [(r, t, b) for r, p in enumerate(params) for t, b in (p.logit_bias or {}).items()]
    if not entries:
        return None
    rows, tokens, biases = zip(*entries, strict=True)
    kinds = (torch.int64, torch.int64, torch.float32)
    return tuple(
        _tensor(list(v), k, device) for v, k in zip((rows, tokens, biases), kinds, strict=True)
    )


def _is_greedy(p: SamplingParams) -> bool:
    return p.is_greedy or p.temperature < _GREEDY_EPS


def _tensor(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def _optional(
    params: list[SamplingParams],
    greedy: list[bool],
    name: str,
    neutral: float,
    device: torch.device,
) -> torch.Tensor | None:
    """Per-row float `name` (neutral on greedy rows), or None when every row is neutral."""
    values = [neutral if g else getattr(p, name) for p, g in zip(params, greedy, strict=True)]
    return _tensor(values, torch.float32, device) if any(v != neutral for v in values) else None


def _filter_fields(
    params: list[SamplingParams], greedy: list[bool], vocab_size: int, device: torch.device
) -> dict:
    """temperature, top_k, top_k_max, top_p and min_p (neutral on greedy rows)."""
    top_k, top_k_max = _top_k_values(params, greedy, vocab_size)
    return {
        "temperature": _optional(params, greedy, "temperature", 1.0, device),
        "top_k": _tensor(top_k, torch.int64, device) if top_k_max else None,
        "top_k_max": top_k_max,
        "top_p": _optional(params, greedy, "top_p", 1.0, device),
        "min_p": _optional(params, greedy, "min_p", 0.0, device),
    }


def _penalty_fields(
    params: list[SamplingParams],
    prompt_ids: list[list[int]],
    output_ids: list[list[int]],
    vocab_size: int,
    device: torch.device,
) -> dict:
    """Penalty tensors; token masks only cover the rows whose penalty is not neutral."""
    rep = [p.repetition_penalty for p in params]
    pres = [p.presence_penalty for p in params]
    freq = [p.frequency_penalty for p in params]
    use_rep = any(r != 1.0 for r in rep)
    use_pf = any(v != 0.0 for v in pres + freq)
    seen_rows = [
        prompt + out if r != 1.0 else []
        for prompt, out, r in zip(prompt_ids, output_ids, rep, strict=True)
    ]
    count_rows = [
        out if (p != 0.0 or f != 0.0) else []
        for out, p, f in zip(output_ids, pres, freq, strict=True)
    ]
    return {
        "repetition_penalty": _tensor(rep, torch.float32, device) if use_rep else None,
        "seen_mask": _row_mask(seen_rows, vocab_size, device) if use_rep else None,
        "presence_penalty": _tensor(pres, torch.float32, device) if use_pf else None,
        "frequency_penalty": _tensor(freq, torch.float32, device) if use_pf else None,
        "output_counts": _row_counts(count_rows, vocab_size, device) if use_pf else None,
    }


def _top_k_values(
    params: list[SamplingParams], greedy: list[bool], vocab_size: int
) -> tuple[list[int], int]:
    """Per-row k (vocab_size when disabled) and the largest enabled k (0 when none)."""
    ks = [
        vocab_size if g or p.top_k == 0 else min(p.top_k, vocab_size)
        for p, g in zip(params, greedy, strict=True)
    ]
    return ks, max((k for k in ks if k < vocab_size), default=0)


def _padded_index(rows: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """[N, L] token ids, padded (and out-of-range ids replaced) with the spare column V."""
    width = max((len(r) for r in rows), default=0)
    padded = [[t if 0 <= t < vocab_size else vocab_size for t in r] for r in rows]
    padded = [r + [vocab_size] * (width - len(r)) for r in padded]
    return _tensor(padded, torch.int64, device)


def _row_mask(rows: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """[N, V] bool, True at each row's listed ids."""
    index = _padded_index(rows, vocab_size, device)
    mask = torch.zeros(len(rows), vocab_size + 1, dtype=torch.bool, device=device)
    return mask.scatter_(1, index, True)[:, :vocab_size]


def _row_counts(rows: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """[N, V] float32, how many times each id occurs in each row."""
    index = _padded_index(rows, vocab_size, device)
    counts = torch.zeros(len(rows), vocab_size + 1, dtype=torch.float32, device=device)
    ones = torch.ones(index.shape, dtype=torch.float32, device=device)
    return counts.scatter_add_(1, index, ones)[:, :vocab_size]


@dataclass
class SamplerOutput:
    token_ids: torch.Tensor
    """[N] int64, the sampled tokens."""
    logprobs: torch.Tensor | None
    """[N] float32, raw-logit logprob of each sampled token; None when no row asked."""
    top_logprobs: torch.Tensor | None
    """[N, K] float32, K = the batch's largest `logprobs`, best first; None when K is 0."""
    top_token_ids: torch.Tensor | None
    """[N, K] int64, the ids of `top_logprobs`."""


class Sampler:
    """logit bias -> banned mask -> repetition -> presence/frequency -> (greedy argmax) ->
    temperature
    -> top-k -> top-p -> min-p -> exponential-race sampling. Never syncs with the host."""

    def __call__(self, logits: torch.Tensor, batch: SamplingBatch) -> SamplerOutput:
        raw = logits
        if batch.needs_processing:
            logits = _apply_penalties(logits.clone(), batch)
        token_ids = self._pick(logits, batch)
        return _gather_logprobs(raw, token_ids, batch.max_num_logprobs)

    def _pick(self, logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
        if batch.all_greedy:
            return logits.argmax(dim=-1)
        greedy_ids = logits.argmax(dim=-1) if batch.greedy is not None else None
        sampled = _sample(_apply_filters(logits, batch), batch)
        if greedy_ids is None:
            return sampled
        return torch.where(batch.greedy, greedy_ids, sampled)


def _apply_penalties(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """In place on [N, V] logits: logit bias, banned ids, repetition, presence and frequency
    penalties."""
    if batch.logit_bias is not None:
        rows, tokens, biases = batch.logit_bias
        logits.index_put_((rows, tokens), biases.to(logits.dtype), accumulate=True)
    if batch.allowed_mask is not None:
        logits.masked_fill_(~batch.allowed_mask, _NEG_INF)
    if batch.banned_mask is not None:
        logits.masked_fill_(batch.banned_mask, _NEG_INF)
    if batch.repetition_penalty is not None:
        penalty = batch.repetition_penalty.unsqueeze(1)  # [N] -> [N, 1]
        scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(batch.seen_mask, scaled, logits)
    if batch.output_counts is not None:
        counts = batch.output_counts
        freq = batch.frequency_penalty.unsqueeze(1)  # [N] -> [N, 1]
        pres = batch.presence_penalty.unsqueeze(1)  # [N] -> [N, 1]
        logits -= freq * counts + pres * (counts > 0).float()
    return logits


def _apply_filters(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Temperature, top-k, top-p and min-p on [N, V] logits (in place where possible)."""
    if batch.temperature is not None:
        logits.div_(batch.temperature.unsqueeze(1))  # [N] -> [N, 1]
    if batch.top_p is not None:
        logits = _top_k_top_p_sorted(logits, batch.top_k, batch.top_p)
    elif batch.top_k is not None:
        logits = _top_k_only(logits, batch.top_k, batch.top_k_max)
    if batch.min_p is not None:
        probs = logits.softmax(dim=-1)
        threshold = probs.amax(dim=-1, keepdim=True) * batch.min_p.unsqueeze(1)  # [N] -> [N, 1]
        logits.masked_fill_(probs < threshold, _NEG_INF)
    return logits


def _top_k_only(logits: torch.Tensor, k: torch.Tensor, k_max: int) -> torch.Tensor:
    """Top-k via one `topk(k_max)` instead of a full sort; rows with k == V are untouched."""
    vocab_size = logits.shape[1]
    top = logits.topk(k_max, dim=-1).values  # [N, k_max], descending
    index = (k.clamp(max=k_max) - 1).unsqueeze(1)  # [N] -> [N, 1]
    kth = top.gather(1, index)  # [N, 1]
    kth.masked_fill_((k >= vocab_size).unsqueeze(1), _NEG_INF)  # [N] -> [N, 1]
    return logits.masked_fill_(logits < kth, _NEG_INF)


def _top_k_top_p_sorted(
    logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor
) -> torch.Tensor:
    """Top-k then top-p on an ascending sort (vLLM's `apply_top_k_top_p`)."""
    vocab_size = logits.shape[1]
    sorted_logits, order = logits.sort(dim=-1, descending=False)  # [N, V] each
    if k is not None:
        index = (vocab_size - k).unsqueeze(1)  # [N] -> [N, 1]
        kth = sorted_logits.gather(1, index)  # [N, 1]
        sorted_logits.masked_fill_(sorted_logits < kth, _NEG_INF)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [N, V]
    drop = cumulative <= 1 - p.unsqueeze(1)  # [N] -> [N, 1] broadcast
    drop[:, -1] = False
    sorted_logits.masked_fill_(drop, _NEG_INF)
    return logits.scatter_(1, order, sorted_logits)


def _sample(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """argmax(probs / q), q ~ Exp(1): a draw from `probs` with no host sync. Seeded rows take q
    from their own generator, so their draws do not depend on the rest of the batch."""
    probs = logits.softmax(dim=-1)
    q = torch.empty_like(probs)
    if batch.any_unseeded_random:
        q.exponential_()
    else:
        q.fill_(1.0)  # only greedy rows are left unseeded, and their draw is discarded
    vocab_size = probs.shape[1]
    for row in batch.seeded_rows:
        gen = batch.generators[row]
        q[row] = torch.empty(vocab_size, device=probs.device).exponential_(generator=gen)
    q.clamp_min_(torch.finfo(q.dtype).tiny)  # a zero draw would make 0/0 = nan win the argmax
    return probs.div_(q).argmax(dim=-1)


def _gather_logprobs(
    raw: torch.Tensor, token_ids: torch.Tensor, max_num_logprobs: int | None
) -> SamplerOutput:
    if max_num_logprobs is None:
        return SamplerOutput(token_ids, None, None, None)
    logprobs = raw.float().log_softmax(dim=-1)  # [N, V]
    chosen = logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)  # [N] -> [N, 1] -> [N]
    if max_num_logprobs == 0:
        return SamplerOutput(token_ids, chosen, None, None)
    top = logprobs.topk(min(max_num_logprobs, logprobs.shape[1]), dim=-1)
    return SamplerOutput(token_ids, chosen, top.values, top.indices)
