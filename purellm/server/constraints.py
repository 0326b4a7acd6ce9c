"""The request fields that constrain an output to a grammar: OpenAI's `response_format`, and
vLLM's `structured_outputs` and older `guided_*` fields (at most one may be given); and the
grammar of a tool call that tool_choice "required" or a named tool asks for."""

from __future__ import annotations

import json
from typing import Any

from purellm.engine.structured import JSON_OPTIONS
from purellm.sampling_params import StructuredOutputsParams
from purellm.server.errors import bad_request
from purellm.server.protocol import SamplingFields

GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice",
          "guided_grammar": "grammar"}  # fmt: skip
FIELDS = ("json", "regex", "choice", "grammar", "json_object")


def structured_outputs(req: SamplingFields) -> tuple[StructuredOutputsParams | None, str | None]:
    """The request's constraint and the field it came from (for errors), or (None, None)."""
    given = [(name, value) for name, value in _sources(req) if value is not None]
    if not given:
        return None, None
    if len(given) > 1:
        names = ", ".join(name for name, _ in given)
        raise bad_request(f"give at most one output constraint; got {names}", given[1][0])
    field, fields = given[0]
    try:
        return StructuredOutputsParams(**fields), field
    except (TypeError, ValueError) as exc:
        raise bad_request(f"{field}: {exc}", field) from None


def _sources(req: SamplingFields) -> list[tuple[str, dict[str, Any] | None]]:
    sources = [("response_format", _response_format(req.response_format))]
    if req.structured_outputs is not None:
        unknown = set(req.structured_outputs) - set(FIELDS)
        if unknown:
            raise bad_request(
                f"structured_outputs takes {', '.join(FIELDS)}; not {', '.join(sorted(unknown))}",
                "structured_outputs",
            )
        given = {k: v for k, v in req.structured_outputs.items() if v is not None}
        sources.append(("structured_outputs", given or None))
    for name, kind in GUIDED.items():
        value = getattr(req, name)
        sources.append((name, None if value is None else {kind: value}))
    return sources


def _response_format(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}."""
    if value is None:
        return None
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise bad_request(
                "response_format.json_schema.schema must be a JSON schema object",
                "response_format",
            )
        return {"json": spec["schema"]}
    raise bad_request(
        "response_format.type must be text, json_object or json_schema", "response_format"
    )


def tool_call_constraint(
    parser: str, tools: list[dict], parallel: bool
) -> StructuredOutputsParams | None:
    """A grammar for a tool call (several with `parallel`) in `parser`'s wire format, its
    arguments following the tool's JSON schema: for tool_choice "required" or a named tool
    (then `tools` holds that one). None for a format not constrained yet (qwen3_coder)."""
    if parser == "hermes":
        call = '"<tool_call>\\n" ' + _calls_json(tools, "arguments") + ' "\\n</tool_call>"'
        more = '("\\n" call)*' if parallel else ""
    elif parser == "llama3_json":
        call = _calls_json(tools, "parameters")
        more = '("; " call)*' if parallel else ""
    else:
        return None
    return StructuredOutputsParams(grammar=f"start: call {more}\ncall: {call}\n")


def _calls_json(tools: list[dict], arguments_key: str) -> str:
    """An inline %json rule: {"name": one of the tools, "<arguments_key>": its parameters}."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["function"]["name"]},
                arguments_key: tool["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", arguments_key],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    schema = {"anyOf": options, "x-guidance": JSON_OPTIONS}
    return "%json " + json.dumps(schema)
