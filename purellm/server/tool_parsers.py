"""Tool-call parsers for the chat endpoint: split model text into content and OpenAI tool calls.

Three formats: "hermes" (Qwen2.5/Qwen3, Hermes) wraps each call in `<tool_call>...</tool_call>`
and "llama3_json" (Llama 3.1+) answers with bare JSON objects `{"name": ..., "parameters": ...}`
(both in json_tool_parsers.py); "qwen3_coder" (Qwen3-Coder: XML functions and parameters) is in
qwen3_coder_parser.py. This module has what they share, and picks one by name.

Streaming is exact: whatever the chunking, the streamed content is the non-streaming content and
the fragments of a call add up to its `ToolCall.arguments`. A call streams as vLLM's do: its id
and name once they are known, then its arguments as the model writes them. A call that has
started cannot be taken back, so the non-streaming result is the same as the streamed one even
when the arguments turn out broken (a strict tool's grammar prevents that).
"""

import importlib
import secrets
import string
from dataclasses import dataclass, field

_ID_CHARS = string.ascii_letters + string.digits


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

    def _call(self, out: ParsedDelta, name: str, arguments: str) -> None:
        """A whole call at once."""
        self._open(out, name)
        self._add_arguments(out, arguments)

    def _open(self, out: ParsedDelta, name: str) -> None:
        """A new call: its id and name (arguments follow)."""
        self._calls.append(ToolCall(new_call_id(), name, ""))
        out.tool_calls.append(ToolCallDelta(len(self._calls) - 1, self._calls[-1].id, name))

    def _add_arguments(self, out: ParsedDelta, text: str) -> None:
        """More of the last call's arguments."""
        if text:
            self._calls[-1].arguments += text
            out.tool_calls.append(ToolCallDelta(len(self._calls) - 1, arguments=text))


_PARSERS = {  # name -> (module, class); the modules build on this one
    "hermes": ("json_tool_parsers", "HermesToolParser"),
    "qwen": ("json_tool_parsers", "HermesToolParser"),
    "qwen2_5": ("json_tool_parsers", "HermesToolParser"),
    "llama3_json": ("json_tool_parsers", "Llama3JsonToolParser"),
    "llama": ("json_tool_parsers", "Llama3JsonToolParser"),
    "qwen3_coder": ("qwen3_coder_parser", "Qwen3CoderToolParser"),
}


def get_tool_parser(name: str) -> type[ToolParser]:
    if name not in _PARSERS:
        names = ", ".join(sorted(_PARSERS))
        raise ValueError(f"unknown tool parser {name!r}; choose one of: {names}")
    module, cls = _PARSERS[name]
    return getattr(importlib.import_module(f"purellm.server.{module}"), cls)


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
