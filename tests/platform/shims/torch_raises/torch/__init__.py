"""Test shim: a broken torch install that raises on import."""

raise OSError("libtorch_cpu.so: cannot open shared object file: No such file or directory")
