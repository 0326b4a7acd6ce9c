"""Tool-call parsers: non-streaming results, and streaming that gives the same in any chunking."""

import json
import random
import re

import pytest

from purellm.server.json_tool_parsers import HermesToolParser, Llama3JsonToolParser
from purellm.server.tool_parsers import get_tool_parser, parse_tool_calls, tool_parser_for_model


def chunkings(text: str):
    """The text whole, 1 and 3 characters at a time, and in token-like random pieces."""
    yield [text]
    yield list(text)
    yield [text[i : i + 3] for i in range(0, len(text), 3)]
    rng = random.Random(0)
    for _ in range(4):
        pieces, i = [], 0
        while i < len(text):
            n = rng.choice([1, 1, 2, 3, 4, 5, 8])
            pieces.append(text[i : i + n])
            i += n
        yield pieces


def stream(name: str, chunks: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """Feed the chunks; check the fragments' shape; return (content, [(name, arguments)])."""
    parser = get_tool_parser(name)()
    deltas = [parser.feed(chunk) for chunk in chunks] + [parser.finish()]
    calls: dict[int, list] = {}
    for fragment in (f for d in deltas for f in d.tool_calls):
        if fragment.index not in calls:
            assert fragment.id and fragment.name and fragment.arguments == ""  # name first
            calls[fragment.index] = [fragment.id, fragment.name, ""]
        else:
            assert fragment.id is None and fragment.name is None
            calls[fragment.index][2] += fragment.arguments
    assert list(calls) == list(range(len(calls)))
    assert [list(vars(c).values()) for c in parser.calls] == list(calls.values())
    return "".join(d.content for d in deltas), [(n, a) for _, n, a in calls.values()]


def check(name: str, text: str, content: str, calls: list[tuple[str, dict | str]]) -> None:
    """parse_tool_calls gives content and calls (arguments as a dict, or the exact text), and
    every chunking streams exactly that."""
    got_content, got_calls = parse_tool_calls(name, text)
    assert got_content == content
    expected = [
        (n, a if isinstance(a, str) else json.dumps(a, ensure_ascii=False)) for n, a in calls
    ]
    assert [(c.name, c.arguments) for c in got_calls] == expected
    for chunks in chunkings(text):
        assert stream(name, chunks) == (content, expected), chunks


def hermes(name: str, args: dict | str) -> str:
    args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


TRICKY = {
    "code": 'if x: {y}}\n</tool_call> "quoted" \\ back\\slash',
    "text": "héllo wörld 🌍 日本語",
    "nested": {"list": [1, 2.5, {"b": "}"}], "empty": {}, "none": None, "yes": True},
}


def test_hermes_single_call_with_text_before():
    text = "Let me check the weather.\n\n" + hermes("get_weather", {"city": "Paris"})
    check("hermes", text, "Let me check the weather.", [("get_weather", {"city": "Paris"})])


def test_hermes_parallel_calls():
    text = hermes("a", {"x": 1}) + "\n" + hermes("b", {"y": [1, 2]})
    check("qwen", text, "", [("a", {"x": 1}), ("b", {"y": [1, 2]})])


def test_hermes_tricky_arguments():
    check("hermes", "Ok." + hermes("run", TRICKY) + "\n", "Ok.", [("run", TRICKY)])


def test_hermes_streamed_arguments_are_the_models_text_others_normalized_json():
    raw = '<tool_call>{"name":"f","arguments":{"a":1,"s":"\\u00e9\\n"}}</tool_call>'
    check("hermes", raw, "", [("f", '{"a":1,"s":"\\u00e9\\n"}')])
    reordered = '<tool_call>{"arguments": {"a":1}, "name": "f"}</tool_call>'
    check("hermes", reordered, "", [("f", {"a": 1})])
    encoded = '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'
    check("hermes", encoded, "", [("f", {"a": 1})])
    check("hermes", '<tool_call>{"name": "f"}</tool_call>', "", [("f", {})])


@pytest.mark.parametrize(
    "bad",
    [
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "f", "arguments": [1]}\n</tool_call>',
        '<tool_call>\n{"name": "f", "arguments": "{"}\n</tool_call>',
        '<tool_call>\n{"name": "f" "arguments": {}}\n</tool_call>',
    ],
)
def test_hermes_malformed_call_is_content(bad):
    check("hermes", "Hi " + bad, "Hi " + bad, [])
    # a good call after a malformed one is still a call, with index 0
    check("hermes", bad + hermes("g", {}), bad, [("g", {})])


@pytest.mark.parametrize(
    "text, arguments",
    [
        (hermes("f", '{"a": 1,}'), '{"a": 1,}'),
        (hermes("f", '{"a": NaN}'), '{"a": NaN}'),
        ('<tool_call>{"name": "f", "arguments": {"a": 1</tool_call>', '{"a": 1'),
        ('<tool_call>{"name": "f", "arguments": {"a": "b}}</tool_call>', '{"a": "b}}</tool_call>'),
        ('<tool_call>\n{"name": "f", "arguments": {"a": "b', '{"a": "b'),
    ],
)
def test_hermes_call_whose_arguments_break_after_they_started_stands(text, arguments):
    """Its name and the start of its arguments were streamed: the call stands, with what the
    model wrote, streamed or not (a strict tool's grammar is what keeps arguments valid)."""
    check("hermes", "Sure. " + text, "Sure.", [("f", arguments)])


def test_hermes_unclosed_but_complete_call_is_a_call():
    check("hermes", '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n', "", [("f", {"a": 1})])


def test_hermes_no_calls():
    text = "  Plain answer: 1 < 2, <tool is fine, so is <tool_call> in prose.\n"
    check("hermes", text, text.strip(), [])
    check("hermes", "", "", [])


def test_hermes_holds_back_partial_tag():
    parser = HermesToolParser()
    assert parser.feed("Sure <tool_").content == "Sure"
    assert parser.feed("ca").content == ""
    assert parser.feed("ll>\n{").content == ""
    assert parser.feed('"name": "f", "argum').tool_calls == []
    delta = parser.feed('ents": {"a": ')
    assert [(f.index, f.name, f.arguments) for f in delta.tool_calls] == [
        (0, "f", ""),
        (0, None, '{"a": '),
    ]
    assert [f.arguments for f in parser.feed('"x"}').tool_calls] == ['"x"}']
    assert parser.feed("}\n</tool_call> after").content == "  after"  # "Sure " held a space
    parser = HermesToolParser()
    assert parser.feed("a <tool_cal").content == "a"
    assert parser.finish().content == " <tool_cal"


def llama(name: str, args: dict, key: str = "parameters") -> str:
    return json.dumps({"name": name, key: args}, ensure_ascii=False)


def test_llama_single_call():
    check(
        "llama3_json",
        llama("get_weather", {"city": "Oslo"}),
        "",
        [("get_weather", {"city": "Oslo"})],
    )
    tagged = "<|python_tag|>" + llama("f", TRICKY, "arguments")
    check("llama", tagged, "", [("f", TRICKY)])


def test_llama_parallel_calls():
    text = "<|python_tag|>" + llama("a", {"x": 1}) + "; " + llama("b", {"y": "}"}) + ";\n"
    check("llama3_json", text, "", [("a", {"x": 1}), ("b", {"y": "}"})])


def test_llama_plain_content_streams_at_once():
    check("llama3_json", "  The answer is {42}.\n", "The answer is {42}.", [])
    parser = Llama3JsonToolParser()
    assert parser.feed("Hel").content == "Hel"
    assert parser.feed("lo").content == "lo"
    parser = Llama3JsonToolParser()
    assert parser.feed("<|python").content == ""
    assert parser.feed(" no").content == "<|python no"


@pytest.mark.parametrize(
    "text",
    [
        '{"answer": 42}',
        '{"name": "Bob", "age": 3}',
        '{"name": 3, "parameters": {}}',
        "<|python_tag|>brave_search.call(query='x')",
    ],
)
def test_llama_not_a_call_is_content(text):
    check("llama3_json", text, text.strip(), [])


def test_llama_streamed_call_stands_when_its_arguments_break():
    check("llama3_json", '{"name": "f", "parameters": {"a": 1,}}', "", [("f", '{"a": 1,}')])
    check("llama3_json", '{"name": "f", "parameters": {"a": ', "", [("f", '{"a": ')])


def test_llama_text_after_a_call_is_content():
    check("llama", llama("f", {}) + "; then some text", "then some text", [("f", {})])


def test_call_ids():
    _, calls = parse_tool_calls("hermes", hermes("a", {}) + hermes("b", {}))
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", c.id) for c in calls)
    assert calls[0].id != calls[1].id


def test_get_tool_parser():
    assert get_tool_parser("qwen2_5") is HermesToolParser
    assert get_tool_parser("llama") is Llama3JsonToolParser
    with pytest.raises(ValueError, match="hermes.*llama3_json"):
        get_tool_parser("mistral")


def test_tool_parser_for_model():
    assert tool_parser_for_model("qwen2", None) == "hermes"
    assert tool_parser_for_model("qwen3_moe", "") == "hermes"
    assert tool_parser_for_model("mistral", "... <tool_call> ...") == "hermes"
    assert tool_parser_for_model("llama", "{%- if tools %} ipython") == "llama3_json"
    assert tool_parser_for_model("llama", "{{ messages }}") is None
    assert tool_parser_for_model("gemma3", None) is None


PIECES = ["<tool_call>", "</tool_call>", "<tool", "<|python_tag|>", "{", "}", "[", '"', "\\", ":"]
PIECES += [",", ";", " ", "\n", "<", "a", "é", '"name": "f"', '"arguments": {}', '{"name": "g"}']


@pytest.mark.parametrize("name", ["hermes", "llama3_json"])
def test_random_texts_stream_like_they_parse(name):
    rng = random.Random(1)
    for _ in range(150):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 25)))
        content, calls = parse_tool_calls(name, text)
        expected = (content, [(c.name, c.arguments) for c in calls])
        for chunks in list(chunkings(text))[1:4]:
            assert stream(name, chunks) == expected, chunks
