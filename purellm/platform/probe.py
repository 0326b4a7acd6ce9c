"""Probe entry point, run as a subprocess: `python -m purellm.platform.probe torch|model [MODEL]`.

Prints one line `PURELLM_PROBE <json>`. A torch that is missing or raises is reported in the
JSON; one that kills the process (SIGILL, SIGSEGV) is reported by the caller, from the exit
status. Nothing heavy is imported at module level."""

from __future__ import annotations

import json
import sys
import traceback

MARKER = "PURELLM_PROBE "


def probe_torch() -> dict:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError as error:
        if error.name == "torch":
            return {"status": "missing", "error": str(error)}
        return {"status": "raised", "error": _describe(error)}
    except BaseException as error:  # a broken install raises anything from OSError to SystemExit
        return {"status": "raised", "error": _describe(error)}
    from purellm.platform.facts import gather_build, gather_gpus, to_json

    try:
        build = gather_build()
        return {"status": "ok", "build": to_json(build), "gpus": to_json(gather_gpus(build, True))}
    except Exception as error:  # torch imported but its device queries fail (driver, runtime)
        return {"status": "raised", "error": "querying devices: " + _describe(error)}


def probe_model(model: str | None) -> dict:
    from purellm.platform.facts import to_json
    from purellm.platform.modelinfo import read_model_facts

    try:
        return {"status": "ok", "model": to_json(read_model_facts(model))}
    except Exception as error:  # any unreadable model is a finding, not a crash
        return {"status": "raised", "error": _describe(error)}


def _describe(error: BaseException) -> str:
    last = traceback.format_exception_only(type(error), error)[-1].strip()
    return last[:2000]


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "torch"
    result = probe_torch() if kind == "torch" else probe_model(argv[1] if len(argv) > 1 else None)
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
