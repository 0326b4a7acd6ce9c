"""Reasoning parser: split `<think>...</think>` (Qwen3, DeepSeek-R1 style) from the answer.

Only a `<think>` at the start of the output (after whitespace) opens reasoning; when the chat
template already opened it, say so with `starts_in_reasoning`. Everything after the first
`</think>` is content, verbatim but for the newlines right after the tag. The reasoning text is
stripped. Tags never reach either output and a partial tag at a chunk's end is held back, so any
chunking streams the same text as `split_reasoning` returns.
"""

from purellm.server.tool_parsers import StrippedText, held_suffix

OPEN, CLOSE = "<think>", "</think>"


class ReasoningParser:
    """One instance per choice: feed model text, get (reasoning delta, content delta)."""

    def __init__(self, starts_in_reasoning: bool = False) -> None:
        self._buf = ""
        self._state = "start"  # -> "reasoning" -> "after" -> "content", or "start" -> "content"
        self._default = "reasoning" if starts_in_reasoning else "content"
        self._reasoning = StrippedText()

    def feed(self, text: str) -> tuple[str, str]:
        self._buf += text
        reasoning, content = [], []
        while self._step(reasoning, content):
            pass
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """Flush held text: a partial tag that never completed is plain text."""
        reasoning = self._reasoning.push(self._buf) if self._state == "reasoning" else ""
        content = self._buf if self._state in ("start", "content") else ""
        self._buf = ""
        return reasoning, content

    def _step(self, reasoning: list[str], content: list[str]) -> bool:
        """Consume what the buffer allows; True when another step may consume more."""
        if self._state == "start":
            return self._start()
        if self._state == "reasoning":
            return self._in_reasoning(reasoning)
        if self._state == "after":
            rest = self._buf.lstrip("\r\n")
            self._buf = rest
            if rest:
                self._state = "content"
            return bool(rest)
        content.append(self._buf)
        self._buf = ""
        return False

    def _start(self) -> bool:
        head = self._buf.lstrip()
        if head.startswith(OPEN):
            self._buf = head[len(OPEN) :]
            self._state = "reasoning"
            return True
        if not head or OPEN.startswith(head):
            return False  # nothing yet, or maybe the tag
        self._state = self._default
        return True

    def _in_reasoning(self, reasoning: list[str]) -> bool:
        i = self._buf.find(CLOSE)
        if i >= 0:
            reasoning.append(self._reasoning.push(self._buf[:i]))
            self._buf = self._buf[i + len(CLOSE) :]
            self._state = "after"
            return True
        cut = len(self._buf) - held_suffix(self._buf, CLOSE)
        reasoning.append(self._reasoning.push(self._buf[:cut]))
        self._buf = self._buf[cut:]
        return False


def split_reasoning(text: str, starts_in_reasoning: bool = False) -> tuple[str | None, str]:
    """Non-streaming: (the reasoning, or None when there is none or it is empty; the content)."""
    parser = ReasoningParser(starts_in_reasoning)
    reasoning, content = parser.feed(text)
    more_reasoning, more_content = parser.finish()
    return (reasoning + more_reasoning) or None, content + more_content
