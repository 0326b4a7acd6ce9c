"""Test shim: makes `triton` unimportable in every Python process the tests start
(the directory is put on PYTHONPATH by tests/conftest.py)."""

import sys

sys.modules["triton"] = None
