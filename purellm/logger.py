"""purellm's log output: INFO lines (loading progress, KV capacity) on stderr by default."""

from __future__ import annotations

import logging


def init_logging(level: str | int = logging.INFO) -> logging.Logger:
    """Give the `purellm` logger a stderr handler unless the application configured one."""
    log = logging.getLogger("purellm")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(level)
    return log
