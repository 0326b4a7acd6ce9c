"""The qwen3_coder tool-call parser: complete and streamed calls, several calls, parameters of
every JSON type by the tool's schema, malformed output left as text."""

import json
import random

import pytest

from purellm.server.qwen3_coder_parser import convert
from purellm.server.tool_parsers import get_tool_parser, parse_tool_calls, tool_parser_for_model
from tests.server.test_tool_parsers import chunkings

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "write_to_file",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "content": {"type": "string"},
                    "line_count": {"type": "integer"},
                    "ratio": {"type": "number"},
                    "overwrite": {"type": "boolean"},
                    "options": {"type": "object"},
                    "tags": {"type": "array"},
                    "note": {"type": ["string", "null"]},
                },
            },
        },
    },
    {"type": "function", "function": {"name": "list_files", "parameters": {}}},
]


def call(name: str, **params: str) -> str:
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


def check(text: str, content: str, calls: list[tuple[str, dict | str]]) -> None:
    """Arguments as a dict, or the exact text."""
    got_content, got_calls = parse_tool_calls("qwen3_coder", text, TOOLS)
    expected = [
        (n, a if isinstance(a, str) else json.dumps(a, ensure_ascii=False)) for n, a in calls
    ]
    assert got_content == content
    assert [(c.name, c.arguments) for c in got_calls] == expected
    for chunks in chunkings(text):
        parser = get_tool_parser("qwen3_coder")(TOOLS)
        deltas = [parser.feed(chunk) for chunk in chunks] + [parser.finish()]
        streamed = {}
        for fragment in (f for d in deltas for f in d.tool_calls):
            entry = streamed.setdefault(fragment.index, [fragment.name, ""])
            entry[1] += fragment.arguments
        assert "".join(d.content for d in deltas) == content, chunks
        assert [tuple(v) for v in streamed.values()] == expected, chunks


def test_one_call_with_every_json_type():
    text = "I'll write it.\n\n" + call(
        "write_to_file",
        path="src/app.py",
        content="def f():\n    return 1\n",
        line_count="2",
        ratio="0.5",
        overwrite="True",
        options='{"mode": "w", "sync": true}',
        tags="['a', 'b']",
        note="null",
    )
    arguments = {
        "path": "src/app.py",
        "content": "def f():\n    return 1\n",
        "line_count": 2,
        "ratio": 0.5,
        "overwrite": True,
        "options": {"mode": "w", "sync": True},
        "tags": ["a", "b"],
        "note": None,
    }
    check(text, "I'll write it.", [("write_to_file", arguments)])


def test_several_calls_in_one_block_and_in_several():
    two = call("list_files", path=".") + "\n" + call("write_to_file", path="a", ratio="3.0")
    expected = [("list_files", {"path": "."}), ("write_to_file", {"path": "a", "ratio": 3})]
    check(two, "", expected)
    joined = two.replace(
        "</function>\n</tool_call>\n<tool_call>\n<function=", "</function>\n<function="
    )
    check(joined, "", expected)


def test_a_block_without_a_function_stays_text():
    stray = "<tool_call>\nsome prose\n</tool_call> done"
    check(stray, stray, [])
    check("Hi <tool_call>\n", "Hi <tool_call>", [])


def test_a_call_once_open_stands_cut_short_or_with_junk_inside():
    """Its id, name and arguments so far were streamed: streamed or not, it is a call."""
    check(
        "<tool_call>\n<function=list_files>\n<parameter=path>\n.",
        "",
        [("list_files", '{"path": ".')],  # unclosed: the client sees it was cut short
    )
    broken = call("list_files", path=".").replace("<parameter=", "junk<parameter=")
    check(broken, "", [("list_files", {"path": "."})])
    unclosed = "<tool_call>\n<function=list_files>\n<parameter=path>\n.\n</parameter>\n</function>"
    check(unclosed, "", [("list_files", {"path": "."})])  # the block ended with the output


def test_a_closing_tag_inside_a_json_string_does_not_end_the_value():
    text = call("write_to_file", tags='["</parameter>", "a"]', options='{"x": "</function>"}')
    check(text, "", [("write_to_file", {"tags": ["</parameter>", "a"],
                                        "options": {"x": "</function>"}})])  # fmt: skip
    unbalanced = call("write_to_file", line_count='4"', path="p")  # a newline ends a "string"
    check(unbalanced, "", [("write_to_file", {"line_count": '4"', "path": "p"})])


def test_text_values_stream_as_written():
    parser = get_tool_parser("qwen3_coder")(TOOLS)
    pieces = ["<tool_call>\n<function=write_to_file>\n<parameter=content>\n", "nu", "ll and",
              " more\n", "\n", "</param", "eter>\n<parameter=line_count>\n4", "2\n</parameter>",
              "\n</function>\n</tool_call>"]  # fmt: skip
    got = [[f.arguments for f in parser.feed(p).tool_calls] for p in pieces]
    assert got == [["", '{"content": '], [], ['"null and'], [" more"], ["\\n"], [],
                   ['"', ', "line_count": '], ["42"], ["}"]]  # fmt: skip
    assert json.loads(parser.calls[0].arguments) == {"content": "null and more\n", "line_count": 42}


def test_values_that_do_not_parse_as_their_type_stay_text():
    schema = TOOLS[0]["function"]["parameters"]["properties"]
    assert convert("many", schema["line_count"]) == "many"
    assert convert("3.0", schema["line_count"]) == "3.0"  # not an integer (as vLLM)
    assert convert("nan", schema["ratio"]) == "nan"
    assert convert("maybe", schema["overwrite"]) == "maybe"
    assert convert("{not json", schema["options"]) == "{not json"
    assert convert("{1, 2}", schema["tags"]) == "{1, 2}"  # a Python set is not JSON
    assert convert("42", None) == "42"  # a parameter the schema lacks


def test_picked_for_qwen3_coder_templates():
    template = "<tool_call>\n<function=example>\n<parameter=example_parameter_1>"
    assert tool_parser_for_model("qwen3_moe", template) == "qwen3_coder"
    assert tool_parser_for_model("qwen3_moe", "<tool_call>{json}</tool_call>") == "hermes"
    with pytest.raises(ValueError, match="qwen3_coder"):
        get_tool_parser("qwen3-coder")


QWEN3_PIECES = ["<tool_call>", "</tool_call>", "<function=write_to_file>", "<function=list_files>",
                "<parameter=path>", "<parameter=line_count>", "<parameter=note>", "</parameter>",
                "</function>", "<param", "\n", "\n\n", " ", "null", "nu", "7", "x", "é", '"',
                "<"]  # fmt: skip


def test_random_texts_stream_like_they_parse():
    rng = random.Random(2)
    for _ in range(300):
        text = "".join(rng.choice(QWEN3_PIECES) for _ in range(rng.randint(0, 30)))
        content, calls = parse_tool_calls("qwen3_coder", text, TOOLS)
        check(text, content, [(c.name, c.arguments) for c in calls])
