"""The request fields that constrain an output to a grammar: OpenAI's `response_format`, and
vLLM's `structured_outputs` and older `guided_*` fields (at most one may be given)."""

from __future__ import annotations

from typing import Any

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
