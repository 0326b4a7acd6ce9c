"""The JSON tool-call formats: "hermes" (`<tool_call>{...}</tool_call>`) and "llama3_json"
(bare objects). A call whose text starts `{"name": "NAME", "arguments": {` ("parameters" too)
streams: id and name at that point, then the arguments object's text as it comes (the model's
own text, so the fragments add up to it). A call in another shape (keys in another order,
arguments encoded as a JSON string) is emitted whole once its JSON is complete, as normalized
JSON; if that JSON is malformed, its text stays content."""

from __future__ import annotations

import json
import string

from purellm.server.tool_parsers import ParsedDelta, ToolParser

_SEPARATORS = string.whitespace + ";"
_ARGUMENT_KEYS = ('"arguments"', '"parameters"')
_HEADER = ("{", '"name"', ":", "NAME", ",", "KEY", ":", "{")


class _JsonScan:
    """Walks JSON text incrementally, skipping the inside of strings."""

    def __init__(self, pos: int = 0, depth: int = 0) -> None:
        self.pos = pos
        self.depth = depth
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

    def closing(self, text: str) -> int:
        """Index just past the bracket that brings the depth to 0; -1 while not (yet) there."""
        for i, c in self.outside(text):
            if c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return -1


def call_header(text: str) -> tuple[str, str | None, int]:
    """Whether `text` starts `{"name": "NAME", "arguments": {` (or "parameters"), with any
    whitespace: ("yes", NAME, index of the arguments' "{"); ("more", None, 0) while it still
    may; ("no", None, 0) once it cannot."""
    i, name = 0, None
    for piece in _HEADER:
        i = len(text) - len(text[i:].lstrip())
        rest = text[i:]
        if not rest:
            return "more", None, 0
        if piece == "NAME":
            end = _string_end(text, i)
            if end == 0:
                return "more", None, 0
            name = _load_json(text[i:end]) if end > 0 else None
            if not isinstance(name, str) or not name:
                return "no", None, 0
            i = end
            continue
        options = _ARGUMENT_KEYS if piece == "KEY" else (piece,)
        done = next((p for p in options if rest.startswith(p)), None)
        if done is None:
            return ("more" if any(p.startswith(rest) for p in options) else "no"), None, 0
        i += len(done)
    return "yes", name, i - 1


def _string_end(text: str, i: int) -> int:
    """Index past the JSON string that starts at `i`; 0 while unclosed, -1 if none starts."""
    if text[i] != '"':
        return -1
    escaped = False
    for j in range(i + 1, len(text)):
        if escaped:
            escaped = False
        elif text[j] == "\\":
            escaped = True
        elif text[j] == '"':
            return j + 1
    return 0


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str) -> object:
    """The parsed value, or None when the text isn't strict JSON (NaN and Infinity refused)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None


def whole_call(text: str, arguments_required: bool) -> tuple[str, str] | None:
    """(name, normalized arguments) of `{"name": ..., "arguments"|"parameters": {...}}`."""
    obj = _load_json(text)
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
    return obj["name"], json.dumps(args, ensure_ascii=False)


class JsonToolParser(ToolParser):
    """What both formats share: the streamed arguments object."""

    def __init__(self, tools: list[dict] | None = None) -> None:
        super().__init__(tools)
        self._args_scan = _JsonScan()

    def _start_streaming(self, out: ParsedDelta, name: str, at: int) -> None:
        """The call's header ended at `at`, the arguments' "{"."""
        self._open(out, name)
        self._buf = self._buf[at:]
        self._args_scan = _JsonScan()

    def _pass_arguments(self, out: ParsedDelta, end_tag: str | None = None) -> str:
        """Pass the arguments' text on as it comes: "closed" once the object is complete,
        "tag" when `end_tag` (the call's end, consumed) came first, else "more"."""
        scan = self._args_scan
        for i, c in scan.outside(self._buf):
            if c in "{[":
                scan.depth += 1
            elif c in "}]":
                scan.depth -= 1
                if scan.depth == 0:
                    self._pass(out, i + 1)
                    return "closed"
            elif c == "<" and end_tag:
                if self._buf.startswith(end_tag, i):
                    self._pass(out, i)
                    self._buf = self._buf[len(end_tag) :]
                    return "tag"
                if end_tag.startswith(self._buf[i:]):
                    break  # maybe the end tag: wait for more text
        self._pass(out, scan.pos)
        return "more"

    def _pass(self, out: ParsedDelta, n: int) -> None:
        """The buffer's first `n` characters are arguments."""
        self._add_arguments(out, self._buf[:n])
        self._buf = self._buf[n:]
        self._args_scan.pos -= n


class HermesToolParser(JsonToolParser):
    """`<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>`, any number of them, with
    text around them as content. A tag whose body is not JSON stays content, tags included."""

    START, END = "<tool_call>", "</tool_call>"

    def __init__(self, tools: list[dict] | None = None) -> None:
        super().__init__(tools)
        self._state = "text"  # -> head -> arguments -> tail, or head -> whole; then text
        self._scan = _JsonScan()  # the "whole" state's walk

    def _step(self, out: ParsedDelta) -> bool:
        states = {"text": self._in_text, "head": self._in_head, "whole": self._in_whole,
                  "arguments": self._in_arguments, "tail": self._in_tail}  # fmt: skip
        return states[self._state](out)

    def _in_text(self, out: ParsedDelta) -> bool:
        if self._text_until(out, self.START):
            self._state = "head"
            return True
        return False

    def _in_head(self, out: ParsedDelta) -> bool:
        body = self._buf.lstrip()
        if not body:
            return False
        if not body.startswith("{"):  # prose that mentions the tag: keep it as text
            self._content(out, self.START)
            self._state = "text"
            return True
        status, name, at = call_header(body)
        if status == "more":
            return False
        if status == "yes":
            self._start_streaming(out, name, len(self._buf) - len(body) + at)
            self._state = "arguments"
        else:
            self._state, self._scan = "whole", _JsonScan()
        return True

    def _in_arguments(self, out: ParsedDelta) -> bool:
        ended = self._pass_arguments(out, self.END)
        if ended != "more":
            self._state = "tail" if ended == "closed" else "text"
        return ended != "more"

    def _in_tail(self, out: ParsedDelta) -> bool:
        """After the arguments: the rest of the call is dropped, up to its end tag."""
        end = self._buf.find(self.END)
        if end < 0:
            return False
        self._buf = self._buf[end + len(self.END) :]
        self._state = "text"
        return True

    def _in_whole(self, out: ParsedDelta) -> bool:
        end = self._find_end()
        if end < 0:
            return False
        raw = self._buf[:end]
        self._buf = self._buf[end + len(self.END) :]
        self._state = "text"
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
        call = whole_call(raw, arguments_required=False)
        if call:
            self._call(out, *call)
        else:
            self._content(out, whole)

    def _flush(self, out: ParsedDelta) -> None:
        state, self._state = self._state, "text"
        if state == "text":
            self._content(out, self._buf)
        elif state == "arguments":  # generation ended inside the arguments: the call stands
            self._add_arguments(out, self._buf)
        elif state in ("head", "whole"):
            self._flush_whole(out)

    def _flush_whole(self, out: ParsedDelta) -> None:
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


class Llama3JsonToolParser(JsonToolParser):
    """The whole message is `{"name": "f", "parameters": {...}}` (or "arguments"), optionally
    after `<|python_tag|>`, several separated by ";". A message that starts otherwise is content
    and streams at once; one whose JSON isn't a call becomes content from there on."""

    TAG = "<|python_tag|>"

    def __init__(self, tools: list[dict] | None = None) -> None:
        super().__init__(tools)
        self._mode = "start"  # -> "calls" or "text"
        self._phase = "next"  # within "calls": next -> arguments -> tail, or next -> whole
        self._scan = _JsonScan()

    def _step(self, out: ParsedDelta) -> bool:
        if self._mode == "text":
            self._content(out, self._buf)
            self._buf = ""
            return False
        if self._mode == "calls":
            phases = {"next": self._next_call, "whole": self._whole_call,
                      "arguments": self._in_arguments, "tail": self._in_tail}  # fmt: skip
            return phases[self._phase](out)
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
        status, name, at = call_header(self._buf[start:])
        if status == "more":
            return False
        if status == "yes":
            self._start_streaming(out, name, start + at)
            self._phase = "arguments"
        else:
            self._phase, self._scan = "whole", _JsonScan(start)
        return True

    def _whole_call(self, out: ParsedDelta) -> bool:
        end = self._scan.closing(self._buf)
        if end < 0:
            return False
        call = whole_call(self._buf[self._call_start() : end], arguments_required=True)
        if call is None:
            self._give_up()
            return True
        self._call(out, *call)
        self._buf = self._buf[end:]
        self._phase = "next"
        return True

    def _in_arguments(self, out: ParsedDelta) -> bool:
        if self._pass_arguments(out) == "more":
            return False
        self._phase, self._scan = "tail", _JsonScan(depth=1)
        return True

    def _in_tail(self, out: ParsedDelta) -> bool:
        """After the arguments: the rest of the object is dropped."""
        end = self._scan.closing(self._buf)
        if end < 0:
            return False
        self._buf = self._buf[end:]
        self._phase = "next"
        return True

    def _give_up(self) -> None:
        """Not a call: the rest of the message is content (after the last call's separators)."""
        if self._calls:
            self._buf = self._buf.lstrip(_SEPARATORS)
        self._mode, self._phase = "text", "next"

    def _flush(self, out: ParsedDelta) -> None:
        if self._mode == "calls" and self._phase == "arguments":  # the call stands
            self._add_arguments(out, self._buf)
            self._buf = ""
        elif self._mode == "calls" and self._phase == "tail":
            self._buf = ""
        elif self._mode == "calls":  # what is left is no call: an incomplete object or junk
            self._give_up()
        self._content(out, self._buf)
