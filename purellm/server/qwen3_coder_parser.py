"""The "qwen3_coder" tool-call format (Qwen3-Coder), vLLM's name for it:

    <tool_call>
    <function=NAME>
    <parameter=ARG>
    value
    </parameter>
    </function>
    </tool_call>

Values are raw text (one newline after the opening tag and before the closing one is
dropped), converted to the JSON type the tool's schema gives the parameter: strings stay
text, integers and numbers are parsed (a number with no fraction becomes an integer),
booleans are "true"/"false", objects and arrays are JSON (or Python literals), "null" is
null; a value that does not parse as its type, or a parameter the schema lacks, stays text.
A block that is not a well-formed call stays content, tags included. Calls stream as the
hermes ones do: whole, once their block is closed."""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from purellm.server.tool_parsers import ParsedDelta, ToolCall, ToolParser, new_call_id

_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)</function>", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.S)
_STRINGS = ("string", "str", "text", "varchar", "char", "enum")


class Qwen3CoderToolParser(ToolParser):
    START, END = "<tool_call>", "</tool_call>"

    def __init__(self, tools: list[dict] | None = None) -> None:
        super().__init__(tools)
        self._inside = False
        self._schemas = {
            tool["function"]["name"]: (tool["function"].get("parameters") or {}).get(
                "properties", {}
            )
            for tool in tools or []
            if tool.get("function", {}).get("name")
        }

    def _step(self, out: ParsedDelta) -> bool:
        if self._inside:
            end = self._buf.find(self.END)
            if end < 0:
                return False
            body, self._buf = self._buf[:end], self._buf[end + len(self.END) :]
            self._inside = False
            self._emit(out, body, self.START + body + self.END)
            return True
        self._inside = self._text_until(out, self.START)
        return self._inside

    def _flush(self, out: ParsedDelta) -> None:
        if self._inside:  # generation ended inside the block: calls only if they are complete
            self._inside = False
            self._emit(out, self._buf, self.START + self._buf)
        else:
            self._content(out, self._buf)

    def _emit(self, out: ParsedDelta, body: str, whole: str) -> None:
        calls = self._parse(body)
        if calls is None:
            self._content(out, whole)
        for call in calls or []:
            self._call(out, call)

    def _parse(self, body: str) -> list[ToolCall] | None:
        """The calls of one block, or None unless it is nothing but well-formed functions."""
        calls = []
        for match in _FUNCTION.finditer(body):
            name = match[1].strip()
            arguments = self._arguments(name, match[2])
            if not name or arguments is None:
                return None
            calls.append(ToolCall(new_call_id(), name, json.dumps(arguments, ensure_ascii=False)))
        if not calls or _FUNCTION.sub("", body).strip():
            return None
        return calls

    def _arguments(self, name: str, inner: str) -> dict[str, Any] | None:
        if _PARAMETER.sub("", inner).strip():
            return None
        schema = self._schemas.get(name, {})
        arguments = {}
        for match in _PARAMETER.finditer(inner):
            value = match[2].removeprefix("\n").removesuffix("\n")
            arguments[match[1].strip()] = convert(value, schema.get(match[1].strip()))
        return arguments


def convert(value: str, schema: Any) -> Any:
    """A parameter's text as the JSON type its schema names (text if it does not parse)."""
    if value.lower() == "null":
        return None
    kind = _type(schema)
    if kind is None or kind in _STRINGS:
        return value
    if kind.startswith(("int", "uint", "long", "short")):
        return _number(value, int)
    if kind.startswith(("num", "float", "double")):
        number = _number(value, float)
        if isinstance(number, float) and not math.isfinite(number):
            return value  # JSON has no NaN or infinity
        return int(number) if isinstance(number, float) and number.is_integer() else number
    word = value.strip().lower()
    if kind in ("boolean", "bool", "binary"):
        return word == "true" if word in ("true", "false") else value
    try:
        return json.loads(value, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        pass
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return value
    return parsed if isinstance(parsed, (dict, list)) and _is_json(parsed) else value


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _type(schema: Any) -> str | None:
    """The schema's type name (the first non-null one of a list), lower case."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and "enum" in schema:
        kind = "enum"
    return kind.lower() if isinstance(kind, str) else None


def _number(value: str, parse) -> Any:
    try:
        return parse(value.strip())
    except ValueError:
        return value
