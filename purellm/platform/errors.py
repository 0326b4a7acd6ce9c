"""The one error the platform layer raises for a machine that cannot serve."""

from __future__ import annotations


class PlatformError(ValueError):
    """The chosen device cannot serve; the message says why and what to do (as the doctor)."""
