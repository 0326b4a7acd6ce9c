"""From an OpenAI chat request to the prompt text: messages normalised for Hugging Face chat
templates, the tools the template sees, and the template rendered as transformers renders it."""

from __future__ import annotations

import json
from typing import Any

from purellm.server.errors import bad_request
from purellm.server.protocol import ChatMessage, ChatTool, NamedToolChoice

_TEXT_PARTS = ("text", "input_text")
_RESERVED = {"conversation", "tools", "add_generation_prompt", "continue_final_message",
             "tokenize", "return_dict", "chat_template"}  # fmt: skip


def text_content(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type not in _TEXT_PARTS:
            raise bad_request(
                f"content parts of type {part.type!r} are not supported; only text", "messages"
            )
        texts.append(part.text or "")
    return "\n".join(texts)


def _arguments(arguments: str | dict) -> Any:
    """Tool-call arguments as a dict when they are a JSON object (templates such as Qwen's
    apply `tojson` to them, as vLLM arranges); left as given otherwise."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError):
        return arguments
    return parsed if isinstance(parsed, dict) else arguments


def conversation(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        item: dict[str, Any] = {"role": role, "content": text_content(message.content)}
        if message.name is not None:
            item["name"] = message.name
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        if message.reasoning_content:
            item["reasoning_content"] = message.reasoning_content
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _arguments(call.function.arguments),
                    },
                }
                for call in message.tool_calls
            ]
        out.append(item)
    return out


def template_tools(
    tools: list[ChatTool] | None, tool_choice: str | NamedToolChoice | None
) -> list[dict] | None:
    """The tools the template is given: all of them, or only the one a named tool_choice
    names (400 if it is not among them)."""
    if not tools:
        if isinstance(tool_choice, NamedToolChoice) or tool_choice == "required":
            raise bad_request("tool_choice needs tools", "tool_choice")
        return None
    dumped = [tool.model_dump(exclude_none=True) for tool in tools]
    if isinstance(tool_choice, NamedToolChoice):
        name = tool_choice.function.name
        dumped = [t for t in dumped if t["function"]["name"] == name]
        if not dumped:
            raise bad_request(f"tool_choice names {name!r}, which is not in tools", "tool_choice")
    return dumped


def render(
    tokenizer,
    messages: list[dict],
    tools: list[dict] | None,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    template_kwargs: dict | None = None,
) -> str:
    """The prompt text, exactly as `tokenizer.apply_chat_template(..., tokenize=False)` gives
    it; 400 when the model has no template or the template refuses the conversation."""
    if not messages:
        raise bad_request("messages must not be empty", "messages")
    if continue_final_message and add_generation_prompt:
        add_generation_prompt = False
    kwargs = {k: v for k, v in (template_kwargs or {}).items() if k not in _RESERVED}
    try:
        return tokenizer.apply_chat_template(
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tokenize=False,
            **kwargs,
        )
    except Exception as exc:  # jinja2 errors, a missing template, raise_exception(...)
        raise bad_request(f"the chat template failed: {exc}", "messages") from exc


def starts_in_reasoning(prompt: str) -> bool:
    """True when the template itself opened a <think> block the model is to continue."""
    tail = prompt.rstrip()
    return tail.endswith("<think>")
