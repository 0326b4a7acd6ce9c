"""One chat choice's output, as it is generated: thinking split off into `reasoning_content`,
tool calls parsed out of the content, and OpenAI's chat logprobs. The same parser serves
streaming (a DeltaMessage per step) and full responses (the accumulated message)."""

from __future__ import annotations

from purellm.server.protocol import (
    ChatLogprobs,
    ChatResponseMessage,
    ChatTokenLogprob,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ToolCallFunction,
    ToolCallOut,
    TopLogprob,
)

MIN_LOGPROB = -9999.0
"""-inf is not JSON; vLLM reports impossible tokens with this value instead."""


class ChoiceParser:
    def __init__(self, reasoning=None, tools=None, parallel_tool_calls: bool = True):
        """`reasoning`: a ReasoningParser or None; `tools`: a ToolParser or None."""
        self.reasoning = reasoning
        self.tools = tools
        self.parallel_tool_calls = parallel_tool_calls
        self.content_parts: list[str] = []
        self.reasoning_parts: list[str] = []

    def feed(self, text: str) -> DeltaMessage | None:
        """The message delta for newly generated text; None when there is nothing to send."""
        if not text:
            return None
        reasoning, content = self.reasoning.feed(text) if self.reasoning else ("", text)
        return self._delta(reasoning, content, final=False)

    def finish(self) -> DeltaMessage | None:
        """Whatever the parsers held back, once the choice has ended."""
        reasoning, content = ("", "")
        if self.reasoning:
            reasoning, content = self.reasoning.finish()
        return self._delta(reasoning, content, final=True)

    def _delta(self, reasoning: str, content: str, final: bool) -> DeltaMessage | None:
        tool_deltas = []
        if self.tools is not None:
            parsed = self.tools.feed(content or "")
            content, tool_deltas = parsed.content, list(parsed.tool_calls)
            if final:
                tail = self.tools.finish()
                content += tail.content
                tool_deltas += tail.tool_calls
        if not self.parallel_tool_calls:
            tool_deltas = [d for d in tool_deltas if d.index == 0]
        fields: dict = {}
        if reasoning:
            self.reasoning_parts.append(reasoning)
            fields["reasoning_content"] = reasoning
        if content:
            self.content_parts.append(content)
            fields["content"] = content
        if tool_deltas:
            fields["tool_calls"] = [_tool_call_delta(d) for d in tool_deltas]
        return DeltaMessage(**fields) if fields else None

    @property
    def tool_calls(self) -> list[ToolCallOut]:
        calls = self.tools.calls if self.tools is not None else []
        if not self.parallel_tool_calls:
            calls = calls[:1]
        return [
            ToolCallOut(id=c.id, function=ToolCallFunction(name=c.name, arguments=c.arguments))
            for c in calls
        ]

    def message(self) -> ChatResponseMessage:
        """The whole message, once `finish()` has been called."""
        calls = self.tool_calls
        content = "".join(self.content_parts)
        reasoning = "".join(self.reasoning_parts) or None
        return ChatResponseMessage(
            content=content if content or not calls else None,
            reasoning_content=reasoning,
            tool_calls=calls,
        )

    def finish_reason(self, engine_reason: str | None) -> str | None:
        """The engine's reason, or "tool_calls" when calls were made and the output ended by
        itself (cut short, a call's arguments may be incomplete: "length" says so)."""
        return "tool_calls" if self.tool_calls and engine_reason == "stop" else engine_reason


def _tool_call_delta(delta) -> DeltaToolCall:
    function: dict = {}
    if delta.name is not None:
        function["name"] = delta.name
    if delta.arguments or delta.name is not None:
        function["arguments"] = delta.arguments
    fields: dict = {"index": delta.index, "function": DeltaFunctionCall(**function)}
    if delta.id is not None:
        fields.update(id=delta.id, type="function")
    return DeltaToolCall(**fields)


def _logprob(value: float) -> float:
    return max(value, MIN_LOGPROB)


def chat_logprobs(token_logprobs, token_str) -> ChatLogprobs:
    """OpenAI's chat shape from the engine's TokenLogprob list; `token_str(id)` gives text."""
    content = []
    for item in token_logprobs or []:
        text = token_str(item.token_id)
        top = [
            TopLogprob(token=token_str(t), logprob=_logprob(lp), bytes=list(token_str(t).encode()))
            for t, lp in item.top
        ]
        content.append(
            ChatTokenLogprob(
                token=text,
                logprob=_logprob(item.logprob),
                bytes=list(text.encode()),
                top_logprobs=top,
            )
        )
    return ChatLogprobs(content=content)
