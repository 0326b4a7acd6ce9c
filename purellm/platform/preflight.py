"""Serve-time checks, run before anything imports torch in the serving process."""

from __future__ import annotations

from purellm.platform.errors import PlatformError
from purellm.platform.state import gather_state, serve_verdict


def preflight(device_name: str) -> None:
    """Probe torch in a subprocess (so a SIGILL there cannot kill the server) and decide the
    device as `purellm doctor` does. Raises PlatformError with the doctor's message. A CPU-only
    torch that passed the same probe before is not probed again (platform/probe_cache.py)."""
    verdict = serve_verdict(gather_state(remembered=True), device_name)
    if verdict.problem:
        raise PlatformError(verdict.problem)
