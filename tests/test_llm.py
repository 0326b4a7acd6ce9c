"""The offline API end to end: sampling features, limits, refusals, GGUF = HF folder, and the
real default model."""

import pytest
import torch

from purellm import LLM, SamplingParams
from tests.checkpoints import _hf_model, tokenizer, write_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"), "llama-untied-gqa")


@pytest.fixture(scope="module")
def llm(folder):
    return LLM(str(folder), dtype="float32", device="cpu", kv_cache_memory=8 << 20)


def _ids(text):
    return {"prompt_token_ids": tokenizer().encode(text)}


def _tokens(out):
    return [o.token_ids for o in out.outputs]


def test_seeded_sampling_is_reproducible_whatever_the_batch(llm):
    seeded = SamplingParams(temperature=1.0, seed=123, max_tokens=10, ignore_eos=True)
    other = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=7, ignore_eos=True)
    alone = llm.generate(_ids("The quick brown fox"), seeded)[0]
    mixed = llm.generate(
        [_ids("def fib(n):"), _ids("The quick brown fox"), _ids("Paged")], [other, seeded, other]
    )
    assert _tokens(mixed[1]) == _tokens(alone)


def test_n_choices_differ_and_are_complete(llm):
    params = SamplingParams(n=4, temperature=1.5, seed=1, max_tokens=8, ignore_eos=True)
    out = llm.generate(_ids("The quick"), params)[0]
    assert [o.index for o in out.outputs] == [0, 1, 2, 3]
    assert all(len(t) == 8 for t in _tokens(out))
    assert len({tuple(t) for t in _tokens(out)}) > 1


def test_max_tokens_gives_length_and_stop_token_gives_stop(llm):
    greedy = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    first = llm.generate(_ids("The quick brown fox"), greedy)[0].outputs[0]
    assert first.finish_reason == "length" and len(first.token_ids) == 6
    stop_at = first.token_ids[3]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, stop_token_ids=[stop_at])
    out = llm.generate(_ids("The quick brown fox"), params)[0].outputs[0]
    cut = first.token_ids.index(stop_at) + 1
    assert out.token_ids == first.token_ids[:cut]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop_at)


def test_stop_string_is_cut_from_the_text(llm):
    greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    full = llm.generate(_ids("def fib(n):"), greedy)[0].outputs[0].text
    stop = full[3:6]
    if not stop.strip():
        pytest.skip("the random model's text has no usable stop string")
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=[stop])
    out = llm.generate(_ids("def fib(n):"), params)[0].outputs[0]
    assert out.text == full[: full.index(stop)]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop)


def test_min_tokens_holds_back_eos(llm, folder):
    eos = tokenizer().eos_token_id
    params = SamplingParams(temperature=0, max_tokens=5, min_tokens=5, stop_token_ids=[eos])
    out = llm.generate(_ids("The quick"), params)[0].outputs[0]
    assert len(out.token_ids) == 5 and eos not in out.token_ids


def test_logprobs_match_transformers(llm, folder):
    prompt = tokenizer().encode("The quick brown fox")
    params = SamplingParams(temperature=0, max_tokens=1, logprobs=3, ignore_eos=True)
    out = llm.generate({"prompt_token_ids": prompt}, params)[0].outputs[0]
    with torch.no_grad():
        logits = _hf_model(str(folder))(torch.tensor([prompt])).logits[0, -1]
    expected = torch.log_softmax(logits, -1).topk(3)
    lp = out.logprobs[0]
    assert lp.token_id == expected.indices[0].item()
    assert [t for t, _ in lp.top] == expected.indices.tolist()
    assert [v for _, v in lp.top] == pytest.approx(expected.values.tolist(), abs=1e-4)
    assert out.cumulative_logprob == pytest.approx(lp.logprob)


def test_refusals_leave_the_engine_usable(llm):
    with pytest.raises(ValueError, match="context"):
        llm.generate({"prompt_token_ids": [5] * 300}, SamplingParams(max_tokens=1))
    with pytest.raises(ValueError, match="token ids"):
        llm.generate({"prompt_token_ids": [10**7]}, SamplingParams(max_tokens=1))
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    out = llm.generate(_ids("fox"), SamplingParams(max_tokens=2, temperature=0))[0]
    assert out.finished
    assert not llm.engine.requests
    bm = llm.engine.block_manager
    bm.check_integrity([])


def test_max_tokens_none_runs_to_the_context_limit(folder):
    small = LLM(
        str(folder), dtype="float32", device="cpu", kv_cache_memory=1 << 20, max_model_len=24
    )
    prompt = tokenizer().encode("The quick brown fox")
    params = SamplingParams(temperature=0, max_tokens=None, ignore_eos=True)
    out = small.generate({"prompt_token_ids": prompt}, params)[0].outputs[0]
    assert len(prompt) + len(out.token_ids) == 24 and out.finish_reason == "length"


def test_gguf_and_hf_folder_decode_identically(folder, tmp_path):
    from tests.loaders.test_gguf import LLAMA_META, hf_to_gguf, write_gguf

    reference = _hf_model(str(folder))
    cfg = reference.config
    meta = LLAMA_META | {"attention.layer_norm_rms_epsilon": cfg.rms_norm_eps}
    path = write_gguf(tmp_path / "m.gguf", "llama", meta, hf_to_gguf(reference, "llama"))
    prompt = {"prompt_token_ids": [1, 5, 70, 200, 259, 3]}
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    outs = [
        LLM(str(p), dtype="float32", device="cpu", kv_cache_memory=1 << 20).generate(prompt, params)
        for p in (folder, path)
    ]
    assert _tokens(outs[0][0]) == _tokens(outs[1][0])


@pytest.mark.slow
def test_default_model_knows_the_capital_of_france():
    llm = LLM(kv_cache_memory=64 << 20)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    out = llm.chat(question, SamplingParams(temperature=0, max_tokens=32))[0].outputs[0]
    assert "Paris" in out.text
    assert out.finish_reason == "stop"


def test_a_refused_prompt_in_a_batch_leaves_nothing_queued(llm):
    with pytest.raises(ValueError):
        llm.generate([_ids("fox"), {"prompt_token_ids": [10**7]}], SamplingParams(max_tokens=2))
    assert not llm.engine.requests and not llm.engine.scheduler.has_work()


def test_n_beyond_max_n_and_seeds_beyond_64_bits_are_refused_whole(llm):
    with pytest.raises(ValueError, match="n must be at most 16"):
        llm.generate(_ids("Hello"), SamplingParams(n=17))
    with pytest.raises(ValueError, match="seed must be in"):
        SamplingParams(n=2, seed=2**63 - 1)
    SamplingParams(n=2, seed=2**63 - 2)  # the last seed that fits both choices
    engine = llm.engine
    assert not engine.has_unfinished_requests() and not engine.requests and not engine.tracked
