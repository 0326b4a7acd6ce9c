"""Property-based fuzzing of the completion endpoints: valid chat and completions bodies are
mutated (fields dropped, values of the wrong type, unknown fields, odd Unicode, non-objects).
No answer is a 5xx, every refusal has OpenAI's error shape, and the engine ends idle."""

from __future__ import annotations

import copy
import json
import time

import httpx
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from tests.server.conftest import MODEL

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
FUZZ = settings(
    derandomize=True,  # the same examples on every run: a fixed seed
    database=None,
    deadline=None,
    max_examples=100,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no explain phase: it is slow
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- values --------------------------------------------------------------------------------

ODD_TEXT = st.lists(
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2)  # lone
    | st.sampled_from(["\x00", "\u202e", "\ufeff", "\U0001f600", "\n", "{{", "{%", "}}"])
    | st.sampled_from(["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>"])
    | st.text(max_size=4),
    max_size=4,
).map("".join)
INTS = [-1, 0, 1, 16, 17, 20, 21, 300, 513, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 2**70]
FLOATS = [-2.5, -1e-30, 0.0, 1e-30, 2.5, 100.5, 1e308, float("nan"), float("inf"), float("-inf")]
"""Numbers at the edges of what the server checks (json.dumps writes NaN and Infinity)."""
EDGES = st.sampled_from(
    [None, True, False, *INTS, *FLOATS, "", "0", "-1", "nan", "inf", "1e999", "auto", "none",
     "required", "text", "function", "user", "assistant", "tool", "json_object", MODEL,
     "word " * 600]  # the last: longer than the context
)  # fmt: skip
"""Values of every JSON type at the edges of what the server checks."""
SCALARS = st.one_of(EDGES, EDGES, EDGES, st.integers(), st.floats(), ODD_TEXT)
WEIRD = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=4,
)
NUMBER_FIELDS = {
    **dict.fromkeys(["n", "top_k", "seed", "max_tokens", "max_completion_tokens", "min_tokens",
                     "top_logprobs", "logprobs", "best_of"], st.sampled_from(INTS)),
    **dict.fromkeys(["temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                     "frequency_penalty"], st.sampled_from(FLOATS)),
}  # fmt: skip
REQUEST_FIELDS = [
    *NUMBER_FIELDS, *NUMBER_FIELDS, "model", "messages", "prompt", "stop", "stop_token_ids",
    "stream", "stream_options", "logit_bias", "ignore_eos", "skip_special_tokens",
    "include_stop_str_in_output", "echo", "suffix", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "reasoning_effort", "add_generation_prompt", "continue_final_message",
    "chat_template_kwargs", "user",
]  # fmt: skip
"""The fields a mutation sets (the numeric ones twice as often)."""
INNER_FIELDS = [
    "role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content", "type",
    "text", "function", "arguments", "parameters", "id", "include_usage", "strict",
]  # fmt: skip
"""The names an added field takes (known ones reach deeper than unknown ones)."""

# --- valid bodies --------------------------------------------------------------------------

TEXT = st.sampled_from(["Hi", "What is the capital of France?", "def fib(n):", "", "ok"])
TOOL = st.builds(
    lambda name: {
        "type": "function",
        "function": {
            "name": name,
            "description": "Look something up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    },
    st.sampled_from(["lookup", "get_weather"]),
)
TEXT_PART = st.builds(lambda text: {"type": "text", "text": text}, TEXT)
TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"q": "x"}'}}  # fmt: skip
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": TEXT}),
    st.fixed_dictionaries(
        {"role": st.just("user"), "content": TEXT | st.lists(TEXT_PART, min_size=1, max_size=2)}
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": TEXT},
        optional={"tool_calls": st.just([TOOL_CALL])},
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "content": TEXT, "tool_call_id": st.just("call_1")}
    ),
)
SHARED = {
    "n": st.integers(1, 2),
    "temperature": st.sampled_from([0, 0.7, 1.0, 2.0]),
    "top_p": st.sampled_from([0.5, 1.0]),
    "top_k": st.sampled_from([-1, 0, 1, 5]),
    "min_p": st.sampled_from([0.0, 0.1]),
    "repetition_penalty": st.sampled_from([1.0, 1.2]),
    "presence_penalty": st.sampled_from([-1.0, 0.5]),
    "frequency_penalty": st.sampled_from([0.0, 2.0]),
    "seed": st.integers(0, 2**32),
    "stop": st.sampled_from(["\n", ["the", "."], []]),
    "stop_token_ids": st.lists(st.integers(0, 299), max_size=2),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "logit_bias": st.dictionaries(st.integers(0, 299).map(str), st.floats(-100, 100), max_size=2),
    "ignore_eos": st.booleans(),
    "min_tokens": st.integers(0, 2),
    "user": st.just("fuzzer"),
}
CHAT_BODY = st.fixed_dictionaries(
    {
        "model": st.sampled_from([MODEL, "tiny-alias"]),
        "messages": st.lists(MESSAGE, min_size=1, max_size=3),
        "max_tokens": st.integers(1, 4),
        "stream": st.booleans(),
    },
    optional={
        **SHARED,
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 5),
        "tools": st.lists(TOOL, min_size=1, max_size=2),
        "tool_choice": st.sampled_from(
            ["none", "auto", "required", {"type": "function", "function": {"name": "lookup"}}]
        ),
        "parallel_tool_calls": st.booleans(),
        "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
        "add_generation_prompt": st.booleans(),
        "continue_final_message": st.booleans(),
        "chat_template_kwargs": st.just({"enable_thinking": False}),
    },
)
TOKEN_IDS = st.lists(st.integers(0, 299), min_size=1, max_size=6)
COMPLETIONS_BODY = st.fixed_dictionaries(
    {
        "model": st.sampled_from([MODEL, "tiny-alias"]),
        "prompt": TEXT | TOKEN_IDS | st.lists(TEXT | TOKEN_IDS, min_size=1, max_size=2),
        "max_tokens": st.integers(1, 4),
        "stream": st.booleans(),
    },
    optional={**SHARED, "echo": st.booleans(), "logprobs": st.integers(0, 3)},
)

# --- mutations -----------------------------------------------------------------------------


def _paths(value, path=()):
    """Every place in a JSON value: tuples of keys and indices, the root () first."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _at(value, path):
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated(draw, bodies):
    """A valid body with up to three mutations: a top-level field set (known names, odd
    values), a value dropped or replaced anywhere, or a field added to a nested object."""
    body = copy.deepcopy(draw(bodies))  # st.just() and sampled_from() share their values
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "set", "drop", "replace", "add"]))
        places = list(_paths(body))[1:]
        if kind == "set" or not places:
            name = draw(st.sampled_from(REQUEST_FIELDS))
            body[name] = draw(NUMBER_FIELDS.get(name, WEIRD) | WEIRD)
            continue
        path = draw(st.sampled_from(places))
        parent = _at(body, path[:-1])
        if kind == "drop":
            del parent[path[-1]]
        elif kind == "replace":
            parent[path[-1]] = draw(WEIRD)
        else:  # add, to the object or list at the path, else to the one holding it
            target = parent[path[-1]]
            if not isinstance(target, dict | list):
                target = parent
            if isinstance(target, dict):
                target[draw(st.sampled_from(INNER_FIELDS) | ODD_TEXT)] = draw(WEIRD)
            else:
                target.append(draw(WEIRD))
    return body


# --- checks --------------------------------------------------------------------------------


def _send(server, path: str, content: bytes) -> tuple[httpx.Response, list | None]:
    """POST raw bytes; the response (read) and, for a stream, its `data:` payloads."""
    headers = {**server.headers, "Content-Type": "application/json"}
    with httpx.stream(
        "POST", server.url(path), content=content, headers=headers, timeout=60
    ) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            return response, None
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        return response, events


def _check(server, path: str, content: bytes) -> None:
    response, events = _send(server, path, content)
    status = response.status_code
    event(f"{'stream ' if events is not None else ''}{status}")
    assert status < 500, response.text
    if events is not None:
        assert status == 200
        assert events and events[-1] == "[DONE]", events
        for data in events[:-1]:
            chunk = json.loads(data)
            assert "error" not in chunk, f"an error inside a 200 stream: {data}"
            assert chunk["object"] in ("chat.completion.chunk", "text_completion"), data
    elif status == 200:
        assert response.json()["choices"], response.text
    else:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["code"] == status and error["message"], error
        assert isinstance(error["message"], str) and isinstance(error["type"], str), error
        assert error["param"] is None or isinstance(error["param"], str), error
    _assert_idle(server, timeout=10)


def _assert_idle(server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    names = ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc")
    while True:
        metrics = server.metrics()
        busy = {name: metrics[f"purellm:{name}"] for name in names if metrics[f"purellm:{name}"]}
        if not busy:
            return
        assert time.monotonic() < deadline, f"the engine is not idle: {busy}"
        time.sleep(0.05)


def _encode(body) -> bytes:
    """ASCII JSON: lone surrogates as "\\ud800" escapes (httpx's json= refuses them), nan and
    infinities as Python's NaN / Infinity extension."""
    return json.dumps(body).encode()


# --- tests ---------------------------------------------------------------------------------


HI = [{"role": "user", "content": "Hi"}]
# The @example bodies are ones the fuzzer found: a huge n (refused only after per-choice state
# was built, a list of n items), and limits the engine checks only after a stream has begun.


@FUZZ
@given(body=mutated(CHAT_BODY))
@example(body={"model": MODEL, "messages": HI, "n": 2**64})
@example(body={"model": MODEL, "messages": HI, "max_tokens": 2, "n": 17, "stream": True})
@example(body={"model": MODEL, "messages": HI, "logit_bias": {"300": 1}, "stream": True})
def test_fuzz_chat(server, body):
    _check(server, CHAT, _encode(body))


@FUZZ
@given(body=mutated(COMPLETIONS_BODY))
@example(body={"model": MODEL, "prompt": "Hi", "n": 2**64})
@example(body={"model": MODEL, "prompt": "Hi", "max_tokens": 2, "n": 17, "stream": True})
def test_fuzz_completions(server, body):
    _check(server, COMPLETIONS, _encode(body))


@settings(FUZZ, max_examples=40)
@given(
    path=st.sampled_from([CHAT, COMPLETIONS]),
    content=st.one_of(
        WEIRD.filter(lambda v: not isinstance(v, dict)).map(_encode),  # JSON, not an object
        st.tuples(CHAT_BODY.map(_encode), st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
        st.binary(max_size=20),
        st.just(b'{"model": "tiny", "prompt": "\xff\xfe", "max_tokens": 2}'),  # not UTF-8
    ),
)
def test_fuzz_bodies_that_are_not_json_objects(server, path, content):
    _check(server, path, content)


def test_the_engine_ends_idle(server):
    _assert_idle(server, timeout=30)
    assert httpx.get(server.url("/health"), timeout=10).status_code == 200
