"""Sampler semantics on CPU: filters, penalties, seeding, distribution and logprobs."""

from __future__ import annotations

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from purellm.layers import sampler as sampler_mod
from purellm.layers.sampler import Sampler, SamplingBatch
from purellm.sampling_params import SamplingParams

CPU = torch.device("cpu")


def make_batch(
    params: list[SamplingParams],
    vocab_size: int,
    prompt_ids: list[list[int]] | None = None,
    output_ids: list[list[int]] | None = None,
    generators: list[torch.Generator | None] | None = None,
    banned_ids: list[list[int]] | None = None,
) -> SamplingBatch:
    n = len(params)
    return SamplingBatch.build(
        params,
        prompt_ids or [[] for _ in range(n)],
        output_ids or [[] for _ in range(n)],
        generators or [None] * n,
        banned_ids or [[] for _ in range(n)],
        vocab_size,
        CPU,
    )


def sample(logits: torch.Tensor, params: list[SamplingParams], **kwargs) -> list[int]:
    batch = make_batch(params, logits.shape[1], **kwargs)
    return Sampler()(logits, batch).token_ids.tolist()


def test_greedy_is_argmax_and_all_greedy_batch_is_cheap():
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    params = [SamplingParams(temperature=0) for _ in range(5)]
    batch = make_batch(params, 50)
    assert batch.all_greedy and not batch.needs_processing
    assert batch.temperature is None and batch.top_k is None and batch.top_p is None
    assert batch.seen_mask is None and batch.output_counts is None and batch.banned_mask is None
    out = Sampler()(logits, batch)
    assert out.token_ids.tolist() == logits.argmax(-1).tolist()
    assert out.logprobs is None and out.top_logprobs is None


def test_greedy_rows_in_mixed_batch_and_input_untouched():
    torch.manual_seed(1)
    logits = torch.randn(4, 30)
    before = logits.clone()
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.5, top_p=0.9, min_p=0.05),
        SamplingParams(top_k=1, temperature=2.0),
        SamplingParams(temperature=0.8, top_k=5),
    ]
    tokens = sample(logits, params)
    assert tokens[0] == logits[0].argmax().item()
    assert tokens[2] == logits[2].argmax().item()
    assert torch.equal(logits, before)


def test_banned_ids_are_never_sampled():
    torch.manual_seed(2)
    vocab = 8
    logits = torch.zeros(2000, vocab)
    logits[:, 3] = 5.0  # the favourite, banned below
    banned = [[3, 5]] * 2000
    params = [SamplingParams(temperature=1.0)] * 1000 + [SamplingParams(temperature=0)] * 1000
    tokens = sample(logits, params, banned_ids=banned)
    assert not {3, 5} & set(tokens)


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(3)
    vocab = 40
    logits = torch.randn(3, vocab) * 3
    prompt = [[1, 2, 3, 7], [5, 5, 9, 0], [39, 12, 1, 1]]
    output = [[7, 8], [20, 21], [3, 4]]
    for penalty in (1.3, 0.7):
        params = [SamplingParams(repetition_penalty=penalty) for _ in range(3)]
        batch = make_batch(params, vocab, prompt_ids=prompt, output_ids=output)
        ours = sampler_mod._apply_penalties(logits.clone(), batch)
        input_ids = torch.tensor([p + o for p, o in zip(prompt, output, strict=True)])
        theirs = RepetitionPenaltyLogitsProcessor(penalty)(input_ids, logits.clone())
        torch.testing.assert_close(ours, theirs)


def test_presence_and_frequency_penalties():
    vocab = 10
    logits = torch.linspace(-1, 1, vocab).repeat(2, 1)  # [V] -> [2, V]
    output = [[4, 4, 4, 7], [1]]
    params = [
        SamplingParams(presence_penalty=0.5, frequency_penalty=0.25),
        SamplingParams(),
    ]
    batch = make_batch(params, vocab, prompt_ids=[[2, 3], [1]], output_ids=output)
    got = sampler_mod._apply_penalties(logits.clone(), batch)
    expected = logits.clone()
    expected[0, 4] -= 0.25 * 3 + 0.5
    expected[0, 7] -= 0.25 * 1 + 0.5
    torch.testing.assert_close(got, expected)  # prompt tokens and the neutral row are untouched


def test_top_k_one_equals_greedy_and_top_p_tiny_keeps_max():
    torch.manual_seed(4)
    logits = torch.randn(6, 100)
    greedy = logits.argmax(-1).tolist()
    assert sample(logits, [SamplingParams(top_k=1)] * 6) == greedy
    assert sample(logits, [SamplingParams(top_p=1e-6, temperature=1.3)] * 6) == greedy
    both = [SamplingParams(top_p=1e-6, top_k=50, temperature=0.9)] * 6
    assert sample(logits, both) == greedy


def test_min_p_filter():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.06, 0.03, 0.01])).repeat(3000, 1)
    torch.manual_seed(5)
    tokens = sample(logits, [SamplingParams(min_p=0.15)] * 3000)  # keeps p >= 0.075
    assert set(tokens) == {0, 1, 2}


def _histogram(tokens: list[int], vocab: int) -> torch.Tensor:
    return torch.bincount(torch.tensor(tokens), minlength=vocab).float() / len(tokens)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.7),
        SamplingParams(temperature=1.3, top_k=3),
        SamplingParams(temperature=1.0, top_p=0.75),
    ],
)
def test_distribution_matches_softmax(params: SamplingParams):
    base = torch.tensor([0.1, 1.2, -0.5, 0.8, 2.0, 0.3])
    vocab, draws = base.numel(), 40000
    probs = torch.softmax(base / params.temperature, -1)
    if params.top_k:
        keep = probs >= probs.topk(params.top_k).values[-1]
        probs = torch.where(keep, probs, 0.0)
    if params.top_p < 1:
        # ascending cumulative mass <= 1 - top_p is dropped (vLLM's rule)
        order = probs.argsort()
        drop = probs[order].cumsum(0) <= 1 - params.top_p
        probs[order[drop]] = 0.0
    probs = probs / probs.sum()
    torch.manual_seed(6)
    tokens = sample(base.repeat(draws, 1), [params] * draws)  # [V] -> [draws, V]
    torch.testing.assert_close(_histogram(tokens, vocab), probs, atol=0.012, rtol=0)


def test_top_k_distribution_mixed_with_disabled_rows():
    torch.manual_seed(7)
    base = torch.tensor([3.0, 2.5, 2.0, 1.5, 1.0])
    params = [SamplingParams(top_k=2), SamplingParams()] * 5000
    tokens = torch.tensor(sample(base.repeat(10000, 1), params))  # [V] -> [10000, V]
    assert set(tokens[0::2].tolist()) == {0, 1}
    assert set(tokens[1::2].tolist()) == {0, 1, 2, 3, 4}


def _seeded_run(position: int, others: list[tuple[SamplingParams, int | None]], steps: int):
    """Sample `steps` times with the seeded row at `position` among `others`."""
    torch.manual_seed(100 + position)
    target = (SamplingParams(temperature=0.9, top_p=0.95, seed=1234), 1234)
    rows = others[:position] + [target] + others[position:]
    gens = [None if s is None else torch.Generator().manual_seed(s) for _, s in rows]
    logits = torch.randn(len(rows), 64) * 0.3
    logits[position] = torch.linspace(0, 1, 64)  # same target logits everywhere
    batch = make_batch([p for p, _ in rows], 64, generators=gens)
    sampler = Sampler()
    return [sampler(logits, batch).token_ids[position].item() for _ in range(steps)]


def test_seeded_rows_are_reproducible_whatever_the_batch():
    alone = _seeded_run(0, [], 20)
    others = [
        (SamplingParams(temperature=1.0, seed=7), 7),
        (SamplingParams(temperature=0.5), None),
        (SamplingParams(temperature=0), None),
        (SamplingParams(temperature=1.2, top_k=10, seed=99), 99),
    ]
    assert len(set(alone)) > 5  # really random
    assert _seeded_run(2, others, 20) == alone
    assert _seeded_run(4, others[::-1], 20) == alone
    assert _seeded_run(1, others[:2], 20) == alone


def test_seeded_row_uses_its_generator_exactly():
    logits = torch.randn(1, 32)
    params = SamplingParams(temperature=1.0, seed=5)
    got = sample(logits, [params], generators=[torch.Generator().manual_seed(5)])
    q = torch.empty(32).exponential_(generator=torch.Generator().manual_seed(5))
    assert got == [(logits[0].softmax(-1) / q).argmax().item()]


def test_logprobs_are_raw_log_softmax_with_top_k_ordering():
    torch.manual_seed(8)
    logits = torch.randn(3, 50) * 2
    params = [
        SamplingParams(temperature=0.5, logprobs=4, repetition_penalty=1.5),
        SamplingParams(temperature=0, logprobs=0),
        SamplingParams(top_k=3),
    ]
    batch = make_batch(params, 50, prompt_ids=[[1, 2], [3], [4]], banned_ids=[[0], [], []])
    out = Sampler()(logits, batch)
    reference = torch.log_softmax(logits, -1)
    chosen = reference.gather(1, out.token_ids.unsqueeze(1)).squeeze(1)  # [N] -> [N, 1] -> [N]
    torch.testing.assert_close(out.logprobs, chosen)
    assert out.top_logprobs.shape == (3, 4) and out.top_token_ids.shape == (3, 4)
    expected = reference.sort(-1, descending=True)
    torch.testing.assert_close(out.top_logprobs, expected.values[:, :4])
    assert torch.equal(out.top_token_ids, expected.indices[:, :4])
    assert torch.all(out.top_logprobs[:, :-1] >= out.top_logprobs[:, 1:])


def test_logprobs_zero_gives_only_sampled_logprob():
    logits = torch.randn(2, 10)
    out = Sampler()(logits, make_batch([SamplingParams(logprobs=0)] * 2, 10))
    assert out.logprobs is not None and out.logprobs.shape == (2,)
    assert out.top_logprobs is None and out.top_token_ids is None


def test_logit_bias_is_added_before_sampling_and_leaves_other_rows_alone():
    torch.manual_seed(3)
    logits = torch.randn(3, 20)
    params = [
        SamplingParams(temperature=0, logit_bias={7: 100.0}),  # forces token 7
        SamplingParams(temperature=0, logit_bias={int(logits[1].argmax()): -100.0}),
        SamplingParams(temperature=0),
    ]
    batch = make_batch(params, 20)
    assert batch.needs_processing and 2 not in batch.logit_bias[0].tolist()  # row 2: none
    tokens = Sampler()(logits, batch).token_ids.tolist()
    assert tokens[0] == 7
    assert tokens[1] == logits[1].topk(2).indices[1].item()  # the runner-up
    assert tokens[2] == logits[2].argmax().item()
    with pytest.raises(ValueError, match=r"\[-100, 100\]"):
        SamplingParams(logit_bias={1: 101.0})
    with pytest.raises(ValueError, match="token ids"):
        SamplingParams(logit_bias={-1: 1.0})


def test_grammar_bitmask_rows_allow_only_their_tokens():
    """Bit j of little-endian int32 word w allows token 32w + j; rows without a mask are free;
    tokens past a short mask are not allowed."""
    vocab = 70
    allowed = {3, 31, 32, 64}
    words = [0, 0, 0]
    for t in allowed:
        words[t // 32] |= 1 << (t % 32)
    row = torch.tensor(words, dtype=torch.int64).to(torch.int32).numpy().tobytes()
    short = torch.tensor([-1], dtype=torch.int32).numpy().tobytes()  # tokens 0-31 only
    logits = torch.randn(3, vocab)
    logits[:, 69] = 100.0  # the unconstrained favourite
    params = [SamplingParams(temperature=0)] * 3
    batch = SamplingBatch.build(
        params, [[]] * 3, [[]] * 3, [None] * 3, [[]] * 3, vocab, CPU, allowed=[row, None, short]
    )
    mask = batch.allowed_mask
    assert set(mask[0].nonzero().flatten().tolist()) == allowed
    assert mask[1].all() and mask[2][:32].all() and not mask[2][32:].any()
    picked = Sampler()(logits, batch).token_ids.tolist()
    assert picked[0] in allowed and picked[1] == 69 and picked[2] < 32
