"""Tool-call parsers for the chat endpoint: split model text into content and OpenAI tool calls.

Three formats: "hermes" (Qwen2.5/Qwen3, Hermes) wraps each call in `<tool_call>...</tool_call>`;
"llama3_json" (Llama 3.1+) answers with bare JSON objects `{"name": ..., "parameters": ...}`;
"qwen3_coder" (Qwen3-Coder: XML functions and parameters) is in qwen3_coder_parser.py.

Streaming is exact: whatever the chunking, the streamed content is the non-streaming content and
the fragments of a call add up to its `ToolCall.arguments`. To keep that promise a call is only
emitted once its JSON is complete and valid (a name can't be taken back if the JSON later breaks),
as two fragments: id and name first, then the whole arguments text.
"""

import json
import secrets
import string
from dataclasses import dataclass, field

_ID_CHARS = string.ascii_letters + string.digits
_SEPARATORS = string.whitespace + ";"


@dataclass
class ToolCall:
    """A complete call."""

    id: str
    name: str
    arguments: str  # JSON text of the arguments object


@dataclass
class ToolCallDelta:
    """One streamed fragment of a call, as OpenAI streams `delta.tool_calls`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ParsedDelta:
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(24))


class StrippedText:
    """Streams text so that the concatenated output equals the concatenated input, stripped:
    leading whitespace is dropped, trailing whitespace is held until more text follows it."""

    def __init__(self) -> None:
        self._started = False
        self._pending = ""

    def push(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        text = self._pending + text
        kept = text.rstrip()
        self._pending = text[len(kept) :]
        return kept


def held_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag` (to hold back)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str) -> object:
    """The parsed value, or None when the text isn't strict JSON (NaN and Infinity refused)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None


def make_call(obj: object, arguments_required: bool) -> ToolCall | None:
    """A ToolCall from a parsed `{"name": ..., "arguments"|"parameters": {...}}`, else None."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    key = next((k for k in ("arguments", "parameters") if k in obj), None)
    if key is None and arguments_required:
        return None
    args = obj[key] if key else {}
    if isinstance(args, str):  # some models encode the arguments object as a JSON string
        args = _load_json(args)
    if not isinstance(args, dict):
        return None
    return ToolCall(new_call_id(), obj["name"], json.dumps(args, ensure_ascii=False))


class _JsonScan:
    """Walks JSON text incrementally, skipping the inside of strings."""

    def __init__(self, pos: int = 0) -> None:
        self.pos = pos
        self.depth = 0
        self._in_string = False
        self._escaped = False

    def outside(self, text: str):
        """Yield (index, char) of each new character outside strings. A caller that stops early
        gets the character it stopped on again on the next walk."""
        while self.pos < len(text):
            c = text[self.pos]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == "\\":
                    self._escaped = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            else:
                yield self.pos, c
            self.pos += 1


class ToolParser:
    """Splits one choice's model text into content and tool calls; one instance per choice.
    `tools`: the request's tools (`{"type": "function", "function": {...}}`), for formats
    whose arguments are typed by the tool's schema."""

    def __init__(self, tools: list[dict] | None = None) -> None:
        self._calls: list[ToolCall] = []
        self._text = StrippedText()
        self._buf = ""

    @property
    def calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, text: str) -> ParsedDelta:
        self._buf += text
        out = ParsedDelta()
        while self._step(out):
            pass
        return out

    def finish(self) -> ParsedDelta:
        out = ParsedDelta()
        self._flush(out)
        self._buf = ""
        return out

    def _step(self, out: ParsedDelta) -> bool:
        """Consume what the buffer allows; True when another step may consume more."""
        raise NotImplementedError

    def _flush(self, out: ParsedDelta) -> None:
        raise NotImplementedError

    def _content(self, out: ParsedDelta, text: str) -> None:
        out.content += self._text.push(text)

    def _text_until(self, out: ParsedDelta, tag: str) -> bool:
        """Content up to `tag`, then the tag itself consumed: True once it is found; else the
        text that cannot begin it becomes content and the rest waits for more."""
        i = self._buf.find(tag)
        if i >= 0:
            self._content(out, self._buf[:i])
            self._buf = self._buf[i + len(tag) :]
            return True
        cut = len(self._buf) - held_suffix(self._buf, tag)
        self._content(out, self._buf[:cut])
        self._buf = self._buf[cut:]
        return False

    def _call(self, out: ParsedDelta, call: ToolCall) -> None:
        index = len(self._calls)
        self._calls.append(call)
        out.tool_calls.append(ToolCallDelta(index, call.id, call.name))
        out.tool_calls.append(ToolCallDelta(index, arguments=call.arguments))


class HermesToolParser(ToolParser):
    """`<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>`, any number of them, with
    text around them as content. A tag whose JSON is malformed stays content, tags included."""

    START, END = "<tool_call>", "</tool_call>"

    def __init__(self, tools: list[dict] | None = None) -> None:
        super().__init__(tools)
        self._scan: _JsonScan | None = None  # set while inside a tag
        self._checked = False  # whether the tag's body was seen to start with "{"

    def _step(self, out: ParsedDelta) -> bool:
        return self._in_call(out) if self._scan is not None else self._in_text(out)

    def _in_text(self, out: ParsedDelta) -> bool:
        if not self._text_until(out, self.START):
            return False
        self._scan, self._checked = _JsonScan(), False
        return True

    def _in_call(self, out: ParsedDelta) -> bool:
        if not self._checked:
            body = self._buf.lstrip()
            if not body:
                return False
            if not body.startswith("{"):  # prose that mentions the tag: keep it as text
                self._content(out, self.START)
                self._scan = None
                return True
            self._checked = True
        end = self._find_end()
        if end < 0:
            return False
        raw = self._buf[:end]
        self._buf = self._buf[end + len(self.END) :]
        self._scan = None
        self._emit(out, raw, self.START + raw + self.END)
        return True

    def _find_end(self) -> int:
        """Index of the closing tag outside JSON strings; -1 while not (yet) there."""
        for i, c in self._scan.outside(self._buf):
            if c != "<":
                continue
            if self._buf.startswith(self.END, i):
                return i
            if self.END.startswith(self._buf[i:]):
                return -1  # maybe the closing tag: wait for more text
        return -1

    def _emit(self, out: ParsedDelta, raw: str, whole: str) -> None:
        call = make_call(_load_json(raw), arguments_required=False)
        if call:
            self._call(out, call)
        else:
            self._content(out, whole)

    def _flush(self, out: ParsedDelta) -> None:
        if self._scan is None:
            self._content(out, self._buf)
            return
        self._scan = None
        end = self._buf.find(self.END)
        if end < 0:  # generation ended inside a tag: a call only if its JSON is complete
            self._emit(out, self._buf, self.START + self._buf)
            return
        # a stray quote hid the closing tag inside a "string": close at the first one after all
        raw, self._buf = self._buf[:end], self._buf[end + len(self.END) :]
        self._emit(out, raw, self.START + raw + self.END)
        while self._step(out):
            pass
        self._flush(out)


class Llama3JsonToolParser(ToolParser):
    """The whole message is `{"name": "f", "parameters": {...}}` (or "arguments"), optionally
    after `<|python_tag|>`, several separated by ";". A message that starts otherwise is content
    and streams at once; one whose JSON isn't a call becomes content from there on."""

    TAG = "<|python_tag|>"

    def __init__(self, tools: list[dict] | None = None) -> None:
        super().__init__(tools)
        self._mode = "start"  # -> "calls" or "text"
        self._scan: _JsonScan | None = None  # set while inside an object

    def _step(self, out: ParsedDelta) -> bool:
        if self._mode == "text":
            self._content(out, self._buf)
            self._buf = ""
            return False
        if self._mode == "calls":
            return self._next_call(out)
        head = self._buf.lstrip()
        if not head or (len(head) < len(self.TAG) and self.TAG.startswith(head)):
            return False  # nothing yet, or maybe the tag
        self._mode = "calls" if head.startswith(("{", self.TAG)) else "text"
        return True

    def _call_start(self) -> int:
        """Index of the next call's text after separators and the tag; len(buf) while unknown."""
        buf = self._buf
        i = len(buf) - len(buf.lstrip(_SEPARATORS))
        if buf.startswith(self.TAG, i):
            return len(buf) - len(buf[i + len(self.TAG) :].lstrip())
        if self.TAG.startswith(buf[i:]):
            return len(buf)  # nothing, or maybe the tag
        return i

    def _next_call(self, out: ParsedDelta) -> bool:
        start = self._call_start()
        if start == len(self._buf):
            return False
        if self._buf[start] != "{":
            self._give_up()
            return True
        end = self._object_end(start)
        if end < 0:
            return False
        call = make_call(_load_json(self._buf[start:end]), arguments_required=True)
        if call is None:
            self._give_up()
            return True
        self._call(out, call)
        self._buf = self._buf[end:]
        self._scan = None
        return True

    def _object_end(self, start: int) -> int:
        """Index just past the object that starts at `start`; -1 while it is incomplete."""
        if self._scan is None:
            self._scan = _JsonScan(start)
        scan = self._scan
        for i, c in scan.outside(self._buf):
            if c in "{[":
                scan.depth += 1
            elif c in "}]":
                scan.depth -= 1
                if scan.depth == 0:
                    return i + 1
        return -1

    def _give_up(self) -> None:
        """Not a call: the rest of the message is content (after the last call's separators)."""
        if self._calls:
            self._buf = self._buf.lstrip(_SEPARATORS)
        self._mode, self._scan = "text", None

    def _flush(self, out: ParsedDelta) -> None:
        if self._mode == "calls":  # what is left is no call: an incomplete object or junk
            self._give_up()
        self._content(out, self._buf)


_PARSERS: dict[str, type[ToolParser]] = {
    "hermes": HermesToolParser,
    "qwen": HermesToolParser,
    "qwen2_5": HermesToolParser,
    "llama3_json": Llama3JsonToolParser,
    "llama": Llama3JsonToolParser,
}


def get_tool_parser(name: str) -> type[ToolParser]:
    if name == "qwen3_coder":  # its own module, which builds on this one
        from purellm.server.qwen3_coder_parser import Qwen3CoderToolParser

        return Qwen3CoderToolParser
    try:
        return _PARSERS[name]
    except KeyError:
        names = ", ".join(sorted([*_PARSERS, "qwen3_coder"]))
        raise ValueError(f"unknown tool parser {name!r}; choose one of: {names}") from None


def tool_parser_for_model(model_type: str, chat_template: str | None) -> str | None:
    """The parser that suits a model (its config's model_type and chat template), or None."""
    model_type = (model_type or "").lower()
    template = chat_template or ""
    if "<function=" in template and "<parameter=" in template:  # Qwen3-Coder's XML calls
        return "qwen3_coder"
    if model_type.startswith(("qwen2", "qwen3")) or "<tool_call>" in template:
        return "hermes"
    if model_type.startswith("llama") and ("ipython" in template or "tools" in template):
        return "llama3_json"
    return None


def parse_tool_calls(
    name: str, text: str, tools: list[dict] | None = None
) -> tuple[str, list[ToolCall]]:
    """Non-streaming: (the text outside calls, stripped; the calls)."""
    parser = get_tool_parser(name)(tools)
    content = parser.feed(text).content + parser.finish().content
    return content, parser.calls
