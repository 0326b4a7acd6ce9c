"""Test shim: torch hidden, as when it is not installed."""

raise ModuleNotFoundError("No module named 'torch'", name="torch")
