"""Tools and reasoning. A random model never writes a tool call, so the response builders are
driven with model-format text as real DeltaOutputs (deterministic), and the server is checked
end to end for what it can show: Roo Code's request shape, tools and tool history reaching the
chat template."""

from __future__ import annotations

import asyncio
import json

from purellm.outputs import DeltaOutput
from purellm.sampling_params import SamplingParams
from purellm.server.protocol import ChatCompletionRequest
from purellm.server.serving_chat import ChatJob, full_chat, stream_chat
from tests.server.conftest import CONTEXT, MODEL
from tests.server.remote import sse_events

CALL_TEXT = (
    'Let me look.\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a.py"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "list_files", "arguments": {"path": "."}}\n</tool_call>'
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "strict": True,
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
                "additionalProperties": False,
            },
        },
    }
]


def _job(
    parallel=True, reasoning=False, starts_in_reasoning=False, n=1, parser="hermes", tools=None
) -> ChatJob:
    request = ChatCompletionRequest(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        parallel_tool_calls=parallel,
        stream_options={"include_usage": True},
    )
    return ChatJob(
        request=request,
        request_id="chatcmpl-test",
        model=MODEL,
        prompt="",
        prompt_token_ids=[1, 2, 3],
        params=SamplingParams(n=n, max_tokens=None),
        tool_parser=parser,
        tools=tools,
        starts_in_reasoning=starts_in_reasoning,
        parse_reasoning=reasoning,
        created=0,
    )


async def _deltas(text: str, size: int = 3):
    """The text as the engine would stream it: a few characters per step, then finished."""
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        yield DeltaOutput("r", 0, [7], piece, finish_reason="stop" if last else None)


def _full(text: str, **job) -> dict:
    response = asyncio.run(full_chat(None, _job(**job), _deltas(text)))
    return json.loads(response.body)


def _stream(text: str, **job) -> list:
    async def collect():
        return [chunk async for chunk in stream_chat(None, _job(**job), _deltas(text))]

    events = []
    for chunk in asyncio.run(collect()):
        payload = chunk.removeprefix("data: ").strip()
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_full_response_parses_tool_calls():
    body = _full(CALL_TEXT)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["read_file", "list_files"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"path": "a.py"}
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)


def test_parallel_tool_calls_false_keeps_the_first():
    calls = _full(CALL_TEXT, parallel=False)["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["read_file"]


def test_stream_tool_call_deltas_add_up():
    events = _stream(CALL_TEXT)
    assert events[-1] == "[DONE]" and events[-2]["choices"] == []
    chunks = [e["choices"][0] for e in events[:-2]]
    assert chunks[0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(c["delta"].get("content") or "" for c in chunks)
    assert content == "Let me look."
    calls: dict[int, dict] = {}
    for c in chunks:
        for d in c["delta"].get("tool_calls", []):
            call = calls.setdefault(d["index"], {"id": None, "name": "", "arguments": ""})
            call["id"] = d.get("id") or call["id"]
            call["name"] += d.get("function", {}).get("name") or ""
            call["arguments"] += d.get("function", {}).get("arguments") or ""
    assert [calls[i]["name"] for i in sorted(calls)] == ["read_file", "list_files"]
    assert json.loads(calls[1]["arguments"]) == {"path": "."}
    assert all(call["id"] for call in calls.values())
    assert chunks[-1]["finish_reason"] == "tool_calls"


def test_reasoning_split_full_and_stream():
    text = "<think>\nThe user greets me.\n</think>\n\nHello there!"
    message = _full(text, reasoning=True)["choices"][0]["message"]
    assert message["reasoning_content"] == "The user greets me."
    assert message["content"] == "Hello there!"
    chunks = [e["choices"][0]["delta"] for e in _stream(text, reasoning=True)[:-2]]
    assert "".join(d.get("reasoning_content") or "" for d in chunks) == "The user greets me."
    assert "".join(d.get("content") or "" for d in chunks) == "Hello there!"


def test_reasoning_opened_by_the_template():
    message = _full("plan</think>answer", reasoning=True, starts_in_reasoning=True)
    assert message["choices"][0]["message"]["reasoning_content"] == "plan"
    assert message["choices"][0]["message"]["content"] == "answer"


def test_plain_text_with_a_tool_parser_stays_content():
    body = _full("Just an answer, no tools.")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["message"]["content"] == "Just an answer, no tools."
    assert body["choices"][0]["message"]["tool_calls"] == []


def test_tools_and_tool_history_reach_the_template(server):
    messages = [
        {"role": "system", "content": "You are Roo."},
        {"role": "user", "content": "Read a.py"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "a.py"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "print(1)"},
    ]
    ids = server.post("/tokenize", {"messages": messages, "tools": TOOLS}).json()["tokens"]
    prompt = server.post("/detokenize", {"tokens": ids}).json()["prompt"]
    assert '"strict": true' in prompt and '"name": "read_file"' in prompt
    assert '"arguments": {"path": "a.py"}' in prompt  # a JSON object, not a quoted string
    assert "<tool_response>\nprint(1)\n</tool_response>" in prompt


def test_roo_code_shaped_stream(server):
    body = {
        "model": MODEL,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "You are Roo."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "max_completion_tokens": -1,
    }
    import httpx

    with httpx.stream(
        "POST", server.url("/v1/chat/completions"), json=body, headers=server.headers, timeout=60
    ) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    assert events[-2]["choices"] == [] and usage["prompt_tokens"] > 0
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= CONTEXT
    reasons = [e["choices"][0].get("finish_reason") for e in events[:-2]]
    assert reasons[-1] in ("stop", "length", "tool_calls")


def test_named_tool_choice_and_none(server):
    client = server.client()
    named = {"type": "function", "function": {"name": "read_file"}}
    for choice in ("none", "required", named):
        out = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Read a.py"}],
            tools=TOOLS,
            tool_choice=choice,
            max_tokens=4,
        )
        assert out.choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_qwen3_coder_calls_are_typed_by_the_request_tools():
    from tests.server.test_qwen3_coder_parser import TOOLS, call

    text = "Writing.\n" + call("write_to_file", path="a.py", line_count="7", overwrite="false")
    body = _full(text, parser="qwen3_coder", tools=TOOLS)
    calls = body["choices"][0]["message"]["tool_calls"]
    arguments = {"path": "a.py", "line_count": 7, "overwrite": False}
    assert json.loads(calls[0]["function"]["arguments"]) == arguments
    assert body["choices"][0]["message"]["content"] == "Writing."
    chunks = [e["choices"][0] for e in _stream(text, parser="qwen3_coder", tools=TOOLS)[:-2]]
    streamed = "".join(
        d.get("function", {}).get("arguments") or ""
        for c in chunks
        for d in c["delta"].get("tool_calls", [])
    )
    assert json.loads(streamed) == arguments and chunks[-1]["finish_reason"] == "tool_calls"
