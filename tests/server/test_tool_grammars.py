"""Tool-call grammars against their parsers: a random "model" that samples any token the grammar
allows (and is made to write the opening marker in lazy grammars) always ends with calls that
parse, name a tool and validate against its schema."""

from __future__ import annotations

import copy
import json
import random

import jsonschema
import numpy as np
import pytest

from purellm.engine.structured import Grammars
from purellm.server.tool_grammars import tool_call_constraint
from purellm.server.tool_parsers import parse_tool_calls
from tests.checkpoints import tokenizer


def _strict(properties: dict, optional: tuple[str, ...] = ()) -> dict:
    required = [k for k in properties if k not in optional]
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}  # fmt: skip


def _tool(name: str, parameters: dict, strict: bool = True) -> dict:
    return {"type": "function",
            "function": {"name": name, "strict": strict, "parameters": parameters}}  # fmt: skip


NULLABLE = {"type": ["string", "null"]}
TOOLS = [  # shaped like Roo Code's strict tools
    _tool("read_file", _strict({"path": {"type": "string"}, "mode": {"enum": ["a", "b"]}})),
    _tool(
        "write_to_file",
        _strict(
            {
                "path": {"type": "string"},
                "content": {"type": "string"},
                "line_count": {"type": "integer", "minimum": 0, "maximum": 99},
            }
        ),
    ),  # fmt: skip
    _tool(
        "execute_command",
        _strict(
            {"command": {"type": "string"}, "cwd": NULLABLE, "wait": {"type": "boolean"}},
            optional=("wait",),
        ),
    ),  # fmt: skip
    _tool(
        "follow_up",
        _strict(
            {
                "options": {
                    "type": "array",
                    "maxItems": 2,
                    "items": _strict({"text": {"type": "string"}, "n": {"type": "number"}}),
                }
            }
        ),
    ),  # fmt: skip
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
TRIGGERS = {"hermes": "<tool_call>", "qwen3_coder": "<tool_call>", "llama3_json": "{"}


@pytest.fixture(scope="module")
def grammars():
    tok = tokenizer()
    return tok, Grammars(tok, len(tok), {tok.eos_token_id})


@pytest.fixture(scope="module")
def tag_token_grammars():
    """A tokenizer with `<tool_call>` and `</tool_call>` as tokens of their own, as Qwen's."""
    tok = copy.deepcopy(tokenizer())  # the shared one must stay as it is
    tok.add_tokens(["<tool_call>", "</tool_call>"])
    return tok, Grammars(tok, len(tok), {tok.eos_token_id})


def _allowed(matcher, vocab: int) -> list[int]:
    words = np.frombuffer(matcher.allowed_tokens(), dtype=np.uint32)
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab]
    return np.nonzero(bits)[0].tolist()


CLOSERS = ['"', "}", "]", "\n</parameter>\n", "</function>\n", "</tool_call>", "\n"]


def _walk(tok, matcher, rng: random.Random, trigger: str | None, after: int) -> str | None:
    """Random allowed tokens, now and then steered to close what is open, and made to write
    the trigger (after `after` tokens): the text, or None when it ran out of tokens before
    the grammar let it end."""
    eos, out = tok.eos_token_id, []
    forced, steer = tok.encode(trigger or "", add_special_tokens=False), []
    for step in range(400):
        allowed = _allowed(matcher, len(tok))
        if step >= after and forced and forced[0] in allowed:
            token = forced.pop(0)
        elif steer and steer[0] in allowed:
            token = steer.pop(0)
        elif allowed == [eos] or (eos in allowed and not forced and rng.random() < 0.3):
            return tok.decode(out)
        else:
            token = rng.choice([t for t in allowed if t != eos])
            if rng.random() < 0.2:
                steer = tok.encode(rng.choice(CLOSERS), add_special_tokens=False)
        matcher.accept(token)
        out.append(token)
    return None


@pytest.mark.parametrize(
    "parser, tag_tokens",
    [("hermes", False), ("llama3_json", False), ("qwen3_coder", False), ("hermes", True),
     ("qwen3_coder", True)],
)  # fmt: skip
@pytest.mark.parametrize("lazy", [False, True])
def test_every_finished_output_is_valid_calls(request, parser, tag_tokens, lazy):
    tok, compiled = request.getfixturevalue("tag_token_grammars" if tag_tokens else "grammars")
    rng = random.Random(0)
    finished = 0
    for i in range(30):
        parallel = i % 3 != 0
        spec = tool_call_constraint(parser, TOOLS, parallel, lazy, marker_tokens=tag_tokens)
        trigger = TRIGGERS[parser] if lazy and i % 2 == 0 else None
        after = 0 if parser == "llama3_json" else 3  # its calls are the whole message
        text = _walk(tok, compiled.matchers(spec, 1)[0], rng, trigger, after)
        if text is None:
            continue
        finished += 1
        _, calls = parse_tool_calls(parser, text, TOOLS)
        assert calls or (lazy and trigger is None), text
        assert parallel or len(calls) <= 1 or lazy, text
        for call in calls:
            jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    assert finished >= 8


def test_lazy_grammar_leaves_text_free_until_the_marker(grammars):
    tok, compiled = grammars
    matcher = compiled.matchers(tool_call_constraint("hermes", TOOLS, True, lazy=True), 1)[0]
    special = {i for i, added in tok.added_tokens_decoder.items() if added.special}
    text = {t for t in range(len(tok)) if "\ufffd" not in tok.decode([t]) and t not in special}
    assert text | {tok.eos_token_id} <= set(_allowed(matcher, len(tok)))  # any text, or the end
    for token in tok.encode("Let me look. <tool_call>", add_special_tokens=False):
        matcher.accept(token)
    assert [tok.decode([t]) for t in _allowed(matcher, len(tok))] == ["\n"]


@pytest.mark.parametrize("lazy", [False, True])
def test_tag_tokens_are_what_the_grammar_asks_for(tag_token_grammars, lazy):
    """The model writes its own `<tool_call>` and `</tool_call>` tokens, as trained; with
    the tags quoted as text, llguidance would only take them spelled out in pieces."""
    tok, compiled = tag_token_grammars
    opening, closing = tok.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    spec = tool_call_constraint("hermes", TOOLS, True, lazy, marker_tokens=True)
    matcher = compiled.matchers(spec, 1)[0]
    for token in tok.encode("Let me look. " if lazy else "", add_special_tokens=False):
        matcher.accept(token)
    assert opening in _allowed(matcher, len(tok))
    call = '\n{"name": "read_file", "arguments": {"path": "a", "mode": "b"}}\n'
    for token in [opening, *tok.encode(call, add_special_tokens=False)]:
        matcher.accept(token)
    assert _allowed(matcher, len(tok)) == [closing]
    matcher.accept(closing)
    assert not matcher._inner.is_error()


def test_a_non_strict_tool_takes_any_arguments_in_a_lazy_grammar():
    loose = [_tool("f", _strict({"a": {"type": "integer"}}), strict=False), TOOLS[0]]
    grammar = tool_call_constraint("hermes", loose, True, lazy=True).grammar
    assert '"arguments": {"type": "object"}' in grammar and '"mode"' in grammar
    forced = tool_call_constraint("hermes", loose, True).grammar
    assert '"a": {"type": "integer"}' in forced  # forced calls follow every tool's schema
