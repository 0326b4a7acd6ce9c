"""What tool-call grammars cost with a Roo Code-shaped tool set (14 strict tools and one
non-strict MCP tool): compile time per format, forced and lazy, and llguidance's mask time per
token in free text (lazy) and inside a call. Not a test.

    python bench/tool_grammars.py                 # the default model's tokenizer
    python bench/tool_grammars.py --model DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from purellm import LLM
from purellm.server.tool_grammars import tool_call_constraint

S, B = {"type": "string"}, {"type": "boolean"}
NULLABLE = {"type": ["string", "null"]}


def _strict(properties: dict) -> dict:
    """An object schema after Roo's strict conversion: every property required, no others."""
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}  # fmt: skip


def _tool(name: str, properties: dict, strict: bool = True) -> dict:
    function = {"name": name, "description": f"{name} " * 40, "strict": strict,
                "parameters": _strict(properties)}  # fmt: skip
    return {"type": "function", "function": function}


def _array_of(properties: dict, nullable: bool = False) -> dict:
    return {"type": ["array", "null"] if nullable else "array", "items": _strict(properties)}


LINES = _array_of({"start": {"type": "integer"}, "end": {"type": "integer"}}, nullable=True)
TOOLS = [
    _tool("read_file", {"files": _array_of({"path": S, "line_ranges": LINES})}),
    _tool("write_to_file", {"path": S, "content": S, "line_count": {"type": "integer"}}),
    _tool("apply_diff", {"path": S, "diff": S}),
    _tool("insert_content", {"path": S, "line": {"type": "integer"}, "content": S}),
    _tool(
        "search_and_replace",
        {
            "path": S,
            "search": S,
            "replace": S,
            "use_regex": B,
            "ignore_case": B,
            "start_line": NULLABLE,
        },
    ),
    _tool("search_files", {"path": S, "regex": S, "file_pattern": NULLABLE}),
    _tool("list_files", {"path": S, "recursive": B}),
    _tool("list_code_definition_names", {"path": S}),
    _tool("codebase_search", {"query": S, "path": NULLABLE}),
    _tool("execute_command", {"command": S, "cwd": NULLABLE}),
    _tool(
        "ask_followup_question",
        {"question": S, "follow_up": _array_of({"text": S, "mode": NULLABLE})},
    ),
    _tool("attempt_completion", {"result": S}),
    _tool("switch_mode", {"mode_slug": S, "reason": S}),
    _tool("update_todo_list", {"todos": S}),
    _tool("mcp--server--query", {"sql": S, "limit": {"type": "integer"}}, strict=False),
]
FREE_TEXT = (
    "I'll start by reading the configuration, then update the parser so that it handles the "
    "new flag. Here is the plan:\n\n1. Read `src/config.py`.\n2. Add `--strict` to the CLI.\n\n"
    "```python\ndef parse(argv: list[str]) -> Config:\n    if len(argv) < 2 or argv[1] == '-h':\n"
    "        return usage()\n    return Config(strict='--strict' in argv)\n```\n"
) * 3
CALL = {"name": "write_to_file", "arguments": {"path": "src/config.py", "content": FREE_TEXT,
        "line_count": 24}}  # fmt: skip


def compile_ms(grammars, spec) -> float:
    start = time.perf_counter()
    grammars.check(spec)
    return (time.perf_counter() - start) * 1e3


def mask_us(grammars, spec, token_ids: list[int]) -> str:
    """Median and longest µs per mask over `token_ids`, fed one by one."""
    matcher = grammars.matchers(spec, 1)[0]
    times = []
    for token in token_ids:
        start = time.perf_counter()
        matcher.allowed_tokens()
        times.append(time.perf_counter() - start)
        matcher.accept(token)
    return f"{statistics.median(times) * 1e6:.0f} (longest {max(times) * 1e6:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    engine = LLM(args.model).engine
    tokenizer, grammars = engine.tokenizer, engine.grammars
    grammars.check(tool_call_constraint("hermes", TOOLS[:1], False))  # the llguidance tokenizer
    size = len(json.dumps(TOOLS))
    print(f"{len(TOOLS)} tools, {size / 1024:.1f} KiB of JSON; vocabulary {len(tokenizer)}")
    print("| format | compile forced, ms | compile lazy, ms | cached, ms |")
    print("|---|---|---|---|")
    for fmt in ("hermes", "qwen3_coder", "llama3_json"):
        forced = compile_ms(grammars, tool_call_constraint(fmt, TOOLS, True))
        lazy_spec = tool_call_constraint(fmt, TOOLS, True, lazy=True)
        lazy = compile_ms(grammars, lazy_spec)
        print(f"| {fmt} | {forced:.1f} | {lazy:.1f} | {compile_ms(grammars, lazy_spec):.2f} |")
    text_ids = tokenizer.encode(FREE_TEXT, add_special_tokens=False)
    call = "<tool_call>\n" + json.dumps(CALL) + "\n</tool_call>"
    call_ids = tokenizer.encode(call, add_special_tokens=False)
    lazy_spec = tool_call_constraint("hermes", TOOLS, True, lazy=True)
    print(f"hermes, lazy, µs a mask: free text {mask_us(grammars, lazy_spec, text_ids)} over "
          f"{len(text_ids)} tokens; a write_to_file call {mask_us(grammars, lazy_spec, call_ids)}"
          f" over {len(call_ids)} tokens")  # fmt: skip


if __name__ == "__main__":
    main()
