"""Structured outputs in the engine: grammars from every kind of constraint, refusals with a
reason, and outputs that follow the constraint, alone, batched with free requests and n > 1."""

from __future__ import annotations

import json
import re

import pytest

from purellm import LLM, SamplingParams
from purellm.engine.structured import GrammarError, grammar_text
from purellm.sampling_params import StructuredOutputsParams as Spec
from tests.checkpoints import write_checkpoint

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                   "maximum": 9}, "tag": {"enum": ["red", "blue"]}},
    "required": ["ok", "n", "tag"],
    "additionalProperties": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    folder = write_checkpoint(tmp_path_factory.mktemp("ckpt"), "llama-untied-gqa")
    return LLM(str(folder), dtype="float32", device="cpu", kv_cache_memory=8 << 20)


def test_spec_takes_exactly_one_constraint():
    with pytest.raises(ValueError, match="exactly one"):
        Spec()
    with pytest.raises(ValueError, match="exactly one"):
        Spec(regex="a", choice=["b"])
    with pytest.raises(ValueError, match="non-empty"):
        Spec(choice=[])
    assert Spec(json_object=True).kind == "json_object" and Spec(json="{}").kind == "json"


@pytest.mark.parametrize(
    "spec, words",
    [
        (Spec(json="{not json"), "not valid JSON"),
        (Spec(json="[1, 2]"), "JSON object"),
        (Spec(regex="a" * 300_000), "at most"),
    ],
)
def test_grammar_text_refuses_with_a_reason(spec, words):
    with pytest.raises(GrammarError, match=words):
        grammar_text(spec)


@pytest.mark.parametrize(
    "spec, words",
    [
        (Spec(regex="(unclosed"), "regex"),
        (Spec(grammar="start: undefined_rule"), "grammar"),
        (Spec(json={"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}), "json"),
    ],
)
def test_engine_refuses_invalid_grammars_before_queueing(llm, spec, words):
    params = SamplingParams(max_tokens=4, structured_outputs=spec)
    with pytest.raises(GrammarError, match=words):
        llm.engine.check_request([1, 2, 3], params)
    with pytest.raises(ValueError, match=words):
        llm.generate([{"prompt_token_ids": [1, 2, 3]}], params)
    assert not llm.engine.has_unfinished_requests()


def test_outputs_follow_their_constraints_in_one_batch(llm):
    """A random model follows each constraint; the free request beside them is unchanged."""
    prompt = {"prompt_token_ids": [5, 6, 7, 8]}
    free = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    specs = [Spec(json=SCHEMA), Spec(regex=r"[0-9]{3}-[a-z]{2}"), Spec(choice=["yes", "no"]),
             Spec(grammar='start: "x" ("+" "x")*')]  # fmt: skip
    constrained = [
        SamplingParams(temperature=1.0, seed=7, n=2, max_tokens=60, structured_outputs=s)
        for s in specs
    ]
    alone = llm.generate([prompt], free)[0].outputs[0].token_ids
    outs = llm.generate([prompt] * (len(specs) + 1), [free, *constrained])
    assert outs[0].outputs[0].token_ids == alone
    for choice in outs[1].outputs:
        value = json.loads(choice.text)
        assert set(value) == {"ok", "n", "tag"} and value["tag"] in ("red", "blue")
        assert isinstance(value["ok"], bool) and 0 <= value["n"] <= 9
        assert choice.finish_reason == "stop"
    assert all(re.fullmatch(r"[0-9]{3}-[a-z]{2}", c.text) for c in outs[2].outputs)
    assert all(c.text in ("yes", "no") for c in outs[3].outputs)
    for choice in outs[4].outputs:  # may run to max_tokens: then a prefix of the language
        assert re.fullmatch(r"x(\+x)*\+?", choice.text), choice.text
