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

Calls stream as vLLM's do: id and name at `<function=NAME>`, then the arguments object as JSON
built parameter by parameter; a text value streams as it is written, other values once their
closing tag is there. A block that opens with no `<function=NAME>` stays content; text between
a call's tags is dropped; a call cut short stands with its unclosed arguments."""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from purellm.server.tool_parsers import ParsedDelta, ToolParser, held_suffix

_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>")
_PARAMETER = re.compile(r"\s*<parameter=([^>\n]+)>")
_STRINGS = ("string", "str", "text", "varchar", "char", "enum")
_VALUE_ENDS = ("</parameter>", "</function>", "</tool_call>")


class Qwen3CoderToolParser(ToolParser):
    START, END = "<tool_call>", "</tool_call>"

    def __init__(self, tools: list[dict] | None = None) -> None:
        super().__init__(tools)
        self._state = "text"  # -> block -> function -> value -> function -> block -> text
        self._schemas = {
            tool["function"]["name"]: (tool["function"].get("parameters") or {}).get(
                "properties", {}
            )
            for tool in tools or []
            if tool.get("function", {}).get("name")
        }
        self._in_block_calls = 0  # calls opened in the current block
        self._keys = 0  # parameters written in the current call
        self._value: _Value | None = None

    def _step(self, out: ParsedDelta) -> bool:
        states = {"text": self._in_text, "block": self._in_block,
                  "function": self._in_function, "value": self._in_value}  # fmt: skip
        return states[self._state](out)

    def _in_text(self, out: ParsedDelta) -> bool:
        if not self._text_until(out, self.START):
            return False
        self._state, self._in_block_calls = "block", 0
        return True

    def _in_block(self, out: ParsedDelta) -> bool:
        """Inside `<tool_call>`: the next function, or the block's end."""
        match = _FUNCTION.match(self._buf)
        if match:
            self._open(out, match[1].strip())
            self._buf = self._buf[match.end() :]
            self._state, self._keys = "function", 0
            self._in_block_calls += 1
            return True
        rest = self._buf.lstrip()
        if rest.startswith(self.END):
            self._buf = rest[len(self.END) :]
            self._state = "text"
            return True
        if _may_become(rest, ("<function=", self.END)):
            return False
        if self._in_block_calls == 0:  # prose that mentions the tag: keep it as text
            self._content(out, self.START)
            self._state = "text"
        else:
            self._drop_until_tag()
        return True

    def _in_function(self, out: ParsedDelta) -> bool:
        """Between a function's parameters: the next one, or the function's end."""
        match = _PARAMETER.match(self._buf)
        if match:
            name = match[1].strip()
            key = json.dumps(name, ensure_ascii=False)
            self._add_arguments(out, ("{" if self._keys == 0 else ", ") + key + ": ")
            self._buf = self._buf[match.end() :]
            self._keys += 1
            schema = self._schemas.get(self._calls[-1].name, {}).get(name)
            self._value, self._state = _Value(schema), "value"
            return True
        rest = self._buf.lstrip()
        for tag, state in (("</function>", "block"), (self.END, "text")):
            if rest.startswith(tag):
                self._add_arguments(out, "}" if self._keys else "{}")
                self._buf = rest[len(tag) :]
                self._state = state
                return True
        if _may_become(rest, ("<parameter=", "</function>", self.END)):
            return False
        self._drop_until_tag()
        return True

    def _in_value(self, out: ParsedDelta) -> bool:
        end, cut = self._value.boundary(self._buf)
        if end < 0:
            self._add_arguments(out, self._value.feed(self._buf[:cut]))
            self._buf = self._buf[cut:]
            return False
        self._add_arguments(out, self._value.finish(self._buf[:end]))
        self._buf = self._buf[end:].removeprefix("</parameter>")
        self._state = "function"
        return True

    def _drop_until_tag(self) -> None:
        """Text between a call's tags is not part of it: skip to the next "<"."""
        i = self._buf.find("<", 1)
        self._buf = self._buf[i:] if i > 0 else ""

    def _flush(self, out: ParsedDelta) -> None:
        if self._state == "text":
            self._content(out, self._buf)
        elif self._state == "block" and self._in_block_calls == 0:
            self._content(out, self.START + self._buf)
        elif self._state == "value":  # cut short: the call stands, unclosed
            self._add_arguments(out, self._value.feed(self._buf, final=True))
        self._state = "text"


def _may_become(text: str, tags: tuple[str, ...]) -> bool:
    """Whether more text could still make `text` start with one of `tags` (plus, for an
    opening tag, the name and ">" after it)."""
    for tag in tags:
        if tag.startswith(text):
            return True
        if tag.endswith("=") and text.startswith(tag) and not re.search(r"[>\n]", text):
            return True
    return False


class _Value:
    """One parameter's value as JSON text: a text value streams (after its first newline,
    holding a last newline back; and while it may still be "null", which is null), any other
    is converted once complete. A text value ends at the first closing tag; any other at the
    first one outside a JSON string (a raw newline ends a string: JSON has none inside)."""

    def __init__(self, schema: Any) -> None:
        self._schema = schema
        self._text = is_text_parameter(schema)
        self._held = ""
        self._started = False  # the first newline, if any, is dropped
        self._quoted = False  # the opening quote is out
        self._pos, self._in_string, self._escaped = 0, False, False  # the walk of a JSON value

    def boundary(self, buf: str) -> tuple[int, int]:
        """(where in `buf` the closing tag starts, or -1; how much of it is surely value)."""
        if self._text:
            ends = [i for i in (buf.find(tag) for tag in _VALUE_ENDS) if i >= 0]
            if ends:
                return min(ends), min(ends)
            return -1, len(buf) - max(held_suffix(buf, tag) for tag in _VALUE_ENDS)
        while self._pos < len(buf):
            i, c = self._pos, buf[self._pos]
            if c == "\n":
                self._in_string = self._escaped = False
            elif self._escaped:
                self._escaped = False
            elif self._in_string:
                self._escaped, self._in_string = c == "\\", c != '"'
            elif c == '"':
                self._in_string = True
            elif c == "<" and any(buf.startswith(tag, i) for tag in _VALUE_ENDS):
                return i, i
            elif c == "<" and any(tag.startswith(buf[i:]) for tag in _VALUE_ENDS):
                return -1, i
            self._pos += 1
        return -1, self._pos

    def feed(self, text: str, final: bool = False) -> str:
        self._held += text
        self._pos -= len(text)
        if not self._started and self._held:
            self._held, self._started = self._held.removeprefix("\n"), True
        if not self._text or not self._started:
            return ""
        out = ""
        if not self._quoted:
            if not final and "null".startswith(self._held.removesuffix("\n").lower()):
                return ""
            out, self._quoted = '"', True
        keep = "" if final else self._held[len(self._held.rstrip("\n")) :][:1]
        ready, self._held = self._held[: len(self._held) - len(keep)], keep
        return out + _escaped(ready)

    def finish(self, text: str) -> str:
        """The rest of the value's JSON, its closing tag having been reached."""
        opened = self.feed(text)
        value = self._held.removesuffix("\n")
        if self._quoted:
            return opened + _escaped(value) + '"'
        return json.dumps(convert(value, self._schema), ensure_ascii=False)


def _escaped(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def convert(value: str, schema: Any) -> Any:
    """A parameter's text as the JSON type its schema names (text if it does not parse)."""
    if value.lower() == "null":
        return None
    if is_text_parameter(schema):
        return value
    kind = _type(schema)
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


def is_text_parameter(schema: Any) -> bool:
    """Whether a parameter's value is kept as text (a string type, or no type at all)."""
    kind = _type(schema)
    return kind is None or kind in _STRINGS


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
