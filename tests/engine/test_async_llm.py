"""AsyncLLM: concurrent streams, aborts that free blocks, refused requests, off-loop compute."""

import asyncio

import pytest

from purellm.config import EngineConfig
from purellm.engine.async_llm import AsyncLLM
from purellm.sampling_params import SamplingParams
from tests.checkpoints import tokenizer, write_checkpoint


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = write_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen2")
    config = EngineConfig(str(folder), dtype="float32", device="cpu", kv_cache_memory=4 << 20)
    llm = AsyncLLM(config)
    yield llm
    llm.shutdown()


def _ids(text: str) -> list[int]:
    return tokenizer().encode(text)


async def _collect(engine, request_id, ids, params):
    tokens = {}
    async for delta in engine.generate(request_id, ids, params):
        tokens.setdefault(delta.index, []).extend(delta.token_ids)
    return tokens


def test_concurrent_streams_match_sequential(engine):
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    prompts = ["The quick brown fox", "def fib(n):", "Paged attention stores"]

    async def main():
        alone = [await _collect(engine, f"a{i}", _ids(p), params) for i, p in enumerate(prompts)]
        together = await asyncio.gather(
            *(_collect(engine, f"b{i}", _ids(p), params) for i, p in enumerate(prompts))
        )
        return alone, together

    alone, together = asyncio.run(main())
    assert alone == list(together)
    assert all(len(t[0]) == 8 for t in alone)


def test_leaving_a_stream_aborts_and_frees_blocks(engine):
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main():
        stream = engine.generate("leaver", _ids("The quick brown fox"), params)
        async for _ in stream:
            break
        await stream.aclose()
        for _ in range(200):
            if not engine.engine.requests:
                break
            await asyncio.sleep(0.01)

    asyncio.run(main())
    bm = engine.engine.block_manager
    assert not engine.engine.requests
    assert bm.num_free_blocks == bm.num_blocks
    bm.check_integrity([])


def test_refused_request_raises_and_engine_keeps_serving(engine):
    async def main():
        with pytest.raises(ValueError):
            await _collect(engine, "bad", [10**9], SamplingParams(max_tokens=2))
        return await _collect(engine, "good", _ids("fox"), SamplingParams(max_tokens=2))

    assert len(asyncio.run(main())[0]) <= 2
    assert not engine.is_dead


def test_n_choices_stream_with_their_index(engine):
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=5, ignore_eos=True)
    tokens = asyncio.run(_collect(engine, "n3", _ids("The quick"), params))
    assert sorted(tokens) == [0, 1, 2] and all(len(t) == 5 for t in tokens.values())
