"""Greedy decoding matches transformers token for token, float32, for every architecture and
config variant, alone, batched, chunked, from the prefix cache and under preemption."""

import pytest

from purellm import LLM, SamplingParams
from purellm.runner import inputs
from tests.checkpoints import ARCHITECTURES, hf_greedy, tokenizer, write_checkpoint

PROMPTS = [
    "The quick brown fox",
    "def fib(n):\n    return",
    "What is the capital of France? The capital of France is Paris. Paged attention stores keys",
]
NEW_TOKENS = 12


def _llm(folder, **kwargs) -> LLM:
    options = dict(dtype="float32", device="cpu", kv_cache_memory=4 << 20)
    options.update(kwargs)
    return LLM(str(folder), **options)


def _greedy(n: int = NEW_TOKENS) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def checkpoint(request, tmp_path_factory):
    folder = write_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    ids = [tokenizer().encode(p) for p in PROMPTS]
    return folder, ids, [hf_greedy(folder, i, NEW_TOKENS) for i in ids]


def test_single_and_batched_prompts_match_transformers(checkpoint):
    folder, ids, expected = checkpoint
    llm = _llm(folder)
    alone = [llm.generate({"prompt_token_ids": i}, _greedy())[0].outputs[0].token_ids for i in ids]
    assert alone == expected
    batched = llm.generate([{"prompt_token_ids": i} for i in ids], _greedy())
    assert [o.outputs[0].token_ids for o in batched] == expected


def test_chunked_prefill_matches_transformers(checkpoint):
    folder, ids, expected = checkpoint
    llm = _llm(folder, max_num_batched_tokens=5)
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], _greedy())
    assert [o.outputs[0].token_ids for o in outs] == expected


def test_prefix_cache_hit_matches_transformers(checkpoint):
    folder, ids, expected = checkpoint
    llm = _llm(folder, block_size=4)
    first = llm.generate({"prompt_token_ids": ids[2]}, _greedy())[0]
    again = llm.generate({"prompt_token_ids": ids[2]}, _greedy())[0]
    assert first.num_cached_tokens == 0
    assert again.num_cached_tokens >= 4 * ((len(ids[2]) - 1) // 4)
    assert again.outputs[0].token_ids == first.outputs[0].token_ids == expected[2]


def test_preemption_keeps_output_identical(checkpoint):
    folder, ids, expected = checkpoint
    probe = _llm(folder, block_size=4)
    per_block = probe.engine.runner.num_blocks and (4 << 20) // probe.engine.runner.num_blocks
    # room for about one and a half sequences, so a batch of six must preempt
    llm = _llm(folder, block_size=4, kv_cache_memory=per_block * 24, max_model_len=64)
    outs = llm.generate([{"prompt_token_ids": i} for i in ids] * 2, _greedy())
    assert llm.engine.scheduler.num_preemptions > 0
    assert [o.outputs[0].token_ids for o in outs] == expected * 2
    llm.engine.block_manager.check_integrity([])


def test_decodes_split_by_context_length_match_transformers(checkpoint, monkeypatch):
    """A group for every distinct context width: the split long and short sequences that
    decode together get."""
    monkeypatch.setattr(inputs, "GROUP_COST_TOKENS", {"cpu": 0, "gpu": 0})
    folder, ids, expected = checkpoint
    llm = _llm(folder, block_size=4)
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], _greedy())
    assert [o.outputs[0].token_ids for o in outs] == expected


def test_decodes_cut_to_the_cache_budget_match_transformers(checkpoint, monkeypatch):
    """One decode group by length, cut into parts of at most 24 keys (a CPU's cache budget,
    made tiny): groups of one to a few sequences of different widths."""
    monkeypatch.setattr(inputs, "GROUP_COST_TOKENS", {"cpu": 1 << 40, "gpu": 1 << 40})
    folder, ids, expected = checkpoint
    llm = _llm(folder, block_size=4)
    llm.engine.runner.max_group_keys = 24
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], _greedy())
    assert [o.outputs[0].token_ids for o in outs] == expected


@pytest.mark.parametrize("backend", ["matmul", "hybrid"])
def test_other_attention_backends_match_transformers(checkpoint, backend):
    folder, ids, expected = checkpoint
    llm = _llm(folder, attention_backend=backend, max_num_batched_tokens=7)
    outs = llm.generate([{"prompt_token_ids": i} for i in ids], _greedy())
    assert [o.outputs[0].token_ids for o in outs] == expected
