"""Grammars (llguidance's Lark) for tool calls in each parser's wire format.

Forced (tool_choice "required" or a named tool): the output is one call, or several with
parallel_tool_calls. Lazy (tool_choice "auto" with `strict` tools): any text, until the model
writes the format's opening marker; from there the call must be valid, then text again. Like
llama.cpp's lazy grammars, but in one grammar: llguidance ends a `lazy` lexeme at the first
match, so `TEXT "<tool_call>"` commits to a call as soon as the marker is written.

Arguments follow the tool's JSON schema (a non-strict tool's are any object in a lazy
grammar). JSON is compact (JSON_OPTIONS), so a call cannot be padded with whitespace forever.

Where the tokenizer has `<tool_call>` and `</tool_call>` as tokens of their own (Qwen2.5, Qwen3,
Qwen3-Coder), the grammar names those tokens (`marker_tokens`): llguidance treats added tokens
as special, and a quoted "<tool_call>" inside a longer lexeme would make the model spell the
tag in pieces, which it was never trained to do. Text then runs until the model writes the
token, with no lazy lexeme needed.
"""

from __future__ import annotations

import json

from purellm.engine.structured import JSON_OPTIONS
from purellm.sampling_params import StructuredOutputsParams
from purellm.server.qwen3_coder_parser import is_text_parameter

TEXT = "TEXT: /(.|\\n)*/\n"
MARKERS = {False: ('"<tool_call>"', '"</tool_call>"'), True: ("<tool_call>", "</tool_call>")}
"""(opening, closing) tag as quoted text, or as the tokenizer's own tokens."""
ANY_OBJECT = {"type": "object"}
# qwen3_coder: a text value is anything without a closing tag, and not "null" (the parser's
# null), then its own closing tag
QWEN3_VALUE = (
    "VALUE_TEXT: /(?s:.*)/ & ~/(?s:.*)<\\/(parameter|function|tool_call)>(?s:.*)/"
    " & ~/(?i:null)\\n?/\n"
    'TEXT_VALUE: VALUE_TEXT "</parameter>"\n'
    "PARAMETER_NAME: /[^>\\n]+/\n"
)


def tool_call_constraint(
    parser: str, tools: list[dict], parallel: bool, lazy: bool = False, marker_tokens: bool = False
) -> StructuredOutputsParams | None:
    """The grammar of `parser`'s tool calls (None for a format without one). `tools` are
    the callable ones; `lazy` allows text around the calls (and no call at all);
    `marker_tokens`: the tags are tokens of the tokenizer's own."""
    opening, closing = MARKERS[marker_tokens]
    if parser == "hermes":
        rules = f'body: "\\n" {_json_calls(tools, "arguments", lazy)} "\\n" {closing}\n'
    elif parser == "qwen3_coder":
        functions = " | ".join(f"f{i}" for i in range(len(tools)))
        rules = f'body: "\\n" ({functions}) {closing}\n' + _qwen3_functions(tools, lazy)
    elif parser == "llama3_json":
        return _llama3_json(tools, parallel, lazy)
    else:
        return None
    repeat = "*" if parallel else "?"
    if lazy and marker_tokens:  # free text cannot hold the token: the call starts at it
        start = f"start: TEXT ({opening} body TEXT){repeat}\n{TEXT}"
    elif lazy:
        start = f"start: (head body){repeat} TEXT\nhead[lazy]: TEXT {opening}\n{TEXT}"
    else:
        more = f' ("\\n" {opening} body)*' if parallel else ""
        start = f"start: {opening} body{more}\n"
    return StructuredOutputsParams(grammar=start + rules)


def _llama3_json(tools: list[dict], parallel: bool, lazy: bool) -> StructuredOutputsParams:
    """Llama 3.1's calls are the whole message: bare JSON objects joined by "; ". Lazily: a
    message that starts (after whitespace) with "{" is calls, any other is text."""
    more = ' ("; " call)*' if parallel else ""
    call = "call: " + _json_calls(tools, "parameters", lazy) + "\n"
    if not lazy:
        return StructuredOutputsParams(grammar=f"start: call{more}\n{call}")
    start = f"start: TEXT | SPACE call{more}\n"
    text = "SPACE: /[ \\t\\n]*/\nTEXT: /[ \\t\\n]*([^{ \\t\\n](.|\\n)*)?/\n"
    return StructuredOutputsParams(grammar=start + text + call)


def _arguments_schema(tool: dict, lazy: bool) -> dict:
    function = tool["function"]
    if lazy and not function.get("strict"):
        return ANY_OBJECT
    return function.get("parameters") or ANY_OBJECT


def _json_calls(tools: list[dict], arguments_key: str, lazy: bool) -> str:
    """An inline %json rule: {"name": one of the tools, "<arguments_key>": its arguments}."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["function"]["name"]},
                arguments_key: _arguments_schema(tool, lazy),
            },
            "required": ["name", arguments_key],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    schema = {"anyOf": options, "x-guidance": JSON_OPTIONS}
    return "%json " + json.dumps(schema)


def _qwen3_functions(tools: list[dict], lazy: bool) -> str:
    """One rule per tool: `<function=NAME>` and its parameters in the schema's order (the
    required ones always, each other one optional), then `</function>`. Text parameters are raw
    text, the others JSON (the parser converts values by the same test)."""
    rules = [QWEN3_VALUE]
    for i, tool in enumerate(tools):
        function = tool["function"]
        name = json.dumps(f"<function={function['name']}>\n")
        schema = function.get("parameters") or ANY_OBJECT
        if lazy and not function.get("strict"):
            params = [f"any_parameter{i}*"]
            rules.append(f'any_parameter{i}: "<parameter=" PARAMETER_NAME ">\\n" TEXT_VALUE "\\n"')
        else:
            params = _qwen3_parameters(schema, f"f{i}", rules)
        rules.append(f'f{i}: {name} {" ".join(params)} "</function>\\n"')
    return "\n".join(rules) + "\n"


def _qwen3_parameters(schema: dict, prefix: str, rules: list[str]) -> list[str]:
    required = set(schema.get("required") or [])
    params = []
    for j, (name, spec) in enumerate((schema.get("properties") or {}).items()):
        rule = f"{prefix}_p{j}"
        head = json.dumps(f"<parameter={name}>\n")
        if is_text_parameter(spec) and _string_enum(spec):
            value = " | ".join(json.dumps(f"{v}\n</parameter>\n") for v in spec["enum"])
            value = f"({value})"
        elif is_text_parameter(spec):
            value = 'TEXT_VALUE "\\n"'
        else:
            value_schema = {**spec, "x-guidance": JSON_OPTIONS} if isinstance(spec, dict) else {}
            value = f'%json {json.dumps(value_schema)} "\\n</parameter>\\n"'
        rules.append(f"{rule}: {head} {value}")
        params.append(rule if name in required else f"{rule}?")
    return params


def _string_enum(spec: dict) -> bool:
    values = spec.get("enum") if isinstance(spec, dict) else None
    return bool(values) and all(isinstance(v, str) for v in values)
